import Foundation
import RedoubtCore

/// What one node hands another so that it serves the same repository: the cluster's CA
/// (certificate and key: every node issues host certificates and signs host key
/// statements), the catalog and the store, and the defaults `server init` set.
///
/// It holds the CA's private key: it is written 0600, meant to be carried to the new node
/// over a channel the operator trusts, and deleted after `server join`. It holds no
/// password and no S3 key: those stay in the files `server.json` names, which the new
/// node must have at the same paths (or the service's environment).
public struct ClusterFile: Codable, Sendable {
    public static let currentVersion = 1
    public var version: Int
    public var caCertificatePEM: String
    public var caKeyPEM: String
    public var catalog: CatalogSettings
    public var store: PrimaryStoreSettings
    public var minRetentionSeconds: Double
    public var limits: ServerLimits?
}

extension ServerHome {
    /// The catalog setting that names the CA of the cluster the catalog belongs to (its pin).
    static let clusterCASetting = "cluster_ca_pin"

    /// Refuses a database that already holds a server's catalog: two clusters in one schema
    /// would each believe they own the other's tenants.
    static func requireUnclaimed(_ settings: CatalogSettings) async throws {
        let catalog = try await CatalogPools.shared.catalog(settings)
        let t = try settings.target()
        if let pin = try await catalog.setting(clusterCASetting) {
            throw ServerError(409, "E_EXISTS", """
                catalog \(t.redacted) already holds a Redoubt cluster (CA \(pin.prefix(16))…): to add a node to it, \
                run `redoubt server cluster-file` on a node and `redoubt server join` here; for a new cluster, name \
                an empty database or schema (search_path=…)
                """)
        }
        let tenants = try await catalog.tenants()
        let principals = try await catalog.principals(tenant: nil)
        if !tenants.isEmpty || !principals.isEmpty {
            throw ServerError(409, "E_EXISTS", """
                catalog \(t.redacted) already holds tenants or principals: name an empty database or schema \
                (search_path=…)
                """)
        }
    }

    /// Writes this node's cluster file to `path` (0600; refuses to overwrite). Only a node
    /// whose catalog and store are shared ones (PostgreSQL and an S3 bucket) has one.
    public func writeClusterFile(to path: String) throws {
        let s = try settings()
        guard let catalog = s.catalog, let store = s.store else {
            throw ServerError(409, "E_NOT_CLUSTER", """
                \(root.path) keeps its \(s.catalog == nil ? "catalog in catalog.sqlite" : "objects in store/"), \
                which no other node can share: a cluster needs `server init --catalog postgres://… --store s3://…`
                """)
        }
        let tls = try tlsMaterial()
        let file = ClusterFile(version: ClusterFile.currentVersion, caCertificatePEM: tls.caCertPEM,
                               caKeyPEM: tls.caKeyPEM, catalog: catalog, store: store,
                               minRetentionSeconds: s.minRetentionSeconds, limits: s.limits)
        if FileManager.default.fileExists(atPath: path) {
            throw ServerError(409, "E_EXISTS", "\(path) exists: name a new file (it will hold the CA's key)")
        }
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writePrivate(URL(fileURLWithPath: path), String(decoding: try enc.encode(file), as: UTF8.self))
    }

    /// Makes this (new) data directory a node of the cluster `clusterFile` describes: its own
    /// server key and a certificate the cluster's CA issues for `listen`'s host (and `url`'s),
    /// the same catalog and store. The catalog must answer and belong to that CA, and the
    /// bucket must prove Object Lock again, before anything is written.
    public func join(from clusterFile: String, listen: String, url: String? = nil, now: Date) async throws
        -> Settings {
        let fm = FileManager.default
        if fm.fileExists(atPath: settingsURL.path) {
            throw ServerError(409, "E_EXISTS",
                "\(root.path) already holds a Redoubt server; join with a new data directory")
        }
        guard let data = fm.contents(atPath: clusterFile) else {
            throw ServerError(404, "E_NOT_FOUND", "cannot read the cluster file \(clusterFile)")
        }
        let file: ClusterFile
        do { file = try JSONDecoder().decode(ClusterFile.self, from: data) } catch {
            throw ServerError.badRequest("""
                \(clusterFile) is not a cluster file (`redoubt server cluster-file --data DIR --out FILE` on a node \
                writes one): \(error)
                """)
        }
        guard file.version <= ClusterFile.currentVersion else {
            throw ServerError.badRequest("""
                \(clusterFile) is cluster file version \(file.version); this build reads up to \
                \(ClusterFile.currentVersion): upgrade this node first
                """)
        }
        guard let (host, port) = Self.splitHostPort(listen) else {
            throw ServerError.badRequest("--listen must be HOST:PORT, got \(listen)")
        }
        var urlHost: String?
        if let url {
            guard let c = URLComponents(string: url), c.scheme == "https", let h = c.host, !h.isEmpty else {
                throw ServerError.badRequest("--url must be https://HOST:PORT, got \(url)")
            }
            urlHost = h
        }
        let ca = try CertificateAuthority(certificatePEM: file.caCertificatePEM, keyPEM: file.caKeyPEM)
        let catalog = try await CatalogPools.shared.catalog(file.catalog)
        let pin = try await catalog.setting(Self.clusterCASetting)
        guard pin == (try ca.pin) else {
            throw ServerError(409, "E_WRONG_CLUSTER", pin == nil ? """
                catalog \(try file.catalog.target().redacted) holds no cluster yet: make the first node with \
                `redoubt server init --catalog … --store …`
                """ : """
                catalog \(try file.catalog.target().redacted) belongs to another cluster's CA: this cluster file \
                does not match it
                """)
        }
        try await file.store.prove(now: now)
        try fm.createDirectory(at: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try fm.setAttributes([.posixPermissions: 0o700], ofItemAtPath: root.path)
        try fm.createDirectory(at: tlsDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try writeTLS(ca: ca, hosts: [host] + (urlHost.map { [$0] } ?? []), now: now)
        let settings = Settings(listen: listen, url: url ?? Self.url(host: host, port: port),
                                minRetentionSeconds: file.minRetentionSeconds, limits: file.limits,
                                store: file.store, catalog: file.catalog)
        try writeSettings(settings)
        // Every node that can issue certificates from the cluster's CA is on the record.
        try await catalog.audit(time: now, actor: "local", role: "-", credential: "-", source: "local",
                                action: "server-join", object: "node \(settings.url)", outcome: "ok",
                                detail: "listen=\(listen)")
        return settings
    }
}

extension ServerHome {
    /// Proves the primary bucket's Object Lock and records the outcome in the catalog for
    /// every node's `doctor` (`cluster.store-proof`); throws when the proof fails.
    public func proveStore(_ s3: PrimaryStoreSettings, node: String, now: Date = Date()) async throws {
        let catalog = try await openCatalog()
        do { try await s3.prove(now: now) } catch {
            try? await PrimaryStoreProofRecord(at: now, ok: false, detail: "\(error)", node: node).record(catalog)
            throw error
        }
        try await PrimaryStoreProofRecord(at: now, ok: true, detail: "", node: node).record(catalog)
    }
}

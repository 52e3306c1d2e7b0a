import Crypto
import Foundation
import Logging
import RedoubtCore
import RedoubtStore
import Synchronization

/// A server's data directory: TLS material, the catalog, the store and the settings.
///
/// ```
/// DIR/               0700
///   server.json      listen address, URL, default minimum retention
///   tls/ca.pem ca.key server.pem server.key   (keys 0600)
///   catalog.sqlite   the catalog (SQLite, WAL)
///   store/           the local immutable store (0700)
///   admin.credential the first admin's credential (0600)
/// ```
public struct ServerHome: Sendable {
    public let root: URL

    public struct Settings: Codable, Sendable {
        public var listen: String
        public var url: String
        public var minRetentionSeconds: Double
        /// Limits set at `server init`; absent in older files (every default then holds).
        public var limits: ServerLimits?
        /// An S3 Object Lock bucket instead of `store/`; absent: the data directory's own store.
        public var store: PrimaryStoreSettings?
        /// A PostgreSQL database instead of `catalog.sqlite`; absent: the data directory's own.
        public var catalog: CatalogSettings?
    }

    public struct TLSMaterial: Sendable {
        public let caCertPEM: String
        public let caKeyPEM: String
        public let serverCertPEM: String
        public let serverKeyPEM: String
    }

    public init(path: String) { root = URL(fileURLWithPath: path).standardizedFileURL }

    var settingsURL: URL { root.appendingPathComponent("server.json") }
    var tlsDir: URL { root.appendingPathComponent("tls") }
    public var catalogPath: String { root.appendingPathComponent("catalog.sqlite").path }
    public var storePath: String { root.appendingPathComponent("store").path }
    public var adminCredentialPath: String { root.appendingPathComponent("admin.credential").path }

    /// Creates a new data directory. Refuses one that already holds a server.
    /// With `store`, the bucket must prove Object Lock COMPLIANCE first (nothing is created
    /// when it does not). With `catalog`, the database must be reachable and hold no other
    /// server's catalog: a second node joins with ``join(from:listen:url:now:)`` instead.
    public func initialize(listen: String, minRetention: TimeInterval, now: Date,
                           limits: ServerLimits? = nil,
                           store: PrimaryStoreSettings? = nil,
                           catalog catalogSettings: CatalogSettings? = nil) async throws
        -> (settings: Settings, adminCredential: String) {
        let fm = FileManager.default
        if fm.fileExists(atPath: settingsURL.path) {
            throw ServerError(409, "E_EXISTS",
                "\(root.path) already holds a Redoubt server; use `redoubt server run --data \(root.path)`")
        }
        guard let (host, port) = Self.splitHostPort(listen) else {
            throw ServerError.badRequest("--listen must be HOST:PORT, got \(listen)")
        }
        if let store { try await store.prove(now: now) }
        if let catalogSettings { try await Self.requireUnclaimed(catalogSettings) }
        try fm.createDirectory(at: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try fm.setAttributes([.posixPermissions: 0o700], ofItemAtPath: root.path)
        try fm.createDirectory(at: tlsDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let ca = try CertificateAuthority.create(name: root.lastPathComponent, now: now)
        try writeTLS(ca: ca, hosts: [host], now: now)
        let settings = Settings(listen: listen, url: Self.url(host: host, port: port),
            minRetentionSeconds: minRetention,
            limits: limits, store: store, catalog: catalogSettings)
        try writeSettings(settings)
        let catalog = try await openCatalog()
        // Which CA the catalog belongs to: a node joining with another cluster's file is refused.
        try await catalog.setSetting(Self.clusterCASetting, try ca.pin)
        _ = try await issueAdminCredential(catalog: catalog, store: try openStore(), ca: ca, settings: settings,
                                           name: "admin")
        return (settings, adminCredentialPath)
    }

    /// Issues an admin credential on a new key and writes it to `admin.credential` (0600);
    /// returns its path.
    func issueAdminCredential(catalog: any CatalogRepositories, store: any ObjectStore, ca: CertificateAuthority,
                              settings: Settings, name: String) async throws -> String {
        let service = RepositoryService(catalog: catalog, store: store, clock: SystemClock(), ca: ca,
                                        serverURL: settings.url, defaultMinRetention: settings.minRetentionSeconds,
                                        logger: Logger(label: "redoubt.init"))
        let adminKey = P256.Signing.PrivateKey()
        let (principal, certPEM) = try await service.issueAdmin(name: name, publicKey: adminKey.publicKey)
        let cred = ClientCredential(url: settings.url, caPEM: try ca.certificatePEM, pin: try ca.pin,
                                    certificatePEM: certPEM, keyPEM: adminKey.pemRepresentation,
                                    principalID: principal.id, role: Role.admin.rawValue, tenant: nil, name: name)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writePrivate(URL(fileURLWithPath: adminCredentialPath), String(decoding: try enc.encode(cred),
            as: UTF8.self))
        return adminCredentialPath
    }

    /// Writes the CA (certificate and key) and a new server key with a certificate the CA
    /// issues for `hosts` and the loopback names.
    func writeTLS(ca: CertificateAuthority, hosts extra: [String], now: Date) throws {
        let serverKey = P256.Signing.PrivateKey()
        var hosts = ["localhost", "127.0.0.1", "::1"]
        for h in extra where !hosts.contains(h) && h != "0.0.0.0" && h != "::" { hosts.append(h) }
        let serverCert = try ca.issueServer(publicKey: serverKey.publicKey, hosts: hosts, now: now)
        try writePrivate(tlsDir.appendingPathComponent("ca.key"), ca.keyPEM)
        try writePrivate(tlsDir.appendingPathComponent("ca.pem"), try ca.certificatePEM)
        try writePrivate(tlsDir.appendingPathComponent("server.key"), serverKey.pemRepresentation)
        try writePrivate(tlsDir.appendingPathComponent("server.pem"), try serverCert.serializeAsPEM().pemString)
    }

    /// The URL clients are given for a server listening on `host:port`.
    static func url(host: String, port: Int) -> String {
        let urlHost = host.contains(":") ? "[\(host)]" : (host == "0.0.0.0" ? "127.0.0.1" : host)
        return "https://\(urlHost):\(port)"
    }

    func writeSettings(_ settings: Settings) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writePrivate(settingsURL, String(decoding: try enc.encode(settings), as: UTF8.self))
    }

    public func settings() throws -> Settings {
        guard let data = FileManager.default.contents(atPath: settingsURL.path) else {
            throw ServerError(404, "E_NO_SERVER",
                "\(root.path) holds no Redoubt server: run `redoubt server init --data \(root.path)` first")
        }
        return try JSONDecoder().decode(Settings.self, from: data)
    }

    public func tlsMaterial() throws -> TLSMaterial {
        func read(_ n: String) throws -> String {
            guard let d = FileManager.default.contents(atPath: tlsDir.appendingPathComponent(n).path) else {
                throw ServerError(404, "E_NO_TLS",
                    "missing \(tlsDir.appendingPathComponent(n).path): the data directory is incomplete")
            }
            return String(decoding: d, as: UTF8.self)
        }
        return TLSMaterial(caCertPEM: try read("ca.pem"), caKeyPEM: try read("ca.key"),
            serverCertPEM: try read("server.pem"), serverKeyPEM: try read("server.key"))
    }

    /// The server's CA (it signs host key statements as well as certificates).
    public func certificateAuthority() throws -> CertificateAuthority {
        let tls = try tlsMaterial()
        return try CertificateAuthority(certificatePEM: tls.caCertPEM, keyPEM: tls.caKeyPEM)
    }

    /// Opens the catalog, store and CA for serving.
    /// `limits`, when given, replaces the ones in `server.json` (`server run --limit`);
    /// `store`, when given, replaces the data directory's own (tests without xattrs).
    public func openService(clock: any ServerClock = SystemClock(), logger: Logger, limits: ServerLimits? = nil,
                            timeBounds: SnapshotTimeBounds = SnapshotTimeBounds(),
                            store: (any ObjectStore)? = nil) async throws -> RepositoryService {
        let s = try settings()
        let tls = try tlsMaterial()
        let ca = try CertificateAuthority(certificatePEM: tls.caCertPEM, keyPEM: tls.caKeyPEM)
        // Cleared here, at start: a crash mid-upload leaves at most its spool files.
        let uploads = try UploadSpool.open(root.appendingPathComponent("uploads"))
        return RepositoryService(catalog: try await openCatalog(), store: try store ?? openStore(), clock: clock,
            ca: ca,
                                 serverURL: s.url, defaultMinRetention: s.minRetentionSeconds, logger: logger,
                                     timeBounds: timeBounds,
                                 limits: limits ?? s.limits ?? ServerLimits(), uploadDirectory: uploads.directory)
    }

    /// A TCP port on 127.0.0.1 that is free now (bound and released): for loopback servers
    /// in quickstart and tests. Taken below the ephemeral range where it can be: the kernel
    /// hands ports of that range to outgoing connections, so one found free there can be
    /// taken before the server binds it. A port is handed out once per process: two servers
    /// started at once were both given a port still free, and the one that lost the bind
    /// talked to the other's server.
    public static func freeLoopbackPort() throws -> Int {
        let range = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)
        let low = range?.split(whereSeparator: \.isWhitespace).first.flatMap { Int($0) } ?? 32768
        if low > 10_001 {
            for _ in 0..<200 {
                let port = Int.random(in: 10_000..<low)
                guard handedOut.withLock({ $0.insert(port).inserted }) else { continue }
                if (try? bindLoopback(port: port)) != nil { return port }
            }
        }
        return try bindLoopback(port: 0)
    }

    private static let handedOut = Mutex(Set<Int>())

    /// Binds `port` on 127.0.0.1 (0: any the kernel picks), releases it and returns it.
    private static func bindLoopback(port: Int) throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0,
            len) } } == 0
            && withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self,
                capacity: 1) { getsockname(fd, $0, &len) } } == 0
        guard ok else {
            throw ServerError(500, "E_NO_PORT",
                "cannot find a free port on 127.0.0.1: \(String(cString: strerror(errno)))")
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    public static func splitHostPort(_ s: String) -> (String, Int)? {
        var host: Substring, port: Substring
        if s.hasPrefix("[") {
            guard let close = s.firstIndex(of: "]") else { return nil }
            host = s[s.index(after: s.startIndex)..<close]
            port = s[s.index(after: close)...].dropFirst()
        } else {
            guard let colon = s.lastIndex(of: ":") else { return nil }
            host = s[..<colon]
            port = s[s.index(after: colon)...]
        }
        guard !host.isEmpty, let p = Int(port), (0...65535).contains(p) else { return nil }
        return (String(host), p)
    }

    func writePrivate(_ url: URL, _ s: String) throws {
        let fd = open(url.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw ServerError(500, "E_IO", "cannot write \(url.path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        let bytes = Array(s.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else {
                throw ServerError(500, "E_IO", "cannot write \(url.path): \(String(cString: strerror(errno)))")
            }
            off += n
        }
        fchmod(fd, 0o600)
        fsync(fd)
    }
}

import Foundation

/// The checks of a cluster node: one whose catalog is a PostgreSQL database shared with
/// other nodes (docs/SCALE-OUT.md).
extension Doctor {
    /// The ids of the cluster checks, in output order, after ``checkIDs``.
    public static let clusterCheckIDs = ["cluster.catalog", "cluster.store-proof", "cluster.clock-skew"]
    /// A node whose clock is this far from the database's fails: retention and "latest" are
    /// judged by commit times that each node takes from its own clock.
    public static let maxClockSkew: TimeInterval = 5
    /// Above this it warns.
    public static let warnClockSkew: TimeInterval = 1
    /// The primary store is proved at every start and then daily; a proof older than this
    /// means the daily proof stopped.
    public static let maxStoreProofAge: TimeInterval = 26 * 3600

    /// The catalog settings of `server.json` when they name PostgreSQL.
    var clusterCatalog: CatalogSettings? {
        (try? ServerHome(path: dataDir).settings())?.catalog
    }

    func clusterChecks(_ state: CatalogState, _ settings: CatalogSettings?) async -> [DoctorCheck] {
        guard let settings else { return [] }
        let target: CatalogSettings.Target
        do { target = try settings.target() } catch {
            return [DoctorCheck(id: "cluster.catalog", status: .fail, summary: "\(error)",
                                fix: "correct `catalog.url` in server.json")]
        }
        guard case .open(let catalog) = state, let pg = catalog as? PostgresCatalog else {
            var why = "not opened"
            if case .failed(let e) = state { why = e }
            return [DoctorCheck(id: "cluster.catalog", status: .fail,
                                summary: "catalog \(target.redacted) not reachable: \(why)",
                                fix: "check that PostgreSQL runs and accepts this node (pg_hba.conf, TLS, password)")]
                + Self.clusterCheckIDs.dropFirst().map {
                    DoctorCheck(id: $0, status: .fail, summary: "catalog unavailable")
                }
        }
        var out: [DoctorCheck] = []
        switch target.tls {
        case .verifyFull:
            out.append(DoctorCheck(id: "cluster.catalog", status: .pass,
                                   summary: "catalog \(target.redacted) reachable over TLS, certificate verified"))
        case .disable:
            out.append(DoctorCheck(id: "cluster.catalog", status: .warn,
                                   summary: "catalog \(target.redacted) reachable WITHOUT TLS (loopback)",
                                   fix: """
                                       turn on ssl in PostgreSQL and use sslmode=verify-full (sslrootcert=FILE) in \
                                       catalog.url
                                       """))
        }
        out.append(await storeProofCheck(catalog))
        out.append(await clockSkewCheck(pg))
        return out
    }

    func storeProofCheck(_ catalog: any CatalogRepositories) async -> DoctorCheck {
        let id = "cluster.store-proof"
        let record: PrimaryStoreProofRecord?
        do { record = try await PrimaryStoreProofRecord.last(catalog) } catch {
            return DoctorCheck(id: id, status: .fail, summary: "cannot read the last store proof: \(error)")
        }
        guard let record else {
            return DoctorCheck(id: id, status: .fail, summary: "no node has proved the primary store's Object Lock yet",
                               fix: "start a node (`redoubt server run`): it proves the bucket before serving")
        }
        let age = now.timeIntervalSince(record.at)
        let what = "last proof \(Self.formatAge(max(0, age))) ago by \(record.node)"
        if !record.ok {
            return DoctorCheck(id: id, status: .fail, summary: "\(what) FAILED: \(record.detail)",
                               fix: """
                                   the bucket no longer enforces COMPLIANCE: stop the nodes and see docs/SCALE-OUT.md
                                   """)
        }
        if age > Self.maxStoreProofAge {
            return DoctorCheck(id: id, status: .warn, summary: "\(what): older than a day",
                               fix: "check that the nodes run; each proves the bucket daily")
        }
        return DoctorCheck(id: id, status: .pass, summary: "\(what): COMPLIANCE enforced")
    }

    func clockSkewCheck(_ catalog: PostgresCatalog) async -> DoctorCheck {
        let id = "cluster.clock-skew"
        let skew: TimeInterval
        do { skew = try await catalog.clockSkew() } catch {
            return DoctorCheck(id: id, status: .fail, summary: "cannot read the database's clock: \(error)")
        }
        let text = String(format: "%.3f s", skew)
        let fix = "synchronise this node and the database host with NTP (chrony, systemd-timesyncd)"
        if abs(skew) > Self.maxClockSkew {
            return DoctorCheck(id: id, status: .fail, summary: "this node's clock is \(text) off the database's",
                               fix: fix)
        }
        if abs(skew) > Self.warnClockSkew {
            return DoctorCheck(id: id, status: .warn, summary: "this node's clock is \(text) off the database's",
                               fix: fix)
        }
        return DoctorCheck(id: id, status: .pass, summary: "this node's clock is \(text) off the database's")
    }
}

/// The last proof of the primary bucket's Object Lock by any node, kept in the catalog's
/// settings so `doctor` on any node sees whether the daily proof still runs and passes.
public struct PrimaryStoreProofRecord: Codable, Sendable {
    static let setting = "primary_store_proof"
    public var at: Date
    public var ok: Bool
    public var detail: String
    public var node: String

    static func last(_ catalog: any CatalogRepositories) async throws -> PrimaryStoreProofRecord? {
        guard let text = try await catalog.setting(setting) else { return nil }
        let dec = JSONDecoder()
        dec.dateDecodingStrategy = .secondsSince1970
        return try dec.decode(PrimaryStoreProofRecord.self, from: Data(text.utf8))
    }

    public func record(_ catalog: any CatalogRepositories) async throws {
        let enc = JSONEncoder()
        enc.dateEncodingStrategy = .secondsSince1970
        try await catalog.setSetting(Self.setting, String(decoding: try enc.encode(self), as: UTF8.self))
    }
}

extension PostgresCatalog {
    /// This node's clock minus the database's (seconds), measured at the middle of one round trip.
    public func clockSkew() async throws -> TimeInterval {
        let before = Date()
        let rows = try await rows("SELECT extract(epoch FROM clock_timestamp())::float8")
        let after = Date()
        guard let row = rows.first else { throw PostgresCatalogError(message: "the database returned no time") }
        let db = try row.decode(Double.self)
        let mid = (before.timeIntervalSince1970 + after.timeIntervalSince1970) / 2
        return mid - db
    }
}

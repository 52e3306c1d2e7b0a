import Crypto
import Foundation
import GRDB
import RedoubtCore

// The SQLite implementation of ``SnapshotRepository``.

extension Catalog {
    /// A commit named packs the catalog no longer holds (garbage collection removed them
    /// after the commit first looked).
    static func packsMissing(tenant: String, _ packs: [PackID]) -> CatalogError {
        CatalogError(.packsMissing, object: "tenant \(tenant)",
                     "tenant \(tenant) no longer holds \(packs.count) pack(s), e.g. \(packs[0]): garbage collection "
                         + "removed them", packs: packs)
    }

    /// Records a snapshot and the packs it names. With `requirePacks` (a commit) every pack
    /// must still be in the catalog, checked in the same transaction, so a garbage
    /// collection can never remove a pack between the commit's check and its record
    /// (throws ``CatalogError/Code/packsMissing``). A rebuild records what the store holds, missing packs too.
    public func insertSnapshot(_ s: SnapshotRecord, packs: [PackID], requirePacks: Bool = false,
        manifestKey: String? = nil) throws {
        let meta = try JSONEncoder().encode(s)
        try db.write { db in
            if let manifestKey { try Self.reclaim(db, key: manifestKey) }
            if requirePacks {
                let missing = try packs.filter { p in
                    try Int.fetchOne(db, sql: "SELECT 1 FROM packs WHERE tenant = ? AND id = ?", arguments: [s.tenant,
                        p.description]) == nil
                }
                guard missing.isEmpty else { throw Self.packsMissing(tenant: s.tenant, missing) }
            }
            try db.execute(sql: """
                INSERT INTO snapshots(id, tenant, host, time, committed_at, retain_until, meta, manifest_size) VALUES \
                (?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [s.id, s.tenant, s.host, s.time.timeIntervalSince1970,
                                 s.committedAt.timeIntervalSince1970,
                                 s.retainUntil.timeIntervalSince1970, String(decoding: meta, as: UTF8.self),
                                     s.manifestSize])
            let stmt = try db.cachedStatement(sql: "INSERT OR IGNORE INTO snapshot_packs(snapshot, pack) VALUES (?, ?)")
            for p in packs { try stmt.execute(arguments: [s.id, p.description]) }
        }
    }

    public func snapshot(id: String) throws -> SnapshotRecord? {
        try db.read { db in
            try String.fetchOne(db, sql: "SELECT meta FROM snapshots WHERE id = ?", arguments: [id]).flatMap {
                try JSONDecoder().decode(SnapshotRecord.self, from: Data($0.utf8))
            }
        }
    }

    /// Snapshots of a tenant, optionally of one host, in the order the server committed
    /// them (never by the time a host claims: a host's clock decides nothing).
    public func snapshots(tenant: String, host: String? = nil) throws -> [SnapshotRecord] {
        try db.read { db in
            let rows: [String]
            if let host {
                rows = try String.fetchAll(db,
                    sql: "SELECT meta FROM snapshots WHERE tenant = ? AND host = ? ORDER BY committed_at, id",
                                           arguments: [tenant, host])
            } else {
                rows = try String.fetchAll(db,
                    sql: "SELECT meta FROM snapshots WHERE tenant = ? ORDER BY committed_at, id", arguments: [tenant])
            }
            return try rows.map { try JSONDecoder().decode(SnapshotRecord.self, from: Data($0.utf8)) }
        }
    }

    /// The latest time a host's snapshots claim, and when the host's credential was
    /// enrolled: what a new snapshot's claimed time is checked against.
    public func hostTimeFloor(tenant: String, host: String, principalID: String) throws -> (lastClaimed: Date?,
        enrolled: Date?) {
        try db.read { db in
            let last = try Double.fetchOne(db, sql: "SELECT MAX(time) FROM snapshots WHERE tenant = ? AND host = ?",
                arguments: [tenant, host])
            let enrolled = try Double.fetchOne(db, sql: "SELECT created_at FROM principals WHERE id = ?",
                arguments: [principalID])
            return (last.map(Date.init(timeIntervalSince1970:)), enrolled.map(Date.init(timeIntervalSince1970:)))
        }
    }

    public func snapshotPacks(id: String) throws -> [PackID] {
        try db.read { db in
            try String.fetchAll(db, sql: "SELECT pack FROM snapshot_packs WHERE snapshot = ? ORDER BY pack",
                arguments: [id]).compactMap {
                PackID(hex: $0)
            }
        }
    }
}

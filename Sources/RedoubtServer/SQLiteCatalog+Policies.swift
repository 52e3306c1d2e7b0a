import Foundation
import GRDB
import RedoubtCore

// The SQLite implementation of ``PolicyRepository``.

extension Catalog {
    /// The retention policies' table (migration `v14-retention-policies`).
    static let policySchema = """
        CREATE TABLE retention_policies (
            tenant TEXT NOT NULL, host_glob TEXT NOT NULL, tag TEXT NOT NULL, rules TEXT NOT NULL,
            updated_at REAL NOT NULL, PRIMARY KEY (tenant, host_glob, tag)) WITHOUT ROWID;
        """

    public func policies(tenant: String?) throws -> [Wire.PolicyInfo] {
        try db.read { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT tenant, host_glob, tag, rules, updated_at FROM retention_policies
                WHERE ? IS NULL OR tenant = ? ORDER BY tenant, host_glob, tag
                """, arguments: [tenant, tenant])
            return try rows.map { r in
                Wire.PolicyInfo(tenant: r["tenant"], hostGlob: r["host_glob"], tag: r["tag"],
                                rules: try JSONDecoder().decode(RetentionRules.self,
                                    from: Data((r["rules"] as String).utf8)),
                                updatedAt: Date(timeIntervalSince1970: r["updated_at"]))
            }
        }
    }

    public func setPolicy(_ p: Wire.PolicyInfo, from: RetentionRules?) throws -> Bool {
        let rules = String(decoding: try JSONEncoder.sorted.encode(p.rules), as: UTF8.self)
        return try db.write { db in
            guard try Self.currentRules(db, p.tenant, p.hostGlob, p.tag) == from else { return false }
            try db.execute(sql: """
                INSERT INTO retention_policies(tenant, host_glob, tag, rules, updated_at) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT(tenant, host_glob, tag) DO UPDATE SET rules = excluded.rules, updated_at = \
                excluded.updated_at
                """, arguments: [p.tenant, p.hostGlob, p.tag, rules, p.updatedAt.timeIntervalSince1970])
            return true
        }
    }

    public func removePolicy(tenant: String, hostGlob: String, tag: String, from: RetentionRules) throws -> Bool {
        try db.write { db in
            guard try Self.currentRules(db, tenant, hostGlob, tag) == from else { return false }
            try db.execute(sql: "DELETE FROM retention_policies WHERE tenant = ? AND host_glob = ? AND tag = ?",
                           arguments: [tenant, hostGlob, tag])
            return true
        }
    }

    static func currentRules(_ db: Database, _ tenant: String, _ glob: String,
        _ tag: String) throws -> RetentionRules? {
        try String.fetchOne(db,
            sql: "SELECT rules FROM retention_policies WHERE tenant = ? AND host_glob = ? AND tag = ?",
                            arguments: [tenant, glob, tag])
            .map { try JSONDecoder().decode(RetentionRules.self, from: Data($0.utf8)) }
    }

    public func extendSnapshotLock(id: String, until: Date) throws -> SnapshotRecord? {
        try db.write { db in
            guard let meta = try String.fetchOne(db, sql: "SELECT meta FROM snapshots WHERE id = ?",
                arguments: [id]) else {
                return nil
            }
            let s = try JSONDecoder().decode(SnapshotRecord.self, from: Data(meta.utf8))
            guard until > s.retainUntil else { return nil }
            let moved = SnapshotRecord(id: s.id, tenant: s.tenant, host: s.host, time: s.time,
                committedAt: s.committedAt,
                                       retainUntil: until, paths: s.paths, tags: s.tags, statistics: s.statistics,
                                       packCount: s.packCount, manifestSize: s.manifestSize)
            try db.execute(sql: "UPDATE snapshots SET retain_until = ?, meta = ? WHERE id = ?",
                           arguments: [until.timeIntervalSince1970,
                                       String(decoding: try JSONEncoder().encode(moved), as: UTF8.self), id])
            return moved
        }
    }
}

import Foundation
import GRDB
import RedoubtCore

// The SQLite implementation of ``QuotaRepository``.

extension Catalog {
    /// Sets (or with nil removes) the quota of a tenant (`host` "") or of one of its hosts.
    public func setQuota(tenant: String, host: String, bytes: Int64?) throws {
        try db.write { db in
            if let bytes {
                try db.execute(sql: "INSERT OR REPLACE INTO quotas(tenant, host, bytes) VALUES (?, ?, ?)",
                    arguments: [tenant, host, bytes])
            } else {
                try db.execute(sql: "DELETE FROM quotas WHERE tenant = ? AND host = ?", arguments: [tenant, host])
            }
        }
    }

    public func quota(tenant: String, host: String) throws -> Int64? {
        try db.read {
            try Int64.fetchOne($0, sql: "SELECT bytes FROM quotas WHERE tenant = ? AND host = ?", arguments: [tenant,
                host])
        }
    }

    /// Bytes of the tenant's packs (with `host`, of those that host uploaded), split into
    /// those a committed snapshot of the tenant names and the rest.
    public func usage(tenant: String, host: String?) throws -> (committed: Int64, uncommitted: Int64) {
        try db.read { db in
            let named =
                """
                    EXISTS (SELECT 1 FROM snapshot_packs sp JOIN snapshots s ON s.id = sp.snapshot WHERE sp.pack = \
                    p.id AND s.tenant = p.tenant)
                    """
            let from = host == nil ? "packs p WHERE p.tenant = ?"
                : """
                    packs p JOIN pack_uploads u ON u.tenant = p.tenant AND u.pack_id = p.id WHERE p.tenant = ? AND \
                    u.host = ?
                    """
            let row = try Row.fetchOne(db, sql: """
                SELECT COALESCE(SUM(CASE WHEN \(named) THEN p.size ELSE 0 END), 0) AS c,
                       COALESCE(SUM(CASE WHEN \(named) THEN 0 ELSE p.size END), 0) AS u FROM \(from)
                """, arguments: host.map { [tenant, $0] } ?? [tenant])
            return (row?["c"] ?? 0, row?["u"] ?? 0)
        }
    }
}

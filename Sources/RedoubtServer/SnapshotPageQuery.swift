import Foundation
import GRDB

// One page of `GET /v1/snapshots` read by the catalog itself: the filters, the listing
// order (tenant, then commit time, then ID) and the cursor are in the query, and an index
// holds that order, so a page costs its own rows whatever the total (a host flooding its
// tenant with decoys makes every page no dearer).

extension Catalog {
    /// The SQL of a page: `tenant` nil lists every tenant's (in tenant name order), `host`
    /// nil every host's; `after` is the last row of the previous page as (tenant,
    /// committed_at, id); `limit` nil has no bound. Also used to check the plan in tests.
    static func snapshotPageSQL(tenant: String?, host: String?, after: (String, Double, String)?,
                                limit: Int?) -> (String, StatementArguments) {
        var conditions: [String] = []
        var args: StatementArguments = []
        if let tenant {
            conditions.append("tenant = ?")
            args += [tenant]
        } else {
            // As the listing has always been: the snapshots of tenants the catalog holds. Why
            // EXISTS and not IN: with IN, SQLite walks the index tenant by tenant and tests
            // the cursor on every row before it; EXISTS leaves it a range scan from the cursor.
            conditions.append("EXISTS (SELECT 1 FROM tenants t WHERE t.name = snapshots.tenant)")
        }
        if let host {
            conditions.append("host = ?")
            args += [host]
        }
        if let (t, committed, id) = after {
            // Why a row value: the listing order is a key of the index, so the scan starts
            // at the cursor instead of reading and skipping the rows before it.
            if tenant != nil {
                conditions.append("(committed_at, id) > (?, ?)")
                args += [committed, id]
            } else {
                conditions.append("(tenant, committed_at, id) > (?, ?, ?)")
                args += [t, committed, id]
            }
        }
        var sql = "SELECT meta FROM snapshots WHERE " + conditions.joined(separator: " AND ")
            + " ORDER BY tenant, committed_at, id"
        if let limit {
            sql += " LIMIT ?"
            args += [limit]
        }
        return (sql, args)
    }

    /// At most `limit` snapshots (nil: all) of `tenant` (nil: every tenant) and `host`
    /// (nil: every host) after the one with ID `after`, in listing order. `.notFound` when
    /// `after` is not listed under these filters (collected since, or never visible).
    public func snapshotPage(tenant: String?, host: String?, after: String?, limit: Int?) throws -> [SnapshotRecord] {
        try db.read { db in
            var cursor: (String, Double, String)? = nil
            if let after {
                let row = try Row.fetchOne(db, sql: "SELECT tenant, host, committed_at FROM snapshots WHERE id = ?",
                                           arguments: [after])
                guard let row, tenant == nil || row["tenant"] == tenant, host == nil || row["host"] == host else {
                    throw CatalogError(.notFound, object: "snapshot \(after)",
                                       "snapshot \(after) is no longer listed (garbage collection removed it): "
                                       + "list again from the start")
                }
                cursor = (row["tenant"], row["committed_at"], after)
            }
            let (sql, args) = Self.snapshotPageSQL(tenant: tenant, host: host, after: cursor, limit: limit)
            return try String.fetchAll(db, sql: sql, arguments: args).map {
                try JSONDecoder().decode(SnapshotRecord.self, from: Data($0.utf8))
            }
        }
    }

    /// SQLite's plan for a query (`EXPLAIN QUERY PLAN`), one step a line.
    func queryPlan(_ sql: String, _ args: StatementArguments) throws -> [String] {
        try db.read { db in
            try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + sql, arguments: args).map { $0["detail"] as String }
        }
    }
}

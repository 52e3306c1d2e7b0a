import Foundation
import GRDB
import RedoubtCore
import RedoubtStore

// Garbage collection (docs/PROTOCOL.md §4.5): removes what retention no longer protects.
// A snapshot goes once its lock has expired, unless a legal hold covers it or it is its
// host's newest (a host that stopped backing up — say, the one that was encrypted —
// keeps its last snapshot until an admin decides). A pack goes once no remaining snapshot
// names it, its own lock has expired, no hold covers it, and it is older than a grace
// period (packs of a backup still running are not named by any snapshot yet).
//
// The catalog side is one transaction: the rows go and the store keys are queued in
// `gc_pending`. The store objects are deleted after, each only if the store's own lock
// has expired too (LocalStore refuses otherwise); a key that fails stays queued for the
// next run. A commit records its snapshot only if all its packs are still in the catalog
// (checked in the commit's own transaction), so a pack can never be collected from under
// a snapshot being committed: that commit fails with E_PACKS_MISSING instead.

extension Catalog {
    static func registerGCMigrations(_ m: inout DatabaseMigrator) {
        m.registerMigration("v7-gc") { db in
            try db.execute(sql: """
                CREATE TABLE gc_pending (key TEXT PRIMARY KEY, tenant TEXT NOT NULL, queued_at REAL NOT NULL) WITHOUT ROWID;
                CREATE INDEX snapshot_packs_pack ON snapshot_packs(pack);
                """)
        }
    }

    enum GCObject { case snapshot, pack }

    struct GCPlan {
        var snapshots: [String] = []
        var keptNewest = 0
        var keptHeld = 0
        var packs: [(id: String, size: Int64)] = []
    }

    /// Finds what garbage collection removes for `tenant` at `now` and, unless `dryRun`,
    /// removes it from the catalog and queues its store keys (`key` of a snapshot or pack
    /// ID), in one transaction.
    func collect(tenant: String, now: Date, grace: TimeInterval, dryRun: Bool,
                 key: (_ kind: GCObject, _ id: String) -> String?) throws -> GCPlan {
        try db.write { db in
            var plan = GCPlan()
            try db.inSavepoint {
                let t = now.timeIntervalSince1970
                let tenantHeld = try Int.fetchOne(db, sql: "SELECT 1 FROM holds WHERE released_at IS NULL AND kind = 'tenant' AND tenant = ?",
                                                  arguments: [tenant]) != nil
                if tenantHeld { return .rollback }
                // Expired snapshots, each with whether it is its host's newest and whether a hold covers it.
                let rows = try Row.fetchAll(db, sql: """
                    SELECT s.id,
                        s.committed_at >= (SELECT MAX(s2.committed_at) FROM snapshots s2 WHERE s2.tenant = s.tenant AND s2.host = s.host) AS newest,
                        EXISTS (SELECT 1 FROM holds h WHERE h.released_at IS NULL AND h.kind = 'snapshot' AND h.target = s.id) AS held
                    FROM snapshots s WHERE s.tenant = ? AND s.retain_until < ? ORDER BY s.committed_at, s.id
                    """, arguments: [tenant, t])
                for r in rows {
                    if r["held"] as Bool { plan.keptHeld += 1 } else if r["newest"] as Bool { plan.keptNewest += 1 } else { plan.snapshots.append(r["id"]) }
                }
                for id in plan.snapshots {
                    try db.execute(sql: "DELETE FROM snapshot_packs WHERE snapshot = ?", arguments: [id])
                    try db.execute(sql: "DELETE FROM snapshots WHERE id = ? AND tenant = ?", arguments: [id, tenant])
                }
                // Packs no remaining snapshot of the tenant names.
                plan.packs = try Row.fetchAll(db, sql: """
                    SELECT p.id, p.size FROM packs p
                    WHERE p.tenant = ? AND p.retain_until < ? AND p.created_at < ?
                      AND NOT EXISTS (SELECT 1 FROM snapshot_packs sp JOIN snapshots s ON s.id = sp.snapshot WHERE sp.pack = p.id AND s.tenant = p.tenant)
                    ORDER BY p.id
                    """, arguments: [tenant, t, t - grace]).map { (id: $0["id"], size: $0["size"]) }
                for p in plan.packs {
                    try db.execute(sql: "DELETE FROM chunks WHERE tenant = ? AND pack_id = ?", arguments: [tenant, p.id])
                    try db.execute(sql: "DELETE FROM packs WHERE tenant = ? AND id = ?", arguments: [tenant, p.id])
                }
                if dryRun { return .rollback }
                let queue = try db.cachedStatement(sql: "INSERT OR IGNORE INTO gc_pending(key, tenant, queued_at) VALUES (?, ?, ?)")
                for id in plan.snapshots { if let k = key(.snapshot, id) { try queue.execute(arguments: [k, tenant, t]) } }
                for p in plan.packs { if let k = key(.pack, p.id) { try queue.execute(arguments: [k, tenant, t]) } }
                return .commit
            }
            return plan
        }
    }

    func pendingDeletes(tenant: String) throws -> [String] {
        try db.read { db in try String.fetchAll(db, sql: "SELECT key FROM gc_pending WHERE tenant = ? ORDER BY key", arguments: [tenant]) }
    }

    func clearPendingDelete(_ key: String) throws {
        try db.write { db in try db.execute(sql: "DELETE FROM gc_pending WHERE key = ?", arguments: [key]) }
    }
}

extension RepositoryService {
    /// Packs younger than this are never collected: a backup still running has uploaded
    /// them but no snapshot names them yet.
    public static let gcGrace: TimeInterval = 7 * 86400

    /// `POST /v1/tenants/{tenant}/gc` (admin): see the comment at the top of this file.
    public func collectGarbage(tenant: String, _ req: Wire.GCRequest, ctx: CallContext) async throws -> Wire.GCReport {
        guard try catalog.tenant(tenant) != nil else { throw ServerError.notFound("tenant \(tenant) does not exist: `redoubt admin tenant list`") }
        let now = try now()
        let plan = try catalog.collect(tenant: tenant, now: now, grace: Self.gcGrace, dryRun: req.dryRun) { kind, id in
            switch kind {
            case .snapshot: SnapshotID(hex: id).map { Self.manifestKey(tenant: tenant, id: $0).path }
            case .pack: PackID(hex: id).map { Self.packKey(tenant: tenant, id: $0).path }
            }
        }
        let bytes = plan.packs.reduce(Int64(0)) { $0 + $1.size }
        var pending = 0
        if !req.dryRun {
            audit(ctx, "gc", object: "tenant \(tenant)", outcome: "ok",
                  detail: "snapshots=\(plan.snapshots.count) packs=\(plan.packs.count) bytes=\(bytes) kept-newest=\(plan.keptNewest) kept-held=\(plan.keptHeld)")
            // This run's keys and any an earlier run left.
            for k in try catalog.pendingDeletes(tenant: tenant) {
                guard let key = ObjectKey(k) else { try catalog.clearPendingDelete(k); continue }
                do {
                    try await deleteUnlessHeld(key, now: now)
                    try catalog.clearPendingDelete(k)
                } catch let e as StoreError where e.code == .notFound {
                    try catalog.clearPendingDelete(k)
                } catch {
                    pending += 1
                    logger.warning("gc: could not delete a store object; the next run retries", metadata: ["key": "\(k)", "error": "\(error)"])
                    audit(ctx, "gc-delete", object: k, outcome: "error", detail: "\(error)")
                }
            }
        }
        return Wire.GCReport(tenant: tenant, dryRun: req.dryRun, snapshotsRemoved: plan.snapshots, keptNewest: plan.keptNewest, keptHeld: plan.keptHeld,
                             packsRemoved: plan.packs.count, bytesRemoved: bytes, pendingDeletes: pending)
    }
}

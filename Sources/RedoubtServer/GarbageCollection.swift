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
                CREATE TABLE gc_pending (key TEXT PRIMARY KEY, tenant TEXT NOT NULL, queued_at REAL NOT NULL, claimed_at REAL) WITHOUT ROWID;
                CREATE INDEX snapshot_packs_pack ON snapshot_packs(pack);
                """)
        }
    }

    struct GCPlan {
        var snapshots: [String] = []
        var keptNewest = 0
        var keptHeld = 0
        var packs: [(id: String, size: Int64)] = []
    }

    /// Finds what garbage collection removes for `tenant` at `now` and, unless `dryRun`,
    /// removes it from the catalog and queues its store keys, in one transaction.
    func collect(tenant: String, now: Date, grace: TimeInterval, dryRun: Bool) throws -> GCPlan {
        try db.write { db in
            var plan = GCPlan()
            try db.inSavepoint {
                let t = now.timeIntervalSince1970
                if try Self.isTenantHeld(db, tenant) {
                    plan.keptHeld = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM snapshots WHERE tenant = ? AND retain_until < ?", arguments: [tenant, t]) ?? 0
                    return .rollback
                }
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
                let keys = plan.snapshots.compactMap { SnapshotID(hex: $0).map { RepositoryLayout.manifestKey(tenant: tenant, id: $0) } }
                    + plan.packs.compactMap { PackID(hex: $0.id).map { RepositoryLayout.packKey(tenant: tenant, id: $0) } }
                for k in keys { try queue.execute(arguments: [k.path, tenant, t]) }
                return .commit
            }
            return plan
        }
    }

    /// The deletion of this object is under way: its pack or manifest cannot be recorded
    /// again until it is done (retry).
    public struct BeingCollected: Error { public let key: String }

    /// For an object about to be recorded (again): refuses one whose store deletion is
    /// under way, and takes one merely queued off the queue, so that it is not deleted
    /// from under the record.
    static func reclaim(_ db: Database, key: String) throws {
        guard let claimed = try Row.fetchOne(db, sql: "SELECT claimed_at FROM gc_pending WHERE key = ?", arguments: [key]) else { return }
        if (claimed["claimed_at"] as Double?) != nil { throw BeingCollected(key: key) }
        try db.execute(sql: "DELETE FROM gc_pending WHERE key = ?", arguments: [key])
    }

    /// Before an object is stored (again): refuses one whose deletion is under way and
    /// takes one merely queued off the queue, in its own transaction, so that no run can
    /// claim it between the store write and the record.
    public func reclaim(key: String) throws {
        try db.write { db in try Self.reclaim(db, key: key) }
    }

    /// Releases every claim of `tenant` (a run that cannot delete now, under a hold).
    func unclaimPendingDeletes(tenant: String) throws {
        try db.write { db in try db.execute(sql: "UPDATE gc_pending SET claimed_at = NULL WHERE tenant = ?", arguments: [tenant]) }
    }

    func pendingDeletes(tenant: String) throws -> [String] {
        try db.read { db in try String.fetchAll(db, sql: "SELECT key FROM gc_pending WHERE tenant = ? ORDER BY key", arguments: [tenant]) }
    }

    /// Claims a queued key for deletion from the store: true if it is still queued and
    /// the catalog does not hold its object (else it is dropped from the queue: the
    /// object was recorded again). While claimed, ``reclaim(_:key:)`` refuses it.
    func claimPendingDelete(_ key: String, tenant: String, now: Date) throws -> Bool {
        try db.write { db in
            guard try Int.fetchOne(db, sql: "SELECT 1 FROM gc_pending WHERE key = ?", arguments: [key]) != nil else { return false }
            let recorded = switch BucketVerify.kind(key, tenant: tenant) {
            case .pack(let id): try Int.fetchOne(db, sql: "SELECT 1 FROM packs WHERE tenant = ? AND id = ?", arguments: [tenant, id.description]) != nil
            case .manifest(let id): try Int.fetchOne(db, sql: "SELECT 1 FROM snapshots WHERE id = ?", arguments: [id.description]) != nil
            default: false
            }
            if recorded {
                try db.execute(sql: "DELETE FROM gc_pending WHERE key = ?", arguments: [key])
                return false
            }
            try db.execute(sql: "UPDATE gc_pending SET claimed_at = ? WHERE key = ?", arguments: [now.timeIntervalSince1970, key])
            return true
        }
    }

    /// Ends a claim: `done` drops the key from the queue, else it waits for the next run.
    func finishPendingDelete(_ key: String, done: Bool) throws {
        try db.write { db in
            try db.execute(sql: done ? "DELETE FROM gc_pending WHERE key = ?" : "UPDATE gc_pending SET claimed_at = NULL WHERE key = ?", arguments: [key])
        }
    }
}

extension RepositoryService {
    /// Packs younger than this are never collected: a backup still running has uploaded
    /// them but no snapshot names them yet.
    public static let gcGrace: TimeInterval = 7 * 86400

    /// `POST /v1/tenants/{tenant}/gc` (admin): see the comment at the top of this file.
    public func collectGarbage(tenant: String, _ req: Wire.GCRequest, ctx: CallContext) async throws -> Wire.GCReport {
        guard let p = ctx.principal, p.role == .admin else { throw ServerError.forbidden("only an admin may collect garbage") }
        guard try catalog.tenant(tenant) != nil else { throw ServerError.notFound("tenant \(tenant) does not exist: `redoubt admin tenant list`") }
        // One run per tenant at a time (a retried request must not race the first).
        guard gcRunning.withLock({ $0.insert(tenant).inserted }) else {
            throw ServerError(409, "E_CONFLICT", "garbage collection of tenant \(tenant) is already running; wait for it to finish")
        }
        defer { _ = gcRunning.withLock { $0.remove(tenant) } }
        let now = try now()
        let plan = try catalog.collect(tenant: tenant, now: now, grace: Self.gcGrace, dryRun: req.dryRun)
        let bytes = plan.packs.reduce(Int64(0)) { $0 + $1.size }
        func report(pending: Int) -> Wire.GCReport {
            Wire.GCReport(tenant: tenant, dryRun: req.dryRun, snapshotsRemoved: plan.snapshots, keptNewest: plan.keptNewest, keptHeld: plan.keptHeld,
                          packsRemoved: plan.packs.count, bytesRemoved: bytes, pendingDeletes: pending)
        }
        guard !req.dryRun else { return report(pending: 0) }
        // Audited as soon as the catalog side is done, whatever happens to the store side.
        audit(ctx, .collectGarbage, object: "tenant \(tenant)", outcome: "ok",
              detail: "snapshots=\(plan.snapshots.count) packs=\(plan.packs.count) bytes=\(bytes) kept-newest=\(plan.keptNewest) kept-held=\(plan.keptHeld) "
                + "removed=\(plan.snapshots.joined(separator: ","))")
        if try catalog.isTenantHeld(tenant) {
            // A tenant hold keeps even what an earlier run queued (and frees its claims, so
            // those objects can be recorded again meanwhile).
            try catalog.unclaimPendingDeletes(tenant: tenant)
            return report(pending: try catalog.pendingDeletes(tenant: tenant).count)
        }
        // This run's keys and any an earlier run left, each claimed first: a pack or
        // manifest recorded again since it was queued is not deleted, and while one is
        // being deleted it cannot be recorded again (E_RETRY).
        var pending = 0
        for k in try catalog.pendingDeletes(tenant: tenant) {
            guard let key = ObjectKey(k) else { try catalog.finishPendingDelete(k, done: true); continue }
            guard try catalog.claimPendingDelete(k, tenant: tenant, now: now) else { continue }
            do {
                try await deleteUnlessHeld(key, now: now)
                try catalog.finishPendingDelete(k, done: true)
            } catch let e as StoreError where e.code == .notFound {
                try catalog.finishPendingDelete(k, done: true)
            } catch {
                try catalog.finishPendingDelete(k, done: false)
                pending += 1
                logger.warning("gc: could not delete a store object; the next run retries", metadata: ["key": "\(k)", "error": "\(error)"])
                audit(ctx, .gcDelete, object: k, outcome: "error", detail: "\(error)")
            }
        }
        audit(ctx, .gcStore, object: "tenant \(tenant)", outcome: pending == 0 ? "ok" : "partial", detail: "pending=\(pending)")
        return report(pending: pending)
    }
}

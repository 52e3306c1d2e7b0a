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

extension RepositoryService {
    /// Packs younger than this are never collected: a backup still running has uploaded
    /// them but no snapshot names them yet.
    public static let gcGrace: TimeInterval = 7 * 86400

    /// `POST /v1/tenants/{tenant}/gc` (admin): see the comment at the top of this file.
    public func collectGarbage(tenant: String, _ req: Wire.GCRequest, ctx: CallContext) async throws -> Wire.GCReport {
        // An admin, or the server's own scheduled job (JobScheduler).
        guard ctx.principal?.role == .admin || (ctx.principal == nil && ctx.job != nil) else {
            throw ServerError.forbidden("only an admin may collect garbage")
        }
        guard try await catalog.tenant(tenant) != nil else {
            throw ServerError.notFound("tenant \(tenant) does not exist: `redoubt admin tenant list`")
        }
        // One run per tenant at a time (a retried request must not race the first).
        guard gcRunning.withLock({ $0.insert(tenant).inserted }) else {
            throw ServerError(409, "E_CONFLICT",
                "garbage collection of tenant \(tenant) is already running; wait for it to finish")
        }
        defer { _ = gcRunning.withLock { $0.remove(tenant) } }
        let now = try await now()
        let plan = try await catalog.collect(tenant: tenant, now: now, grace: Self.gcGrace, dryRun: req.dryRun)
        let bytes = plan.packs.reduce(Int64(0)) { $0 + $1.size }
        func report(pending: Int) -> Wire.GCReport {
            Wire.GCReport(tenant: tenant, dryRun: req.dryRun, snapshotsRemoved: plan.snapshots,
                keptNewest: plan.keptNewest, keptHeld: plan.keptHeld,
                          packsRemoved: plan.packs.count, bytesRemoved: bytes, pendingDeletes: pending)
        }
        guard !req.dryRun else { return report(pending: 0) }
        // Audited as soon as the catalog side is done, whatever happens to the store side.
        await audit(ctx, .collectGarbage, object: "tenant \(tenant)", outcome: "ok",
              detail: """
                  snapshots=\(plan.snapshots.count) packs=\(plan.packs.count) bytes=\(bytes) \
                  kept-newest=\(plan.keptNewest) kept-held=\(plan.keptHeld) 
                  """
                + "removed=\(plan.snapshots.joined(separator: ","))")
        if try await catalog.isTenantHeld(tenant) {
            // A tenant hold keeps even what an earlier run queued (and frees its claims, so
            // those objects can be recorded again meanwhile).
            try await catalog.unclaimPendingDeletes(tenant: tenant)
            return report(pending: try await catalog.pendingDeletes(tenant: tenant).count)
        }
        // This run's keys and any an earlier run left, each claimed first: a pack or
        // manifest recorded again since it was queued is not deleted, and while one is
        // being deleted it cannot be recorded again (E_RETRY).
        var pending = 0
        for k in try await catalog.pendingDeletes(tenant: tenant) {
            guard let key = ObjectKey(k) else { try await catalog.finishPendingDelete(k, done: true); continue }
            guard try await catalog.claimPendingDelete(k, tenant: tenant, now: now) else { continue }
            do {
                try await deleteUnlessHeld(key, now: now)
                try await catalog.finishPendingDelete(k, done: true)
            } catch let e as StoreError where e.code == .notFound {
                try await catalog.finishPendingDelete(k, done: true)
            } catch {
                try await catalog.finishPendingDelete(k, done: false)
                pending += 1
                logger.warning("gc: could not delete a store object; the next run retries", metadata: ["key": "\(k)",
                    "error": "\(error)"])
                await audit(ctx, .gcDelete, object: k, outcome: "error", detail: "\(error)")
            }
        }
        await audit(ctx, .gcStore, object: "tenant \(tenant)", outcome: pending == 0 ? "ok" : "partial",
            detail: "pending=\(pending)")
        return report(pending: pending)
    }
}

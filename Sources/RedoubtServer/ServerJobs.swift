import Crypto
import Foundation
import RedoubtCore
import RedoubtStore

// The jobs the server runs for each tenant (docs/PROTOCOL.md §4.8). Each reuses what an
// admin can run by hand: `policy apply`, `gc`, `copy sync`, the copy target's lock proof,
// and the server's keyless pack check of uploads and `verify`, here as a rolling scrub.

/// The server's standard jobs, in the order a tick runs them.
public enum ServerJobs {
    /// Every pack is re-read by the scrub at least this often.
    public static let scrubPeriod: TimeInterval = 30 * 86400

    public static let policyApply = ScheduledJob(name: "policy-apply", defaultInterval: 86400, windowed: true,
                                                 protective: true, tenants: { s in
        Array(Set(try await s.catalog.policies(tenant: nil).map(\.tenant))).sorted()
    }) { ctx in
        let r = try await ctx.service.applyPolicies(tenant: ctx.tenant, host: nil)
        return .ok("kept=\(r.kept) extended=\(r.extended)")
    }

    public static let gc = ScheduledJob(name: "gc", defaultInterval: 86400, windowed: true, protective: false,
                                        tenants: { s in try await s.catalog.tenants().map(\.name) }) { ctx in
        // Store deletes left pending (a legal hold, a store error, each audited by gc itself)
        // are not a failure of the run: the next run takes them up again.
        let r = try await ctx.service.collectGarbage(tenant: ctx.tenant, Wire.GCRequest(dryRun: false), ctx: ctx.call)
        return .ok("snapshots=\(r.snapshotsRemoved.count) packs=\(r.packsRemoved) bytes=\(r.bytesRemoved) "
                   + "pending=\(r.pendingDeletes)")
    }

    /// The hourly catch-up, which proves each target again too; each commit (and a new target,
    /// a hold placed or released, a policy that moved locks) asks for a run at once.
    public static let copySync = ScheduledJob(name: "copy-sync", defaultInterval: 3600, windowed: false,
                                              protective: true, tenants: tenantsWithCopyTargets) { ctx in
        guard await ctx.service.syncCopies(tenant: ctx.tenant) else {
            throw ServerError(502, "E_COPY", "a copy of tenant \(ctx.tenant) failed: `redoubt admin copy status`")
        }
        return .ok("synced")
    }

    public static let lockProbe = ScheduledJob(name: "lock-probe", defaultInterval: 86400, windowed: true,
                                               protective: true, tenants: tenantsWithCopyTargets) { ctx in
        try await ctx.service.probeCopyLocks(ctx)
    }

    public static let scrub = ScheduledJob(name: "scrub", defaultInterval: 86400, windowed: true, protective: true,
                                           tenants: { s in try await s.catalog.tenants().map(\.name) }) { ctx in
        try await ctx.service.scrub(ctx)
    }

    /// Keeps every held object's local lock a day ahead of the clock (`enforceHolds`).
    public static let legalHolds = ScheduledJob(name: "legal-holds", defaultInterval: 3600, windowed: false,
                                                protective: true, tenants: { s in
        Array(Set(try await s.catalog.holds(active: true).map(\.tenant))).sorted()
    }) { ctx in
        try await ctx.service.enforceHolds(tenant: ctx.tenant)
        return .ok("held")
    }

    public static let all = [policyApply, gc, copySync, lockProbe, legalHolds, scrub]

    @Sendable static func tenantsWithCopyTargets(_ s: RepositoryService) async throws -> [String] {
        Array(Set(try await s.catalog.copyTargets(tenant: nil).map(\.tenant))).sorted()
    }
}

extension RepositoryService {
    /// Re-reads today's slice of the tenant's packs from the store, by range, and checks each hashes to
    /// its ID and parses (format 2: each chunk's sealed bytes hash to its chunk ID), without
    /// a key. A pack that fails is an `E_INTEGRITY` finding, one the store lacks `E_NOT_FOUND`.
    func scrub(_ ctx: JobContext) async throws -> JobOutcome {
        let interval = ctx.schedule.interval(ServerJobs.scrub.name, default: ServerJobs.scrub.defaultInterval)
        let slice = try await catalog.scrubSlice(tenant: ctx.tenant, now: ctx.now, period: ServerJobs.scrubPeriod,
                                           interval: interval)
        var found = 0, bytes: Int64 = 0
        for (hex, _) in slice {
            try Task.checkCancellation()
            guard await ctx.stillHoldsLease() else {
                throw ServerError(409, "E_CONFLICT", "the scrub's lease was taken by another server; it stops here")
            }
            guard let id = PackID(hex: hex) else { continue }
            let object = "pack \(hex)"
            // By range, as an upload is checked: memory stays one piece whatever the pack's size.
            switch try await checkStoredPack(tenant: ctx.tenant, id: id) {
            case .missing:
                found += 1
                try await finding(ctx, "scrub", object: object, code: "E_NOT_FOUND", detail: """
                    \(object) of tenant \(ctx.tenant) is in the catalog but not in the store: restore it from a copy \
                    (`redoubt admin copy`)
                    """)
                try await catalog.recordScrub(tenant: ctx.tenant, pack: hex, result: "missing", at: ctx.now)
            case .damaged(let why):
                found += 1
                try await finding(ctx, "scrub", object: object, code: "E_INTEGRITY", detail: """
                    \(object) of tenant \(ctx.tenant) is damaged in the store (\(why)): restore it from a \
                    copy, and check the disk
                    """)
                try await catalog.recordScrub(tenant: ctx.tenant, pack: hex, result: "damaged", at: ctx.now)
            case .ok(let size):
                bytes += Int64(size)
                try await catalog.recordScrub(tenant: ctx.tenant, pack: hex, result: "ok", at: ctx.now)
            }
        }
        let summary = "packs=\(slice.count) bytes=\(bytes) findings=\(found)"
        return found == 0 ? .ok(summary) : .findings(summary)
    }

    /// Proves again that each copy bucket of the tenant enforces Object Lock (a canary that
    /// must refuse deletion). A bucket that fails is an `E_LOCK_UNENFORCED` finding.
    func probeCopyLocks(_ ctx: JobContext) async throws -> JobOutcome {
        var failed: [String] = []
        for t in try await catalog.copyTargets(tenant: ctx.tenant) {
            let proof = try await t.store().proveLocks(now: ctx.now)
            let detail = proof.firstFailure ?? "all lock checks passed"
            try await catalog.recordCopyProof(t.id, at: ctx.now, ok: proof.passed, detail: detail)
            await audit(ctx.call, .copyProof, object: t.url, outcome: proof.passed ? "ok" : "denied", detail: detail)
            if !proof.passed {
                failed.append(t.url)
                try await finding(ctx, "lock-probe", object: t.url, code: "E_LOCK_UNENFORCED", detail: """
                    copy target \(t.url) of tenant \(ctx.tenant) no longer enforces Object Lock COMPLIANCE \
                    (\(detail)): its copies can be deleted
                    """)
            }
        }
        return failed.isEmpty ? .ok("proved") : .findings("unenforced: \(failed.joined(separator: ", "))")
    }

    /// Keeps a finding for the alerting component; a new one is logged as an error and audited.
    private func finding(_ ctx: JobContext, _ source: String, object: String, code: String,
            detail: String) async throws {
        let new = try await catalog.recordFinding(tenant: ctx.tenant, object: object, code: code, detail: detail,
                                            source: source, at: ctx.now)
        logger.error("integrity finding", metadata: ["tenant": "\(ctx.tenant)", "object": "\(object)",
                                                     "code": "\(code)", "detail": "\(detail)", "new": "\(new)"])
        if new {
            await audit(ctx.call, .integrityFinding, object: object, outcome: "damaged", detail: "\(code) \(detail)")
        }
    }
}

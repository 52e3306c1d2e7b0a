import Foundation
import GRDB
import RedoubtCore
import RedoubtStore

// Legal holds (docs/PROTOCOL.md §4.3 and §4): a hold on a snapshot, or on a
// whole tenant (all its snapshots, present and future), keeps their packs and manifests
// locked past their retention until the hold is released through an approved request.
// Placing a hold strengthens protection and takes effect at once; releasing one weakens
// it and is gated like every other weakening change (§4.2, `release-hold`).
//
// Locally a held object's lock (retain-until plus the immutable flag) is kept at least a
// day ahead of the clock, by `enforceHolds` (when a hold is placed, and hourly by the
// scheduler's `legal-holds` job). In an S3 copy the held objects' original versions carry an S3
// legal hold, set by each sync and lifted by the first sync after the release.

/// A legal hold as the catalog keeps it.
public struct LegalHold: Sendable, Equatable {
    public enum Kind: String, Sendable { case snapshot, tenant }
    public let id: String
    public let kind: Kind
    /// The snapshot ID, or the tenant name.
    public let target: String
    public let tenant: String
    public let reason: String
    public let createdBy: String
    public let createdAt: Date
    public let releasedAt: Date?
    public let releaseRequest: String?

    public var wire: Wire.HoldInfo {
        Wire.HoldInfo(id: id, kind: kind.rawValue, target: target, tenant: tenant, reason: reason, createdBy: createdBy,
            createdAt: createdAt,
                      releasedAt: releasedAt, releaseRequest: releaseRequest)
    }
}

extension RepositoryService {
    /// How far ahead of the clock a held object's local lock is kept (at least).
    public static let holdLead: TimeInterval = 86400

    /// Places a hold at once (it only strengthens protection), then locks its objects.
    public func placeHold(_ req: Wire.PlaceHoldRequest, ctx: CallContext) async throws -> Wire.HoldInfo {
        guard let p = ctx.principal, p.role == .admin else {
            throw ServerError.forbidden("only an admin may place a legal hold")
        }
        let reason = req.reason ?? ""
        // The free-text rule (docs/PROTOCOL.md §3.2): the reason is listed and audited.
        guard reason.isEmpty || SafeText.isValidFreeText(reason, maxBytes: 1024) else {
            throw ServerError.badRequest("the reason must be at most 1024 bytes of printable text (no control, "
                                         + "format or line-separator characters, no leading or trailing space)")
        }
        let kind: LegalHold.Kind
        let target: String
        let tenant: String
        switch (req.snapshot, req.tenant) {
        case (let s?, nil):
            let id = try await resolveSnapshotID(s, ctx: ctx)
            guard let rec = try await catalog.snapshot(id: id) else {
                throw ServerError.notFound("snapshot \(s) not found: `redoubt admin tenant list`, `redoubt snapshots`")
            }
            (kind, target, tenant) = (.snapshot, id, rec.tenant)
        case (nil, let t?):
            guard try await catalog.tenant(t) != nil else {
                throw ServerError.notFound("tenant \(t) does not exist: `redoubt admin tenant list`")
            }
            (kind, target, tenant) = (.tenant, t, t)
        default:
            throw ServerError.badRequest("a hold names exactly one snapshot or one tenant")
        }
        let hold = LegalHold(id: hexString((0..<6).map { _ in UInt8.random(in: 0...255) }), kind: kind, target: target,
            tenant: tenant,
                             reason: reason, createdBy: p.name, createdAt: try await now(), releasedAt: nil,
                                 releaseRequest: nil)
        try await catalog.insertHold(hold)
        await audit(ctx, .placeHold, object: "hold \(hold.id)", outcome: "ok",
            detail: "\(kind.rawValue)=\(target) tenant=\(tenant) reason=\(reason)")
        try await enforceHolds(tenant: tenant)
        if !(try await catalog.copyTargets(tenant: tenant).isEmpty) {
            await requestJob(ServerJobs.copySync.name, tenant: tenant)
        }
        return hold.wire
    }

    public func listHolds() async throws -> [Wire.HoldInfo] { try await catalog.holds().map(\.wire) }

    /// Releases a hold: weakens protection, so it needs approval (`release-hold`). The
    /// local locks already extended stay until their date (a lock is never shortened);
    /// the S3 legal holds are lifted by the next sync of the tenant's copy targets.
    public func releaseHold(id: String, _ req: Wire.ApprovedChange, ctx: CallContext) async throws -> Wire.HoldInfo {
        guard let h = try await catalog.holds().first(where: { $0.id == id }) else {
            throw ServerError.notFound("no legal hold \(id): `redoubt admin hold list`")
        }
        guard h.releasedAt == nil else { throw ServerError(409, "E_CONFLICT", "legal hold \(id) was already released") }
        try await authorize(.releaseHold, object: "hold \(id)", parameters: [:], requestID: req.requestID,
                consume: true,
            ctx: ctx)
        guard try await catalog.releaseHold(id, at: try now(), request: req.requestID) else {
            throw ServerError(409, "E_CONFLICT", "legal hold \(id) was already released")
        }
        await audit(ctx, .releaseHold, object: "hold \(id)", outcome: "ok",
            detail: "\(h.kind.rawValue)=\(h.target) tenant=\(h.tenant) request=\(req.requestID ?? "-")")
        if !(try await catalog.copyTargets(tenant: h.tenant).isEmpty) {
            await requestJob(ServerJobs.copySync.name, tenant: h.tenant)
        }
        return try await catalog.holds().first { $0.id == id }?.wire ?? h.wire
    }

    /// Keeps every held pack's and manifest's local lock at least `holdLead` ahead of the
    /// clock (whole days, so the flag is touched about once a day), so the immutable flag
    /// is never cleared on a held object. `tenant` limits it to one tenant. Errors are
    /// logged and audited per object; the first is thrown after all were tried.
    public func enforceHolds(tenant: String? = nil) async throws {
        let now = try await now()
        let until = Self.ceilDay(now.addingTimeInterval(Self.holdLead))
        let tenants = Set(try await catalog.holds(active: true).map(\.tenant)).filter { tenant == nil || $0 == tenant }
        var firstError: (any Error)?
        for t in tenants.sorted() {
            let keys = try await catalog.heldKeys(tenant: t)
            // The catalog's pack locks follow the store's, so a rebuild and the copies agree.
            let packs = keys.compactMap {
                k in k.contains("/packs/") ? k.split(separator: "/").last.flatMap { PackID(hex: String($0)) } : nil
            }
            _ = try await catalog.extendPackLocks(tenant: t, packs: packs, until: until)
            let queued = Set(try await catalog.pendingDeletes(tenant: t))
            for k in keys.sorted() {
                guard let key = ObjectKey(k) else { continue }
                do { try await store.extendRetention(key,
                    until: until) } catch let e as StoreError where e.code == .notFound && queued.contains(k) {
                    // Queued by garbage collection and already deleted: nothing to hold.
                    continue
                } catch {
                    firstError = firstError ?? error
                    logger.error("legal hold: could not extend the lock", metadata: ["key": "\(k)",
                        "error": "\(error)"])
                    _ = try? await catalog.audit(time: now, actor: "hold-job", role: "-", credential: "-",
                                                 source: "local", action: "hold-extend",
                                       object: k, outcome: "error", detail: "\(error)")
                }
            }
        }
        if let firstError { throw firstError }
    }

    /// Deletes a store object unless a legal hold covers it. Every server path that
    /// deletes from the store goes through here.
    func deleteUnlessHeld(_ key: ObjectKey, now: Date) async throws {
        // Why: a hold must win over any deletion, even one the store's lock would allow.
        guard try await !catalog.isHeld(key: key) else {
            throw ServerError(409, "E_HELD",
                "\(key.path) is under a legal hold: release the hold (`redoubt admin hold list`) first")
        }
        try await store.delete(key, now: now)
    }
}

// Over the repositories only, so every catalog backend answers alike; the key layout is the server's.
extension LegalHoldRepository {
    /// Whether a store object is a held pack or manifest (`t/<tenant>/packs/…`,
    /// `t/<tenant>/snapshots/<id>`); other objects are never held.
    public func isHeld(key: ObjectKey) async throws -> Bool {
        let parts = key.path.split(separator: "/", maxSplits: 2)
        guard parts.count == 3, parts[0] == "t" else { return false }
        let tenant = String(parts[1])
        switch BucketVerify.kind(key.path, tenant: tenant) {
        case .pack(let id):
            return try await isHeld(tenant: tenant, pack: id.description)
        case .manifest(let id):
            // The tenant from the key: a manifest garbage collection queued has no snapshot
            // row left to name its tenant, and a tenant hold must still cover it.
            if try await isTenantHeld(tenant) { return true }
            return try await isHeld(snapshot: id.description)
        default:
            return false
        }
    }
}

extension LegalHoldRepository where Self: SnapshotRepository & PackRepository & GCQueueRepository {
    /// The store keys that holds in force cover for `tenant` (packs and manifests).
    public func heldKeys(tenant: String) async throws -> Set<String> {
        var keys = Set<String>()
        for h in try await holds(active: true) where h.tenant == tenant {
            let snaps = h.kind == .tenant ? try await snapshots(tenant: tenant, host: nil).map(\.id) : [h.target]
            if h.kind == .tenant {
                for p in try await packs(tenant: tenant) {
                    if let id = PackID(hex: p.id) { keys.insert(RepositoryLayout.packKey(tenant: tenant, id: id).path) }
                }
            }
            for s in snaps {
                guard let sid = SnapshotID(hex: s) else { continue }
                keys.insert(RepositoryLayout.manifestKey(tenant: tenant, id: sid).path)
                for p in try await snapshotPacks(id: s) { keys.insert(RepositoryLayout.packKey(tenant: tenant,
                        id: p).path) }
            }
            // Objects garbage collection queued but has not deleted: the hold keeps them locked too.
            if h.kind == .tenant { keys.formUnion(try await pendingDeletes(tenant: tenant)) }
        }
        return keys
    }
}

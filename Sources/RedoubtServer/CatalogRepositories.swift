import Foundation
import RedoubtCore

// The catalog's seam: one protocol per aggregate, in domain types only (no SQL, no
// database types, no HTTP). `Catalog` is the SQLite implementation (SQLiteCatalog+*.swift);
// a PostgreSQL one implements the same protocols and is run against CatalogConformance
// (Tests/RedoubtServerTests/CatalogConformance.swift). Each protocol's doc comment states
// what a backend must guarantee; the server's safety arguments (docs/PROTOCOL.md §4.5 for
// garbage collection, §4.2 for approvals, §5 for the audit log) rest on exactly those.
//
// Common to all of them:
// - A method is one transaction unless its comment says otherwise: it sees one consistent
//   state and its writes land all or none. Checks made inside it ("if still …") are made
//   in that transaction, never before it.
// - Writers are serialised per catalog (SQLite has one writer; PostgreSQL needs
//   SERIALIZABLE or row locks on what the comment names) wherever a comment says
//   "atomically against".
// - A refusal is a ``CatalogError`` with the code the comment names; anything else thrown
//   is the backend's own failure (I/O, connection) and reaches the client as a 500.
// - Times are stored to the precision of a `Double` of seconds since 1970, and read back
//   exactly so (the audit hash covers them).

/// Server-wide settings and the server's monotonic clock.
public protocol SettingsRepository: Sendable {
    func setting(_ key: String) async throws -> String?
    /// Inserts or replaces.
    func setSetting(_ key: String, _ value: String) async throws
    /// Moves the stored latest time to `max(stored, t)` and returns it, atomically against
    /// other calls: the time retention is judged by never goes back.
    func advanceClock(to t: Date) async throws -> Date
}

/// Tenants, their read-key versions and retired KEKs, their dedup scope.
public protocol TenantRepository: Sendable {
    /// Fails (backend error) when a tenant of that name exists.
    func insertTenant(_ t: TenantRecord) async throws
    func tenant(_ name: String) async throws -> TenantRecord?
    /// Ordered by name.
    func tenants() async throws -> [TenantRecord]
    /// Compare-and-set of the read key, in one transaction with its checks: `newVersion`
    /// must be the current version + 1 (else `.conflict`), the tenant must exist
    /// (`.notFound`) and not be shredded (`.shredded`), and for a shred no active legal hold
    /// may name the tenant (`.held`, checked in this transaction, so a hold placed after the
    /// caller's own check still stops it). Records the previous KEK as retired; a shred
    /// also empties the write material, in the same transaction.
    func replaceReadKey(tenant: String, newVersion: Int, wrapped: String, retiredStub: String, now: Date,
                        shredded: Bool) async throws
    /// Sets the material only where the row has none; true if it did.
    func setWriteMaterial(tenant: String, material: [UInt8]) async throws -> Bool
    /// Empties the material of every shredded tenant; returns how many rows changed.
    func clearShreddedWriteMaterial() async throws -> Int
    /// Compare-and-set: changes the retention only if it is still `from`.
    func setMinRetention(tenant: String, seconds: TimeInterval, from: TimeInterval) async throws -> Bool
    /// Ordered by version.
    func retiredKEKs(tenant: String) async throws -> [RetiredKEK]
    /// Sets `destroyedAt` once; a version already marked keeps its first time.
    func markKEKsDestroyed(tenant: String, versions: [Int], now: Date) async throws
    /// `.host` for a tenant the catalog does not know (the narrower scope).
    func dedupScope(tenant: String) async throws -> DedupScope
    func dedupScopes() async throws -> [String: DedupScope]
    /// Compare-and-set: changes the scope only if it is still `from`.
    func setDedupScope(tenant: String, _ scope: DedupScope, from: DedupScope) async throws -> Bool
}

/// Principals (credentials) and one-time enrollment tokens.
public protocol PrincipalRepository: Sendable {
    /// Fails (backend error) on a duplicate fingerprint, or a second active principal with
    /// the same tenant, role and name.
    func insertPrincipal(_ p: Principal, os: String?, now: Date) async throws
    /// The previous OS (itself optional) when it changed; nil when it was already `os` or
    /// the principal is unknown.
    func updatePrincipalOS(id: String, os: String) async throws -> String??
    /// Active (not revoked) principals only: authentication rests on this.
    func principal(fingerprint: String) async throws -> Principal?
    /// Active principals of a tenant, or all when nil; ordered by role, then name.
    func principals(tenant: String?) async throws -> [Principal]
    func principalListing(includeRevoked: Bool) async throws -> [Wire.PrincipalInfo]
    func principalInfo(id: String) async throws -> Wire.PrincipalInfo?
    /// Revokes an active admin by name and cancels that name's unused admin tokens, in one
    /// transaction; false if there was none. Refuses (`.conflict`, nothing changed) when no
    /// active admin would be left, checked in that transaction: two removals approved at once
    /// cannot leave the server without an admin.
    func revokeAdmin(name: String, now: Date) async throws -> Bool
    /// Revokes an active non-admin principal and cancels the unused tokens that would
    /// enroll the same tenant, role and name, in one transaction: returns how many tokens,
    /// nil if there was no such principal.
    func revokePrincipal(id: String, now: Date) async throws -> Int?
    func insertEnrollment(tokenHash: String, role: Role, tenant: String?, name: String, expiresAt: Date,
                          createdBy: String) async throws
    /// One transaction: finds the unused, uncancelled, unexpired token (else `.notFound`),
    /// refuses a writer or restorer of a tenant without write material
    /// (`.noWriteMaterial`), calls `make`, refuses a name an active principal of the same
    /// tenant and role holds (`.conflict`), records the principal and uses the token up.
    /// Any refusal, or an error `make` throws, leaves the token unused. Two concurrent
    /// redemptions of one token: exactly one succeeds. A backend that retries a transaction
    /// (PostgreSQL) may call `make` more than once; only the last principal is recorded, so
    /// `make` must do nothing outside its result that a discarded call would leave behind.
    func redeemEnrollment(tokenHash: String, now: Date, os: String?,
                          _ make: (Catalog.Enrollment) throws -> Principal) async throws -> Principal
    /// Tokens that could still enroll someone at `now`, soonest expiry first.
    func pendingEnrollments(now: Date) async throws -> [Wire.EnrollmentInfo]
    /// Cancels the one pending token whose hash starts with `id`; nil when none or several.
    func cancelEnrollment(id: String, now: Date) async throws -> Wire.EnrollmentInfo?
    /// Active writers and the OS each reported.
    func enrolledHostSystems() async throws -> [Catalog.HostOS]
    /// Every writer of `tenant` (every tenant's when nil) that has a host key, revoked ones
    /// included, oldest enrollment first: what host key statements are written from.
    func hostKeyWriters(tenant: String?) async throws -> [HostKeyObjects.Writer]
}

/// Packs, the chunk index (per dedup scope), and damaged-pack reports.
public protocol PackRepository: Sendable {
    func pack(tenant: String, id: String) async throws -> (size: Int, retainUntil: Date)?
    /// Records a pack and its chunk IDs in the dedup scope `uploader` ("" when nil).
    ///
    /// Atomically with the pack's row (one transaction): the garbage-collection queue entry
    /// for `key` is taken back if merely queued, or the call is refused with
    /// `.beingCollected` if a run has claimed it (nothing is recorded then); and the first
    /// `batch` chunk rows. The remaining chunk rows may follow in further transactions of
    /// `batch` rows each, so one huge pack does not hold the single writer: a crash between
    /// them leaves the pack recorded with part of its index, which only costs dedup.
    /// A pack already recorded keeps its row; within a scope the first pack recorded for a
    /// chunk keeps it. `verified`: the caller checked every chunk's bytes against its ID
    /// (format-2 packs), which makes the rows visible to other hosts under tenant scope.
    /// `host`: the name of the host that uploaded it, for an upload: who sent the pack (its
    /// quota usage) and its chunk count (detection's volumes) are recorded with the pack's
    /// row, so a crash cannot leave a pack that a re-upload (a no-op) would never record. A
    /// pack recorded again keeps its first uploader and count (its bytes never change).
    func insertPack(tenant: String, id: String, key: String, size: Int, retainUntil: Date, chunkIDs: [ChunkID],
                    now: Date,
                    uploader: String?, batch: Int, verified: Bool, uploadedBy host: String?) async throws
    /// For each of `ids` the tenant holds, one pack holding it: only among chunks of scope
    /// `scope` when given (and, with `orVerified`, verified chunks of any scope), else among
    /// all the tenant's. Another tenant's chunks never answer.
    func chunkLocations(tenant: String, ids: [ChunkID], scope: String?, orVerified: Bool) async throws
        -> [ChunkID: PackID]
    /// Which of `packs` the tenant does not hold, in the order given.
    func missingPacks(tenant: String, packs: [PackID]) async throws -> [PackID]
    /// Which of `packs` the tenant holds that principal `uploader` uploaded: packs whose
    /// chunks that principal may reuse under either dedup scope (docs/PROTOCOL.md §4.6).
    func uploadedPacks(tenant: String, uploader: String, packs: [PackID]) async throws -> Set<PackID>
    /// Moves the packs' retain-until to `until` where that is later (never earlier); returns
    /// the packs that moved. With `requireAll`, a pack the tenant does not hold is
    /// `.packsMissing` (naming them) and nothing moves. One transaction, atomically against
    /// garbage collection: once this returns, no run can take these packs before `until`.
    func extendPackLocks(tenant: String, packs: [PackID], until: Date, requireAll: Bool) async throws
        -> [(PackID, Date)]
    /// The tenant's packs, ordered by ID.
    func packs(tenant: String) async throws -> [(id: String, size: Int, retainUntil: Date)]
    /// Records the first report of a damaged pack: returns its uploader (itself optional),
    /// nil when the tenant holds no such pack. A second report keeps the first.
    func recordDamagedPack(tenant: String, pack: String, reporter: String, problem: String,
                           now: Date) async throws -> String??
    /// Damaged packs reported, per uploading principal ID.
    func damagedPackCounts() async throws -> [String: Int]
}

/// Committed snapshots and the packs each names.
public protocol SnapshotRepository: Sendable {
    /// Records a snapshot and the packs it names, in one transaction that first takes
    /// `manifestKey` back from the garbage-collection queue (`.beingCollected` if claimed)
    /// and, with `requirePacks`, checks every pack is still held (`.packsMissing`, nothing
    /// recorded): atomically against garbage collection, so no run removes a pack between
    /// that check and the record.
    func insertSnapshot(_ s: SnapshotRecord, packs: [PackID], requirePacks: Bool, manifestKey: String?) async throws
    func snapshot(id: String) async throws -> SnapshotRecord?
    /// In commit order (committedAt, then ID), never by the time a host claims.
    func snapshots(tenant: String, host: String?) async throws -> [SnapshotRecord]
    /// The latest time the host's snapshots claim and when the principal was enrolled.
    func hostTimeFloor(tenant: String, host: String,
                       principalID: String) async throws -> (lastClaimed: Date?, enrolled: Date?)
    /// Ordered by pack ID.
    func snapshotPacks(id: String) async throws -> [PackID]
    /// One page of the listing: at most `limit` snapshots (nil: all) of `tenant` (nil: every
    /// tenant the catalog holds, in tenant name order) and `host` (nil: every host), after
    /// the one with ID `after`, ordered by tenant, then commit time, then ID. `.notFound`
    /// when `after` is not listed under these filters (collected since, or never visible).
    /// A page must cost its own rows whatever the total (an index in listing order, the
    /// cursor as a range start), so a tenant flooded with decoys is no dearer to list.
    func snapshotPage(tenant: String?, host: String?, after: String?, limit: Int?) async throws -> [SnapshotRecord]
}

/// Retention policies, and moving a snapshot's lock later. A backend must make `setPolicy`
/// and `removePolicy` compare-and-set (false when the stored rules are not `from`; nil:
/// none stored), and `extendSnapshotLock` move a lock only later (nil when it did not move).
public protocol PolicyRepository: Sendable {
    func policies(tenant: String?) async throws -> [Wire.PolicyInfo]
    func setPolicy(_ p: Wire.PolicyInfo, from: RetentionRules?) async throws -> Bool
    func removePolicy(tenant: String, hostGlob: String, tag: String, from: RetentionRules) async throws -> Bool
    func extendSnapshotLock(id: String, until: Date) async throws -> SnapshotRecord?
}

/// The hash-chained audit log (docs/PROTOCOL.md §5).
public protocol AuditRepository: Sendable {
    /// Appends one record: reads the newest record's sequence number and hash and inserts
    /// `seq + 1` chained to it, atomically against every other append (one serialised
    /// writer, or a lock on the log's head), so the chain never forks and has no gap.
    /// Fields are stored exactly as hashed (after `SafeText.auditField`).
    @discardableResult
    func audit(time: Date, actor: String, role: String, credential: String, source: String, action: String,
               object: String, outcome: String, detail: String) async throws -> Catalog.AuditRecord
    /// Records with `seq > after`, ascending, at most `limit`: the paging the API and
    /// verification use.
    func auditRecords(after seq: Int64, limit: Int) async throws -> [Catalog.AuditRecord]
    /// The newest record's seq and hash (0 and the genesis hash for an empty log).
    func auditChainHead() async throws -> Catalog.AuditChainHead
    /// Copy proofs, bucket copies and media exports, ascending.
    func copyEvents() async throws -> [Catalog.AuditRecord]
}

/// M-of-N approval requests (docs/PROTOCOL.md §4.2).
public protocol ApprovalRepository: Sendable {
    func insertRequest(id: String, action: String, object: String, parameters: [String: String], requester: Principal,
                       now: Date, expiresAt: Date, needed: Int) async throws
    /// The request with its state computed at `now`: only approvals by admins still active
    /// count, a revoked requester expires it, and a quorum raised since applies to it.
    func request(_ id: String, now: Date) async throws -> ApprovalRequest?
    /// Oldest first.
    func requests(now: Date) async throws -> [ApprovalRequest]
    /// One admin's decision, in one transaction with its checks: `.notFound`, `.conflict`
    /// (not pending, or this admin already approved), `.forbidden` (the requester itself).
    func decide(_ id: String, by admin: Principal, approve: Bool, now: Date) async throws -> ApprovalRequest
    /// Marks an approved request executed, exactly once: of two concurrent calls one gets
    /// true. False when it is not approved (any more).
    func consumeRequest(_ id: String, now: Date) async throws -> Bool
    /// The `quorum` setting, 2 when unset.
    func configuredQuorum() async throws -> Int
    /// The configured quorum capped by the active admins, at least 1.
    func effectiveQuorum() async throws -> Int
    func adminCount() async throws -> Int
}

/// Legal holds, and which store keys each copy place holds.
public protocol LegalHoldRepository: Sendable {
    /// A snapshot hold is refused with `.notFound` if the snapshot is gone, checked in the
    /// insert's transaction: atomically against garbage collection.
    func insertHold(_ h: LegalHold) async throws
    /// Oldest first; `active`: unreleased only.
    func holds(active: Bool) async throws -> [LegalHold]
    /// Releases once; false if unknown or already released.
    func releaseHold(_ id: String, at: Date, request: String?) async throws -> Bool
    func isHeld(snapshot id: String) async throws -> Bool
    func isHeld(tenant: String, pack id: String) async throws -> Bool
    func isTenantHeld(_ tenant: String) async throws -> Bool
    func copyLegalHolds(place: String) async throws -> Set<String>
    func setCopyLegalHold(place: String, key: String, on: Bool) async throws
}

/// Garbage collection's catalog side and its queue of store keys to delete (§4.5).
///
/// The reclaim race: a key queued for deletion may be uploaded and recorded again. The
/// rules that keep the store from losing a recorded object are
/// - ``claimPendingDelete(_:tenant:now:)`` claims a key only if the catalog does not hold
///   its object, atomically with that check (else it drops the key);
/// - recording an object (``reclaim(key:)``, ``PackRepository/insertPack``,
///   ``SnapshotRepository/insertSnapshot``) takes a merely queued key back, and refuses
///   a claimed one with `.beingCollected`, atomically with that check;
/// so a key is deleted from the store only while claimed, and nothing is recorded under a
/// claimed key.
public protocol GCQueueRepository: Sendable {
    /// In one transaction: unless the tenant is held, removes the expired snapshots that are
    /// neither held nor their host's newest, then the packs no remaining snapshot names whose
    /// lock expired and that are older than `grace`, with their chunk rows; queues their
    /// store keys. `dryRun` reports the same plan and changes nothing.
    func collect(tenant: String, now: Date, grace: TimeInterval, dryRun: Bool) async throws -> Catalog.GCPlan
    /// Before an object is stored again: takes a queued key back, refuses a claimed one
    /// (`.beingCollected`). Its own transaction.
    func reclaim(key: String) async throws
    /// Releases every claim of the tenant.
    func unclaimPendingDeletes(tenant: String) async throws
    /// Queued keys of the tenant, ordered.
    func pendingDeletes(tenant: String) async throws -> [String]
    /// See the type's comment: true if this caller may now delete `key` from the store.
    func claimPendingDelete(_ key: String, tenant: String, now: Date) async throws -> Bool
    /// `done` drops the key from the queue; otherwise its claim is released for a later run.
    func finishPendingDelete(_ key: String, done: Bool) async throws
}

/// Off-site S3 copy targets.
public protocol CopyTargetRepository: Sendable {
    func insertCopyTarget(_ t: CopyTarget) async throws
    /// Targets not removed, of one tenant or all; oldest first.
    func copyTargets(tenant: String?) async throws -> [CopyTarget]
    func recordCopyProof(_ id: String, at: Date, ok: Bool, detail: String) async throws
    func recordCopySync(_ id: String, at: Date, ok: Bool, detail: String) async throws
    /// Removes once; false if unknown or already removed.
    func removeCopyTarget(_ id: String, at: Date) async throws -> Bool
}

/// Per-host and per-tenant quotas, and which host uploaded each pack.
public protocol QuotaRepository: Sendable {
    /// `host` "" is the tenant's own quota; nil bytes removes it.
    func setQuota(tenant: String, host: String, bytes: Int64?) async throws
    func quota(tenant: String, host: String) async throws -> Int64?
    /// Bytes of the tenant's packs (of those `host` uploaded, when given), split into those
    /// a committed snapshot names and the rest.
    func usage(tenant: String, host: String?) async throws -> (committed: Int64, uncommitted: Int64)
}

/// When a restorer last deep-verified each pack (docs/PROTOCOL.md §4.6.1). The server cannot
/// check a deep verify, so this ledger only orders the rolling verify; it changes nothing
/// stored.
public protocol DeepVerifyLedgerRepository: Sendable {
    /// Records a deep verify of `packs` of `tenant` by `reporter` with `outcome` (`ok` or
    /// `damaged`); a later report replaces an earlier one. Returns the IDs the tenant does
    /// not hold (nothing is recorded for those). One transaction.
    func recordPackVerifications(tenant: String, packs: [String], outcome: String, reporter: String,
                                 now: Date) async throws -> [String]
    /// The tenant's deep-verify state and the packs due next until their sizes reach
    /// `budget` bytes (never verified first, then the longest ago; ties by ID), at most
    /// ``Wire/DeepVerifyState/maxDue``. Read from one consistent state.
    func deepVerifyState(tenant: String, budget: Int64) async throws -> Wire.DeepVerifyState
    /// Per uploading principal ID: how many of its packs no restorer has deep-verified, and
    /// the oldest last deep verify among the rest.
    func deepVerifyByUploader() async throws -> [String: (never: Int, oldest: Date?)]
}

/// Everything the server needs of a catalog: what a new backend implements.
public typealias CatalogRepositories = SettingsRepository & TenantRepository & PrincipalRepository & PackRepository
    & SnapshotRepository & AuditRepository & ApprovalRepository & LegalHoldRepository & GCQueueRepository
    & CopyTargetRepository & QuotaRepository & PolicyRepository & DeepVerifyLedgerRepository & JobRepository
    & ScrubRepository & ExpectedIntervalRepository & FindingRepository & MonitoringRepository & VerdictRepository

extension Catalog: SettingsRepository, TenantRepository, PrincipalRepository, PackRepository, SnapshotRepository,
    AuditRepository, ApprovalRepository, LegalHoldRepository, GCQueueRepository, CopyTargetRepository,
    QuotaRepository, PolicyRepository, DeepVerifyLedgerRepository {}

// The short forms the server calls, for every backend: a protocol requirement cannot carry
// default arguments. (`Catalog` keeps its own defaults; Swift prefers the concrete method.)

extension PackRepository {
    public func insertPack(tenant: String, id: String, key: String, size: Int, retainUntil: Date,
                           chunkIDs: [ChunkID], now: Date, uploader: String? = nil,
                           verified: Bool = false) async throws {
        try await insertPack(tenant: tenant, id: id, key: key, size: size, retainUntil: retainUntil, chunkIDs: chunkIDs,
                       now: now, uploader: uploader, batch: 4096, verified: verified, uploadedBy: nil)
    }

    public func insertPack(tenant: String, id: String, key: String, size: Int, retainUntil: Date,
                           chunkIDs: [ChunkID], now: Date, uploader: String?, batch: Int,
                           verified: Bool) async throws {
        try await insertPack(tenant: tenant, id: id, key: key, size: size, retainUntil: retainUntil, chunkIDs: chunkIDs,
                       now: now, uploader: uploader, batch: batch, verified: verified, uploadedBy: nil)
    }

    public func chunkLocations(tenant: String, ids: [ChunkID]) async throws -> [ChunkID: PackID] {
        try await chunkLocations(tenant: tenant, ids: ids, scope: nil, orVerified: false)
    }

    public func extendPackLocks(tenant: String, packs: [PackID], until: Date) async throws -> [(PackID, Date)] {
        try await extendPackLocks(tenant: tenant, packs: packs, until: until, requireAll: false)
    }
}

extension SnapshotRepository {
    public func insertSnapshot(_ s: SnapshotRecord, packs: [PackID], requirePacks: Bool = false) async throws {
        try await insertSnapshot(s, packs: packs, requirePacks: requirePacks, manifestKey: nil)
    }

    public func snapshots(tenant: String) async throws -> [SnapshotRecord] {
        try await snapshots(tenant: tenant, host: nil)
    }
}

extension AuditRepository {
    @discardableResult
    public func audit(time: Date, actor: String, role: String, credential: String, source: String, action: String,
                      object: String, outcome: String) async throws -> Catalog.AuditRecord {
        try await audit(time: time, actor: actor, role: role, credential: credential, source: source, action: action,
                  object: object, outcome: outcome, detail: "")
    }

    public func auditRecords(after seq: Int64) async throws -> [Catalog.AuditRecord] {
        try await auditRecords(after: seq, limit: 10_000)
    }

    public func auditRecords() async throws -> [Catalog.AuditRecord] { try await auditRecords(after: 0, limit: 10_000) }
}

extension LegalHoldRepository {
    public func holds() async throws -> [LegalHold] { try await holds(active: false) }
}

extension CopyTargetRepository {
    public func copyTargets() async throws -> [CopyTarget] { try await copyTargets(tenant: nil) }
}

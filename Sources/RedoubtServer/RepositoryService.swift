import Crypto
import Foundation
import Logging
import RedoubtCore
import RedoubtStore
import Synchronization
import X509

/// The one public error of RedoubtServer: an HTTP status, a stable code, and a message
/// that names the object and the fix.
public struct ServerError: Error, Sendable, CustomStringConvertible {
    public let status: Int
    public let code: String
    public let message: String
    /// Already in the audit log (a refusal, or a filed approval request): the request
    /// handler does not record it again.
    public var audited = false

    public init(_ status: Int, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public static func forbidden(_ m: String) -> ServerError { ServerError(403, "E_FORBIDDEN", m) }
    public static func unauthorized(_ m: String) -> ServerError { ServerError(401, "E_UNAUTHENTICATED", m) }
    public static func notFound(_ m: String) -> ServerError { ServerError(404, "E_NOT_FOUND", m) }
    public static func badRequest(_ m: String) -> ServerError { ServerError(400, "E_BAD_REQUEST", m) }
    /// Garbage collection is deleting `object` from the store right now (§4.5).
    static func beingCollected(_ object: String) -> ServerError {
        ServerError(409, "E_RETRY",
            "\(object) is being removed by garbage collection right now; send it again in a minute")
    }
    /// The tenant was crypto-shredded: nothing can be added to it or unwrapped for it.
    public static func shredded(_ tenant: String) -> ServerError { ServerError(CatalogError.shredded(tenant)) }
    /// The catalog was rebuilt from the store alone, where the write material is sealed to
    /// the read key: hosts cannot enroll until an admin gives it back.
    public static func noWriteMaterial(_ tenant: String) -> ServerError {
        ServerError(CatalogError.noWriteMaterial(tenant))
    }
    public static func integrity(_ m: String) -> ServerError { ServerError(422, "E_INTEGRITY", m) }
    public var description: String { "\(message) [\(code)]" }
}

/// Where the server reads the time. Tests use a manual clock.
public protocol ServerClock: Sendable {
    func now() -> Date
}

public struct SystemClock: ServerClock {
    public init() {}
    public func now() -> Date { Date() }
}

/// Who is calling, from where: what every audit record names.
public struct CallContext: Sendable {
    public let principal: Principal?
    public let source: String
    /// The fingerprint of the client certificate presented, known to the catalog or not
    /// (a revoked one): the audit log's `credential` for anonymous callers too.
    public let certificate: String?
    /// The server job acting (`scheduler:gc`, …) when no principal calls: what the audit log names.
    public var job: String? = nil
    public init(principal: Principal?, source: String, certificate: String? = nil) {
        self.principal = principal
        self.source = source
        self.certificate = certificate ?? principal?.fingerprint
    }
}

/// The server's business logic, independent of HTTP: enrollment, uploads, commits,
/// listings, verification and admin actions, each authorised and audited. Holds no key
/// that decrypts: it checks pack hashes and manifest signatures only.
public final class RepositoryService: Sendable {
    public let catalog: any CatalogRepositories
    public let store: any ObjectStore
    let clock: any ServerClock
    let ca: CertificateAuthority
    public let serverURL: String
    let logger: Logger
    /// Default minimum retention for new tenants.
    public let defaultMinRetention: TimeInterval
    /// Syncs copy targets after commits and proves them daily.
    /// Wakes the scheduler when a run is asked for (JobScheduler.swift).
    let jobWake = JobWake()
    /// Tenants whose garbage collection is running (one run per tenant at a time).
    let gcRunning = Mutex<Set<String>>([])
    /// Why the primary bucket's last daily proof failed, while it stays failed: uploads and
    /// commits are refused until a proof passes again (``setStoreUnproved(_:)``).
    let storeUnproved = Mutex<String?>(nil)
    /// How far a manifest's claimed time may stray from the server's clock.
    public let timeBounds: SnapshotTimeBounds
    /// What one request, connection or caller may spend (docs/PROTOCOL.md §3.2).
    public let limits: ServerLimits
    /// Open connections by source and credential, against `limits`.
    let connections: ConnectionCounter
    /// Refusals of callers without a credential, counted per source between audit records.
    let anonymousRefusals: AnonymousRefusals
    /// Where pack bodies are spooled to files; nil holds them in memory.
    let uploads: UploadSpool?
    /// Request and refusal counters for the metrics exposition (ServerMetrics.swift).
    public let metrics: ServerMetrics
    /// Where components post events that notification channels receive (Notifier.swift).
    public let notifier: Notifier

    public init(catalog: any CatalogRepositories, store: any ObjectStore, clock: any ServerClock,
                ca: CertificateAuthority,
        serverURL: String,
                defaultMinRetention: TimeInterval, logger: Logger,
                    timeBounds: SnapshotTimeBounds = SnapshotTimeBounds(),
                limits: ServerLimits = ServerLimits(), uploadDirectory: URL? = nil) {
        self.uploads = uploadDirectory.map { UploadSpool(directory: $0) }
        self.timeBounds = timeBounds
        self.limits = limits
        self.metrics = ServerMetrics()
        self.connections = ConnectionCounter(limits: limits, metrics: metrics)
        self.anonymousRefusals = AnonymousRefusals(window: limits.anonymousAuditWindowSeconds)
        self.catalog = catalog
        self.store = store
        self.clock = clock
        self.ca = ca
        self.serverURL = serverURL
        self.defaultMinRetention = defaultMinRetention
        self.logger = logger
        self.notifier = Notifier(catalog: catalog, clock: { [clock] in clock.now() }, logger: logger)
    }

    /// The current time, never earlier than any time the server has used before: if the
    /// system clock goes backwards, retention still only moves forward.
    public func now() async throws -> Date { try await catalog.advanceClock(to: clock.now()) }

    // MARK: naming

    static func isValidTenantName(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard (1...63).contains(u.count), let f = u.first, isLowerAlnum(f) else { return false }
        return u.allSatisfy { isLowerAlnum($0) || $0 == 0x2d || $0 == 0x2e || $0 == 0x5f }
    }

    static func isValidPrincipalName(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard (1...253).contains(u.count) else { return false }
        return u.allSatisfy { isLowerAlnum($0) || ($0 >= 0x41 && $0 <= 0x5a) || $0 == 0x2d || $0 == 0x2e || $0 == 0x5f }
    }

    /// An approval request's ID as the server makes it: 16 lowercase hex digits.
    static func isValidRequestID(_ s: String) -> Bool {
        s.utf8.count == 16 && s.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

    /// Refuses a malformed request ID before it is looked up, echoed or audited.
    static func checkRequestID(_ id: String?, field: String = "requestID") throws {
        guard let id, !isValidRequestID(id) else { return }
        throw ServerError.badRequest("\(field) \(SafeText.echo(id)) is not a request ID "
                                     + "(16 lowercase hex digits, as `redoubt admin request list` shows)")
    }

    /// Longest OS name a host may report (`Wire.EnrollRequest.os`, the `Redoubt-OS` header).
    public static let maxOSBytes = 128

    private static func isLowerAlnum(_ c: UInt8) -> Bool { (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) }

    // Object keys: RepositoryLayout spells them all.
    static func packKey(tenant: String, id: PackID) -> ObjectKey { RepositoryLayout.packKey(tenant: tenant, id: id) }

    static func manifestKey(tenant: String, id: SnapshotID) -> ObjectKey {
        RepositoryLayout.manifestKey(tenant: tenant, id: id)
    }

    static func tenantKey(_ tenant: String, version: Int) -> ObjectKey {
        RepositoryLayout.descriptorKey(tenant: tenant, version: version)
    }

    /// Pack locks are kept in whole UTC days, so a commit moves a pack's lock on disk at
    /// most once a day instead of on every snapshot.
    static func ceilDay(_ d: Date) -> Date {
        Date(timeIntervalSince1970: (d.timeIntervalSince1970 / 86400).rounded(.up) * 86400)
    }

    // MARK: audit

    func audit(_ ctx: CallContext, _ action: Action, object: String, outcome: String, detail: String = "") async {
        let object = limits.boundedAuditField(object), detail = limits.boundedAuditField(detail)
        do {
            try await catalog.audit(time: (try? now()) ?? clock.now(),
                actor: ctx.principal.map { "\($0.role.rawValue):\($0.tenant.map { $0 + "/" } ?? "")\($0.name)" }
                ?? ctx.job ?? "anonymous",
                              role: ctx.principal?.role.rawValue ?? "-",
                                  credential: ctx.certificate?.prefix(16).description ?? "-",
                              source: ctx.source, action: action.rawValue, object: object, outcome: outcome,
                                  detail: detail)
        } catch {
            logger.error("audit write failed", metadata: ["action": "\(action)", "error": "\(error)"])
        }
    }

    /// Records a refused request and returns the error to send.
    /// A caller without a credential is recorded once per source per window; the refusals
    /// after it are counted into one record when the window ends (``AnonymousRefusals``).
    public func refuse(_ ctx: CallContext, _ action: Action, object: String,
            _ error: ServerError) async -> ServerError {
        await refused(ctx, action)
        if ctx.principal == nil {
            await recordAnonymousRefusals()
            if anonymousRefusals.first(ctx, now: clock.now()) {
                await audit(ctx, action, object: object, outcome: "denied", detail: error.message
                    + AnonymousRefusals.note(limits))
            }
        } else {
            await audit(ctx, action, object: object, outcome: "denied", detail: error.message)
        }
        var e = error
        e.audited = true
        return e
    }

    private func requireTenant(_ ctx: CallContext) async throws -> (Principal, TenantRecord) {
        guard let p = ctx.principal, let t = p.tenant, let rec = try await catalog.tenant(t) else {
            throw ServerError.forbidden("this credential belongs to no tenant")
        }
        // Why: after a shred nothing more may be added; what exists stays readable as ciphertext.
        if p.role == .writer && rec.shreddedAt != nil { throw ServerError.shredded(t) }
        return (p, rec)
    }

    /// Refuses (with `why`) or allows again new packs and commits: the daily proof of the
    /// primary bucket's Object Lock sets it when the bucket stops enforcing COMPLIANCE,
    /// since a backup written there could be deleted by whoever holds the bucket's keys.
    public func setStoreUnproved(_ why: String?) {
        storeUnproved.withLock { $0 = why }
    }

    func requireStoreProved() throws {
        if let why = storeUnproved.withLock({ $0 }) {
            throw ServerError(503, "E_UNENFORCED", """
                the primary store failed its daily Object Lock proof (\(why)): no backup is accepted until it \
                passes again; the server's operator must see `redoubt doctor`
                """)
        }
    }

    /// Records at start-up that sealed packs cannot be made immutable here.
    public func recordImmutabilityWarning(_ warning: String) async {
        await audit(CallContext(principal: nil, source: "local"), .start, object: "store", outcome: "warning",
            detail: warning)
    }

    // MARK: enrollment

    /// Exchanges a one-time token for a client certificate on the caller's own key.
    public func enroll(_ req: Wire.EnrollRequest, ctx: CallContext) async throws -> Wire.EnrollResponse {
        // Why first: the OS is stored and audited; a malformed one must not use up the token.
        // Surrounding blanks are dropped, as for the `Redoubt-OS` header (`recordHostOS`).
        let os = req.os.map { $0.trimmingCharacters(in: .whitespaces) }.flatMap { o in o.isEmpty ? nil : o }
        if let os, !SafeText.isValidFreeText(os, maxBytes: Self.maxOSBytes) {
            throw ServerError.badRequest("os \(SafeText.echo(os, maxBytes: 160)) must be 1–\(Self.maxOSBytes) bytes "
                                         + "of printable text (no control, format or line-separator characters); "
                                         + "the token is not used up")
        }
        let tokenHash = hexString(SHA256.hash(data: Array(req.secret.utf8)))
        let now = try await now()
        let publicKey: Certificate.PublicKey
        do { publicKey =
            try Certificate.PublicKey(P256.Signing.PublicKey(pemRepresentation: req.publicKeyPEM)) } catch {
            throw ServerError.badRequest("publicKeyPEM is not a P-256 public key")
        }
        let hostKey = req.hostKey.flatMap { Data(base64Encoded: $0) }.map(Array.init)
        if let hostKey, (try? HostPublicKey(rawRepresentation: hostKey)) == nil {
            throw ServerError.badRequest("hostKey is not a base64 Ed25519 public key")
        }
        // The certificate is signed inside the redeeming transaction, once the token is
        // known good: a guessed token costs the server a lookup, never a signature. Redeeming
        // and recording the holder stay one transaction, so a revocation (which cancels the
        // name's tokens) either comes first and the token enrolls nothing, or after and
        // revokes no one but the old holder.
        let principalID = hexString((0..<16).map { _ in UInt8.random(in: 0...255) })
        var issued: Certificate? = nil
        let p: Principal
        do {
            p = try await catalog.redeemEnrollment(tokenHash: tokenHash, now: now, os: os) { e in
                guard e.role != .writer || hostKey != nil else {
                    throw ServerError.badRequest("a writer must send its Ed25519 host key (hostKey, base64)")
                }
                let cert = try ca.issueClient(publicKey: publicKey, principalID: principalID, now: now)
                issued = cert
                return Principal(id: principalID, role: e.role, tenant: e.tenant, name: e.name,
                                 fingerprint: certificateFingerprint(der: try cert.serializeAsPEM().derBytes),
                                 hostKey: e.role == .writer ? hostKey : nil)
            }
        } catch let e as CatalogError where e.code == .notFound {
            // Unknown, used, cancelled or expired: refused as any bad credential is.
            throw await refuse(ctx, .enroll, object: "token \(tokenHash.prefix(12))", .forbidden(e.message))
        } catch let e as CatalogError where e.code == .conflict {
            throw await refuse(ctx, .enroll, object: e.object, ServerError(e))
        }
        guard let cert = issued else {
            throw ServerError(500, "E_INTERNAL", "enrollment recorded no certificate for \(p.name)")
        }
        await audit(CallContext(principal: p, source: ctx.source), .enroll,
              object: "\(p.role.rawValue) \(p.tenant ?? "-")/\(p.name)", outcome: "ok", detail: "os=\(os ?? "?")")
        var material: String? = nil, wrapped: String? = nil
        if let t = p.tenant, let rec = try await catalog.tenant(t) {
            if p.role == .writer || p.role == .restorer { material = Data(rec.writeMaterial).base64EncodedString() }
            if p.role == .restorer { wrapped = rec.wrappedReadKey }
        }
        return Wire.EnrollResponse(principalID: principalID, role: p.role.rawValue, tenant: p.tenant, name: p.name,
                                   certificatePEM: try cert.serializeAsPEM().pemString, writeMaterial: material,
                                       wrappedReadKey: wrapped)
    }

    // MARK: writer operations

    /// Which of the queried chunks the caller may reuse, and where: under host scope a
    /// writer learns only of chunks its own credential uploaded (§4.6).
    public func queryChunks(_ body: [UInt8], ctx: CallContext) async throws -> [UInt8] {
        let (p, tenant) = try await requireTenant(ctx)
        guard let ids = Wire.decodeIDs(body, as: ChunkID.self), ids.count <= 100_000 else {
            throw ServerError.badRequest("chunk query must be a multiple of 32 bytes, at most 100000 IDs")
        }
        let scope = try await chunkScope(p, tenant: tenant.name)
        let found = try await catalog.chunkLocations(tenant: tenant.name, ids: ids, scope: scope.principal,
            orVerified: scope.orVerified)
        return Wire.encodeChunkLocations(found)
    }

    /// Which of the queried packs the caller uploaded and the tenant still holds: each once,
    /// in the order first asked. A host whose metadata cache names each chunk's pack confirms
    /// an unchanged file's chunks by their packs, a few IDs a backup instead of one per chunk.
    /// Only a writer's own uploads answer, whatever the dedup scope: what another host
    /// uploaded stays confirmed chunk by chunk (§4.6).
    public func queryPacks(_ body: [UInt8], ctx: CallContext) async throws -> [UInt8] {
        let (p, tenant) = try await requireTenant(ctx)
        guard p.role == .writer else { throw ServerError.forbidden("only a writer asks about its own packs") }
        let ids = try Self.distinctPackIDs(body)
        let held = try await catalog.uploadedPacks(tenant: tenant.name, uploader: p.id, packs: ids)
        return Wire.encodeIDs(ids.filter(held.contains))
    }

    /// A request body of pack IDs, each once in the order first given. Why once: a repeated
    /// ID would be looked up and answered (and held in memory) once per repetition.
    static func distinctPackIDs(_ body: [UInt8]) throws -> [PackID] {
        guard let all = Wire.decodeIDs(body, as: PackID.self), all.count <= 100_000 else {
            throw ServerError.badRequest("body must be at most 100000 pack IDs of 32 bytes")
        }
        var seen = Set<PackID>()
        return all.filter { seen.insert($0).inserted }
    }

    /// Stores a pack whose bytes hash to `idHex`. Idempotent; never overwrites.
    public func uploadPack(idHex: String, bytes: [UInt8], ctx: CallContext) async throws -> Wire.UploadResponse {
        try await uploadPack(idHex: idHex, size: bytes.count, ctx: ctx,
                             inspect: { id throws(CoreError) in try PackReader.inspect(bytes, expectedID: id) },
                             put: { key, until in try await self.store.put(key, bytes, retainUntil: until) })
    }

    /// ``uploadPack(idHex:bytes:ctx:)`` of a body spooled to `file` (`size` bytes): inspected
    /// by range and handed to the store, which keeps the spooled file itself where it can (a
    /// local store on the spool's filesystem), so the body is never held whole in memory and
    /// its bytes are written once.
    func uploadPack(idHex: String, file: URL, size: Int, ctx: CallContext) async throws -> Wire.UploadResponse {
        let reader = try SpooledPackReader(file)
        return try await uploadPack(idHex: idHex, size: size, ctx: ctx, inspect: { id throws(CoreError) in
            try PackReader.inspect(size: size, expectedID: id, read: reader.read)
        }, put: { key, until in try await self.store.put(key, movingFile: file, retainUntil: until) }, reader: reader)
    }

    private func uploadPack(idHex: String, size: Int, ctx: CallContext,
        inspect: (PackID) throws(CoreError) -> PackSummary,
                            put: (ObjectKey, Date) async throws -> PutResult,
                            reader: SpooledPackReader? = nil) async throws -> Wire.UploadResponse {
        let (p, tenant) = try await requireTenant(ctx)
        try requireStoreProved()
        guard let id = PackID(hex: idHex) else {
            throw ServerError.badRequest("pack ID must be 64 lowercase hex digits")
        }
        if let existing = try await catalog.pack(tenant: tenant.name, id: id.description) {
            // Why: a re-upload is a no-op, never an overwrite, whatever the body says.
            return Wire.UploadResponse(id: id.description, created: false, retainUntil: existing.retainUntil)
        }
        let summary: PackSummary
        do { summary = try inspect(id) } catch {
            // The server failing to read its own spool file is not the pack's fault.
            if let failure = reader?.failure { throw failure }
            throw await refuse(ctx, .uploadPack, object: "pack \(id)",
                    .integrity("pack \(id) refused: \(error.detail)"))
        }
        // Why: each chunk ID is a catalog row; the format's own bound (2^20) is the most
        // one pack may make the server index.
        guard summary.chunkIDs.count <= limits.maxChunksPerPack else {
            throw await refuse(ctx, .uploadPack, object: "pack \(id)", ServerError(413, "E_TOO_LARGE",
                """
                    pack \(id) declares \(summary.chunkIDs.count) chunks, over the server's limit of \
                    \(limits.maxChunksPerPack) 
                    """
                + "(limit chunks-per-pack; docs/PROTOCOL.md §3.2): write smaller packs"))
        }
        guard summary.keyID.description == tenant.readKeyID else {
            throw await refuse(ctx, .uploadPack, object: "pack \(id)",
                .integrity("""
                    pack \(id) is sealed to read key \(summary.keyID), not tenant \(tenant.name)'s \(tenant.readKeyID)
                    """))
        }
        let quotaWarning = try await checkQuota(tenant: tenant.name, host: p.name, adding: size, ctx: ctx, pack: id)
        let now = try await now()
        let until = Self.ceilDay(now.addingTimeInterval(tenant.minRetention))
        let key = Self.packKey(tenant: tenant.name, id: id)
        // Off the garbage collector's queue before the store is touched: no run can then
        // delete the object between the write below and its record.
        do { try await catalog.reclaim(key: key.path) } catch let e as CatalogError where e.code == .beingCollected {
            throw ServerError.beingCollected("pack \(id)")
        }
        let result = try await put(key, until)
        // Why: the same bytes may still be in the store after garbage collection took the
        // pack out of the catalog; recorded again, they must be locked again too.
        if result != .created { try await store.extendRetention(key, until: until) }
        do {
            try await catalog.insertPack(tenant: tenant.name, id: id.description, key: key.path, size: size,
                retainUntil: until, chunkIDs: summary.chunkIDs, now: now,
                                   uploader: p.id, batch: limits.chunkInsertBatch,
                                   verified: summary.chunksVerified, uploadedBy: p.name)
        } catch let e as CatalogError where e.code == .beingCollected {
            throw ServerError.beingCollected("pack \(id)")
        }
        return Wire.UploadResponse(id: id.description, created: result == .created, retainUntil: until,
            quotaWarning: quotaWarning)
    }

    /// Commits a snapshot: checks the host's signature, the tenant, and that every pack is
    /// present; extends the packs' locks; stores the manifest under lock. `os` is the OS
    /// the host reports with it (kept for `doctor`).
    public func commit(_ bytes: [UInt8], os: String? = nil, expectedInterval: String? = nil,
                       ctx: CallContext) async throws -> Wire.SnapshotInfo {
        let (p, tenant) = try await requireTenant(ctx)
        try requireStoreProved()
        let manifest: Manifest
        do {
            manifest = try Manifest.parse(bytes, bounds: limits.manifestBounds)
            guard let hk = p.hostKey else {
                throw CoreError(.badKey, object: "host \(p.name)", "no registered host key")
            }
            guard let readKeyID = ReadKeyID(bytes: bytesFromHex(tenant.readKeyID) ?? []) else {
                throw CoreError(.badKey, object: "tenant", "bad read key ID")
            }
            try manifest.verify(tenant: tenant.name, host: p.name, hostKey: try HostPublicKey(rawRepresentation: hk),
                readKeyID: readKeyID)
        } catch let e as CoreError where e.code == .limitExceeded {
            throw await refuse(ctx, .commitSnapshot, object: "snapshot", limits.manifestTooLarge(e))
        } catch let e as CoreError {
            throw await refuse(ctx, .commitSnapshot, object: "snapshot", .integrity("commit refused: \(e)"))
        }
        if let existing = try await catalog.snapshot(id: manifest.id.description) { return Self.info(existing) }
        try await checkSnapshotTime(manifest.header, host: p, tenant: tenant.name, now: try now(), ctx: ctx)
        let missing = try await catalog.missingPacks(tenant: tenant.name, packs: manifest.header.packs)
        guard missing.isEmpty else {
            throw await refuse(ctx, .commitSnapshot, object: "snapshot \(manifest.id)",
                         ServerError(409, "E_PACKS_MISSING",
                             """
                                 snapshot \(manifest.id) names \(missing.count) pack(s) the repository does not hold, \
                                 e.g. \(missing[0]): upload them first
                                 """))
        }
        let now = try await now()
        let retainUntil = now.addingTimeInterval(tenant.minRetention)
        // The packs' locks first: once their catalog locks are in the future, garbage
        // collection cannot take them; a pack it took meanwhile stops the commit here,
        // before the manifest is stored.
        let packLock = Self.ceilDay(retainUntil)
        let moved: [(PackID, Date)]
        do { moved = try await catalog.extendPackLocks(tenant: tenant.name, packs: manifest.header.packs,
                until: packLock,
            requireAll: true) } catch let e as CatalogError where e.code == .packsMissing {
            throw await refuse(ctx, .commitSnapshot, object: "snapshot \(manifest.id)",
                         ServerError(409, "E_PACKS_MISSING",
                             """
                                 snapshot \(manifest.id) names \(e.packs.count) pack(s) that garbage collection \
                                 removed meanwhile, e.g. \(e.packs[0]): run the backup again
                                 """))
        }
        for (pack, until) in moved {
            try await store.extendRetention(Self.packKey(tenant: tenant.name, id: pack), until: until)
        }
        let manifestKey = Self.manifestKey(tenant: tenant.name, id: manifest.id)
        do {
            try await catalog.reclaim(key: manifestKey.path)
        } catch let e as CatalogError where e.code == .beingCollected {
            throw ServerError.beingCollected("snapshot \(manifest.id)")
        }
        // The signer's registration first: a stored manifest always has one to be checked against.
        try await lockRegistration(of: p, tenant: tenant, until: packLock)
        if try await store.put(manifestKey, bytes, retainUntil: retainUntil) != .created {
            try await store.extendRetention(manifestKey, until: retainUntil)
        }
        let h = manifest.header
        let rec = SnapshotRecord(id: manifest.id.description, tenant: tenant.name, host: p.name,
                                 time: h.time.date,
                                 committedAt: now, retainUntil: retainUntil, paths: h.paths.map(printable),
                                     tags: h.tags,
                                 statistics: h.statistics, packCount: h.packs.count, manifestSize: bytes.count)
        do { try await catalog.insertSnapshot(rec, packs: h.packs, requirePacks: true,
            manifestKey: manifestKey.path) } catch let e as CatalogError where e.code == .packsMissing {
            throw await refuse(ctx, .commitSnapshot, object: "snapshot \(manifest.id)",
                         ServerError(409, "E_PACKS_MISSING",
                             """
                                 snapshot \(manifest.id) names \(e.packs.count) pack(s) that garbage collection \
                                 removed meanwhile, e.g. \(e.packs[0]): run the backup again
                                 """))
        } catch let e as CatalogError where e.code == .beingCollected {
            throw ServerError.beingCollected("snapshot \(manifest.id)")
        }
        await audit(ctx, .commitSnapshot, object: "snapshot \(manifest.id)", outcome: "ok",
            detail: "packs=\(h.packs.count) retain-until=\(Int(retainUntil.timeIntervalSince1970))")
        // The off-site copies follow each commit, in the background.
        // The tenant's retention policies move the locks of what they keep (RetentionPolicies.swift).
        await applyPoliciesAfterCommit(tenant: tenant.name, host: p.name)
        // The ransomware verdict, against the host's own baseline (SuspectSnapshots.swift).
        await judgeCommit(rec, manifest: manifest, principal: p)
        if try await !catalog.copyTargets(tenant: tenant.name).isEmpty {
            await requestJob(ServerJobs.copySync.name, tenant: tenant.name)
        }
        await recordHostOS(p, os, ctx: ctx)
        await recordExpectedInterval(p, expectedInterval)
        return Self.info(rec)
    }

    /// Keeps the OS a writer reports with a backup when it differs from the stored one,
    /// and audits the change. The value is the host's claim: it authorises nothing, so a
    /// malformed one (by the enrollment's rule: `SafeText.isValidFreeText`) is dropped, never an error.
    func recordHostOS(_ p: Principal, _ os: String?, ctx: CallContext) async {
        guard let os = os?.trimmingCharacters(in: .whitespaces),
              SafeText.isValidFreeText(os, maxBytes: Self.maxOSBytes) else { return }
        do {
            if let previous = try await catalog.updatePrincipalOS(id: p.id, os: os) {
                await audit(ctx, .hostOS, object: "host \(p.tenant ?? "-")/\(p.name)", outcome: "ok",
                    detail: "was \(previous ?? "unknown"), now \(os)")
            }
        } catch {
            logger.warning("could not record the host's OS", metadata: ["host": "\(p.name)", "error": "\(error)"])
        }
    }

    static func info(_ r: SnapshotRecord) -> Wire.SnapshotInfo {
        Wire.SnapshotInfo(id: r.id, tenant: r.tenant, host: r.host, time: r.time, committedAt: r.committedAt,
            retainUntil: r.retainUntil,
                          paths: r.paths, tags: r.tags, statistics: r.statistics, packCount: r.packCount)
    }

    /// A snapshot in a listing: its first paths only, with their count, so that a listing's
    /// size does not grow with any one snapshot's list of backed-up paths.
    func listed(_ r: SnapshotRecord) -> Wire.SnapshotInfo {
        var i = Self.info(r)
        if r.paths.count > limits.listedPathsPerSnapshot {
            i.paths = Array(r.paths.prefix(limits.listedPathsPerSnapshot))
        }
        i.pathCount = r.paths.count
        return i
    }

    /// Snapshots visible to the caller (`page`: one page of them; nil: all): a writer sees
    /// only its own host's.
    public func listSnapshots(host: String?, tenant: String?, page: SnapshotPage? = nil,
                              ctx: CallContext) async throws -> [Wire.SnapshotInfo] {
        guard let p = ctx.principal else { throw ServerError.unauthorized("no client certificate") }
        // Why before anything: the names are echoed, audited and compared; refuse what no name can be.
        if let host, !Self.isValidPrincipalName(host) {
            throw ServerError.badRequest("host \(SafeText.echo(host)) is not a host name "
                                         + "(1–253 characters of A-Z, a-z, 0-9, '.', '-', '_')")
        }
        if let tenant, !Self.isValidTenantName(tenant) {
            throw ServerError.badRequest("tenant \(SafeText.echo(tenant)) is not a tenant name "
                                         + "(1–63 characters of a-z, 0-9, '.', '-', '_')")
        }
        switch p.role {
        case .writer:
            // Why: a host lists only its own snapshots' public metadata: a taken host must not learn what its
            // neighbours back up.
            if let host, host != p.name {
                throw await refuse(ctx, .listSnapshots, object: "host \(host)",
                    .forbidden("a host may list only its own snapshots"))
            }
            return try await withPolicyKeeps(try await catalog.snapshotPage(tenant: p.tenant ?? "", host: p.name,
                after: page?.after,
                                            limit: page?.limit).map(listed))
        case .restorer:
            return try await withVerdicts(withPolicyKeeps(try await catalog.snapshotPage(tenant: p.tenant ?? "",
                    host: host,
                after: page?.after, limit: page?.limit).map(listed)))
        case .admin, .auditor:
            return try await withVerdicts(withPolicyKeeps(try await catalog.snapshotPage(tenant: tenant, host: host,
                after: page?.after, limit: page?.limit).map(listed)))
        }
    }

    private func visibleSnapshot(_ idHex: String, ctx: CallContext, action: Action) async throws -> SnapshotRecord {
        guard let p = ctx.principal else { throw ServerError.unauthorized("no client certificate") }
        let id = try await resolveSnapshotID(idHex, ctx: ctx)
        guard let rec = try await catalog.snapshot(id: id) else {
            throw ServerError.notFound("snapshot \(idHex) not found: `redoubt snapshots` lists them")
        }
        let allowed: Bool
        switch p.role {
        case .writer: allowed = rec.tenant == p.tenant && rec.host == p.name
        case .restorer: allowed = rec.tenant == p.tenant
        case .admin, .auditor: allowed = true
        }
        guard allowed else {
            throw await refuse(ctx, action, object: "snapshot \(idHex)", .notFound("snapshot \(idHex) not found"))
        }
        return rec
    }

    /// Accepts a full ID or a unique prefix of at least 8 hex digits within what the
    /// caller may see.
    func resolveSnapshotID(_ s: String, ctx: CallContext) async throws -> String {
        if s.utf8.count == 64, SnapshotID(hex: s) != nil { return s }
        guard s.utf8.count >= 8, s.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) else {
            throw ServerError.badRequest("snapshot ID must be 8–64 lowercase hex digits")
        }
        let matches = try await listSnapshots(host: nil, tenant: nil, ctx: ctx).filter { $0.id.hasPrefix(s) }
        guard matches.count == 1 else {
            throw matches.isEmpty ? ServerError.notFound("no snapshot starts with \(s)") : ServerError.badRequest("""
                \(s) matches \(matches.count) snapshots: give more digits
                """)
        }
        return matches[0].id
    }

    public func showSnapshot(_ idHex: String, ctx: CallContext) async throws -> Wire.SnapshotInfo {
        Self.info(try await visibleSnapshot(idHex, ctx: ctx, action: .showSnapshot))
    }

    // MARK: restorer operations

    public func manifest(_ idHex: String, ctx: CallContext) async throws -> [UInt8] {
        let rec = try await visibleSnapshot(idHex, ctx: ctx, action: .getManifest)
        guard let id = SnapshotID(hex: rec.id) else { throw ServerError.badRequest("bad snapshot ID") }
        await audit(ctx, .getManifest, object: "snapshot \(rec.id)", outcome: "ok")
        return try await store.get(Self.manifestKey(tenant: rec.tenant, id: id))
    }

    /// A pack of the caller's tenant, opened to be answered a piece at a time.
    public func pack(_ idHex: String, ctx: CallContext) async throws -> ObjectReader {
        let (_, tenant) = try await requireTenant(ctx)
        guard let id = PackID(hex: idHex), try await catalog.pack(tenant: tenant.name, id: id.description) != nil else {
            throw ServerError.notFound("pack \(idHex) not found in tenant \(tenant.name)")
        }
        let key = Self.packKey(tenant: tenant.name, id: id)
        guard let reader = try await store.reader(key) else {
            throw StoreError(.notFound, key: key.path, """
                pack \(id) is in the catalog but not in the store, which has lost it: restore from a bucket \
                copy (`redoubt restore --from`) or a media set (`redoubt media restore`) that holds it
                """)
        }
        return reader
    }

    /// Largest `POST /v1/packs/chunk-lists` answer (docs/PROTOCOL.md §3): lists that would
    /// go past it are left out and asked for again.
    public static let chunkListAnswerLimit = 16 << 20

    /// The public chunk lists of packs, read from the packs' own footers in the store:
    /// for each pack, its ID, a u32le count and the chunk IDs. Lets a restorer plan which
    /// pack to fetch for each chunk without downloading any twice. Each distinct pack is
    /// answered once, in the order first asked; lists stop before the answer would pass
    /// `answerLimit` bytes (the first list always comes), and the caller asks again for the
    /// packs left out.
    public func packChunkLists(_ body: [UInt8], ctx: CallContext,
                               answerLimit: Int = chunkListAnswerLimit) async throws -> [UInt8] {
        let (_, tenant) = try await requireTenant(ctx)
        let ids = try Self.distinctPackIDs(body)
        for id in ids {
            guard try await catalog.pack(tenant: tenant.name, id: id.description) != nil else {
                throw ServerError.notFound("pack \(id) not found in tenant \(tenant.name)")
            }
        }
        var out: [UInt8] = []
        for id in ids {
            let key = Self.packKey(tenant: tenant.name, id: id)
            guard let info = try await store.head(key), info.size >= PackFormat.footerSize else {
                throw ServerError.notFound("pack \(id) missing from the store")
            }
            let tail = try await store.get(key, range: (info.size - PackFormat.footerSize)..<info.size)
            let footer = try PackFooter.parse(tail, packSize: info.size, headerLength: 0, object: "pack \(id)")
            let listStart = Int(footer.indexOffset) + Int(footer.indexLength)
            let listLength = Int(footer.chunkCount) * 32
            if !out.isEmpty && out.count + 36 + listLength > answerLimit { break }
            var list = try await store.get(key, range: listStart..<(info.size - PackFormat.footerSize))
            // The answer lists chunk IDs only; a format-2 list also gives places.
            if footer.listEntrySize != 32 {
                list = stride(from: 0, to: list.count, by: footer.listEntrySize).flatMap { list[$0..<($0 + 32)] }
            }
            out += id.bytes
            var w = ByteWriter(capacity: 4)
            w.u32(footer.chunkCount)
            out += w.bytes
            out += list
        }
        return out
    }

    /// Re-reads every pack of a snapshot from the store and checks its hash and
    /// structure. Needs no key.
    public func verify(_ idHex: String, ctx: CallContext) async throws -> Wire.VerifyReport {
        let rec = try await visibleSnapshot(idHex, ctx: ctx, action: .verifySnapshot)
        var damaged: [String] = [], missing: [String] = []
        var bytes = 0
        if let sid = SnapshotID(hex: rec.id) {
            do {
                let m = try await store.get(Self.manifestKey(tenant: rec.tenant, id: sid))
                bytes += m.count
                if SnapshotID(bytes: Array(SHA256.hash(data: m))) != sid { damaged.append("manifest \(rec.id)") }
            } catch { missing.append("manifest \(rec.id)") }
        }
        let packs = try await catalog.snapshotPacks(id: rec.id)
        for p in packs {
            let data: [UInt8]
            do { data = try await store.get(Self.packKey(tenant: rec.tenant, id: p)) } catch {
                missing.append("pack \(p)")
                continue
            }
            bytes += data.count
            do { _ = try PackReader.inspect(data, expectedID: p) } catch { damaged.append("pack \(p): \(error)") }
        }
        let report = Wire.VerifyReport(snapshot: rec.id, packsChecked: packs.count, bytesChecked: bytes,
            damaged: damaged, missing: missing)
        await audit(ctx, .verifySnapshot, object: "snapshot \(rec.id)", outcome: report.ok ? "ok" : "damaged",
            detail: "damaged=\(damaged.count) missing=\(missing.count)")
        return report
    }

    // MARK: admin operations

    public func createTenant(_ req: Wire.CreateTenantRequest, ctx: CallContext) async throws -> Wire.TenantInfo {
        guard Self.isValidTenantName(req.name) else {
            throw ServerError.badRequest("""
                tenant name \(req.name.debugDescription) must be 1–63 characters of a-z, 0-9, '.', '-', '_', starting \
                with a letter or digit
                """)
        }
        guard try await catalog.tenant(req.name) == nil else {
            throw ServerError(409, "E_CONFLICT", "tenant \(req.name) already exists")
        }
        guard let pub = Data(base64Encoded: req.readPublicKey),
            let key = try? ReadPublicKey(rawRepresentation: Array(pub)),
              let wm = Data(base64Encoded: req.writeMaterial),
              let material = try? SharedWriteMaterial.decode(SecretBytes(copying: wm)),
                  material.readPublicKey == key else {
            throw ServerError.badRequest("read public key or write material is malformed or they do not match")
        }
        let minRetention = req.minRetentionSeconds ?? defaultMinRetention
        try Self.checkRetention(minRetention)
        guard let scope = DedupScope(rawValue: req.dedupScope ?? DedupScope.host.rawValue) else {
            throw ServerError.badRequest("dedupScope must be \"host\" or \"tenant\"")
        }
        let now = try await now()
        _ = try WrappedKeyHeader.check(req.wrappedReadKey, tenant: TenantRecord(
            name: req.name, readKeyID: key.keyID.description, readPublicKey: Array(pub), writeMaterial: [],
                wrappedReadKey: "",
            minRetention: minRetention, createdAt: now), version: 1)
        let record = TenantRecord(name: req.name, readKeyID: key.keyID.description, readPublicKey: Array(pub),
            writeMaterial: Array(wm),
                                  wrappedReadKey: req.wrappedReadKey, minRetention: minRetention, createdAt: now)
        // The tenant's descriptor goes into the store first, so the catalog can be rebuilt
        // from the store alone (`redoubt server rebuild-catalog`).
        _ = try await store.put(Self.tenantKey(req.name, version: 1), try await descriptor(record).encoded(),
            retainUntil: nil)
        try await catalog.insertTenant(record)
        // A new tenant has no hosts yet: choosing the wider scope now weakens nothing that exists.
        if scope != .host { _ = try await catalog.setDedupScope(tenant: req.name, scope, from: .host) }
        await audit(ctx, .createTenant, object: "tenant \(req.name)", outcome: "ok",
              detail: "read-key=\(key.keyID) min-retention=\(Int(minRetention))s dedup-scope=\(scope.rawValue)")
        return try await tenantInfo(record)
    }

    // MARK: read-key custody (rotation, shredding)

    /// The tenant's current wrapped read key. A restorer sees only its own tenant's and
    /// no retired KEKs; an admin sees any tenant's with its retired KEKs.
    public func readKey(tenant: String, ctx: CallContext) async throws -> Wire.ReadKeyInfo {
        guard let p = ctx.principal, p.role == .admin || (p.role == .restorer && p.tenant == tenant) else {
            throw await refuse(ctx, .getReadKey, object: "tenant \(tenant)",
                .forbidden("only an admin or this tenant's restorer may fetch its wrapped read key"))
        }
        guard let rec = try await catalog.tenant(tenant) else {
            throw ServerError.notFound("tenant \(tenant) does not exist")
        }
        if rec.shreddedAt != nil && p.role == .restorer {
            throw await refuse(ctx, .getReadKey, object: "tenant \(tenant)", .shredded(tenant))
        }
        await audit(ctx, .getReadKey, object: "tenant \(tenant)", outcome: "ok", detail: "version=\(rec.keyVersion)")
        return try await readKeyInfo(tenant, withRetired: p.role == .admin)
    }

    /// What the read-key endpoints answer, read from the catalog without an audit record
    /// (the admin calls that change the key record their own).
    private func readKeyInfo(_ tenant: String, withRetired: Bool) async throws -> Wire.ReadKeyInfo {
        guard let rec = try await catalog.tenant(tenant) else {
            throw ServerError.notFound("tenant \(tenant) does not exist")
        }
        let retired = withRetired ? try await catalog.retiredKEKs(tenant: tenant).map {
            Wire.RetiredKEKInfo(version: $0.version, stub: $0.stub, retiredAt: $0.retiredAt,
                destroyedAt: $0.destroyedAt)
        } : []
        return Wire.ReadKeyInfo(tenant: tenant, keyVersion: rec.keyVersion,
            wrappedReadKey: rec.shreddedAt == nil ? rec.wrappedReadKey : nil,
                                shreddedAt: rec.shreddedAt, retired: retired)
    }

    /// Replaces the tenant's wrapped read key with the same key wrapped anew (a new KEK or
    /// another provider), as the next key version. No pack is rewritten: packs are sealed
    /// to the read *public* key, which does not change. The previous KEK is recorded as
    /// retired so that a later shred can destroy it too.
    public func rotateReadKey(tenant: String, _ req: Wire.RotateReadKeyRequest,
        ctx: CallContext) async throws -> Wire.ReadKeyInfo {
        let object = "tenant \(tenant)"
        guard let rec = try await catalog.tenant(tenant) else {
            throw ServerError.notFound("tenant \(tenant) does not exist")
        }
        guard rec.shreddedAt == nil else { throw await refuse(ctx, .rotateReadKey, object: object, .shredded(tenant)) }
        let next = rec.keyVersion + 1
        // Why a gated change: the server can check only the wrapping's header, and the old
        // descriptors are deleted; one admin could otherwise swap in a wrapping nobody can
        // open (a shred in effect). The request holds the exact wrapping the approvers saw;
        // carrying it out applies that wrapping, not a new upload.
        var wrappedJSON = req.wrappedReadKey
        try Self.checkRequestID(req.requestID)
        if let id = req.requestID {
            guard let r = try await catalog.request(id,
                    now: try now()), r.action == "rotate-read-key", r.object == object,
                  let held = r.parameters["wrappedReadKey"] else {
                throw await refuse(ctx, .rotateReadKey, object: object,
                    .forbidden("request \(id) is not a rotation of \(object)'s read key"))
            }
            // Before the header check below, which a used request fails for its stale version.
            guard r.state != .executed else {
                throw await refuse(ctx, .rotateReadKey, object: object, ServerError(409, "E_APPROVAL_PENDING",
                    "request \(id) was already used"))
            }
            guard wrappedJSON.isEmpty || wrappedJSON == held else {
                throw await refuse(ctx, .rotateReadKey, object: object,
                    .forbidden("request \(id) approved another wrapping; send none to apply the approved one"))
            }
            wrappedJSON = held
        }
        let header: WrappedKeyHeader
        do { header = try WrappedKeyHeader.check(wrappedJSON, tenant: rec, version: next) } catch let e as ServerError {
            throw await refuse(ctx, .rotateReadKey, object: object, e)
        }
        try await authorize(.rotateReadKey, object: object,
                      parameters: ["version": String(next), "provider": header.provider, "wrappedReadKey": wrappedJSON],
                      requestID: req.requestID, consume: true, ctx: ctx)
        let stub = try WrappedKeyHeader.stub(rec.wrappedReadKey)
        let updated = TenantRecord(name: rec.name, readKeyID: rec.readKeyID, readPublicKey: rec.readPublicKey,
            writeMaterial: rec.writeMaterial,
                               wrappedReadKey: wrappedJSON, minRetention: rec.minRetention, createdAt: rec.createdAt,
                                   keyVersion: next)
        try await replaceDescriptor(updated, retiredStub: stub, shredded: false, now: try now())
        await audit(ctx, .rotateReadKey, object: object, outcome: "ok",
            detail: "version \(rec.keyVersion)→\(next) provider=\(header.providerName)")
        return try await readKeyInfo(tenant, withRetired: true)
    }

    /// Records that the KEKs of retired key versions were destroyed at their KMS or HSM.
    public func markKEKsDestroyed(tenant: String, _ req: Wire.DestroyedKEKsRequest,
        ctx: CallContext) async throws -> Wire.ReadKeyInfo {
        guard try await catalog.tenant(tenant) != nil else {
            throw ServerError.notFound("tenant \(tenant) does not exist")
        }
        try await catalog.markKEKsDestroyed(tenant: tenant, versions: req.versions, now: try now())
        await audit(ctx, .markKEKsDestroyed, object: "tenant \(tenant)", outcome: "ok",
            detail: "versions=\(req.versions.map(String.init).joined(separator: ","))")
        return try await readKeyInfo(tenant, withRetired: true)
    }

    /// Crypto-shreds a tenant on the server's side: after the admin destroyed the KEKs at
    /// the KMS, removes every wrapped copy of the read key the server holds (catalog and
    /// store descriptors) and refuses further backups. Packs, manifests and their locks
    /// stay exactly as they were: they are ciphertext that nothing can open any more.
    public func shredTenant(tenant: String, _ req: Wire.ShredRequest,
        ctx: CallContext) async throws -> Wire.ReadKeyInfo {
        let object = "tenant \(tenant)"
        guard let rec = try await catalog.tenant(tenant) else {
            throw ServerError.notFound("tenant \(tenant) does not exist")
        }
        guard req.confirm == tenant else {
            throw await refuse(ctx, .shredTenant, object: object,
                .badRequest("confirm must repeat the tenant's name (\(tenant)) to shred it"))
        }
        guard rec.shreddedAt == nil else { throw await refuse(ctx, .shredTenant, object: object, .shredded(tenant)) }
        // Why: a shred makes every snapshot unreadable, which would defeat a legal hold.
        if let h = try await catalog.holds(active: true).first(where: { $0.tenant == tenant }) {
            throw await refuse(ctx, .shredTenant, object: object, ServerError(409, "E_HELD",
                """
                    tenant \(tenant) is under legal hold \(h.id) (\(h.kind.rawValue) \(h.target)): release it first \
                    (`redoubt admin hold release \(h.id)`)
                    """))
        }
        // Why a check call first: the admin destroys the KEKs at the KMS before this call
        // removes the server's copies, and must not do so for a shred that is not approved.
        let checkOnly = req.check ?? false
        try await authorize(.shredTenant, object: object, parameters: [:], requestID: req.requestID,
                consume: !checkOnly,
            ctx: ctx)
        if checkOnly { return try await readKeyInfo(tenant, withRetired: true) }
        let stub = try WrappedKeyHeader.stub(rec.wrappedReadKey)
        let now = try await now()
        let shredded = TenantRecord(name: rec.name, readKeyID: rec.readKeyID, readPublicKey: rec.readPublicKey,
            writeMaterial: rec.writeMaterial,
                                    wrappedReadKey: "", minRetention: rec.minRetention, createdAt: rec.createdAt,
                                    keyVersion: rec.keyVersion + 1, shreddedAt: now)
        try await replaceDescriptor(shredded, retiredStub: stub, shredded: true, now: now)
        try await catalog.markKEKsDestroyed(tenant: tenant, versions: req.destroyedVersions, now: now)
        let left = try await catalog.retiredKEKs(tenant: tenant).filter { $0.destroyedAt == nil }.map(\.version)
        await audit(ctx, .shredTenant, object: object, outcome: "ok",
              detail: "destroyed KEK versions=\(req.destroyedVersions.map(String.init).joined(separator: ","))"
                + (left.isEmpty ? "" : " NOT destroyed=\(left.map(String.init).joined(separator: ","))"))
        return try await readKeyInfo(tenant, withRetired: true)
    }

    /// Writes the tenant's new descriptor to the store, switches the catalog to it, then
    /// deletes the older descriptors from the store (they carry older wrapped copies).
    private func replaceDescriptor(_ rec: TenantRecord, retiredStub: String, shredded: Bool, now: Date) async throws {
        _ = try await store.put(Self.tenantKey(rec.name, version: rec.keyVersion), try await descriptor(rec).encoded(),
            retainUntil: nil)
        try await catalog.replaceReadKey(tenant: rec.name, newVersion: rec.keyVersion, wrapped: rec.wrappedReadKey,
            retiredStub: retiredStub,
                                   now: now, shredded: shredded)
        for v in 1..<rec.keyVersion {
            let key = Self.tenantKey(rec.name, version: v)
            if try await store.head(key) != nil { try await deleteUnlessHeld(key, now: now) }
        }
    }

    /// The tenant's descriptor for the store, its write material sealed to its read key:
    /// sealed now from the catalog's copy, or, when the catalog has none (rebuilt from the
    /// store alone and not yet given back), the sealed copy the newest descriptor carries.
    /// A shredded tenant's descriptor carries no material at all.
    func descriptor(_ rec: TenantRecord) async throws -> TenantDescriptor {
        if rec.shreddedAt != nil { return TenantDescriptor(rec, sealedWriteMaterial: nil, check: nil) }
        let (sealed, check) = try await sealedWriteMaterial(rec)
        return TenantDescriptor(rec, sealedWriteMaterial: sealed, check: check)
    }

    func sealedWriteMaterial(_ rec: TenantRecord) async throws -> (sealed: [UInt8], check: String?) {
        if !rec.writeMaterial.isEmpty {
            let material = try SharedWriteMaterial.decode(SecretBytes(copying: rec.writeMaterial))
            return (try material.sealed(tenant: rec.name), material.check)
        }
        let found = try await store.list(prefix: RepositoryLayout.descriptorsPrefix(rec.name)).compactMap { o in
            BucketVerify.descriptorVersion(o.key.path, tenant: rec.name).map { ($0, o.key) }
        }
        for (_, key) in found.sorted(by: { $0.0 > $1.0 }) {
            if let d = try? JSONDecoder().decode(TenantDescriptor.self, from: Data(try await store.get(key))),
                d.name == rec.name, let sealed = d.sealed {
                return (sealed, d.writeMaterialCheck)
            }
        }
        throw ServerError.noWriteMaterial(rec.name)
    }

    /// Rewrites each tenant's current descriptor that still holds the write material in the
    /// clear (format 1, or missing after a crash between delete and put) in format 2, so that
    /// later bucket copies and media carry it only sealed. Run at server start. Returns a line
    /// per tenant it could not rewrite.
    public func sealDescriptors() async -> [String] {
        var failures: [String] = []
        do {
            if try await catalog.clearShreddedWriteMaterial() > 0 {
                await audit(CallContext(principal: nil, source: "local"), .clearWriteMaterial, object: "catalog",
                    outcome: "ok", detail: "shredded tenants")
            }
        } catch { failures.append("catalog: shredded tenants' write material not cleared: \(error)") }
        for rec in (try? await catalog.tenants()) ?? [] where !rec.writeMaterial.isEmpty && rec.shreddedAt == nil {
            let key = Self.tenantKey(rec.name, version: rec.keyVersion)
            do {
                if try await store.head(key) != nil {
                    let d = try JSONDecoder().decode(TenantDescriptor.self, from: Data(try await store.get(key)))
                    // Format 1 (in the clear), or format 2 without its check (2026-11-27 only).
                    guard d.writeMaterial != nil || d.writeMaterialCheck == nil else { continue }
                    let sealed = try await descriptor(rec)
                    try await deleteUnlessHeld(key, now: try now())
                    _ = try await store.put(key, try sealed.encoded(), retainUntil: nil)
                } else {
                    _ = try await store.put(key, try await descriptor(rec).encoded(), retainUntil: nil)
                }
                await audit(CallContext(principal: nil, source: "local"), .sealDescriptor, object: key.path,
                        outcome: "ok",
                    detail: "write material sealed to read key \(rec.readKeyID)")
            } catch {
                failures.append("\(key.path): \(error)")
            }
        }
        return failures
    }

    /// What an admin needs to give the write material back after a rebuild from the store
    /// alone: whether the server has it, and the sealed copy to open with the read key.
    public func writeMaterial(tenant: String, ctx: CallContext) async throws -> Wire.WriteMaterialInfo {
        guard let rec = try await catalog.tenant(tenant) else {
            throw ServerError.notFound("tenant \(tenant) does not exist")
        }
        let (sealed, _) = try await sealedWriteMaterial(rec)
        return Wire.WriteMaterialInfo(tenant: tenant, present: !rec.writeMaterial.isEmpty,
            sealedWriteMaterial: Data(sealed).base64EncodedString())
    }

    /// Takes a tenant's write material back (opened by an admin with the read key, or
    /// copied from an enrolled host): only the one that names the tenant's read key, and
    /// never in place of one the server has.
    public func restoreWriteMaterial(tenant: String, _ req: Wire.RestoreWriteMaterialRequest,
        ctx: CallContext) async throws -> Wire.WriteMaterialInfo {
        let object = "tenant \(tenant)"
        guard let rec = try await catalog.tenant(tenant) else {
            throw ServerError.notFound("tenant \(tenant) does not exist")
        }
        guard rec.shreddedAt == nil else { throw await refuse(ctx, .restoreWriteMaterial, object: object,
                .shredded(tenant)) }
        guard let bytes = Data(base64Encoded: req.writeMaterial),
            let material = try? SharedWriteMaterial.decode(SecretBytes(copying: Array(bytes))) else {
            throw await refuse(ctx, .restoreWriteMaterial, object: object,
                .badRequest("writeMaterial is not a Redoubt write key set (base64)"))
        }
        guard Array(material.readPublicKey.rawRepresentation) == rec.readPublicKey else {
            throw await refuse(ctx, .restoreWriteMaterial, object: object,
                .badRequest("""
                    this write material belongs to read key \(material.readPublicKey.keyID), not tenant \(tenant)'s \
                    \(rec.readKeyID)
                    """))
        }
        // Why: material from a host's file may come from a compromised host; the descriptor's
        // public check tells the tenant's real chunk-ID key and seed from others.
        if rec.writeMaterial.isEmpty {
            guard let check = try await sealedWriteMaterial(rec).check else {
                throw await refuse(ctx, .restoreWriteMaterial, object: object, ServerError(409, "E_CONFLICT",
                    """
                        tenant \(tenant)'s descriptor carries no check of its write material, so none given here can \
                        be verified; nothing was changed
                        """))
            }
            guard check == material.check else {
                throw await refuse(ctx, .restoreWriteMaterial, object: object,
                    .badRequest("""
                        this write material names tenant \(tenant)'s read key but is not the material its descriptor \
                        was sealed with (another chunk-ID key or seed): take it from the sealed copy (`redoubt admin \
                        tenant restore-material \(tenant)` without --from)
                        """))
            }
        }
        if rec.writeMaterial.isEmpty, try await catalog.setWriteMaterial(tenant: tenant, material: Array(bytes)) {
            await audit(ctx, .restoreWriteMaterial, object: object, outcome: "ok", detail: "read-key=\(rec.readKeyID)")
        } else if try await catalog.tenant(tenant)?.writeMaterial != Array(bytes) {
            throw await refuse(ctx, .restoreWriteMaterial, object: object, ServerError(409, "E_CONFLICT",
                "the server already has tenant \(tenant)'s write material, and it differs: nothing was changed"))
        }
        return try await writeMaterial(tenant: tenant, ctx: ctx)
    }

    public func listTenants() async throws -> [Wire.TenantInfo] {
        let scopes = try await catalog.dedupScopes()
        var infos: [Wire.TenantInfo] = []
        for t in try await catalog.tenants() { infos.append(try await tenantInfo(t, scope: scopes[t.name])) }
        return infos
    }

    /// Creates a one-time enrollment token for a writer, restorer or auditor.
    public func createEnrollment(tenant: String, _ req: Wire.CreateEnrollmentRequest,
        ctx: CallContext) async throws -> Wire.CreateEnrollmentResponse {
        guard let role = Role(rawValue: req.role), role != .admin else {
            throw ServerError.badRequest("role must be writer, restorer or auditor")
        }
        guard Self.isValidPrincipalName(req.name) else {
            throw ServerError.badRequest("""
                name \(req.name.debugDescription) must be 1–253 characters of A-Z, a-z, 0-9, '.', '-', '_'
                """)
        }
        guard let rec = try await catalog.tenant(tenant) else {
            throw ServerError.notFound("tenant \(tenant) does not exist: `redoubt admin tenant create \(tenant)`")
        }
        guard rec.shreddedAt == nil else { throw ServerError.shredded(tenant) }
        if role == .writer || role == .restorer, rec.writeMaterial.isEmpty { throw ServerError.noWriteMaterial(tenant) }
        let ttl = min(max(req.ttlSeconds ?? 86400, 60), 7 * 86400)
        let now = try await now()
        let secret = hexString((0..<32).map { _ in UInt8.random(in: 0...255) })
        let expires = now.addingTimeInterval(ttl)
        try await catalog.insertEnrollment(tokenHash: hexString(SHA256.hash(data: Array(secret.utf8))), role: role,
            tenant: tenant, name: req.name,
                                     expiresAt: expires, createdBy: ctx.principal?.name ?? "-")
        let token = Wire.EnrollmentToken(url: serverURL,
            ca: Data(try ca.certificate.serializeAsPEM().derBytes).base64EncodedString(), pin: try ca.pin,
                                         secret: secret, role: role.rawValue, tenant: tenant, name: req.name,
                                             expires: Int64(expires.timeIntervalSince1970))
        await audit(ctx, .createEnrollment, object: "\(role.rawValue) \(tenant)/\(req.name)", outcome: "ok",
            detail: "expires=\(Int(expires.timeIntervalSince1970))")
        return Wire.CreateEnrollmentResponse(token: try token.encoded(), expires: expires)
    }

    /// An admin credential made directly on the server at init (no token round trip).
    public func issueAdmin(name: String, publicKey: P256.Signing.PublicKey) async throws -> (Principal, String) {
        let now = try await now()
        let id = hexString((0..<16).map { _ in UInt8.random(in: 0...255) })
        let cert = try ca.issueClient(publicKey: .init(publicKey), principalID: id, now: now)
        let p = Principal(id: id, role: .admin, tenant: nil, name: name,
            fingerprint: certificateFingerprint(der: try cert.serializeAsPEM().derBytes), hostKey: nil)
        try await catalog.insertPrincipal(p, os: nil, now: now)
        await audit(CallContext(principal: p, source: "local"), .createAdmin, object: "admin \(name)", outcome: "ok")
        return (p, try cert.serializeAsPEM().pemString)
    }

    /// Largest `GET /v1/audit` page, in bytes of record text (about the answer's size).
    public static let auditPageByteLimit = 16 << 20

    /// The audit records after `after`, oldest first: at most `limit`, and no more than fit in
    /// `byteLimit` (at least one). An empty answer is the end of the log; a shorter one is not.
    public func auditEntries(after: Int64, limit: Int,
                             byteLimit: Int = auditPageByteLimit) async throws -> [Wire.AuditEntry] {
        await recordAnonymousRefusals()
        var out: [Wire.AuditEntry] = []
        var cursor = after
        var size = 0
        // Read in small batches: each field may be 4 KiB, so `limit` records at once could be large.
        while out.count < limit {
            let want = min(500, limit - out.count)
            let batch = try await catalog.auditRecords(after: cursor, limit: want)
            for r in batch {
                let n = 256 + [r.actor, r.role, r.credential, r.source, r.action, r.object, r.outcome, r.detail]
                    .reduce(0) { $0 + $1.utf8.count }
                if !out.isEmpty && size + n > byteLimit { return out }
                size += n
                out.append(Wire.AuditEntry(seq: r.seq, time: r.time, actor: r.actor, role: r.role,
                                           credential: r.credential, source: r.source, action: r.action,
                                           object: r.object, outcome: r.outcome, detail: r.detail,
                                           prevHash: r.prevHash, hash: r.hash))
            }
            guard let last = batch.last, batch.count == want else { break }
            cursor = last.seq
        }
        return out
    }
}

/// What the server checks of a wrapped read key it is handed. It cannot unwrap it (it
/// holds no KEK), but it can refuse one that names another tenant, another read key or
/// the wrong version, so a mistaken or hostile rotation cannot replace a tenant's key
/// with one that does not open its packs.
struct WrappedKeyHeader: Decodable {
    struct Context: Decodable {
        var tenant: String
        var keyVersion: Int
    }
    var format: Int
    var provider: String
    var context: Context
    var readKeyID: String
    var publicKey: String
    var wrapped: String

    /// The provider's scheme, for the audit log (the URI may name files; no secret).
    var providerName: String { String(provider.prefix { $0 != ":" }) }

    static func check(_ json: String, tenant: TenantRecord, version: Int) throws -> WrappedKeyHeader {
        // Why strict: this JSON is itself untrusted input inside the request, and the server
        // checks fields (tenant, version, key ID) that a repeated key could make ambiguous.
        do { try StrictJSON.validate(Array(json.utf8)) } catch {
            throw ServerError.badRequest("wrappedReadKey refused: \(error.detail)")
        }
        guard let h = try? JSONDecoder().decode(WrappedKeyHeader.self, from: Data(json.utf8)), h.format == 1 else {
            throw ServerError.badRequest("""
                wrappedReadKey is not a Redoubt wrapped read key (format 1; docs/FORMAT.md §7)
                """)
        }
        guard h.context.tenant == tenant.name, h.context.keyVersion == version else {
            throw ServerError.badRequest("""
                wrapped read key is bound to tenant \(h.context.tenant.debugDescription) version \
                \(h.context.keyVersion), expected \(tenant.name.debugDescription) version \(version)
                """)
        }
        guard h.readKeyID == tenant.readKeyID,
            Data(base64Encoded: h.publicKey).map(Array.init) == tenant.readPublicKey else {
            throw ServerError.badRequest("""
                wrapped read key is for read key \(h.readKeyID), not tenant \(tenant.name)'s \(tenant.readKeyID): \
                rotation re-wraps the same key
                """)
        }
        guard !h.wrapped.isEmpty else { throw ServerError.badRequest("wrapped read key holds no wrapped bytes") }
        return h
    }

    /// The wrapped key's JSON with its wrapped bytes removed: names the provider and KEK.
    static func stub(_ json: String) throws -> String {
        guard var o = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] else { return "{}" }
        o["wrapped"] = ""
        return String(decoding: try JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]), as: UTF8.self)
    }
}

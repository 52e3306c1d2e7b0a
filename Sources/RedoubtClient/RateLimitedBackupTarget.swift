import RedoubtCore

/// When each upload may start so that the average rate stays at or below a limit.
///
/// Pure: the caller passes the time. An upload of `n` bytes takes `n / rate` seconds of
/// the budget; one that comes early waits until the uploads before it have used theirs.
/// Idle time is not saved up, so a pause is never followed by a burst above the limit
/// beyond one pack.
public struct UploadPacer: Sendable {
    public let bytesPerSecond: Double
    /// When the budget of the uploads so far is used up.
    private var nextFree: Duration = .zero

    public init(bytesPerSecond: UInt64) {
        self.bytesPerSecond = Double(max(bytesPerSecond, 1))
    }

    /// How long an upload of `bytes` asked for at `now` (time since any fixed origin) must
    /// wait before it starts; records its share of the budget.
    public mutating func delay(bytes: Int, now: Duration) -> Duration {
        let start = max(now, nextFree)
        nextFree = start + .seconds(Double(bytes) / bytesPerSecond)
        return start - now
    }
}

/// A ``PackLocatingBackupTarget`` whose pack uploads are paced by an ``UploadPacer``
/// (`--limit-upload`). Questions and the commit, which are small, are not delayed.
public final class RateLimitedBackupTarget: PackLocatingBackupTarget, SpooledPackTarget, Sendable {
    private let base: any PackLocatingBackupTarget
    private let pacer: PacerState
    private let origin = ContinuousClock.now

    private actor PacerState {
        var pacer: UploadPacer
        init(_ p: UploadPacer) { pacer = p }
        func delay(bytes: Int, now: Duration) -> Duration { pacer.delay(bytes: bytes, now: now) }
    }

    public init(base: any PackLocatingBackupTarget, bytesPerSecond: UInt64) {
        self.base = base
        pacer = PacerState(UploadPacer(bytesPerSecond: bytesPerSecond))
    }

    public func existingChunks(_ ids: [ChunkID]) async throws -> Set<ChunkID> { try await base.existingChunks(ids) }

    public func existingChunkLocations(_ ids: [ChunkID]) async throws -> [ChunkID: PackID] {
        try await base.existingChunkLocations(ids)
    }

    public func uploadedPacks(_ packs: [PackID]) async throws -> Set<PackID> { try await base.uploadedPacks(packs) }

    public func upload(pack: FinishedPack) async throws {
        let wait = await pacer.delay(bytes: pack.bytes.count, now: ContinuousClock.now - origin)
        if wait > .zero { try await Task.sleep(for: wait) }
        try await base.upload(pack: pack)
    }

    public var acceptsSpooledPacks: Bool { (base as? any SpooledPackTarget)?.acceptsSpooledPacks ?? false }

    public func upload(spooled pack: SpooledPack) async throws {
        guard let spooling = base as? any SpooledPackTarget else {
            throw ArchiveError(.invalidArgument, object: "pack \(pack.id)",
                "this repository takes packs from memory only (internal error: check acceptsSpooledPacks first)")
        }
        let wait = await pacer.delay(bytes: pack.count, now: ContinuousClock.now - origin)
        if wait > .zero { try await Task.sleep(for: wait) }
        try await spooling.upload(spooled: pack)
    }

    public func commit(manifest: Manifest) async throws { try await base.commit(manifest: manifest) }
}

import Foundation
import RedoubtCore

extension APIClient {
    /// The tenant's deep-verify state, with the packs due next up to `budget` bytes (restorer).
    public func deepVerifyState(budget: Int64) async throws -> Wire.DeepVerifyState {
        try await json(Wire.DeepVerifyState.self, .GET, "/v1/deep-verify?budget=\(budget)")
    }

    /// Tells the server these packs opened whole in a deep verify (restorer); batched.
    public func reportVerifiedPacks(_ ids: [PackID]) async throws -> Wire.PacksVerifiedInfo {
        var recorded = 0, unknown: [String] = []
        var i = 0
        while i < ids.count {
            let batch = ids[i..<min(i + Wire.PacksVerifiedReport.maxPacks, ids.count)]
            i += batch.count
            let answer = try await json(Wire.PacksVerifiedInfo.self, .POST, "/v1/packs/verified",
                                        body: Wire.PacksVerifiedReport(packs: batch.map(\.description)))
            recorded += answer.recorded
            unknown += answer.unknown
        }
        return Wire.PacksVerifiedInfo(recorded: recorded, unknown: unknown)
    }
}

/// How much a rolling deep verify opens in one run.
public enum RollingBudget: Sendable, Equatable {
    /// Exactly this many bytes of packs (the last pack may take it past).
    case bytes(Int64)
    /// Enough that, run once a day, every pack is re-opened within `days` days.
    case days(Int)

    /// The default: every pack re-opened at least every 30 days.
    public static let `default` = RollingBudget.days(30)

    /// The bytes to open this run, given the tenant's state. With `.days(D)`: every pack
    /// never verified, plus 1/(D−1) of the bytes already verified (rounded up). Opened
    /// oldest first, D−1 daily runs re-open every byte verified before them; the one day
    /// to spare absorbs a run the timer missed and the packs uploaded meanwhile (new packs
    /// go first and are paid for by the first term). D = 1 opens everything.
    public func bytes(for s: Wire.DeepVerifyState) -> Int64 {
        switch self {
        case .bytes(let n): return n
        case .days(let d):
            let verified = s.bytes - s.neverVerifiedBytes
            guard d > 1 else { return s.bytes }
            let share = (verified + Int64(d - 2)) / Int64(d - 1)
            return s.neverVerifiedBytes + share
        }
    }
}

/// Where a rolling deep verify is, for a progress line.
public struct RollingDeepVerifyProgress: Sendable {
    public let packs: Int
    public let bytes: Int64
    public let budget: Int64
    public let elapsed: Double
    public let pack: String
}

/// What a rolling deep verify did and found.
public struct RollingDeepVerifyReport: Sendable, Encodable {
    public var budgetBytes: Int64 = 0
    public var packsChecked = 0
    public var bytesChecked: Int64 = 0
    public var chunksChecked = 0
    public var seconds: Double = 0
    /// The tenant before and after this run (`due` left empty).
    public var before: Wire.DeepVerifyState?
    public var after: Wire.DeepVerifyState?
    public var damagedPacks: [DeepVerifyReport.DamagedPack] = []
    /// The host that uploaded each damaged pack, as the server names it ("unknown" if it cannot).
    public var uploaders: [String: String] = [:]
    /// Snapshots examined for damage (only those that name a damaged pack).
    public var snapshotsExamined = 0
    public var affectedSnapshots: [DeepVerifyReport.AffectedSnapshot] = []
    public var isClean: Bool { damagedPacks.isEmpty && affectedSnapshots.isEmpty }
}

/// A deep verify a restorer can run unattended every day that still covers everything:
/// the server keeps when each pack was last deep-verified; each run opens the packs never
/// verified first, then the longest ago, within a byte budget, reports each one that opens
/// whole (`POST /v1/packs/verified`) and each one that does not (`POST /v1/packs/{id}/damaged`,
/// which names the uploading host), and names every snapshot that references a chunk that
/// does not open. Holds one pack at a time.
public struct RollingDeepVerifier: Sendable {
    /// Verified packs reported per request while a run goes on, so an interrupted run keeps
    /// the credit for what it did.
    public var reportEvery = 64

    public init() {}

    public func run(client: APIClient, readKey: ReadPrivateKey, chunkIDKey: ChunkIDKey, budget: RollingBudget,
                    progress: (RollingDeepVerifyProgress) -> Void = { _ in }) async throws -> RollingDeepVerifyReport {
        let started = ContinuousClock.now
        let elapsed = { () -> Double in
            let d = ContinuousClock.now - started
            return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
        }
        var report = RollingDeepVerifyReport()
        var before = try await client.deepVerifyState(budget: 0)
        report.budgetBytes = budget.bytes(for: before)
        before.due = []
        report.before = before

        let decompressor = try ChunkDecompressor()
        var seen = Set<String>()
        var verified: [PackID] = []
        var damaged: [PackID] = []
        var left = report.budgetBytes
        while left > 0 {
            let due = try await client.deepVerifyState(budget: left).due.filter { !seen.contains($0.id) }
            if due.isEmpty { break }
            for p in due where left > 0 {
                try Task.checkCancellation()
                seen.insert(p.id)
                guard let id = PackID(hex: p.id) else { continue }
                progress(RollingDeepVerifyProgress(packs: report.packsChecked, bytes: report.bytesChecked,
                                                   budget: report.budgetBytes, elapsed: elapsed(), pack: p.id))
                let outcome = await Self.open(id, client: client, readKey: readKey, chunkIDKey: chunkIDKey,
                                              decompressor: decompressor)
                report.packsChecked += 1
                report.bytesChecked += p.size
                report.chunksChecked += outcome.chunks
                left -= p.size
                if let problem = outcome.problem {
                    report.damagedPacks.append(.init(pack: p.id, badChunks: outcome.bad, problem: problem))
                    damaged.append(id)
                    // Reported at once: the server records it (and the uploader) even if this run dies.
                    let info = try? await client.reportDamagedPack(id, problem: problem)
                    report.uploaders[p.id] = info?.uploader ?? "unknown"
                } else {
                    verified.append(id)
                    if verified.count >= reportEvery {
                        _ = try await client.reportVerifiedPacks(verified)
                        verified.removeAll()
                    }
                }
            }
        }
        if !verified.isEmpty { _ = try await client.reportVerifiedPacks(verified) }
        if !damaged.isEmpty {
            (report.snapshotsExamined, report.affectedSnapshots) =
                try await affected(by: Set(damaged), client: client, readKey: readKey, chunkIDKey: chunkIDKey)
        }
        var after = try await client.deepVerifyState(budget: 0)
        after.due = []
        report.after = after
        report.seconds = elapsed()
        progress(RollingDeepVerifyProgress(packs: report.packsChecked, bytes: report.bytesChecked,
                                           budget: report.budgetBytes, elapsed: report.seconds, pack: ""))
        return report
    }

    /// Opens every chunk of one pack; `problem` is nil when all open.
    static func open(_ id: PackID, client: APIClient, readKey: ReadPrivateKey, chunkIDKey: ChunkIDKey,
                     decompressor: ChunkDecompressor) async -> (chunks: Int, bad: Int, problem: String?) {
        do {
            let o = try DeepVerifier.openEveryChunk(try await client.pack(id), id: id, readKey: readKey,
                                                    chunkIDKey: chunkIDKey, decompressor: decompressor)
            return (o.good.count + o.bad.count, o.bad.count,
                    o.bad.first.map { "\(o.bad.count) chunk(s) do not open: " + $0.problem })
        } catch {
            return (0, 0, "\(error)")
        }
    }

    /// Every snapshot that names a damaged pack, walked whole by ``DeepVerifier``: a
    /// snapshot is affected when a chunk it references opens from none of its packs (a
    /// good copy in another of its packs still restores it). Reads every manifest, and the
    /// packs of those snapshots only.
    func affected(by damaged: Set<PackID>, client: APIClient, readKey: ReadPrivateKey,
                  chunkIDKey: ChunkIDKey) async throws -> (Int, [DeepVerifyReport.AffectedSnapshot]) {
        var candidates: [Manifest] = []
        for s in try await client.snapshots() {
            let m = try Manifest.parse(try await client.manifestBytes(s.id), expectedID: SnapshotID(hex: s.id))
            if m.header.packs.contains(where: damaged.contains) { candidates.append(m) }
        }
        guard !candidates.isEmpty else { return (0, []) }
        let r = try await DeepVerifier().verify(candidates, readKey: readKey, chunkIDKey: chunkIDKey, source: client)
        return (candidates.count, r.affectedSnapshots)
    }
}

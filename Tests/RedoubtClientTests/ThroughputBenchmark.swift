import Foundation
import RedoubtClient
import RedoubtCore
import Synchronization
import Testing

/// Backs up REDOUBT_BENCH_PATHS (colon-separated) into memory and restores it into
/// REDOUBT_BENCH_RESTORE (a directory to create), printing MB/s. Skipped unless the
/// variable is set; meant for release builds:
/// `swift build -c release --build-tests -Xswiftc -enable-testing` then
/// `REDOUBT_BENCH_PATHS=/usr/share swift test -c release --skip-build --filter Throughput`.
/// When each phase of a backup began.
final class PhaseLog: Sendable {
    let start: ContinuousClock.Instant
    let seen = Mutex<[(String, Duration)]>([])
    init(start: ContinuousClock.Instant) { self.start = start }
    func note(_ phase: String) {
        let t = ContinuousClock.now - start
        seen.withLock { s in if s.last?.0 != phase { s.append((phase, t)) } }
    }
    func text() -> String { seen.withLock { $0.map { "\($0.0)@\($0.1)" }.joined(separator: " ") } }
}

@Suite struct ThroughputBenchmark {
    /// Keeps packs in memory without checking them (the server's cost is not measured).
    actor FastRepository: PackLocatingBackupTarget, ChunkLocatingPackSource {
        var packs: [PackID: [UInt8]] = [:]
        var index: [ChunkID: PackID] = [:]
        func existingChunks(_ ids: [ChunkID]) async throws -> Set<ChunkID> { Set(ids.filter { index[$0] != nil }) }
        func existingChunkLocations(_ ids: [ChunkID]) async throws -> [ChunkID: PackID] {
            var out: [ChunkID: PackID] = [:]
            for id in ids { if let p = index[id] { out[id] = p } }
            return out
        }
        func upload(pack: FinishedPack) async throws {
            packs[pack.id] = pack.bytes
            for e in pack.entries where index[e.chunkID] == nil { index[e.chunkID] = pack.id }
        }
        func commit(manifest: Manifest) async throws {}
        func pack(_ id: PackID) async throws -> [UInt8] { packs[id]! }
        func chunkLocations(inPacks packs: [PackID]) async throws -> [ChunkID: PackID] {
            let wanted = Set(packs)
            return index.filter { wanted.contains($0.value) }
        }
    }

    /// User plus system CPU time of this process so far.
    static func cpuSeconds() -> Double {
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + Double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6
    }

    static let paths = ProcessInfo.processInfo.environment["REDOUBT_BENCH_PATHS"]

    @Test(.enabled(if: paths != nil)) func backupAndRestoreThroughput() async throws {
        let paths = (Self.paths ?? "").split(separator: ":").map(String.init)
        let keys = try TestKeys()
        let repo = FastRepository()
        let cache = "/tmp/redoubt-bench-cache-\(getpid())"
        defer { unlink(cache) }
        var lastCPU = Self.cpuSeconds()
        func mbps(_ bytes: UInt64, _ d: Duration) -> String {
            let s = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
            let cpu = Self.cpuSeconds()
            defer { lastCPU = cpu }
            return String(format: "%.2f s wall, %.0f MB/s; %.2f s CPU (%.0f MB per CPU-second)", s,
                Double(bytes) / 1e6 / s, cpu - lastCPU,
                          Double(bytes) / 1e6 / (cpu - lastCPU))
        }
        let clock = ContinuousClock()
        var result: BackupResult? = nil
        let workers = Int(ProcessInfo.processInfo.environment["REDOUBT_BENCH_WORKERS"] ?? "2") ?? 2
        let start = clock.now
        let phases = PhaseLog(start: start)
        let first = try await clock.measure {
            result = try await Archiver().run(options: BackupOptions(paths: paths, cachePath: cache, workers: workers),
                keys: keys.write, target: repo,
                                              now: Timestamp(seconds: 1)) { p in phases.note(p.phase.rawValue) }
        }
        print("BENCH phases: \(phases.text())")
        let r1 = try #require(result)
        print("""
            BENCH backup 1 (empty repository): \(r1.statistics.files) files, \(r1.statistics.bytesTotal) bytes, \
            uploaded \(r1.bytesUploaded): \(mbps(r1.statistics.bytesTotal, first)); warnings \(r1.warnings.count)
            """)
        let second = try await clock.measure {
            result = try await Archiver().run(options: BackupOptions(paths: paths, cachePath: cache), keys: keys.write,
                target: repo, now: Timestamp(seconds: 2))
        }
        print("""
            BENCH backup 2 (metadata cache): read \(result!.bytesRead), unchanged \(result!.filesUnchanged): \
            \(mbps(r1.statistics.bytesTotal, second))
            """)
        let third = try await clock.measure {
            result = try await Archiver().run(options: BackupOptions(paths: paths), keys: keys.write, target: repo,
                now: Timestamp(seconds: 3))
        }
        print("""
            BENCH backup 3 (no cache, all deduplicated): read \(result!.bytesRead), new chunks \
            \(result!.statistics.chunksNew): \(mbps(result!.bytesRead, third))
            """)
        guard let target = ProcessInfo.processInfo.environment["REDOUBT_BENCH_RESTORE"] else { return }
        var restored: RestoreResult? = nil
        let restore = try await clock.measure {
            restored = try await Restorer().restore(manifest: r1.manifest, readKey: keys.tenant.readKey,
                chunkIDKey: keys.tenant.chunkIDKey,
                                                    source: repo, target: target)
        }
        print("BENCH restore: \(restored!.files) files, \(restored!.bytesWritten) bytes, \(restored!.packsFetched) "
            + "packs, warnings \(restored!.warnings.count): \(mbps(restored!.bytesWritten, restore))")
    }
}

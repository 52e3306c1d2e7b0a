import Foundation
import RedoubtClient
import RedoubtCore
import Testing

/// Backs up REDOUBT_BENCH_PATHS (colon-separated) into memory and restores it into
/// REDOUBT_BENCH_RESTORE (a directory to create), printing MB/s. Skipped unless the
/// variable is set; meant for release builds:
/// `swift build -c release --build-tests -Xswiftc -enable-testing` then
/// `REDOUBT_BENCH_PATHS=/usr/share swift test -c release --skip-build --filter Throughput`.
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

    static let paths = ProcessInfo.processInfo.environment["REDOUBT_BENCH_PATHS"]

    @Test(.enabled(if: paths != nil)) func backupAndRestoreThroughput() async throws {
        let paths = (Self.paths ?? "").split(separator: ":").map(String.init)
        let keys = try TestKeys()
        let repo = FastRepository()
        let cache = "/tmp/redoubt-bench-cache-\(getpid())"
        defer { unlink(cache) }
        func mbps(_ bytes: UInt64, _ d: Duration) -> String {
            let s = Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
            return String(format: "%.2f s, %.0f MB/s", s, Double(bytes) / 1e6 / s)
        }
        let clock = ContinuousClock()
        var result: BackupResult? = nil
        let first = try await clock.measure {
            result = try await Archiver().run(options: BackupOptions(paths: paths, cachePath: cache), keys: keys.write, target: repo, now: Timestamp(seconds: 1))
        }
        let r1 = try #require(result)
        print("BENCH backup 1 (empty repository): \(r1.statistics.files) files, \(r1.statistics.bytesTotal) bytes, uploaded \(r1.bytesUploaded): \(mbps(r1.statistics.bytesTotal, first)); warnings \(r1.warnings.count)")
        let second = try await clock.measure {
            result = try await Archiver().run(options: BackupOptions(paths: paths, cachePath: cache), keys: keys.write, target: repo, now: Timestamp(seconds: 2))
        }
        print("BENCH backup 2 (metadata cache): read \(result!.bytesRead), unchanged \(result!.filesUnchanged): \(mbps(r1.statistics.bytesTotal, second))")
        let third = try await clock.measure {
            result = try await Archiver().run(options: BackupOptions(paths: paths), keys: keys.write, target: repo, now: Timestamp(seconds: 3))
        }
        print("BENCH backup 3 (no cache, all deduplicated): read \(result!.bytesRead), new chunks \(result!.statistics.chunksNew): \(mbps(result!.bytesRead, third))")
        guard let target = ProcessInfo.processInfo.environment["REDOUBT_BENCH_RESTORE"] else { return }
        var restored: RestoreResult? = nil
        let restore = try await clock.measure {
            restored = try await Restorer().restore(manifest: r1.manifest, readKey: keys.tenant.readKey, chunkIDKey: keys.tenant.chunkIDKey,
                                                    source: repo, target: target)
        }
        print("BENCH restore: \(restored!.files) files, \(restored!.bytesWritten) bytes, \(restored!.packsFetched) packs, warnings \(restored!.warnings.count): \(mbps(restored!.bytesWritten, restore))")
    }
}

import Glibc
@testable import RedoubtClient
import RedoubtCore
import Synchronization
import Testing

/// Finished packs wait for their upload in unnamed files, not in memory.
@Suite struct SpooledPackTests {
    let now = Timestamp(seconds: 1_800_000_000, nanoseconds: 7)

    /// A repository that also looks into the spool directory while each spooled pack uploads.
    final class Watching: PackLocatingBackupTarget, SpooledPackTarget, Sendable {
        let repository: MemoryRepository
        let directory: String
        let namesSeen = Mutex<[String]>([])

        init(repository: MemoryRepository, directory: String) {
            self.repository = repository
            self.directory = directory
        }

        func existingChunks(_ ids: [ChunkID]) async throws -> Set<ChunkID> {
            try await repository.existingChunks(ids)
        }
        func existingChunkLocations(_ ids: [ChunkID]) async throws -> [ChunkID: PackID] {
            try await repository.existingChunkLocations(ids)
        }
        func upload(pack: FinishedPack) async throws { try await repository.upload(pack: pack) }
        func upload(spooled pack: SpooledPack) async throws {
            let names = try Self.names(in: directory)
            namesSeen.withLock { $0 += names }
            try await repository.upload(spooled: pack)
        }
        func commit(manifest: Manifest) async throws { try await repository.commit(manifest: manifest) }

        static func names(in directory: String) throws -> [String] {
            guard let d = opendir(directory) else { throw Fixture.Failure("opendir \(directory): errno \(errno)") }
            defer { closedir(d) }
            var out: [String] = []
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) {
                    String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
                }
                if name != "." && name != ".." { out.append(name) }
            }
            return out
        }
    }

    /// Packs of less than a slice, and packs of several slices (each written to its file as
    /// it fills, never held whole).
    @Test(arguments: [(256 << 10, 3 << 20, 2 << 20), (6 << 20, 11 << 20, 3 << 20)])
    func packsUploadFromUnnamedFilesAndRestoreBitForBit(packSize: Int, random: Int, text: Int) async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("spool")
        defer { Fixture.remove(work) }
        let src = work + "/src", spool = work + "/spool"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        try Fixture.check(mkdir(spool, 0o700), "mkdir")
        try Fixture.write(src + "/random", try Fixture.random(random))
        try Fixture.write(src + "/text", Fixture.text(text))
        let repo = MemoryRepository(keys: keys.write)
        let target = Watching(repository: repo, directory: spool)
        var options = BackupOptions(paths: [src], packSize: packSize)
        options.spoolDirectory = spool
        let result = try await Archiver().run(options: options, keys: keys.write, target: target, now: now)
        #expect(result.warnings.isEmpty, "\(result.warnings)")
        // Every pack went through a spool file, each checked against its ID by the repository.
        #expect(result.packsUploaded > 1)
        #expect(await repo.spooledUploads == result.packsUploaded)
        #expect(await repo.uploads == result.packsUploaded)
        #expect(target.namesSeen.withLock { $0 } == [], "a spooled pack never has a name")
        #expect(try Watching.names(in: spool) == [])
        let dst = work + "/dst"
        _ = try await Restorer().restore(manifest: result.manifest, readKey: keys.tenant.readKey,
            chunkIDKey: keys.tenant.chunkIDKey, source: repo, target: dst)
        #expect(try Fixture.compare(src, dst + src) == [])
    }

    @Test func theCacheDirectoryIsTheDefaultSpool() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("spool-cache")
        defer { Fixture.remove(work) }
        let src = work + "/src"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        try Fixture.write(src + "/random", try Fixture.random(1 << 20))
        let repo = MemoryRepository(keys: keys.write)
        let options = BackupOptions(paths: [src], cachePath: work + "/cache.bin", packSize: 256 << 10)
        let result = try await Archiver().run(options: options, keys: keys.write, target: repo, now: now)
        #expect(result.packsUploaded > 1)
        #expect(await repo.spooledUploads == result.packsUploaded)
        #expect(Set(try Watching.names(in: work)) == ["src", "cache.bin"])
    }

    @Test func withoutAUsableSpoolPacksUploadFromMemory() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("spool-none")
        defer { Fixture.remove(work) }
        let src = work + "/src"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        try Fixture.write(src + "/random", try Fixture.random(1 << 20))
        try Fixture.write(src + "/text", Fixture.text(1 << 20))
        let repo = MemoryRepository(keys: keys.write)
        var options = BackupOptions(paths: [src], packSize: 256 << 10)
        options.spoolDirectory = work + "/missing"
        let result = try await Archiver().run(options: options, keys: keys.write, target: repo, now: now)
        #expect(result.warnings.isEmpty, "\(result.warnings)")
        #expect(result.packsUploaded > 1)
        #expect(await repo.spooledUploads == 0)
        #expect(await repo.uploads == result.packsUploaded)
        // A rate-limited wrapper around a target that takes arrays only does not spool either.
        let plain = MemoryRepository(keys: keys.write)
        let limited = RateLimitedBackupTarget(base: PlainLocating(repository: plain), bytesPerSecond: 1 << 40)
        #expect(!limited.acceptsSpooledPacks)
        options.spoolDirectory = work
        let again = try await Archiver().run(options: options, keys: keys.write, target: limited, now: now)
        #expect(await plain.spooledUploads == 0)
        #expect(await plain.uploads == again.packsUploaded)
        let dst = work + "/dst"
        _ = try await Restorer().restore(manifest: again.manifest, readKey: keys.tenant.readKey,
            chunkIDKey: keys.tenant.chunkIDKey, source: plain, target: dst)
        #expect(try Fixture.compare(src, dst + src) == [])
    }

    /// A locating target that takes packs from memory only.
    struct PlainLocating: PackLocatingBackupTarget {
        let repository: MemoryRepository
        func existingChunks(_ ids: [ChunkID]) async throws -> Set<ChunkID> {
            try await repository.existingChunks(ids)
        }
        func existingChunkLocations(_ ids: [ChunkID]) async throws -> [ChunkID: PackID] {
            try await repository.existingChunkLocations(ids)
        }
        func upload(pack: FinishedPack) async throws { try await repository.upload(pack: pack) }
        func commit(manifest: Manifest) async throws { try await repository.commit(manifest: manifest) }
    }
}

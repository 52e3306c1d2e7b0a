import Glibc
@testable import RedoubtClient
import RedoubtCore
import Synchronization
import Testing

/// Backs up real trees into an in-memory repository and restores them.
@Suite struct BackupRestoreTests {
    let now = Timestamp(seconds: 1_800_000_000, nanoseconds: 42)

    /// The trees a backup of `path` stores above it (the root and each directory on the way).
    static func treesAbove(_ path: String) -> UInt64 { UInt64(path.split(separator: "/").count) }

    /// The tree of the directory backed up as `path` (kept whole below the root).
    static func tree(at path: String, _ reader: SnapshotReader) throws -> Tree {
        var t = try reader.rootTree()
        for part in path.split(separator: "/") {
            guard let n = t[Array(part.utf8)] else { throw Fixture.Failure("\(part) of \(path) not in the snapshot") }
            t = try reader.tree(of: n)
        }
        return t
    }

    func restore(_ m: Manifest, _ keys: TestKeys, from source: any PackSource, to target: String,
        subpath: String? = nil,
                 skipDamaged: Bool = false) async throws -> RestoreResult {
        try await Restorer().restore(manifest: m, readKey: keys.tenant.readKey, chunkIDKey: keys.tenant.chunkIDKey,
            source: source,
                                     target: target, subpath: subpath.map { Array($0.utf8) }, skipDamaged: skipDamaged)
    }

    /// A file is created with some of its permission bits and its owner set only where they
    /// differ: whatever the mix (read-only, group- or world-writable, none at all, setuid,
    /// setgid and sticky, owners matching the restorer's or not), each comes back as it was.
    @Test func everyModeAndOwnerComesBack() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("modes")
        defer { Fixture.remove(work) }
        let src = work + "/src"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        let modes: [mode_t] = [0o444, 0o664, 0o666, 0o600, 0o751, 0o2755, 0o4711, 0o000, 0o1644, 0o640]
        let owners: [(uid_t, gid_t)] = geteuid() == 0 ? [(0, 0), (1234, 5678), (0, 5678), (4321, 0)] : [(0, 0)]
        for (k, mode) in modes.enumerated() {
            for (o, owner) in owners.enumerated() {
                let path = "\(src)/f\(k)-\(o)"
                try Fixture.write(path, Fixture.text(100 + k * 10 + o), mode: 0o600)
                if geteuid() == 0 { try Fixture.check(chown(path, owner.0, owner.1), "chown") }
                try Fixture.check(chmod(path, mode), "chmod")
            }
        }
        let repo = MemoryRepository(keys: keys.write)
        let result = try await Archiver().run(options: BackupOptions(paths: [src]), keys: keys.write, target: repo,
            now: now) { _ in }
        let dst = work + "/dst"
        let r = try await restore(result.manifest, keys, from: repo, to: dst)
        #expect(r.warnings.isEmpty, "\(r.warnings)")
        #expect(try Fixture.compare(src, dst + src) == [])
        guard case .success(let st) = ArchiveSys.lstat(Array((dst + src + "/f5-1").utf8)) else {
            throw Fixture.Failure("lstat")
        }
        #expect(st.permissions == 0o2755 || geteuid() != 0, "setgid survives the owner being set")
    }

    @Test func restoresEveryKindOfEntryFaithfully() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("every")
        defer { Fixture.remove(work) }
        let src = work + "/src"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        let notes = try Fixture.everyKind(at: src)
        for n in notes.skipped { print("fixture: \(n)") }
        let repo = MemoryRepository(keys: keys.write)
        let reports = Mutex<[BackupProgress]>([])
        let result = try await Archiver().run(options: BackupOptions(paths: [src], packSize: 8 << 20), keys: keys.write,
            target: repo, now: now) { p in
            reports.withLock { $0.append(p) }
        }
        #expect(result.warnings.isEmpty, "\(result.warnings)")
        #expect(result.manifest.header.paths == [Array(src.utf8)])
        #expect(result.manifest.header.time == now)
        let s = result.statistics
        #expect(s.files == 11)  // a/hard2 is a hard link, counted with the other entries
        #expect(s.directories == 5 + 2, "src's five and the two on its way (tmp, the work directory)")
        #expect(s.otherEntries == 7)
        #expect(s.bytesUploaded > 0 && s.bytesUploaded == result.bytesUploaded)
        #expect(s.bytesRead < 22 << 20, "the sparse file's holes must not be read")
        #expect(await repo.manifests.count == 1)
        let last = reports.withLock { $0.last }
        #expect(last?.phase == .done)
        #expect(last?.filesTotal == 11)

        // Restore with the repository's catalog: every pack fetched once at most.
        let dst = work + "/dst"
        let r = try await restore(result.manifest, keys, from: repo, to: dst)
        #expect(try Fixture.compare(src, dst + src) == [])
        #expect(r.warnings.contains { $0.message.contains("socket") })
        #expect(r.damaged.isEmpty)
        #expect(await repo.fetches.values.allSatisfy { $0 == 1 })
        // Holes stay holes.
        guard case .success(let sparse) = ArchiveSys.lstat(Array((dst + src + "/sparse.img").utf8)) else {
            throw Fixture.Failure("lstat")
        }
        #expect(sparse.size == 64 << 20 && sparse.blocks * 512 < 1 << 20)
        let content = try Fixture.read(Array((dst + src + "/sparse.img").utf8))
        for region in notes.sparseRegions {
            #expect(Array(content[region.offset..<(region.offset + region.data.count)]) == region.data)
        }
        // Setuid survives the chown; non-UTF-8 name restored byte for byte.
        guard case .success(let su) = ArchiveSys.lstat(Array((dst + src + "/setuid").utf8)) else {
            throw Fixture.Failure("lstat")
        }
        #expect(su.permissions == 0o4755)
        #expect(try Fixture.read(Array((dst + src + "/").utf8) + Fixture.nonUTF8Name) == Array("bytes".utf8))

        // Restore without a catalog: the manifest's pack list alone must suffice.
        await repo.resetCounters()
        let dst2 = work + "/dst2"
        _ = try await restore(result.manifest, keys, from: PlainSource(repository: repo), to: dst2)
        #expect(try Fixture.compare(src, dst2 + src) == [])
        #expect(await repo.fetches.values.allSatisfy { $0 == 1 })

        // Core's SnapshotReader reads the same snapshot.
        let packs = await repo.packs
        let reader = try SnapshotReader(manifest: result.manifest, readKey: keys.tenant.readKey,
            chunkIDKey: keys.tenant.chunkIDKey) { id in
            guard let b = packs[id] else { throw Fixture.Failure("no pack") }
            return b
        }
        // The root keeps the path whole: tmp → redoubt-client-every-… → src.
        var srcTree = try reader.rootTree()
        for part in src.split(separator: "/") {
            #expect(srcTree.nodes.map(\.name) == [Array(part.utf8)])
            srcTree = try reader.tree(of: try #require(srcTree[Array(part.utf8)]))
        }
        let big = try #require(srcTree[Array("big.bin".utf8)])
        #expect(try reader.contents(of: big) == Fixture.read(Array((src + "/big.bin").utf8)))
        #expect(big.content.count > 2, "a 20 MiB file is several chunks")
        let aNode = try #require(srcTree[Array("a".utf8)])
        let hard2 = try #require(try reader.tree(of: aNode)[Array("hard2".utf8)])
        #expect(hard2.type == .hardlink && hard2.linkTarget == Array((src + "/hard1").utf8.dropFirst()))
        let acl = try #require(srcTree[Array("acl.txt".utf8)])
        #expect(acl.xattrs.map(\.name) == [Array("system.posix_acl_access".utf8)])
        #expect(try #require(srcTree[Array("regular.txt".utf8)]).mtime == Timestamp(seconds: 1_700_000_000,
            nanoseconds: 123_456_789))
    }

    /// `/x/data` and `/y/data` stay apart (`x/data`, `y/data`), the directories on the way
    /// keep their metadata, a path inside another one given is walked once, and `--path`
    /// takes the path as the user knows it.
    @Test func rootTreeKeepsEachPathWhole() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("layout")
        defer { Fixture.remove(work) }
        for d in ["x", "y", "x/data", "y/data"] { try Fixture.check(mkdir(work + "/" + d, 0o755), "mkdir") }
        try Fixture.write(work + "/x/data/one", Fixture.text(10))
        try Fixture.write(work + "/y/data/two", Fixture.text(20))
        try Fixture.write(work + "/single.txt", Fixture.text(30))
        try Fixture.check(chmod(work + "/y", 0o750), "chmod")
        var times = [timespec(tv_sec: 1_600_000_000, tv_nsec: 5), timespec(tv_sec: 1_600_000_001, tv_nsec: 7)]
        try Fixture.check(utimensat(AT_FDCWD, work + "/y", &times, 0), "utimensat")
        let repo = MemoryRepository(keys: keys.write)
        let paths = [work + "/x/data/", work + "/y/./data", work + "/single.txt", work + "/x/data/one"]
        let result = try await Archiver().run(options: BackupOptions(paths: paths), keys: keys.write, target: repo,
            now: now)
        #expect(result.manifest.header.paths == paths.map { Array($0.utf8) })
        #expect(result.manifest.version == Manifest.version && result.manifest.keepsPathsWhole)
        let dst = work + "/dst"
        _ = try await restore(result.manifest, keys, from: repo, to: dst)
        #expect(try Fixture.read(Array((dst + work + "/x/data/one").utf8)) == Fixture.text(10))
        #expect(try Fixture.read(Array((dst + work + "/y/data/two").utf8)) == Fixture.text(20))
        #expect(try Fixture.read(Array((dst + work + "/single.txt").utf8)) == Fixture.text(30))
        guard case .success(let y) = ArchiveSys.lstat(Array((dst + work + "/y").utf8)) else {
            throw Fixture.Failure("lstat")
        }
        #expect(y.permissions == 0o750 && y.mtime == Timestamp(seconds: 1_600_000_001, nanoseconds: 7))
        // One path of two with the same last component, by its own whole path.
        let only = work + "/only"
        let r = try await restore(result.manifest, keys, from: repo, to: only, subpath: work + "/y/data")
        #expect(r.files == 1)
        #expect(try Fixture.read(Array((only + work + "/y/data/two").utf8)) == Fixture.text(20))
        #expect(access(only + work + "/x", F_OK) != 0)
    }

    /// A snapshot laid out as before manifest version 3 (`data`, `data~2`) still restores,
    /// and `--path` as the user knows it finds the entry the old names hide.
    @Test func snapshotsBeforeWholePathsStillRestore() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("legacy")
        defer { Fixture.remove(work) }
        for d in ["x", "y", "x/data", "y/data"] { try Fixture.check(mkdir(work + "/" + d, 0o755), "mkdir") }
        try Fixture.write(work + "/x/data/one", Fixture.text(10))
        try Fixture.write(work + "/y/data/two", Fixture.text(20))
        let repo = MemoryRepository(keys: keys.write)
        var hooks = ArchiverTestHooks()
        hooks.legacyLayout = true
        let result = try await Archiver(hooks: hooks).run(options: BackupOptions(paths: [work + "/x/data",
            work + "/y/data"]), keys: keys.write, target: repo, now: now)
        #expect(result.manifest.version == 2 && !result.manifest.keepsPathsWhole)
        let dst = work + "/dst"
        _ = try await restore(result.manifest, keys, from: repo, to: dst)
        #expect(try Fixture.read(Array((dst + "/data/one").utf8)) == Fixture.text(10))
        #expect(try Fixture.read(Array((dst + "/data~2/two").utf8)) == Fixture.text(20))
        let byPath = work + "/by-path"
        _ = try await restore(result.manifest, keys, from: repo, to: byPath, subpath: work + "/y/data/two")
        #expect(try Fixture.read(Array((byPath + "/data~2/two").utf8)) == Fixture.text(20))
        #expect(access(byPath + "/data", F_OK) != 0)
        let byName = work + "/by-name"
        _ = try await restore(result.manifest, keys, from: repo, to: byName, subpath: "data~2")
        #expect(try Fixture.read(Array((byName + "/data~2/two").utf8)) == Fixture.text(20))
        #expect(SnapshotLayout.topLevelNames([[0x2f]]) == [Array("root".utf8)])
    }

    @Test func cacheSkipsUnchangedFilesAndRereadsOnlyChangedOnes() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("cache")
        defer { Fixture.remove(work) }
        let src = work + "/src"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        _ = try Fixture.everyKind(at: src, bigFile: 3 << 20)
        let cache = work + "/cache.bin"
        let repo = MemoryRepository(keys: keys.write)
        let options = BackupOptions(paths: [src], cachePath: cache, packSize: 2 << 20)
        let first = try await Archiver().run(options: options, keys: keys.write, target: repo, now: now)
        #expect(first.filesNew == 11 && first.filesUnchanged == 0)
        let cacheBytes = try Fixture.read(Array(cache.utf8))
        #expect(cacheBytes.starts(with: MetadataCache.magic))

        let second = try await Archiver().run(options: options, keys: keys.write, target: repo, now: now)
        #expect(second.bytesRead == 0)
        #expect(second.filesUnchanged == 11 && second.filesNew == 0 && second.filesChanged == 0)
        // Nothing below src changed: at most the trees above it are new (/tmp's times move
        // whenever anything is created in it), never a file's data or src's own trees.
        #expect(second.packsUploaded <= 1 && second.statistics.chunksNew <= Self.treesAbove(src),
            "nothing below src changed")
        #expect(second.warnings.isEmpty, "\(second.warnings)")

        try Fixture.write(src + "/a/b/c/deep.txt", Fixture.text(7000, seed: "changed\n"))
        let third = try await Archiver().run(options: options, keys: keys.write, target: repo, now: now)
        #expect(third.bytesRead == 7000)
        #expect(third.filesChanged == 1 && third.filesUnchanged == 10)
        #expect(third.statistics.chunksNew >= 1)

        let dst = work + "/dst"
        _ = try await restore(third.manifest, keys, from: repo, to: dst)
        #expect(try Fixture.compare(src, dst + src) == [])

        // Unchanged files' extended attributes came from the cache; changing one moves the
        // file's ctime, so that file alone is read again and the snapshot has the new value.
        try Fixture.setXattr(src + "/xattr.txt", "user.comment", Fixture.bytes("changed"))
        let fourth = try await Archiver().run(options: options, keys: keys.write, target: repo, now: now)
        #expect(fourth.filesChanged == 1 && fourth.filesUnchanged == 10 && fourth.bytesRead == 10)
        let packs = await repo.packs
        let reader = try SnapshotReader(manifest: fourth.manifest, readKey: keys.tenant.readKey,
            chunkIDKey: keys.tenant.chunkIDKey) { id in
            guard let b = packs[id] else { throw Fixture.Failure("no pack \(id)") }
            return b
        }
        let node = try Self.tree(at: src, reader)[Fixture.bytes("xattr.txt")]
        #expect(node?.xattrs.first { $0.name == Fixture.bytes("user.comment") }?.value == Fixture.bytes("changed"))
        #expect(node?.xattrs.count == 2)
    }

    /// The cache places each chunk in its pack, so an unchanged backup confirms the packs
    /// (one question) and asks about no file's chunk; a pack the repository no longer holds
    /// vouches for nothing: its files are read again and the snapshot does not name it.
    @Test func cachedChunksAreConfirmedByTheirPacksAndAGonePacksFilesAreReadAgain() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("by-pack")
        defer { Fixture.remove(work) }
        let src = work + "/src"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        for i in 0..<40 { try Fixture.write(src + "/f\(i)", try Fixture.random(150_000 + 1000 * i)) }
        let cache = work + "/cache.bin"
        let repo = MemoryRepository(keys: keys.write)
        let options = BackupOptions(paths: [src], cachePath: cache, packSize: 1 << 20)
        let first = try await Archiver().run(options: options, keys: keys.write, target: repo, now: now)
        let (cached, problem) = MetadataCache.load(path: cache, chunkIDKey: keys.tenant.chunkIDKey)
        #expect(problem == nil)
        let files = cached.entries.filter { $0.key.starts(with: Array((src + "/").utf8)) }
        #expect(files.count == 40)
        for (path, e) in files {
            #expect(e.contentPacks.count == e.content.count && !e.contentPacks.contains(nil), "\(printable(path))")
            for (c, p) in zip(e.content, e.contentPacks.compactMap { $0 }) {
                #expect(try await repo.chunkLocations(inPacks: [p])[c] == p, "the cache places a chunk where it is not")
            }
        }
        let named = Set(files.values.flatMap { $0.contentPacks.compactMap { $0 } })
        #expect(named.count >= 3 && named.isSubset(of: cached.packs) && named.isSubset(of: first.manifest.header.packs))

        await repo.resetCounters()
        let second = try await Archiver().run(options: options, keys: keys.write, target: repo, now: now)
        #expect(second.filesUnchanged == 40 && second.bytesRead == 0)
        #expect(await repo.packQueries == 1)
        let fileChunks = Set(files.values.flatMap(\.content))
        #expect(await repo.chunksAsked.isDisjoint(with: fileChunks), "an unchanged file's chunks were asked about")
        let cachedPacks = Set(cached.packs)
        #expect(!cached.trees.isEmpty && cached.trees.allSatisfy { $0.pack.map(cachedPacks.contains) ?? false })
        #expect(await repo.chunksAsked.isDisjoint(with: cached.trees.map(\.id)), "a cached tree chunk was asked about")
        #expect(named.isSubset(of: second.manifest.header.packs))

        let gone = try #require(files.values.first?.contentPacks.first ?? nil)
        let inGone = files.values.filter { $0.contentPacks.contains(gone) }.count
        await repo.drop(gone)
        let third = try await Archiver().run(options: options, keys: keys.write, target: repo, now: now)
        #expect(inGone > 0 && third.filesChanged == UInt64(inGone) && third.filesUnchanged == UInt64(40 - inGone))
        #expect(!third.manifest.header.packs.contains(gone))
        let dst = work + "/dst"
        _ = try await restore(third.manifest, keys, from: repo, to: dst)
        #expect(try Fixture.compare(src, dst + src) == [])
    }

    /// A repository whose answers about chunks take a while, and that has lost some chunks.
    final class SlowAndForgetful: PackLocatingBackupTarget {
        let repository: MemoryRepository
        let lost: Set<ChunkID>
        /// Requests about a whole batch of chunks (the walk's confirmations; a worker's
        /// here ask about a few) being answered now, and the most at once.
        let asking = Mutex((now: 0, most: 0))

        init(_ repository: MemoryRepository, lost: Set<ChunkID>) {
            self.repository = repository
            self.lost = lost
        }

        func existingChunks(_ ids: [ChunkID]) async throws -> Set<ChunkID> {
            try await repository.existingChunks(ids).subtracting(lost)
        }
        func existingChunkLocations(_ ids: [ChunkID]) async throws -> [ChunkID: PackID] {
            let batch = ids.count >= SnapshotBuilder.confirmBatch / 2
            asking.withLock { a in
                if batch { a.now += 1 }
                a.most = max(a.most, a.now)
            }
            defer { asking.withLock { if batch { $0.now -= 1 } } }
            try await Task.sleep(for: .milliseconds(30))
            return try await repository.existingChunkLocations(ids).filter { !lost.contains($0.key) }
        }
        func upload(pack: FinishedPack) async throws { try await repository.upload(pack: pack) }
        func commit(manifest: Manifest) async throws { try await repository.commit(manifest: manifest) }
    }

    @Test func cachedFilesAreConfirmedWhileTheWalkGoesOnAndAFileWithALostChunkIsReadAgain() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("confirm")
        defer { Fixture.remove(work) }
        let src = work + "/src"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        // Several confirmation batches' worth of one-chunk files.
        let files = 4 * SnapshotBuilder.confirmBatch + 300
        for d in 0..<4 { try Fixture.check(mkdir("\(src)/d\(d)", 0o755), "mkdir") }
        for i in 0..<files { try Fixture.write("\(src)/d\(i % 4)/f\(i)", Fixture.bytes("file \(i)\n")) }
        let cache = work + "/cache"
        let options = BackupOptions(paths: [src], cachePath: cache)
        let repo = MemoryRepository(keys: keys.write)
        let first = try await Archiver().run(options: options, keys: keys.write, target: repo, now: now)
        #expect(first.filesNew == UInt64(files))

        // The chunks of three files, spread over the walk, are gone from the repository.
        let (cached, problem) = MetadataCache.load(path: cache, chunkIDKey: keys.tenant.chunkIDKey)
        #expect(problem == nil)
        let victims = [7, files / 2, files - 3].map { Fixture.bytes("\(src)/d\($0 % 4)/f\($0)") }
        let lost = Set(victims.flatMap { cached[$0]?.content ?? [] })
        #expect(lost.count == 3)
        let target = SlowAndForgetful(repo, lost: lost)
        let second = try await Archiver().run(options: options, keys: keys.write, target: target, now: now)
        #expect(second.filesUnchanged == UInt64(files - 3) && second.filesChanged == 3)
        let victimBytes = try victims.map { try Fixture.read($0).count }.reduce(0, +)
        #expect(second.bytesRead == UInt64(victimBytes))
        #expect(target.asking.withLock { $0.most } >= 2, "the walk waited for each answer in turn")
        let dst = work + "/dst"
        _ = try await restore(second.manifest, keys, from: repo, to: dst)
        #expect(try Fixture.compare(src, dst + src) == [])
    }

    /// A backup's target that takes its packs but refuses its commit.
    struct RefusingCommits: BackupTarget {
        let repository: MemoryRepository
        func existingChunks(_ ids: [ChunkID]) async throws -> Set<ChunkID> { try await repository.existingChunks(ids) }
        func upload(pack: FinishedPack) async throws { try await repository.upload(pack: pack) }
        func commit(manifest: Manifest) async throws { throw Fixture.Failure("commit refused") }
    }

    /// The new cache replaces the old one only once the snapshot is committed: a refused
    /// commit leaves the old cache, byte for byte, and no file of the new one.
    @Test func aRefusedCommitLeavesTheOldCacheAndNoneOfTheNew() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("cache-refused")
        defer { Fixture.remove(work) }
        let src = work + "/src", caches = work + "/caches"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        try Fixture.check(mkdir(caches, 0o700), "mkdir")
        _ = try Fixture.everyKind(at: src, bigFile: 1 << 20)
        let cache = caches + "/cache.bin"
        let repo = MemoryRepository(keys: keys.write)
        let options = BackupOptions(paths: [src], cachePath: cache, packSize: 2 << 20)
        _ = try await Archiver().run(options: options, keys: keys.write, target: repo, now: now)
        let before = try Fixture.read(Array(cache.utf8))

        try Fixture.write(src + "/a/b/c/deep.txt", Fixture.text(5000, seed: "changed\n"))
        await #expect(throws: Fixture.Failure.self) {
            try await Archiver().run(options: options, keys: keys.write, target: RefusingCommits(repository: repo),
                                     now: now)
        }
        #expect(try Fixture.read(Array(cache.utf8)) == before, "the old cache was replaced")
        func names() throws -> [[UInt8]] {
            let fd = open(caches, O_RDONLY | O_DIRECTORY)
            defer { close(fd) }
            guard case .success(let names) = ArchiveSys.listDirectory(fd: fd) else { throw Fixture.Failure("list") }
            return names
        }
        #expect(try names() == [Array("cache.bin".utf8)], "the new cache was left behind")

        // The old cache still serves: only the changed file is read again.
        let next = try await Archiver().run(options: options, keys: keys.write, target: repo, now: now)
        #expect(next.filesChanged == 1 && next.bytesRead == 5000 && next.warnings.isEmpty, "\(next.warnings)")
        #expect(try Fixture.read(Array(cache.utf8)) != before, "a committed backup replaces the cache")
        #expect(try names() == [Array("cache.bin".utf8)])
    }

    @Test func withoutCacheRereadsButUploadsNothingNew() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("dedup")
        defer { Fixture.remove(work) }
        let src = work + "/src"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        _ = try Fixture.everyKind(at: src, bigFile: 3 << 20)
        let repo = MemoryRepository(keys: keys.write)
        let first = try await Archiver().run(options: BackupOptions(paths: [src]), keys: keys.write, target: repo,
            now: now)
        let second = try await Archiver().run(options: BackupOptions(paths: [src]), keys: keys.write, target: repo,
            now: now)
        #expect(second.bytesRead == first.bytesRead && second.bytesRead > 3 << 20)
        #expect(second.packsUploaded <= 1 && second.statistics.chunksNew <= Self.treesAbove(src))
        #expect(second.statistics.chunksReused + second.statistics.chunksNew
            == first.statistics.chunksNew + first.statistics.chunksReused)
        #expect(Set(second.manifest.header.packs).isSuperset(of: first.manifest.header.packs))
    }

    @Test func cacheWhoseChunksTheRepositoryLacksIsNotTrusted() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("stale")
        defer { Fixture.remove(work) }
        let src = work + "/src"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        try Fixture.write(src + "/f", Fixture.text(50_000))
        try Fixture.write(src + "/g", try Fixture.random(1 << 20))
        let cache = work + "/cache"
        let options = BackupOptions(paths: [src], cachePath: cache)
        _ = try await Archiver().run(options: options, keys: keys.write, target: MemoryRepository(keys: keys.write),
            now: now)
        // Another (empty) repository: the cached chunk IDs are unknown there.
        let fresh = MemoryRepository(keys: keys.write)
        let r = try await Archiver().run(options: options, keys: keys.write, target: fresh, now: now)
        #expect(r.filesUnchanged == 0 && r.filesChanged == 2)
        #expect(r.bytesRead == 50_000 + (1 << 20))
        let dst = work + "/dst"
        _ = try await restore(r.manifest, keys, from: fresh, to: dst)
        #expect(try Fixture.compare(src, dst + src) == [])
    }

    @Test func corruptCacheIsIgnoredWithAWarning() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("corrupt")
        defer { Fixture.remove(work) }
        let src = work + "/src"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        try Fixture.write(src + "/f", Fixture.text(10_000))
        let cache = work + "/cache"
        let repo = MemoryRepository(keys: keys.write)
        let options = BackupOptions(paths: [src], cachePath: cache)
        _ = try await Archiver().run(options: options, keys: keys.write, target: repo, now: now)
        var bytes = try Fixture.read(Array(cache.utf8))
        bytes[bytes.count / 2] ^= 0xff
        try Fixture.write(cache, bytes)
        let r = try await Archiver().run(options: options, keys: keys.write, target: repo, now: now)
        #expect(r.warnings.contains { $0.kind == .cache })
        #expect(r.bytesRead == 10_000)
        // It was replaced by a good one.
        let again = try await Archiver().run(options: options, keys: keys.write, target: repo, now: now)
        #expect(again.bytesRead == 0 && again.warnings.isEmpty)
        // Garbage and a cache for other keys are ignored too.
        try Fixture.write(cache, Array("not a cache at all".utf8))
        #expect(try await Archiver().run(options: options, keys: keys.write, target: repo, now: now).warnings.contains {
            $0.kind == .cache
        })
        let other = try TestKeys()
        _ = try await Archiver().run(options: options, keys: keys.write, target: repo, now: now)
        let foreign = try await Archiver().run(options: options, keys: other.write,
            target: MemoryRepository(keys: other.write), now: now)
        #expect(foreign.warnings.contains { $0.kind == .cache && $0.message.contains("another tenant") })
        #expect(foreign.bytesRead == 10_000)
    }

    @Test func restoresASubpath() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("subpath")
        defer { Fixture.remove(work) }
        let src = work + "/src"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        _ = try Fixture.everyKind(at: src, bigFile: 1 << 20)
        let repo = MemoryRepository(keys: keys.write)
        let result = try await Archiver().run(options: BackupOptions(paths: [src]), keys: keys.write, target: repo,
            now: now)
        let dst = work + "/dst"
        let r = try await restore(result.manifest, keys, from: repo, to: dst, subpath: src + "/a/b")
        #expect(try Fixture.compare(src + "/a/b", dst + src + "/a/b") == [])
        // b and its subdirectory, and the directories on the way (tmp, the work directory, src, a).
        #expect(r.files == 1 && r.directories == 2 + 4)
        // A hard link whose first name is outside the subpath becomes a copy of that file.
        let dst2 = work + "/dst2"
        _ = try await restore(result.manifest, keys, from: repo, to: dst2, subpath: src + "/a")
        #expect(try Fixture.read(Array((dst2 + src + "/a/hard2").utf8)) == Fixture.read(Array((src + "/hard1").utf8)))
        // A single file, named below the snapshot root as `ls` shows it.
        let dst3 = work + "/dst3"
        _ = try await restore(result.manifest, keys, from: repo, to: dst3,
                              subpath: String(src.dropFirst()) + "/regular.txt")
        #expect(try Fixture.compare(src + "/regular.txt", dst3 + src + "/regular.txt") == [])
        await #expect(throws: ArchiveError.self) {
            _ = try await restore(result.manifest, keys, from: repo, to: work + "/dst4", subpath: src + "/nope")
        }
        #expect(access(work + "/dst4" + src, F_OK) != 0, "nothing is written for a path that is not there")
    }

    @Test func excludedEntriesAreLeftOut() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("exclude")
        defer { Fixture.remove(work) }
        let src = work + "/src"
        for d in ["src", "src/cache", "src/keep"] { try Fixture.check(mkdir(work + "/" + d, 0o755), "mkdir") }
        try Fixture.write(src + "/cache/big", Fixture.text(1000))
        try Fixture.write(src + "/keep/a.tmp", Fixture.text(10))
        try Fixture.write(src + "/keep/b.txt", Fixture.text(10))
        let repo = MemoryRepository(keys: keys.write)
        let r = try await Archiver().run(options: BackupOptions(paths: [src], excludes: ["*.tmp", src + "/cache"]),
            keys: keys.write, target: repo, now: now)
        #expect(r.statistics.files == 1 && r.statistics.directories == 2 + 2)
        let dst = work + "/dst"
        _ = try await restore(r.manifest, keys, from: repo, to: dst)
        #expect(access(dst + src + "/keep/b.txt", F_OK) == 0)
        #expect(access(dst + src + "/keep/a.tmp", F_OK) != 0)
        #expect(access(dst + src + "/cache", F_OK) != 0)
    }

    @Test func fileChangingDuringTheReadIsReported() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("changing")
        defer { Fixture.remove(work) }
        let src = work + "/src"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        try Fixture.write(src + "/log", Fixture.text(5000))
        try Fixture.write(src + "/calm", Fixture.text(4000))
        let path = Array((src + "/log").utf8)
        let appendOnce = ArchiverTestHooks(afterFileRead: { p, attempt in
            if p == path && attempt == 1 { try? Fixture.write(p, Fixture.text(6000, seed: "new\n")) }
        })
        let repo = MemoryRepository(keys: keys.write)
        let cache = work + "/cache"
        let once = try await Archiver(hooks: appendOnce).run(options: BackupOptions(paths: [src], cachePath: cache),
            keys: keys.write, target: repo, now: now)
        #expect(once.warnings.isEmpty, "one change: read again, consistent, no warning")
        #expect(once.bytesRead == 5000 + 6000 + 4000)
        let dst = work + "/dst"
        _ = try await restore(once.manifest, keys, from: repo, to: dst)
        #expect(try Fixture.read(Array((dst + src + "/log").utf8)) == Fixture.text(6000, seed: "new\n"))

        let counter = Mutex(0)
        let always = ArchiverTestHooks(afterFileRead: { p, _ in
            guard p == path else { return }
            let n = counter.withLock { $0 += 1; return $0 }
            try? Fixture.write(p, Fixture.text(6000 + n, seed: "again\n"))
        })
        let cache2 = work + "/cache2"
        let twice = try await Archiver(hooks: always).run(options: BackupOptions(paths: [src], cachePath: cache2),
            keys: keys.write, target: repo, now: now)
        let w = twice.warnings.filter { $0.kind == .changedWhileReading }
        #expect(w.count == 1 && w.first?.path == path)
        #expect(w.first?.description.contains("log") == true)
        // A file that kept changing is not trusted from the cache next time.
        let next = try await Archiver().run(options: BackupOptions(paths: [src], cachePath: cache2), keys: keys.write,
            target: repo, now: now)
        #expect(next.filesChanged + next.filesNew == 1 && next.filesUnchanged == 1)
    }

    @Test func plainTargetStillProducesARestorableSnapshot() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("plain")
        defer { Fixture.remove(work) }
        let src = work + "/src"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        try Fixture.write(src + "/f", Fixture.text(70_000))
        let repo = MemoryRepository(keys: keys.write)
        _ = try await Archiver().run(options: BackupOptions(paths: [src]), keys: keys.write, target: repo, now: now)
        let r = try await Archiver().run(options: BackupOptions(paths: [src]), keys: keys.write,
            target: PlainTarget(repository: repo), now: now)
        #expect(r.warnings.contains { $0.message.contains("cannot say which packs") })
        let dst = work + "/dst"
        _ = try await restore(r.manifest, keys, from: PlainSource(repository: repo), to: dst)
        #expect(try Fixture.compare(src, dst + src) == [])
    }

    @Test func tamperedPackFailsTheRestoreNamingThePack() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("tamper")
        defer { Fixture.remove(work) }
        let src = work + "/src"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        try Fixture.write(src + "/big", try Fixture.random(3 << 20))
        try Fixture.write(src + "/small", Fixture.text(1000))
        let repo = MemoryRepository(keys: keys.write)
        // Small packs: the big file's data lands in packs of its own.
        let result = try await Archiver().run(options: BackupOptions(paths: [src], workers: 1, packSize: 256 << 10),
            keys: keys.write, target: repo, now: now)
        let packs = await repo.packs
        let reader = try SnapshotReader(manifest: result.manifest, readKey: keys.tenant.readKey,
            chunkIDKey: keys.tenant.chunkIDKey) {
            packs[$0]!
        }
        let top = try Self.tree(at: src, reader)
        let big = try #require(top[Array("big".utf8)])
        let victim = try #require(await repo.chunkIndex[big.content[0]])
        await repo.tamper(victim)

        for source in [repo as any PackSource, PlainSource(repository: repo)] {
            do {
                _ = try await restore(result.manifest, keys, from: source, to: work + "/dst-\(UUIDish.next())")
                Issue.record("restore of a tampered pack succeeded")
            } catch let e as CoreError {
                #expect(e.isIntegrityFailure)
                #expect(e.object.contains(victim.description), "\(e)")
            }
        }
        // With skipDamaged the damaged file is listed, the rest restored.
        let dst = work + "/skip"
        let r = try await restore(result.manifest, keys, from: repo, to: dst, skipDamaged: true)
        #expect(r.damaged.map(\.path) == [Array((src + "/big").utf8.dropFirst())])
        #expect(r.damaged.first?.error.object.contains(victim.description) == true)
        #expect(try Fixture.read(Array((dst + src + "/small").utf8)) == Fixture.text(1000))
    }

    /// Keys, a work directory with an empty `src`, and hooks for 4/16/64 KiB chunks (many
    /// chunks and packs from little data).
    func smallChunkSetup(_ name: String) throws -> (TestKeys, String, String, ArchiverTestHooks) {
        let work = try Fixture.tempDirectory(name)
        let src = work + "/src"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        return (try TestKeys(), work, src, ArchiverTestHooks(chunkerParameters: try Chunker.Parameters(min: 4 << 10,
            avg: 16 << 10, max: 64 << 10)))
    }

    final class Counter: Sendable {
        let value = Atomic<Int>(0)
    }

    /// Format 2 seals a chunk before asking the repository about it; a changed file's
    /// unchanged chunks are named from the metadata cache (keyed plaintext hash → ID and
    /// seal) instead of being compressed and sealed again, and the snapshot restores exactly.
    @Test func aChangedFilesUnchangedChunksAreNamedFromTheCacheNotSealedAgain() async throws {
        let (keys, work, src, small) = try smallChunkSetup("reseal")
        defer { Fixture.remove(work) }
        let skipped = Counter()
        var hooks = small
        hooks.sealSkipped = { skipped.value.wrappingAdd(1, ordering: .relaxed) }
        let options = BackupOptions(paths: [src], cachePath: work + "/cache.bin", workers: 1, packSize: 64 << 10)
        let data = try Fixture.random(1 << 20)
        try Fixture.write(src + "/big", data)
        let repo = MemoryRepository(keys: keys.write)
        let first = try await Archiver(hooks: hooks).run(options: options, keys: keys.write, target: repo, now: now)
        #expect(skipped.value.load(ordering: .relaxed) == 0)
        try Fixture.write(src + "/big", data + (try Fixture.random(5000)))
        let second = try await Archiver(hooks: hooks).run(options: options, keys: keys.write, target: repo, now: now)
        #expect(second.filesChanged == 1)
        let named = skipped.value.load(ordering: .relaxed)
        #expect(named >= first.statistics.chunksNew / 2, "only \(named) chunks named from the cache")
        #expect(second.statistics.chunksNew <= 4 + Self.treesAbove(src),
            "the tail and the trees are new, nothing else")
        let dst = work + "/dst"
        _ = try await restore(second.manifest, keys, from: repo, to: dst)
        #expect(try Fixture.compare(src, dst + src) == [])
    }

    /// An unchanged directory's tree is named from the metadata cache (its keyed hash), not
    /// compressed and sealed again; a changed one is sealed, and the snapshot restores exactly.
    @Test func unchangedTreesAreNamedFromTheCacheNotSealedAgain() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("trees")
        defer { Fixture.remove(work) }
        let src = work + "/src"
        for d in ["", "/a", "/a/b", "/c"] { try Fixture.check(mkdir(src + d, 0o755), "mkdir") }
        for d in ["", "/a", "/a/b", "/c"] {
            try Fixture.write(src + d + "/f", Fixture.text(100, seed: "file in \(d)\n"))
        }
        let skipped = Counter()
        var hooks = ArchiverTestHooks()
        hooks.sealSkipped = { skipped.value.wrappingAdd(1, ordering: .relaxed) }
        let cache = work + "/cache"
        let options = BackupOptions(paths: [src], cachePath: cache)
        let repo = MemoryRepository(keys: keys.write)
        _ = try await Archiver(hooks: hooks).run(options: options, keys: keys.write, target: repo, now: now)
        #expect(skipped.value.load(ordering: .relaxed) == 0)
        let (cached, _) = MetadataCache.load(path: cache, chunkIDKey: keys.tenant.chunkIDKey)
        #expect(cached.trees.count >= 4, "src's four trees and those above it")

        let second = try await Archiver(hooks: hooks).run(options: options, keys: keys.write, target: repo, now: now)
        #expect(second.filesUnchanged == 4 && second.statistics.chunksNew <= Self.treesAbove(src))
        #expect(skipped.value.load(ordering: .relaxed) >= 4, "src's four trees named from the cache")

        // One file changes: its tree and those above it are new; the others are named.
        skipped.value.store(0, ordering: .relaxed)
        try Fixture.write(src + "/a/b/f", Fixture.text(200, seed: "changed"))
        let third = try await Archiver(hooks: hooks).run(options: options, keys: keys.write, target: repo, now: now)
        #expect(third.filesChanged == 1)
        #expect(skipped.value.load(ordering: .relaxed) >= 1, "c's tree named from the cache")
        let dst = work + "/dst"
        _ = try await restore(third.manifest, keys, from: repo, to: dst)
        #expect(try Fixture.compare(src, dst + src) == [])
    }

    @Test func restoreWritesChunksWhoseOffsetsAreLearnedLater() async throws {
        // A chunk that recurs in a file after chunks from packs that come later in the
        // restore's pack order: its second offset is unknown when its pack is opened, so
        // the restore must hold it back (spill) and write it once the lengths are known.
        let (keys, work, src, small) = try smallChunkSetup("order")
        defer { Fixture.remove(work) }
        let options = BackupOptions(paths: [src], workers: 1, packSize: 64 << 10)
        let middle = try Fixture.random(256 << 10)
        let repo = MemoryRepository(keys: keys.write)
        try Fixture.write(src + "/1-middle", middle)
        _ = try await Archiver(hooks: small).run(options: options, keys: keys.write, target: repo, now: now)
        let zeros = [UInt8](repeating: 0, count: 512 << 10)
        let tail = try Fixture.random(100_000)
        try Fixture.write(src + "/0-sandwich", zeros + middle + zeros + tail)
        let r = try await Archiver(hooks: small).run(options: options, keys: keys.write, target: repo, now: now)
        let packs = await repo.packs
        let reader = try SnapshotReader(manifest: r.manifest, readKey: keys.tenant.readKey,
            chunkIDKey: keys.tenant.chunkIDKey) {
            packs[$0]!
        }
        let top = try Self.tree(at: src, reader)
        let sandwich = try #require(top[Array("0-sandwich".utf8)])
        #expect(sandwich.content.count > 20 && Set(sandwich.content).count < sandwich.content.count,
            "the zero chunk recurs")
        let dst = work + "/dst"
        let restored = try await restore(r.manifest, keys, from: repo, to: dst)
        #expect(try Fixture.compare(src, dst + src) == [])
        #expect(await repo.fetches.values.allSatisfy { $0 == 1 })
        #expect(restored.packsFetched == Set(r.manifest.header.packs).count)
    }

    @Test func packsPreparedInManySmallBatchesRestoreTheSame() async throws {
        // A budget of one byte makes every chunk its own batch: each pack is fetched and
        // opened once and its chunks prepared across many batches, interleaved with the
        // next packs' first batches.
        let (keys, work, src, small) = try smallChunkSetup("batches")
        defer { Fixture.remove(work) }
        let options = BackupOptions(paths: [src], workers: 1, packSize: 256 << 10)
        var text: [UInt8] = []
        for i in 0..<40_000 { text += Array("line \(i) of a file that compresses well\n".utf8) }
        try Fixture.write(src + "/text", text)
        try Fixture.write(src + "/random", try Fixture.random(700_000))
        let zeros = [UInt8](repeating: 0, count: 300 << 10)
        try Fixture.write(src + "/repeats", zeros + (try Fixture.random(50_000)) + zeros)
        let repo = MemoryRepository(keys: keys.write)
        let r = try await Archiver(hooks: small).run(options: options, keys: keys.write, target: repo, now: now)
        #expect(r.manifest.header.packs.count > 3)
        for source in [repo as any PackSource, PlainSource(repository: repo)] {
            await repo.resetCounters()
            let dst = work + "/dst-\(source is PlainSource ? "plain" : "catalog")"
            let restored = try await Restorer(batchPlaintextBudget: 1).restore(manifest: r.manifest,
                readKey: keys.tenant.readKey,
                                                                             chunkIDKey: keys.tenant.chunkIDKey,
                                                                                 source: source, target: dst)
            #expect(try Fixture.compare(src, dst + src) == [])
            #expect(restored.damaged.isEmpty && restored.warnings.isEmpty, "\(restored.damaged) \(restored.warnings)")
            #expect(await repo.fetches.values.allSatisfy { $0 == 1 }, "a pack split into batches is fetched once")
        }
    }

    @Test func comparerSeesEveryKindOfDifference() throws {
        let work = try Fixture.tempDirectory("compare")
        defer { Fixture.remove(work) }
        for d in ["a", "b"] {
            try Fixture.check(mkdir(work + "/" + d, 0o755), "mkdir")
            try Fixture.write(work + "/\(d)/f", Fixture.text(100))
            try Fixture.write(work + "/\(d)/g", Fixture.text(100))
            try Fixture.check(symlink("f", work + "/\(d)/l"), "symlink")
        }
        try Fixture.setTimes(Array((work + "/a").utf8), atime: now, mtime: now)
        try Fixture.setTimes(Array((work + "/b").utf8), atime: now, mtime: now)
        try Fixture.setTimes(Array((work + "/a/f").utf8), atime: now, mtime: now)
        try Fixture.setTimes(Array((work + "/b/f").utf8), atime: now, mtime: Timestamp(seconds: now.seconds,
            nanoseconds: 43))
        try Fixture.check(chmod(work + "/b/g", 0o600), "chmod")
        try Fixture.setXattr(work + "/b/g", "user.x", [1])
        try Fixture.write(work + "/b/g", Fixture.text(100, seed: "other"), mode: 0o600)
        let diffs = try Fixture.compare(work + "/a", work + "/b", compareDirectoryTimes: false)
        let text = diffs.joined(separator: "\n")
        #expect(text.contains("./f: mtime"))
        #expect(text.contains("./g: mode"))
        #expect(text.contains("./g: xattrs"))
        #expect(text.contains("./g: contents differ"))
    }
}

enum UUIDish {
    static let counter = Atomic<Int>(0)
    static func next() -> Int { counter.wrappingAdd(1, ordering: .relaxed).newValue }
}

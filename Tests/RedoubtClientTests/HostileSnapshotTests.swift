import Foundation
import Glibc
@testable import RedoubtClient
import RedoubtCore
import Testing

/// Snapshots built with Core APIs and signed with a valid host key, whose trees try to
/// make a restore write or link outside its target.
@Suite struct HostileSnapshotTests {
    /// Builds, uploads and signs a snapshot whose root tree is `root(pipeline)`.
    func snapshot(_ keys: TestKeys, _ repo: MemoryRepository,
        _ root: (PackPipeline) throws -> [Node]) async throws -> Manifest {
        let pipeline = try PackPipeline(material: keys.tenant.sharedWriteMaterial)
        let rootIDs = try pipeline.add(tree: Tree(nodes: try root(pipeline)))
        let packs = try pipeline.flush()
        for p in packs { try await repo.store(p) }
        var rng = SystemRandomNumberGenerator()
        let header = ManifestHeader(tenant: keys.write.tenant, readKeyID: keys.write.shared.readPublicKey.keyID,
            host: keys.write.host,
                                    hostKey: keys.write.signingKey.publicKey, time: Timestamp(seconds: 1),
                                        nonce: (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) },
                                    paths: [], tags: [], statistics: SnapshotStatistics(), packs: packs.map(\.id),
                                        clientVersion: "hostile")
        let m = try Manifest.create(header: header, root: rootIDs, rootSeals: pipeline.seals(for: rootIDs),
                                    readPublicKey: keys.write.shared.readPublicKey, signingKey: keys.write.signingKey)
        try await repo.commit(manifest: m)
        return m
    }

    func restore(_ m: Manifest, _ keys: TestKeys, _ repo: MemoryRepository,
        to target: String) async throws -> RestoreResult {
        try await Restorer().restore(manifest: m, readKey: keys.tenant.readKey, chunkIDKey: keys.tenant.chunkIDKey,
            source: repo, target: target)
    }

    /// A pack whose index names a chunk twice is read at the chunk's first place, for trees
    /// and contents alike (one index helper serves both).
    @Test func aChunkNamedTwiceInAPackIsReadAtItsFirstPlace() throws {
        let keys = try TestKeys()
        let pipeline = try PackPipeline(material: keys.tenant.sharedWriteMaterial, remembersChunks: false)
        let ids = try [Array("first".utf8), Array("second".utf8), Array("first".utf8)].map { data in
            try data.withUnsafeBytes { try pipeline.add(chunk: $0) }
        }
        let packs = try pipeline.flush()
        try #require(packs.count == 1)
        let opened = try PackReader.open(packs[0].bytes, expectedID: packs[0].id, readKey: keys.tenant.readKey)
        #expect(opened.entries.map(\.chunkID) == ids, "the pack's index names the first chunk twice")
        let positions = opened.positions()
        #expect(positions.count == 2 && positions[ids[0]] == 0 && positions[ids[1]] == 1)
    }

    static func file(_ p: PackPipeline, _ name: String, _ data: String) throws -> Node {
        Node(name: Array(name.utf8), type: .file, mode: 0o644, size: UInt64(data.utf8.count),
            content: try p.add(blob: Array(data.utf8)))
    }

    static func symlink(_ name: String, to target: String) -> Node {
        Node(name: Array(name.utf8), type: .symlink, mode: 0o777, linkTarget: Array(target.utf8))
    }

    @Test func symlinkThenDirectoryOfTheSameNameCannotWriteOutside() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("hostile")
        defer { Fixture.remove(work) }
        let outside = work + "/outside"
        try Fixture.check(mkdir(outside, 0o755), "mkdir")
        let repo = MemoryRepository(keys: keys.write)
        // Snapshot A plants a symlink "evil" → outside; snapshot B has a directory "evil"
        // with a file in it. Restoring B over A must not follow the symlink.
        let a = try await snapshot(keys, repo) { _ in [Self.symlink("evil", to: outside)] }
        let b = try await snapshot(keys, repo) { p in
            let inner = try p.add(tree: Tree(nodes: [try Self.file(p, "pwned", "gotcha")]))
            return [Node(name: Array("evil".utf8), type: .directory, mode: 0o755, subtree: inner)]
        }
        let target = work + "/target"
        _ = try await restore(a, keys, repo, to: target)
        #expect(ArchiveSys.readlinkat(ArchiveSys.atFDCWD, Array((target + "/evil").utf8), sizeHint: 64).isSuccess)
        _ = try await restore(b, keys, repo, to: target)
        #expect(access(outside + "/pwned", F_OK) != 0, "the restore wrote through a symlink")
        #expect(try Fixture.read(Array((target + "/evil/pwned").utf8)) == Array("gotcha".utf8))

        // The same with a file: a symlink "f" → outside/victim, then a file "f".
        try Fixture.write(outside + "/victim", Array("original".utf8))
        let c = try await snapshot(keys, repo) { _ in [Self.symlink("f", to: outside + "/victim")] }
        let d = try await snapshot(keys, repo) { p in [try Self.file(p, "f", "overwritten?")] }
        _ = try await restore(c, keys, repo, to: target)
        _ = try await restore(d, keys, repo, to: target)
        #expect(try Fixture.read(Array((outside + "/victim").utf8)) == Array("original".utf8))
        #expect(try Fixture.read(Array((target + "/f").utf8)) == Array("overwritten?".utf8))
    }

    @Test func hardLinkThroughASymlinkIsRefused() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("hostile-link")
        defer { Fixture.remove(work) }
        let outside = work + "/outside"
        try Fixture.check(mkdir(outside, 0o755), "mkdir")
        try Fixture.write(outside + "/victim", Array("secret".utf8))
        let repo = MemoryRepository(keys: keys.write)
        // "x" → outside, and hard links whose (safe, relative) targets go through "x" or
        // name a directory: link(2) would otherwise pull outside/victim into the restore.
        let m = try await snapshot(keys, repo) { p in
            let sub = try p.add(tree: Tree(nodes: [try Self.file(p, "inside", "ok")]))
            return [Self.symlink("x", to: outside),
                    Node(name: Array("h".utf8), type: .hardlink, mode: 0o644, linkTarget: Array("x/victim".utf8)),
                    Node(name: Array("d".utf8), type: .directory, mode: 0o755, subtree: sub),
                    Node(name: Array("h2".utf8), type: .hardlink, mode: 0o644, linkTarget: Array("d".utf8)),
                    Node(name: Array("h3".utf8), type: .hardlink, mode: 0o644, linkTarget: Array("d/inside".utf8))]
        }
        let target = work + "/target"
        let r = try await restore(m, keys, repo, to: target)
        #expect(access(target + "/h", F_OK) != 0)
        #expect(access(target + "/h2", F_OK) != 0)
        #expect(r.warnings.filter { $0.message.contains("hard link") }.count == 2)
        guard case .success(let v) = ArchiveSys.lstat(Array((outside + "/victim").utf8)) else {
            throw Fixture.Failure("lstat")
        }
        #expect(v.links == 1)
        // A proper hard link is made.
        guard case .success(let h3) = ArchiveSys.lstat(Array((target + "/h3").utf8)),
              case .success(let inside) = ArchiveSys.lstat(Array((target + "/d/inside").utf8)) else {
                  throw Fixture.Failure("lstat")
              }
        #expect(h3.inode == inside.inode)
    }

    @Test func fileWhoseChunksDisagreeWithItsSizeIsAnIntegrityError() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("hostile-size")
        defer { Fixture.remove(work) }
        let repo = MemoryRepository(keys: keys.write)
        let m = try await snapshot(keys, repo) { p in
            [Node(name: Array("short".utf8), type: .file, mode: 0o644, size: 3,
                content: try p.add(blob: Array("too long".utf8))),
             Node(name: Array("long".utf8), type: .file, mode: 0o644, size: 100,
                 content: try p.add(blob: Array("short".utf8)))]
        }
        do {
            _ = try await restore(m, keys, repo, to: work + "/t")
            Issue.record("restore accepted a file whose chunks exceed its size")
        } catch let e as CoreError {
            #expect(e.code == .corrupt && e.object.contains("file"))
        }
        let r = try await Restorer().restore(manifest: m, readKey: keys.tenant.readKey,
            chunkIDKey: keys.tenant.chunkIDKey, source: repo,
                                             target: work + "/t2", skipDamaged: true)
        #expect(Set(r.damaged.map(\.path)) == [Array("short".utf8), Array("long".utf8)])
    }

    /// A directory whose tree does not open with the seal its parent gives (a hostile
    /// writer's tree, or a damaged one), among forty that do: without `skipDamaged` the
    /// restore stops with an integrity error naming the chunk and its pack; with it, that
    /// directory is listed damaged by its path and everything else is restored. So is one
    /// whose "tree" is a file's chunk, and its error names the tree by its path.
    @Test func aTreeThatDoesNotOpenIsListedDamagedByItsPath() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("hostile-tree-seal")
        defer { Fixture.remove(work) }
        let repo = MemoryRepository(keys: keys.write)
        let m = try await snapshot(keys, repo) { p in
            func directory(_ name: String, _ nodes: [Node]) throws -> Node {
                let ids = try p.add(tree: Tree(nodes: nodes))
                var n = Node(name: Array(name.utf8), type: .directory, mode: 0o755, subtree: ids)
                n.subtreeSeals = p.seals(for: ids) ?? []
                return n
            }
            var top = try (0..<40).map { i in
                try directory(String(format: "d%02d", i), [try Self.file(p, "f", "file \(i)"),
                    try directory("inner", [try Self.file(p, "g", "inner \(i)")])])
            }
            // "d20x" sorts right after "d20": its tree's chunks, with another tree's seals.
            var bad = try directory("d20x", [try Self.file(p, "lost", "never restored")])
            bad.subtreeSeals = try directory("other", [try Self.file(p, "o", "other")]).subtreeSeals
            // "d30y" names a file's chunk, with its own seal, as its tree: it opens, but is no tree.
            let blob = try p.add(blob: Array("not a tree encoding".utf8))
            var notATree = Node(name: Array("d30y".utf8), type: .directory, mode: 0o755, subtree: blob)
            notATree.subtreeSeals = p.seals(for: blob) ?? []
            top += [bad, notATree]
            return top.sorted { $0.name.lexicographicallyPrecedes($1.name) }
        }
        do {
            _ = try await restore(m, keys, repo, to: work + "/t")
            Issue.record("a tree that does not open was restored")
        } catch let e as CoreError {
            #expect(e.isIntegrityFailure && e.object.hasPrefix("chunk "), "\(e)")
        }
        let r = try await Restorer().restore(manifest: m, readKey: keys.tenant.readKey,
            chunkIDKey: keys.tenant.chunkIDKey, source: repo, target: work + "/t2", skipDamaged: true)
        #expect(r.damaged.map(\.path) == [Array("d20x".utf8), Array("d30y".utf8)])
        #expect(r.damaged.first?.error.code == .authenticationFailed, "\(r.damaged)")
        #expect(r.damaged.last?.error.object.hasPrefix("tree of d30y in snapshot") == true, "\(r.damaged)")
        for i in 0..<40 {
            let d = work + "/t2/" + String(format: "d%02d", i)
            #expect(try Fixture.read(Array((d + "/f").utf8)) == Array("file \(i)".utf8))
            #expect(try Fixture.read(Array((d + "/inner/g").utf8)) == Array("inner \(i)".utf8))
        }
        #expect(r.files == 80)
    }

    /// A format-1 snapshot (lengths only in its packs' indexes) restores bit for bit when a
    /// file's later chunks sit in packs read before the packs of its earlier ones: `b`
    /// repeats `a` after new data, so its tail is in `a`'s packs, read first, while its head's
    /// lengths are still unknown.
    @Test func aFormatOneSnapshotRestoresWhenLengthsArriveLate() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("format-one")
        defer { Fixture.remove(work) }
        let repo = MemoryRepository(keys: keys.write)
        let pipeline = try PackPipeline(material: keys.tenant.sharedWriteMaterial, targetPackSize: 64 << 10,
            chunkerParameters: try Chunker.Parameters(min: 4 << 10, avg: 16 << 10, max: 64 << 10), packVersion: 1)
        let a = try Fixture.random(1 << 20), head = try Fixture.random(600 << 10)
        let files: [(String, [UInt8])] = [("a", a), ("b", head + a), ("empty", []), ("small", Array("s".utf8))]
        let nodes = try files.map { name, data in
            Node(name: Array(name.utf8), type: .file, mode: 0o644, size: UInt64(data.count),
                 content: try pipeline.add(blob: data))
        }
        let root = try pipeline.add(tree: Tree(nodes: nodes))
        let packs = try pipeline.flush()
        try #require(packs.count > 10, "\(packs.count) packs")
        for p in packs { try await repo.store(p) }
        let header = ManifestHeader(tenant: keys.write.tenant, readKeyID: keys.write.shared.readPublicKey.keyID,
            host: keys.write.host, hostKey: keys.write.signingKey.publicKey, time: Timestamp(seconds: 1),
            nonce: [UInt8](repeating: 1, count: 16), paths: [], tags: [], statistics: SnapshotStatistics(),
            packs: packs.map(\.id), clientVersion: "format-1 client")
        let m = try Manifest.create(header: header, root: root, readPublicKey: keys.write.shared.readPublicKey,
                                    signingKey: keys.write.signingKey)
        try #require(m.version == 1)
        try await repo.commit(manifest: m)
        // From a source that locates chunks, and from one that does not (every pack opened first).
        for source in [repo as any PackSource, PlainSource(repository: repo)] {
            let target = work + "/t-\(UUIDish.next())"
            let r = try await Restorer().restore(manifest: m, readKey: keys.tenant.readKey,
                chunkIDKey: keys.tenant.chunkIDKey, source: source, target: target)
            #expect(r.files == 4 && r.damaged.isEmpty)
            for (name, data) in files {
                #expect(try Fixture.read(Array((target + "/" + name).utf8)) == data, "\(name) came back changed")
            }
        }
    }
}

extension SysResult {
    var isSuccess: Bool { if case .success = self { true } else { false } }
}

@Suite struct MetadataCacheTests {
    let key = ChunkIDKey.generate()

    func sample() -> MetadataCache {
        var c = MetadataCache()
        c[Array("/a/b".utf8)] = .init(size: 10, mtime: Timestamp(seconds: 1, nanoseconds: 2),
            ctime: Timestamp(seconds: -3, nanoseconds: 4),
                                      inode: 5, device: 6, content: [key.chunkID(for: [1, 2, 3])], dataRegions: nil)
        c[[0x2f, 0xff]] = .init(size: 1 << 30, mtime: Timestamp(seconds: 7), ctime: Timestamp(seconds: 8), inode: 9,
            device: 10,
                                content: [], dataRegions: [Extent(offset: 4096, length: 8192)])
        return c
    }

    @Test func roundTripsAndIsCanonical() throws {
        var c = sample()
        var e = MetadataCache.Entry(size: 3, mtime: Timestamp(seconds: 11), ctime: Timestamp(seconds: 12), inode: 13,
                                    device: 14, content: [], dataRegions: nil)
        e.xattrs = [ExtendedAttribute(name: Array("user.a".utf8), value: [0, 255]),
                    ExtendedAttribute(name: Array("user.b".utf8), value: [])]
        c[Array("/x".utf8)] = e
        e.xattrs = []
        c[Array("/y".utf8)] = e
        let seal = try #require(ChunkSeal(key: Array(repeating: 7, count: 32), rawLength: 99))
        // Four chunks in two packs, one of them in a pack not known when it was stored; tree
        // chunks in a third pack, in one of the files' and in none known.
        let (p1, p2, p3) = (try #require(PackID(bytes: Array(repeating: 1, count: 32))),
                            try #require(PackID(bytes: Array(repeating: 2, count: 32))),
                            try #require(PackID(bytes: Array(repeating: 3, count: 32))))
        c.trees = [MetadataCache.TreeChunk(mac: key.chunkID(for: [1]), id: key.chunkID(for: [2]), seal: seal,
                                           pack: p3),
                   MetadataCache.TreeChunk(mac: key.chunkID(for: [3]), id: key.chunkID(for: [4]), seal: seal,
                                           pack: p1),
                   MetadataCache.TreeChunk(mac: key.chunkID(for: [5]), id: key.chunkID(for: [6]), seal: seal)]
        var packed = MetadataCache.Entry(size: 9, mtime: Timestamp(seconds: 1), ctime: Timestamp(seconds: 2), inode: 3,
                                         device: 4, content: [1, 2, 3, 4].map { key.chunkID(for: [$0]) },
                                         dataRegions: nil)
        packed.contentPacks = [p2, nil, p1, p2]
        c[Array("/z".utf8)] = packed
        let bytes = c.encode(chunkIDKey: key)
        let back = try MetadataCache.decode(bytes, chunkIDKey: key)
        #expect(back.entries == c.entries && back.trees == c.trees)
        #expect(back[Array("/z".utf8)]?.contentPacks == [p2, nil, p1, p2] && back.packs == [p2, p1, p3])
        #expect(back.trees.map(\.pack) == [p3, p1, nil])
        #expect(back[Array("/x".utf8)]?.xattrs?.count == 2 && back[Array("/y".utf8)]?.xattrs == [])
        #expect(back[Array("/a/b".utf8)] != nil && back[Array("/a/b".utf8)]?.xattrs == nil)
        #expect(back.encode(chunkIDKey: key) == bytes)
    }

    @Test func rejectsDamageTruncationAndOtherKeys() throws {
        let bytes = sample().encode(chunkIDKey: key)
        for i in stride(from: 0, to: bytes.count, by: 7) {
            var b = bytes
            b[i] ^= 0x40
            #expect(throws: MetadataCache.Unusable.self) { try MetadataCache.decode(b, chunkIDKey: key) }
        }
        for n in [0, 10, bytes.count - 1] {
            #expect(throws: MetadataCache.Unusable.self) {
                try MetadataCache.decode(Array(bytes.prefix(n)), chunkIDKey: key)
            }
        }
        #expect(throws: MetadataCache.Unusable.self) {
            try MetadataCache.decode(bytes, chunkIDKey: ChunkIDKey.generate())
        }
    }

    /// `body` with its SHA-256 appended: the cache's own checksum, for hand-made files.
    func sealed(_ body: [UInt8]) -> [UInt8] {
        var h = SHA256Stream()
        h.update(body)
        return body + h.finalize()
    }

    /// The sample's version-5 bytes cut into header (version field at 8..<10), entries
    /// and trailer (end byte, a one-byte count, zero tree and pack counts, checksum).
    func parts() -> (header: [UInt8], entries: [UInt8]) {
        let bytes = sample().encode(chunkIDKey: key)
        let header = Array(bytes[0..<42])
        return (header, Array(bytes[42..<(bytes.count - 32 - 4)]))
    }

    /// The sample's entries as an older version wrote them, sorted by path: each as version
    /// 5 writes it without its last byte, the zero pack count the sample's entries have
    /// (version 4), and without the "attributes unknown" flag before it (versions 2 and 3).
    func olderEntries(version: UInt8) -> [UInt8] {
        var out: [UInt8] = []
        for (path, entry) in sample().entries.sorted(by: { bytesPrecede($0.key, $1.key) }) {
            let one = MetadataCache(entries: [path: entry]).encode(chunkIDKey: key)
            let encoded = one[42..<(one.count - 32 - 4)]
            #expect(encoded.suffix(2) == [0, 0])
            out += encoded.dropLast(version >= 4 ? 1 : 2)
        }
        return out
    }

    func entriesWithoutAttributes() -> [UInt8] { olderEntries(version: 3) }

    @Test func aVersionFourCacheIsReadWithPacksUnknown() throws {
        var (v4, _) = parts()
        v4[8] = 4
        let bytes = sealed(v4 + olderEntries(version: 4) + [0, UInt8(sample().count), 0])
        let back = try MetadataCache.decode(bytes, chunkIDKey: key)
        #expect(back.entries == sample().entries && back.packs.isEmpty)
        #expect(back.entries.values.allSatisfy { $0.contentPacks.isEmpty })
    }

    @Test func aVersionTwoCacheIsStillRead() throws {
        let (header, _) = parts()
        #expect(header[8] == 5 && header[9] == 0)
        var v2 = header
        v2[8] = 2
        // Version 2: the count before the entries (sorted by path, as the sample's are), no end byte.
        let bytes = sealed(v2 + [UInt8(sample().count)] + entriesWithoutAttributes())
        let back = try MetadataCache.decode(bytes, chunkIDKey: key)
        #expect(back.entries == sample().entries)
    }

    @Test func aVersionThreeCacheIsReadWithAttributesUnknown() throws {
        var (v3, _) = parts()
        v3[8] = 3
        let bytes = sealed(v3 + entriesWithoutAttributes() + [0, UInt8(sample().count)])
        let back = try MetadataCache.decode(bytes, chunkIDKey: key)
        #expect(back.entries == sample().entries)
        #expect(back.entries.values.allSatisfy { $0.xattrs == nil })
        // A version-3 cache changed in memory is rewritten whole in the current version.
        var changed = back
        changed[Array("/new".utf8)] = sample()[Array("/a/b".utf8)]
        #expect(changed.count == 3 && changed[Array("/a/b".utf8)] == sample()[Array("/a/b".utf8)])
        #expect(try MetadataCache.decode(changed.encode(chunkIDKey: key), chunkIDKey: key).entries == changed.entries)
    }

    @Test func anEntryWhoseValuesDoNotParseCountsAsNotCached() throws {
        var bytes = sample().encode(chunkIDKey: key)
        // "/a/b" comes first: header 42, path length 1, path 4, size 1, mtime seconds 8, then
        // its nanoseconds, made larger than a second. The checksum is made right again.
        #expect(Array(bytes[43..<47]) == Array("/a/b".utf8))
        for i in 56..<60 { bytes[i] = 0xff }
        let tampered = sealed(Array(bytes.dropLast(32)))
        let back = try MetadataCache.decode(tampered, chunkIDKey: key)
        #expect(back[Array("/a/b".utf8)] == nil)
        #expect(back[[0x2f, 0xff]] == sample()[[0x2f, 0xff]])
        #expect(back.entries.count == 1)
    }

    @Test func aPathListedTwiceOrAWrongCountIsRefused() throws {
        let (header, entries) = parts()
        let twice = sealed(header + entries + entries + [0, UInt8(2 * sample().count), 0, 0])
        #expect(throws: MetadataCache.Unusable.self) { try MetadataCache.decode(twice, chunkIDKey: key) }
        let miscounted = sealed(header + entries + [0, UInt8(sample().count + 1), 0, 0])
        #expect(throws: MetadataCache.Unusable.self) { try MetadataCache.decode(miscounted, chunkIDKey: key) }
        let right = sealed(header + entries + [0, UInt8(sample().count), 0, 0])
        #expect(try MetadataCache.decode(right, chunkIDKey: key).entries == sample().entries)
    }

    @Test func aWriterDroppedWithoutCommitLeavesTheOldCache() throws {
        let work = try Fixture.tempDirectory("mdc")
        defer { Fixture.remove(work) }
        let path = work + "/cache"
        try sample().write(to: path, chunkIDKey: key)
        do {
            let writer = try MetadataCacheWriter(path: path, chunkIDKey: key)
            try writer.append(path: Array("/other".utf8), sample()[Array("/a/b".utf8)]!)
        }
        let loaded = MetadataCache.load(path: path, chunkIDKey: key)
        #expect(loaded.problem == nil && loaded.cache.entries == sample().entries)
        let fd = open(work, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        guard case .success(let names) = ArchiveSys.listDirectory(fd: fd) else { throw Fixture.Failure("list") }
        #expect(names == [Array("cache".utf8)], "the unfinished cache is removed")
    }

    /// A cache of several read pieces and many windows, written in one order and looked up
    /// in others, as a backup whose files finished out of order would.
    @Test func aLoadedCacheIsReadFromItsFileInAnyOrder() throws {
        let work = try Fixture.tempDirectory("mdc")
        defer { Fixture.remove(work) }
        let path = work + "/cache"
        var rng = SystemRandomNumberGenerator()
        var c = MetadataCache()
        var order: [[UInt8]] = []
        for i in 0..<12_000 {
            let p = Array("/tree/\(i % 97)/file-\(i)".utf8)
            let chunks = (0..<(i % 7)).map { key.chunkID(for: [UInt8(i & 0xff), UInt8($0)]) }
            var e = MetadataCache.Entry(size: UInt64(i), mtime: Timestamp(seconds: Int64(i)),
                                        ctime: Timestamp(seconds: 1), inode: UInt64(i), device: 3, content: chunks,
                                        dataRegions: nil)
            e.contentSeals = chunks.map { _ in ChunkSeal(key: (0..<32).map { _ in rng.next() }, rawLength: 9)! }
            e.xattrs = []
            c[p] = e
            order.append(p)
        }
        let writer = try MetadataCacheWriter(path: path, chunkIDKey: key)
        for p in order { try writer.append(path: p, c[p]!) }
        try writer.commit()
        let bytes = [UInt8](try #require(FileManager.default.contents(atPath: path)))
        #expect(bytes.count > 2 * CacheFile.pieceSize, "the test needs a cache of several pieces: \(bytes.count)")

        let loaded = MetadataCache.load(path: path, chunkIDKey: key)
        #expect(loaded.problem == nil)
        // In order, then shuffled, then backwards: the same answers, and each entry's bytes as
        // the file holds them.
        for sequence in [order, order.shuffled(), order.reversed()] {
            for p in sequence {
                let found = try #require(loaded.cache.find(p), "\(String(decoding: p, as: UTF8.self))")
                #expect(found.entry == c[p])
                var w = ByteWriter()
                MetadataCache.writeEntry(&w, path: p, c[p]!)
                #expect(found.encoded.map(Array.init) == w.bytes)
            }
        }
        #expect(loaded.cache.entries == c.entries)
        // The activity section's pass over every entry, after the lookups moved the windows on.
        var files: [[UInt8]] = []
        loaded.cache.forEachFile { _, path, device, inode in
            if device == 3 && c[path]?.inode == inode { files.append(path) }
        }
        #expect(files == order)
        #expect(loaded.cache.find(Array("/tree/none".utf8)) == nil)

        // A byte changed in the last piece is caught by the checksum, however far from the start.
        var damaged = bytes
        damaged[damaged.count - 100] ^= 1
        try Data(damaged).write(to: URL(fileURLWithPath: path))
        #expect(MetadataCache.load(path: path, chunkIDKey: key).problem?.contains("checksum") == true)

        // Changed in place after it was loaded (no backup does that): its entries count as not
        // cached, so their files are read again, never taken from bytes no checksum covered.
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let again = MetadataCache.load(path: path, chunkIDKey: key)
        #expect(again.problem == nil && again.cache.find(order[0])?.entry == c[order[0]])
        let fd = open(path, O_WRONLY)
        #expect(fd >= 0)
        #expect(pwrite(fd, [0x55], 1, off_t(bytes.count / 2)) == 1)
        close(fd)
        #expect(again.cache.find(order[order.count - 1]) == nil)
    }

    @Test func writesAtomicallyAndLoads() throws {
        let work = try Fixture.tempDirectory("mdc")
        defer { Fixture.remove(work) }
        let path = work + "/cache"
        #expect(MetadataCache.load(path: path, chunkIDKey: key).problem == nil, "a missing cache is simply empty")
        try sample().write(to: path, chunkIDKey: key)
        try sample().write(to: path, chunkIDKey: key)
        let loaded = MetadataCache.load(path: path, chunkIDKey: key)
        #expect(loaded.problem == nil && loaded.cache.entries == sample().entries)
        guard case .success(let st) = ArchiveSys.lstat(Array(path.utf8)) else { throw Fixture.Failure("lstat") }
        #expect(st.permissions == 0o600)
        let fd = open(work, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        guard case .success(let names) = ArchiveSys.listDirectory(fd: fd) else { throw Fixture.Failure("list") }
        #expect(names == [Array("cache".utf8)], "no temporary files left behind")
    }
}

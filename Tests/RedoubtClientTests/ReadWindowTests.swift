import Glibc
@testable import RedoubtClient
import RedoubtCore
import Testing

/// The backup reads files through a buffer much smaller than a file; its chunks must still
/// be the ones the chunker cuts from the whole file at once (else nothing deduplicates
/// against snapshots made before the buffer changed).
@Suite struct ReadWindowTests {
    /// The chunk lengths of `data` cut in one piece.
    static func reference(_ data: [UInt8], _ chunker: Chunker) -> [Int] {
        data.withUnsafeBytes { raw in
            var out: [Int] = []
            var offset = 0
            while offset < raw.count {
                let rest = UnsafeRawBufferPointer(rebasing: raw[offset...])
                let len = chunker.cut(rest, final: true) ?? rest.count
                out.append(len)
                offset += len
            }
            return out
        }
    }

    @Test func chunksReadThroughTheWindowAreThoseOfTheWholeFile() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("window")
        defer { Fixture.remove(work) }
        let src = work + "/src"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        // Random data (cuts at the usual rate), a run of zeros (chunks of the maximum size,
        // longer than the read window) and text, each larger than the buffer.
        var mixed = try Fixture.random(6 << 20)
        mixed += [UInt8](repeating: 0, count: 19 << 20)
        mixed += Fixture.text(7 << 20)
        mixed += try Fixture.random(3 << 20 + 12_345)
        let files: [(String, [UInt8])] = [
            ("mixed", mixed), ("random", try Fixture.random(21 << 20 + 7)), ("small", try Fixture.random(700_000)),
        ]
        for (name, data) in files { try Fixture.write(src + "/" + name, data) }
        let repo = MemoryRepository(keys: keys.write)
        let result = try await Archiver().run(options: BackupOptions(paths: [src]), keys: keys.write, target: repo,
            now: Timestamp(seconds: 1_800_000_000, nanoseconds: 0))
        #expect(result.warnings.isEmpty, "\(result.warnings)")
        let packs = await repo.packs
        let reader = try SnapshotReader(manifest: result.manifest, readKey: keys.tenant.readKey,
            chunkIDKey: keys.tenant.chunkIDKey) { id in
            guard let p = packs[id] else { throw Fixture.Failure("no pack \(id)") }
            return p
        }
        let tree = try BackupRestoreTests.tree(at: src, reader)
        let chunker = Chunker(seed: keys.write.shared.chunkerSeed)
        for (name, data) in files {
            guard let node = tree[Array(name.utf8)] else { throw Fixture.Failure("\(name) not in the snapshot") }
            let lengths = node.contentSeals.map { Int($0.rawLength) }
            #expect(lengths == Self.reference(data, chunker), "\(name)")
            #expect(try reader.contents(of: node) == data, "\(name)")
        }
        #expect(Self.reference(mixed, chunker).contains(8 << 20), "the zeros make chunks of the maximum size")
    }
}

import Crypto
import Testing
@testable import RedoubtCore

/// Format 2 (docs/FORMAT.md §3.4): convergent sealing and the key-less checks it allows.
@Suite struct ConvergentSealTests {
    static func keys() throws -> TenantKeys {
        func secret(_ purpose: Int) -> SecretBytes {
            SecretBytes(copying: (0..<32).map { UInt8(truncatingIfNeeded: $0 * 13 + purpose * 71) })
        }
        return TenantKeys(readKey: try ReadPrivateKey(seed: secret(1)), chunkIDKey: try ChunkIDKey(secret: secret(2)),
                          chunkerSeed: try ChunkerSeed(secret: secret(3)))
    }

    static func text(_ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: ($0 * 7) % 26 + 97) } }

    /// One independent seal: a fresh compressor and scratch buffer, as another host would have.
    static func seal(_ data: [UInt8], _ key: ChunkIDKey) throws -> SealedChunk {
        var scratch: [UInt8] = []
        let compressor = try ChunkCompressor()
        return try data.withUnsafeBytes {
            try ConvergentSealing.seal($0, compressor: compressor, chunkIDKey: key, scratch: &scratch)
        }
    }

    static func open(_ sealed: [UInt8], _ id: ChunkID, _ seal: ChunkSeal) throws -> [UInt8] {
        let decompressor = try ChunkDecompressor()
        return try sealed.withUnsafeBytes {
            try ConvergentSealing.open($0, id: id, seal: seal, decompressor: decompressor, object: "c")
        }
    }

    @Test func twoIndependentSealsOfOnePayloadAreByteIdentical() throws {
        let keys = try Self.keys()
        for data in [Self.text(300_000), (0..<70_000).map { _ in UInt8.random(in: 0...255) }, []] {
            let a = try Self.seal(data, keys.chunkIDKey), b = try Self.seal(data, keys.chunkIDKey)
            #expect(a.bytes == b.bytes)
            #expect(a.id == b.id)
            #expect(a.seal == b.seal)
            #expect(a.id.bytes == Array(SHA256.hash(data: a.bytes)))
            #expect(try Self.open(a.bytes, a.id, a.seal) == data)
        }
    }

    @Test func anotherTenantsSealOfTheSameDataDiffers() throws {
        let a = try Self.keys(), b = try TenantKeys.generate()
        let data = Self.text(10_000)
        #expect(try Self.seal(data, a.chunkIDKey).id != Self.seal(data, b.chunkIDKey).id)
    }

    @Test func aWrongSealOrWrongBytesDoNotOpen() throws {
        let keys = try Self.keys()
        let data = Self.text(5_000)
        let a = try Self.seal(data, keys.chunkIDKey)
        let wrongKey = ChunkSeal(key: [UInt8](repeating: 1, count: 32), rawLength: a.seal.rawLength)!
        let e1 = #expect(throws: CoreError.self) { try Self.open(a.bytes, a.id, wrongKey) }
        #expect(e1?.code == .authenticationFailed)
        var flipped = a.bytes
        flipped[3] ^= 1
        let e2 = #expect(throws: CoreError.self) { try Self.open(flipped, a.id, a.seal) }
        #expect(e2?.code == .authenticationFailed)
        let wrongLength = ChunkSeal(key: a.seal.key, rawLength: a.seal.rawLength + 1)!
        let e3 = #expect(throws: CoreError.self) { try Self.open(a.bytes, a.id, wrongLength) }
        #expect(e3?.code == .corrupt)
    }

    /// A format-2 pack whose chunk bytes do not hash to the ID its public list gives is
    /// refused by the key-less inspection, naming the pack and the chunk, even though the
    /// pack's own hash is right (the attacker renamed it).
    @Test func inspectRefusesAChunkWhoseBytesDoNotHashToItsID() throws {
        let keys = try Self.keys()
        let p = try PackPipeline(material: keys.sharedWriteMaterial)
        let victim = try p.add(blob: Self.text(2_000))[0]
        let other = try p.add(blob: Self.text(3_000) + [1])[0]
        let pack = try p.flush()[0]
        #expect(try PackReader.inspect(pack.bytes, expectedID: pack.id).chunksVerified)
        // Rewrite the first list entry to claim another ID (the victim's future chunk).
        var bytes = pack.bytes
        let tail = Array(bytes.suffix(PackFormat.footerSize))
        let f = try PackFooter.parse(tail, packSize: bytes.count, headerLength: 0, object: "t")
        #expect(f.version == 2)
        let list = Int(f.indexOffset) + Int(f.indexLength)
        let forged = ChunkID(bytes: [UInt8](repeating: 0xab, count: 32))!
        bytes.replaceSubrange(list..<(list + 32), with: forged.bytes)
        let renamed = PackID(bytes: Array(SHA256.hash(data: bytes)))!
        let e = #expect(throws: CoreError.self) { try PackReader.inspect(bytes, expectedID: renamed) }
        #expect(e?.code == .authenticationFailed)
        #expect(e?.object.contains(forged.description) == true)
        #expect(e?.object.contains(renamed.description) == true)
        // Opening checks the same, so an opened pack's chunks need no hash check of their own
        // (`OpenedPack.chunk` relies on it).
        let opened = #expect(throws: CoreError.self) {
            try PackReader.open(bytes, expectedID: renamed, readKey: keys.readKey)
        }
        #expect(opened?.object.contains(forged.description) == true)
        // Garbage bytes under a true ID are refused as well.
        var garbage = pack.bytes
        let h = try PackHeader.parse(garbage, object: "t")
        garbage[h.length + 5] ^= 0xff
        let garbageID = PackID(bytes: Array(SHA256.hash(data: garbage)))!
        let e2 = #expect(throws: CoreError.self) { try PackReader.inspect(garbage, expectedID: garbageID) }
        #expect(e2?.object.contains(victim.description) == true)
        #expect(throws: CoreError.self) { try PackReader.open(garbage, expectedID: garbageID, readKey: keys.readKey) }
        _ = other
    }

    /// A snapshot written with format 2 reads back through the seals of its own trees and
    /// root, and reading it needs nothing from the packs' sealed indexes.
    @Test func aFormat2SnapshotReadsBackFromItsOwnSeals() throws {
        let keys = try Self.keys()
        let host = HostSigningKey.generate()
        let p = try PackPipeline(material: keys.sharedWriteMaterial, targetPackSize: 1 << 16)
        let data = Self.text(200_000)
        let file = Node(name: Array("f".utf8), type: .file, size: UInt64(data.count), content: try p.add(blob: data))
        let root = try p.add(tree: Tree(nodes: [file]))
        let packs = try p.flush()
        let header = ManifestHeader(tenant: "t", readKeyID: keys.readKey.publicKey.keyID, host: "h",
                                    hostKey: host.publicKey, time: Timestamp(seconds: 1),
                                    nonce: [UInt8](repeating: 1, count: 16), paths: [], tags: [],
                                    statistics: SnapshotStatistics(), packs: packs.map(\.id), clientVersion: "test")
        let m = try Manifest.create(header: header, root: root, rootSeals: p.seals(for: root),
                                    readPublicKey: keys.readKey.publicKey, signingKey: host)
        let parsed = try Manifest.parse(m.bytes)
        #expect(parsed.version == 2)
        let byID = Dictionary(uniqueKeysWithValues: packs.map { ($0.id, $0.bytes) })
        let reader = try SnapshotReader(manifest: parsed, readKey: keys.readKey, chunkIDKey: keys.chunkIDKey) {
            try #require(byID[$0])
        }
        let tree = try reader.rootTree()
        #expect(try reader.contents(of: tree.nodes[0]) == data)
        #expect(tree.nodes[0].contentSeals.count == tree.nodes[0].content.count)
    }
}

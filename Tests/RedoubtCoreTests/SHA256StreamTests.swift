import CRedoubtHash
import Crypto
import Testing
@testable import RedoubtCore

/// Our SHA-256 (CRedoubtHash: SHA extensions, two messages per loop, and the portable
/// code) must give swift-crypto's digests for every length and every way of splitting
/// the input, and the chunk IDs and pack IDs built on it must not change.
@Suite(.serialized) struct SHA256StreamTests {
    private func swiftCrypto(_ b: [UInt8]) -> [UInt8] { Array(SHA256.hash(data: b)) }

    /// Our C code through its own API (so the portable path can be forced).
    private func ours(_ parts: [[UInt8]]) -> [UInt8] {
        var ctx = redoubt_sha256_ctx()
        redoubt_sha256_init(&ctx)
        for p in parts { p.withUnsafeBytes { redoubt_sha256_update(&ctx, $0.baseAddress, $0.count) } }
        var out = [UInt8](repeating: 0, count: 32)
        redoubt_sha256_final(&ctx, &out)
        return out
    }

    /// Splits `b` at random points.
    private func split(_ b: [UInt8], _ rng: inout SplitMix64) -> [[UInt8]] {
        var parts: [[UInt8]] = [], at = 0
        while at < b.count {
            let n = min(b.count - at, Int(rng.next() % 200) + (rng.next() % 4 == 0 ? 5000 : 0))
            parts.append(Array(b[at..<(at + n)]))
            at += n
        }
        return parts
    }

    private func hex(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

    @Test(arguments: [false, true]) func knownAnswers(portable: Bool) {
        redoubt_sha256_set_portable(portable ? 1 : 0)
        defer { redoubt_sha256_set_portable(0) }
        // FIPS 180-4 examples.
        #expect(hex(ours([])) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(hex(ours([Array("abc".utf8)])) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(hex(ours([Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)]))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(hex(ours([[UInt8](repeating: 0x61,
            count: 1_000_000)])) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test(arguments: [false, true]) func everyLengthAndSplitMatchesSwiftCrypto(portable: Bool) {
        redoubt_sha256_set_portable(portable ? 1 : 0)
        defer { redoubt_sha256_set_portable(0) }
        var rng = SplitMix64(seed: portable ? 11 : 12)
        for n in Array(0...300) + [4095, 4096, 4097, 65_536 + 63, 1 << 20] {
            let b = rng.bytes(n)
            #expect(ours([b]) == swiftCrypto(b), "length \(n)")
            #expect(ours(split(b, &rng)) == swiftCrypto(b), "length \(n), split")
        }
    }

    @Test(arguments: [false, true]) func twoMessagesInOneLoopMatchOneAfterTheOther(portable: Bool) {
        redoubt_sha256_set_portable(portable ? 1 : 0)
        defer { redoubt_sha256_set_portable(0) }
        var rng = SplitMix64(seed: portable ? 21 : 22)
        for _ in 0..<300 {
            // Each stream starts part-way into a block, then both take a pair of updates.
            let preA = rng.bytes(Int(rng.next() % 130)), preB = rng.bytes(Int(rng.next() % 130))
            let a = rng.bytes(Int(rng.next() % 9000)), b = rng.bytes(Int(rng.next() % 9000))
            var ca = redoubt_sha256_ctx(), cb = redoubt_sha256_ctx()
            redoubt_sha256_init(&ca)
            redoubt_sha256_init(&cb)
            preA.withUnsafeBytes { redoubt_sha256_update(&ca, $0.baseAddress, $0.count) }
            preB.withUnsafeBytes { redoubt_sha256_update(&cb, $0.baseAddress, $0.count) }
            a.withUnsafeBytes { ra in
                b.withUnsafeBytes {
                    rb in redoubt_sha256_update2(&ca, ra.baseAddress, ra.count, &cb, rb.baseAddress, rb.count)
                }
            }
            var da = [UInt8](repeating: 0, count: 32), db = da
            redoubt_sha256_final(&ca, &da)
            redoubt_sha256_final(&cb, &db)
            #expect(da == swiftCrypto(preA + a), "a: \(preA.count)+\(a.count)")
            #expect(db == swiftCrypto(preB + b), "b: \(preB.count)+\(b.count)")
        }
    }

    @Test func streamAndPairedStreamMatchSwiftCrypto() {
        var rng = SplitMix64(seed: 31)
        for _ in 0..<50 {
            let a = rng.bytes(Int(rng.next() % 100_000)), b = rng.bytes(Int(rng.next() % 100_000))
            var sa = SHA256Stream(), sb = SHA256Stream()
            a.withUnsafeBytes { ra in b.withUnsafeBytes { rb in sa.update(ra, alongside: &sb, rb) } }
            #expect(sa.finalize() == swiftCrypto(a))
            #expect(sb.finalize() == swiftCrypto(b))
        }
    }

    @Test func chunkIDsAreHMACSHA256() {
        var rng = SplitMix64(seed: 41)
        for n in [0, 1, 55, 56, 63, 64, 65, 1000, 1 << 16, (1 << 20) + 7] {
            let key = ChunkIDKey.generate()
            let a = rng.bytes(n), b = rng.bytes(Int(rng.next() % 70_000))
            let mac = {
                (m: [UInt8]) in ChunkID(bytes: Array(HMAC<SHA256>.authenticationCode(for: m, using: key.key)))!
            }
            #expect(key.chunkID(for: a) == mac(a), "length \(n)")
            let pair = a.withUnsafeBytes { ra in b.withUnsafeBytes { rb in key.chunkIDs(for: ra, rb) } }
            #expect(pair.0 == mac(a) && pair.1 == mac(b), "pair \(n), \(b.count)")
            var other = SHA256Stream()
            let alongside = a.withUnsafeBytes {
                ra in b.withUnsafeBytes { rb in key.chunkID(for: ra, alongside: &other, rb) }
            }
            #expect(alongside == mac(a))
            #expect(other.finalize() == swiftCrypto(b))
        }
    }

    /// IDs computed through the pack in progress (its pending bytes hashed alongside) are
    /// the same IDs, and the pack still hashes to its ID, at any chunk sizes.
    @Test func packHashedAlongsideChunkIDsKeepsItsID() throws {
        var rng = SplitMix64(seed: 51)
        let keys = try TenantKeys.generate()
        let material = keys.sharedWriteMaterial
        let pipeline = try PackPipeline(material: material, targetPackSize: 300_000, packVersion: 1)
        var chunks: [[UInt8]] = []
        for _ in 0..<40 { chunks.append(rng.bytes(Int(rng.next() % 60_000))) }
        for c in chunks {
            let id = c.withUnsafeBytes { pipeline.chunkID(for: $0) }
            #expect(id == material.chunkIDKey.chunkID(for: c))
            _ = try c.withUnsafeBytes { try pipeline.add(chunk: $0, id: id) }
        }
        let packs = try pipeline.flush()
        #expect(packs.count > 2)
        for p in packs {
            #expect(p.id == PackID(bytes: swiftCrypto(p.bytes))!)
            #expect(try PackReader.inspect(p.bytes, expectedID: p.id).chunkIDs == p.chunkIDs)
        }
    }

    /// A recycled pack's memory is where the next pack is built (no fresh pages).
    @Test func aRecycledBufferIsReusedForTheNextPack() throws {
        var rng = SplitMix64(seed: 71)
        let keys = try TenantKeys.generate()
        let pipeline = try PackPipeline(material: keys.sharedWriteMaterial, targetPackSize: 200_000)
        func nextPack() throws -> FinishedPack {
            while true {
                _ = try rng.bytes(50_000).withUnsafeBytes { try pipeline.add(chunk: $0) }
                if let p = pipeline.takeFinishedPacks().first { return p }
            }
        }
        let first = try nextPack()
        let address = first.bytes.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }
        pipeline.recycle(consume first)
        let second = try nextPack()
        #expect(second.bytes.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) } == address)
        let opened = try PackReader.open(second.bytes, expectedID: second.id, readKey: keys.readKey)
        let all = try opened.allChunks(chunkIDKey: keys.chunkIDKey, decompressor: try ChunkDecompressor(),
            readKey: keys.readKey)
        #expect(all.count == second.entries.count)
    }

    /// A pack the caller still holds is never written over by a later one.
    @Test func recycledPackBuffersNeverOverwriteAHeldPack() throws {
        var rng = SplitMix64(seed: 61)
        let keys = try TenantKeys.generate()
        let pipeline = try PackPipeline(material: keys.sharedWriteMaterial, targetPackSize: 200_000)
        var held: [FinishedPack] = []
        for round in 0..<6 {
            for _ in 0..<5 { _ = try rng.bytes(50_000).withUnsafeBytes { try pipeline.add(chunk: $0) } }
            for p in pipeline.takeFinishedPacks() {
                if round % 2 == 0 { held.append(p) }  // still referenced: must stay intact
                pipeline.recycle(p)
            }
        }
        held += try pipeline.flush()
        #expect(held.count >= 3)
        for p in held {
            let opened = try PackReader.open(p.bytes, expectedID: p.id, readKey: keys.readKey)
            let all = try opened.allChunks(chunkIDKey: keys.chunkIDKey, decompressor: try ChunkDecompressor(),
                readKey: keys.readKey)
            #expect(all.count == p.entries.count)
        }
    }
}

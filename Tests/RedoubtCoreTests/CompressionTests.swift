import Testing
@testable import RedoubtCore

/// Text-like bytes: words from a small vocabulary, so zstd shrinks them several-fold.
private func compressibleBytes(_ n: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    let words = ["backup", "restore", "pack", "chunk", "tenant", "manifest", "snapshot", "redoubt", "\n", " "]
    var out: [UInt8] = []
    out.reserveCapacity(n + 16)
    while out.count < n { out.append(contentsOf: words[rng.int(words.count)].utf8) }
    return Array(out.prefix(n))
}

private func randomBytes(_ n: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    return rng.bytes(n)
}

/// What `compress` decided: the kind and a copy of the payload.
private func compress(_ input: [UInt8], with c: ChunkCompressor) -> (CompressionKind, [UInt8]) {
    input.withUnsafeBytes { raw in c.compress(raw) { kind, payload in (kind, Array(payload)) } }
}

private func decompress(_ payload: [UInt8], rawLength: Int) throws(CoreError) -> [UInt8] {
    let d = try ChunkDecompressor()
    return try narrow {
        try payload.withUnsafeBytes { try d.decompress($0, rawLength: rawLength, object: "test chunk") }
    }
}

@Suite struct CompressionTests {
    @Test(arguments: [100, 4096, 60_000, 64 << 10, 1 << 20, 8 << 20])
    func compressibleDataIsStoredAsSmallerZstd(count: Int) throws {
        let input = compressibleBytes(count, seed: UInt64(count))
        let (kind, payload) = compress(input, with: try ChunkCompressor())
        #expect(kind == .zstd)
        #expect(payload.count < input.count - input.count / 32)
        #expect(try decompress(payload, rawLength: input.count) == input)
    }

    /// Below 64 KiB every chunk is trial-compressed in full; from 64 KiB a 16 KiB probe
    /// from the middle decides. Random data is stored as is on both paths.
    @Test(arguments: [1, 100, 4096, 60_000, (64 << 10) - 1, 64 << 10, 1 << 20, 8 << 20])
    func randomDataIsStoredUncompressed(count: Int) throws {
        let input = randomBytes(count, seed: UInt64(count))
        let (kind, payload) = compress(input, with: try ChunkCompressor())
        #expect(kind == .none)
        #expect(payload == input)
    }

    @Test func emptyInputIsStoredUncompressed() throws {
        let (kind, payload) = compress([], with: try ChunkCompressor())
        #expect(kind == .none)
        #expect(payload.isEmpty)
    }

    @Test func compressionMustSaveAThirtySecondToBeKept() {
        #expect(ChunkCompressor.worthKeeping(raw: 3200, compressed: 3099))
        #expect(!ChunkCompressor.worthKeeping(raw: 3200, compressed: 3100))
        #expect(!ChunkCompressor.worthKeeping(raw: 0, compressed: 0))
    }

    /// The probe only looks at the middle: a large chunk that is random there is stored
    /// as is even if the rest would compress. This pins that documented trade-off.
    @Test func largeChunkIsJudgedByItsMiddle() throws {
        let n = 1 << 20
        var mostlyText = compressibleBytes(n, seed: 1)
        mostlyText.replaceSubrange((n / 2 - 16384)..<(n / 2 + 16384), with: randomBytes(32768, seed: 2))
        let c = try ChunkCompressor()
        #expect(compress(mostlyText, with: c).0 == .none)

        // A small chunk of the same make-up is compressed in full, and kept.
        let m = 32 << 10
        var smallText = compressibleBytes(m, seed: 3)
        smallText.replaceSubrange((m / 2 - 2048)..<(m / 2 + 2048), with: randomBytes(4096, seed: 4))
        #expect(compress(smallText, with: c).0 == .zstd)

        // Compressible in the middle only: the probe passes, the full trial decides.
        var mostlyRandom = randomBytes(n, seed: 5)
        mostlyRandom.replaceSubrange((n / 2 - 16384)..<(n / 2 + 16384), with: compressibleBytes(32768, seed: 6))
        #expect(compress(mostlyRandom, with: c).0 == .none)
    }

    @Test func oneCompressorServesManyChunksOfMixedKinds() throws {
        let c = try ChunkCompressor()
        let d = try ChunkDecompressor()
        var rng = SplitMix64(seed: 0x31)
        for i in 0..<60 {
            let n = rng.int(300_000)
            let input = i % 2 == 0 ? compressibleBytes(n, seed: UInt64(i)) : rng.bytes(n)
            let (kind, payload) = compress(input, with: c)
            switch kind {
            case .none: #expect(payload == input)
            case .zstd:
                let out = try payload.withUnsafeBytes { try d.decompress($0, rawLength: n, object: "chunk \(i)") }
                #expect(out == input)
            }
        }
    }

    @Test func wrongRawLengthIsCorrupt() throws {
        let input = compressibleBytes(50_000, seed: 9)
        let (kind, payload) = compress(input, with: try ChunkCompressor())
        #expect(kind == .zstd)
        for wrong in [0, 1, input.count - 1, input.count + 1, 2 * input.count] {
            let e = #expect(throws: CoreError.self, "rawLength \(wrong)") { try decompress(payload, rawLength: wrong) }
            #expect(e?.code == .corrupt)
            #expect(e?.object == "test chunk")
        }
    }

    @Test func garbageIsCorrupt() throws {
        let input = compressibleBytes(50_000, seed: 10)
        let (_, payload) = compress(input, with: try ChunkCompressor())
        var rng = SplitMix64(seed: 0x6a)
        var cases: [[UInt8]] = [
            randomBytes(1000, seed: 1),
            [0x28, 0xb5, 0x2f, 0xfd],  // zstd magic alone
            [0x28, 0xb5, 0x2f, 0xfd] + randomBytes(200, seed: 2),
            Array(payload.prefix(payload.count / 2)),  // truncated frame
            Array(payload.dropLast()),
            payload + payload,  // two frames: twice the bytes the index promises
            payload + [0],
        ]
        // Single-byte changes to a valid frame (zstd checks its content checksum only when
        // asked, so these must still be caught by structure or length).
        for _ in 0..<200 {
            var p = payload
            p[rng.int(min(p.count, 32))] ^= UInt8(1 + rng.int(255))
            cases.append(p)
        }
        var succeeded = 0
        for (i, g) in cases.enumerated() {
            do {
                let out = try decompress(g, rawLength: input.count)
                // A change inside a literal block can decode to other bytes of the same
                // length; the chunk ID check after decompression is what catches those.
                #expect(i >= 7, "case \(i) decompressed")
                #expect(out.count == input.count)
                succeeded += 1
            } catch {
                #expect(error.code == .corrupt, "case \(i): \(error)")
            }
        }
        #expect(succeeded < 100)
    }

    @Test func emptyPayloadDecodesOnlyToAnEmptyChunk() throws {
        #expect(try decompress([], rawLength: 0) == [])
        let e = #expect(throws: CoreError.self) { try decompress([], rawLength: 10) }
        #expect(e?.code == .corrupt)
    }
}

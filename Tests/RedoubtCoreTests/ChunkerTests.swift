import Testing
@testable import RedoubtCore

private func seed(_ bytes: [UInt8]) throws -> ChunkerSeed { try ChunkerSeed(secret: SecretBytes(copying: bytes)) }

/// The known-answer seed: bytes 0x00...0x1f.
private func seedA() throws -> ChunkerSeed { try seed((0..<32).map { UInt8($0) }) }
/// A second known-answer seed: bytes 0xff, 0xfe, ... 0xe0.
private func seedB() throws -> ChunkerSeed { try seed((0..<32).map { 0xff - UInt8($0) }) }

/// 2 KiB / 8 KiB / 64 KiB: many chunks from little data.
private let small = try! Chunker.Parameters(min: 2 << 10, avg: 8 << 10, max: 64 << 10)  // valid constants

/// The known-answer input: 24 MiB of SplitMix64(seed: 0x5eed) output, little-endian.
private let knownAnswerInput: [UInt8] = {
    var rng = SplitMix64(seed: 0x5eed)
    return rng.bytes(24 << 20)
}()

/// Running sums of chunk lengths: the offsets where chunks end.
private func cutPoints(_ lengths: [Int]) -> [Int] {
    var sum = 0
    return lengths.map { sum += $0; return sum }
}

/// Splits as a streaming reader would: cut() gets exactly `max` bytes while more than
/// that remain (not final), and the remainder as final.
private func splitInMaxWindows(_ data: [UInt8], _ c: Chunker) -> [Int] {
    let max = c.parameters.max
    return data.withUnsafeBytes { all in
        var lengths: [Int] = []
        var offset = 0
        while offset < all.count {
            let rest = all.count - offset
            let window = UnsafeRawBufferPointer(rebasing: all[offset..<(offset + Swift.min(rest, max))])
            guard let n = c.cut(window, final: rest <= max) else {
                Issue.record("cut returned nil at offset \(offset) with \(window.count) bytes")
                break
            }
            lengths.append(n)
            offset += n
        }
        return lengths
    }
}

/// Splits as a reader with a growing buffer would: reads `step` more bytes whenever cut()
/// answers nil, and says final only at the end of input.
private func splitGrowingBuffer(_ data: [UInt8], _ c: Chunker, rng: inout SplitMix64) -> [Int] {
    data.withUnsafeBytes { all in
        var lengths: [Int] = []
        var start = 0
        var end = 0
        while start < all.count {
            end = Swift.min(all.count, end + 1 + rng.int(c.parameters.max / 3))
            let window = UnsafeRawBufferPointer(rebasing: all[start..<end])
            if let n = c.cut(window, final: end == all.count) {
                lengths.append(n)
                start += n
                end = start
            }
        }
        return lengths
    }
}

/// Checks what every split must satisfy: chunks cover the input, and all but the last are within min...max.
private func expectWellFormed(_ lengths: [Int], total: Int, _ p: Chunker.Parameters,
    sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(lengths.reduce(0, +) == total, sourceLocation: sourceLocation)
    for (i, n) in lengths.enumerated() {
        if i == lengths.count - 1 {
            #expect((1...p.max).contains(n), "last chunk \(n)", sourceLocation: sourceLocation)
        } else {
            #expect((p.min...p.max).contains(n), "chunk \(i) of \(lengths.count) has \(n) bytes",
                sourceLocation: sourceLocation)
        }
    }
}

@Suite struct ChunkerTests {
    // MARK: Known answers

    /// Known answer: if this fails, the chunker or its gear derivation changed, and every
    /// tenant's existing chunks would stop deduplicating against new backups. That is a
    /// format change (docs/FORMAT.md §3), not a test to update.
    @Test func defaultParametersCutAtTheCommittedPoints() throws {
        let lengths = Chunker(seed: try seedA()).split(knownAnswerInput)
        #expect(lengths == [
            1_546_273, 1_084_733, 852_589, 1_629_320, 1_663_402, 1_093_831, 1_057_607,
            1_118_831, 2_026_993, 1_283_777, 1_143_560, 1_261_034, 1_120_471, 1_435_263,
            1_116_243, 648_325, 1_422_759, 1_307_995, 1_139_401, 961_352, 252_065,
        ])
    }

    /// Known answer for a second seed, so the gear table's dependence on the seed is pinned too.
    @Test func secondSeedCutsAtItsCommittedPoints() throws {
        let lengths = Chunker(seed: try seedB()).split(knownAnswerInput)
        #expect(Array(cutPoints(lengths).prefix(4)) == [670_721, 2_062_075, 3_264_347, 3_824_260])
    }

    @Test func smallParametersCutAtTheCommittedPoints() throws {
        var rng = SplitMix64(seed: 0x5a11)
        let lengths = Chunker(seed: try seedA(), parameters: small).split(rng.bytes(1 << 20))
        #expect(Array(lengths.prefix(12)) == [10942, 8474, 13916, 10309, 6998, 9380, 10556, 9458, 10239, 8830, 11416,
            9101])
        #expect(lengths.count == 112)
    }

    // MARK: Shape

    @Test func chunksStayWithinBoundsAndCoverTheInput() throws {
        let c = Chunker(seed: try seedA())
        let lengths = c.split(knownAnswerInput)
        expectWellFormed(lengths, total: knownAnswerInput.count, c.parameters)
        // Random data: every cut is found by content, none forced at max.
        #expect(!lengths.contains(c.parameters.max))
    }

    @Test func smallParametersGiveChunksNearTheAverage() throws {
        var rng = SplitMix64(seed: 0xa7e)
        let data = rng.bytes(8 << 20)
        let c = Chunker(seed: try seedA(), parameters: small)
        let lengths = c.split(data)
        expectWellFormed(lengths, total: data.count, small)
        let mean = data.count / lengths.count
        #expect((small.avg...(2 * small.avg)).contains(mean), "mean chunk \(mean) bytes")
        #expect(lengths.filter { $0 == small.max }.count == 0)
    }

    @Test(arguments: [0, 1, 100, 2047, 2048, 2049, 8192, 65535, 65536, 65537, 131_072, 200_001])
    func edgeLengthsSplitIntoValidChunks(count: Int) throws {
        var rng = SplitMix64(seed: UInt64(count))
        let data = rng.bytes(count)
        let c = Chunker(seed: try seedA(), parameters: small)
        let lengths = c.split(data)
        expectWellFormed(lengths, total: count, small)
        #expect(lengths.isEmpty == (count == 0))
        if count <= small.min { #expect(lengths == (count == 0 ? [] : [count])) }
        #expect(splitInMaxWindows(data, c) == lengths)
    }

    @Test func splitIsDeterministic() throws {
        var rng = SplitMix64(seed: 0xde7)
        let data = rng.bytes(3 << 20)
        let a = Chunker(seed: try seedA(), parameters: small).split(data)
        let b = Chunker(seed: try seedA(), parameters: small).split(data)
        #expect(a == b)
        let c = Chunker(seed: try seedA())
        #expect(c.split(knownAnswerInput) == c.split(knownAnswerInput))
    }

    @Test func anotherSeedCutsElsewhere() throws {
        let a = cutPoints(Chunker(seed: try seedA()).split(knownAnswerInput))
        let b = cutPoints(Chunker(seed: try seedB()).split(knownAnswerInput))
        // Dropping the final end-of-input point, the two seeds share no cut point.
        #expect(Set(a.dropLast()).isDisjoint(with: b.dropLast()))

        var rng = SplitMix64(seed: 0xc0ffee)
        let data = rng.bytes(2 << 20)
        let sa = cutPoints(Chunker(seed: try seedA(), parameters: small).split(data))
        let sb = cutPoints(Chunker(seed: try seedB(), parameters: small).split(data))
        #expect(sa != sb)
        // Chance alone gives a few shared points among ~200; not most of them.
        #expect(Set(sa).intersection(sb).count < sa.count / 4)
    }

    // MARK: Content-defined

    @Test func insertingBytesNearStartChangesOnlyTheFirstChunks() throws {
        var rng = SplitMix64(seed: 0x40)
        let original = rng.bytes(40 << 20)
        var edited = original
        edited.insert(contentsOf: rng.bytes(1000), at: 5000)

        let c = Chunker(seed: try seedA())
        let key = try ChunkIDKey(secret: SecretBytes(copying: [UInt8](repeating: 0x11, count: 32)))
        func ids(_ data: [UInt8]) -> [ChunkID] {
            var offset = 0
            return c.split(data).map { n in
                defer { offset += n }
                return key.chunkID(for: Array(data[offset..<(offset + n)]))
            }
        }
        let before = ids(original)
        let after = ids(edited)
        #expect(before.count > 20)
        // After at most two changed chunks on each side, the rest are the same chunks.
        let resynced = (1...2).contains {
            i in (1...2).contains { j in after.dropFirst(i).elementsEqual(before.dropFirst(j)) }
        }
        #expect(resynced)
        #expect(Set(after).intersection(before).count >= before.count - 2)
        #expect(after.first != before.first)
    }

    @Test func appendingBytesChangesOnlyTheLastChunk() throws {
        var rng = SplitMix64(seed: 0xa99)
        let original = rng.bytes(2 << 20)
        let c = Chunker(seed: try seedA(), parameters: small)
        let before = c.split(original)
        let after = c.split(original + rng.bytes(100))
        #expect(Array(after.dropLast()) == Array(before.dropLast())
            || Array(after.dropLast(2)) == Array(before.dropLast()))
    }

    // MARK: Streaming

    @Test func maxSizedWindowsCutLikeTheWholeBuffer() throws {
        let c = Chunker(seed: try seedA())
        #expect(splitInMaxWindows(knownAnswerInput, c) == c.split(knownAnswerInput))

        var rng = SplitMix64(seed: 0x51)
        let data = rng.bytes(3 << 20 + 12345)
        let s = Chunker(seed: try seedB(), parameters: small)
        #expect(splitInMaxWindows(data, s) == s.split(data))
    }

    @Test func growingBuffersCutLikeTheWholeBuffer() throws {
        var rng = SplitMix64(seed: 0x9)
        let c = Chunker(seed: try seedA(), parameters: small)
        for n in [1, 3000, 65536, 65537, 500_000, 1_000_003] {
            let data = rng.bytes(n)
            #expect(splitGrowingBuffer(data, c, rng: &rng) == c.split(data), "input of \(n) bytes")
        }
        let zeros = [UInt8](repeating: 0, count: 300_000)
        #expect(splitGrowingBuffer(zeros, c, rng: &rng) == c.split(zeros))
    }

    @Test func cutAsksForMoreInputUntilItHasMaxBytes() throws {
        let c = Chunker(seed: try seedA())
        let p = c.parameters
        // Constant data has no boundary (for this seed), so only the input length decides.
        let zeros = [UInt8](repeating: 0, count: p.max + 1)
        zeros.withUnsafeBytes { z in
            for n in [0, 1, p.min - 1, p.min, p.min + 1, p.avg, p.max - 1] {
                let w = UnsafeRawBufferPointer(rebasing: z[0..<n])
                #expect(c.cut(w, final: false) == nil, "\(n) bytes, not final")
                #expect(c.cut(w, final: true) == (n == 0 ? nil : n), "\(n) bytes, final")
            }
            #expect(c.cut(UnsafeRawBufferPointer(rebasing: z[0..<p.max]), final: false) == p.max)
            #expect(c.cut(z, final: false) == p.max)
            #expect(c.cut(z, final: true) == p.max)
        }
        // A boundary inside a short, non-final window is reported: it is already certain.
        let first = Chunker(seed: try seedA()).split(knownAnswerInput)[0]
        knownAnswerInput.withUnsafeBytes { d in
            #expect(c.cut(UnsafeRawBufferPointer(rebasing: d[0..<first]), final: false) == first)
            #expect(c.cut(UnsafeRawBufferPointer(rebasing: d[0..<(first - 1)]), final: false) == nil)
        }
    }

    @Test func constantDataCutsAtMax() throws {
        for s in [try seedA(), try seedB()] {
            let c = Chunker(seed: s)
            for byte: UInt8 in [0x00, 0xff] {
                let data = [UInt8](repeating: byte, count: 20 << 20)
                #expect(c.split(data) == [8 << 20, 8 << 20, 4 << 20], "byte \(byte)")
            }
        }
        let c = Chunker(seed: try seedA(), parameters: small)
        #expect(c.split([UInt8](repeating: 0, count: 200_000)) == [65536, 65536, 65536, 3392])
    }

    @Test func emptyInputHasNoChunks() throws {
        let c = Chunker(seed: try seedA())
        #expect(c.split([]) == [])
        #expect([UInt8]().withUnsafeBytes { c.cut($0, final: true) } == nil)
        #expect([UInt8]().withUnsafeBytes { c.cut($0, final: false) } == nil)
    }

    @Test func defaultParametersAreTheFormatsV1Values() throws {
        #expect(try Chunker.Parameters.default == Chunker.Parameters(min: 512 << 10, avg: 1 << 20, max: 8 << 20))
    }
}

@Suite struct ChunkerParameterTests {
    @Test(arguments: [(64, 128, 256), (1024, 1024, 4096), (1024, 3000, 8192), (1024, 4096, 4096)])
    func invalidParametersAreAnErrorNotACrash(_ p: (Int, Int, Int)) {
        #expect(throws: CoreError.self) { try Chunker.Parameters(min: p.0, avg: p.1, max: p.2) }
    }
}

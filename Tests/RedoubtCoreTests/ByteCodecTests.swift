import Testing
@testable import RedoubtCore

/// SplitMix64 (Steele, Lea, Flood 2014): the seeded PRNG of the core's property and
/// known-answer tests. Its output is pinned by `splitMix64MatchesTheReferenceOutput`, so
/// test vectors built from it (the chunker's) stay meaningful.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }

    /// A uniform integer in 0..<n.
    mutating func int(_ n: Int) -> Int { Int(next() % UInt64(n)) }

    /// `n` bytes: successive outputs written little-endian, the last one cut short.
    mutating func bytes(_ n: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        out.withUnsafeMutableBytes { raw in
            var i = 0
            while i + 8 <= n {
                raw.storeBytes(of: next().littleEndian, toByteOffset: i, as: UInt64.self)
                i += 8
            }
            if i < n {
                var v = next()
                while i < n {
                    raw[i] = UInt8(truncatingIfNeeded: v)
                    v >>= 8
                    i += 1
                }
            }
        }
        return out
    }

    /// A value whose bit length is uniform in 0...64, so small and large values are both common.
    mutating func spreadUInt64() -> UInt64 {
        let bits = int(65)
        return bits == 0 ? 0 : next() >> UInt64(64 - bits)
    }
}

@Suite struct ByteCodecTests {
    @Test func splitMix64MatchesTheReferenceOutput() {
        var rng = SplitMix64(seed: 0)
        #expect(rng.next() == 0xe220_a839_7b1d_cdaf)
        #expect(rng.next() == 0x6e78_9e6a_a1b9_65f4)
        #expect(rng.next() == 0x06c4_5d18_8009_454f)
    }

    // MARK: Round trips

    private enum Field: Equatable {
        case u8(UInt8), u16(UInt16), u32(UInt32), u64(UInt64), i64(Int64), uvarint(UInt64)
        case raw([UInt8]), lengthPrefixed([UInt8]), string(String)
    }

    private static func randomField(_ rng: inout SplitMix64) -> Field {
        switch rng.int(9) {
        case 0: .u8(UInt8(truncatingIfNeeded: rng.next()))
        case 1: .u16(UInt16(truncatingIfNeeded: rng.next()))
        case 2: .u32(UInt32(truncatingIfNeeded: rng.next()))
        case 3: .u64(rng.spreadUInt64())
        case 4: .i64(Int64(bitPattern: rng.int(2) == 0 ? rng.spreadUInt64() : ~rng.spreadUInt64()))
        case 5: .uvarint(rng.spreadUInt64())
        case 6: .raw(rng.bytes(rng.int(40)))
        case 7: .lengthPrefixed(rng.bytes(rng.int(300)))
        default: .string(String((0..<rng.int(20)).map { _ in ["a", "é", "€", "😀", "/", " "][rng.int(6)] }))
        }
    }

    private static func write(_ f: Field, to w: inout ByteWriter) {
        switch f {
        case .u8(let v): w.u8(v)
        case .u16(let v): w.u16(v)
        case .u32(let v): w.u32(v)
        case .u64(let v): w.u64(v)
        case .i64(let v): w.i64(v)
        case .uvarint(let v): w.uvarint(v)
        case .raw(let b): w.raw(b)
        case .lengthPrefixed(let b): w.lengthPrefixed(b)
        case .string(let s): w.string(s)
        }
    }

    /// Reads a field of the same kind as `f`.
    private static func read(like f: Field, from r: inout ByteReader) throws(ByteReader.Failure) -> Field {
        switch f {
        case .u8: .u8(try r.u8())
        case .u16: .u16(try r.u16())
        case .u32: .u32(try r.u32())
        case .u64: .u64(try r.u64())
        case .i64: .i64(try r.i64())
        case .uvarint: .uvarint(try r.uvarint())
        case .raw(let b): .raw(try r.raw(b.count))
        case .lengthPrefixed: .lengthPrefixed(try r.lengthPrefixed())
        case .string: .string(try r.string())
        }
    }

    @Test func randomRecordsRoundTripThroughWriterAndReader() throws {
        var rng = SplitMix64(seed: 0xb17e_c0de)
        for _ in 0..<500 {
            let fields = (0..<rng.int(30)).map { _ in Self.randomField(&rng) }
            var w = ByteWriter(capacity: 8)
            for f in fields { Self.write(f, to: &w) }
            #expect(w.count == w.bytes.count)
            var r = ByteReader(w.bytes)
            for f in fields { #expect(try Self.read(like: f, from: &r) == f) }
            #expect(r.isAtEnd)
            #expect(r.remaining == 0)
        }
    }

    @Test func everyTruncationOfARecordThrowsInsteadOfTrapping() {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<100 {
            let fields = (1..<(2 + rng.int(8))).map { _ in Self.randomField(&rng) }
            var w = ByteWriter()
            for f in fields { Self.write(f, to: &w) }
            for cut in 0..<w.count {
                var r = ByteReader(w.bytes[0..<cut])
                var failure: ByteReader.Failure?
                do { for f in fields { _ = try Self.read(like: f, from: &r) } } catch { failure = error }
                // Each field reads the same bytes as in the whole record, so some field
                // must run past the cut.
                switch failure {
                case .truncated?, .lengthTooLarge?: break
                default: Issue.record("cut at \(cut) of \(w.count): \(String(describing: failure))")
                }
            }
        }
    }

    @Test func integersAreLittleEndian() throws {
        var w = ByteWriter()
        w.u16(0x0102)
        w.u32(0x0304_0506)
        w.u64(0x0708_090a_0b0c_0d0e)
        w.i64(-2)
        #expect(w.bytes == [0x02, 0x01, 0x06, 0x05, 0x04, 0x03, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a, 0x09, 0x08, 0x07,
                            0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
    }

    // MARK: uvarint

    static let uvarintVectors: [(UInt64, [UInt8])] = [
        (0, [0x00]),
        (1, [0x01]),
        (127, [0x7f]),
        (128, [0x80, 0x01]),
        (300, [0xac, 0x02]),
        (16383, [0xff, 0x7f]),
        (16384, [0x80, 0x80, 0x01]),
        (1 << 63, [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]),
        (.max, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
    ]

    @Test(arguments: uvarintVectors)
    func uvarintHasItsOneEncoding(value: UInt64, encoding: [UInt8]) throws {
        var w = ByteWriter()
        w.uvarint(value)
        #expect(w.bytes == encoding)
        var r = ByteReader(encoding)
        #expect(try r.uvarint() == value)
        #expect(r.isAtEnd)
    }

    static let nonMinimalVarints: [[UInt8]] = [
        [0x80, 0x00],  // 0 in two bytes
        [0xff, 0x00],  // 127 in two bytes
        [0x80, 0x80, 0x00],
        [0x81, 0x80, 0x80, 0x00],
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00],
    ]

    @Test(arguments: nonMinimalVarints)
    func uvarintRejectsNonMinimalEncodings(encoding: [UInt8]) {
        var r = ByteReader(encoding)
        #expect(throws: ByteReader.Failure.varintOverflow) { try r.uvarint() }
    }

    static let overlongVarints: [[UInt8]] = [
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],  // 2^64
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x81, 0x00],  // continues past 64 bits
        [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
    ]

    @Test(arguments: overlongVarints)
    func uvarintRejectsValuesBeyond64Bits(encoding: [UInt8]) {
        var r = ByteReader(encoding)
        #expect(throws: ByteReader.Failure.varintOverflow) { try r.uvarint() }
    }

    @Test func uvarintLengthGrowsBySevenBits() {
        for bits in 0...64 {
            let v: UInt64 = bits == 0 ? 0 : UInt64.max >> UInt64(64 - bits)
            var w = ByteWriter()
            w.uvarint(v)
            #expect(w.count == max(1, (bits + 6) / 7), "value with \(bits) bits")
        }
    }

    // MARK: Truncation and lengths

    @Test func shortInputThrowsTruncated() {
        var r = ByteReader([UInt8]())
        #expect(throws: ByteReader.Failure.truncated(needed: 1, remaining: 0)) { try r.u8() }
        r = ByteReader([0x01])
        #expect(throws: ByteReader.Failure.truncated(needed: 2, remaining: 1)) { try r.u16() }
        r = ByteReader([0x01, 0x02, 0x03])
        #expect(throws: ByteReader.Failure.truncated(needed: 4, remaining: 3)) { try r.u32() }
        r = ByteReader([UInt8](repeating: 1, count: 7))
        #expect(throws: ByteReader.Failure.truncated(needed: 8, remaining: 7)) { try r.u64() }
        #expect(throws: ByteReader.Failure.truncated(needed: 8, remaining: 7)) { try r.i64() }
        #expect(throws: ByteReader.Failure.truncated(needed: 8, remaining: 7)) { try r.raw(8) }
        #expect(throws: ByteReader.Failure.truncated(needed: -1, remaining: 7)) { try r.raw(-1) }
        r = ByteReader([0x80, 0x80])
        #expect(throws: ByteReader.Failure.truncated(needed: 1, remaining: 0)) { try r.uvarint() }
    }

    @Test func failedReadsLeaveTheOffsetOfTheFailedFieldUnchanged() throws {
        var r = ByteReader([0x01, 0x02, 0x03])
        _ = try r.u8()
        #expect(throws: ByteReader.Failure.self) { try r.u32() }
        #expect(r.offset == 1)
        #expect(try r.u16() == 0x0302)
    }

    @Test(arguments: [UInt64(4), 1 << 40, UInt64(Int.max) / 2, UInt64(Int.max), UInt64.max])
    func hugeClaimedLengthThrowsBeforeAllocating(claimed: UInt64) {
        // A reader that allocated the claimed length first would trap (or exhaust memory)
        // on these; throwing `.lengthTooLarge` shows the check comes first.
        var w = ByteWriter()
        w.uvarint(claimed)
        w.raw([1, 2, 3])
        var r = ByteReader(w.bytes)
        #expect(throws: ByteReader.Failure.lengthTooLarge(claimed)) { try r.lengthPrefixed() }
        r = ByteReader(w.bytes)
        #expect(throws: ByteReader.Failure.lengthTooLarge(claimed)) { try r.string() }
        r = ByteReader(w.bytes)
        #expect(throws: ByteReader.Failure.lengthTooLarge(claimed)) { try r.count(limit: 3) }
    }

    @Test func lengthPrefixedHonoursItsLimit() throws {
        var w = ByteWriter()
        w.lengthPrefixed([1, 2, 3, 4])
        var r = ByteReader(w.bytes)
        #expect(throws: ByteReader.Failure.lengthTooLarge(4)) { try r.lengthPrefixed(limit: 3) }
        r = ByteReader(w.bytes)
        #expect(try r.lengthPrefixed(limit: 4) == [1, 2, 3, 4])
        r = ByteReader([0x00])
        #expect(try r.lengthPrefixed(limit: 0) == [])
        #expect(r.isAtEnd)
    }

    @Test func countAcceptsUpToItsLimit() throws {
        var w = ByteWriter()
        w.uvarint(1000)
        var r = ByteReader(w.bytes)
        #expect(try r.count(limit: 1000) == 1000)
        r = ByteReader(w.bytes)
        #expect(throws: ByteReader.Failure.lengthTooLarge(1000)) { try r.count(limit: 999) }
    }

    @Test func stringRejectsInvalidUTF8AndOverlongStrings() throws {
        var w = ByteWriter()
        w.lengthPrefixed([0x61, 0xff, 0x62])
        var r = ByteReader(w.bytes)
        #expect(throws: ByteReader.Failure.invalidUTF8) { try r.string() }

        w = ByteWriter()
        w.lengthPrefixed([0xc3])  // first half of "é"
        r = ByteReader(w.bytes)
        #expect(throws: ByteReader.Failure.invalidUTF8) { try r.string() }

        w = ByteWriter()
        w.string("héllo")
        r = ByteReader(w.bytes)
        #expect(throws: ByteReader.Failure.lengthTooLarge(6)) { try r.string(limit: 5) }
        r = ByteReader(w.bytes)
        #expect(try r.string(limit: 6) == "héllo")
    }

    @Test func readerOverASliceStartsAtTheSlice() throws {
        let bytes: [UInt8] = [9, 9, 0x34, 0x12]
        var r = ByteReader(bytes[2...])
        #expect(r.remaining == 2)
        #expect(try r.u16() == 0x1234)
    }

    @Test func randomInputNeverTrapsTheReader() {
        var rng = SplitMix64(seed: 0xf022)
        for _ in 0..<2000 {
            var r = ByteReader(rng.bytes(rng.int(64)))
            // Read random fields until something fails or the input ends.
            while !r.isAtEnd {
                do {
                    switch rng.int(8) {
                    case 0: _ = try r.u8()
                    case 1: _ = try r.u16()
                    case 2: _ = try r.u32()
                    case 3: _ = try r.u64()
                    case 4: _ = try r.uvarint()
                    case 5: _ = try r.lengthPrefixed(limit: rng.int(100))
                    case 6: _ = try r.string()
                    default: _ = try r.count(limit: rng.int(1 << 20))
                    }
                } catch { break }
            }
        }
    }

    // MARK: Hex

    @Test func hexRoundTripsRandomBytes() {
        var rng = SplitMix64(seed: 0x4e4)
        for n in 0..<200 {
            let b = rng.bytes(n)
            let hex = hexString(b)
            #expect(hex.utf8.count == 2 * n)
            #expect(hex == hex.lowercased())
            #expect(bytesFromHex(hex) == b)
            #expect(bytesFromHex(hex.uppercased()) == b)
        }
        #expect(hexString([0x00, 0x0f, 0xa0, 0xff]) == "000fa0ff")
        #expect(bytesFromHex("") == [])
        #expect(bytesFromHex("DeadBEEF") == [0xde, 0xad, 0xbe, 0xef])
    }

    @Test(arguments: ["0", "abc", "0g", "g0", "zz", " 0", "0x00", "--", "é0", "0é", "00\u{0}0", "１２"])
    func malformedHexIsRejected(hex: String) {
        #expect(bytesFromHex(hex) == nil)
    }

    @Test func digestIDsParseExactly64HexDigits() {
        let hex = String(repeating: "ab", count: 32)
        #expect(PackID(hex: hex)?.description == hex)
        #expect(PackID(hex: hex.uppercased())?.description == hex)
        #expect(PackID(hex: String(hex.dropLast())) == nil)
        #expect(PackID(hex: hex + "a") == nil)
        #expect(PackID(hex: hex + "ab") == nil)
        #expect(PackID(hex: String(hex.dropLast()) + "g") == nil)
        #expect(ChunkID(bytes: [UInt8](repeating: 0, count: 31)) == nil)
        #expect(ReadKeyID(bytes: [UInt8](repeating: 0, count: 32)) == nil)
    }

    /// memcmp order is the generic byte order, prefixes first, over random strings
    /// drawn from a small alphabet so that equal prefixes and equal strings are common.
    @Test func bytesPrecedeIsLexicographicOrder() {
        var rng = SplitMix64(seed: 81)
        func draw() -> [UInt8] { (0..<Int(rng.next() % 5)).map { _ in [0, 1, 0x7f, 0x80, 0xff][Int(rng.next() % 5)] } }
        for _ in 0..<5000 {
            let a = draw(), b = draw()
            #expect(bytesPrecede(a, b) == a.lexicographicallyPrecedes(b), "\(a) vs \(b)")
            #expect((ByteKey(a) == ByteKey(b)) == (a == b))
            if a == b { #expect(ByteKey(a).hashValue == ByteKey(b).hashValue) }
        }
    }
}

import Crypto

/// Content-defined chunking: FastCDC with normalized chunking (level 2) and a gear table
/// derived from the tenant's secret ``ChunkerSeed`` (docs/FORMAT.md §3).
///
/// The chunker is pure and stateless between chunks: ``cut(_:final:)`` is given the bytes
/// that start at a chunk boundary and answers where that chunk ends. Because the gear
/// table is secret, cut points (and so chunk sizes) differ between tenants, and sizes do
/// not fingerprint content across them.
public struct Chunker: Sendable {
    /// Size limits of a chunker. `avg` must be a power of two.
    public struct Parameters: Sendable, Equatable {
        public let min: Int
        public let avg: Int
        public let max: Int

        /// Throws unless 64 < min < avg < max and avg is a power of two.
        public init(min: Int, avg: Int, max: Int) throws(CoreError) {
            guard min > 64 && min < avg && avg < max && avg & (avg - 1) == 0 else {
                throw CoreError(.limitExceeded, object: "chunker parameters",
                    "need 64 < min < avg < max with avg a power of two; got \(min)/\(avg)/\(max)")
            }
            self.init(checkedMin: min, avg: avg, max: max)
        }

        private init(checkedMin min: Int, avg: Int, max: Int) {
            self.min = min
            self.avg = avg
            self.max = max
        }

        /// 512 KiB / 1 MiB / 8 MiB: the format-v1 default.
        public static let `default` = Parameters(checkedMin: 512 << 10, avg: 1 << 20, max: 8 << 20)
    }

    public let parameters: Parameters
    private let gear: [UInt64]
    /// pairs[b0 | b1 << 8] = 2·gear[b0] + gear[b1] (512 KiB): H(i+2) = 4·H(i) +
    /// pairs[b(i), b(i+1)] halves the loop-carried shift-and-add chain. Same hash values,
    /// same cut points as one byte per step.
    private let pairs: [UInt64]
    /// Stricter mask before `avg` (log2(avg)+2 bits), looser after (log2(avg)-2 bits).
    private let maskSmall: UInt64
    private let maskLarge: UInt64

    /// Derives the gear table: HKDF-SHA256(seed, salt: "redoubt/v1/chunker-gear") expanded
    /// to 2048 bytes, read as 256 little-endian UInt64.
    public init(seed: ChunkerSeed, parameters: Parameters = .default) {
        self.parameters = parameters
        let okm = seed.secret.withUnsafeBytes { ikm in
            HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: ikm), salt: Label.gear, outputByteCount: 2048)
        }
        var table = [UInt64](repeating: 0, count: 256)
        okm.withUnsafeBytes { raw in
            for i in 0..<256 {
                var v: UInt64 = 0
                for j in 0..<8 { v |= UInt64(raw[i * 8 + j]) << UInt64(8 * j) }
                table[i] = v
            }
        }
        gear = table
        pairs = (0..<65536).map { p in (table[p & 255] &<< 1) &+ table[p >> 8] }
        let bits = parameters.avg.trailingZeroBitCount
        // Masks on the high bits: after the shift-and-add, the top bits depend on the
        // last 64 bytes, the low bits only on the last few.
        maskSmall = ~UInt64(0) << UInt64(64 - (bits + 2))
        maskLarge = ~UInt64(0) << UInt64(64 - (bits - 2))
    }

    /// The length of the chunk that starts at `data`'s first byte.
    ///
    /// Pass at least `parameters.max` bytes unless the input ends within them (`final`).
    /// Returns nil when no boundary was found and more input is needed (fewer than `max`
    /// bytes given and not `final`); otherwise a length in 1...max (the whole of `data`
    /// when `final` and no boundary lies before its end).
    public func cut(_ data: UnsafeRawBufferPointer, final: Bool) -> Int? {
        let n = data.count
        let p = parameters
        if n <= p.min { return final ? (n == 0 ? nil : n) : (n >= p.max ? n : nil) }
        let limit = Swift.min(n, p.max)
        let normal = Swift.min(p.avg, limit)
        let found: Int? = gear.withUnsafeBufferPointer { g in
            pairs.withUnsafeBufferPointer { t in
                Self.scan(data, from: p.min, normal: normal, limit: limit, gear: g, pairs: t, maskSmall: maskSmall,
                    maskLarge: maskLarge)
            }
        }
        if let found { return found }
        if limit == p.max { return p.max }
        return final ? n : nil
    }

    /// The first cut in `data[from..<limit]`: the strict mask before `normal`, the loose
    /// one after. The hash starts at zero at `from` (FastCDC skips the first `min` bytes).
    /// Two bytes per step: H(i+2) = 4·H(i) + pairs[b0,b1] carries the chain, H(i+1) comes
    /// off it for its own test. (Four per step measured no faster here.)
    private static func scan(_ data: UnsafeRawBufferPointer, from start: Int, normal: Int, limit: Int,
                             gear g: UnsafeBufferPointer<UInt64>, pairs t: UnsafeBufferPointer<UInt64>,
                             maskSmall: UInt64, maskLarge: UInt64) -> Int? {
        let base = data.baseAddress!
        var hash: UInt64 = 0
        var i = start
        func run(to end: Int, mask m: UInt64) -> Int? {
            while i + 2 <= end {
                let h1 = (hash &<< 1) &+ g[Int(base.load(fromByteOffset: i, as: UInt8.self))]
                hash = (hash &<< 2) &+ t[Int(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: i,
                    as: UInt16.self)))]
                if h1 & m == 0 { return i + 1 }
                if hash & m == 0 { return i + 2 }
                i += 2
            }
            if i < end {
                hash = (hash &<< 1) &+ g[Int(base.load(fromByteOffset: i, as: UInt8.self))]
                i += 1
                if hash & m == 0 { return i }
            }
            return nil
        }
        if let c = run(to: normal, mask: maskSmall) { return c }
        return run(to: limit, mask: maskLarge)
    }

    /// Splits a whole in-memory buffer into chunk lengths (for trees and tests).
    public func split(_ data: UnsafeRawBufferPointer) -> [Int] {
        var lengths: [Int] = []
        var offset = 0
        while offset < data.count {
            let rest = UnsafeRawBufferPointer(rebasing: data[offset...])
            guard let len = cut(rest, final: true) else { break }
            lengths.append(len)
            offset += len
        }
        return lengths
    }

    public func split(_ data: [UInt8]) -> [Int] { data.withUnsafeBytes { split($0) } }
}

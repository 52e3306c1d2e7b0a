/// A 32-byte identifier printed as 64 lowercase hex digits.
public protocol Digest32ID: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    /// The 32 raw bytes.
    var bytes: [UInt8] { get }
    /// Wraps exactly 32 bytes; nil for any other length.
    init?(bytes: [UInt8])
}

extension Digest32ID {
    public var description: String { hexString(bytes) }
    /// The first 8 hex digits, for progress lines and logs.
    public var short: String { String(description.prefix(8)) }

    /// Parses 64 hex digits.
    public init?(hex: String) {
        guard hex.utf8.count == 64, let b = bytesFromHex(hex) else { return nil }
        self.init(bytes: b)
    }

    public static func < (a: Self, b: Self) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        guard let v = Self(hex: s) else {
            throw DecodingError.dataCorruptedError(in: c,
                debugDescription: "expected 64 hex digits, got \(s.prefix(80))")
        }
        self = v
    }
}

/// 32 bytes held inline as four big-endian words: no heap allocation per ID, and
/// word-wise comparison gives the same order as the bytes.
public struct Words32: Hashable, Sendable {
    let w0, w1, w2, w3: UInt64

    init?(_ bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        func word(_ o: Int) -> UInt64 {
            var v: UInt64 = 0
            for i in 0..<8 { v = v << 8 | UInt64(bytes[o + i]) }
            return v
        }
        w0 = word(0)
        w1 = word(8)
        w2 = word(16)
        w3 = word(24)
    }

    var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        for (k, w) in [w0, w1, w2, w3].enumerated() {
            for i in 0..<8 { out[k * 8 + i] = UInt8(truncatingIfNeeded: w >> UInt64(56 - 8 * i)) }
        }
        return out
    }

    static func < (a: Words32, b: Words32) -> Bool { (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3) }
}

/// The keyed ID of a chunk: HMAC-SHA256 of its plaintext under the tenant's chunk-ID key.
///
/// Equal plaintexts in one tenant have equal IDs (that is what deduplicates); without the
/// key an ID reveals nothing about the content.
public struct ChunkID: Digest32ID {
    let words: Words32
    public var bytes: [UInt8] { words.bytes }
    public init?(bytes: [UInt8]) {
        guard let w = Words32(bytes) else { return nil }
        words = w
    }
    public static func < (a: Self, b: Self) -> Bool { a.words < b.words }

    /// The ID's first 128 bits, as a key for a map of every chunk a large job meets: half
    /// the memory of the whole ID. Two IDs share one by chance with odds of 2^-64 among
    /// 2^32 chunks; making two share one takes about 2^64 hashes.
    public var prefix: ChunkIDPrefix { ChunkIDPrefix(high: words.w0, low: words.w1) }
}

/// The first 128 bits of a ``ChunkID`` (``ChunkID/prefix``).
public struct ChunkIDPrefix: Hashable, Sendable {
    let high: UInt64
    let low: UInt64
}

/// The ID of a pack: SHA-256 of the pack's bytes, so anyone can verify a pack without a key.
public struct PackID: Digest32ID {
    let words: Words32
    public var bytes: [UInt8] { words.bytes }
    public init?(bytes: [UInt8]) {
        guard let w = Words32(bytes) else { return nil }
        words = w
    }
    public static func < (a: Self, b: Self) -> Bool { a.words < b.words }
}

/// The ID of a snapshot: SHA-256 of its manifest's bytes.
public struct SnapshotID: Digest32ID {
    let words: Words32
    public var bytes: [UInt8] { words.bytes }
    public init?(bytes: [UInt8]) {
        guard let w = Words32(bytes) else { return nil }
        words = w
    }
    public static func < (a: Self, b: Self) -> Bool { a.words < b.words }
}

/// Identifies a tenant's read key without revealing it: the first 16 bytes of
/// SHA-256("redoubt/v1/read-key-id" ‖ read public key). Carried in every pack and manifest
/// so a reader can tell "sealed to another tenant" from "corrupt".
public struct ReadKeyID: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]
    public init?(bytes: [UInt8]) {
        guard bytes.count == 16 else { return nil }
        self.bytes = bytes
    }
    public var description: String { hexString(bytes) }

    /// The first 16 bytes of a digest.
    init<D: Sequence>(truncating digest: D) where D.Element == UInt8 { bytes = Array(digest.prefix(16)) }
}

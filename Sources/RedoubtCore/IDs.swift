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
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "expected 64 hex digits, got \(s.prefix(80))")
        }
        self = v
    }
}

/// The keyed ID of a chunk: HMAC-SHA256 of its plaintext under the tenant's chunk-ID key.
///
/// Equal plaintexts in one tenant have equal IDs (that is what deduplicates); without the
/// key an ID reveals nothing about the content.
public struct ChunkID: Digest32ID {
    public let bytes: [UInt8]
    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }
}

/// The ID of a pack: SHA-256 of the pack's bytes, so anyone can verify a pack without a key.
public struct PackID: Digest32ID {
    public let bytes: [UInt8]
    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }
}

/// The ID of a snapshot: SHA-256 of its manifest's bytes.
public struct SnapshotID: Digest32ID {
    public let bytes: [UInt8]
    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }
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
}

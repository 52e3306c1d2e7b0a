/// KMIP's Tag-Type-Length-Value encoding (KMIP 1.4 §9.1): the wire format of every KMIP
/// request and response.
///
/// Each item is a 3-byte tag, a 1-byte type, a 4-byte big-endian length and the value,
/// padded with zero bytes to a multiple of eight. The decoder is strict, because it reads
/// bytes from the network: lengths must match their type, structures must be filled
/// exactly, padding must be zero, and nesting and total size are bounded.
public struct TTLV: Sendable, Equatable {
    /// A KMIP tag: the low 24 bits are significant (0x42xxxx for the standard tags).
    public struct Tag: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue & 0xFF_FFFF }
        public var description: String {
            let hex = String(rawValue, radix: 16, uppercase: true)
            return "0x" + String(repeating: "0", count: max(0, 6 - hex.count)) + hex
        }
    }

    /// The item types, by their wire byte.
    public enum ItemType: UInt8, Sendable {
        case structure = 0x01, integer, longInteger, bigInteger, enumeration, boolean
        case textString, byteString, dateTime, interval
    }

    /// A typed value. Structures hold their members in order.
    public indirect enum Value: Sendable, Equatable {
        case structure([TTLV])
        case integer(Int32)
        case longInteger(Int64)
        /// Two's-complement big-endian bytes, a multiple of 8 long on the wire.
        case bigInteger([UInt8])
        case enumeration(UInt32)
        case boolean(Bool)
        case textString(String)
        case byteString([UInt8])
        /// Seconds since the POSIX epoch.
        case dateTime(Int64)
        /// Seconds.
        case interval(UInt32)

        var type: ItemType {
            switch self {
            case .structure: .structure
            case .integer: .integer
            case .longInteger: .longInteger
            case .bigInteger: .bigInteger
            case .enumeration: .enumeration
            case .boolean: .boolean
            case .textString: .textString
            case .byteString: .byteString
            case .dateTime: .dateTime
            case .interval: .interval
            }
        }
    }

    public var tag: Tag
    public var value: Value

    public init(_ tag: Tag, _ value: Value) {
        self.tag = tag
        self.value = value
    }

    /// Bounds the decoder enforces on untrusted input.
    public struct Limits: Sendable {
        /// Total message size, header included.
        public var maxBytes: Int
        /// Structure nesting depth.
        public var maxDepth: Int
        public init(maxBytes: Int = 1 << 20, maxDepth: Int = 16) {
            self.maxBytes = maxBytes
            self.maxDepth = maxDepth
        }
    }

    // MARK: Encoding

    /// The item's bytes on the wire.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        encode(into: &out)
        return out
    }

    func encode(into out: inout [UInt8]) {
        out.append(UInt8(truncatingIfNeeded: tag.rawValue >> 16))
        out.append(UInt8(truncatingIfNeeded: tag.rawValue >> 8))
        out.append(UInt8(truncatingIfNeeded: tag.rawValue))
        out.append(value.type.rawValue)
        let lengthAt = out.count
        out.append(contentsOf: [0, 0, 0, 0])
        let start = out.count
        switch value {
        case .structure(let members):
            for member in members { member.encode(into: &out) }
        case .integer(let v): Self.appendBE(UInt64(UInt32(bitPattern: v)), width: 4, to: &out)
        case .enumeration(let v): Self.appendBE(UInt64(v), width: 4, to: &out)
        case .interval(let v): Self.appendBE(UInt64(v), width: 4, to: &out)
        case .longInteger(let v): Self.appendBE(UInt64(bitPattern: v), width: 8, to: &out)
        case .dateTime(let v): Self.appendBE(UInt64(bitPattern: v), width: 8, to: &out)
        case .boolean(let v): Self.appendBE(v ? 1 : 0, width: 8, to: &out)
        case .bigInteger(let bytes):
            // Sign-extend on the left to a multiple of 8, as the spec requires.
            let fill: UInt8 = (bytes.first ?? 0) & 0x80 != 0 ? 0xFF : 0
            out.append(contentsOf: [UInt8](repeating: fill, count: (8 - bytes.count % 8) % 8))
            out.append(contentsOf: bytes)
        case .textString(let s): out.append(contentsOf: Array(s.utf8))
        case .byteString(let b): out.append(contentsOf: b)
        }
        let length = out.count - start
        for i in 0..<4 { out[lengthAt + i] = UInt8(truncatingIfNeeded: length >> (24 - 8 * i)) }
        // Structures are already a multiple of 8; the other variable types need padding.
        out.append(contentsOf: [UInt8](repeating: 0, count: (8 - length % 8) % 8))
    }

    static func appendBE(_ v: UInt64, width: Int, to out: inout [UInt8]) {
        for i in stride(from: width - 1, through: 0, by: -1) {
            out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))))
        }
    }

    // MARK: Decoding

    /// Decodes exactly one item that fills `bytes`.
    public static func decode(_ bytes: [UInt8], limits: Limits = Limits(),
        provider: String = "kmip") throws(KeyProviderError) -> TTLV {
        guard bytes.count <= limits.maxBytes else {
            throw .kmsProtocol(provider: provider,
                detail: "KMIP message of \(bytes.count) bytes exceeds the \(limits.maxBytes)-byte limit")
        }
        var reader = Reader(bytes: bytes, provider: provider, maxDepth: limits.maxDepth)
        let item = try reader.item(end: bytes.count, depth: 0)
        guard reader.offset == bytes.count else {
            throw .kmsProtocol(provider: provider,
                detail: "\(bytes.count - reader.offset) trailing bytes after the KMIP message")
        }
        return item
    }

    /// The total length of the item whose 8-byte header starts `prefix`, so a stream
    /// reader knows how much more to read; nil if fewer than 8 bytes are given.
    public static func messageLength(header prefix: [UInt8]) -> Int? {
        guard prefix.count >= 8 else { return nil }
        let length = Int(prefix[4]) << 24 | Int(prefix[5]) << 16 | Int(prefix[6]) << 8 | Int(prefix[7])
        return 8 + length + (8 - length % 8) % 8
    }

    struct Reader {
        let bytes: [UInt8]
        let provider: String
        let maxDepth: Int
        var offset = 0

        func fail(_ detail: String) -> KeyProviderError {
            .kmsProtocol(provider: provider, detail: "malformed KMIP message at byte \(offset): \(detail)")
        }

        mutating func item(end: Int, depth: Int) throws(KeyProviderError) -> TTLV {
            guard depth <= maxDepth else { throw fail("structures nested deeper than \(maxDepth)") }
            guard end - offset >= 8 else { throw fail("truncated item header") }
            let tag = Tag(rawValue: UInt32(bytes[offset]) << 16 | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset
                + 2]))
            guard let type = ItemType(rawValue: bytes[offset + 3]) else {
                throw fail("unknown item type 0x\(String(bytes[offset + 3], radix: 16)) for tag \(tag)")
            }
            let length = Int(bytes[offset + 4]) << 24 | Int(bytes[offset + 5]) << 16 | Int(bytes[offset
                + 6]) << 8 | Int(bytes[offset + 7])
            offset += 8
            let padded = length + (8 - length % 8) % 8
            guard padded <= end - offset else {
                throw fail("item \(tag) claims \(length) bytes; only \(end - offset) remain")
            }
            let valueStart = offset
            let valueEnd = offset + length
            func fixed(_ width: Int) throws(KeyProviderError) -> UInt64 {
                guard length == width else {
                    throw fail("item \(tag) of type \(type) has length \(length), not \(width)")
                }
                var v: UInt64 = 0
                for b in bytes[valueStart..<valueEnd] { v = v << 8 | UInt64(b) }
                return v
            }
            let value: Value
            switch type {
            case .structure:
                guard length % 8 == 0 else { throw fail("structure \(tag) length \(length) is not a multiple of 8") }
                var members: [TTLV] = []
                while offset < valueEnd { members.append(try item(end: valueEnd, depth: depth + 1)) }
                value = .structure(members)
            case .integer: value = .integer(Int32(bitPattern: UInt32(truncatingIfNeeded: try fixed(4))))
            case .enumeration: value = .enumeration(UInt32(truncatingIfNeeded: try fixed(4)))
            case .interval: value = .interval(UInt32(truncatingIfNeeded: try fixed(4)))
            case .longInteger: value = .longInteger(Int64(bitPattern: try fixed(8)))
            case .dateTime: value = .dateTime(Int64(bitPattern: try fixed(8)))
            case .boolean:
                let v = try fixed(8)
                guard v <= 1 else { throw fail("boolean \(tag) holds \(v), not 0 or 1") }
                value = .boolean(v == 1)
            case .bigInteger:
                guard length % 8 == 0, length > 0 else {
                    throw fail("big integer \(tag) length \(length) is not a positive multiple of 8")
                }
                value = .bigInteger(Array(bytes[valueStart..<valueEnd]))
            case .textString:
                let raw = bytes[valueStart..<valueEnd]
                guard let text = String(validating: raw, as: UTF8.self) else {
                    throw fail("text string \(tag) is not UTF-8")
                }
                value = .textString(text)
            case .byteString:
                value = .byteString(Array(bytes[valueStart..<valueEnd]))
            }
            if case .structure = value {} else { offset = valueEnd }
            // Padding must be zero: a strict reader leaves no room for smuggled bytes.
            for i in offset..<(valueStart + padded) where bytes[i] != 0 {
                throw fail("non-zero padding after \(tag)")
            }
            offset = valueStart + padded
            return TTLV(tag, value)
        }
    }

    // MARK: Access

    /// The first member of a structure with `tag`, or nil.
    public subscript(_ tag: Tag) -> TTLV? {
        guard case .structure(let members) = value else { return nil }
        return members.first { $0.tag == tag }
    }

    /// Every member of a structure with `tag`.
    public func all(_ tag: Tag) -> [TTLV] {
        guard case .structure(let members) = value else { return [] }
        return members.filter { $0.tag == tag }
    }
}

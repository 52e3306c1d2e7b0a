// Media format v1 block codec (docs/FORMAT.md §13.2). Pure: no files, devices or clocks.
import CRedoubtSys

/// Errors of the media format, each with a stable code and the place it was found.
public struct MediaError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Stable machine-readable code (`E_MEDIA_*`).
    public let code: String
    /// Volume sequence number the problem was found on.
    public let volume: UInt32
    /// Block number within that volume.
    public let block: UInt64
    /// What is wrong, in words a user can act on.
    public let detail: String

    /// Makes an error naming the volume and the block.
    public init(code: String, volume: UInt32, block: UInt64, detail: String) {
        self.code = code; self.volume = volume; self.block = block; self.detail = detail
    }

    public var description: String { "\(code): volume \(volume) block \(block): \(detail)" }
}

/// Kind of a media block (§13.2).
public enum MediaBlockKind: UInt8, Sendable {
    case label = 1, data = 2, volumeCatalog = 3, setCatalog = 4, end = 5
}

/// The 64-byte header at the start of every media block (§13.2).
public struct MediaBlockHeader: Sendable, Equatable {
    /// The volume number written in an encoded block's header (no checks).
    public static func volumeOf(_ b: [UInt8]) -> UInt32 {
        guard b.count >= 28 else { return 0 }
        return (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[24 + $1]) << (8 * $1) }
    }

    /// Magic bytes that open every block.
    public static let magic: [UInt8] = Array("RDBTBLK1".utf8)
    /// Size of the encoded header.
    public static let size = 64

    public var setID: [UInt8]
    public var volumeSeq: UInt32
    public var blockSeq: UInt64
    public var kind: MediaBlockKind
    public var lastOfRecord: Bool
    public var payloadLen: UInt32
    public var recordSeq: UInt64
    public var recordOff: UInt64

    /// Makes a header; `setID` must be 16 bytes.
    public init(setID: [UInt8], volumeSeq: UInt32, blockSeq: UInt64, kind: MediaBlockKind,
                lastOfRecord: Bool, payloadLen: UInt32, recordSeq: UInt64, recordOff: UInt64) {
        self.setID = setID; self.volumeSeq = volumeSeq; self.blockSeq = blockSeq; self.kind = kind
        self.lastOfRecord = lastOfRecord; self.payloadLen = payloadLen
        self.recordSeq = recordSeq; self.recordOff = recordOff
    }
}

/// Encodes and checks whole blocks of a fixed size.
public enum MediaBlock {
    /// Block size announced by the first 64 bytes of a block (byte 62 = log2), or nil
    /// when those bytes do not start a block (no magic, or an impossible size).
    public static func announcedSize(_ head: [UInt8]) -> Int? {
        guard head.count >= MediaBlockHeader.size, Array(head[0..<8]) == MediaBlockHeader.magic,
              head[62] >= 8, head[62] <= 22 else { return nil }
        return 1 << Int(head[62])
    }

    /// Builds one block of `blockSize` bytes: header, payload, zero padding, CRC-32C.
    public static func encode(_ h: MediaBlockHeader, payload: [UInt8], blockSize: Int) throws(MediaError) -> [UInt8] {
        try encode(h, payload: payload[...], blockSize: blockSize)
    }

    /// As above, from a slice of a larger buffer (no copy before the block's own).
    public static func encode(_ h: MediaBlockHeader, payload: ArraySlice<UInt8>,
        blockSize: Int) throws(MediaError) -> [UInt8] {
        var b: [UInt8] = []
        try encode(h, payload: payload, blockSize: blockSize, into: &b)
        return b
    }

    /// Builds the block in `b`, reusing its storage when it already has `blockSize` bytes.
    /// The payload is `payload` followed by `more`.
    public static func encode(_ h: MediaBlockHeader, payload: ArraySlice<UInt8>, _ more: ArraySlice<UInt8> = [],
        blockSize: Int,
                              into b: inout [UInt8]) throws(MediaError) {
        let room = blockSize - MediaBlockHeader.size
        let count = payload.count + more.count
        guard h.setID.count == 16, blockSize >= 256, blockSize.nonzeroBitCount == 1 else {
            throw MediaError(code: "E_MEDIA_LIMIT", volume: h.volumeSeq, block: h.blockSeq,
                             detail: "block size \(blockSize) is not a power of two of at least 256 bytes")
        }
        guard room > 0, count <= room else {
            throw MediaError(code: "E_MEDIA_LIMIT", volume: h.volumeSeq, block: h.blockSeq,
                             detail: "payload of \(count) bytes does not fit a \(blockSize)-byte block")
        }
        if b.count != blockSize { b = [UInt8](repeating: 0, count: blockSize) }
        b.withUnsafeMutableBytes { out in
            var o = 0
            func put(_ bytes: some Collection<UInt8>) { for x in bytes { out[o] = x; o += 1 } }
            func le<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { put($0) } }
            put(MediaBlockHeader.magic); put(h.setID); le(h.volumeSeq); le(h.blockSeq)
            put([h.kind.rawValue, h.lastOfRecord ? 1 : 0]); le(UInt32(count)); le(h.recordSeq); le(h.recordOff)
            // crc at offset o (zero while computing); header bytes up to 62 zero; byte 62 =
            // log2(block size) so a reader on a pipe learns the block size from the first
            // 64 bytes; byte 63 zero.
            for i in o..<MediaBlockHeader.size { out[i] = 0 }
            out[62] = UInt8(blockSize.trailingZeroBitCount)
            let body = UnsafeMutableRawBufferPointer(rebasing: out[MediaBlockHeader.size...])
            payload.withUnsafeBytes { src in
                if let s = src.baseAddress, src.count > 0 {
                    body.baseAddress?.copyMemory(from: s, byteCount: src.count)
                }
            }
            more.withUnsafeBytes { src in
                if let s = src.baseAddress, src.count > 0 {
                    (body.baseAddress! + payload.count).copyMemory(from: s, byteCount: src.count)
                }
            }
            // Zero padding after the payload (the buffer may hold an earlier block's bytes).
            if count < room, let base = body.baseAddress {
                (base + count).initializeMemory(as: UInt8.self, repeating: 0, count: room - count)
            }
            let crc = ~redoubt_crc32c_update(0xFFFF_FFFF, out.baseAddress, out.count)
            withUnsafeBytes(of: crc.littleEndian) { for i in 0..<4 { out[crcOffset + i] = $0[i] } }
        }
    }

    /// Where the CRC sits in the header: after magic, set ID, volume, block, kind, flags,
    /// payload length, record seq and record offset.
    static let crcOffset = 8 + 16 + 4 + 8 + 2 + 4 + 8 + 8

    /// Parses and verifies one block read from `volume` at position `block`.
    /// Returns the header and the used payload; a bad magic or CRC is `E_MEDIA_BLOCK`.
    public static func decode(_ b: [UInt8], volume: UInt32, block: UInt64) throws(MediaError) -> (MediaBlockHeader,
        [UInt8]) {
        func bad(_ why: String) -> MediaError {
            MediaError(code: "E_MEDIA_BLOCK", volume: volume, block: block, detail: why)
        }
        guard b.count > MediaBlockHeader.size else { throw bad("short block of \(b.count) bytes (truncated volume?)") }
        guard Array(b[0..<8]) == MediaBlockHeader.magic else {
            throw bad("no block magic (unlabelled or foreign medium, or damage)")
        }
        func u<T: FixedWidthInteger>(_ at: Int, _: T.Type) -> T {
            var v: T = 0
            for i in 0..<MemoryLayout<T>.size { v |= T(b[at + i]) << (8 * i) }
            return v
        }
        let crcAt = crcOffset
        guard CRC32C.checksum(b, zeroedAt: crcAt) == u(crcAt, UInt32.self) else {
            throw bad("checksum mismatch (damaged block)")
        }
        guard b[62] < 64, 1 << Int(b[62]) == b.count else {
            throw bad("block size byte \(b[62]) does not match the \(b.count)-byte block")
        }
        guard let kind = MediaBlockKind(rawValue: b[36]) else { throw bad("unknown block kind \(b[36])") }
        let len = Int(u(38, UInt32.self))
        guard len <= b.count - MediaBlockHeader.size else { throw bad("payload length \(len) exceeds block") }
        let h = MediaBlockHeader(setID: Array(b[8..<24]), volumeSeq: u(24, UInt32.self), blockSeq: u(28, UInt64.self),
                                 kind: kind, lastOfRecord: b[37] & 1 == 1, payloadLen: UInt32(len),
                                 recordSeq: u(42, UInt64.self), recordOff: u(50, UInt64.self))
        guard h.volumeSeq == volume else { throw bad("block belongs to volume \(h.volumeSeq) (out-of-order volume?)") }
        guard h.blockSeq == block else {
            throw bad("block numbered \(h.blockSeq), expected \(block) (lost or repeated block)")
        }
        return (h, Array(b[MediaBlockHeader.size..<(MediaBlockHeader.size + len)]))
    }
}

/// CRC-32C (Castagnoli); detects accidental damage only (§13.2). SSE4.2 where the CPU has
/// it (CRedoubtSys), else a table.
public enum CRC32C {
    /// CRC-32C of `bytes`.
    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { ~redoubt_crc32c_update(0xFFFF_FFFF, $0.baseAddress, $0.count) }
    }

    /// CRC-32C of `bytes` as if the four bytes at `zeroedAt` were zero (a block's own
    /// checksum field), without copying the block.
    static func checksum(_ bytes: [UInt8], zeroedAt at: Int) -> UInt32 {
        bytes.withUnsafeBytes { b -> UInt32 in
            let zeros: [UInt8] = [0, 0, 0, 0]
            var c = redoubt_crc32c_update(0xFFFF_FFFF, b.baseAddress, at)
            c = zeros.withUnsafeBytes { redoubt_crc32c_update(c, $0.baseAddress, 4) }
            return ~redoubt_crc32c_update(c, b.baseAddress.map { $0 + at + 4 }, b.count - at - 4)
        }
    }
}

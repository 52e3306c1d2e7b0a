import CRedoubtHash
import Crypto

/// A SHA-256 computation that can advance together with another one.
///
/// Every byte a backup writes is hashed twice: the keyed chunk ID over the plaintext and
/// the pack ID over the sealed pack. With the x86 SHA extensions one message is bound by
/// the latency of the round instruction, so two independent messages hashed in one loop
/// cost less than one after the other (CRedoubtHash). Without the extensions this is
/// swift-crypto's SHA256 and ``update(_:_:alongside:_:)`` hashes the two in turn.
/// The digest is the same either way.
public struct SHA256Stream: @unchecked Sendable {
    /// Whether the CPU's SHA extensions are in use (decided once per process).
    public static let accelerated = redoubt_sha256_accelerated() != 0

    private var ctx = redoubt_sha256_ctx()
    private var portable: SHA256?

    public init() {
        if Self.accelerated { redoubt_sha256_init(&ctx) } else { portable = SHA256() }
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        if portable != nil {
            portable!.update(bufferPointer: bytes)
        } else {
            redoubt_sha256_update(&ctx, bytes.baseAddress, bytes.count)
        }
    }

    public mutating func update(_ bytes: [UInt8]) { bytes.withUnsafeBytes { update($0) } }

    /// `self.update(mine)` and `other.update(theirs)`, their common blocks in one loop.
    public mutating func update(_ mine: UnsafeRawBufferPointer, alongside other: inout SHA256Stream,
        _ theirs: UnsafeRawBufferPointer) {
        if portable != nil || other.portable != nil {
            update(mine)
            other.update(theirs)
        } else {
            redoubt_sha256_update2(&ctx, mine.baseAddress, mine.count, &other.ctx, theirs.baseAddress, theirs.count)
        }
    }

    /// The 32-byte digest.
    public consuming func finalize() -> [UInt8] {
        if let p = portable { return Array(p.finalize()) }
        var out = [UInt8](repeating: 0, count: 32)
        out.withUnsafeMutableBufferPointer { redoubt_sha256_final(&ctx, $0.baseAddress!) }
        return out
    }
}

/// HMAC-SHA256 (RFC 2104) over ``SHA256Stream``, with the keyed pads hashed once per key.
struct HMACSHA256Pads: Sendable {
    private let inner: SHA256Stream
    private let outer: SHA256Stream

    /// `key` must be at most 64 bytes (the chunk-ID key is 32).
    init(key: UnsafeRawBufferPointer) {
        precondition(key.count <= 64, "HMAC key longer than the SHA-256 block")
        var ipad = [UInt8](repeating: 0x36, count: 64)
        var opad = [UInt8](repeating: 0x5c, count: 64)
        for (i, b) in key.enumerated() {
            ipad[i] ^= b
            opad[i] ^= b
        }
        var i = SHA256Stream(), o = SHA256Stream()
        i.update(ipad)
        o.update(opad)
        inner = i
        outer = o
    }

    /// A fresh inner hash, keyed.
    func start() -> SHA256Stream { inner }

    /// The MAC once the whole message has gone into `started`.
    func finish(_ started: consuming SHA256Stream) -> [UInt8] {
        var o = outer
        o.update(started.finalize())
        return o.finalize()
    }
}

import NIOCore

/// A request body sent from an array in small slices. Why: the TLS layer keeps, per
/// pooled connection, an outbound buffer as large as the largest write it was given;
/// whole-array or multi-MiB writes left every connection holding megabytes after a pack
/// upload. A value type, so a request sent again starts from the first byte.
struct BodySlices: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    /// Each slice becomes one flushed TLS write whose ciphertext buffer waits in the socket's
    /// queue until loopback drains it; a first backup's peak held 38 MB of them at 256 KiB
    /// (heaptrack). Paired first backups of a 566 MB tree: 256 KiB 274/300 MiB peak RSS,
    /// 64 KiB 252/250/281/262, 16 KiB 265/248 with 5% more CPU.
    static let sliceSize = 64 << 10

    let bytes: [UInt8]

    struct AsyncIterator: AsyncIteratorProtocol {
        let bytes: [UInt8]
        var offset = 0

        mutating func next() async -> ByteBuffer? {
            guard offset < bytes.count else { return nil }
            let end = Swift.min(offset + BodySlices.sliceSize, bytes.count)
            defer { offset = end }
            return bytes.withUnsafeBytes { ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: $0[offset..<end])) }
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(bytes: bytes) }
}

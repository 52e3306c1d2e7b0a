import NIOCore

/// A request body sent from an array in small slices. Why: the TLS layer keeps, per
/// pooled connection, an outbound buffer as large as the largest write it was given;
/// whole-array or multi-MiB writes left every connection holding megabytes after a pack
/// upload. A value type, so a request sent again starts from the first byte.
struct BodySlices: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    static let sliceSize = 256 << 10

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

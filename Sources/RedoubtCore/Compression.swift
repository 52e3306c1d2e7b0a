import CZstd

/// How a chunk's payload is stored. Raw values are part of the format (docs/FORMAT.md §4).
public enum CompressionKind: UInt8, Sendable {
    case none = 0
    case zstd = 1
}

/// A reusable zstd compressor that keeps a chunk compressed only when that saves space.
///
/// Not thread-safe: one per task. It reuses its context and output buffer, so the hot
/// path allocates nothing.
public final class ChunkCompressor {
    public let level: Int32
    private let cctx: OpaquePointer
    private var output: [UInt8] = []

    /// The format-v1 default level.
    public static let defaultLevel: Int32 = 3
    /// Bytes of a chunk trial-compressed at level 1 to decide whether to compress it.
    static let probeSize = 16 << 10
    /// A chunk is stored compressed only if that saves at least 1/32 of its size.
    static func worthKeeping(raw: Int, compressed: Int) -> Bool { compressed < raw - raw / 32 }

    public init(level: Int32 = ChunkCompressor.defaultLevel) throws(CoreError) {
        guard let c = ZSTD_createCCtx() else {
            throw CoreError(.compression, object: "zstd", "cannot create a compression context (out of memory?)")
        }
        cctx = c
        self.level = level
    }

    deinit { ZSTD_freeCCtx(cctx) }

    /// Compresses `input` if that saves space, calling `body` with the kind and the
    /// payload to store (either the compressed bytes or `input` itself).
    ///
    /// Incompressible data costs one level-1 trial on a 16 KiB sample from the middle
    /// of the chunk: zstd passes such data at several GB/s, but skipping it is cheaper.
    public func compress<R>(_ input: UnsafeRawBufferPointer, _ body: (CompressionKind,
        UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        if input.count >= 4 * Self.probeSize && !probeCompresses(input) {
            return try body(.none, input)
        }
        let bound = ZSTD_compressBound(input.count)
        if output.count < bound { output = [UInt8](repeating: 0, count: bound) }
        let n = output.withUnsafeMutableBytes { out in
            ZSTD_compressCCtx(cctx, out.baseAddress, out.count, input.baseAddress, input.count, level)
        }
        if ZSTD_isError(n) != 0 || !Self.worthKeeping(raw: input.count, compressed: n) {
            return try body(.none, input)
        }
        return try output.withUnsafeBytes { try body(.zstd, UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
    }

    private func probeCompresses(_ input: UnsafeRawBufferPointer) -> Bool {
        let start = (input.count / 2) - Self.probeSize / 2
        let sample = UnsafeRawBufferPointer(rebasing: input[start..<(start + Self.probeSize)])
        let bound = ZSTD_compressBound(sample.count)
        if output.count < bound { output = [UInt8](repeating: 0, count: Swift.max(bound, 1 << 20)) }
        let n = output.withUnsafeMutableBytes { out in
            ZSTD_compressCCtx(cctx, out.baseAddress, out.count, sample.baseAddress, sample.count, 1)
        }
        return ZSTD_isError(n) == 0 && Self.worthKeeping(raw: sample.count, compressed: n)
    }
}

/// A reusable zstd decompressor for chunk payloads. Not thread-safe: one per task.
public final class ChunkDecompressor {
    private let dctx: OpaquePointer

    public init() throws(CoreError) {
        guard let d = ZSTD_createDCtx() else {
            throw CoreError(.compression, object: "zstd", "cannot create a decompression context (out of memory?)")
        }
        dctx = d
    }

    deinit { ZSTD_freeDCtx(dctx) }

    /// Decompresses `input`, which must expand to exactly `rawLength` bytes.
    public func decompress(_ input: UnsafeRawBufferPointer, rawLength: Int,
        object: String) throws(CoreError) -> [UInt8] {
        // Uninitialized, not zeroed first: zstd writes every byte of a successful expansion,
        // and an array that did not get exactly `rawLength` of them is thrown away.
        var n = 0
        let out = [UInt8](unsafeUninitializedCapacity: rawLength) { o, initialized in
            n = ZSTD_decompressDCtx(dctx, o.baseAddress, o.count, input.baseAddress, input.count)
            initialized = ZSTD_isError(n) == 0 && n == rawLength ? n : 0
        }
        if ZSTD_isError(n) != 0 {
            let name = String(cString: ZSTD_getErrorName(n))
            throw CoreError(.corrupt, object: object, "zstd payload does not decompress: \(name)")
        }
        guard n == rawLength else {
            throw CoreError(.corrupt, object: object, "zstd payload expands to \(n) bytes, index says \(rawLength)")
        }
        return out
    }
}

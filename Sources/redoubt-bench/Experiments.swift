import Crypto
import RedoubtCore

// Variants of core code measured beside the real thing (`--experiments`). Each checks
// that it produces exactly what the core produces before it is timed.

extension Stages {
    /// The pipeline wired by hand from the public pieces (Chunker, ChunkIDKey,
    /// ChunkCompressor, PackWriter), each chunk ID computed with the key alone (not in one
    /// loop with the pack hash) and each pack's memory fresh; compare with
    /// ``pipeline(_:_:level:)``.
    func handPipeline(_ name: String, _ data: UnsafeRawBufferPointer, level: Int32) throws -> StageResult {
        let compressor = try ChunkCompressor(level: level)
        let key = material.chunkIDKey
        let target = 32 << 20
        return try measure("hand-wired pipeline, level \(level) (experiment)", corpus: name, bytes: data.count,
            runs: runs) {
            var w: PackWriter? = nil
            var off = 0, chunks = 0, packs = 0, out = 0
            while off < data.count {
                let rest = UnsafeRawBufferPointer(rebasing: data[off...])
                let len = chunker.cut(rest, final: true) ?? rest.count
                let chunk = UnsafeRawBufferPointer(rebasing: rest[0..<len])
                let id = key.chunkID(for: chunk)
                if w == nil {
                    w = try PackWriter(recipient: material.readPublicKey, capacity: target + (9 << 20), version: 1)
                }
                try compressor.compress(chunk) { kind, payload in
                    try w!.append(id: id, kind: kind, rawLength: len, payload: payload)
                }
                if w!.size >= target, let full = w.take() {
                    out += try (consume full).finish().bytes.count
                    packs += 1
                }
                off += len
                chunks += 1
            }
            if let last = w.take() { out += try (consume last).finish().bytes.count; packs += 1 }
            return RunInfo(outputBytes: out, chunks: chunks, packs: packs, sink: UInt64(out))
        }
    }
}

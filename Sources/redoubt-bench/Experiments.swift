import Crypto
import RedoubtCore

// Variants of core code measured beside the real thing (`--experiments`). Each checks
// that it produces exactly what the core produces before it is timed.

/// The FastCDC scan of ``Chunker/cut(_:final:)`` advanced two bytes per step through a
/// 65 536-entry pair table T[b0 | b1 << 8] = 2·g(b0) + g(b1) (512 KiB, built from the
/// same gear table): H(i+2) = 4·H(i) + T[pair], so the loop-carried chain is one shift
/// and one add per two bytes instead of per byte (the compiler turns every one-table
/// formulation back into shift+add per byte). H(i+1) = 2·H(i) + g(b0) is computed off
/// the chain for its own test. Same masks, same cut points as the core chunker.
struct PairTableCut {
    let parameters: Chunker.Parameters
    let gear: [UInt64]
    let pairs: [UInt64]
    let maskSmall: UInt64
    let maskLarge: UInt64

    init(seed: ChunkerSeed, parameters: Chunker.Parameters = .default) {
        self.parameters = parameters
        let okm = seed.secret.withUnsafeBytes { ikm in
            HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: ikm), salt: Array("redoubt/v1/chunker-gear".utf8), outputByteCount: 2048)
        }
        var table = [UInt64](repeating: 0, count: 256)
        okm.withUnsafeBytes { raw in
            for i in 0..<256 { table[i] = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)) }
        }
        gear = table
        pairs = (0..<65536).map { p in (table[p & 255] &<< 1) &+ table[p >> 8] }
        let bits = parameters.avg.trailingZeroBitCount
        maskSmall = ~UInt64(0) << UInt64(64 - (bits + 2))
        maskLarge = ~UInt64(0) << UInt64(64 - (bits - 2))
    }

    func cut(_ data: UnsafeRawBufferPointer, final: Bool) -> Int? {
        let n = data.count
        let p = parameters
        if n <= p.min { return final ? (n == 0 ? nil : n) : (n >= p.max ? n : nil) }
        let limit = Swift.min(n, p.max)
        let normal = Swift.min(p.avg, limit)
        let found: Int? = gear.withUnsafeBufferPointer { g -> Int? in
            pairs.withUnsafeBufferPointer { t -> Int? in
                let base = data.baseAddress!
                var hash: UInt64 = 0
                var i = p.min
                func scan(to end: Int, mask m: UInt64) -> Int? {
                    while i + 2 <= end {
                        let h1 = (hash &<< 1) &+ g[Int(base.load(fromByteOffset: i, as: UInt8.self))]
                        hash = (hash &<< 2) &+ t[Int(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt16.self)))]
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
                if let c = scan(to: normal, mask: maskSmall) { return c }
                return scan(to: limit, mask: maskLarge)
            }
        }
        if let found { return found }
        if limit == p.max { return p.max }
        return final ? n : nil
    }
}

extension Stages {
    func pairTableChunker(_ name: String, _ data: UnsafeRawBufferPointer, _ spans: [(Int, Int)]) throws -> StageResult {
        let c = PairTableCut(seed: material.chunkerSeed)
        var off = 0
        for (o, l) in spans {
            guard o == off, c.cut(UnsafeRawBufferPointer(rebasing: data[o...]), final: true) == l else {
                throw BenchError("pair-table chunker cuts differ from Chunker at offset \(o)")
            }
            off += l
        }
        return measure("chunker, pair table (experiment)", corpus: name, bytes: data.count, runs: runs) {
            var off = 0, n = 0
            while off < data.count {
                off += c.cut(UnsafeRawBufferPointer(rebasing: data[off...]), final: true) ?? (data.count - off)
                n += 1
            }
            return RunInfo(chunks: n, sink: UInt64(n))
        }
    }

    /// The pipeline wired by hand from the public pieces (Chunker, ChunkIDKey,
    /// ChunkCompressor, PackWriter), finishing each pack with `(consume w).finish()` so
    /// the pack buffer is not copied; compare with ``pipeline(_:_:level:)``.
    /// With `pairTable`, chunks are cut by ``PairTableCut`` (same cuts) instead of ``Chunker``.
    func handPipeline(_ name: String, _ data: UnsafeRawBufferPointer, level: Int32, pairTable: Bool = false) throws -> StageResult {
        let compressor = try ChunkCompressor(level: level)
        let key = material.chunkIDKey
        let target = 32 << 20
        let fast = PairTableCut(seed: material.chunkerSeed)
        let cut: (UnsafeRawBufferPointer) -> Int? = pairTable ? { fast.cut($0, final: true) } : { chunker.cut($0, final: true) }
        let label = pairTable ? "hand-wired + pair-table chunker, level \(level) (exp.)" : "hand-wired pipeline, level \(level) (experiment)"
        return try measure(label, corpus: name, bytes: data.count, runs: runs) {
            var w: PackWriter? = nil
            var off = 0, chunks = 0, packs = 0, out = 0
            while off < data.count {
                let rest = UnsafeRawBufferPointer(rebasing: data[off...])
                let len = cut(rest) ?? rest.count
                let chunk = UnsafeRawBufferPointer(rebasing: rest[0..<len])
                let id = key.chunkID(for: chunk)
                if w == nil { w = try PackWriter(recipient: material.readPublicKey, capacity: target + (9 << 20)) }
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

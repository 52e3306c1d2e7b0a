import CZstd
import Crypto
import Foundation
import RedoubtCore

/// One measured stage on one corpus.
struct StageResult: Encodable {
    var stage: String
    var corpus: String
    /// Input bytes processed per run.
    var bytes: Int
    /// Best wall time of the runs, in seconds.
    var seconds: Double
    var runs: Int
    /// CPU time of this thread in the best run, in seconds. Well below `seconds` means
    /// the machine was busy and the wall-clock figure is pessimistic.
    var cpuSeconds: Double
    /// Input bytes over output bytes, for stages that compress.
    var compressionRatio: Double?
    /// Chunks (or fixed blocks) processed per run.
    var chunks: Int?
    /// Packs finished per run (pipeline stages).
    var packs: Int?
    /// Chunks the pipeline found already sealed (dedup) per run.
    var reused: Int?
    var mbPerSecond: Double { Double(bytes) / seconds / 1e6 }

    enum CodingKeys: String, CodingKey {
        case stage, corpus, bytes, seconds, cpuSeconds, runs, compressionRatio, chunks, packs, reused, mbPerSecond
    }
    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(stage, forKey: .stage)
        try c.encode(corpus, forKey: .corpus)
        try c.encode(bytes, forKey: .bytes)
        try c.encode(seconds, forKey: .seconds)
        try c.encode(cpuSeconds, forKey: .cpuSeconds)
        try c.encode(runs, forKey: .runs)
        try c.encodeIfPresent(compressionRatio, forKey: .compressionRatio)
        try c.encodeIfPresent(chunks, forKey: .chunks)
        try c.encodeIfPresent(packs, forKey: .packs)
        try c.encodeIfPresent(reused, forKey: .reused)
        try c.encode((mbPerSecond * 10).rounded() / 10, forKey: .mbPerSecond)
    }
}

/// What one run of a stage reports besides its time.
struct RunInfo {
    var outputBytes: Int? = nil
    var chunks: Int? = nil
    var packs: Int? = nil
    var reused: Int? = nil
    /// Folded into a checksum so the optimizer cannot drop the work.
    var sink: UInt64 = 0
}

/// Keeps results observable; printed in verbose mode.
nonisolated(unsafe) var benchSink: UInt64 = 0

/// Runs `body` `runs` times and keeps the fastest (ContinuousClock, wall time).
func measure(_ stage: String, corpus: String, bytes: Int, runs: Int,
    _ body: () throws -> RunInfo) rethrows -> StageResult {
    let clock = ContinuousClock()
    var best = Duration.seconds(1_000_000)
    var bestCPU = 0.0
    var info = RunInfo()
    for _ in 0..<runs {
        var r = RunInfo()
        let cpu0 = threadCPUSeconds()
        let d = try clock.measure { r = try body() }
        let cpu = threadCPUSeconds() - cpu0
        benchSink &+= r.sink
        if d < best { best = d; info = r; bestCPU = cpu }
    }
    let secs = Double(best.components.seconds) + Double(best.components.attoseconds) / 1e18
    return StageResult(stage: stage, corpus: corpus, bytes: bytes, seconds: secs, runs: runs, cpuSeconds: bestCPU,
                       compressionRatio: info.outputBytes.map { Double(bytes) / Double(Swift.max($0, 1)) },
                       chunks: info.chunks, packs: info.packs, reused: info.reused)
}

/// CPU time consumed by the calling thread.
func threadCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// The stages, each alone and then together, over one in-memory corpus.
struct Stages {
    let material: SharedWriteMaterial
    let chunker: Chunker
    let runs: Int

    init(runs: Int) throws {
        let read = try ReadPrivateKey.generate()
        material = SharedWriteMaterial(readPublicKey: read.publicKey, chunkIDKey: .generate(), chunkerSeed: .generate())
        chunker = Chunker(seed: material.chunkerSeed)
        self.runs = runs
    }

    /// Chunk boundaries as the pipeline would cut them (offset, length).
    func spans(_ data: UnsafeRawBufferPointer) -> [(Int, Int)] {
        var out: [(Int, Int)] = []
        var off = 0
        while off < data.count {
            let len = chunker.cut(UnsafeRawBufferPointer(rebasing: data[off...]), final: true) ?? (data.count - off)
            out.append((off, len))
            off += len
        }
        return out
    }

    /// Fixed-size blocks (for the zstd-alone figures, which the issue states on 1 MiB chunks).
    static func blocks(_ count: Int, size: Int = 1 << 20) -> [(Int, Int)] {
        stride(from: 0, to: count, by: size).map { ($0, Swift.min(size, count - $0)) }
    }

    func chunkerAlone(_ name: String, _ data: UnsafeRawBufferPointer) -> StageResult {
        measure("chunker (FastCDC)", corpus: name, bytes: data.count, runs: runs) {
            var off = 0, n = 0
            // Streaming callers pass >= max bytes with final: false; over one in-memory
            // buffer final: true gives the same cuts.
            while off < data.count {
                off += chunker.cut(UnsafeRawBufferPointer(rebasing: data[off...]), final: true) ?? (data.count - off)
                n += 1
            }
            return RunInfo(chunks: n, sink: UInt64(n))
        }
    }

    func chunkID(_ name: String, _ data: UnsafeRawBufferPointer, _ spans: [(Int, Int)]) -> StageResult {
        let key = material.chunkIDKey
        return measure("chunk ID (HMAC-SHA256)", corpus: name, bytes: data.count, runs: runs) {
            var s: UInt64 = 0
            for (o, l) in spans {
                s &+= UInt64(key.chunkID(for: UnsafeRawBufferPointer(rebasing: data[o..<(o + l)])).bytes[0])
            }
            return RunInfo(chunks: spans.count, sink: s)
        }
    }

    func sha256(_ name: String, _ data: UnsafeRawBufferPointer, _ spans: [(Int, Int)]) -> StageResult {
        measure("SHA-256 (swift-crypto)", corpus: name, bytes: data.count, runs: runs) {
            var s: UInt64 = 0
            for (o, l) in spans {
                var h = SHA256()
                h.update(bufferPointer: UnsafeRawBufferPointer(rebasing: data[o..<(o + l)]))
                h.finalize().withUnsafeBytes { s &+= UInt64($0[0]) }
            }
            return RunInfo(chunks: spans.count, sink: s)
        }
    }

    /// Raw zstd (ZSTD_compressCCtx, one context, one reused output buffer), no probe.
    func zstd(_ name: String, _ data: UnsafeRawBufferPointer, level: Int32) throws -> StageResult {
        guard let cctx = ZSTD_createCCtx() else { throw BenchError("ZSTD_createCCtx failed") }
        defer { ZSTD_freeCCtx(cctx) }
        let blocks = Self.blocks(data.count)
        let out = UnsafeMutableRawBufferPointer.allocate(byteCount: ZSTD_compressBound(1 << 20), alignment: 64)
        defer { out.deallocate() }
        return try measure("zstd -\(level) alone (1 MiB blocks)", corpus: name, bytes: data.count, runs: runs) {
            var total = 0
            for (o, l) in blocks {
                let n = ZSTD_compressCCtx(cctx, out.baseAddress, out.count, data.baseAddress! + o, l, level)
                guard ZSTD_isError(n) == 0 else { throw BenchError("zstd: \(String(cString: ZSTD_getErrorName(n)))") }
                total += n
            }
            return RunInfo(outputBytes: total, chunks: blocks.count, sink: UInt64(total))
        }
    }

    /// RedoubtCore's compress-or-skip (level-1 probe, then the level) on the CDC chunks.
    func compressOrSkip(_ name: String, _ data: UnsafeRawBufferPointer, _ spans: [(Int, Int)],
        level: Int32) throws -> StageResult {
        let c = try ChunkCompressor(level: level)
        return measure("compress-or-skip, level \(level)", corpus: name, bytes: data.count, runs: runs) {
            var total = 0
            for (o, l) in spans {
                total += c.compress(UnsafeRawBufferPointer(rebasing: data[o..<(o + l)])) { _, p in p.count }
            }
            return RunInfo(outputBytes: total, chunks: spans.count, sink: UInt64(total))
        }
    }

    /// AES-256-GCM seal of each CDC chunk (AES.GCM.seal; its output buffer comes from
    /// malloc, which the tuned thresholds keep off mmap).
    func aesSeal(_ name: String, _ data: UnsafeRawBufferPointer, _ spans: [(Int, Int)]) throws -> StageResult {
        let key = SymmetricKey(size: .bits256)
        let aad: [UInt8] = Array(repeating: 7, count: 53)
        return try measure("AES-256-GCM seal", corpus: name, bytes: data.count, runs: runs) {
            var s: UInt64 = 0
            var counter: UInt64 = 0
            var nonceBytes = [UInt8](repeating: 0, count: 12)
            for (o, l) in spans {
                counter += 1
                withUnsafeBytes(of: counter.littleEndian) { for i in 0..<8 { nonceBytes[4 + i] = $0[i] } }
                let box = try AES.GCM.seal(UnsafeRawBufferPointer(rebasing: data[o..<(o + l)]), using: key,
                                           nonce: try AES.GCM.Nonce(data: nonceBytes), authenticating: aad)
                s &+= UInt64(box.tag.first ?? 0)
            }
            return RunInfo(chunks: spans.count, sink: s)
        }
    }

    /// PackWriter alone on pre-chunked, uncompressed data: seal, copy into the pack and
    /// the pack's SHA-256, packs finished at 32 MiB.
    func packWriter(_ name: String, _ data: UnsafeRawBufferPointer, _ spans: [(Int, Int)]) throws -> StageResult {
        let ids = spans.map {
            (o, l) in material.chunkIDKey.chunkID(for: UnsafeRawBufferPointer(rebasing: data[o..<(o + l)]))
        }
        return try measure("PackWriter.append (seal+copy+pack SHA)", corpus: name, bytes: data.count, runs: runs) {
            var packs = 0, out = 0
            var w: PackWriter? = nil
            for (i, (o, l)) in spans.enumerated() {
                if w == nil {
                    w = try PackWriter(recipient: material.readPublicKey, capacity: (32 << 20) + (9 << 20), version: 1)
                }
                try w!.append(id: ids[i], kind: .none, rawLength: l,
                    payload: UnsafeRawBufferPointer(rebasing: data[o..<(o + l)]))
                if w!.size >= 32 << 20 {
                    let p = try w.take()!.finish()
                    packs += 1
                    out += p.bytes.count
                }
            }
            if let last = w.take() { out += try (consume last).finish().bytes.count; packs += 1 }
            return RunInfo(outputBytes: out, chunks: spans.count, packs: packs, sink: UInt64(out))
        }
    }

    /// The whole write path as a backup runs it: PackPipeline (chunk → keyed ID → dedup
    /// check → compress-or-skip → seal → pack, finished at 32 MiB with its SHA-256).
    func pipeline(_ name: String, _ data: UnsafeRawBufferPointer, level: Int32) throws -> StageResult {
        try measure("whole pipeline, zstd level \(level)", corpus: name, bytes: data.count, runs: runs) {
            let p = try PackPipeline(material: material, compressionLevel: level)
            var off = 0, chunks = 0, packs = 0, out = 0
            while off < data.count {
                let rest = UnsafeRawBufferPointer(rebasing: data[off...])
                let len = p.chunker.cut(rest, final: true) ?? rest.count
                try p.add(chunk: UnsafeRawBufferPointer(rebasing: rest[0..<len]))
                off += len
                chunks += 1
                var done = p.takeFinishedPacks()
                while let f = done.popLast() {
                    packs += 1
                    out += f.bytes.count
                    p.recycle(consume f)  // as a backup does once the pack is uploaded
                }
            }
            for f in try p.flush() { packs += 1; out += f.bytes.count }
            return RunInfo(outputBytes: out, chunks: chunks, packs: packs, reused: Int(p.chunksReused),
                sink: UInt64(out))
        }
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

import Foundation
import RedoubtCore

/// `redoubt-bench inspect [--size-mb N] [--runs N]`: what the server's key-less check of an
/// uploaded pack costs per byte (PackReader.inspect, the call RepositoryService.uploadPack
/// makes), for a format-1 pack (pack hash, structure) and a format-2 pack of the same
/// data (also every chunk's hash against its ID), on one core. Chunks of about 1 MiB of
/// incompressible data, as the chunker cuts them; best of N runs.
func runInspectBenchmark(_ args: [String]) {
    var sizeMB = 64, runs = 5
    var i = 0
    while i < args.count {
        switch args[i] {
        case "--size-mb" where i + 1 < args.count: sizeMB = Int(args[i + 1]) ?? sizeMB; i += 1
        case "--runs" where i + 1 < args.count: runs = Int(args[i + 1]) ?? runs; i += 1
        default: fail("inspect: unknown argument \(args[i]); usage: redoubt-bench inspect [--size-mb N] [--runs N]")
        }
        i += 1
    }
    do {
        let keys = try TenantKeys.generate()
        let data = Corpus.random(count: sizeMB << 20)
        let chunk = 1 << 20
        func build(_ version: UInt16) throws -> FinishedPack {
            var w = try PackWriter(recipient: keys.readKey.publicKey, capacity: data.count + (1 << 20),
                                   version: version)
            let compressor = try ChunkCompressor()
            var scratch: [UInt8] = []
            try data.withUnsafeBytes { all in
                var o = 0
                while o < all.count {
                    let c = UnsafeRawBufferPointer(rebasing: all[o..<min(o + chunk, all.count)])
                    if version == 1 {
                        let id = keys.chunkIDKey.chunkID(for: c)
                        try compressor.compress(c) { kind, payload in
                            try w.append(id: id, kind: kind, rawLength: c.count, payload: payload)
                        }
                    } else {
                        try w.append(try ConvergentSealing.seal(c, compressor: compressor, chunkIDKey: keys.chunkIDKey,
                                                                scratch: &scratch))
                    }
                    o += c.count
                }
            }
            return try w.finish()
        }
        print("PackReader.inspect (server's key-less check of an upload), \(sizeMB) MiB pack, 1 MiB chunks, "
              + "best of \(runs), one core")
        print("SHA-256 accelerated (x86 SHA extensions): \(SHA256Stream.accelerated)")
        var rates: [UInt16: Double] = [:]
        for version: UInt16 in [1, 2] {
            let pack = try build(version)
            var best = Duration.seconds(1_000_000)
            for _ in 0..<runs {
                let start = ContinuousClock.now
                let s = try PackReader.inspect(pack.bytes, expectedID: pack.id)
                let t = ContinuousClock.now - start
                precondition(s.chunkIDs.count == pack.entries.count)
                best = min(best, t)
            }
            let seconds = Double(best.components.seconds) + Double(best.components.attoseconds) / 1e18
            let mbps = Double(pack.bytes.count) / 1e6 / seconds
            rates[version] = mbps
            print(String(format: "  format %d: %8.1f MB/s  (%.1f ms for %d bytes, %d chunks)", Int(version), mbps,
                         seconds * 1000, pack.bytes.count, pack.entries.count))
        }
        if let a = rates[1], let b = rates[2] { print(String(format: "  format 2 / format 1: %.2f", b / a)) }
    } catch {
        fail("inspect: \(error)")
    }
}

import Foundation
import RedoubtCore

/// `redoubt-bench activity DIR [--runs N]`: what the host-side ransomware signals cost per
/// file (docs/FORMAT.md §6.5): the head sample of every regular file under DIR (its first
/// 4 KiB, read into memory first, as the backup has it in its buffer anyway) and the
/// activity analysis of all of them against a previous snapshot of the same paths. Prints
/// nanoseconds per file (best of N runs); scripts/bench-detect sets it beside the measured
/// time per file of a first backup.
func runActivityBenchmark(_ args: [String]) {
    guard let dir = args.first else {
        FileHandle.standardError.write(Data("usage: redoubt-bench activity DIR [--runs N]\n".utf8))
        exit(2)
    }
    var runs = 5
    if let i = args.firstIndex(of: "--runs"), i + 1 < args.count, let n = Int(args[i + 1]) { runs = max(1, n) }
    var heads: [(path: [UInt8], bytes: [UInt8], inode: UInt64)] = []
    let e = FileManager.default.enumerator(atPath: dir)
    while let rel = e?.nextObject() as? String {
        let path = dir + "/" + rel
        var st = stat()
        guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG,
              let h = FileHandle(forReadingAtPath: path) else { continue }
        let bytes = Array(h.readData(ofLength: HeadSample.sampleBytes))
        try? h.close()
        heads.append((Array(path.utf8), bytes, UInt64(st.st_ino)))
    }
    guard !heads.isEmpty else {
        FileHandle.standardError.write(Data("no regular files under \(dir)\n".utf8))
        exit(1)
    }
    let previous = heads.map { PreviousFile(path: $0.path, device: 1, inode: $0.inode) }
    var best = Duration.seconds(1_000_000)
    var sink = 0
    for _ in 0..<runs {
        let clock = ContinuousClock()
        let start = clock.now
        var files: [ActivityFile] = []
        files.reserveCapacity(heads.count)
        for h in heads {
            let sample = h.bytes.withUnsafeBytes { HeadSample.measure($0) }
            files.append(ActivityFile(path: h.path, device: 1, inode: h.inode, change: .changed, head: sample))
        }
        let a = ActivityAnalysis.analyze(files: files, previous: previous, sealedBytesRaw: 0, sealedBytesStored: 0)
        sink &+= Int(a.sampledFiles)
        best = min(best, clock.now - start)
    }
    let ns = Double(best.components.seconds) * 1e9 + Double(best.components.attoseconds) / 1e9
    print(String(format: "files %d ns-per-file %.0f sampled %d", heads.count, ns / Double(heads.count), sink / runs))
}

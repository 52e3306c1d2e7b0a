// redoubt-bench: MB/s of each stage of the core write path and of the whole pipeline, on
// one core, over in-memory corpora (incompressible and source-code text). Only the
// processing is timed (ContinuousClock, best of N runs). See scripts/bench-core.
import CMallocTune
import Foundation
import RedoubtCore

redoubt_tune_malloc()

if CommandLine.arguments.dropFirst().first == "activity" {
    runActivityBenchmark(Array(CommandLine.arguments.dropFirst(2)))
    exit(0)
}

if CommandLine.arguments.dropFirst().first == "inspect" {
    runInspectBenchmark(Array(CommandLine.arguments.dropFirst(2)))
    exit(0)
}

struct Options {
    var sizeMB = 512
    var textMB: Int? = nil
    var textFile: String? = nil
    var textRoots = Corpus.defaultTextRoots
    var saveText: String? = nil
    var runs = 3
    var json = false
    var verbose = false
    /// Run only stages whose name contains one of these (for profiling).
    var only: [String] = []
    var corpora = ["incompressible", "text"]
    /// Also time variants of core code (see Experiments.swift).
    var experiments = false
    /// Figures from other tools on this machine (scripts/bench-core): key → MB/s.
    var references: [(key: String, mbPerSecond: Double)] = []
}

let usage = """
    usage: redoubt-bench [--size-mb N] [--text-mb N] [--text-file PATH] [--text-roots DIR:DIR...]
                         [--save-text PATH] [--runs N] [--json] [--verbose]
                         [--only WORD,WORD] [--corpus incompressible|text] [--experiments]
                         [--reference KEY=MBPS ...]

      --size-mb N       incompressible corpus, MiB (default 512)
      --text-mb N       source-text corpus, MiB (default: half of --size-mb)
      --text-file PATH  use this file as the text corpus instead of gathering one
      --text-roots L    colon-separated directories to gather *.swift/*.h/*.c/*.py/*.md from
      --save-text PATH  write the text corpus used to PATH, its description to PATH.meta
                        (for zstd -b on the same bytes, then --text-file PATH)
      --runs N          runs per stage; the best is kept (default 3)
      --json            machine-readable output on stdout
      --verbose         progress on stderr
      --only L          run only these stages (comma-separated; a word matches keys containing it):
                        chunker chunkid sha256 zstd1 zstd3 compress3 aes packwriter pipeline3 pipeline1
      --corpus C        run only on this corpus (for profiling)
      --experiments     also time a variant of core code (xpipeline3)
      --reference K=V   another tool's MB/s on this machine, printed beside Redoubt's:
                        openssl-sha256, openssl-aes-256-gcm, zstd-cli-1, zstd-cli-3 (text corpus)
    """

func parseOptions(_ args: [String]) -> Options {
    var o = Options()
    var i = 0
    func value(_ flag: String) -> String {
        i += 1
        guard i < args.count else { fail("\(flag) needs a value\n\n\(usage)") }
        return args[i]
    }
    func positive(_ flag: String) -> Int {
        let v = value(flag)
        guard let n = Int(v), n > 0 else { fail("\(flag): expected a positive integer, got \(v)") }
        return n
    }
    while i < args.count {
        switch args[i] {
        case "--size-mb": o.sizeMB = positive("--size-mb")
        case "--text-mb": o.textMB = positive("--text-mb")
        case "--text-file": o.textFile = value("--text-file")
        case "--text-roots": o.textRoots = value("--text-roots").split(separator: ":").map(String.init)
        case "--save-text": o.saveText = value("--save-text")
        case "--runs": o.runs = positive("--runs")
        case "--json": o.json = true
        case "--verbose", "-v": o.verbose = true
        case "--experiments": o.experiments = true
        case "--reference":
            let v = value("--reference")
            let kv = v.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, let mb = Double(kv[1]), mb > 0 else {
                fail("--reference: expected KEY=MBPS, got \(v)")
            }
            o.references.append((kv[0], mb))
        case "--only": o.only = value("--only").split(separator: ",").map(String.init)
        case "--corpus":
            let c = value("--corpus")
            guard c == "incompressible" || c == "text" else { fail("--corpus: incompressible or text, not \(c)") }
            o.corpora = [c]
        case "--help", "-h": print(usage); exit(0)
        default: fail("unknown argument \(args[i])\n\n\(usage)")
        }
        i += 1
    }
    return o
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("redoubt-bench: \(message)\n".utf8))
    exit(2)
}

let options = parseOptions(Array(CommandLine.arguments.dropFirst()))

func progress(_ s: String) {
    if options.verbose { FileHandle.standardError.write(Data("… \(s)\n".utf8)) }
}

// Corpora: built in memory before anything is timed.
let randomBytes = options.sizeMB << 20
progress("generating \(options.sizeMB) MiB of incompressible data")
let incompressible = options.corpora.contains("incompressible") ? Corpus.random(count: randomBytes) : []

let textBytes = (options.textMB ?? Swift.max(options.sizeMB / 2, 1)) << 20
var text: Corpus.Text
if !options.corpora.contains("text") {
    text = Corpus.Text(bytes: [], files: 0, distinctBytes: 0, repeated: false, sources: [])
} else if let path = options.textFile {
    guard let d = FileManager.default.contents(atPath: path), !d.isEmpty else {
        fail("cannot read text corpus \(path)")
    }
    // A corpus saved by --save-text carries its description in PATH.meta.
    if let m = FileManager.default.contents(atPath: path + ".meta"),
        var saved = try? JSONDecoder().decode(Corpus.Text.self, from: m) {
        saved.bytes = [UInt8](d)
        text = saved
    } else {
        text = Corpus.Text(bytes: [UInt8](d), files: 1, distinctBytes: d.count, repeated: false, sources: [path])
    }
} else {
    progress("gathering up to \(textBytes >> 20) MiB of source text from \(options.textRoots.joined(separator: ", "))")
    text = Corpus.text(count: textBytes, roots: options.textRoots)
    guard !text.bytes.isEmpty else {
        fail("no source text found under \(options.textRoots.joined(separator: ":")); pass --text-file")
    }
}
if let out = options.saveText {
    guard FileManager.default.createFile(atPath: out, contents: Data(text.bytes)),
          FileManager.default.createFile(atPath: out + ".meta", contents: try? JSONEncoder().encode(text)) else {
              fail("cannot write \(out)")
          }
}

let stages: Stages
do { stages = try Stages(runs: options.runs) } catch { fail("setup: \(error)") }

func runAll(_ name: String, _ bytes: [UInt8]) throws -> [StageResult] {
    try bytes.withUnsafeBytes { data in
        let spans = stages.spans(data)
        var m: [StageResult] = []
        // `key` names the stage for --only.
        func add(_ key: String, _ body: () throws -> StageResult) rethrows {
            guard options.only.isEmpty || options.only.contains(where: { key.contains($0) }) else { return }
            let x = try body()
            progress(String(format: "%@ / %@: %.0f MB/s", x.stage, name, x.mbPerSecond))
            m.append(x)
        }
        add("chunker") { stages.chunkerAlone(name, data) }
        add("chunkid") { stages.chunkID(name, data, spans) }
        add("sha256") { stages.sha256(name, data, spans) }
        try add("zstd1") { try stages.zstd(name, data, level: 1) }
        try add("zstd3") { try stages.zstd(name, data, level: 3) }
        try add("compress3") { try stages.compressOrSkip(name, data, spans, level: 3) }
        try add("aes") { try stages.aesSeal(name, data, spans) }
        try add("packwriter") { try stages.packWriter(name, data, spans) }
        try add("pipeline3") { try stages.pipeline(name, data, level: 3) }
        try add("pipeline1") { try stages.pipeline(name, data, level: 1) }
        if options.experiments {
            try add("xpipeline3") { try stages.handPipeline(name, data, level: 3) }
        }
        return m
    }
}

let results: [StageResult]
do {
    var r: [StageResult] = []
    if options.corpora.contains("incompressible") { r += try runAll("incompressible", incompressible) }
    if options.corpora.contains("text") { r += try runAll("text", text.bytes) }
    results = r
} catch { fail("\(error)") }

func find(_ stagePrefix: String, _ corpus: String) -> StageResult? {
    results.first { $0.stage.hasPrefix(stagePrefix) && $0.corpus == corpus }
}

struct Target: Encodable {
    var name: String
    var required: String
    var measured: String
    /// The measured figure alone (MB/s or a ratio), for scripts.
    var value: Double
    var met: Bool
}

var targets: [Target] = []
do {
    let chunkerMin = ["incompressible", "text"].compactMap { find("chunker (FastCDC)", $0)?.mbPerSecond }.min() ?? 0
    targets.append(Target(name: "chunker", required: ">= 2000 MB/s",
        measured: String(format: "%.0f MB/s (slower corpus)", chunkerMin), value: chunkerMin, met: chunkerMin >= 2000))
    for c in ["incompressible", "text"] {
        if let id = find("chunk ID", c), let sha = find("SHA-256", c) {
            let r = id.mbPerSecond / sha.mbPerSecond
            targets.append(Target(name: "chunk ID vs SHA-256 (\(c))", required: ">= 0.90",
                measured: String(format: "%.3f", r), value: r, met: r >= 0.9))
        }
    }
    if let p = find("whole pipeline, zstd level 3", "incompressible") {
        targets.append(Target(name: "pipeline, incompressible", required: ">= 500 MB/s",
            measured: String(format: "%.0f MB/s", p.mbPerSecond), value: p.mbPerSecond, met: p.mbPerSecond >= 500))
    }
    if let p = find("whole pipeline, zstd level 3", "text"), let z = find("zstd -3", "text") {
        let r = p.mbPerSecond / z.mbPerSecond
        targets.append(Target(name: "pipeline / zstd -3 alone (text)", required: ">= 0.75",
            measured: String(format: "%.3f", r), value: r, met: r >= 0.75))
    }
}

/// One of another tool's figures beside the Redoubt stage that does the same work.
struct Comparison: Encodable {
    var reference: String
    var referenceMBps: Double
    var stage: String
    var corpus: String
    var redoubtMBps: Double
    var ratio: Double
}

/// Which Redoubt stages each reference key is compared with.
let referenceStages: [String: [(stage: String, corpus: String)]] = [
    "openssl-sha256": [("SHA-256", "incompressible"), ("chunk ID", "incompressible")],
    "openssl-aes-256-gcm": [("AES-256-GCM seal", "incompressible")],
    "zstd-cli-1": [("zstd -1 alone", "text"), ("whole pipeline, zstd level 1", "text")],
    "zstd-cli-3": [("zstd -3 alone", "text"), ("whole pipeline, zstd level 3", "text")],
]

var comparisons: [Comparison] = []
for ref in options.references {
    guard let pairs = referenceStages[ref.key] else {
        comparisons.append(Comparison(reference: ref.key, referenceMBps: ref.mbPerSecond, stage: "", corpus: "",
            redoubtMBps: 0, ratio: 0))
        continue
    }
    for (stage, corpus) in pairs {
        guard let m = find(stage, corpus) else { continue }
        comparisons.append(Comparison(reference: ref.key, referenceMBps: ref.mbPerSecond, stage: m.stage,
            corpus: corpus,
                                      redoubtMBps: (m.mbPerSecond * 10).rounded() / 10,
                                          ratio: m.mbPerSecond / ref.mbPerSecond))
    }
}

struct Report: Encodable {
    var unit = "MB/s = 10^6 bytes per second of input, one core, best of runs"
    var runs: Int
    var incompressibleBytes: Int
    var textBytes: Int
    var textDistinctBytes: Int
    var textFiles: Int
    var textRepeated: Bool
    var textSources: [String]
    var results: [StageResult]
    var targets: [Target]
    var references: [Comparison]
}

if options.json {
    let report = Report(runs: options.runs, incompressibleBytes: incompressible.count, textBytes: text.bytes.count,
                        textDistinctBytes: text.distinctBytes, textFiles: text.files, textRepeated: text.repeated,
                        textSources: text.sources, results: results, targets: targets, references: comparisons)
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    do { print(String(decoding: try enc.encode(report), as: UTF8.self)) } catch { fail("json: \(error)") }
} else {
    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
    func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
    print("Redoubt core, one core, MB/s (10^6 B/s of input), best of \(options.runs)")
    if !incompressible.isEmpty { print("incompressible: \(incompressible.count >> 20) MiB xoshiro256** bytes") }
    if !text.bytes.isEmpty {
        print("""
            text: \(text.bytes.count >> 20) MiB from \(text.files) distinct files \
            (\(text.sources.joined(separator: ", ")))
            """
              + (text.repeated ? """
                  ; REPEATED: only \(text.distinctBytes >> 20) MiB distinct, compression figures are optimistic
                  """ : ""))
    }
    print("")
    print(pad("stage", 50) + lpad("incompressible", 15) + lpad("text", 10) + lpad("text ratio", 12))
    print(String(repeating: "-", count: 87))
    var seen: [String] = []
    for r in results where !seen.contains(r.stage) { seen.append(r.stage) }
    for s in seen {
        let a = results.first { $0.stage == s && $0.corpus == "incompressible" }
        let b = results.first { $0.stage == s && $0.corpus == "text" }
        let ratio = b?.compressionRatio.map { String(format: "%.2fx", $0) } ?? ""
        print(pad(s, 50) + lpad(a.map { String(format: "%.0f", $0.mbPerSecond) } ?? "-", 15)
              + lpad(b.map { String(format: "%.0f", $0.mbPerSecond) } ?? "-", 10) + lpad(ratio, 12))
    }
    print("")
    if let c = find("chunker (FastCDC)", "text"), let n = c.chunks {
        print(String(format: "chunks on text: %d (mean %.2f MiB)", n, Double(c.bytes) / Double(n) / 1048576))
    }
    if let p = find("whole pipeline, zstd level 3", "text") {
        print("pipeline on text: \(p.packs ?? 0) packs, \(p.reused ?? 0) chunks deduplicated"
              + String(format: ", pack bytes ratio %.2fx", p.compressionRatio ?? 0))
        if let z = find("zstd -3", "text") {
            print(String(format: "pipeline / zstd -3 alone on text: %.2f (%.0f / %.0f MB/s); zstd -3 alone ratio %.2fx",
                p.mbPerSecond / z.mbPerSecond,
                         p.mbPerSecond, z.mbPerSecond, z.compressionRatio ?? 0))
        }
    }
    if !comparisons.isEmpty {
        print("")
        print("beside other tools on this machine (their own benchmarks, one core):")
        for c in comparisons {
            if c.stage.isEmpty {
                print("  " + pad(c.reference, 22) + String(format: "%7.0f MB/s", c.referenceMBps))
            } else {
                print("  " + pad(c.reference, 22) + String(format: "%7.0f MB/s", c.referenceMBps) + "   Redoubt "
                      + pad(c.stage + " (" + c.corpus + ")", 40) + String(format: "%7.0f MB/s  = %.2fx", c.redoubtMBps,
                          c.ratio))
            }
        }
    }
    print("")
    print("targets:")
    for t in targets {
        print("  " + pad(t.name, 38) + pad(t.required, 14) + pad(t.measured, 28) + (t.met ? "met" : "MISSED"))
    }
    let busy = results.filter { $0.cpuSeconds < 0.9 * $0.seconds }
    if !busy.isEmpty {
        print("")
        print("WARNING: the machine was busy: \(busy.count) of \(results.count) figures got under 90% of a core")
        print("(thread CPU time / wall time); wall-clock MB/s above are pessimistic. By CPU time:")
        for r in busy {
            print("  " + pad(r.stage + " / " + r.corpus, 56) + String(format: "%6.0f MB/s (%.0f%% of a core)",
                Double(r.bytes) / r.cpuSeconds / 1e6, 100 * r.cpuSeconds / r.seconds))
        }
    }
    if options.verbose { print("(check \(benchSink))") }
}

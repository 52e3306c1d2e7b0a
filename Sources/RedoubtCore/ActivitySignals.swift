import Foundation

/// What a host learns about one file's content from the bytes it already read: the first
/// few KiB, sampled while the file is chunked (docs/FORMAT.md §6.5). No I/O of its own.
public struct HeadSample: Sendable, Hashable {
    /// Bytes of the head that are sampled (at most).
    public static let sampleBytes = 4096
    /// Heads shorter than this are not judged: too few bytes for an entropy estimate.
    public static let minimumBytes = 512
    /// At or above this Shannon entropy (bits per byte) a head looks random. A 4 KiB head of
    /// random bytes measures about 7.95; text stays under 6, machine code under 7.
    public static let highEntropy = 7.2

    /// c·log2(c) for every count a sample can hold.
    static let countLog2: [Double] = (0...sampleBytes).map { $0 == 0 ? 0 : Double($0) * log2(Double($0)) }

    /// Shannon entropy of the sampled bytes' histogram, in bits per byte.
    public let entropy: Double
    /// The content type its magic number names.
    public let kind: ContentKind
    /// No NUL and no control byte other than tab, newline, form feed and carriage return:
    /// what every text format looks like.
    public let textLike: Bool

    public init(entropy: Double, kind: ContentKind, textLike: Bool) {
        self.entropy = entropy
        self.kind = kind
        self.textLike = textLike
    }

    /// Samples a head. Nil if it is shorter than ``minimumBytes``.
    public static func measure(_ head: UnsafeRawBufferPointer) -> HeadSample? {
        let n = min(head.count, sampleBytes)
        guard n >= minimumBytes else { return nil }
        // Four histograms on the stack, one pass over the bytes, so that runs of one byte value
        // do not wait on their own counter: this runs once per changed file.
        let (h, text) = withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 1024) { counts in
            counts.initialize(repeating: 0)
            var i = 0
            while i + 4 <= n {
                counts[Int(head[i])] &+= 1
                counts[256 + Int(head[i + 1])] &+= 1
                counts[512 + Int(head[i + 2])] &+= 1
                counts[768 + Int(head[i + 3])] &+= 1
                i += 4
            }
            while i < n {
                counts[Int(head[i])] &+= 1
                i += 1
            }
            // H = log2(n) − Σ c·log2(c) / n, with c·log2(c) from a table.
            var sum = 0.0
            var control: UInt32 = 0
            for b in 0..<256 {
                let c = Int(counts[b] &+ counts[256 + b] &+ counts[512 + b] &+ counts[768 + b])
                sum += Self.countLog2[c]
                // Bytes that no text format has: NUL and the C0 controls other than \t \n \f \r.
                if b < 0x20 && (0x0000_3600 as UInt32) >> UInt32(b) & 1 == 0 { control |= UInt32(c) }
            }
            return (log2(Double(n)) - sum / Double(n), control == 0)
        }
        return HeadSample(entropy: h, kind: ContentKind.of(UnsafeRawBufferPointer(rebasing: head[0..<n])),
            textLike: text)
    }

    /// Whether the head looks random and no magic number explains it (a compressed or
    /// encrypted-by-design format is expected to look random).
    public var unexplainedHighEntropy: Bool { entropy >= Self.highEntropy && !kind.isCompressed }

    /// Whether the head contradicts the extension: a known binary format's extension whose
    /// magic number is absent, or a text extension over bytes that are not text.
    public func mismatches(extension ext: String) -> Bool {
        guard let expected = ContentKind.expected(forExtension: ext) else { return false }
        if expected == .text { return !textLike || entropy >= Self.highEntropy }
        return kind != expected
    }
}

/// Content types recognised by their first bytes.
public enum ContentKind: String, Sendable, Hashable {
    case unknown, text, jpeg, png, gif, pdf, zip, gzip, zstd, xz, bzip2, sevenZip, elf, sqlite, gitPack, webp, ogg
    case mp4, rar, ar, zlib

    /// Formats whose bodies are compressed, so a random-looking head is expected.
    public var isCompressed: Bool {
        switch self {
        case .jpeg, .png, .gif, .zip, .gzip, .zstd, .xz, .bzip2, .sevenZip, .gitPack, .webp, .ogg, .mp4, .rar, .zlib:
            return true
        default:
            return false
        }
    }

    private static let magics: [(ContentKind, Int, [UInt8])] = [
        (.jpeg, 0, [0xff, 0xd8, 0xff]), (.png, 0, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
        (.gif, 0, Array("GIF8".utf8)), (.pdf, 0, Array("%PDF-".utf8)), (.zip, 0, [0x50, 0x4b, 0x03, 0x04]),
        (.zip, 0, [0x50, 0x4b, 0x05, 0x06]), (.gzip, 0, [0x1f, 0x8b]), (.zstd, 0, [0x28, 0xb5, 0x2f, 0xfd]),
        (.xz, 0, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), (.bzip2, 0, Array("BZh".utf8)),
        (.sevenZip, 0, [0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c]), (.elf, 0, [0x7f, 0x45, 0x4c, 0x46]),
        (.sqlite, 0, Array("SQLite format 3\0".utf8)), (.gitPack, 0, Array("PACK".utf8)),
        (.webp, 8, Array("WEBP".utf8)), (.ogg, 0, Array("OggS".utf8)), (.mp4, 4, Array("ftyp".utf8)),
        (.rar, 0, Array("Rar!".utf8)), (.ar, 0, Array("!<arch>\n".utf8)),
        // zlib streams (git's loose objects): deflate, 32 KiB window, any level.
        (.zlib, 0, [0x78, 0x01]), (.zlib, 0, [0x78, 0x5e]), (.zlib, 0, [0x78, 0x9c]), (.zlib, 0, [0x78, 0xda]),
    ]

    /// The kind a head's magic number names; `.unknown` if none.
    public static func of(_ head: UnsafeRawBufferPointer) -> ContentKind {
        for (kind, offset, magic) in magics where head.count >= offset + magic.count {
            var match = true
            for (i, b) in magic.enumerated() where head[offset + i] != b {
                match = false
                break
            }
            if match { return kind }
        }
        return .unknown
    }

    private static let byExtension: [String: ContentKind] = {
        var m: [String: ContentKind] = [
            "jpg": .jpeg, "jpeg": .jpeg, "png": .png, "gif": .gif, "pdf": .pdf, "gz": .gzip, "tgz": .gzip,
            "zst": .zstd, "xz": .xz, "bz2": .bzip2, "7z": .sevenZip, "sqlite": .sqlite, "webp": .webp, "ogg": .ogg,
            "mp4": .mp4, "rar": .rar, "deb": .ar,
        ]
        for z in ["zip", "docx", "xlsx", "pptx", "odt", "ods", "odp", "jar", "epub"] { m[z] = .zip }
        for t in ["txt", "md", "c", "h", "cc", "cpp", "hpp", "swift", "py", "rs", "go", "java", "js", "ts", "sh",
                  "html", "htm", "css", "csv", "json", "xml", "yaml", "yml", "toml", "ini", "conf", "cfg", "log",
                  "eml", "rst", "tex", "s", "mk", "rb", "pl", "php", "sql", "svg"] {
            m[t] = .text
        }
        return m
    }()

    /// The kind a file with this extension (lowercase, no dot) should hold; nil if the
    /// extension promises nothing checkable.
    public static func expected(forExtension ext: String) -> ContentKind? { byExtension[ext] }
}

/// Names: extensions, ransomware's known extensions and ransom-note file names.
public enum ActivityNames {
    /// The extension of a file name: the bytes after the last dot, lowercased, if 1–32
    /// bytes of ASCII letters and digits and the name does not start with that dot.
    public static func fileExtension(_ name: some Collection<UInt8>) -> String {
        let bytes = Array(name)
        guard let dot = bytes.lastIndex(of: 0x2e), dot > 0, dot < bytes.count - 1 else { return "" }
        let ext = bytes[(dot + 1)...]
        guard ext.count <= SnapshotActivity.maxExtensionBytes,
              ext.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a) })
        else { return "" }
        return String(decoding: ext.map { $0 >= 0x41 && $0 <= 0x5a ? $0 + 0x20 : $0 }, as: UTF8.self)
    }

    /// The last path component.
    public static func baseName(_ path: [UInt8]) -> ArraySlice<UInt8> {
        guard let slash = path.lastIndex(of: 0x2f) else { return path[...] }
        return path[(slash + 1)...]
    }

    /// The directory part of a path (empty for a bare name).
    public static func directory(_ path: [UInt8]) -> ArraySlice<UInt8> {
        guard let slash = path.lastIndex(of: 0x2f) else { return [] }
        return path[..<slash]
    }

    /// Extensions that ransomware families are known to append. A short list on purpose:
    /// families change names weekly, so the new-extension signal matters more.
    public static let ransomExtensions: Set<String> = [
        "locked", "locky", "encrypted", "crypt", "crypted", "crypz", "cerber", "cerber3", "zepto", "odin", "thor",
        "aesir", "wncry", "wnry", "wcry", "ryk", "ryuk", "conti", "lockbit", "basta", "hive", "djvu", "phobos",
        "dharma", "makop", "sodinokibi", "revil", "akira", "royal", "rhysida", "medusa", "crab", "krab", "gdcb",
        "vvv", "ccc", "zzz", "micro", "ecc", "exx", "ezz", "encrypt", "lockedfile", "kraken", "crinf", "xtbl",
        "cryptolocker", "lockfile", "pay2key", "enc1",
    ]

    /// Fragments of ransom-note names (lowercased, compared without punctuation).
    static let noteFragments = [
        "decrypt", "ransom", "howtorestore", "howtorecover", "howtoback", "restorefiles", "recoverfiles",
        "recoveryinstructions", "yourfilesareencrypted", "filesencrypted", "readmetodecrypt", "readmewarning",
        "helprestore", "helpdecrypt", "unlockfiles", "howtounlock",
    ]

    /// Whether a file name looks like a ransom note (`HOW_TO_DECRYPT.txt`, `_readme.txt`,
    /// `RESTORE-FILES.html`, …).
    public static func isRansomNote(_ name: some Collection<UInt8>) -> Bool {
        let lower = name.compactMap { b -> UInt8? in
            if b >= 0x41 && b <= 0x5a { return b + 0x20 }
            if (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) { return b }
            return nil
        }
        let s = String(decoding: lower, as: UTF8.self)
        if s == "readmetxt" || s == "readmehtml" {
            // `_readme.txt` (STOP/Djvu) is a note; a plain `README.txt` is not.
            return name.first == 0x5f || name.first == 0x21
        }
        return noteFragments.contains { s.contains($0) }
    }
}

/// One file the host stored in this backup, as the activity analysis sees it.
public struct ActivityFile: Sendable {
    /// The path on the host (raw bytes).
    public var path: [UInt8]
    public var device: UInt64
    public var inode: UInt64
    /// `.added` (no cached entry under this path), `.changed` (cached, read again) or `.unchanged`.
    public var change: Change
    /// The head sample, if the file was read from offset 0 and had enough bytes.
    public var head: HeadSample?

    public enum Change: Sendable { case added, changed, unchanged }

    public init(path: [UInt8], device: UInt64, inode: UInt64, change: Change, head: HeadSample?) {
        self.path = path
        self.device = device
        self.inode = inode
        self.change = change
        self.head = head
    }
}

/// A file of the previous snapshot (from the host's metadata cache).
public struct PreviousFile: Sendable {
    public var path: [UInt8]
    public var device: UInt64
    public var inode: UInt64

    public init(path: [UInt8], device: UInt64, inode: UInt64) {
        self.path = path
        self.device = device
        self.inode = inode
    }
}

public enum ActivityAnalysis {
    /// Computes the activity section from this backup's files and the previous snapshot's.
    /// `previous` nil: no baseline (first backup, or the cache was lost).
    public static func analyze(files: [ActivityFile], previous: [PreviousFile]?, sealedBytesRaw: UInt64,
                               sealedBytesStored: UInt64) -> SnapshotActivity {
        var tally = ActivityTally(hasBaseline: previous != nil)
        var present = Set<ByteKey>()
        for f in files {
            tally.add(f)
            present.insert(ByteKey(f.path))
        }
        let visitPrevious: ActivityTally.PreviousFiles? = previous.map { list in
            { visit in for p in list { visit(p, present.contains(ByteKey(p.path))) } }
        }
        return tally.finish(previous: visitPrevious, sealedBytesRaw: sealedBytesRaw,
                            sealedBytesStored: sealedBytesStored)
    }
}

/// The activity analysis fed one file at a time, so a backup need not keep its files:
/// it keeps only the added ones, and only when there is a previous snapshot to compare.
public struct ActivityTally: Sendable {
    private var a = SnapshotActivity()
    private let hasBaseline: Bool
    /// Files not in the previous snapshot, for rename and extension signals.
    private var added: [ActivityFile] = []

    public init(hasBaseline: Bool) { self.hasBaseline = hasBaseline }

    public mutating func add(_ f: ActivityFile) {
        switch f.change {
        case .added: a.filesAdded += 1
        case .changed: a.filesChanged += 1
        case .unchanged: break
        }
        if f.change == .added && hasBaseline {
            var kept = f
            kept.head = nil
            added.append(kept)
        }
        guard f.change != .unchanged, let head = f.head else { return }
        a.sampledFiles += 1
        let ext = ActivityNames.fileExtension(ActivityNames.baseName(f.path))
        let random = head.unexplainedHighEntropy
        let mismatch = head.mismatches(extension: ext)
        if random { a.highEntropyFiles += 1 }
        if mismatch { a.typeMismatchFiles += 1 }
        if random || mismatch { a.suspiciousContentFiles += 1 }
    }

    /// Calls `visit` with each file of the previous snapshot and whether this backup has
    /// a file at its path.
    public typealias PreviousFiles = (_ visit: (PreviousFile, _ present: Bool) -> Void) -> Void

    /// The section, given the previous snapshot's files (nil: no baseline). What it keeps
    /// grows with the files added and deleted, not with the tree.
    public func finish(previous: PreviousFiles?, sealedBytesRaw: UInt64, sealedBytesStored: UInt64)
        -> SnapshotActivity {
        var a = self.a
        a.sealedBytesRaw = sealedBytesRaw
        a.sealedBytesStored = sealedBytesStored
        guard let previous else { return a }
        a.hasBaseline = true
        // The paths that added files' names extend (`a.docx` for `a.docx.locked`), to be
        // looked for among the previous files.
        var extended = Set<ByteKey>()
        for f in added {
            let ext = ActivityNames.fileExtension(ActivityNames.baseName(f.path))
            if !ext.isEmpty { extended.insert(ByteKey(Array(f.path.dropLast(ext.utf8.count + 1)))) }
        }
        var extendedFound = Set<ByteKey>()
        var gone: [InodeKey: [UInt8]] = [:]
        var oldExtensions = Set<String>()
        previous { p, present in
            if !extended.isEmpty, extended.contains(ByteKey(p.path)) { extendedFound.insert(ByteKey(p.path)) }
            oldExtensions.insert(ActivityNames.fileExtension(ActivityNames.baseName(p.path)))
            if !present {
                a.filesDeleted += 1
                gone[InodeKey(device: p.device, inode: p.inode)] = p.path
            }
        }
        var newExtensionCounts: [String: UInt64] = [:]
        var noteDirectories = Set<ByteKey>()
        for f in added {
            let name = ActivityNames.baseName(f.path)
            let ext = ActivityNames.fileExtension(name)
            // A file that took another's place under a new extension: renamed (same inode), or
            // written beside a file of the previous snapshot whose name it extends (`a.docx.locked`).
            var replaces = false
            if let old = gone.removeValue(forKey: InodeKey(device: f.device, inode: f.inode)) {
                a.filesRenamed += 1
                replaces = ActivityNames.fileExtension(ActivityNames.baseName(old)) != ext
                if replaces { a.extensionChanged += 1 }
            } else if !ext.isEmpty {
                replaces = extendedFound.contains(ByteKey(Array(f.path.dropLast(ext.utf8.count + 1))))
            }
            if ActivityNames.ransomExtensions.contains(ext) { a.knownRansomExtension += 1 }
            // Why only such files: a new directory of photos brings a new extension too.
            if replaces && !ext.isEmpty && !oldExtensions.contains(ext) { newExtensionCounts[ext, default: 0] += 1 }
            if ActivityNames.isRansomNote(name) {
                noteDirectories.insert(ByteKey(Array(ActivityNames.directory(f.path))))
            }
        }
        // Why the tie-break by name: the section is signed, so one input gives one encoding.
        if let top = newExtensionCounts.max(by: { ($0.value, $1.key) < ($1.value, $0.key) }) {
            a.topNewExtension = top.key
            a.topNewExtensionFiles = top.value
        }
        a.ransomNoteDirectories = UInt64(noteDirectories.count)
        return a
    }

    private struct InodeKey: Hashable {
        var device: UInt64
        var inode: UInt64
    }
}

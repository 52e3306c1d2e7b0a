import Crypto
import Foundation

/// The two inputs every stage is measured on.
enum Corpus {
    /// `count` incompressible bytes from a seeded xoshiro256** generator (fast, and the
    /// same bytes on every run and machine).
    static func random(count: Int, seed: UInt64 = 0x5EED_0F_2ED0_0B7) -> [UInt8] {
        var s = SplitMix(state: seed)
        var x = Xoshiro(s0: s.next(), s1: s.next(), s2: s.next(), s3: s.next())
        return [UInt8](unsafeUninitializedCapacity: count) { buf, initialized in
            let words = count / 8
            let raw = UnsafeMutableRawBufferPointer(buf)
            for i in 0..<words { raw.storeBytes(of: x.next().littleEndian, toByteOffset: i * 8, as: UInt64.self) }
            var tail = x.next()
            for i in (words * 8)..<count {
                buf[i] = UInt8(truncatingIfNeeded: tail)
                tail >>= 8
            }
            initialized = count
        }
    }

    /// What was gathered for the text corpus.
    struct Text: Codable {
        var bytes: [UInt8]
        /// Distinct files concatenated (identical files are taken once).
        var files: Int
        /// Distinct bytes before any repetition or truncation.
        var distinctBytes: Int
        /// True when the distinct files were fewer than asked and were repeated.
        var repeated: Bool
        var sources: [String]

        /// Everything but the bytes: saved beside a corpus written with --save-text.
        enum CodingKeys: String, CodingKey { case files, distinctBytes, repeated, sources }
        init(bytes: [UInt8], files: Int, distinctBytes: Int, repeated: Bool, sources: [String]) {
            self.bytes = bytes
            self.files = files
            self.distinctBytes = distinctBytes
            self.repeated = repeated
            self.sources = sources
        }
        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            bytes = []
            files = try c.decode(Int.self, forKey: .files)
            distinctBytes = try c.decode(Int.self, forKey: .distinctBytes)
            repeated = try c.decode(Bool.self, forKey: .repeated)
            sources = try c.decode([String].self, forKey: .sources)
        }
    }

    static let textExtensions: Set<String> = ["swift", "h", "hpp", "c", "cc", "cpp", "py", "md", "rst"]

    /// Where source-code text is looked for, in this order; missing roots are skipped.
    static let defaultTextRoots = [
        "/opt/swift", "/usr/include", "/usr/lib/python3", "/usr/lib/python3.11", "/usr/share/doc",
        "/usr/lib/google-cloud-sdk", "/root/.pyenv/versions", "/usr/share", "/usr/lib", "/usr/local",
    ]

    /// Concatenates distinct source-code files under `roots` (sorted paths, so the order is
    /// that of a directory walk and stable between runs) up to `count` bytes. Repeats the
    /// whole if there is less distinct text than asked, and says so.
    static func text(count: Int, roots: [String]) -> Text {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var seen = Set<SHA256.Digest>()
        var files = 0
        var used: [String] = []
        let fm = FileManager.default
        rootLoop: for root in roots {
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: root, isDirectory: &isDir), isDir.boolValue,
                  let walker = fm.enumerator(atPath: root) else { continue }
            var paths: [String] = []
            while let rel = walker.nextObject() as? String {
                guard textExtensions.contains((rel as NSString).pathExtension) else { continue }
                paths.append(rel)
            }
            paths.sort()
            var took = false
            for rel in paths {
                let path = root + "/" + rel
                guard let attrs = try? fm.attributesOfItem(atPath: path),
                      attrs[.type] as? FileAttributeType == .typeRegular,
                      let size = attrs[.size] as? Int, size > 0, size <= 16 << 20,
                      let data = fm.contents(atPath: path) else { continue }
                let digest = SHA256.hash(data: data)
                guard seen.insert(digest).inserted else { continue }
                out.append(contentsOf: data)
                files += 1
                took = true
                if out.count >= count { used.append(root); break rootLoop }
            }
            if took { used.append(root) }
        }
        let distinct = out.count
        var repeated = false
        if out.isEmpty { return Text(bytes: [], files: 0, distinctBytes: 0, repeated: false, sources: used) }
        if out.count < count {
            repeated = true
            let base = out
            while out.count < count { out.append(contentsOf: base.prefix(count - out.count)) }
        }
        if out.count > count { out.removeLast(out.count - count) }
        return Text(bytes: out, files: files, distinctBytes: Swift.min(distinct, count), repeated: repeated,
            sources: used)
    }
}

struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

struct Xoshiro {
    var s0, s1, s2, s3: UInt64
    @inline(__always) mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = s3 << 45 | s3 >> 19
        return result
    }
}

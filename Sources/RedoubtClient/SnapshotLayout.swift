import Glibc
import RedoubtCore

/// How backed-up paths map to the snapshot root (docs/FORMAT.md §5.3).
///
/// Since manifest version 3 the root tree keeps each path whole: `/b/x` is the entry `x`
/// in the directory `b` at the root, so `/a/x` and `/b/x` never collide and a restore
/// recreates the same layout under its target. Older snapshots named one root entry per
/// path by its last component (`x`, `x~2`); ``snapshotPath(of:in:)`` still maps a path as
/// the user knows it onto them.
public enum SnapshotLayout {
    /// `path` made absolute (against the working directory) and normalised lexically:
    /// no empty, "." or ".." components, no trailing slash.
    static func absolute(_ path: String) throws(ArchiveError) -> [UInt8] {
        var bytes = Array(path.utf8)
        guard !bytes.isEmpty else {
            throw ArchiveError(.invalidArgument, object: "\"\"", "an empty path cannot be backed up")
        }
        if bytes.first != 0x2f {
            var buf = [CChar](repeating: 0, count: 4096 + 1)
            guard getcwd(&buf, buf.count) != nil else {
                throw ArchiveError.system("getcwd", object: path, errno: Glibc.errno)
            }
            bytes = Array(String(cString: buf).utf8) + [0x2f] + bytes
        }
        return normalised(bytes)
    }

    /// `bytes` normalised lexically as an absolute path (a leading `/` is implied).
    static func normalised(_ bytes: [UInt8]) -> [UInt8] {
        var parts: [ArraySlice<UInt8>] = []
        for c in bytes.split(separator: 0x2f, omittingEmptySubsequences: true) {
            if c.elementsEqual([0x2e]) { continue }
            if c.elementsEqual([0x2e, 0x2e]) {
                if !parts.isEmpty { parts.removeLast() }
                continue
            }
            parts.append(c)
        }
        return [0x2f] + Array(parts.joined(separator: [0x2f]))
    }

    /// The paths a whole-path snapshot walks: `paths` (absolute, normalised) without
    /// repeats and without any path inside another one given (it is walked with that
    /// one), in the order given.
    static func wholePaths(_ paths: [[UInt8]]) -> [[UInt8]] {
        var out: [[UInt8]] = []
        for p in paths where !out.contains(p) && !paths.contains(where: { contains($0, p) && $0 != p }) {
            out.append(p)
        }
        return out
    }

    /// Whether `inner` is `outer` or below it (both absolute, normalised).
    static func contains(_ outer: [UInt8], _ inner: [UInt8]) -> Bool {
        if outer == [0x2f] { return true }
        return inner == outer || (inner.starts(with: outer) && inner.count > outer.count && inner[outer.count] == 0x2f)
    }

    /// A normalised absolute path's place below the snapshot root: without the leading `/`
    /// (empty for `/` itself, whose entries are the root's).
    static func relative(_ absolute: [UInt8]) -> [UInt8] { Array(absolute.drop { $0 == 0x2f }) }

    /// What a walk of the backed-up `absolute` paths takes: the paths to walk, each one's
    /// name, and its path in the snapshot (whole, or the last component before format 3).
    static func walkPlan(_ absolute: [[UInt8]], legacy: Bool)
        -> (paths: [[UInt8]], names: [[UInt8]], snapshotPaths: [[UInt8]]) {
        if legacy {
            let names = topLevelNames(absolute)
            return (absolute, names, names)
        }
        let walked = wholePaths(absolute)
        let names = walked.map { $0.split(separator: 0x2f).last.map(Array.init) ?? Array("root".utf8) }
        return (walked, names, walked.map(relative))
    }

    /// The root entry names of a snapshot before version 3, for normalised absolute paths:
    /// each path's last component ("root" for `/`); a name already taken gets "~2", "~3", …
    static func topLevelNames(_ paths: [[UInt8]]) -> [[UInt8]] {
        var used = Set<[UInt8]>()
        var out: [[UInt8]] = []
        for p in paths {
            let base = p.split(separator: 0x2f).last.map(Array.init) ?? Array("root".utf8)
            var name = base
            var n = 2
            while used.contains(name) {
                let suffix = Array("~\(n)".utf8)
                name = Array(base.prefix(255 - suffix.count)) + suffix
                n += 1
            }
            used.insert(name)
            out.append(name)
        }
        return out
    }

    /// Where `path`, as the user knows it, is in the snapshot: a path below its root
    /// without a leading `/` (empty: the whole snapshot).
    ///
    /// In a whole-path snapshot that is the path itself (`/b/x` → `b/x`; `b/x` is read the
    /// same). In an older one, a path at or below a backed-up path (`/b/x/sub`) maps onto the
    /// root entry that path was named (`x~2/sub`); anything else is taken as a path below the
    /// root already (`x~2/sub`, as `ls` shows it).
    public static func snapshotPath(of path: [UInt8], in manifest: Manifest) -> [UInt8] {
        let given = normalised(path)
        if manifest.keepsPathsWhole || path.first != 0x2f { return relative(given) }
        let backedUp = manifest.header.paths.map { $0.first == 0x2f ? normalised($0) : [] }
        let names = topLevelNames(backedUp)
        var best: (length: Int, mapped: [UInt8])? = nil
        for (p, name) in zip(backedUp, names) where !p.isEmpty && contains(p, given) {
            guard p.count > (best?.length ?? -1) else { continue }
            let rest = p == [0x2f] ? relative(given) : Array(given.dropFirst(p.count + 1))
            best = (p.count, rest.isEmpty ? name : name + [0x2f] + rest)
        }
        return best?.mapped ?? relative(given)
    }
}

extension ArchiveSys {
    /// `stat(2)`: follows symlinks (only for the directories above a backed-up path).
    static func statFollowing(_ path: [UInt8]) -> SysResult<FileStat> {
        var st = stat()
        let r = withCString(path) { Glibc.fstatat(atFDCWD, $0, &st, 0) }
        return r == 0 ? .success(FileStat(st)) : .failure(Glibc.errno)
    }
}

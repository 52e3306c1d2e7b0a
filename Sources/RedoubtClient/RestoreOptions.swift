import Glibc
import RedoubtCore

/// What to do with an entry that already exists in the restore target.
public enum OverwritePolicy: String, Sendable, CaseIterable {
    /// Replace it (a file is written under a temporary name and renamed over it).
    case always
    /// Leave a regular file whose size and modification time (to the nanosecond) are the
    /// snapshot's, and a symlink with the same target; replace anything else.
    case ifChanged = "if-changed"
    /// Leave every existing entry as it is (directories are still merged into).
    case never
}

/// Which entries of a snapshot a restore writes, and how.
public struct RestoreOptions: Sendable {
    /// Paths as the user knows them (`/srv/www`), or below the snapshot root (`srv/www`),
    /// mapped by ``SnapshotLayout/snapshotPath(of:in:)``; each is restored at its place
    /// below the snapshot root under the target, with the directories on its way.
    /// Empty: the whole snapshot.
    public var paths: [[UInt8]]
    /// Globs (`fnmatch` with `FNM_PATHNAME`: `*`, `?`, `[…]` never match `/`), matched
    /// against an entry's path below the root with a leading `/` and against its name. If
    /// any is given, only matching entries, what is below them and the directories on
    /// their way are restored.
    public var includes: [String]
    /// Globs as for `includes`; a matching entry and everything below it are left out.
    public var excludes: [String]
    public var overwrite: OverwritePolicy
    /// Restore everything undamaged and list what is damaged instead of stopping.
    public var skipDamaged: Bool

    public init(paths: [[UInt8]] = [], includes: [String] = [], excludes: [String] = [],
                overwrite: OverwritePolicy = .always, skipDamaged: Bool = false) {
        self.paths = paths
        self.includes = includes
        self.excludes = excludes
        self.overwrite = overwrite
        self.skipDamaged = skipDamaged
    }
}

/// Matches restore include and exclude globs against entries.
struct RestoreFilter {
    private let includes: [[CChar]]
    private let excludes: [[CChar]]
    /// The selected paths, trimmed; empty: everything.
    let paths: [[UInt8]]

    /// `manifest` maps the selected paths into the snapshot (nil: taken as below its root).
    init(_ options: RestoreOptions, manifest: Manifest?) {
        includes = options.includes.map { Array($0.utf8CString) }
        excludes = options.excludes.map { Array($0.utf8CString) }
        paths = options.paths.map { p in
            if let manifest { return SnapshotLayout.snapshotPath(of: p, in: manifest) }
            return SnapshotLayout.relative(SnapshotLayout.normalised(p))
        }
    }

    var hasIncludes: Bool { !includes.isEmpty }
    /// Everything is selected (no path, or one that is the whole snapshot).
    var selectsAll: Bool { paths.isEmpty || paths.contains { $0.isEmpty } }
    /// ``place(_:)`` or ``excluded(_:name:)`` look at the path they are given: without
    /// either, every entry is inside and none is excluded, whatever its path.
    var readsPaths: Bool { !selectsAll || !excludes.isEmpty }

    /// Where `path` (below the snapshot root) stands to the selected paths.
    enum Place { case inside, onTheWay, outside }

    func place(_ path: [UInt8]) -> Place {
        if selectsAll { return .inside }
        var onTheWay = false
        for s in paths {
            if path == s || (path.count > s.count && path.starts(with: s) && path[s.count] == 0x2f) { return .inside }
            if s.count > path.count && s.starts(with: path) && s[path.count] == 0x2f { onTheWay = true }
        }
        return onTheWay ? .onTheWay : .outside
    }

    func excluded(_ path: [UInt8], name: [UInt8]) -> Bool { matches(excludes, path, name) }
    func included(_ path: [UInt8], name: [UInt8]) -> Bool { matches(includes, path, name) }

    private func matches(_ patterns: [[CChar]], _ path: [UInt8], _ name: [UInt8]) -> Bool {
        if patterns.isEmpty { return false }
        return ArchiveSys.withCString([0x2f] + path, name) { full, base in
            patterns.contains { p in
                p.withUnsafeBufferPointer {
                    fnmatch($0.baseAddress, full, FNM_PATHNAME) == 0 || fnmatch($0.baseAddress, base, FNM_PATHNAME) == 0
                }
            }
        }
    }
}

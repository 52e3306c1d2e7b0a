import Glibc
import RedoubtCore

/// One entry found by the walk, with the node that will describe it.
struct WalkEntry {
    var node: Node
    /// The absolute path on disk (normalised lexically).
    var fullPath: [UInt8]
    /// The path inside the snapshot, relative to its root (what hard links name).
    var snapshotPath: [UInt8]
    /// Index of the parent directory's entry; -1 for a top-level entry.
    var parent: Int
    /// For a directory: its children's indices (contiguous, sorted by name).
    var children: Range<Int> = 0..<0
    var stat: ArchiveSys.FileStat
    /// Dropped from the snapshot (unreadable, vanished).
    var omitted = false
}

/// What the walk found.
struct WalkResult {
    var entries: [WalkEntry] = []
    /// Indices of the top-level entries, one per backed-up path.
    var topLevel: [Int] = []
    /// Indices of regular files whose content must be stored (hard links excluded).
    var files: [Int] = []
    var warnings: [BackupWarning] = []
    var bytesTotal: UInt64 = 0
}

/// Walks the paths to back up: lstat only, never follows a symlink, descends through
/// directory file descriptors (`openat` with `O_NOFOLLOW`), so a directory swapped for a
/// symlink mid-walk is not followed. Entries are visited in name order, depth first, so
/// the "first name" of a hard-linked file is the same on every run.
struct Walker {
    private let patterns: [[CChar]]
    private var users: [UInt32: [UInt8]] = [:]
    private var groups: [UInt32: [UInt8]] = [:]
    /// (device, inode) of multiply-linked files → the snapshot path of their first name.
    private var firstNames: [DevIno: [UInt8]] = [:]
    private var result = WalkResult()
    private let report: (Int, [UInt8]) -> Void
    /// Directories tagged as caches (`CACHEDIR.TAG`) keep only their tag file.
    var excludeCaches = false
    /// Directories on another filesystem than their top-level path are kept empty.
    var oneFileSystem = false

    struct DevIno: Hashable {
        let device: UInt64
        let inode: UInt64
    }

    init(excludes: [String], report: @escaping (Int, [UInt8]) -> Void) {
        patterns = excludes.map { Array($0.utf8CString) }
        self.report = report
    }

    /// Walks `paths` (absolute, normalised); `names` are their entries' names and
    /// `snapshotPaths` their paths below the snapshot root (what hard links name).
    mutating func walk(paths: [[UInt8]], names: [[UInt8]],
                       snapshotPaths: [[UInt8]]) throws(ArchiveError) -> WalkResult {
        for ((path, name), snapshotPath) in zip(zip(paths, names), snapshotPaths) {
            let st: ArchiveSys.FileStat
            switch ArchiveSys.lstat(path) {
            case .success(let s): st = s
            case .failure(let e) where e == ENOENT:
                // Why a warning: one missing path (an unmounted disk, a renamed directory)
                // must not cost the backup of the others; the run ends with "partial".
                result.warnings.append(BackupWarning(.vanished, path: path,
                    "does not exist; not backed up (the other paths are)"))
                continue
            case .failure(let e):
                throw ArchiveError(.io, object: printable(path),
                    "cannot back up this path: \(ArchiveSys.describe(errno: e))", errno: e)
            }
            guard let index = addEntry(name: name, fullPath: path, snapshotPath: snapshotPath, parent: -1, stat: st,
                dirfd: nil) else {
                throw ArchiveError(.io, object: printable(path), "cannot back up this path: it cannot be read")
            }
            result.topLevel.append(index)
            if result.entries[index].node.type == .directory {
                let fd = Self.openDirectory(ArchiveSys.atFDCWD, path)
                if fd < 0 {
                    warnUnreadableDirectory(index, errno: Glibc.errno)
                } else {
                    walkTree(rootIndex: index, rootFD: fd)
                }
            }
        }
        let given = paths.map(printable).joined(separator: ", ")
        if result.topLevel.isEmpty {
            throw ArchiveError(.notFound, object: given, "none of the paths to back up exists; nothing was backed up")
        }
        // Why refuse: a snapshot of nothing would become the host's newest and keep
        // monitoring (`host list --stale-after`) quiet while nothing is protected.
        if result.entries.count == result.topLevel.count && result.entries.allSatisfy({ $0.node.type == .directory }) {
            let why =
                patterns.isEmpty ? "they are empty" : "they are empty or every entry in them matched an exclude pattern"
            throw ArchiveError(.invalidArgument, object: given,
                               "nothing to back up: \(why), so no snapshot was made (check --exclude: * and ? never "
                                   + "match /)")
        }
        // Handed over, not copied: a walker still holding the entries would make the
        // archiver's first change to them copy the whole list (tens of MiB on large trees).
        var out = WalkResult()
        swap(&out, &result)
        return out
    }

    /// Depth-first walk below one directory, holding one open fd per level.
    private mutating func walkTree(rootIndex: Int, rootFD: Int32) {
        struct Frame {
            let fd: Int32
            var subdirectories: [Int]
            var next = 0
        }
        var stack = [Frame(fd: rootFD, subdirectories: list(directory: rootIndex, fd: rootFD))]
        let rootDevice = result.entries[rootIndex].stat.device
        while !stack.isEmpty {
            let top = stack.count - 1
            guard stack[top].next < stack[top].subdirectories.count else {
                close(stack[top].fd)
                stack.removeLast()
                continue
            }
            let child = stack[top].subdirectories[stack[top].next]
            stack[top].next += 1
            // Why kept empty and not left out: a restore then shows where the mount point was,
            // as restic's --one-file-system does.
            if oneFileSystem && result.entries[child].stat.device != rootDevice { continue }
            let fd = Self.openDirectory(stack[top].fd, result.entries[child].node.name)
            guard fd >= 0 else {
                warnUnreadableDirectory(child, errno: Glibc.errno)
                continue
            }
            // Why: the directory could have been replaced between lstat and open; what we
            // opened is what we list, so its metadata must be from the open fd.
            if case .success(let st) = ArchiveSys.fstat(fd), st.inode != result.entries[child].stat.inode
                || st.device != result.entries[child].stat.device {
                result.warnings.append(BackupWarning(.vanished, path: result.entries[child].fullPath,
                    "replaced while the backup ran; stored as found when listed"))
                result.entries[child].stat = st
            }
            stack.append(Frame(fd: fd, subdirectories: list(directory: child, fd: fd)))
        }
    }

    /// Opens a directory for listing without following a symlink and, where allowed,
    /// without touching its atime (so a backup does not change what the next one sees).
    private static func openDirectory(_ dirfd: Int32, _ name: [UInt8]) -> Int32 {
        let flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
        let fd = ArchiveSys.withCString(name) { openat(dirfd, $0, flags | ArchiveSys.oNoAtime) }
        if fd < 0 && Glibc.errno == EPERM { return ArchiveSys.withCString(name) { openat(dirfd, $0, flags) } }
        return fd
    }

    /// Lists one directory, adds its children as entries and returns the indices of the
    /// subdirectories among them.
    private mutating func list(directory index: Int, fd: Int32) -> [Int] {
        var names: [[UInt8]]
        switch ArchiveSys.listDirectory(fd: fd) {
        case .success(let n): names = n
        case .failure(let e):
            warnUnreadableDirectory(index, errno: e)
            return []
        }
        if excludeCaches, names.contains(Self.cacheTagName), Self.isTaggedCache(fd) { names = [Self.cacheTagName] }
        let parentFull = result.entries[index].fullPath
        let parentSnapshot = result.entries[index].snapshotPath
        let start = result.entries.count
        var subdirectories: [Int] = []
        for name in names {
            let full = parentFull == [0x2f] ? parentFull + name : parentFull + [0x2f] + name
            if isExcluded(full, name) { continue }
            let st: ArchiveSys.FileStat
            switch ArchiveSys.fstatat(fd, name) {
            case .success(let s): st = s
            case .failure(let e):
                result.warnings.append(BackupWarning(e == ENOENT ? .vanished : .unreadable, path: full,
                                                     e == ENOENT ? "disappeared before it could be read" : """
                                                         cannot stat: \(ArchiveSys.describe(errno: e))
                                                         """))
                continue
            }
            // The walk of `/` (snapshot path empty) puts its entries at the snapshot root.
            let snapshotPath = parentSnapshot.isEmpty ? name : parentSnapshot + [0x2f] + name
            if let child = addEntry(name: name, fullPath: full, snapshotPath: snapshotPath,
                parent: index, stat: st, dirfd: fd),
               result.entries[child].node.type == .directory {
                subdirectories.append(child)
            }
        }
        result.entries[index].children = start..<result.entries.count
        report(result.entries.count, parentFull)
        return subdirectories
    }

    static let cacheTagName = Array("CACHEDIR.TAG".utf8)
    static let cacheTagSignature = Array("Signature: 8a477f597d28d172789f06886806bc55".utf8)

    /// Whether the directory open at `fd` holds a CACHEDIR.TAG that starts with the
    /// signature of the Cache Directory Tagging Specification (a regular file, not followed).
    private static func isTaggedCache(_ fd: Int32) -> Bool {
        let tag = ArchiveSys.withCString(cacheTagName) { openat(fd, $0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        guard tag >= 0 else { return false }
        defer { close(tag) }
        var head = [UInt8](repeating: 0, count: cacheTagSignature.count)
        let n = head.withUnsafeMutableBytes { ArchiveSys.preadFull(tag, into: $0.baseAddress!, count: $0.count, at: 0) }
        guard case .success(let got) = n, got == head.count else { return false }
        return head == cacheTagSignature
    }

    /// A pattern matches the entry's full path or its name; `*`, `?` and `[...]` never match
    /// `/` (FNM_PATHNAME), so `/tmp/*` excludes /tmp's entries and not everything below /tmp.
    private func isExcluded(_ full: [UInt8], _ name: [UInt8]) -> Bool {
        if patterns.isEmpty { return false }
        return ArchiveSys.withCString(full, name) { cfull, cname in
            patterns.contains {
                p in p.withUnsafeBufferPointer {
                    fnmatch($0.baseAddress, cfull, FNM_PATHNAME) == 0 || fnmatch($0.baseAddress, cname,
                        FNM_PATHNAME) == 0
                }
            }
        }
    }

    private mutating func warnUnreadableDirectory(_ index: Int, errno e: Int32) {
        result.warnings.append(BackupWarning(.unreadable, path: result.entries[index].fullPath,
                                             """
                                                 directory cannot be read (\(ArchiveSys.describe(errno: e))); stored \
                                                 without its contents
                                                 """))
    }

    /// Adds an entry for `name` with its node; returns nil (after a warning) if it is
    /// skipped. `dirfd` is the open parent directory, nil for a top-level path.
    private mutating func addEntry(name: [UInt8], fullPath: [UInt8], snapshotPath: [UInt8], parent: Int,
        stat st: ArchiveSys.FileStat, dirfd: Int32?) -> Int? {
        guard var type = st.nodeType else {
            result.warnings.append(BackupWarning(.unreadable, path: fullPath,
                "unknown file type \(String(st.fileType, radix: 8)); skipped"))
            return nil
        }
        var linkTarget: [UInt8] = []
        switch type {
        case .symlink:
            let r = dirfd.map { ArchiveSys.readlinkat($0, name, sizeHint: Int(st.size)) }
                ?? ArchiveSys.readlinkat(ArchiveSys.atFDCWD, fullPath, sizeHint: Int(st.size))
            switch r {
            case .success(let t) where !t.isEmpty && t.count <= TreeCodec.maxLinkTarget: linkTarget = t
            case .success: 
                result.warnings.append(BackupWarning(.unreadable, path: fullPath,
                    "symlink target is empty or too long; skipped"))
                return nil
            case .failure(let e):
                result.warnings.append(BackupWarning(e == ENOENT ? .vanished : .unreadable, path: fullPath,
                    "cannot read the symlink: \(ArchiveSys.describe(errno: e))"))
                return nil
            }
        case .file where st.links > 1:
            let key = DevIno(device: st.device, inode: st.inode)
            if let first = firstNames[key] {
                type = .hardlink
                linkTarget = first
            } else {
                firstNames[key] = snapshotPath
            }
        default: break
        }
        var xattrs: [ExtendedAttribute] = []
        let xattrPath = dirfd.flatMap { ArchiveSys.procPath(dirfd: $0, name: name) } ?? fullPath
        switch ArchiveSys.listXattrs(xattrPath) {
        case .success(let x): xattrs = x
        case .failure(let e) where e == ENOENT:
            result.warnings.append(BackupWarning(.vanished, path: fullPath, "disappeared before it could be read"))
            return nil
        case .failure(let e):
            result.warnings.append(BackupWarning(.attributes, path: fullPath,
                "extended attributes not stored: \(ArchiveSys.describe(errno: e))"))
        }
        if xattrs.count > TreeCodec.maxXattrs {
            result.warnings.append(BackupWarning(.attributes, path: fullPath,
                "more than \(TreeCodec.maxXattrs) extended attributes; none stored"))
            xattrs = []
        }
        let node = Node(name: name, type: type, mode: st.permissions, uid: st.uid, gid: st.gid, user: user(st.uid),
            group: group(st.gid),
                        mtime: st.mtime, ctime: st.ctime, atime: st.atime, size: type == .file ? st.size : 0,
                            linkTarget: linkTarget,
                        rdev: (type == .charDevice || type == .blockDevice) ? st.rdev : 0, xattrs: xattrs)
        let index = result.entries.count
        result.entries.append(WalkEntry(node: node, fullPath: fullPath, snapshotPath: snapshotPath, parent: parent,
            stat: st))
        if type == .file {
            result.files.append(index)
            result.bytesTotal += st.size
        }
        return index
    }

    /// The directory node for `path`, an ancestor of a backed-up path: its metadata as
    /// `stat` sees it (following a symlink, as the path to what is backed up does), no
    /// extended attributes, no subtree yet.
    mutating func ancestorNode(_ path: [UInt8]) throws(ArchiveError) -> Node {
        let s: ArchiveSys.FileStat
        switch ArchiveSys.statFollowing(path) {
        case .success(let st): s = st
        case .failure(let e):
            throw ArchiveError(.io, object: printable(path),
                "cannot read the directory that holds a backed-up path: \(ArchiveSys.describe(errno: e))", errno: e)
        }
        let name = path.split(separator: 0x2f).last.map(Array.init) ?? []
        return Node(name: name, type: .directory, mode: s.permissions, uid: s.uid, gid: s.gid, user: user(s.uid),
                    group: group(s.gid), mtime: s.mtime, ctime: s.ctime, atime: s.atime)
    }

    private mutating func user(_ uid: UInt32) -> [UInt8] {
        if let n = users[uid] { return n }
        let n = ArchiveSys.userName(uid)
        users[uid] = n
        return n
    }

    private mutating func group(_ gid: UInt32) -> [UInt8] {
        if let n = groups[gid] { return n }
        let n = ArchiveSys.groupName(gid)
        groups[gid] = n
        return n
    }
}

import Glibc
import RedoubtCore

/// One entry found by the walk, with the node that will describe it.
struct WalkEntry {
    var node: Node
    var stat: ArchiveSys.FileStat
    /// Dropped from the snapshot (unreadable, vanished).
    var omitted = false
}

/// A directory of the walk, from its listing until its tree is stored: its entries in
/// name order. The walk's top is one too: its entries are the backed-up paths, and it has
/// no tree of its own.
///
/// Held by reference so that a directory's entries can be completed (a file's content, a
/// subdirectory's tree) after the walk has moved on; let go once its tree is stored.
final class WalkDirectory {
    /// The absolute path on disk (normalised lexically); empty for the top.
    let fullPath: [UInt8]
    /// The path inside the snapshot, relative to its root (what hard links name).
    let snapshotPath: [UInt8]
    /// The directory that lists this one, and this one's index among its entries; nil for the top.
    let parent: WalkDirectory?
    let slot: Int
    var entries: [WalkEntry] = []
    /// For the top only: each entry's absolute and snapshot path.
    var topPaths: [(full: [UInt8], snapshot: [UInt8])] = []

    init(fullPath: [UInt8], snapshotPath: [UInt8], parent: WalkDirectory?, slot: Int) {
        self.fullPath = fullPath
        self.snapshotPath = snapshotPath
        self.parent = parent
        self.slot = slot
    }

    var isTop: Bool { parent == nil }

    /// The absolute path of entry `i`.
    func fullPath(of i: Int) -> [UInt8] {
        if isTop { return topPaths[i].full }
        return fullPath == [0x2f] ? fullPath + entries[i].node.name : fullPath + [0x2f] + entries[i].node.name
    }

    /// The snapshot path of entry `i`. The walk of `/` (snapshot path empty) puts its
    /// entries at the snapshot root.
    func snapshotPath(of i: Int) -> [UInt8] {
        if isTop { return topPaths[i].snapshot }
        return snapshotPath.isEmpty ? entries[i].node.name : snapshotPath + [0x2f] + entries[i].node.name
    }
}

/// What the walk reports, in order: a directory's entries once it is listed, and the
/// directory again once everything below it has been listed.
enum WalkEvent {
    case listed(WalkDirectory)
    case closed(WalkDirectory)
}

/// Walks the paths to back up: lstat only, never follows a symlink, descends through
/// directory file descriptors (`openat` with `O_NOFOLLOW`), so a directory swapped for a
/// symlink mid-walk is not followed. Entries are visited in name order, depth first, so
/// the "first name" of a hard-linked file is the same on every run.
///
/// The walk is driven one event at a time (``next()``) and keeps only the directories on
/// the way down (one open descriptor each): what a backup holds grows with the tree's
/// depth and the widest directory, not with its size.
struct Walker {
    private let patterns: [[CChar]]
    private var users: [UInt32: [UInt8]] = [:]
    private var groups: [UInt32: [UInt8]] = [:]
    /// (device, inode) of multiply-linked files → the snapshot path of their first name.
    private var firstNames: [DevIno: [UInt8]] = [:]
    /// Directories tagged as caches (`CACHEDIR.TAG`) keep only their tag file.
    var excludeCaches = false
    /// Directories on another filesystem than their top-level path are kept empty.
    var oneFileSystem = false
    /// Regular files' extended attributes are left to whoever reads the file, who lists
    /// them through its open descriptor (or knows them from the metadata cache): listing
    /// them here looks each file's path up once more, a fifth of an unchanged run's time.
    var fileXattrsFromReader = false
    /// Problems with single entries, for the backup's result.
    var warnings: [BackupWarning] = []
    /// Regular files found so far (hard links excluded), and their logical bytes.
    private(set) var filesFound: UInt64 = 0
    private(set) var bytesFound: UInt64 = 0

    private struct Frame {
        /// -1 for the top, which is not a directory on disk.
        let fd: Int32
        let directory: WalkDirectory
        var subdirectories: [Subdirectory]
        var next = 0
        /// The device of the top-level path this frame is below (one-file-system).
        let device: UInt64
    }

    /// A subdirectory to descend into, as found when its parent was listed. Kept apart from
    /// the parent's entries, which belong to whoever takes the parent's event (the walk may
    /// run on a thread of its own and must not read them once they are handed over).
    private struct Subdirectory {
        let slot: Int
        let name: [UInt8]
        let fullPath: [UInt8]
        let snapshotPath: [UInt8]
        let stat: ArchiveSys.FileStat
    }

    private var stack: [Frame] = []
    private var top: WalkDirectory
    private var pending: [(paths: [UInt8], name: [UInt8], snapshot: [UInt8])]
    /// Entries found below the top-level paths.
    private var below = 0
    /// Whether every top-level path is a directory (known once they are lstat'ed).
    private var topHoldsOnlyDirectories = false
    private var started = false

    struct DevIno: Hashable {
        let device: UInt64
        let inode: UInt64
    }

    /// A walk of `paths` (absolute, normalised); `names` are their entries' names and
    /// `snapshotPaths` their paths below the snapshot root (what hard links name).
    init(paths: [[UInt8]], names: [[UInt8]], snapshotPaths: [[UInt8]], excludes: [String]) {
        patterns = excludes.map { Array($0.utf8CString) }
        top = WalkDirectory(fullPath: [], snapshotPath: [], parent: nil, slot: 0)
        pending = zip(zip(paths, names), snapshotPaths).map { ($0.0, $0.1, $1) }
    }

    /// A walk that finds one prepared top-level file and nothing else (a stream).
    init(single entry: WalkEntry, path: [UInt8]) {
        patterns = []
        top = WalkDirectory(fullPath: [], snapshotPath: [], parent: nil, slot: 0)
        top.entries = [entry]
        top.topPaths = [(path, path)]
        pending = []
        filesFound = 1
        stack = [Frame(fd: -1, directory: top, subdirectories: [], device: 0)]
    }

    /// The next event, or nil once the top has been closed. Throws if no path exists or
    /// nothing at all would be backed up.
    mutating func next() throws(ArchiveError) -> WalkEvent? {
        if !started {
            started = true
            if stack.isEmpty { try listTop() }
            return .listed(top)
        }
        while let last = stack.indices.last {
            guard stack[last].next < stack[last].subdirectories.count else {
                let frame = stack.removeLast()
                if frame.fd >= 0 { close(frame.fd) }
                if frame.directory.isTop { try refuseNothing() }
                return .closed(frame.directory)
            }
            let sub = stack[last].subdirectories[stack[last].next]
            stack[last].next += 1
            let parent = stack[last].directory
            let device = parent.isTop ? sub.stat.device : stack[last].device
            let directory = WalkDirectory(fullPath: sub.fullPath, snapshotPath: sub.snapshotPath, parent: parent,
                                          slot: sub.slot)
            // Why kept empty and not left out: a restore then shows where the mount point was,
            // as restic's --one-file-system does.
            if oneFileSystem && !parent.isTop && sub.stat.device != device { return .closed(directory) }
            let fd = parent.isTop ? Self.openDirectory(ArchiveSys.atFDCWD, sub.fullPath)
                : Self.openDirectory(stack[last].fd, sub.name)
            guard fd >= 0 else {
                warnUnreadableDirectory(directory.fullPath, errno: Glibc.errno)
                return .closed(directory)
            }
            // Why: the directory could have been replaced between lstat and open. What is
            // listed is what was opened; its own entry keeps the metadata found beside it.
            if !parent.isTop, case .success(let st) = ArchiveSys.fstat(fd), st.inode != sub.stat.inode
                || st.device != sub.stat.device {
                warnings.append(BackupWarning(.vanished, path: directory.fullPath,
                    "replaced while the backup ran; stored as found when listed"))
            }
            let subdirectories = list(directory, fd: fd)
            stack.append(Frame(fd: fd, directory: directory, subdirectories: subdirectories, device: device))
            return .listed(directory)
        }
        return nil
    }

    /// Closes what is still open when a backup stops early.
    mutating func abandon() {
        for frame in stack where frame.fd >= 0 { close(frame.fd) }
        stack = []
    }

    /// The top-level paths, lstat'ed: the entries of the top.
    private mutating func listTop() throws(ArchiveError) {
        for (path, name, snapshotPath) in pending {
            let st: ArchiveSys.FileStat
            switch ArchiveSys.lstat(path) {
            case .success(let s): st = s
            case .failure(let e) where e == ENOENT:
                // Why a warning: one missing path (an unmounted disk, a renamed directory)
                // must not cost the backup of the others; the run ends with "partial".
                warnings.append(BackupWarning(.vanished, path: path,
                    "does not exist; not backed up (the other paths are)"))
                continue
            case .failure(let e):
                throw ArchiveError(.io, object: printable(path),
                    "cannot back up this path: \(ArchiveSys.describe(errno: e))", errno: e)
            }
            guard let entry = makeEntry(name: name, fullPath: path, snapshotPath: snapshotPath, stat: st,
                dirfd: nil) else {
                throw ArchiveError(.io, object: printable(path), "cannot back up this path: it cannot be read")
            }
            top.entries.append(entry)
            top.topPaths.append((path, snapshotPath))
        }
        if top.entries.isEmpty {
            throw ArchiveError(.notFound, object: given,
                "none of the paths to back up exists; nothing was backed up")
        }
        topHoldsOnlyDirectories = top.entries.allSatisfy { $0.node.type == .directory }
        let subdirectories = top.entries.indices.filter { top.entries[$0].node.type == .directory }.map { i in
            Subdirectory(slot: i, name: top.entries[i].node.name, fullPath: top.topPaths[i].full,
                         snapshotPath: top.topPaths[i].snapshot, stat: top.entries[i].stat)
        }
        stack = [Frame(fd: -1, directory: top, subdirectories: subdirectories, device: 0)]
    }

    private var given: String { pending.map { printable($0.paths) }.joined(separator: ", ") }

    /// Why refuse: a snapshot of nothing would become the host's newest and keep
    /// monitoring (`host list --stale-after`) quiet while nothing is protected.
    private func refuseNothing() throws(ArchiveError) {
        guard below == 0, !pending.isEmpty, topHoldsOnlyDirectories else { return }
        let why = patterns.isEmpty ? "they are empty"
            : "they are empty or every entry in them matched an exclude pattern"
        throw ArchiveError(.invalidArgument, object: given,
                           "nothing to back up: \(why), so no snapshot was made (check --exclude: * and ? never "
                               + "match /)")
    }

    /// Opens a directory for listing without following a symlink and, where allowed,
    /// without touching its atime (so a backup does not change what the next one sees).
    private static func openDirectory(_ dirfd: Int32, _ name: [UInt8]) -> Int32 {
        let flags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC
        let fd = ArchiveSys.withCString(name) { openat(dirfd, $0, flags | ArchiveSys.oNoAtime) }
        if fd < 0 && Glibc.errno == EPERM { return ArchiveSys.withCString(name) { openat(dirfd, $0, flags) } }
        return fd
    }

    /// Lists one directory into its entries and returns the subdirectories among them.
    private mutating func list(_ directory: WalkDirectory, fd: Int32) -> [Subdirectory] {
        var names: [[UInt8]]
        switch ArchiveSys.listDirectory(fd: fd) {
        case .success(let n): names = n
        case .failure(let e):
            warnUnreadableDirectory(directory.fullPath, errno: e)
            return []
        }
        if excludeCaches, names.contains(Self.cacheTagName), Self.isTaggedCache(fd) { names = [Self.cacheTagName] }
        var subdirectories: [Subdirectory] = []
        directory.entries.reserveCapacity(names.count)
        for name in names {
            let full = directory.fullPath == [0x2f] ? directory.fullPath + name : directory.fullPath + [0x2f] + name
            if isExcluded(full, name) { continue }
            let st: ArchiveSys.FileStat
            switch ArchiveSys.fstatat(fd, name) {
            case .success(let s): st = s
            case .failure(let e):
                warnings.append(BackupWarning(e == ENOENT ? .vanished : .unreadable, path: full,
                                              e == ENOENT ? "disappeared before it could be read" : """
                                                  cannot stat: \(ArchiveSys.describe(errno: e))
                                                  """))
                continue
            }
            let snapshotPath = directory.snapshotPath.isEmpty ? name : directory.snapshotPath + [0x2f] + name
            guard let entry = makeEntry(name: name, fullPath: full, snapshotPath: snapshotPath, stat: st,
                dirfd: fd) else { continue }
            if entry.node.type == .directory {
                subdirectories.append(Subdirectory(slot: directory.entries.count, name: name, fullPath: full,
                                                   snapshotPath: snapshotPath, stat: st))
            }
            directory.entries.append(entry)
        }
        below += directory.entries.count
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

    private mutating func warnUnreadableDirectory(_ path: [UInt8], errno e: Int32) {
        warnings.append(BackupWarning(.unreadable, path: path,
                                      """
                                          directory cannot be read (\(ArchiveSys.describe(errno: e))); stored \
                                          without its contents
                                          """))
    }

    /// The entry for `name` with its node; nil (after a warning) if it is skipped.
    /// `dirfd` is the open parent directory, nil for a top-level path.
    private mutating func makeEntry(name: [UInt8], fullPath: [UInt8], snapshotPath: [UInt8],
                                    stat st: ArchiveSys.FileStat, dirfd: Int32?) -> WalkEntry? {
        guard var type = st.nodeType else {
            warnings.append(BackupWarning(.unreadable, path: fullPath,
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
                warnings.append(BackupWarning(.unreadable, path: fullPath,
                    "symlink target is empty or too long; skipped"))
                return nil
            case .failure(let e):
                warnings.append(BackupWarning(e == ENOENT ? .vanished : .unreadable, path: fullPath,
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
        if type == .file && fileXattrsFromReader {
            return entry(name: name, type: type, linkTarget: linkTarget, st, [])
        }
        var xattrs: [ExtendedAttribute] = []
        let xattrPath = dirfd.flatMap { ArchiveSys.procPath(dirfd: $0, name: name) } ?? fullPath
        switch ArchiveSys.listXattrs(xattrPath) {
        case .success(let x): xattrs = x
        case .failure(let e) where e == ENOENT:
            warnings.append(BackupWarning(.vanished, path: fullPath, "disappeared before it could be read"))
            return nil
        case .failure(let e):
            warnings.append(BackupWarning(.attributes, path: fullPath,
                "extended attributes not stored: \(ArchiveSys.describe(errno: e))"))
        }
        if xattrs.count > TreeCodec.maxXattrs {
            warnings.append(BackupWarning(.attributes, path: fullPath,
                "more than \(TreeCodec.maxXattrs) extended attributes; none stored"))
            xattrs = []
        }
        return entry(name: name, type: type, linkTarget: linkTarget, st, xattrs)
    }

    private mutating func entry(name: [UInt8], type: NodeType, linkTarget: [UInt8], _ st: ArchiveSys.FileStat,
                                _ xattrs: [ExtendedAttribute]) -> WalkEntry {
        let node = Node(name: name, type: type, mode: st.permissions, uid: st.uid, gid: st.gid, user: user(st.uid),
                        group: group(st.gid), mtime: st.mtime, ctime: st.ctime, atime: st.atime,
                        size: type == .file ? st.size : 0, linkTarget: linkTarget,
                        rdev: (type == .charDevice || type == .blockDevice) ? st.rdev : 0, xattrs: xattrs)
        if type == .file {
            filesFound += 1
            bytesFound += st.size
        }
        return WalkEntry(node: node, stat: st)
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

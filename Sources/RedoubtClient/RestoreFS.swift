import Glibc
import RedoubtCore

/// One entry to restore.
struct RestoreItem {
    /// Index of the parent directory's item; -1 for the restore target itself.
    var parent: Int
    var name: [UInt8]
    var node: Node
    /// (device, inode) of what this restore created, to recognise it when reopening.
    var created: (device: UInt64, inode: UInt64)? = nil
    /// Owner and permission bits a file had when this restore created it: where they are
    /// already the snapshot's, setting them again is skipped.
    var createdAs: (uid: UInt32, gid: UInt32, permissions: UInt32)? = nil
    var skipped = false
    /// Owner, attributes, mode and times are set (files: through their fd when complete).
    var metadataDone = false
    /// A directory restored only because a selected path lies below it.
    var onTheWay = false
    /// The name a file is written under until it is whole: its own where nothing was
    /// there, else a temporary one, renamed over what is there when the file is whole.
    var unfinished: [UInt8]? = nil
}

/// Everything the restore creates is created and reopened relative to directory file
/// descriptors, with `O_NOFOLLOW` and a check that the inode is the one it created: no
/// path is ever resolved through a symlink, whether the snapshot, an earlier restore
/// or someone else put it there.
final class RestoreTree {
    let targetFD: Int32
    let targetPath: [UInt8]
    var items: [RestoreItem] = []
    private var directories: [Int: (fd: Int32, tick: Int)] = [:]
    private var files: [Int: (fd: Int32, tick: Int)] = [:]
    private var tick = 0
    private let maxOpen = 64

    init(targetFD: Int32, targetPath: [UInt8]) {
        self.targetFD = targetFD
        self.targetPath = targetPath
    }

    deinit { closeAll() }

    func closeAll() {
        for (_, d) in directories { close(d.fd) }
        for (_, f) in files { close(f.fd) }
        directories.removeAll()
        files.removeAll()
    }

    func object(_ i: Int) -> String { printable(path(i)) }

    /// Item `i`'s path below the restore target, which is its path below the snapshot root:
    /// its directories' names and its own. Built when asked (messages, hard links), not
    /// kept: one path per entry was a tenth of a large restore's plan.
    func path(_ i: Int) -> [UInt8] {
        var names: [[UInt8]] = []
        var k = i
        while k >= 0 {
            names.append(items[k].name)
            k = items[k].parent
        }
        return Array(names.reversed().joined(separator: [0x2f]))
    }

    /// The name item `i` has in its directory now: perhaps a temporary one while it is written.
    func currentName(_ i: Int) -> [UInt8] { items[i].unfinished ?? items[i].name }

    /// A name for a file being written, unlikely to be taken and never a snapshot's own
    /// (it is checked with O_EXCL anyway): `.redoubt-` and 16 random hex digits.
    private static func temporaryName() -> [UInt8] {
        Array(".redoubt-\(String(UInt64.random(in: 1...UInt64.max), radix: 16)).part".utf8)
    }

    /// File `i` is whole: one written under a temporary name is renamed to its own,
    /// replacing what is there (never following it: rename replaces a symlink itself).
    func commitFile(_ i: Int) throws(ArchiveError) {
        guard let written = items[i].unfinished else { return }
        // A failed rename keeps the name, so that a failed restore removes the file.
        if written != items[i].name { try rename(i, from: written) }
        items[i].unfinished = nil
    }

    private func rename(_ i: Int, from written: [UInt8]) throws(ArchiveError) {
        let parent = try directory(items[i].parent)
        if ArchiveSys.withCString(written, items[i].name, { renameat(parent, $0, parent, $1) }) != 0 {
            let e = Glibc.errno
            if e == EISDIR || e == ENOTEMPTY || e == EEXIST {
                throw ArchiveError(.unsafePath, object: object(i),
                    "a directory is in the way; remove it or restore elsewhere", errno: e)
            }
            throw ArchiveError.system("renaming the restored file into place", object: object(i), errno: e)
        }
    }

    /// Removes every file this restore created and did not finish (a restore that failed),
    /// whether under a temporary name or its own; only the inode it created is removed.
    func removeUnfinished() {
        for i in items.indices {
            guard let name = items[i].unfinished else { continue }
            closeFile(i)
            items[i].unfinished = nil
            guard let parent = try? directory(items[i].parent), let c = items[i].created,
                case .success(let st) = ArchiveSys.fstatat(parent, name), st.device == c.device,
                st.inode == c.inode else { continue }
            _ = ArchiveSys.withCString(name) { unlinkat(parent, $0, 0) }
        }
    }

    /// What is at item `i`'s name in its directory now, if anything (never followed).
    func existing(_ i: Int) throws(ArchiveError) -> ArchiveSys.FileStat? {
        let parent = try directory(items[i].parent)
        switch ArchiveSys.fstatat(parent, items[i].name) {
        case .success(let st): return st
        case .failure(let e) where e == ENOENT: return nil
        case .failure(let e): throw ArchiveError.system("checking what exists", object: object(i), errno: e)
        }
    }

    /// A symlink's target at item `i`'s name.
    func existingLinkTarget(_ i: Int, sizeHint: Int) throws(ArchiveError) -> [UInt8]? {
        let parent = try directory(items[i].parent)
        if case .success(let t) = ArchiveSys.readlinkat(parent, items[i].name, sizeHint: sizeHint) { return t }
        return nil
    }

    /// The open directory `i` (-1: the target). The fd stays owned by the cache: use it
    /// before the next call that may open something.
    func directory(_ i: Int) throws(ArchiveError) -> Int32 {
        if i < 0 { return targetFD }
        tick += 1
        if let d = directories[i] {
            directories[i] = (d.fd, tick)
            return d.fd
        }
        let parent = try directory(items[i].parent)
        let fd = ArchiveSys.withCString(items[i].name) {
            openat(parent, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        }
        guard fd >= 0 else { throw ArchiveError.system("opening the directory", object: object(i), errno: Glibc.errno) }
        try checkCreated(i, fd: fd)
        evict(&directories)
        directories[i] = (fd, tick)
        return fd
    }

    /// The file `i`, open for writing; created (empty) on first use.
    func file(_ i: Int) throws(ArchiveError) -> Int32 {
        tick += 1
        if let f = files[i] {
            files[i] = (f.fd, tick)
            return f.fd
        }
        if items[i].created == nil {
            try createFile(i)
            return files[i]!.fd
        }
        let parent = try directory(items[i].parent)
        let fd = ArchiveSys.withCString(currentName(i)) { openat(parent, $0, O_WRONLY | O_NOFOLLOW | O_CLOEXEC) }
        guard fd >= 0 else { throw ArchiveError.system("opening the file", object: object(i), errno: Glibc.errno) }
        try checkCreated(i, fd: fd)
        evict(&files)
        files[i] = (fd, tick)
        return fd
    }

    func closeFile(_ i: Int) {
        if let f = files.removeValue(forKey: i) { close(f.fd) }
    }

    private func evict(_ cache: inout [Int: (fd: Int32, tick: Int)]) {
        guard cache.count >= maxOpen, let oldest = cache.min(by: { $0.value.tick < $1.value.tick }) else { return }
        close(oldest.value.fd)
        cache[oldest.key] = nil
    }

    /// Why: the entry must be the one this restore made; anything else (a symlink or a
    /// directory swapped in behind our back) is refused.
    private func checkCreated(_ i: Int, fd: Int32) throws(ArchiveError) {
        guard let c = items[i].created else { return }
        guard case .success(let st) = ArchiveSys.fstat(fd), st.device == c.device, st.inode == c.inode else {
            close(fd)
            throw ArchiveError(.unsafePath, object: object(i), "was replaced by something else while the restore ran")
        }
    }

    /// Makes directory `i`. An existing directory is reused; anything else in its place
    /// (a file, a symlink) is removed first, never followed.
    func makeDirectory(_ i: Int) throws(ArchiveError) {
        let parent = try directory(items[i].parent)
        let name = items[i].name
        var fd: Int32 = -1
        for _ in 0..<2 {
            let r = ArchiveSys.withCString(name) { mkdirat(parent, $0, 0o700) }
            if r != 0 && Glibc.errno != EEXIST {
                throw ArchiveError.system("mkdir", object: object(i), errno: Glibc.errno)
            }
            fd = ArchiveSys.withCString(name) { openat(parent, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            if fd >= 0 { break }
            let e = Glibc.errno
            guard e == ENOTDIR || e == ELOOP else {
                throw ArchiveError.system("opening the directory", object: object(i), errno: e)
            }
            // Something that is not a directory is in the way (perhaps a symlink left by
            // an earlier restore): remove it, it is not followed.
            if ArchiveSys.withCString(name, { unlinkat(parent, $0, 0) }) != 0 {
                throw ArchiveError.system("removing what is in the way", object: object(i), errno: Glibc.errno)
            }
        }
        guard fd >= 0 else {
            throw ArchiveError(.unsafePath, object: object(i),
                "cannot create the directory: something keeps taking its place")
        }
        guard case .success(let st) = ArchiveSys.fstat(fd) else {
            close(fd)
            throw ArchiveError.system("fstat", object: object(i), errno: Glibc.errno)
        }
        items[i].created = (st.device, st.inode)
        tick += 1
        evict(&directories)
        directories[i] = (fd, tick)
    }

    /// Removes a non-directory entry at `name` so a new one can be made.
    private func clear(_ i: Int, parent: Int32) throws(ArchiveError) {
        let r = ArchiveSys.withCString(items[i].name) { unlinkat(parent, $0, 0) }
        if r != 0 {
            let e = Glibc.errno
            if e == ENOENT { return }
            if e == EISDIR || e == EPERM {
                throw ArchiveError(.unsafePath, object: object(i),
                    "a directory is in the way; remove it or restore elsewhere", errno: e)
            }
            throw ArchiveError.system("removing the existing entry", object: object(i), errno: e)
        }
    }

    /// Creates file `i` empty, a sparse one with its final size (all hole until its data
    /// regions are written), and keeps it open for writing. Where nothing has the file's
    /// name it is created under it: one directory entry made instead of a temporary one
    /// and a rename (`renameat` was a tenth of a kernel-tree restore's samples). Where something
    /// has it, the file is written under a temporary name and replaces it only when whole
    /// (``commitFile(_:)``), so a failure never leaves a good file truncated.
    ///
    /// It is created with the snapshot's permission bits, less write for group and others
    /// and the special bits, plus write for the owner: while it is written only its writer
    /// may change it, and may reopen it; setuid and setgid come after the owner, which
    /// clears them. For most files these bits are then final.
    func createFile(_ i: Int) throws(ArchiveError) {
        let parent = try directory(items[i].parent)
        let flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC
        let mode = mode_t(items[i].node.mode & 0o755 | 0o200)
        var name = items[i].name
        var fd = ArchiveSys.withCString(name) { openat(parent, $0, flags, mode) }
        if fd < 0 && Glibc.errno == EEXIST {
            for _ in 0..<8 {
                name = Self.temporaryName()
                fd = ArchiveSys.withCString(name) { openat(parent, $0, flags, mode) }
                if fd >= 0 || Glibc.errno != EEXIST { break }
            }
        }
        guard fd >= 0 else { throw ArchiveError.system("creating the file", object: object(i), errno: Glibc.errno) }
        items[i].unfinished = name
        let size = items[i].node.size
        if items[i].node.dataRegions != nil && size > 0 && ftruncate(fd, off_t(clamping: size)) != 0 {
            let e = Glibc.errno
            close(fd)
            _ = ArchiveSys.withCString(name) { unlinkat(parent, $0, 0) }
            items[i].unfinished = nil
            throw ArchiveError.system("setting the size (\(size) bytes)", object: object(i), errno: e)
        }
        guard case .success(let st) = ArchiveSys.fstat(fd) else {
            close(fd)
            throw ArchiveError.system("fstat", object: object(i), errno: Glibc.errno)
        }
        items[i].created = (st.device, st.inode)
        items[i].createdAs = (st.uid, st.gid, st.mode & 0o7777)
        tick += 1
        evict(&files)
        files[i] = (fd, tick)
    }

    /// Creates a symlink, FIFO or device node, replacing a non-directory in the way.
    func makeSpecial(_ i: Int, _ make: (Int32, UnsafePointer<CChar>) -> Int32, what: String) throws(ArchiveError) {
        let parent = try directory(items[i].parent)
        var r = ArchiveSys.withCString(items[i].name) { make(parent, $0) }
        if r != 0 && Glibc.errno == EEXIST {
            try clear(i, parent: parent)
            r = ArchiveSys.withCString(items[i].name) { make(parent, $0) }
        }
        if r != 0 { throw ArchiveError.system(what, object: object(i), errno: Glibc.errno) }
    }

    /// Links item `i` to the file `target` created by this restore.
    func makeHardLink(_ i: Int, to target: Int) throws(ArchiveError) {
        let from = try directory(items[target].parent)
        let fromName = items[target].name
        // Why: link(2) with no AT_SYMLINK_FOLLOW never follows; the inode check makes
        // sure the name still is the file this restore wrote.
        let check = ArchiveSys.fstatat(from, fromName)
        guard case .success(let st) = check, let c = items[target].created, st.device == c.device,
            st.inode == c.inode else {
            throw ArchiveError(.unsafePath, object: object(i),
                "hard link target \(object(target)) was replaced while the restore ran")
        }
        let to = try directory(items[i].parent)
        var r = ArchiveSys.withCString(fromName, items[i].name) { linkat(from, $0, to, $1, 0) }
        if r != 0 && Glibc.errno == EEXIST {
            try clear(i, parent: to)
            let from2 = try directory(items[target].parent)
            let to2 = try directory(items[i].parent)
            r = ArchiveSys.withCString(fromName, items[i].name) { linkat(from2, $0, to2, $1, 0) }
        }
        if r != 0 { throw ArchiveError.system("link", object: object(i), errno: Glibc.errno) }
    }
}

/// Where each chunk of one file goes, and which of its offsets are known yet.
///
/// Chunk lengths are not in the tree, only in the packs' sealed indexes; so a chunk's
/// offset in its file is known once the lengths of all chunks before it are.
struct FilePlacement {
    let item: Int
    let chunks: [ChunkID]
    /// Content offsets of the data regions (sparse files), ascending.
    let regions: [Extent]?
    let regionStarts: [UInt64]
    /// Bytes of content the tree promises: the size, or the sum of the regions.
    let expected: UInt64
    /// Content offset of each chunk, valid below `known`.
    var offsets: [UInt64]
    var known: Int
    var chunksLeft: Int
    var damaged = false

    init(item: Int, node: Node) {
        self.item = item
        chunks = node.content
        regions = node.dataRegions
        var starts: [UInt64] = []
        var total: UInt64 = 0
        for r in node.dataRegions ?? [] {
            starts.append(total)
            total &+= r.length
        }
        regionStarts = starts
        expected = node.dataRegions == nil ? node.size : total
        offsets = [UInt64](repeating: 0, count: node.content.count)
        known = node.content.isEmpty ? 0 : 1
        chunksLeft = node.content.count
    }

    var isResolved: Bool { known == chunks.count }

    /// Extends `known` with the chunk lengths `length` knows; returns the chunk it waits for, if any.
    mutating func advance(_ length: (ChunkID) -> Int?) -> ChunkID? {
        while known < chunks.count {
            guard let len = length(chunks[known - 1]) else { return chunks[known - 1] }
            offsets[known] = offsets[known - 1] &+ UInt64(len)
            known += 1
        }
        return nil
    }

    /// The file ranges that content `[offset, offset+length)` occupies.
    func fileRanges(contentOffset o: UInt64, length: Int) -> [(file: UInt64, content: UInt64, length: Int)] {
        guard let regions else { return [(o, o, length)] }
        var out: [(UInt64, UInt64, Int)] = []
        // The last region starting at or before `o` (binary search: maps can be long).
        var lo = 0, hi = regionStarts.count
        while hi - lo > 1 {
            let mid = (lo + hi) / 2
            if regionStarts[mid] <= o { lo = mid } else { hi = mid }
        }
        var k = lo
        var c = o
        var left = UInt64(length)
        while left > 0 && k < regions.count {
            let inRegion = c - regionStarts[k]
            let take = min(left, regions[k].length - inRegion)
            out.append((regions[k].offset + inRegion, c, Int(take)))
            c += take
            left -= take
            k += 1
        }
        return out
    }
}

/// Chunk plaintext held back until its file offset is known, in an unnamed file next
/// to the restore (O_TMPFILE), so memory stays bounded.
final class SpillFile {
    private var fd: Int32 = -1
    private var end: UInt64 = 0
    private let directoryFD: Int32
    private(set) var stored: [ChunkID: (offset: UInt64, length: Int)] = [:]

    init(directoryFD: Int32) { self.directoryFD = directoryFD }
    deinit { if fd >= 0 { close(fd) } }

    func contains(_ id: ChunkID) -> Bool { stored[id] != nil }

    func put(_ id: ChunkID, _ data: UnsafeRawBufferPointer) throws(ArchiveError) {
        if stored[id] != nil { return }
        if fd < 0 {
            fd = openat(directoryFD, ".", O_RDWR | ArchiveSys.oTmpFile | O_CLOEXEC, 0o600)
            guard fd >= 0 else {
                throw ArchiveError.system("creating a temporary file in the target", object: "restore",
                    errno: Glibc.errno)
            }
        }
        let e = ArchiveSys.pwriteAll(fd, data, at: end)
        if e != 0 { throw ArchiveError.system("writing the temporary file", object: "restore", errno: e) }
        stored[id] = (end, data.count)
        end += UInt64(data.count)
    }

    func read(_ id: ChunkID) throws(ArchiveError) -> [UInt8] {
        guard let s = stored[id] else { return [] }
        var out = [UInt8](repeating: 0, count: s.length)
        let r = out.withUnsafeMutableBytes {
            b in s.length == 0 ? .success(0) : ArchiveSys.preadFull(fd, into: b.baseAddress!, count: s.length,
                at: s.offset)
        }
        switch r {
        case .success(let n) where n == s.length: return out
        case .success: throw ArchiveError(.io, object: "restore", "temporary file is shorter than written")
        case .failure(let e): throw ArchiveError.system("reading the temporary file", object: "restore", errno: e)
        }
    }
}

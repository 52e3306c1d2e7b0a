import Glibc
import CRedoubtSys
import RedoubtCore

/// Thin wrappers over the Linux calls the archiver and restorer use. Paths and names are
/// raw bytes (Linux names need not be UTF-8); every wrapper reports `errno` instead of
/// throwing so callers decide what is a warning and what is fatal.
enum ArchiveSys {
    // File type bits of st_mode (<sys/stat.h>), spelled out: Glibc's are not all imported.
    static let typeMask: UInt32 = 0o170000
    static let typeSocket: UInt32 = 0o140000
    static let typeSymlink: UInt32 = 0o120000
    static let typeRegular: UInt32 = 0o100000
    static let typeBlock: UInt32 = 0o060000
    static let typeDirectory: UInt32 = 0o040000
    static let typeChar: UInt32 = 0o020000
    static let typeFIFO: UInt32 = 0o010000

    static let atFDCWD: Int32 = -100
    static let atSymlinkNoFollow: Int32 = 0x100
    static let atEmptyPath: Int32 = 0x1000
    static let seekData: Int32 = 3
    static let seekHole: Int32 = 4
    static let oNoAtime: Int32 = 0o1000000
    static let oTmpFile: Int32 = 0o20200000
    static let oPath: Int32 = 0o10000000
    static let eNXIO: Int32 = 6

    /// The fields of `struct stat` the archive uses.
    struct FileStat: Sendable, Equatable {
        var mode: UInt32
        var inode: UInt64
        var device: UInt64
        var links: UInt64
        var uid: UInt32
        var gid: UInt32
        var rdev: UInt64
        var size: UInt64
        var blocks: UInt64
        var atime: Timestamp
        var mtime: Timestamp
        var ctime: Timestamp

        init(_ s: stat) {
            mode = UInt32(s.st_mode)
            inode = UInt64(s.st_ino)
            device = UInt64(s.st_dev)
            links = UInt64(s.st_nlink)
            uid = UInt32(s.st_uid)
            gid = UInt32(s.st_gid)
            rdev = UInt64(s.st_rdev)
            size = UInt64(max(0, s.st_size))
            blocks = UInt64(max(0, s.st_blocks))
            atime = Timestamp(seconds: Int64(s.st_atim.tv_sec), nanoseconds: UInt32(s.st_atim.tv_nsec))
            mtime = Timestamp(seconds: Int64(s.st_mtim.tv_sec), nanoseconds: UInt32(s.st_mtim.tv_nsec))
            ctime = Timestamp(seconds: Int64(s.st_ctim.tv_sec), nanoseconds: UInt32(s.st_ctim.tv_nsec))
        }

        var fileType: UInt32 { mode & ArchiveSys.typeMask }
        var isDirectory: Bool { fileType == ArchiveSys.typeDirectory }
        var isRegular: Bool { fileType == ArchiveSys.typeRegular }
        var permissions: UInt32 { mode & 0o7777 }

        /// The node type for this file type; nil for a type Redoubt does not know.
        var nodeType: NodeType? {
            switch fileType {
            case ArchiveSys.typeRegular: .file
            case ArchiveSys.typeDirectory: .directory
            case ArchiveSys.typeSymlink: .symlink
            case ArchiveSys.typeFIFO: .fifo
            case ArchiveSys.typeChar: .charDevice
            case ArchiveSys.typeBlock: .blockDevice
            case ArchiveSys.typeSocket: .socket
            default: nil
            }
        }

        /// True if reading the file would show a change since `other` was taken: the
        /// fields that any write moves (size, mtime, ctime) or another inode.
        func differsInContent(from other: FileStat) -> Bool {
            size != other.size || mtime != other.mtime || ctime != other.ctime || inode != other.inode
                || device != other.device
        }
    }

    static var errnoValue: Int32 { Glibc.errno }

    static func describe(errno e: Int32) -> String {
        guard let s = strerror(e) else { return "errno \(e)" }
        return "\(String(cString: s)) (errno \(e))"
    }

    /// Runs `body` with `bytes` as a NUL-terminated C string, without a heap allocation
    /// for short paths.
    @inline(__always)
    static func withCString<R>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
        try withUnsafeTemporaryAllocation(of: CChar.self, capacity: bytes.count + 1) { buf in
            bytes.withUnsafeBufferPointer { src in
                if let base = src.baseAddress, let dst = buf.baseAddress {
                    UnsafeMutableRawPointer(dst).copyMemory(from: base, byteCount: src.count)
                }
            }
            buf[bytes.count] = 0
            return try body(UnsafePointer(buf.baseAddress!))
        }
    }

    static func withCString<R>(_ a: [UInt8], _ b: [UInt8], _ body: (UnsafePointer<CChar>,
        UnsafePointer<CChar>) throws -> R) rethrows -> R {
        try withCString(a) { pa in try withCString(b) { pb in try body(pa, pb) } }
    }

    /// Retries a call that failed with EINTR.
    @inline(__always)
    static func retrying<T: BinaryInteger>(_ call: () -> T) -> T {
        while true {
            let r = call()
            if r == -1 && Glibc.errno == EINTR { continue }
            return r
        }
    }

    // MARK: - stat and names

    static func lstat(_ path: [UInt8]) -> SysResult<FileStat> {
        var st = stat()
        let r = withCString(path) { Glibc.lstat($0, &st) }
        return r == 0 ? .success(FileStat(st)) : .failure(Glibc.errno)
    }

    static func fstatat(_ dirfd: Int32, _ name: [UInt8]) -> SysResult<FileStat> {
        var st = stat()
        let r = withCString(name) { Glibc.fstatat(dirfd, $0, &st, atSymlinkNoFollow) }
        return r == 0 ? .success(FileStat(st)) : .failure(Glibc.errno)
    }

    static func fstat(_ fd: Int32) -> SysResult<FileStat> {
        var st = stat()
        return Glibc.fstat(fd, &st) == 0 ? .success(FileStat(st)) : .failure(Glibc.errno)
    }

    static func readlinkat(_ dirfd: Int32, _ name: [UInt8], sizeHint: Int) -> SysResult<[UInt8]> {
        var capacity = max(64, sizeHint + 1)
        while true {
            var buf = [UInt8](repeating: 0, count: capacity)
            let n = withCString(name) { cname in
                buf.withUnsafeMutableBufferPointer {
                    b in Glibc.readlinkat(dirfd, cname,
                        UnsafeMutableRawPointer(b.baseAddress!).assumingMemoryBound(to: CChar.self), b.count)
                }
            }
            if n < 0 { return .failure(Glibc.errno) }
            if n < capacity { return .success(Array(buf[0..<n])) }
            guard capacity < 1 << 20 else { return .failure(ENAMETOOLONG) }
            capacity *= 4
        }
    }

    /// The names in an open directory (without "." and ".."), sorted by bytes. Takes
    /// ownership of `fd` only on success of fdopendir; the caller still closes nothing.
    static func listDirectory(fd: Int32) -> SysResult<[[UInt8]]> {
        let dup = Glibc.dup(fd)
        guard dup >= 0 else { return .failure(Glibc.errno) }
        guard let dir = fdopendir(dup) else {
            let e = Glibc.errno
            close(dup)
            return .failure(e)
        }
        defer { closedir(dir) }
        let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name) ?? 19
        var names: [[UInt8]] = []
        while true {
            Glibc.errno = 0
            guard let ent = readdir(dir) else {
                let e = Glibc.errno
                if e != 0 { return .failure(e) }
                break
            }
            let p = UnsafeRawPointer(ent).advanced(by: nameOffset).assumingMemoryBound(to: UInt8.self)
            let n = strlen(UnsafeRawPointer(p).assumingMemoryBound(to: CChar.self))
            if n == 1 && p[0] == 0x2e { continue }
            if n == 2 && p[0] == 0x2e && p[1] == 0x2e { continue }
            names.append(Array(UnsafeBufferPointer(start: p, count: n)))
        }
        names.sort(by: bytesPrecede)
        return .success(names)
    }

    // MARK: - extended attributes

    /// The extended attributes of the entry at `path` (not following a final symlink),
    /// sorted by name. ENOTSUP/ENODATA mean "none".
    static func listXattrs(_ path: [UInt8]) -> SysResult<[ExtendedAttribute]> {
        withCString(path) { cpath in
            listXattrs(list: { CRedoubtSys.llistxattr(cpath, $0, $1) },
                       get: { CRedoubtSys.lgetxattr(cpath, $0, $1, $2) })
        }
    }

    /// The extended attributes of the file open as `fd`, sorted by name: no path is looked
    /// up, so a reader that has the file open lists them for the cost of the calls alone.
    static func listXattrs(fd: Int32) -> SysResult<[ExtendedAttribute]> {
        listXattrs(list: { CRedoubtSys.flistxattr(fd, $0, $1) }, get: { CRedoubtSys.fgetxattr(fd, $0, $1, $2) })
    }

    private static func listXattrs(list: (UnsafeMutablePointer<CChar>?, Int) -> Int,
                                   get: (UnsafePointer<CChar>, UnsafeMutableRawPointer?, Int) -> Int)
        -> SysResult<[ExtendedAttribute]> {
        var size = list(nil, 0)
        if size < 0 {
            let e = Glibc.errno
            return (e == ENOTSUP || e == ENODATA) ? .success([]) : .failure(e)
        }
        if size == 0 { return .success([]) }
        var names = [UInt8]()
        while true {
            names = [UInt8](repeating: 0, count: size + 64)
            let n = names.withUnsafeMutableBytes { list($0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count) }
            if n >= 0 {
                names.removeSubrange(n...)
                break
            }
            let e = Glibc.errno
            guard e == ERANGE else { return .failure(e) }
            size = list(nil, 0)
            if size < 0 { return .failure(Glibc.errno) }
        }
        var out: [ExtendedAttribute] = []
        for name in names.split(separator: 0) where !name.isEmpty {
            let nameBytes = Array(name)
            switch getXattr(nameBytes, get) {
            case .success(let v): out.append(ExtendedAttribute(name: nameBytes, value: v))
            case .failure(let e) where e == ENODATA: continue  // removed since the listing
            case .failure(let e): return .failure(e)
            }
        }
        out.sort { bytesPrecede($0.name, $1.name) }
        return .success(out)
    }

    private static func getXattr(_ name: [UInt8], _ get: (UnsafePointer<CChar>, UnsafeMutableRawPointer?, Int) -> Int)
        -> SysResult<[UInt8]> {
        withCString(name) { cname in
            var capacity = 256
            while true {
                var value = [UInt8](repeating: 0, count: capacity)
                let n = value.withUnsafeMutableBytes { get(cname, $0.baseAddress, $0.count) }
                if n >= 0 {
                    value.removeSubrange(n...)
                    return .success(value)
                }
                let e = Glibc.errno
                guard e == ERANGE else { return .failure(e) }
                let need = get(cname, nil, 0)
                if need < 0 { return .failure(Glibc.errno) }
                capacity = max(capacity * 2, need + 16)
                if capacity > TreeCodec.maxXattrValue + 16 { return .failure(E2BIG) }
            }
        }
    }

    static func setXattr(_ path: [UInt8], _ attribute: ExtendedAttribute) -> Int32 {
        withCString(path, attribute.name) { cpath, cname in
            let r = attribute.value.withUnsafeBytes { CRedoubtSys.lsetxattr(cpath, cname, $0.baseAddress, $0.count, 0) }
            return r == 0 ? 0 : Glibc.errno
        }
    }

    /// A path that reaches `name` inside the directory open as `dirfd` without resolving
    /// any other path component: `/proc/self/fd/<dirfd>/<name>`. Used for the calls that
    /// have no `*at` form (extended attributes); nil if /proc is not mounted.
    static func procPath(dirfd: Int32, name: [UInt8]) -> [UInt8]? {
        guard procAvailable else { return nil }
        return Array("/proc/self/fd/\(dirfd)/".utf8) + name
    }

    static let procAvailable: Bool = access("/proc/self/fd", X_OK) == 0

    // MARK: - users and groups

    static func userName(_ uid: UInt32) -> [UInt8] {
        var pwd = passwd()
        var result: UnsafeMutablePointer<passwd>? = nil
        var buf = [CChar](repeating: 0, count: 4096)
        return buf.withUnsafeMutableBufferPointer { b -> [UInt8] in
            guard getpwuid_r(uid, &pwd, b.baseAddress!, b.count, &result) == 0, result != nil,
                let n = pwd.pw_name else {
                return []
            }
            return boundedName(n)
        }
    }

    static func groupName(_ gid: UInt32) -> [UInt8] {
        var grp = group()
        var result: UnsafeMutablePointer<group>? = nil
        var buf = [CChar](repeating: 0, count: 4096)
        return buf.withUnsafeMutableBufferPointer { b -> [UInt8] in
            guard getgrgid_r(gid, &grp, b.baseAddress!, b.count, &result) == 0, result != nil,
                let n = grp.gr_name else {
                return []
            }
            return boundedName(n)
        }
    }

    /// A name of at most 256 bytes (the tree format's limit), else empty.
    private static func boundedName(_ p: UnsafePointer<CChar>) -> [UInt8] {
        let n = strlen(p)
        guard n <= 256 else { return [] }
        return UnsafeRawBufferPointer(start: p, count: n).map { $0 }
    }

    // MARK: - sparse files

    /// The data regions of an open file of `size` bytes, via SEEK_DATA/SEEK_HOLE; nil if
    /// the filesystem cannot tell (then the file is read as dense).
    static func dataRegions(fd: Int32, size: UInt64) -> [Extent]? {
        var regions: [Extent] = []
        var offset: Int64 = 0
        let end = Int64(size)
        while offset < end {
            let data = lseek(fd, off_t(offset), seekData)
            if data < 0 {
                if Glibc.errno == eNXIO { break }  // no data after offset
                return nil
            }
            if data >= end { break }
            var hole = lseek(fd, off_t(data), seekHole)
            if hole < 0 { hole = off_t(end) }
            let stop = min(Int64(hole), end)
            if stop > Int64(data) { regions.append(Extent(offset: UInt64(data), length: UInt64(stop - Int64(data)))) }
            offset = stop
        }
        return regions
    }

    // MARK: - writing

    /// Writes all of `buffer` at `offset`.
    static func pwriteAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, at offset: UInt64) -> Int32 {
        var done = 0
        while done < buffer.count {
            let n = Glibc.pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                return Glibc.errno
            }
            if n == 0 { return EIO }
            done += n
        }
        return 0
    }

    /// Reads up to `count` bytes at `offset`, retrying short reads until EOF; with no offset,
    /// from the descriptor's position (a pipe, which cannot be pread).
    static func preadFull(_ fd: Int32, into buffer: UnsafeMutableRawPointer, count: Int,
        at offset: UInt64?) -> SysResult<Int> {
        var done = 0
        while done < count {
            let n = offset.map { Glibc.pread(fd, buffer + done, count - done, off_t($0) + off_t(done)) }
                ?? Glibc.read(fd, buffer + done, count - done)
            if n < 0 {
                if Glibc.errno == EINTR { continue }
                return .failure(Glibc.errno)
            }
            if n == 0 { break }
            done += n
        }
        return .success(done)
    }

    /// Starts writing `count` bytes at `offset` of `fd` to disk and returns without waiting:
    /// the fsync that follows waits only for what is still in flight. Advice only; a
    /// failure here is left for that fsync to report.
    static func startWriteback(_ fd: Int32, at offset: UInt64, count: Int) {
        _ = redoubt_start_writeback(fd, Int64(offset), Int64(count))
    }

    static func fsyncDirectory(of path: [UInt8]) {
        var dir = path
        if let slash = dir.lastIndex(of: 0x2f) { dir.removeSubrange((slash == 0 ? 1 : slash)...) } else { dir = [0x2e] }
        let fd = withCString(dir) { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        if fd >= 0 {
            _ = fsync(fd)
            close(fd)
        }
    }

    static func timespec(_ t: Timestamp) -> Glibc.timespec {
        Glibc.timespec(tv_sec: Int(t.seconds), tv_nsec: Int(t.nanoseconds))
    }

    static func printable(_ path: [UInt8]) -> String { RedoubtCore.printable(path) }
}


/// The outcome of a system call: a value, or the errno it failed with.
enum SysResult<Success> {
    case success(Success)
    case failure(Int32)
}

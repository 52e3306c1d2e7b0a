import Foundation
import Glibc
@testable import RedoubtClient
import RedoubtCore

/// Files and trees on the real filesystem for the archiver and restorer tests.
enum Fixture {
    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    /// A fresh directory under /tmp; remove it with ``remove(_:)``.
    static func tempDirectory(_ label: String) throws -> String {
        var template = Array("/tmp/redoubt-client-\(label)-XXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else { throw Failure("mkdtemp failed: errno \(errno)") }
        return String(cString: p)
    }

    static func remove(_ path: String) {
        guard path.hasPrefix("/tmp/redoubt-client-") else { return }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/rm")
        p.arguments = ["-rf", "--", path]
        try? p.run()
        p.waitUntilExit()
    }

    static func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    static func check(_ r: Int32, _ what: String) throws {
        if r != 0 { throw Failure("\(what) failed: \(String(cString: strerror(errno)))") }
    }

    static func write(_ path: [UInt8], _ data: [UInt8], mode: mode_t = 0o644) throws {
        let fd = ArchiveSys.withCString(path) { open($0, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode) }
        guard fd >= 0 else { throw Failure("open \(printable(path)): errno \(errno)") }
        defer { close(fd) }
        let e = data.withUnsafeBytes { data.isEmpty ? 0 : ArchiveSys.pwriteAll(fd, $0, at: 0) }
        if e != 0 { throw Failure("write \(printable(path)): errno \(e)") }
    }

    static func write(_ path: String, _ data: [UInt8], mode: mode_t = 0o644) throws {
        try write(bytes(path), data, mode: mode)
    }

    static func read(_ path: [UInt8]) throws -> [UInt8] {
        let fd = ArchiveSys.withCString(path) { open($0, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) }
        guard fd >= 0 else { throw Failure("open \(printable(path)): errno \(errno)") }
        defer { close(fd) }
        guard case .success(let st) = ArchiveSys.fstat(fd) else { throw Failure("fstat") }
        var out = [UInt8](repeating: 0, count: Int(st.size))
        let r = out.withUnsafeMutableBytes {
            b in b.isEmpty ? .success(0) : ArchiveSys.preadFull(fd, into: b.baseAddress!, count: b.count, at: 0)
        }
        guard case .success(let n) = r, n == out.count else { throw Failure("short read of \(printable(path))") }
        return out
    }

    static func random(_ n: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: n)
        let fd = open("/dev/urandom", O_RDONLY)
        defer { close(fd) }
        let r = out.withUnsafeMutableBytes { ArchiveSys.preadFull(fd, into: $0.baseAddress!, count: n, at: 0) }
        guard case .success(let got) = r, got == n else { throw Failure("urandom") }
        return out
    }

    static func text(_ n: Int, seed: String = "Redoubt keeps the backups that ransomware cannot reach.\n") -> [UInt8] {
        let line = Array(seed.utf8)
        return (0..<n).map { line[$0 % line.count] }
    }

    /// Sets atime and mtime with nanoseconds, not following a symlink.
    static func setTimes(_ path: [UInt8], atime: Timestamp, mtime: Timestamp) throws {
        var t = [ArchiveSys.timespec(atime), ArchiveSys.timespec(mtime)]
        try check(ArchiveSys.withCString(path) { utimensat(ArchiveSys.atFDCWD, $0, &t, ArchiveSys.atSymlinkNoFollow) },
            "utimensat \(printable(path))")
    }

    static func setXattr(_ path: String, _ name: String, _ value: [UInt8]) throws {
        let e = ArchiveSys.setXattr(bytes(path), ExtendedAttribute(name: bytes(name), value: value))
        if e != 0 { throw Failure("setxattr \(name) on \(path): \(ArchiveSys.describe(errno: e))") }
    }

    /// A POSIX ACL (xattr encoding, version 2): owner rw, user 1000 r, group r, mask r, other r.
    static let extendedACL: [UInt8] = {
        var b: [UInt8] = [2, 0, 0, 0]
        func entry(_ tag: UInt16, _ perm: UInt16, _ id: UInt32) {
            b += [UInt8(tag & 0xff), UInt8(tag >> 8), UInt8(perm & 0xff), UInt8(perm >> 8)]
            b += [UInt8(id & 0xff), UInt8((id >> 8) & 0xff), UInt8((id >> 16) & 0xff), UInt8(id >> 24)]
        }
        entry(0x01, 6, .max)  // ACL_USER_OBJ
        entry(0x02, 4, 1000)  // ACL_USER
        entry(0x04, 4, .max)  // ACL_GROUP_OBJ
        entry(0x10, 4, .max)  // ACL_MASK
        entry(0x20, 4, .max)  // ACL_OTHER
        return b
    }()

    /// Binds (and closes) a Unix socket at `path`, leaving the socket file.
    static func makeSocket(_ path: String) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure("socket") }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let p = bytes(path)
        guard p.count < 100 else { throw Failure("socket path too long") }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in p.enumerated() { raw[i] = b }
        }
        let r = withUnsafePointer(to: &addr) { ptr in
            ptr.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        try check(r, "bind \(path)")
    }

    /// What a fixture could not create (recorded, not fatal).
    struct Notes {
        var skipped: [String] = []
        var sparseRegions: [(offset: Int, data: [UInt8])] = []
        var changingFile = ""
    }

    static let nonUTF8Name: [UInt8] = [0x6e, 0xff, 0xfe, 0x2e, 0x62, 0x69, 0x6e]

    /// Builds a tree with every kind of entry under `root` (which must exist).
    static func everyKind(at root: String, bigFile: Int = 20 << 20) throws -> Notes {
        var notes = Notes()
        let t0 = Timestamp(seconds: 1_700_000_000, nanoseconds: 123_456_789)
        try write("\(root)/regular.txt", text(100_000))
        try write("\(root)/empty", [])
        try check(mkdir("\(root)/emptydir", 0o750), "mkdir")
        try check(mkdir("\(root)/a", 0o755), "mkdir")
        try check(mkdir("\(root)/a/b", 0o700), "mkdir")
        try check(mkdir("\(root)/a/b/c", 0o755), "mkdir")
        try write("\(root)/a/b/c/deep.txt", text(5000, seed: "deep\n"))
        try check(symlink("regular.txt", "\(root)/link-relative"), "symlink")
        try check(symlink("does/not/exist", "\(root)/link-dangling"), "symlink")
        try check(symlink("/etc/hostname", "\(root)/link-absolute"), "symlink")
        try write("\(root)/hard1", text(3000, seed: "linked\n"))
        try check(link("\(root)/hard1", "\(root)/a/hard2"), "link")
        try check(mkfifo("\(root)/fifo", 0o640), "mkfifo")
        if mknod("\(root)/chardev", mode_t(ArchiveSys.typeChar | 0o644), dev_t((1 << 8) | 3)) != 0 {
            notes.skipped.append("char device: mknod failed: \(String(cString: strerror(errno)))")
        }
        try makeSocket("\(root)/socket")
        try write("\(root)/xattr.txt", text(10))
        try setXattr("\(root)/xattr.txt", "user.comment", bytes("kept"))
        try setXattr("\(root)/xattr.txt", "user.binary", [0, 1, 2, 255])
        try write("\(root)/acl.txt", text(20))
        try setXattr("\(root)/acl.txt", "system.posix_acl_access", extendedACL)
        try setXattr("\(root)/a", "system.posix_acl_default", extendedACL)
        // Sparse: 64 MiB with a few KiB of data.
        let sparse = "\(root)/sparse.img"
        let fd = open(sparse, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        try check(ftruncate(fd, 64 << 20), "ftruncate")
        for (k, off) in [0, 10 << 20, (64 << 20) - 4096].enumerated() {
            let d = text(4096, seed: "region \(k)\n")
            _ = d.withUnsafeBytes { ArchiveSys.pwriteAll(fd, $0, at: UInt64(off)) }
            notes.sparseRegions.append((off, d))
        }
        close(fd)
        try write(bytes("\(root)/") + nonUTF8Name, bytes("bytes"))
        try write("\(root)/setuid", text(50), mode: 0o755)
        try check(chown("\(root)/setuid", 0, 0), "chown")
        try check(chmod("\(root)/setuid", 0o4755), "chmod")
        try write("\(root)/owned", text(60))
        try check(chown("\(root)/owned", 1234, 5678), "chown")
        try write("\(root)/big.bin", try random(bigFile))
        // Odd times with nanoseconds; atime after mtime so reading does not move it (relatime).
        let later = Timestamp(seconds: 1_800_000_000, nanoseconds: 5)
        try setTimes(bytes("\(root)/regular.txt"), atime: later, mtime: t0)
        try setTimes(bytes("\(root)/link-relative"), atime: later, mtime: Timestamp(seconds: 1_600_000_000,
            nanoseconds: 999_999_999))
        try setTimes(bytes("\(root)/a/b"), atime: later, mtime: Timestamp(seconds: 1_500_000_000, nanoseconds: 1))
        try warmAtimes(root)
        return notes
    }

    /// Reads every symlink once: the first readlink after creation moves its atime
    /// (relatime), which would otherwise change the trees between the first two backups.
    static func warmAtimes(_ root: String) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/find")
        p.arguments = [root, "-type", "l", "-exec", "readlink", "{}", ";"]
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
    }

    // MARK: - comparing

    /// Differences between two trees: type, mode, owner, size, mtime (ns), rdev, symlink
    /// target, xattrs, contents, hard-link structure and (for sparse files) allocation.
    static func compare(_ a: String, _ b: String, skipSockets: Bool = true,
        compareDirectoryTimes: Bool = true) throws -> [String] {
        var diffs: [String] = []
        var inodes: [UInt64: UInt64] = [:]
        try compareEntry(bytes(a), bytes(b), rel: ".", skipSockets: skipSockets, dirTimes: compareDirectoryTimes,
            inodes: &inodes, diffs: &diffs)
        return diffs
    }

    private static func list(_ path: [UInt8]) throws -> [[UInt8]] {
        let fd = ArchiveSys.withCString(path) { open($0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | ArchiveSys.oNoAtime) }
        guard fd >= 0 else { throw Failure("open dir \(printable(path))") }
        defer { close(fd) }
        guard case .success(let names) = ArchiveSys.listDirectory(fd: fd) else {
            throw Failure("list \(printable(path))")
        }
        return names
    }

    private static func compareEntry(_ a: [UInt8], _ b: [UInt8], rel: String, skipSockets: Bool, dirTimes: Bool,
                                     inodes: inout [UInt64: UInt64], diffs: inout [String]) throws {
        guard case .success(let sa) = ArchiveSys.lstat(a) else { throw Failure("lstat \(printable(a))") }
        guard case .success(let sb) = ArchiveSys.lstat(b) else {
            diffs.append("\(rel): missing in restore")
            return
        }
        func diff(_ what: String, _ x: Any, _ y: Any) { diffs.append("\(rel): \(what) \(x) != \(y)") }
        guard sa.fileType == sb.fileType else {
            return diff("type", String(sa.fileType, radix: 8), String(sb.fileType, radix: 8))
        }
        if sa.fileType != ArchiveSys.typeSymlink && sa.permissions != sb.permissions {
            diff("mode", String(sa.permissions, radix: 8), String(sb.permissions, radix: 8))
        }
        if sa.uid != sb.uid || sa.gid != sb.gid { diff("owner", "\(sa.uid):\(sa.gid)", "\(sb.uid):\(sb.gid)") }
        if (!sa.isDirectory || dirTimes) && sa.mtime != sb.mtime { diff("mtime", sa.mtime, sb.mtime) }
        if sa.fileType == ArchiveSys.typeChar || sa.fileType == ArchiveSys.typeBlock, sa.rdev != sb.rdev {
            diff("rdev", sa.rdev, sb.rdev)
        }
        let xa = ArchiveSys.listXattrs(a), xb = ArchiveSys.listXattrs(b)
        if case .success(let x) = xa, case .success(let y) = xb, x != y {
            diff("xattrs", x.map { printable($0.name) }, y.map { printable($0.name) })
        }
        switch sa.fileType {
        case ArchiveSys.typeSymlink:
            let ta = ArchiveSys.readlinkat(ArchiveSys.atFDCWD, a, sizeHint: 256),
                tb = ArchiveSys.readlinkat(ArchiveSys.atFDCWD, b, sizeHint: 256)
            if case .success(let x) = ta, case .success(let y) = tb, x != y {
                diff("symlink target", printable(x), printable(y))
            }
        case ArchiveSys.typeRegular:
            if sa.size != sb.size { diff("size", sa.size, sb.size) }
            if sa.links > 1 {
                if let mapped = inodes[sa.inode] {
                    if mapped != sb.inode { diffs.append("\(rel): hard link not preserved") }
                } else {
                    inodes[sa.inode] = sb.inode
                }
                if sa.links != sb.links { diff("link count", sa.links, sb.links) }
            }
            if sa.blocks * 512 < sa.size && sb.blocks > sa.blocks + 64 {
                diff("allocated blocks (holes lost)", sa.blocks, sb.blocks)
            }
            if try read(a) != read(b) { diffs.append("\(rel): contents differ") }
        case ArchiveSys.typeDirectory:
            let na = try list(a), nb = try list(b)
            for name in na {
                let child = a + [0x2f] + name
                if skipSockets, case .success(let s) = ArchiveSys.lstat(child), s.fileType == ArchiveSys.typeSocket {
                    continue
                }
                try compareEntry(child, b + [0x2f] + name, rel: rel + "/" + printable(name), skipSockets: skipSockets,
                    dirTimes: dirTimes, inodes: &inodes, diffs: &diffs)
            }
            for name in nb where !na.contains(name) { diffs.append("\(rel)/\(printable(name)): only in restore") }
        default: break
        }
    }
}

/// Keys for one test tenant and host.
struct TestKeys {
    let tenant: TenantKeys
    let write: WriteKeySet

    init() throws {
        tenant = try TenantKeys.generate()
        write = WriteKeySet(tenant: "tenant", host: "host", shared: tenant.sharedWriteMaterial, signingKey: .generate())
    }
}

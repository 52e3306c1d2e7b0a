import Glibc
import RedoubtCore

extension Walker {
    /// What a walk of a ``BackupStream`` finds: one regular file at the top level, named
    /// `name`, owned by this process's user and group, mode 0600 (a dump is as private as
    /// the database it came from), with `now` as its times. Its size is known once read.
    static func stream(name: String, now: Timestamp) throws(ArchiveError) -> Walker {
        let bytes = Array(name.utf8)
        // Why one component: the name becomes a tree entry, which may not hold "/" or be "." or "..".
        guard !bytes.isEmpty, bytes.count <= 255, !bytes.contains(0x2f), !bytes.contains(0), name != ".",
              name != ".." else {
            throw ArchiveError(.invalidArgument, object: name.debugDescription,
                "not a file name for the command's output: give one name without \"/\" (--stdin-filename)")
        }
        var s = stat()
        s.st_mode = S_IFREG | 0o600
        s.st_nlink = 1
        s.st_uid = getuid()
        s.st_gid = getgid()
        let t = timespec(tv_sec: Int(now.seconds), tv_nsec: Int(now.nanoseconds))
        s.st_mtim = t
        s.st_ctim = t
        s.st_atim = t
        let st = ArchiveSys.FileStat(s)
        let node = Node(name: bytes, type: .file, mode: 0o600, uid: st.uid, gid: st.gid,
                        user: ArchiveSys.userName(st.uid), group: ArchiveSys.groupName(st.gid),
                        mtime: now, ctime: now, atime: now)
        return Walker(single: WalkEntry(node: node, stat: st), path: bytes)
    }
}

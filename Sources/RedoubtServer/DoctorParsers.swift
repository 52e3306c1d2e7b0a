// Pure parsers for the host files `redoubt doctor` reads: mount table, NFS
// export tables, INI-style configuration (smb.conf, sssd.conf, realmd.conf),
// sshd_config, /proc/self/status capabilities and /etc/os-release. No I/O here except
// through the closures `SSHDConfig.parse` is given.
import Foundation

/// One line of `/proc/self/mountinfo` (proc(5)).
public struct MountEntry: Sendable, Equatable {
    /// Where it is mounted, with `\040`-style escapes decoded.
    public let mountPoint: String
    /// The filesystem type (`ext4`, `nfs4`, `fuse.sshfs`, …).
    public let fsType: String
    /// The mount source (`/dev/vda`, `server:/export`, …).
    public let source: String
}

/// `/proc/self/mountinfo`.
public enum MountInfo {
    /// Parses mountinfo text; malformed lines are skipped.
    public static func parse(_ text: String) -> [MountEntry] {
        var out: [MountEntry] = []
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            // id parent major:minor root mount-point options [optional…] - fstype source super-options
            guard f.count >= 8, let dash = f[6...].firstIndex(of: "-"), dash + 1 < f.count else { continue }
            let source = dash + 2 < f.count ? unescape(String(f[dash + 2])) : ""
            out.append(MountEntry(mountPoint: unescape(String(f[4])), fsType: String(f[dash + 1]), source: source))
        }
        return out
    }

    /// The mount that holds `path` (absolute, symlinks resolved): the longest mount point
    /// that is `path` or one of its ancestors; of equal ones the last (the top of a stack).
    public static func mount(holding path: String, in mounts: [MountEntry]) -> MountEntry? {
        var best: MountEntry?
        for m in mounts where PathRelation.contains(m.mountPoint, path) {
            if best == nil || m.mountPoint.count >= (best?.mountPoint.count ?? 0) { best = m }
        }
        return best
    }

    /// Why `fsType` is not a local filesystem, or nil if it is one.
    public static func remoteKind(_ fsType: String) -> String? {
        let t = fsType.lowercased()
        if t == "fuse" || t == "fuseblk" || t.hasPrefix("fuse.") {
            return t == "fuse.sshfs" ? "an SSHFS (FUSE) mount" : "a FUSE mount"
        }
        let network: [String: String] = [
            "nfs": "an NFS mount", "nfs4": "an NFS mount", "cifs": "a CIFS/SMB mount", "smb3": "a CIFS/SMB mount",
                "smbfs": "a CIFS/SMB mount",
            "9p": "a 9P (network) mount", "afs": "an AFS mount", "ceph": "a CephFS mount",
                "glusterfs": "a GlusterFS mount",
            "lustre": "a Lustre mount", "ncpfs": "a NetWare mount", "ncp": "a NetWare mount", "davfs": "a WebDAV mount",
            "ocfs2": "a cluster (OCFS2) mount", "gfs2": "a cluster (GFS2) mount", "beegfs": "a BeeGFS mount",
                "gpfs": "a GPFS mount",
            "virtiofs": "a virtiofs (host-shared) mount", "vboxsf": "a VirtualBox shared folder",
                "vmhgfs": "a VMware shared folder",
        ]
        return network[t]
    }

    /// Decodes the octal escapes the kernel uses for space, tab, newline and backslash.
    static func unescape(_ s: String) -> String {
        guard s.contains("\\") else { return s }
        var bytes: [UInt8] = []
        let u = Array(s.utf8)
        var i = 0
        while i < u.count {
            if u[i] == 0x5c, i + 3 < u.count,
               let v = UInt8(String(decoding: u[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                bytes.append(v)
                i += 4
            } else {
                bytes.append(u[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Whether one absolute path is the other or an ancestor of it.
public enum PathRelation {
    /// True if `outer` is `inner` or a directory above it (`/srv` holds `/srv/x`, not `/srvx`).
    public static func contains(_ outer: String, _ inner: String) -> Bool {
        let o = normalize(outer), i = normalize(inner)
        return o == "/" || o == i || i.hasPrefix(o + "/")
    }

    /// True if either path holds the other: sharing either exposes the data directory's bytes.
    public static func overlaps(_ a: String, _ b: String) -> Bool { contains(a, b) || contains(b, a) }

    static func normalize(_ p: String) -> String {
        var s = p
        while s.count > 1 && s.hasSuffix("/") { s.removeLast() }
        return s
    }
}

/// NFS export tables: `/etc/exports`, `/etc/exports.d/*.exports` (exports(5)), and the
/// kernel's `/proc/fs/nfs/exports` and `/var/lib/nfs/etab`, which share the shape
/// "path, then clients".
public enum NFSExports {
    /// The exported paths, in file order. Handles comments, `\` continuations, quoted
    /// paths and octal escapes.
    public static func paths(_ text: String) -> [String] {
        var out: [String] = []
        let joined = text.replacingOccurrences(of: "\\\n", with: " ")
        for raw in joined.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            guard !line.isEmpty, !line.hasPrefix("#") else { continue }
            var path: String
            if line.hasPrefix("\"") {
                let rest = line.dropFirst()
                path = String(rest.prefix { $0 != "\"" })
            } else {
                path = String(line.prefix { $0 != " " && $0 != "\t" })
            }
            path = MountInfo.unescape(path)
            if path.hasPrefix("/") { out.append(path) }
        }
        return out
    }
}

/// INI-style configuration as Samba, SSSD and realmd write it: `[section]`, `key = value`,
/// `#` and `;` comments, `\` continuations. Keys are lower-cased with inner whitespace
/// removed (Samba treats `path`, `Path` and `pa th` alike).
public struct INIConfig: Sendable, Equatable {
    public struct Section: Sendable, Equatable {
        public let name: String
        public var entries: [(key: String, value: String)]
        public static func == (a: Section, b: Section) -> Bool {
            a.name == b.name && a.entries.map(\.key) == b.entries.map(\.key)
                && a.entries.map(\.value) == b.entries.map(\.value)
        }

        /// The first value of `key` (already normalised: lower case, no spaces).
        public func value(_ key: String) -> String? { entries.first { $0.key == key }?.value }

        /// Every value of any of `keys`, in order (synonyms, repeats).
        public func values(_ keys: Set<String>) -> [String] { entries.filter { keys.contains($0.key) }.map(\.value) }
    }

    public var sections: [Section]

    public static func parse(_ text: String) -> INIConfig {
        var sections: [Section] = []
        let joined = text.replacingOccurrences(of: "\\\n", with: " ")
        for raw in joined.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            guard !line.isEmpty, !line.hasPrefix("#"), !line.hasPrefix(";") else { continue }
            if line.hasPrefix("["), let close = line.firstIndex(of: "]") {
                sections.append(Section(name: String(line[line.index(after: line.startIndex)..<close])
                    .trimmingCharacters(in: .whitespaces), entries: []))
                continue
            }
            guard let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq].lowercased().filter { !$0.isWhitespace }
            let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            if sections.isEmpty { sections.append(Section(name: "", entries: [])) }
            sections[sections.count - 1].entries.append((key: key, value: value))
        }
        return INIConfig(sections: sections)
    }

    public func section(_ name: String) -> Section? { sections.first { $0.name.lowercased() == name.lowercased() } }
}

/// The effective values of the sshd_config keywords doctor checks.
public struct SSHDConfig: Sendable, Equatable {
    /// First value of each keyword (lower case) outside `Match` blocks, as sshd applies it.
    public var global: [String: String] = [:]
    /// Values set inside `Match` blocks: (keyword, value, the Match line).
    public var conditional: [MatchValue] = []
    /// Files read, in order.
    public var files: [String] = []
    /// Included files that could not be read (often 0600, e.g. cloud-init's): a value set
    /// there may win over anything seen here.
    public var unreadable: [String] = []

    public struct MatchValue: Sendable, Equatable {
        public let keyword: String
        public let value: String
        public let match: String
    }

    /// OpenSSH's compiled-in defaults (portable OpenSSH ≥ 8.7) for the keywords checked.
    public static let defaults: [String: String] = [
        "permitrootlogin": "prohibit-password", "passwordauthentication": "yes",
        "kbdinteractiveauthentication": "yes", "usepam": "no",
    ]

    /// The effective value and whether it came from the default.
    public func value(_ keyword: String) -> (value: String, isDefault: Bool) {
        if let v = global[keyword] { return (v, false) }
        return (Self.defaults[keyword] ?? "", true)
    }

    /// Parses `path` and, in place, the files its `Include` lines name (relative to
    /// /etc/ssh; `*`/`?` globs in the file name, matches sorted), as sshd does: the first
    /// value of a keyword wins; `Match` starts a conditional block that lasts to the end
    /// of that file.
    public static func parse(path: String, read: (String) -> String?, list: (String) -> [String]) -> SSHDConfig {
        var c = SSHDConfig()
        var depth = 0
        func load(_ p: String, inMatch: String?) {
            guard depth < 16 else { return }
            guard let text = read(p) else {
                if depth > 0 { c.unreadable.append(p) }
                return
            }
            depth += 1
            defer { depth -= 1 }
            c.files.append(p)
            var match = inMatch
            for raw in text.split(separator: "\n") {
                let line = raw.trimmingCharacters(in: .whitespaces)
                guard !line.isEmpty, !line.hasPrefix("#") else { continue }
                // "Keyword value" or "Keyword=value".
                let keyEnd = line.firstIndex { $0 == " " || $0 == "\t" || $0 == "=" } ?? line.endIndex
                let key = line[..<keyEnd].lowercased()
                var rest = line[keyEnd...].drop { $0 == " " || $0 == "\t" }
                if rest.first == "=" { rest = rest.dropFirst().drop { $0 == " " || $0 == "\t" } }
                var value = String(rest)
                if let hash = value.firstIndex(of: "#"), value.first != "\"" {
                    value = String(value[..<hash]).trimmingCharacters(in: .whitespaces)
                }
                if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 {
                    value = String(value.dropFirst().dropLast())
                }
                if key == "match" { match = line; continue }
                if key == "include" {
                    for pattern in value.split(separator: " ") {
                        for f in expand(String(pattern), list: list) { load(f, inMatch: match) }
                    }
                    continue
                }
                // ChallengeResponseAuthentication is the deprecated alias of KbdInteractiveAuthentication.
                let k = key == "challengeresponseauthentication" ? "kbdinteractiveauthentication" : key
                let v = value.lowercased()
                if let match {
                    c.conditional.append(MatchValue(keyword: k, value: v, match: match))
                } else if c.global[k] == nil {
                    c.global[k] = v
                }
            }
        }
        load(path, inMatch: nil)
        return c
    }

    static func expand(_ pattern: String, list: (String) -> [String]) -> [String] {
        let p = pattern.hasPrefix("/") ? pattern : "/etc/ssh/" + pattern
        guard p.contains("*") || p.contains("?") || p.contains("[") else { return [p] }
        let dir = (p as NSString).deletingLastPathComponent
        let glob = (p as NSString).lastPathComponent
        return list(dir).filter { fnmatch(glob, $0, FNM_PERIOD) == 0 }.sorted().map { dir + "/" + $0 }
    }
}

/// Linux capability sets from `/proc/PID/status`.
public struct CapabilitySet: Sendable, Equatable {
    public let bits: UInt64

    public static let linuxImmutable = 9
    public static let netBindService = 10
    public static let names = [
        "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
            "linux_immutable",
        "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner", "sys_module", "sys_rawio",
            "sys_chroot",
        "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config",
            "mknod", "lease",
        "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend",
            "audit_read",
        "perfmon", "bpf", "checkpoint_restore",
    ]

    public init(bits: UInt64) { self.bits = bits }

    /// The effective set (`CapEff:`) of a status file, or nil if absent or malformed.
    public static func effective(status: String) -> CapabilitySet? {
        for line in status.split(separator: "\n") where line.hasPrefix("CapEff:") {
            let hex = line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces)
            return UInt64(hex, radix: 16).map(CapabilitySet.init(bits:))
        }
        return nil
    }

    public func has(_ bit: Int) -> Bool { bit < 64 && bits & (1 << UInt64(bit)) != 0 }

    /// `CAP_` names of the bits set, in bit order (unknown bits as `cap_N`).
    public var names: [String] {
        (0..<64).filter(has).map { "cap_" + ($0 < Self.names.count ? Self.names[$0] : String($0)) }
    }
}

/// `/etc/os-release` (os-release(5)).
public enum OSRelease {
    /// The variables, with quotes removed.
    public static func parse(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            guard !line.hasPrefix("#"), let eq = line.firstIndex(of: "=") else { continue }
            var v = String(line[line.index(after: eq)...])
            if v.count >= 2, let f = v.first, f == "\"" || f == "'", v.last == f {
                v = String(v.dropFirst().dropLast())
            }
            out[String(line[..<eq])] = v
        }
        return out
    }
}

/// `key=value` lines of `timedatectl show`.
public enum TimedatectlShow {
    public static func parse(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            out[String(line[..<eq])] = String(line[line.index(after: eq)...])
        }
        return out
    }
}

// `redoubt doctor`: checks that the repository host is hardened as
// README "Hardened deployment" asks. Every check reads host files through `HostFiles`,
// so tests point it at a fake /etc and /proc tree; the data directory checks (mode,
// owner, the immutable-flag probe) use the real directory.
import Foundation
import GRDB
import RedoubtStore

/// Reads host configuration under a root: `/` on a real host, a fixture tree in tests.
public struct HostFiles: Sendable {
    /// The directory that stands for `/`.
    public let root: String

    public init(root: String = "/") {
        var r = root
        while r.count > 1 && r.hasSuffix("/") { r.removeLast() }
        self.root = r
    }

    /// True when the files are the host's own (root `/`).
    public var isHostRoot: Bool { root == "/" }

    /// Where absolute `path` lives under the root.
    public func resolve(_ path: String) -> String { root == "/" ? path : root + path }

    /// The file's text, or nil if it cannot be read.
    public func read(_ path: String) -> String? {
        guard let d = FileManager.default.contents(atPath: resolve(path)) else { return nil }
        return String(decoding: d, as: UTF8.self)
    }

    public func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: resolve(path)) }

    /// Names in a directory, sorted; empty if it cannot be read.
    public func list(_ dir: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: resolve(dir))) ?? []).sorted()
    }

    /// The target of a symbolic link, or nil if `path` is not one.
    public func linkTarget(_ path: String) -> String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: resolve(path))
    }
}

/// One line of the doctor's checklist.
public struct DoctorCheck: Sendable, Codable, Equatable {
    public enum Status: String, Sendable, Codable, Comparable {
        case pass, warn, fail
        var rank: Int { self == .pass ? 0 : self == .warn ? 1 : 2 }
        public static func < (a: Status, b: Status) -> Bool { a.rank < b.rank }
    }

    /// Stable identifier (`data.private`, `ssh.root`, …): scripts key on it.
    public let id: String
    public let status: Status
    /// What was found, naming the file or object.
    public let summary: String
    /// What to do about it; empty when the check passed.
    public let fix: String

    public init(id: String, status: Status, summary: String, fix: String = "") {
        self.id = id
        self.status = status
        self.summary = summary
        self.fix = fix
    }
}

/// The repository-host checklist. Each `check…` method is one rule and returns one
/// `DoctorCheck`; `run()` returns all of them in a fixed order.
public struct Doctor: Sendable {
    /// The server data directory (real path on this host).
    public let dataDir: String
    /// Where /etc and /proc are read.
    public let files: HostFiles
    /// How old the newest snapshot of a tenant may get without a copy off this host.
    public let maxCopyAge: TimeInterval
    public let now: Date
    /// Output of `timedatectl show`, when it could be run (never under a fixture root).
    public let timedatectl: String?

    /// The ids of every check, in output order.
    public static let checkIDs = ["data.private", "data.local-fs", "data.nfs-export", "data.smb-share",
        "immutable.works", "caps.immutable",
                                  "caps.excess", "domain.joined", "ssh.password", "ssh.root", "time.sync", "hosts.os",
                                      "copy.proof", "copy.fresh"]

    public init(dataDir: String, files: HostFiles, maxCopyAge: TimeInterval = 86400, now: Date = Date(),
        timedatectl: String? = nil) {
        self.dataDir = dataDir
        self.files = files
        self.maxCopyAge = maxCopyAge
        self.now = now
        self.timedatectl = timedatectl
    }

    /// Every check, in `checkIDs` order; on a cluster node (catalog on PostgreSQL) the
    /// `clusterCheckIDs` follow.
    public func run() async -> [DoctorCheck] {
        let clusterCatalog = clusterCatalog
        let catalog = await openCatalog(clusterCatalog)
        let host = [checkPrivate(), checkLocalFilesystem(), checkNFSExport(), checkSambaShare(), checkImmutableFlag(),
            checkImmutableCapability(),
                    checkExcessCapabilities(), checkDomainJoin(), checkSSHPassword(), checkSSHRoot(), checkTimeSync()]
        let standIns = host.filter { ["domain.joined", "ssh.password", "ssh.root"].contains($0.id) }
        let cluster = await clusterChecks(catalog, clusterCatalog)
        return host + [await checkHostOS(catalog, standIns: standIns), await checkCopyProof(catalog),
                       await checkCopyFreshness(catalog)] + cluster
    }

    /// Whether a shared or exported path holds or lies in `dir`, as written or with its
    /// symlinks resolved (a share of /srv/x where /srv/x links to the data directory
    /// shares the data directory).
    func overlapsData(_ p: String, _ dir: String) -> Bool {
        var candidates = [p]
        for path in Set([p, files.resolve(p)]) {
            guard let r = realpath(path, nil) else { continue }
            defer { free(r) }
            let s = String(cString: r)
            candidates.append(s)
            if files.root != "/", s.hasPrefix(files.root) { candidates.append(String(s.dropFirst(files.root.count))) }
        }
        return candidates.contains { PathRelation.overlaps($0, dir) }
    }

    /// The data directory with symlinks resolved (as the mount table names it).
    var realDataDir: String {
        guard let r = realpath(dataDir, nil) else {
            return PathRelation.normalize(URL(fileURLWithPath: dataDir).standardizedFileURL.path)
        }
        defer { free(r) }
        return String(cString: r)
    }

    // MARK: data directory

    /// `data.private`: the directory and what it holds are mode 0700/0600 and owned by one
    /// non-root user, and no ancestor lets others rename it away.
    public func checkPrivate() -> DoctorCheck {
        let id = "data.private"
        let dir = realDataDir
        var st = stat()
        guard stat(dir, &st) == 0 else {
            return DoctorCheck(id: id, status: .fail,
                summary: """
                    the data directory \(dataDir) does not exist or cannot be read \
                    (\(String(cString: strerror(errno))))
                    """,
                               fix: """
                                   create it with `redoubt server init --data \(dataDir)`, or pass --data with the \
                                   server's directory
                                   """)
        }
        guard st.st_mode & S_IFMT == S_IFDIR else {
            return DoctorCheck(id: id, status: .fail, summary: "\(dir) is not a directory",
                fix: "pass --data with the server's data directory")
        }
        let owner = st.st_uid
        var problems: [String] = [], loose: [String] = []
        if st.st_mode & 0o077 != 0 {
            problems.append("\(dir) is mode \(Self.octal(st.st_mode)), open to group or others")
        }
        // Why each entry: a readable key or catalog leaks the CA key, the write material or the audit log.
        for name in ["server.json", "catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm", "admin.credential",
            "tls", "tls/ca.key", "tls/server.key", "store"] {
            var e = stat()
            guard lstat(dir + "/" + name, &e) == 0 else { continue }
            // Inside a 0700 directory a looser entry is reachable only if the directory opens up: warn.
            if e.st_mode & 0o077 != 0 { loose.append("\(name) is mode \(Self.octal(e.st_mode))") }
            if e.st_uid != owner {
                problems.append("\(name) is owned by uid \(e.st_uid), not the directory's owner uid \(owner)")
            }
        }
        // Why ancestors: whoever may write a parent can rename the data directory and put another in its place.
        var parent = (dir as NSString).deletingLastPathComponent
        while !parent.isEmpty {
            var p = stat()
            if stat(parent, &p) == 0 {
                if p.st_mode & 0o022 != 0, p.st_mode & S_ISVTX == 0 {
                    problems.append("""
                        the parent \(parent) is writable by group or others (mode \(Self.octal(p.st_mode)))
                        """)
                }
                // Its owner may chmod it writable at will, whatever its mode now.
                if p.st_uid != 0 && p.st_uid != owner {
                    problems.append("""
                        the parent \(parent) is owned by \(Self.userName(p.st_uid)) (uid \(p.st_uid)), who can rename \
                        the data directory away
                        """)
                }
            }
            if parent == "/" { break }
            parent = (parent as NSString).deletingLastPathComponent
        }
        if !problems.isEmpty {
            return DoctorCheck(id: id, status: .fail, summary: problems.joined(separator: "; "),
                               fix: """
                                   chmod 0700 \(dir); chmod -R go-rwx \(dir); chown -R SERVICE-USER: \(dir); chmod \
                                   go-w on writable parents and chown root: parents owned by other users
                                   """)
        }
        let user = Self.userName(owner)
        if !loose.isEmpty {
            return DoctorCheck(id: id, status: .warn,
                summary: """
                    \(dir) is mode 0700, but entries are open to group or others: \(loose.joined(separator: "; "))
                    """,
                               fix: "chmod -R go-rwx \(dir)")
        }
        if owner == 0 {
            // Why warn: a root-owned data directory means the service runs as root, with every capability.
            return DoctorCheck(id: id, status: .warn,
                summary: "\(dir) is private (mode 0700) but owned by root: the service runs as root",
                               fix: """
                                   useradd --system --shell /usr/sbin/nologin redoubt; chown -R redoubt: \(dir); run \
                                   the service as that user (contrib/redoubt-server.service)
                                   """)
        }
        return DoctorCheck(id: id, status: .pass,
            summary: "\(dir) is mode \(Self.octal(st.st_mode)), owned by \(user) (uid \(owner)), contents private")
    }

    static func octal(_ mode: mode_t) -> String { String(format: "%04o", Int(mode & 0o7777)) }

    static func userName(_ uid: uid_t) -> String {
        guard let pw = getpwuid(uid) else { return "uid \(uid)" }
        return String(cString: pw.pointee.pw_name)
    }

    /// `data.local-fs`: the mount that holds the data directory is a local filesystem.
    public func checkLocalFilesystem() -> DoctorCheck {
        let id = "data.local-fs"
        let dir = realDataDir
        guard let text = files.read("/proc/self/mountinfo") else {
            return DoctorCheck(id: id, status: .warn,
                summary: "cannot read \(files.resolve("/proc/self/mountinfo")): the filesystem of \(dir) is unknown",
                               fix: "run doctor where /proc is mounted")
        }
        guard let m = MountInfo.mount(holding: dir, in: MountInfo.parse(text)) else {
            return DoctorCheck(id: id, status: .warn,
                summary: "no mount in \(files.resolve("/proc/self/mountinfo")) holds \(dir)",
                fix: "run doctor on the repository host itself")
        }
        // Why: on a network or FUSE mount, whoever controls the other end changes packs and ignores the immutable flag.
        if let kind = MountInfo.remoteKind(m.fsType) {
            return DoctorCheck(id: id, status: .fail,
                summary: "\(dir) is on \(kind) (\(m.fsType) \(m.source) at \(m.mountPoint))",
                               fix: "move the data directory to a local ext4, XFS or btrfs filesystem on this host")
        }
        return DoctorCheck(id: id, status: .pass,
            summary: "\(dir) is on a local \(m.fsType) filesystem (\(m.source) at \(m.mountPoint))")
    }

    /// `data.nfs-export`: no NFS export (configured or live in the kernel) holds or lies in the data directory.
    public func checkNFSExport() -> DoctorCheck {
        let id = "data.nfs-export"
        let dir = realDataDir
        var sources = ["/etc/exports"] + files.list("/etc/exports.d").filter { $0.hasSuffix(".exports") }.map {
            "/etc/exports.d/" + $0
        }
        sources += ["/proc/fs/nfs/exports", "/var/lib/nfs/etab"]
        var hits: [String] = []
        var read = 0
        for f in sources {
            guard let text = files.read(f) else { continue }
            read += 1
            for p in NFSExports.paths(text) where overlapsData(p, dir) { hits.append("\(p) (\(f))") }
        }
        if !hits.isEmpty {
            return DoctorCheck(id: id, status: .fail,
                summary: "\(dir) is exported through NFS: \(Self.unique(hits).joined(separator: ", "))",
                               fix: "remove the export from /etc/exports or /etc/exports.d, then `exportfs -ra`; "
                                   + "clients reach the repository only through its API")
        }
        return DoctorCheck(id: id, status: .pass,
            summary: read == 0 ? "no NFS export tables on this host" : """
                no NFS export holds \(dir) (\(read) export tables read)
                """)
    }

    /// smb.conf with each `include = /absolute/file` line replaced by that file (four
    /// levels deep; includes with `%` macros cannot be resolved here and are skipped).
    func sambaConfig(_ path: String = "/etc/samba/smb.conf", depth: Int = 0) -> String? {
        guard depth < 4, let text = files.read(path) else { return nil }
        return text.split(separator: "\n", omittingEmptySubsequences: false).map { raw -> String in
            let line = raw.trimmingCharacters(in: .whitespaces)
            guard let eq = line.firstIndex(of: "="),
                line[..<eq].lowercased().filter({ !$0.isWhitespace }) == "include" else {
                return String(raw)
            }
            let target = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            guard target.hasPrefix("/"), !target.contains("%") else { return String(raw) }
            return sambaConfig(target, depth: depth + 1) ?? ""
        }.joined(separator: "\n")
    }

    /// `data.smb-share`: no Samba share's `path` (smb.conf, its includes, and user shares
    /// in /var/lib/samba/usershares) holds or lies in the data directory.
    public func checkSambaShare() -> DoctorCheck {
        let id = "data.smb-share"
        let dir = realDataDir
        var hits: [String] = []
        for name in files.list("/var/lib/samba/usershares") {
            guard let text = files.read("/var/lib/samba/usershares/" + name) else { continue }
            for line in text.split(separator: "\n") where line.hasPrefix("path=") {
                let p = String(line.dropFirst(5))
                if overlapsData(p, dir) { hits.append("user share \(name) path=\(p)") }
            }
        }
        guard let text = sambaConfig() else {
            if !hits.isEmpty {
                return DoctorCheck(id: id, status: .fail,
                    summary: "\(dir) is inside a Samba share: \(hits.joined(separator: ", "))",
                                   fix: "`net usershare delete NAME` for each share named")
            }
            return DoctorCheck(id: id, status: .pass, summary: "no /etc/samba/smb.conf: no Samba shares")
        }
        let conf = INIConfig.parse(text)
        for s in conf.sections where s.name.lowercased() != "global" {
            // `directory` is Samba's synonym of `path`; every value counts, not the first.
            for p in s.values(["path", "directory"]) where p.hasPrefix("/") && overlapsData(p, dir) {
                hits.append("[\(s.name)] path = \(p)")
            }
        }
        if !hits.isEmpty {
            return DoctorCheck(id: id, status: .fail,
                summary: "\(dir) is inside a Samba share: \(hits.joined(separator: ", "))",
                               fix: "remove the share from /etc/samba/smb.conf (or point it elsewhere) and reload smbd")
        }
        return DoctorCheck(id: id, status: .pass, summary: "no share in /etc/samba/smb.conf holds \(dir)")
    }

    // MARK: immutability

    /// `immutable.works`: a probe file in the store (or the data directory) takes and drops `FS_IMMUTABLE_FL`.
    public func checkImmutableFlag() -> DoctorCheck {
        let id = "immutable.works"
        let dir = realDataDir
        var isDir: ObjCBool = false
        let store = dir + "/store"
        let target = FileManager.default.fileExists(atPath: store, isDirectory: &isDir) && isDir.boolValue ? store : dir
        do {
            if let problem = try LocalStore.probeImmutableFlag(in: target) {
                return DoctorCheck(id: id, status: .fail, summary: problem,
                    fix: "see the summary; until then root on this host can change packs unnoticed until verify")
            }
            return DoctorCheck(id: id, status: .pass,
                summary: "the immutable flag was set and cleared on a probe file in \(target)")
        } catch {
            return DoctorCheck(id: id, status: .fail, summary: "probe in \(target) failed: \(error)",
                fix: "put the data directory on ext4, XFS or btrfs and run doctor as the service user")
        }
    }

    func effectiveCapabilities() -> CapabilitySet? {
        files.read("/proc/self/status").flatMap(CapabilitySet.effective(status:))
    }

    /// Said beside the capability checks when doctor runs as another user than the one
    /// that owns the data directory: then they describe this run, not the service.
    var otherUserNote: String {
        var st = stat()
        guard stat(realDataDir, &st) == 0, st.st_uid != geteuid() else { return "" }
        return """
            ; doctor runs as uid \(geteuid()) but the data directory belongs to uid \(st.st_uid): run it as the \
            service runs to check the service's own capabilities
            """
    }

    /// `caps.immutable`: this process holds CAP_LINUX_IMMUTABLE (bit 9 of CapEff).
    public func checkImmutableCapability() -> DoctorCheck {
        let id = "caps.immutable"
        guard let caps = effectiveCapabilities() else {
            return DoctorCheck(id: id, status: .warn,
                summary: "no CapEff line in \(files.resolve("/proc/self/status"))",
                fix: "run doctor where /proc is mounted")
        }
        if caps.has(CapabilitySet.linuxImmutable) {
            return DoctorCheck(id: id, status: .pass, summary: "this process holds cap_linux_immutable" + otherUserNote)
        }
        return DoctorCheck(id: id, status: .fail,
            summary: """
                this process lacks cap_linux_immutable (CapEff \(String(caps.bits, radix: 16))): it cannot seal packs
                """ + otherUserNote,
                           fix: """
                               run the service with AmbientCapabilities=CAP_LINUX_IMMUTABLE \
                               (contrib/redoubt-server.service); run doctor the same way
                               """)
    }

    /// `caps.excess`: the process holds nothing beyond cap_linux_immutable (and cap_net_bind_service, for a port below
    /// 1024).
    public func checkExcessCapabilities() -> DoctorCheck {
        let id = "caps.excess"
        guard let caps = effectiveCapabilities() else {
            return DoctorCheck(id: id, status: .warn,
                summary: "no CapEff line in \(files.resolve("/proc/self/status"))",
                fix: "run doctor where /proc is mounted")
        }
        let extra = CapabilitySet(bits: caps.bits & ~(UInt64(1) << 9) & ~(UInt64(1) << 10))
        if extra.bits == 0 {
            return DoctorCheck(id: id, status: .pass,
                summary: caps.names.isEmpty ? "this process holds no capabilities" : """
                    this process holds only \(caps.names.joined(separator: ", "))
                    """)
        }
        let names = extra.names
        // Why warn: cap_sys_admin or cap_dac_override lets a compromised server read or rewrite anything on the host.
        let what = names.count > 20
            ? """
                \(caps.names.count) capabilities (nearly the full root \
                set\(caps.has(21) ? ", including cap_sys_admin" : ""))
                """ : names.joined(separator: ", ")
        return DoctorCheck(id: id, status: .warn, summary: "this process holds more than it needs: \(what)"
            + otherUserNote,
                           fix: """
                               run the service as a dedicated user with CapabilityBoundingSet=CAP_LINUX_IMMUTABLE and \
                               AmbientCapabilities=CAP_LINUX_IMMUTABLE
                               """)
    }

    // MARK: host separation

    /// `domain.joined`: no sssd domain, no winbind/ADS Samba membership, no directory source
    /// for accounts in nsswitch.conf, no realmd domain, no Kerberos host keytab.
    public func checkDomainJoin() -> DoctorCheck {
        let id = "domain.joined"
        var evidence: [String] = []
        let sssdFiles = ["/etc/sssd/sssd.conf"] + files.list("/etc/sssd/conf.d").filter { $0.hasSuffix(".conf") }.map {
            "/etc/sssd/conf.d/" + $0
        }
        for f in sssdFiles {
            guard let text = files.read(f) else { continue }
            let c = INIConfig.parse(text)
            if let d = c.section("sssd")?.value("domains"), !d.isEmpty { evidence.append("\(f): domains = \(d)") }
            for s in c.sections where s.name.lowercased().hasPrefix("domain/") { evidence.append("\(f): [\(s.name)]") }
        }
        if let text = sambaConfig(), let g = INIConfig.parse(text).section("global") {
            if let sec = g.value("security")?.lowercased(), sec == "ads" || sec == "domain" {
                evidence.append("/etc/samba/smb.conf: security = \(sec)")
            }
        }
        if let text = files.read("/etc/nsswitch.conf") {
            // Accounts from a directory: sssd's `sss`, winbind, or nss-ldap/nslcd's `ldap`
            // (sssd.conf itself is root-only, so a doctor run as the service user sees only this).
            // `sss` alone is in RHEL's default authselect profile on hosts never joined: it
            // counts only with an sssd domain cache beside it.
            let sssdCache = files.list("/var/lib/sss/db").contains { $0.hasPrefix("cache_") && $0.hasSuffix(".ldb") }
            for line in text.split(separator: "\n") {
                let body = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
                let parts = body.split(separator: ":", maxSplits: 1)
                guard parts.count == 2, ["passwd", "group", "shadow",
                    "initgroups"].contains(parts[0].trimmingCharacters(in: .whitespaces)) else {
                    continue
                }
                // Tokens end at blanks and at an action in brackets ("sss[NOTFOUND=return]").
                let sources = parts[1].split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "[" || $0 == "]" })
                if sources.contains(where: { $0 == "winbind" || $0 == "ldap" || ($0 == "sss" && sssdCache) }) {
                    evidence.append("/etc/nsswitch.conf: \(body.trimmingCharacters(in: .whitespaces))")
                }
            }
        }
        if let text = files.read("/etc/realmd.conf") {
            // realmd names configured domains as sections with a dot ([example.com]).
            for s in INIConfig.parse(text).sections where s.name.contains(".") {
                evidence.append("/etc/realmd.conf: [\(s.name)]")
            }
        }
        if files.exists("/etc/krb5.keytab") {
            evidence.append("/etc/krb5.keytab exists (a host principal in a Kerberos realm)")
        }
        if !evidence.isEmpty {
            // Why fail: a domain admin (or whoever owns the domain) logs in here with the same credential as on the
            // protected hosts.
            return DoctorCheck(id: id, status: .fail,
                summary: "the host is joined to a directory domain: \(Self.unique(evidence).joined(separator: "; "))",
                               fix: """
                                   leave the domain (`realm leave`, or `net ads leave`), remove sssd/winbind, delete \
                                   /etc/krb5.keytab; use local accounts only
                                   """)
        }
        return DoctorCheck(id: id, status: .pass,
            summary: "no sssd, winbind, LDAP accounts, realmd or Kerberos keytab configuration")
    }

    func sshd() -> SSHDConfig? {
        guard files.exists("/etc/ssh/sshd_config") else { return nil }
        return SSHDConfig.parse(path: "/etc/ssh/sshd_config", read: files.read, list: files.list)
    }

    /// Why not pass: sshd takes the first value, and an included file this process cannot
    /// read may set it before anything it could read.
    static func unreadIncludes(_ c: SSHDConfig) -> String? {
        c.unreadable.isEmpty ? nil : """
            included file(s) \(c.unreadable.joined(separator: ", ")) could not be read and may set it first
            """
    }

    static let unreadFix = "run `redoubt doctor` as root, or check those files yourself"

    static func describe(_ keyword: String, _ v: (value: String, isDefault: Bool)) -> String {
        "\(keyword) \(v.value)" + (v.isDefault ? " (unset: OpenSSH default assumed)" : "")
    }

    /// `ssh.password`: neither PasswordAuthentication nor (with PAM) KbdInteractiveAuthentication is on.
    public func checkSSHPassword() -> DoctorCheck {
        let id = "ssh.password"
        guard let c = sshd() else {
            return DoctorCheck(id: id, status: .pass, summary: "no /etc/ssh/sshd_config: no SSH server configured")
        }
        let pw = c.value("passwordauthentication"), kbd = c.value("kbdinteractiveauthentication"),
            pam = c.value("usepam")
        let state = [Self.describe("PasswordAuthentication", pw), Self.describe("KbdInteractiveAuthentication", kbd),
            Self.describe("UsePAM", pam)].joined(separator: ", ")
        let fix =
            """
                set `PasswordAuthentication no` and `KbdInteractiveAuthentication no` at the top of \
                /etc/ssh/sshd_config (before any Include that sets them), then reload sshd
                """
        // Why: a password can be guessed or phished; keys that no protected host holds cannot.
        if pw.value == "yes" || (kbd.value == "yes" && pam.value == "yes") {
            return DoctorCheck(id: id, status: .fail, summary: "SSH accepts passwords: \(state)", fix: fix)
        }
        if kbd.value == "yes" {
            return DoctorCheck(id: id, status: .warn,
                summary: """
                    keyboard-interactive is on without PAM (asks for no password on Linux, but one config change \
                    away): \(state)
                    """, fix: fix)
        }
        let weak = c.conditional.filter {
            ($0.keyword == "passwordauthentication" || $0.keyword == "kbdinteractiveauthentication")
                && $0.value == "yes"
        }
        if let w = weak.first {
            return DoctorCheck(id: id, status: .warn,
                summary: "passwords are off globally but a Match block turns them on: \(w.match): \(w.keyword) yes",
                fix: "remove it from the Match block")
        }
        if let unread = Self.unreadIncludes(c) {
            return DoctorCheck(id: id, status: .warn, summary: "\(state) as far as readable, but \(unread)",
                fix: Self.unreadFix)
        }
        return DoctorCheck(id: id, status: .pass, summary: "SSH accepts no passwords: \(state)")
    }

    /// `ssh.root`: PermitRootLogin is `no`. `prohibit-password` (OpenSSH's default) and
    /// `forced-commands-only` warn: root still logs in with a key.
    public func checkSSHRoot() -> DoctorCheck {
        let id = "ssh.root"
        guard let c = sshd() else {
            return DoctorCheck(id: id, status: .pass, summary: "no /etc/ssh/sshd_config: no SSH server configured")
        }
        let v = c.value("permitrootlogin")
        let state = Self.describe("PermitRootLogin", v)
        let fix =
            """
                set `PermitRootLogin no` at the top of /etc/ssh/sshd_config and reload sshd; administrators log in as \
                themselves and use sudo (logged)
                """
        switch v.value {
        case "no":
            if let w = c.conditional.first(where: { $0.keyword == "permitrootlogin" && $0.value != "no" }) {
                return DoctorCheck(id: id, status: .warn,
                    summary: """
                        root login is off globally but a Match block allows it: \(w.match): PermitRootLogin \(w.value)
                        """, fix: fix)
            }
            if let unread = Self.unreadIncludes(c) {
                return DoctorCheck(id: id, status: .warn, summary: "\(state) as far as readable, but \(unread)",
                    fix: Self.unreadFix)
            }
            return DoctorCheck(id: id, status: .pass, summary: "SSH refuses root: \(state)")
        case "prohibit-password", "without-password", "forced-commands-only":
            // Why warn, not fail: no password can be guessed, but one stolen key is root here, unattributed.
            return DoctorCheck(id: id, status: .warn, summary: "root may log in with a key: \(state)", fix: fix)
        default:
            return DoctorCheck(id: id, status: .fail, summary: "SSH lets root log in: \(state)", fix: fix)
        }
    }

    /// `time.sync`: chrony, systemd-timesyncd (or ntpd) is configured and enabled or running;
    /// `timedatectl` (when run) says the clock is synchronised.
    public func checkTimeSync() -> DoctorCheck {
        let id = "time.sync"
        let units = ["chrony.service", "chronyd.service", "systemd-timesyncd.service", "ntp.service", "ntpd.service",
            "ntpsec.service", "openntpd.service"]
        var enabled = Set<String>()
        for base in ["/etc/systemd/system", "/run/systemd/system"] {
            for wants in files.list(base) where wants.hasSuffix(".wants") {
                for u in files.list(base + "/" + wants) where units.contains(u) { enabled.insert(u) }
            }
            if files.exists(base + "/dbus-org.freedesktop.timesync1.service") {
                enabled.insert("systemd-timesyncd.service")
            }
        }
        // A unit masked (linked to /dev/null) is off whatever links want it.
        for u in units where files.linkTarget("/etc/systemd/system/" + u) == "/dev/null" { enabled.remove(u) }
        var running: [String] = []
        if files.exists("/run/systemd/timesync/synchronized") { running.append("systemd-timesyncd (synchronised)") }
        if files.exists("/run/chrony/chronyd.pid") || files.exists("/run/chronyd.pid") { running.append("chronyd") }
        var chronySources = 0
        var chronyConf: [String] = []
        let chronyFiles = ["/etc/chrony/chrony.conf", "/etc/chrony.conf"] + files.list("/etc/chrony/conf.d").map {
            "/etc/chrony/conf.d/" + $0
        }
            + files.list("/etc/chrony/sources.d").map { "/etc/chrony/sources.d/" + $0 }
        for f in chronyFiles {
            guard let t = files.read(f) else { continue }
            chronyConf.append(f)
            chronySources += t.split(separator: "\n").filter {
                l in ["server ", "pool ", "peer ", "refclock "].contains { l.hasPrefix($0) }
            }.count
        }
        let td = timedatectl.map(TimedatectlShow.parse)
        let fix =
            """
                apt install chrony (or systemctl enable --now systemd-timesyncd) and point it at trusted NTP servers; \
                retention is computed from this clock
                """
        var found = enabled.sorted().map { "\($0) enabled" } + running.map { "\($0) running" }
        if !chronyConf.isEmpty {
            found.append("chrony config \(chronyConf.joined(separator: ", ")) with \(chronySources) sources")
        }
        if td?["NTPSynchronized"] == "yes" {
            return DoctorCheck(id: id, status: .pass, summary: "timedatectl: clock synchronised (NTPSynchronized=yes)"
                + (found.isEmpty ? "" : "; " + found.joined(separator: ", ")))
        }
        guard !enabled.isEmpty || !running.isEmpty else {
            // Why fail: a clock set forward expires retention early; one set back keeps nothing from being locked long
            // enough.
            return DoctorCheck(id: id, status: .fail,
                summary: "no time synchronisation service enabled or running (chrony, systemd-timesyncd, ntpd)"
                + (td != nil ? "; timedatectl: NTPSynchronized=\(td?["NTPSynchronized"] ?? "?")" : ""), fix: fix)
        }
        if enabled.contains(where: { $0.hasPrefix("chrony") }) && chronySources == 0
            && !enabled.contains("systemd-timesyncd.service") {
            return DoctorCheck(id: id, status: .warn,
                summary: "chrony is enabled but its configuration names no server or pool", fix: fix)
        }
        if let td, td["NTPSynchronized"] == "no" {
            return DoctorCheck(id: id, status: .warn,
                summary: "\(found.joined(separator: ", ")), but timedatectl says the clock is not synchronised yet",
                fix: "check `chronyc tracking` or `timedatectl timesync-status`")
        }
        let unseen = running.isEmpty
            && td == nil ? " (not seen running: no timedatectl answer, no chrony pid file, no timesyncd sync flag)" : ""
        return DoctorCheck(id: id, status: .pass, summary: found.joined(separator: ", ") + unseen)
    }

    // MARK: catalog-based checks

    enum CatalogState { case missing, failed(String), open(any CatalogRepositories) }

    /// Opens the catalog read-only. SQLite still creates `-wal`/`-shm` beside a WAL
    /// database; running as root it gives them the database file's owner, so a doctor run
    /// by root leaves the service user able to open its catalog (test
    /// `readingTheCatalogAsRootLeavesItUsableByTheServiceUser`).
    func openCatalog(_ cluster: CatalogSettings?) async -> CatalogState {
        if let pg = cluster {
            do { return .open(try await CatalogPools.shared.catalog(pg)) } catch { return .failed("\(error)") }
        }
        let path = realDataDir + "/catalog.sqlite"
        guard FileManager.default.fileExists(atPath: path) else { return .missing }
        do { return .open(try Catalog(readOnlyPath: path)) } catch { return .failed("\(error)") }
    }

    func noCatalog(_ id: String, _ state: CatalogState) -> DoctorCheck? {
        switch state {
        case .open: return nil
        case .missing: return DoctorCheck(id: id, status: .warn, summary: "no catalog in \(realDataDir)",
            fix: "pass --data with the server's data directory")
        case .failed(let e): return DoctorCheck(id: id, status: .fail,
            summary: "cannot open the catalog in \(realDataDir): \(e)",
            fix: "check the file; `redoubt server rebuild-catalog` rebuilds it from the store")
        }
    }

    /// `hosts.os`: enrolled hosts run another OS than this host. Where one does not, warns
    /// and names the checks that stand in for the separation (`domain.joined`, `ssh.*`).
    func checkHostOS(_ state: CatalogState, standIns: [DoctorCheck]) async -> DoctorCheck {
        let id = "hosts.os"
        if let c = noCatalog(id, state) { return c }
        guard case .open(let catalog) = state else {
            return DoctorCheck(id: id, status: .fail, summary: "catalog unavailable")
        }
        let rel = files.read("/etc/os-release").map(OSRelease.parse) ?? [:]
        let mine = rel["PRETTY_NAME"] ?? rel["NAME"] ?? "unknown"
        let hosts: [Catalog.HostOS]
        do { hosts = try await catalog.enrolledHostSystems() } catch {
            return DoctorCheck(id: id, status: .fail, summary: "cannot read enrolled hosts: \(error)",
                fix: "check the catalog")
        }
        return Self.compareOS(repository: rel, hosts: hosts, standIns: standIns, mine: mine)
    }

    /// The rule of `hosts.os`, apart from where its inputs come from.
    public static func compareOS(repository rel: [String: String], hosts: [Catalog.HostOS], standIns: [DoctorCheck],
        mine: String) -> DoctorCheck {
        let id = "hosts.os"
        if hosts.isEmpty {
            return DoctorCheck(id: id, status: .pass, summary: "no hosts enrolled yet (this host: \(mine))")
        }
        let name = rel["NAME"] ?? ""
        func same(_ os: String) -> Bool { os == rel["PRETTY_NAME"] || (!name.isEmpty && os.hasPrefix(name)) }
        let shared = hosts.filter { $0.os.map(same) ?? false }
        let unknown = hosts.filter { $0.os == nil }
        var notes: [String] = []
        if !unknown.isEmpty {
            notes.append("\(unknown.count) host(s) reported no OS: \(unknown.map(\.label).joined(separator: ", "))")
        }
        if !shared.isEmpty {
            // Why warn: one exploit for the shared OS reaches both the hosts and their repository.
            let stand = standIns.map { "\($0.id) \($0.status.rawValue)" }.joined(separator: ", ")
            return DoctorCheck(id: id, status: .warn,
                               summary: """
                                   \(shared.count) of \(hosts.count) enrolled host(s) run this host's OS (\(mine)): \
                                   \(shared.map(\.label).joined(separator: ", ")); standing in for the separation: \
                                   \(stand)
                                   """ + (notes.isEmpty ? "" : "; " + notes.joined(separator: "; ")),
                               fix: """
                                   run the repository on another OS family than the protected hosts, or keep \
                                   domain.joined, ssh.password and ssh.root passing (no shared accounts, keys or \
                                   domain)
                                   """)
        }
        if !unknown.isEmpty {
            return DoctorCheck(id: id, status: .warn, summary: notes.joined(separator: "; "),
                fix: "re-enroll those hosts with a current client (it reports /etc/os-release)")
        }
        return DoctorCheck(id: id, status: .pass,
            summary: "all \(hosts.count) enrolled host(s) run another OS than this host (\(mine))")
    }

    /// `copy.proof`: each copy target's last Object Lock proof (audit action `copy-proof`) passed.
    func checkCopyProof(_ state: CatalogState) async -> DoctorCheck {
        let id = "copy.proof"
        if let c = noCatalog(id, state) { return c }
        guard case .open(let catalog) = state else {
            return DoctorCheck(id: id, status: .fail, summary: "catalog unavailable")
        }
        do { return Self.copyProof(try await catalog.copyEvents(), now: now) } catch {
            return DoctorCheck(id: id, status: .fail, summary: "cannot read the audit log: \(error)",
                fix: "run `redoubt audit verify`")
        }
    }

    /// The rule of `copy.proof` over the copy events of the audit log.
    public static func copyProof(_ events: [Catalog.AuditRecord], now: Date) -> DoctorCheck {
        let id = "copy.proof"
        var last: [String: Catalog.AuditRecord] = [:]
        for e in events where e.action == "copy-proof" { last[e.object] = e }
        if last.isEmpty {
            return DoctorCheck(id: id, status: .warn,
                summary: "no copy target configured: no Object Lock proof in the audit log",
                               fix: """
                                   add an off-site copy: `redoubt copy sync TENANT --data DIR --to s3://BUCKET/PREFIX \
                                   --endpoint URL`
                                   """)
        }
        var failed: [String] = [], passed: [String] = []
        for (target, e) in last.sorted(by: { $0.key < $1.key }) {
            let age = formatAge(now.timeIntervalSince(e.time))
            if e.outcome == "ok" { passed.append("\(target) passed \(age) ago") } else {
                failed.append("\(target) failed \(age) ago (\(e.detail))"
                    + (e.outcome == "warning" ? ", kept with --accept-unenforced" : ""))
            }
        }
        if !failed.isEmpty {
            // Why fail even when accepted: a bucket that lets locked versions be deleted protects nothing.
            return DoctorCheck(id: id, status: .fail, summary: "last lock proof: " + (failed
                + passed).joined(separator: "; "),
                               fix: "use a bucket created with Object Lock enabled, on a server that enforces "
                                   + "COMPLIANCE (`redoubt copy prove`)")
        }
        return DoctorCheck(id: id, status: .pass, summary: "last lock proof: " + passed.joined(separator: "; "))
    }

    /// `copy.fresh`: each tenant's newest snapshot has a copy off this host (bucket copy
    /// `copy-sync` or media export `media-write` after its commit), or is younger than `--max-copy-age`.
    func checkCopyFreshness(_ state: CatalogState) async -> DoctorCheck {
        let id = "copy.fresh"
        if let c = noCatalog(id, state) { return c }
        guard case .open(let catalog) = state else {
            return DoctorCheck(id: id, status: .fail, summary: "catalog unavailable")
        }
        do {
            var newest: [String: Date] = [:]
            for t in try await catalog.tenants() {
                if let s = try await catalog.snapshots(tenant: t.name).map(\.committedAt).max() { newest[t.name] = s }
            }
            return Self.copyFreshness(newestCommit: newest, events: try await catalog.copyEvents(), maxAge: maxCopyAge,
                now: now)
        } catch {
            return DoctorCheck(id: id, status: .fail, summary: "cannot read the catalog: \(error)",
                fix: "check the catalog")
        }
    }

    /// The tenant a successful copy event covers: `copy-sync` details start `tenant NAME:`,
    /// `media-write` objects are `tenant/NAME`.
    static func copiedTenant(_ e: Catalog.AuditRecord) -> String? {
        guard e.outcome == "ok" else { return nil }
        if e.action == "copy-sync", e.detail.hasPrefix("tenant "), let colon = e.detail.firstIndex(of: ":") {
            return String(e.detail[e.detail.index(e.detail.startIndex, offsetBy: 7)..<colon])
        }
        if e.action == "media-write", e.object.hasPrefix("tenant/") { return String(e.object.dropFirst(7)) }
        return nil
    }

    /// The rule of `copy.fresh`.
    public static func copyFreshness(newestCommit: [String: Date], events: [Catalog.AuditRecord], maxAge: TimeInterval,
        now: Date) -> DoctorCheck {
        let id = "copy.fresh"
        var lastCopy: [String: (Date, String)] = [:]
        for e in events {
            if let t = copiedTenant(e) { lastCopy[t] = (e.time, e.action == "copy-sync" ? "bucket copy" : "media") }
        }
        if lastCopy.isEmpty {
            return DoctorCheck(id: id, status: .warn,
                summary: "no copy target configured: no bucket copy or media export in the audit log",
                               fix: """
                                   copy each tenant off this host: `redoubt copy sync` (S3 Object Lock) or `redoubt \
                                   media write`, on a schedule shorter than --max-copy-age
                                   """)
        }
        var stale: [String] = [], ok: [String] = []
        for (tenant, committed) in newestCommit.sorted(by: { $0.key < $1.key }) {
            if let (t, how) = lastCopy[tenant], t >= committed {
                ok.append("\(tenant): \(how) \(formatAge(now.timeIntervalSince(t))) ago")
            } else if now.timeIntervalSince(committed) <= maxAge {
                ok.append("""
                    \(tenant): newest snapshot \(formatAge(now.timeIntervalSince(committed))) old, copy due within \
                    \(formatAge(maxAge))
                    """)
            } else {
                let last = lastCopy[tenant].map { "last copy \(formatAge(now.timeIntervalSince($0.0))) ago, before it" }
                    ?? "never copied"
                stale.append("\(tenant): newest snapshot \(formatAge(now.timeIntervalSince(committed))) old, \(last)")
            }
        }
        if !stale.isEmpty {
            // Why fail: the only copy of that snapshot is on a host whose root can clear the immutable flag.
            return DoctorCheck(id: id, status: .fail,
                summary: "no copy off this host younger than \(formatAge(maxAge)): " + stale.joined(separator: "; "),
                               fix: """
                                   run `redoubt copy sync TENANT` or `redoubt media write` for each tenant named, and \
                                   schedule it
                                   """)
        }
        return DoctorCheck(id: id, status: .pass, summary: ok.isEmpty ? "no snapshots yet" : ok.joined(separator: "; "))
    }

    static func formatAge(_ t: TimeInterval) -> String {
        let s = Int(max(t, 0))
        if s < 120 { return "\(s)s" }
        if s < 7200 { return "\(s / 60)m" }
        if s < 2 * 86400 { return "\(s / 3600)h" }
        return "\(s / 86400)d"
    }

    static func unique(_ a: [String]) -> [String] {
        var seen = Set<String>()
        return a.filter { seen.insert($0).inserted }
    }
}


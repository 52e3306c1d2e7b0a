import Foundation
import Testing
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer

/// A fake host: `root` stands for `/` (etc, proc), `data` is a real data directory
/// (mode 0700, owned by `nobody` unless a test changes it).
final class DoctorFixture {
    let base: String
    let root: String
    let data: String
    static let nobody: uid_t = 65534

    init(owner: uid_t = DoctorFixture.nobody) throws {
        base = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-doctor-\(UUID().uuidString)").path
        root = base + "/root"
        data = base + "/srv/redoubt"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: data + "/store", withIntermediateDirectories: true)
        chmod(base, 0o755)
        chmod(base + "/srv", 0o755)
        chmod(data, 0o700)
        chmod(data + "/store", 0o700)
        chown(data, owner, owner)
        chown(data + "/store", owner, owner)
        // A healthy baseline: local ext4, only CAP_LINUX_IMMUTABLE.
        try write("/proc/self/mountinfo", Self.mountinfo(fsType: "ext4", source: "/dev/sda1", at: "/"))
        try write("/proc/self/status",
            "Name:\tredoubt\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000200\nCapEff:\t0000000000000200\n")
    }

    deinit {
        _ = system("chattr -R -i '\(base)' 2>/dev/null")
        try? FileManager.default.removeItem(atPath: base)
    }

    static func mountinfo(fsType: String, source: String, at point: String) -> String {
        let escaped = point.replacingOccurrences(of: " ", with: "\\040")
        return """
        22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
        25 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw
        \(point == "/" ? "" : "40 22 0:50 / \(escaped) rw,relatime shared:30 - \(fsType) \(source) rw\n")
        """
    }

    func write(_ path: String, _ text: String) throws {
        let full = root + path
        try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true)
        try text.write(toFile: full, atomically: false, encoding: .utf8)
    }

    func doctor(timedatectl: String? = nil, now: Date = Date()) -> Doctor {
        Doctor(dataDir: data, files: HostFiles(root: root), maxCopyAge: 86400, now: now, timedatectl: timedatectl)
    }
}

@Suite struct DoctorParserTests {
    @Test func mountinfoParsesEscapesAndPicksTheDeepestMount() {
        let text = DoctorFixture.mountinfo(fsType: "nfs4", source: "filer:/vol", at: "/srv/back ups")
            + "41 40 0:51 / /srv/back\\040ups/x rw shared:31 master:2 - fuse.sshfs u@h:/ rw\n"
        let mounts = MountInfo.parse(text)
        #expect(mounts.count == 4)
        #expect(mounts[2].mountPoint == "/srv/back ups")
        #expect(MountInfo.mount(holding: "/srv/back ups/data", in: mounts)?.fsType == "nfs4")
        #expect(MountInfo.mount(holding: "/srv/back ups/x/y", in: mounts)?.fsType == "fuse.sshfs")
        #expect(MountInfo.mount(holding: "/srv/back upsx", in: mounts)?.fsType == "ext4")
        #expect(MountInfo.remoteKind("ext4") == nil)
        #expect(MountInfo.remoteKind("xfs") == nil)
        #expect(MountInfo.remoteKind("cifs") != nil)
        #expect(MountInfo.remoteKind("fuse.sshfs") != nil)
        #expect(MountInfo.remoteKind("nfs4") != nil)
    }

    @Test func exportsParseCommentsContinuationsAndQuotes() {
        let text = """
            # /srv/commented *(rw)
            /srv/a   10.0.0.0/8(rw,sync) \\
                     192.168.0.1(ro)
            "/srv/with space" *(ro)
            /srv/oct\\040al *(ro)
            """
        #expect(NFSExports.paths(text) == ["/srv/a", "/srv/with space", "/srv/oct al"])
        let kernel = "# Version 1.1\n# Path Client(Flags) # IPs\n/export\t*(rw,root_squash,sync,wdelay)\n"
        #expect(NFSExports.paths(kernel) == ["/export"])
    }

    @Test func pathRelationIsByComponent() {
        #expect(PathRelation.contains("/srv", "/srv/redoubt"))
        #expect(PathRelation.contains("/srv/", "/srv/redoubt"))
        #expect(!PathRelation.contains("/sr", "/srv/redoubt"))
        #expect(PathRelation.overlaps("/srv/redoubt/store", "/srv/redoubt"))
        #expect(!PathRelation.overlaps("/srv/redoubt2", "/srv/redoubt"))
        #expect(PathRelation.contains("/", "/anything"))
    }

    @Test func iniNormalisesKeysAndSkipsComments() throws {
        let c = INIConfig.parse("[global]\n  Security = ADS\n; path = /no\n[Backups]\n\tPa th = /srv\n# path = /x\n")
        #expect(c.section("global")?.value("security") == "ADS")
        #expect(c.section("backups")?.value("path") == "/srv")
        #expect(c.sections.count == 2)
    }

    @Test func sshdFirstValueWinsAcrossIncludesAndMatchIsConditional() {
        let files = [
            "/etc/ssh/sshd_config": """
                Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication no\nPermitRootLogin=no\nMatch User \
                backup\n  PasswordAuthentication yes\n
                """,
            "/etc/ssh/sshd_config.d/10-cloud.conf": "passwordauthentication YES # cloud-init\n",
            "/etc/ssh/sshd_config.d/notes.txt": "PermitRootLogin yes\n",
        ]
        let c = SSHDConfig.parse(path: "/etc/ssh/sshd_config", read: { files[$0] },
                                 list: {
                                     dir in files.keys.filter { ($0 as NSString).deletingLastPathComponent == dir }
                                         .map {
                                         ($0 as NSString).lastPathComponent
                                     }
                                 })
        #expect(c.value("passwordauthentication").value == "yes")
        #expect(c.value("permitrootlogin").value == "no")
        #expect(c.value("kbdinteractiveauthentication") == ("yes", true))
        #expect(c.conditional.count == 1)
        #expect(c.files == ["/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d/10-cloud.conf"])
        #expect(c.unreadable.isEmpty)
    }

    /// An included file this process cannot read (cloud-init's is often 0600) may set a
    /// keyword first: it is recorded, and the ssh checks then warn instead of passing.
    @Test func unreadableSSHDIncludeIsRecorded() {
        let files = [
            "/etc/ssh/sshd_config": """
                Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication no\nPermitRootLogin no\n
                """,
            "/etc/ssh/sshd_config.d/50-cloud-init.conf": "PasswordAuthentication yes\n",
        ]
        // As root every file reads, so the test makes this one unreadable in the reader.
        let c = SSHDConfig.parse(path: "/etc/ssh/sshd_config",
            read: { $0.hasSuffix("50-cloud-init.conf") ? nil : files[$0] },
                                 list: {
                                     dir in files.keys.filter { ($0 as NSString).deletingLastPathComponent == dir }
                                         .map {
                                         ($0 as NSString).lastPathComponent
                                     }
                                 })
        #expect(c.value("passwordauthentication").value == "no")
        #expect(c.unreadable == ["/etc/ssh/sshd_config.d/50-cloud-init.conf"])
        #expect(Doctor.unreadIncludes(c)?.contains("50-cloud-init.conf") == true)
        #expect(Doctor.unreadIncludes(SSHDConfig.parse(path: "/etc/ssh/sshd_config", read: { files[$0] },
            list: { _ in [] })) == nil)
    }

    @Test func capabilitiesReadCapEff() throws {
        let caps = try #require(CapabilitySet.effective(status: "Name:\tx\nCapEff:\t0000000000200200\n"))
        #expect(caps.has(9))
        #expect(caps.names == ["cap_linux_immutable", "cap_sys_admin"])
        #expect(CapabilitySet.effective(status: "Name:\tx\n") == nil)
    }

    @Test func osReleaseUnquotes() {
        let r = OSRelease.parse("NAME=\"Debian GNU/Linux\"\nID=debian\nPRETTY_NAME='Debian GNU/Linux 12 (bookworm)'\n")
        #expect(r["NAME"] == "Debian GNU/Linux")
        #expect(r["ID"] == "debian")
        #expect(r["PRETTY_NAME"] == "Debian GNU/Linux 12 (bookworm)")
    }
}

@Suite struct DoctorRuleTests {
    @Test func dataPrivatePassesFailsAndWarns() throws {
        let f = try DoctorFixture()
        #expect(f.doctor().checkPrivate().status == .pass)
        chmod(f.data, 0o750)
        let open = f.doctor().checkPrivate()
        #expect(open.status == .fail)
        #expect(open.summary.contains("0750"))
        chmod(f.data, 0o700)
        // A key another user owns could be swapped by that user.
        FileManager.default.createFile(atPath: f.data + "/server.json", contents: Data("{}".utf8))
        chmod(f.data + "/server.json", 0o600)
        #expect(f.doctor().checkPrivate().status == .fail)  // owned by root, directory by nobody
        chown(f.data + "/server.json", DoctorFixture.nobody, DoctorFixture.nobody)
        #expect(f.doctor().checkPrivate().status == .pass)
        chmod(f.data + "/server.json", 0o644)
        #expect(f.doctor().checkPrivate().status == .warn)
        // A parent others may write lets them rename the data directory away.
        chmod(f.data + "/server.json", 0o600)
        chmod(f.base + "/srv", 0o777)
        #expect(f.doctor().checkPrivate().status == .fail)
        chmod(f.base + "/srv", 0o755)
        // A parent owned by another user: that user may make it writable at any time.
        chown(f.base + "/srv", 4242, 4242)
        let otherOwner = f.doctor().checkPrivate()
        #expect(otherOwner.status == .fail)
        #expect(otherOwner.summary.contains("\(f.base)/srv is owned by") && otherOwner.summary.contains("uid 4242"))
        chown(f.base + "/srv", DoctorFixture.nobody, DoctorFixture.nobody)  // the service user's own parent is fine
        #expect(f.doctor().checkPrivate().status == .pass)
        chown(f.base + "/srv", 0, 0)
        let rootOwned = try DoctorFixture(owner: 0)
        #expect(rootOwned.doctor().checkPrivate().status == .warn)
        let missing = Doctor(dataDir: f.base + "/nope", files: HostFiles(root: f.root))
        #expect(missing.checkPrivate().status == .fail)
    }

    @Test(arguments: [("nfs4", "filer:/vol"), ("fuse.sshfs", "me@box:/backups"), ("cifs", "//nas/share"), ("ext4",
        "/dev/sdb1")])
    func localFilesystemFailsOnNetworkAndFuse(fsType: String, source: String) throws {
        let f = try DoctorFixture()
        try f.write("/proc/self/mountinfo", DoctorFixture.mountinfo(fsType: fsType, source: source, at: f.base
            + "/srv"))
        let c = f.doctor().checkLocalFilesystem()
        #expect(c.status == (fsType == "ext4" ? .pass : .fail))
        #expect(c.summary.contains(fsType))
    }

    @Test func nfsExportOfAParentFails() throws {
        let f = try DoctorFixture()
        try f.write("/etc/exports", "/home *(rw)\n\(f.base)/srvx *(rw)\n")
        #expect(f.doctor().checkNFSExport().status == .pass)
        try f.write("/etc/exports.d/backup.exports", "\(f.base)/srv 10.0.0.0/8(rw,no_root_squash)\n")
        let c = f.doctor().checkNFSExport()
        #expect(c.status == .fail)
        #expect(c.summary.contains("backup.exports"))
        // The kernel's live table counts even when the files were cleaned up.
        let g = try DoctorFixture()
        try g.write("/proc/fs/nfs/exports", "# Version 1.1\n\(g.data)/store\t*(rw,sync)\n")
        #expect(g.doctor().checkNFSExport().status == .fail)
    }

    @Test func sambaShareHoldingTheDataFails() throws {
        let f = try DoctorFixture()
        try f.write("/etc/samba/smb.conf", "[global]\n  workgroup = WG\n[public]\n  path = /srv/public\n")
        #expect(f.doctor().checkSambaShare().status == .pass)
        try f.write("/etc/samba/smb.conf",
            "[global]\n  workgroup = WG\n[everything]\n  Path = \(f.base)\n  read only = no\n")
        let c = f.doctor().checkSambaShare()
        #expect(c.status == .fail)
        #expect(c.summary.contains("[everything]"))
        // A share in an included file, and a user share, count as well.
        let g = try DoctorFixture()
        try g.write("/etc/samba/smb.conf", "[global]\n  include = /etc/samba/shares.conf\n")
        #expect(g.doctor().checkSambaShare().status == .pass)
        try g.write("/etc/samba/shares.conf", "[data]\n  path = \(g.data)/store\n")
        #expect(g.doctor().checkSambaShare().status == .fail)
        let h = try DoctorFixture()
        try h.write("/var/lib/samba/usershares/backup",
            "#VERSION 2\npath=\(h.base)/srv\ncomment=\nusershare_acl=S-1-1-0:F\nguest_ok=n\n")
        #expect(h.doctor().checkSambaShare().status == .fail)
        // Samba's synonym `directory`, a second `path`, and a symlink to the data directory.
        let i = try DoctorFixture()
        try i.write("/etc/samba/smb.conf", "[x]\n  directory = \(i.data)\n")
        #expect(i.doctor().checkSambaShare().status == .fail)
        try i.write("/etc/samba/smb.conf", "[x]\n  path = /srv/public\n  path = \(i.data)\n")
        #expect(i.doctor().checkSambaShare().status == .fail)
        let link = i.base + "/srv/innocent"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: i.data)
        try i.write("/etc/samba/smb.conf", "[x]\n  path = \(link)\n")
        #expect(i.doctor().checkSambaShare().status == .fail)
        try i.write("/etc/exports", "\(link) *(rw)\n")
        #expect(i.doctor().checkNFSExport().status == .fail)
    }

    @Test func immutableProbeRunsForReal() throws {
        let f = try DoctorFixture()
        let c = f.doctor().checkImmutableFlag()
        #expect(c.status == .pass, "\(c.summary)")
        // The probe file is gone, and so is its flag.
        #expect(try FileManager.default.contentsOfDirectory(atPath: f.data + "/store").isEmpty)
        let missing = Doctor(dataDir: f.base + "/absent", files: HostFiles(root: f.root))
        #expect(missing.checkImmutableFlag().status == .fail)
    }

    @Test func capabilitiesNeedImmutableAndNothingMore() throws {
        let f = try DoctorFixture()
        #expect(f.doctor().checkImmutableCapability().status == .pass)
        #expect(f.doctor().checkExcessCapabilities().status == .pass)
        // Run by another user than the data directory's owner, the checks say whose capabilities they saw.
        #expect(f.doctor().checkImmutableCapability()
            .summary.contains("""
                doctor runs as uid \(geteuid()) but the data directory belongs to uid 65534
                """) == (geteuid() != 65534))
        try f.write("/proc/self/status", "CapEff:\t0000000000000000\n")
        #expect(f.doctor().checkImmutableCapability().status == .fail)
        try f.write("/proc/self/status", "CapEff:\t0000000000200200\n")
        let admin = f.doctor().checkExcessCapabilities()
        #expect(admin.status == .warn)
        #expect(admin.summary.contains("cap_sys_admin"))
        try f.write("/proc/self/status", "CapEff:\t000001ffffffffff\n")
        #expect(f.doctor().checkExcessCapabilities()
            .summary.contains("41 capabilities (nearly the full root set, including cap_sys_admin)"))
    }

    @Test func domainMembershipFails() throws {
        let f = try DoctorFixture()
        try f.write("/etc/sssd/sssd.conf", "[sssd]\nservices = nss\n")
        try f.write("/etc/samba/smb.conf", "[global]\nsecurity = user\n")
        #expect(f.doctor().checkDomainJoin().status == .pass)
        try f.write("/etc/sssd/sssd.conf",
            "[sssd]\ndomains = corp.example.com\n[domain/corp.example.com]\nid_provider = ad\n")
        #expect(f.doctor().checkDomainJoin().status == .fail)
        for (path, text) in [("/etc/samba/smb.conf", "[global]\n  security = ADS\n  realm = CORP.EXAMPLE.COM\n"),
                             ("/etc/krb5.keytab", "binary"), ("/etc/realmd.conf",
                                 "[corp.example.com]\nfully-qualified-names = no\n"),
                             ("/etc/nsswitch.conf",
                                 "passwd:         files systemd sss[NOTFOUND=return]\ngroup: files\n"),
                             ("/etc/nsswitch.conf", "passwd: files\ngroup:\tfiles [NOTFOUND=return] winbind\n"),
                             ("/etc/nsswitch.conf", "shadow: files ldap # nslcd\n")] {
            let g = try DoctorFixture()
            try g.write(path, text)
            try g.write("/var/lib/sss/db/cache_corp.example.com.ldb", "")  // an sssd domain cache
            let c = g.doctor().checkDomainJoin()
            #expect(c.status == .fail, "\(path)")
            #expect(c.summary.contains(path))
        }
    }

    @Test func localOnlyNsswitchPasses() throws {
        let f = try DoctorFixture()
        // Debian 12's default, plus mentions that are not account sources.
        try f.write("/etc/nsswitch.conf",
            """
                # passwd: files sss\npasswd: files systemd\ngroup: files systemd\nhosts: files mdns4_minimal \
                [NOTFOUND=return] dns ldap\nnetgroup: nis\n
                """)
        #expect(f.doctor().checkDomainJoin().status == .pass)
        // RHEL's default authselect profile names sss on hosts never joined: no domain cache, no failure.
        try f.write("/etc/nsswitch.conf", "passwd: sss files systemd\ngroup: sss files systemd\n")
        #expect(f.doctor().checkDomainJoin().status == .pass)
    }

    @Test func sshPasswordRule() throws {
        let f = try DoctorFixture()
        #expect(f.doctor().checkSSHPassword().status == .pass)  // no sshd installed
        try f.write("/etc/ssh/sshd_config", "UsePAM yes\n")
        let unset = f.doctor().checkSSHPassword()
        #expect(unset.status == .fail)
        #expect(unset.summary.contains("OpenSSH default assumed"))
        try f.write("/etc/ssh/sshd_config",
            """
                Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication no\nKbdInteractiveAuthentication \
                no\nUsePAM yes\n
                """)
        #expect(f.doctor().checkSSHPassword().status == .pass)
        // A drop-in read first wins, as in sshd: the main file's "no" comes too late.
        try f.write("/etc/ssh/sshd_config.d/50-cloud-init.conf", "PasswordAuthentication yes\n")
        #expect(f.doctor().checkSSHPassword().status == .fail)
    }

    @Test func sshRootRule() throws {
        let f = try DoctorFixture()
        try f.write("/etc/ssh/sshd_config", "PermitRootLogin yes\n")
        #expect(f.doctor().checkSSHRoot().status == .fail)
        try f.write("/etc/ssh/sshd_config", "PermitRootLogin prohibit-password\n")
        #expect(f.doctor().checkSSHRoot().status == .warn)
        try f.write("/etc/ssh/sshd_config", "# nothing\n")
        let dflt = f.doctor().checkSSHRoot()
        #expect(dflt.status == .warn)
        #expect(dflt.summary.contains("prohibit-password (unset: OpenSSH default assumed)"))
        try f.write("/etc/ssh/sshd_config", "PermitRootLogin no\n")
        #expect(f.doctor().checkSSHRoot().status == .pass)
        try f.write("/etc/ssh/sshd_config", "PermitRootLogin no\nMatch Address 10.0.0.0/8\n  PermitRootLogin yes\n")
        #expect(f.doctor().checkSSHRoot().status == .warn)
    }

    @Test func timeSyncRule() throws {
        let f = try DoctorFixture()
        #expect(f.doctor().checkTimeSync().status == .fail)
        #expect(f.doctor(timedatectl: "NTP=no\nNTPSynchronized=no\n").checkTimeSync().status == .fail)
        try f.write("/etc/chrony/chrony.conf", "pool 2.debian.pool.ntp.org iburst\nmakestep 1 3\n")
        try f.write("/etc/systemd/system/multi-user.target.wants/chrony.service", "")
        #expect(f.doctor().checkTimeSync().status == .pass)
        #expect(f.doctor(timedatectl: "NTPSynchronized=no\n").checkTimeSync().status == .warn)
        #expect(f.doctor(timedatectl: "NTPSynchronized=yes\n").checkTimeSync().status == .pass)
        // Enabled but pointing nowhere.
        try f.write("/etc/chrony/chrony.conf", "makestep 1 3\n")
        #expect(f.doctor().checkTimeSync().status == .warn)
        // Masked: enabled links do not count.
        try f.write("/etc/chrony/chrony.conf", "pool 2.debian.pool.ntp.org iburst\n")
        try FileManager.default.createSymbolicLink(atPath: f.root + "/etc/systemd/system/chrony.service",
            withDestinationPath: "/dev/null")
        #expect(f.doctor().checkTimeSync().status == .fail)
    }

    // MARK: catalog-backed rules

    static func tenant(_ name: String) -> TenantRecord {
        TenantRecord(name: name, readKeyID: "k", readPublicKey: [1], writeMaterial: [2], wrappedReadKey: "{}",
            minRetention: 86400, createdAt: Date())
    }

    static func snapshot(_ tenant: String, committed: Date) -> SnapshotRecord {
        SnapshotRecord(id: String(repeating: "a", count: 63) + String(Int.random(in: 0..<10)), tenant: tenant,
            host: "web1", time: committed, committedAt: committed,
                       retainUntil: committed.addingTimeInterval(86400 * 30), paths: ["/"], tags: [],
                           statistics: SnapshotStatistics(), packCount: 0, manifestSize: 1)
    }

    @Test func hostOSSameAsRepositoryWarnsAndNamesStandIns() async throws {
        let f = try DoctorFixture()
        try f.write("/etc/os-release", "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n")
        let catalog = try Catalog(path: f.data + "/catalog.sqlite")
        let t = Date()
        try catalog.insertPrincipal(Principal(id: "p1", role: .writer, tenant: "acme", name: "web1", fingerprint: "f1",
            hostKey: nil), os: "Ubuntu 24.04.1 LTS", now: t)
        try catalog.insertPrincipal(Principal(id: "p2", role: .restorer, tenant: "acme", name: "r", fingerprint: "f2",
            hostKey: nil), os: "Debian GNU/Linux 12 (bookworm)", now: t)
        #expect(await f.doctor().run().first { $0.id == "hosts.os" }?.status == .pass)
        try catalog.insertPrincipal(Principal(id: "p3", role: .writer, tenant: "acme", name: "db1", fingerprint: "f3",
            hostKey: nil), os: "Debian GNU/Linux 11 (bullseye)", now: t)
        let c = try #require(await f.doctor().run().first { $0.id == "hosts.os" })
        #expect(c.status == .warn)
        #expect(c.summary.contains("acme/db1"))
        #expect(c.summary.contains("domain.joined pass"))
        #expect(!c.summary.contains("web1"))
    }

    @Test func copyProofAndFreshnessFromTheAuditLog() async throws {
        let f = try DoctorFixture()
        let catalog = try Catalog(path: f.data + "/catalog.sqlite")
        let now = Date()
        try catalog.insertTenant(Self.tenant("acme"))
        try await catalog.insertSnapshot(Self.snapshot("acme", committed: now.addingTimeInterval(-3 * 86400)),
            packs: [])
        func check(_ id: String) async throws -> DoctorCheck {
            try #require(await f.doctor(now: now).run().first { $0.id == id })
        }
        #expect(try await check("copy.proof").status == .warn)
        #expect(try await check("copy.fresh").summary.contains("no copy target configured"))
        // A proof that failed and a copy older than the newest snapshot.
        try await catalog.audit(time: now.addingTimeInterval(-4 * 86400), actor: "a", role: "admin", credential: "",
            source: "local", action: "copy-proof",
                          object: "s3://b/p", outcome: "warning", detail: "a locked version was deleted")
        try await catalog.audit(time: now.addingTimeInterval(-4 * 86400), actor: "a", role: "admin", credential: "",
            source: "local", action: "copy-sync",
                          object: "s3://b/p", outcome: "ok",
                              detail: "tenant acme: 3 copied, 0 already there, 0 extended")
        #expect(try await check("copy.proof").status == .fail)
        let stale = try await check("copy.fresh")
        #expect(stale.status == .fail)
        #expect(stale.summary.contains("acme"))
        // Then a passing proof and a copy after the snapshot; media counts as well.
        try await catalog.audit(time: now.addingTimeInterval(-3600), actor: "a", role: "admin", credential: "",
            source: "local", action: "copy-proof",
                          object: "s3://b/p", outcome: "ok", detail: "all lock checks passed")
        try await catalog.audit(time: now.addingTimeInterval(-3600), actor: "a", role: "admin", credential: "",
            source: "local", action: "media-write",
                          object: "tenant/acme", outcome: "ok", detail: "1 snapshots, 3 packs")
        #expect(try await check("copy.proof").status == .pass)
        let fresh = try await check("copy.fresh")
        #expect(fresh.status == .pass)
        #expect(fresh.summary.contains("media"))
    }
}

/// The built binary, as an operator runs it.
@Suite(.serialized) struct DoctorCommandTests {
    func run(_ args: [String], in f: DoctorFixture, prefix: String = "") async throws -> (status: Int32, out: String) {
        let bin = CrashTests.binary.path
        try #require(FileManager.default.isExecutableFile(atPath: bin),
            "build the redoubt executable first (swift build)")
        func q(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let out = f.base + "/out.json"
        let raw = await runShell(prefix + ([bin] + args).map(q).joined(separator: " ") + " > \(q(out)) 2>/dev/null")
        return (Int32((raw >> 8) & 0xff), (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }

    func healthy() throws -> DoctorFixture {
        let f = try DoctorFixture()
        try f.write("/etc/ssh/sshd_config",
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\n")
        try f.write("/etc/chrony/chrony.conf", "pool 2.debian.pool.ntp.org iburst\n")
        try f.write("/etc/systemd/system/multi-user.target.wants/chrony.service", "")
        return f
    }

    @Test func jsonListsEveryCheckAndWarningsExitEight() async throws {
        let f = try healthy()
        let r = try await run(["doctor", "--data", f.data, "--root", f.root, "--json"], in: f)
        let checks = try JSONDecoder().decode([DoctorCheck].self, from: Data(r.out.utf8))
        #expect(checks.map(\.id) == Doctor.checkIDs)
        // No catalog yet: hosts.os and the copy checks warn; nothing fails.
        #expect(checks.filter { $0.status != .pass }.map(\.id) == ["hosts.os", "copy.proof", "copy.fresh"], "\(checks)")
        #expect(r.status == 8)
    }

    @Test func aFailExitsOne() async throws {
        let f = try healthy()
        try f.write("/etc/ssh/sshd_config",
            "PermitRootLogin yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n")
        let r = try await run(["doctor", "--data", f.data, "--root", f.root, "--json"], in: f)
        let checks = try JSONDecoder().decode([DoctorCheck].self, from: Data(r.out.utf8))
        #expect(checks.first { $0.id == "ssh.root" }?.status == .fail)
        #expect(r.status == 1)
    }

    /// Without CAP_LINUX_IMMUTABLE in its bounding set, the real process (its own
    /// /proc/self/status) cannot seal: doctor must say so, not trust the fixture.
    @Test func droppedCapabilityIsSeenByTheProbe() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv"), getuid() == 0 else {
            print("skipping: needs root and setpriv (util-linux)")
            return
        }
        let f = try healthy()
        try FileManager.default.createDirectory(atPath: f.root + "/proc/self", withIntermediateDirectories: true)
        try? FileManager.default.removeItem(atPath: f.root + "/proc/self/status")
        try FileManager.default.createSymbolicLink(atPath: f.root + "/proc/self/status",
            withDestinationPath: "/proc/self/status")
        let r = try await run(["doctor", "--data", f.data, "--root", f.root, "--json"], in: f,
                        prefix: "/usr/bin/setpriv --bounding-set -linux_immutable --inh-caps -linux_immutable ")
        let checks = try JSONDecoder().decode([DoctorCheck].self, from: Data(r.out.utf8))
        #expect(checks.first { $0.id == "immutable.works" }?.status == .fail)
        #expect(checks.first { $0.id == "caps.immutable" }?.status == .fail)
        #expect(r.status == 1)
    }

    /// SQLite makes -wal and -shm files even for a read-only reader; were they root's,
    /// the service user could no longer open its own catalog.
    @Test func readingTheCatalogAsRootLeavesItUsableByTheServiceUser() async throws {
        let f = try healthy()
        let data = f.base + "/srv/fresh"
        _ = try await run(["server", "init", "--data", data, "--listen", "127.0.0.1:1"], in: f)
        _ = system("chown -R \(DoctorFixture.nobody):\(DoctorFixture.nobody) '\(data)'")
        unlink(data + "/catalog.sqlite-wal")
        unlink(data + "/catalog.sqlite-shm")
        let r = try await run(["doctor", "--data", data, "--root", f.root, "--json"], in: f)
        let checks = try JSONDecoder().decode([DoctorCheck].self, from: Data(r.out.utf8))
        // A fresh server's data directory, handed to its user, is private through and through.
        #expect(checks.first { $0.id == "data.private" }?.status == .pass,
            "\(checks.first { $0.id == "data.private" }?.summary ?? "")")
        #expect(r.status == 8)
        var seen = 0
        for s in ["", "-wal", "-shm"] {
            var st = stat()
            guard lstat(data + "/catalog.sqlite" + s, &st) == 0 else { continue }
            seen += 1
            #expect(st.st_uid == DoctorFixture.nobody, "catalog.sqlite\(s) left owned by uid \(st.st_uid)")
        }
        #expect(seen >= 1)
    }
}

/// The OS a host reports at enrollment and with each backup reaches the catalog (and so
/// `hosts.os`), over the real API.
@Suite(.serialized) struct HostOSReportTests {
    @Test func backupsReportTheHostOSAndChangesAreAudited() async throws {
        let server = try await TestServer.start()
        let keys = try TenantKeys.generate()
        try await server.createTenant("acme", keys: keys)
        let (cfg, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        var failure: (any Error)?
        do { try await reportAndCheck(server, cfg, writer) } catch { failure = error }
        await writer.shutdown()
        await server.stop()
        if let failure { throw failure }
    }

    func reportAndCheck(_ server: TestServer, _ cfg: ClientConfig, _ writer: APIClient) async throws {
        #expect(try await server.service.catalog.enrolledHostSystems().map(\.os) == ["Test OS 1"])
        let (packs, manifest) = try makeSnapshot(keys: try cfg.writeKeySet(), files: [("a", [1, 2, 3])])
        for p in packs { _ = try await writer.uploadPack(id: p.id, bytes: p.bytes) }
        _ = try await writer.commit(manifestBytes: manifest.bytes)
        let reported = try #require(APIClient.hostOS)
        #expect(try await server.service.catalog.enrolledHostSystems().map(\.os) == [reported])
        let changes = try await server.service.catalog.auditRecords().filter { $0.action == "host-os" }
        #expect(changes.count == 1)
        #expect(changes.first?.detail == "was Test OS 1, now \(reported)")
        // A hostile value (here: over the 128-byte limit; HTTP clients refuse control
        // characters before they are sent) is dropped, not stored.
        let (p2, m2) = try makeSnapshot(keys: try cfg.writeKeySet(), files: [("b", [4, 5, 6])], time: testNow + 100)
        for p in p2 { _ = try await writer.uploadPack(id: p.id, bytes: p.bytes) }
        _ = try await writer.send(.POST, "/v1/snapshots", body: m2.bytes, headers: [(Wire.hostOSHeader,
            String(repeating: "A", count: 300))])
        #expect(try await server.service.catalog.enrolledHostSystems().map(\.os) == [reported])
    }
}

import Foundation
import Testing
import RedoubtCore

/// `redoubt schedule install|list|remove` through the binary, into a unit directory of the
/// test's own; the units are checked by systemd's own `systemd-analyze verify`.
@Suite(.serialized) struct ScheduleCLITests {
    final class Host {
        let e: CrashTests.Env
        var config: String { e.dir.appendingPathComponent("host").path }
        var units: String { e.dir.appendingPathComponent("units").path }

        /// A host configuration with a credential naming a numeric server address (no server
        /// is needed: installing a schedule reads the credential only for the address).
        init() throws {
            try #require(FileManager.default.isExecutableFile(atPath: CrashTests.binary.path),
                "build the redoubt executable first")
            e = try CrashTests.Env()
            try FileManager.default.createDirectory(atPath: config, withIntermediateDirectories: true)
            let cred = ClientCredential(url: "https://192.0.2.7:8443", caPEM: "", pin: "", certificatePEM: "",
                keyPEM: "", principalID: "p1", role: "writer", tenant: "t", name: "h1")
            try JSONEncoder().encode(cred).write(to: URL(fileURLWithPath: config + "/credential.json"))
            try Data("""
                [jobs.etc]
                paths = ["/etc"]
                [jobs.srv]
                paths = ["/srv"]
                """.utf8).write(to: URL(fileURLWithPath: config + "/jobs.toml"))
        }

        func run(_ args: [String], check: Bool = true) async throws -> (status: Int32, out: String, err: String) {
            try await e.run(["schedule"] + args + ["--unit-dir", units], check: check)
        }

        func lines(_ file: String) throws -> [String] {
            try String(contentsOfFile: units + "/" + file, encoding: .utf8).split(separator: "\n").map(String.init)
        }

        deinit { e.cleanup() }
    }

    @Test func installWritesSandboxedPersistentUnitsThatListAndRemove() async throws {
        let h = try Host()
        try await h.run(["install", "--job", "etc", "--every", "1h", "--config", h.config])
        try await h.run(["install", "--job", "srv", "--every", "daily", "--config", h.config])
        try await h.run(["install", "--every", "Mon..Fri 02:30", "--config", h.config, "/var/lib/app", "/home"])

        let service = try h.lines("redoubt-backup-etc.service")
        for required in ["Type=oneshot", "User=root", "CapabilityBoundingSet=CAP_DAC_READ_SEARCH",
                         "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=read-only", "PrivateTmp=yes",
                         "ReadWritePaths=\(h.config)", "IPAddressDeny=any", "IPAddressAllow=localhost 192.0.2.7"] {
            #expect(service.contains(required), "redoubt-backup-etc.service is missing \(required): \(service)")
        }
        let exec = try #require(service.first { $0.hasPrefix("ExecStart=") })
        let binary = CrashTests.binary.resolvingSymlinksInPath().path
        #expect(exec == "ExecStart=\(binary) backup --config \(h.config) --expected-interval 1h --job etc", "\(exec)")
        let timer = try h.lines("redoubt-backup-etc.timer")
        #expect(timer.contains("OnCalendar=hourly") && timer.contains("Persistent=true")
            && timer.contains("Unit=redoubt-backup-etc.service") && timer.contains("WantedBy=timers.target"))
        #expect(try h.lines("redoubt-backup-srv.service").contains { $0.hasSuffix("--expected-interval 1d --job srv") })
        // A calendar expression: the longest gap (Friday to Monday) is the expected interval.
        if Self.analyze != nil {
            let paths = try h.lines("redoubt-backup.service").first { $0.hasPrefix("ExecStart=") } ?? ""
            #expect(paths.hasSuffix("--expected-interval 3d -- /var/lib/app /home"), "\(paths)")
            #expect(try h.lines("redoubt-backup.timer").contains("OnCalendar=Mon..Fri 02:30"))
        }

        let list = try await h.e.run(["schedule", "list", "--json", "--unit-dir", h.units]).out
        let listed = try #require(try JSONSerialization.jsonObject(with: Data(list.utf8)) as? [[String: Any]])
        #expect(listed.compactMap { $0["unit"] as? String }.sorted()
            == ["redoubt-backup", "redoubt-backup-etc", "redoubt-backup-srv"], "\(list)")
        #expect(listed.first { $0["job"] as? String == "etc" }?["every"] as? String == "1h", "\(list)")

        try await h.e.run(["schedule", "remove", "--job", "etc", "--unit-dir", h.units])
        #expect(!FileManager.default.fileExists(atPath: h.units + "/redoubt-backup-etc.timer"))
        #expect(!FileManager.default.fileExists(atPath: h.units + "/redoubt-backup-etc.service"))
        let again = try await h.e.run(["schedule", "remove", "--job", "etc", "--unit-dir", h.units], check: false)
        #expect(again.status == 3, "\(again.status) \(again.err)")
    }

    @Test func badSchedulesAndUnknownJobsAreRefusedWithTheFix() async throws {
        let h = try Host()
        let odd = try await h.run(["install", "--job", "etc", "--every", "7h", "--config", h.config], check: false)
        #expect(odd.status == 2 && odd.err.contains("does not divide"), "\(odd.status) \(odd.err)")
        let junk = try await h.run(["install", "--job", "etc", "--every", "whenever", "--config", h.config],
            check: false)
        #expect(junk.status == 2 && junk.err.contains("calendar"), "\(junk.status) \(junk.err)")
        let unknown = try await h.run(["install", "--job", "www", "--every", "1h", "--config", h.config], check: false)
        #expect(unknown.status == 3 && unknown.err.contains("etc, srv"), "\(unknown.status) \(unknown.err)")
        let ghost = try await h.run(["install", "--job", "etc", "--every", "1h", "--user", "redoubt-no-such-user",
                               "--config", h.config], check: false)
        #expect(ghost.status == 2 && ghost.err.contains("useradd"), "\(ghost.status) \(ghost.err)")
        let nothing = try await h.run(["install", "--every", "1h", "--config", h.config], check: false)
        #expect(nothing.status == 2, "\(nothing.status) \(nothing.err)")
        #expect(!FileManager.default.fileExists(atPath: h.units + "/redoubt-backup-www.timer"))
        // A unit of the same name that redoubt did not write is not overwritten.
        try FileManager.default.createDirectory(atPath: h.units, withIntermediateDirectories: true)
        try Data("[Unit]\n".utf8).write(to: URL(fileURLWithPath: h.units + "/redoubt-backup-etc.service"))
        let clash = try await h.run(["install", "--job", "etc", "--every", "1h", "--config", h.config], check: false)
        #expect(clash.status == 2 && clash.err.contains("not written by redoubt"), "\(clash.status) \(clash.err)")
    }

    static var analyze: String? {
        ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// systemd's own checker accepts every unit `schedule install` writes, with no warning.
    @Test func systemdAnalyzeVerifyAcceptsTheGeneratedUnits() async throws {
        guard let tool = Self.analyze else {
            // scripts/test installs systemd; only a machine without it skips, and says so.
            try #require(ProcessInfo.processInfo.environment["REDOUBT_PEERS_REQUIRED"] != "1",
                "systemd-analyze is missing: install the systemd package")
            print("skipping: systemd-analyze is not installed")
            return
        }
        let h = try Host()
        try await h.run(["install", "--job", "etc", "--every", "15m", "--user", "daemon", "--config", h.config])
        try await h.run(["install", "--job", "srv", "--every", "weekly", "--config", h.config])
        try await h.run(["install", "--every", "*-*-* 02,14:00", "--config", h.config, "/path with space/100%"])
        let units = try FileManager.default.contentsOfDirectory(atPath: h.units).sorted()
        #expect(units.count == 6, "\(units)")
        #expect(try h.lines("redoubt-backup-etc.service").contains("AmbientCapabilities=CAP_DAC_READ_SEARCH"))
        #expect(try h.lines("redoubt-backup-etc.timer").contains("OnCalendar=*:00/15"))
        let out = h.e.dir.appendingPathComponent("verify.out").path
        let rc = system("cd '\(h.units)' && '\(tool)' verify \(units.joined(separator: " ")) >'\(out)' 2>&1")
        let said = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        #expect(rc == 0, "systemd-analyze verify failed: \(said)")
        #expect(said.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "systemd-analyze verify warned: \(said)")
    }
}

import Foundation
import Testing
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer

/// The schedule and the expected interval through the real binary against a real server:
/// the flag names systemd units and operators type.
@Suite(.serialized) struct AdminScheduleCLITests {
    @Test func backupSendsItsExpectedIntervalAndAdminsSeeTheScheduleAndJobs() async throws {
        let s = try await HostCLITests.Setup()
        let corpus = s.e.dir.appendingPathComponent("corpus").path
        try s.tree(corpus, ["a.txt": "hello"])
        let r = try await s.e.run(["backup", corpus, "--expected-interval", "26h", "--config", s.host], check: false)
        #expect(r.status == 0, "backup: \(r.status) \(r.err)")
        let hosts = try await s.e.run(["admin", "--credential", s.admin, "host", "list", "--json"]).out
        let list = try JSONDecoder().decode([Wire.PrincipalInfo].self, from: Data(hosts.utf8), dates: true)
        let h1 = try #require(list.first { $0.name == "h1" })
        #expect(h1.expectedIntervalSeconds == 26 * 3600 && h1.backupStatus == "ok")
        let table = try await s.e.run(["admin", "--credential", s.admin, "host", "list"]).out
        #expect(table.contains("BACKUP") && table.contains("ok/26h"), "\(table)")

        let bad = try await s.e.run(["backup", corpus, "--expected-interval", "10s", "--config", s.host], check: false)
        #expect(bad.status != 0 && bad.err.contains("--expected-interval"), "\(bad.status) \(bad.err)")

        let set = try await s.e.run(["admin", "--credential", s.admin, "schedule", "set", "--window", "01:00-05:00",
                               "--zone", "Europe/Berlin"], check: false)
        #expect(set.status == 0 && set.out.contains("01:00-05:00 Europe/Berlin"), "\(set.status) \(set.err)")
        let gc = try await s.e.run(["admin", "--credential", s.admin, "schedule", "set", "gc", "--interval", "12h"]).out
        #expect(gc.contains("gc            12h"), "\(gc)")
        let shown = try await s.e.run(["admin", "--credential", s.admin, "schedule", "show", "--json"]).out
        let info = try JSONDecoder().decode(Wire.ScheduleInfo.self, from: Data(shown.utf8))
        #expect(info.window == "01:00-05:00" && info.windowZone == "Europe/Berlin")
        #expect(info.jobs.map(\.job) == ["policy-apply", "gc", "copy-sync", "lock-probe", "legal-holds", "scrub"])
        let jobs = try await s.e.run(["admin", "--credential", s.admin, "jobs", "list", "--json"]).out
        let rows = try JSONDecoder().decode([Wire.JobInfo].self, from: Data(jobs.utf8), dates: true)
        #expect(Set(rows.map(\.job)).isSuperset(of: ["gc", "scrub"]) && rows.allSatisfy { $0.tenant == "crash" })
        // A host's own credential is refused.
        let hostTry = try await s.e.run(["admin", "--credential", s.host + "/credential.json", "schedule", "set",
            "scrub",
                                   "off"], check: false)
        #expect(hostTry.status != 0 && hostTry.err.contains("E_FORBIDDEN"), "\(hostTry.status) \(hostTry.err)")
        let after = try await s.e.run(["admin", "--credential", s.admin, "schedule", "show", "--json"]).out
        let unchanged = try JSONDecoder().decode(Wire.ScheduleInfo.self, from: Data(after.utf8))
        #expect(unchanged.jobs.first { $0.job == "scrub" }?.off == false)
    }
}

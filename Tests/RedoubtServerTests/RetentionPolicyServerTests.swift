import Foundation
import Testing
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer

/// Retention policies against a real server with a manual clock: the rules' locks are set
/// on the snapshots' manifests and packs after each commit; raising is immediate, lowering
/// needs a second admin's approval.
@Suite(.serialized) struct RetentionPolicyServerTests {
    func randomBytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255) } }

    func commit(_ server: TestServer, _ cfg: ClientConfig, _ client: APIClient) async throws -> Manifest {
        let (packs, manifest) = try makeSnapshot(keys: try cfg.writeKeySet(), files: [("f.bin", randomBytes(4096))],
                                                 time: Int64(server.clock.now().timeIntervalSince1970))
        for p in packs { _ = try await client.uploadPack(id: p.id, bytes: p.bytes) }
        _ = try await client.commit(manifestBytes: manifest.bytes)
        return manifest
    }

    @Test func dailyRuleLocksTheNewestOfEachDayAndLoweringNeedsApproval() async throws {
        let server = try await TestServer.start(minRetention: 86400)
        var clients: [APIClient] = []
        do {
            try await server.createTenant("acme", keys: try TenantKeys.generate())
            let (cfg, web1) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
            clients.append(web1)
            let alice = server.admin
            // Enrolled before the clock moves: TLS checks certificates on the real time.
            let bob = try await server.enrollAdmin("bob")
            clients.append(bob)
            let day: TimeInterval = 86400
            let t0 = Date(timeIntervalSince1970: (server.clock.now().timeIntervalSince1970 / day).rounded(.up) * day)
            _ = try await alice.setPolicy(tenant: "acme", Wire.SetPolicyRequest(rules: RetentionRules(daily: 3)))
            var ids: [String] = []
            for i in 0..<6 {
                server.clock.set(t0.addingTimeInterval(Double(i) * day + 12 * 3600))
                ids.append(try await commit(server, cfg, web1).id.description)
            }
            // Now day 5, noon: daily 3 covers days 3, 4, 5; day 5 is still running.
            let sim = try await alice.simulatePolicy(tenant: "acme")
            let kept = Dictionary(uniqueKeysWithValues: sim.snapshots.map { ($0.id, $0) })
            #expect(sim.kept == 3)
            #expect(kept[ids[5]]?.keeps.first?.final == false)
            #expect(kept[ids[4]]?.lockUntil == t0.addingTimeInterval(7 * day))
            #expect(kept[ids[3]]?.lockUntil == t0.addingTimeInterval(6 * day))
            #expect(kept[ids[2]]?.keeps.isEmpty == true)
            // Applied after each commit already: the catalog's locks and the packs' follow.
            let s4 = try #require(try await server.service.catalog.snapshot(id: ids[4]))
            #expect(s4.retainUntil == t0.addingTimeInterval(7 * day))
            for p in try await server.service.catalog.snapshotPacks(id: ids[4]) {
                #expect(try #require(try await server.service.catalog.pack(tenant: "acme",
                        id: p.description)).retainUntil
                        >= t0.addingTimeInterval(7 * day))
            }
            let s2 = try #require(try await server.service.catalog.snapshot(id: ids[2]))
            // Day 2 was kept while among the last 3 days; no rule keeps it now, its lock stays at its end.
            #expect(s2.retainUntil == t0.addingTimeInterval(5 * day))
            #expect(try await server.service.catalog.snapshot(id: ids[0])?.retainUntil
                == t0.addingTimeInterval(3 * day))

            // With a second admin, lowering needs approval; raising does not.
            await refused("E_APPROVAL_REQUIRED", "lowering a policy alone") {
                _ = try await alice.setPolicy(tenant: "acme", Wire.SetPolicyRequest(rules: RetentionRules(daily: 2)))
            }
            #expect(try await alice.policies(tenant: "acme").first?.rules.daily == 3)
            let req = try #require(try await alice.requests().first { $0.action == "lower-policy" })
            _ = try await bob.decide(request: req.id, approve: true)
            await refused("E_FORBIDDEN", "the approval used for another change") {
                _ = try await alice.setPolicy(tenant: "acme", Wire.SetPolicyRequest(rules: RetentionRules(daily: 1),
                                                                                   requestID: req.id))
            }
            let lowered = try await alice.setPolicy(tenant: "acme",
                Wire.SetPolicyRequest(rules: RetentionRules(daily: 2),
                                                                                          requestID: req.id))
            #expect(lowered.first?.rules.daily == 2)
            // A lock once set stays.
            #expect(try await server.service.catalog.snapshot(id: ids[3])?.retainUntil
                == t0.addingTimeInterval(6 * day))
            let raised = try await alice.setPolicy(tenant: "acme", Wire.SetPolicyRequest(rules: RetentionRules(daily: 2,
                monthly: 12)))
            #expect(raised.first?.rules.monthly == 12)
            await refused("E_APPROVAL_REQUIRED", "removing a policy alone") {
                _ = try await alice.setPolicy(tenant: "acme", Wire.SetPolicyRequest(rules: nil, remove: true))
            }
            // A writer cannot set one.
            await refused("E_FORBIDDEN", "a writer setting a policy") {
                _ = try await web1.setPolicy(tenant: "acme", Wire.SetPolicyRequest(rules: RetentionRules(yearly: 100)))
            }
            // Apply: the monthly rule locks the newest of the month once the month is over.
            #expect(try await alice.applyPolicy(tenant: "acme").kept >= 2)
            // A month later (the service directly: the test credentials' certificates are short-lived).
            server.clock.set(t0.addingTimeInterval(40 * day))
            let applied = try await server.service.applyPolicies(tenant: "acme", host: nil)
            let monthly = applied.snapshots.flatMap {
                s in s.keeps.filter { $0.rule == "monthly" && $0.final }.map { (s.id, $0.until) }
            }
            #expect(!monthly.isEmpty, "the month of the backups is over")
            for (id, until) in monthly {
                #expect(try #require(try await server.service.catalog.snapshot(id: id)).retainUntil >= until)
            }
        } catch {
            Issue.record(error)
        }
        for c in clients { await c.shutdown() }
        await server.stop()
    }
}

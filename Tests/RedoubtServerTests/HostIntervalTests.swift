import Foundation
import Testing
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer

@Suite(.serialized) struct HostIntervalTests {
    func commit(_ cfg: ClientConfig, _ client: APIClient, time: Int64 = testNow,
                expectedInterval: TimeInterval?) async throws {
        let (packs, manifest) = try makeSnapshot(keys: try cfg.writeKeySet(),
                                                 files: [("a", (0..<2000).map { _ in UInt8.random(in: 0...255) })],
                                                 time: time)
        for p in packs { _ = try await client.uploadPack(id: p.id, bytes: p.bytes) }
        _ = try await client.commit(manifestBytes: manifest.bytes, expectedInterval: expectedInterval)
    }

    func host(_ server: TestServer, _ name: String) async throws -> Wire.PrincipalInfo {
        try #require(try await server.admin.principals().first { $0.role == "writer" && $0.name == name })
    }

    @Test func hostListShowsLateOnceTheExpectedIntervalPassesOnTheServersClock() async throws {
        let server = try await TestServer.start()
        try await server.createTenant("acme", keys: try TenantKeys.generate())
        let (webCfg, web) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let (oldCfg, old) = try await server.enroll(tenant: "acme", role: "writer", name: "legacy")
        // Whole seconds: the API gives times to the second.
        let t0 = Date(timeIntervalSince1970: server.clock.now().timeIntervalSince1970.rounded(.up) + 1)
        server.clock.set(t0)
        try await commit(webCfg, web, expectedInterval: 86400)
        // An old client sends no interval: its commit works, its state is unknown.
        try await commit(oldCfg, old, expectedInterval: nil)
        var w = try await host(server, "web1")
        #expect(w.expectedIntervalSeconds == 86400 && w.backupStatus == "ok" && w.lastSnapshotAt == t0)
        #expect(try await host(server, "legacy").backupStatus == "unknown")

        server.clock.set(t0.addingTimeInterval(86400))
        #expect(try await host(server, "web1").backupStatus == "ok")
        server.clock.set(t0.addingTimeInterval(86401))
        w = try await host(server, "web1")
        #expect(w.backupStatus == "late")
        #expect(try await host(server, "legacy").backupStatus == "unknown")

        // The next backup, without the header, keeps the interval and is on time again.
        try await commit(webCfg, web, time: testNow + 86401, expectedInterval: nil)
        w = try await host(server, "web1")
        #expect(w.backupStatus == "ok" && w.expectedIntervalSeconds == 86400)
        // A malformed value is dropped; the commit is not refused for it.
        let (packs, manifest) = try makeSnapshot(keys: try webCfg.writeKeySet(), files: [("b", [1, 2, 3])],
                                                 time: testNow + 86401)
        for p in packs { _ = try await web.uploadPack(id: p.id, bytes: p.bytes) }
        _ = try await web.send(.POST, "/v1/snapshots", body: manifest.bytes,
                               headers: [(Wire.expectedIntervalHeader, "every day, honest")])
        _ = try await web.send(.POST, "/v1/snapshots", body: manifest.bytes,
                               headers: [(Wire.expectedIntervalHeader, "5")])
        #expect(try await host(server, "web1").expectedIntervalSeconds == 86400)
        // A host's time claims do not matter: a host that claims a future time is judged by
        // the server's commit time.
        #expect(try await host(server, "web1").lastSnapshotAt == t0.addingTimeInterval(86401))
        // An admin's expectation replaces the host's claim, in the listing as in `admin status`:
        // a taken host that claims a year is still late after the admin's six hours.
        try await commit(webCfg, web, time: testNow + 86401, expectedInterval: 366 * 86400)
        _ = try await server.admin.setHostExpectation(.init(tenant: "acme", host: "web1", intervalSeconds: 6 * 3600))
        server.clock.set(t0.addingTimeInterval(86401 + 6 * 3600 + 1))
        w = try await host(server, "web1")
        #expect(w.expectedIntervalSeconds == 6 * 3600 && w.backupStatus == "late")
        // Stale (an alert) only past 1.5 times the interval.
        #expect(try await !server.admin.status().staleHosts.contains { $0.host == "web1" })
        server.clock.set(t0.addingTimeInterval(86401 + 9 * 3600 + 1))
        #expect(try await server.admin.status().staleHosts.first { $0.host == "web1" }?.expectedIntervalSeconds
                == 6 * 3600)
        await web.shutdown()
        await old.shutdown()
        await server.stop()
    }

    @Test func backupStatusIsPure() {
        let t = Date(timeIntervalSince1970: 1_000_000)
        #expect(RepositoryService.backupStatus(last: nil, expected: 60, now: t) == .unknown)
        #expect(RepositoryService.backupStatus(last: t, expected: nil, now: t) == .unknown)
        #expect(RepositoryService.backupStatus(last: t, expected: 60, now: t.addingTimeInterval(60)) == .ok)
        #expect(RepositoryService.backupStatus(last: t, expected: 60, now: t.addingTimeInterval(61)) == .late)
    }
}

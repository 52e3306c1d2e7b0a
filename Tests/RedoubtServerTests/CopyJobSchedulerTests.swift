import Foundation
import Testing
import RedoubtAWS
import RedoubtClient
import RedoubtCore
import RedoubtStore
@testable import RedoubtServer

/// The scheduler's copy jobs against real S3 servers: LocalStack enforces Object Lock,
/// moto accepts the settings and deletes anyway.
@Suite(.serialized) struct CopyJobSchedulerTests {
    func bucket(_ endpoint: URL) async throws -> String {
        let name = "redoubt-jobs-\(UInt32.random(in: 0 ... .max))"
        let admin = S3Client(location: S3Location(endpoint: endpoint, region: "us-east-1", bucket: name),
                             credentials: AWSCredentials(accessKeyID: "test", secretAccessKey: "test"))
        let r = try await admin.send(.PUT, key: nil, headers: [("x-amz-bucket-object-lock-enabled", "true")])
        #expect(r.status == 200)
        return name
    }

    @Test func theLockProbeFindsABucketThatDoesNotEnforceAndCopySyncCatchesUp() async throws {
        guard let env = peerEnvironment("REDOUBT_TEST_LOCALSTACK", "REDOUBT_TEST_MOTO"),
              let ls = env["REDOUBT_TEST_LOCALSTACK"].flatMap(URL.init(string:)),
              let moto = env["REDOUBT_TEST_MOTO"].flatMap(URL.init(string:)) else { return }
        let server = try await TestServer.start()
        try await server.createTenant("acme", keys: try TenantKeys.generate())
        let (wc, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let creds = server.dir.appendingPathComponent("s3-credentials").path
        try "[default]\naws_access_key_id = test\naws_secret_access_key = test\n".write(toFile: creds,
                                                                                        atomically: true,
                                                                                        encoding: .utf8)
        do {
            func req(_ url: String, _ endpoint: URL, accept: Bool) -> Wire.AddCopyTargetRequest {
                Wire.AddCopyTargetRequest(tenant: "acme", url: url, endpoint: endpoint.absoluteString,
                                          region: "us-east-1", credentialsFile: creds, virtualHosted: false,
                                          marginSeconds: 86400, acceptUnenforced: accept, requestID: nil)
            }
            let good = try await server.admin.addCopyTarget(req("s3://\(try await bucket(ls))/r", ls, accept: false))
            let bad = try await server.admin.addCopyTarget(req("s3://\(try await bucket(moto))/r", moto,
                                                               accept: true))
            let (packs, manifest) = try makeSnapshot(keys: try wc.writeKeySet(), files: [("a", Array(repeating: 3,
                                                                                                     count: 5000))])
            for p in packs { _ = try await writer.uploadPack(id: p.id, bytes: p.bytes) }
            _ = try await writer.commit(manifestBytes: manifest.bytes)

            let s = JobScheduler(service: server.service, holder: "a",
                                 jobs: [ServerJobs.copySync, ServerJobs.lockProbe])
            let reports = await s.tick(now: server.clock.now())
            #expect(reports.first { $0.job == "copy-sync" }?.outcome == "ok", "\(reports)")
            #expect(reports.first { $0.job == "lock-probe" }?.outcome == "findings", "\(reports)")
            let findings = try await server.service.catalog.findings(tenant: "acme", since: nil)
            #expect(findings.map(\.code) == ["E_LOCK_UNENFORCED"] && findings.first?.object == bad.url,
                    "\(findings)")
            let targets = try await server.admin.copyTargets()
            #expect(targets.first { $0.id == good.id }?.lastProofOK == true)
            #expect(targets.first { $0.id == bad.id }?.lastProofOK == false)
            let listed = try await server.admin.jobs().filter { $0.tenant == "acme" }
            #expect(Set(listed.map(\.job)) == ["gc", "scrub", "copy-sync", "lock-probe"])
            #expect(listed.first { $0.job == "lock-probe" }?.outcome == "findings")
        } catch { Issue.record("\(error)") }
        await writer.shutdown()
        await server.stop()
    }

    /// Polls `condition` every 100 ms, at most 300 times (30 s, far inside the test loop's hour):
    /// true as soon as it holds. A bound on waiting, not a claim about how long anything takes.
    func eventually(_ condition: () async throws -> Bool) async throws -> Bool {
        for _ in 0..<300 {
            if try await condition() { return true }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        return try await condition()
    }

    /// The real server with its scheduler loop running as under `server run`, its periodic pass
    /// an hour away: a commit asks for a copy-sync run and wakes the loop, and the run is in
    /// `GET /v1/jobs` and the commit in the bucket, without a tick by hand or a clock moved.
    @Test func aCommitWakesTheSchedulerAndItsCopySyncRunShowsInTheJobList() async throws {
        guard let env = peerEnvironment("REDOUBT_TEST_LOCALSTACK"),
              let ls = env["REDOUBT_TEST_LOCALSTACK"].flatMap(URL.init(string:)) else { return }
        let server = try await TestServer.start(jobs: true)
        try await server.createTenant("acme", keys: try TenantKeys.generate())
        let (wc, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let creds = server.dir.appendingPathComponent("s3-credentials").path
        try "[default]\naws_access_key_id = test\naws_secret_access_key = test\n".write(toFile: creds,
                                                                                        atomically: true,
                                                                                        encoding: .utf8)
        do {
            let name = try await bucket(ls)
            _ = try await server.admin.addCopyTarget(Wire.AddCopyTargetRequest(
                tenant: "acme", url: "s3://\(name)/r", endpoint: ls.absoluteString, region: "us-east-1",
                credentialsFile: creds, virtualHosted: false, marginSeconds: 86400, acceptUnenforced: false,
                requestID: nil))
            func copySync() async throws -> Wire.JobInfo? {
                try await server.admin.jobs().first { $0.job == "copy-sync" && $0.tenant == "acme" }
            }
            func finishedRuns() async throws -> Int {
                try await server.service.catalog.jobRuns(job: "copy-sync", tenant: "acme")
                    .filter { $0.endedAt != nil }.count
            }
            // Adding the target asked for a sync of its own: that one first, so the next is the commit's.
            #expect(try await eventually { try await finishedRuns() == 1 })
            let before = try #require(try await copySync())
            #expect(before.outcome == "ok" && before.runningOn == nil)
            // Nothing is asked for now: the next run is the periodic one, an interval away.
            #expect(before.nextRunAt == before.lastStartedAt?.addingTimeInterval(3600))

            let (packs, manifest) = try makeSnapshot(keys: try wc.writeKeySet(), files: [("a", Array(repeating: 5,
                                                                                                     count: 4000))])
            for p in packs { _ = try await writer.uploadPack(id: p.id, bytes: p.bytes) }
            _ = try await writer.commit(manifestBytes: manifest.bytes)
            #expect(try await eventually {
                let j = try await copySync()
                let finished = try await finishedRuns()
                return finished == 2 && j?.runningOn == nil
            })
            let after = try #require(try await copySync())
            #expect(after.outcome == "ok" && after.failures == 0, "\(after)")
            let copy = S3Store(client: S3Client(location: S3Location(endpoint: ls, region: "us-east-1", bucket: name,
                                                                     prefix: "r"),
                                                credentials: AWSCredentials(accessKeyID: "test",
                                                                            secretAccessKey: "test")))
            #expect(try await copy.list(prefix: "t/acme/").contains { $0.key.path.hasSuffix(manifest.id.description) })
            // Only the runs asked for ran: the periodic pass at start found no tenant yet. (On
            // PostgreSQL that first pass can start after the tenant exists, and then runs the
            // jobs due for it: the wake is still what ran copy-sync, twice, above.)
            let ran = Set(try await server.service.catalog.jobRuns(job: nil, tenant: "acme").map(\.job))
            if TestCatalog.isPostgres {
                #expect(ran.contains("copy-sync"), "\(ran)")
            } else {
                #expect(ran == ["copy-sync"], "\(ran)")
            }
        } catch { Issue.record("\(error)") }
        await writer.shutdown()
        await server.stop()
    }
}

import Foundation
import Testing
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer

/// A count and a gate shared with a job, so a test decides when a run may end.
final class JobProbe: @unchecked Sendable {
    private let lock = NSLock()
    private var runs = 0
    private var failFirst: Int
    let started: AsyncStream<Int>
    private let startedCont: AsyncStream<Int>.Continuation
    let release: AsyncStream<Void>
    private let releaseCont: AsyncStream<Void>.Continuation
    let gated: Bool

    init(failFirst: Int = 0, gated: Bool = false) {
        self.failFirst = failFirst
        self.gated = gated
        (started, startedCont) = AsyncStream<Int>.makeStream()
        (release, releaseCont) = AsyncStream<Void>.makeStream()
    }

    var count: Int { lock.withLock { runs } }
    func open() { releaseCont.yield(()) }

    /// One run: counts, tells the test it started, waits for the gate if gated, fails the
    /// first `failFirst` runs.
    func run() async throws -> JobOutcome {
        let (n, fail) = lock.withLock { () -> (Int, Bool) in
            runs += 1
            let fail = failFirst > 0
            if fail { failFirst -= 1 }
            return (runs, fail)
        }
        startedCont.yield(n)
        if gated { for await _ in release { break } }
        if fail { throw ServerError(503, "E_TEST", "the test's job fails on purpose (run \(n))") }
        return .ok("run \(n)")
    }

    func job(_ name: String = "test-job", interval: TimeInterval = 3600) -> ScheduledJob {
        ScheduledJob(name: name, defaultInterval: interval, windowed: false, protective: false,
                     tenants: { _ in ["acme"] }) { _ in try await self.run() }
    }
}

@Suite(.serialized) struct JobSchedulerTests {
    /// A server with tenant acme whose clock stands on a whole second: times pass through the
    /// catalog as seconds since 1970, exact for whole ones, so due times compare exactly.
    func server() async throws -> TestServer {
        let server = try await TestServer.start()
        try await server.createTenant("acme", keys: try TenantKeys.generate())
        server.clock.set(Date(timeIntervalSince1970: server.clock.now().timeIntervalSince1970.rounded(.up) + 1))
        return server
    }

    @Test func aJobRunsWhenDueAndOnlyOnceAcrossTwoServersSharingTheCatalog() async throws {
        let server = try await server()
        let probe = JobProbe()
        let a = JobScheduler(service: server.service, holder: "server-a", jobs: [probe.job()])
        let b = JobScheduler(service: server.service, holder: "server-b", jobs: [probe.job()])
        let t0 = server.clock.now()
        #expect(await a.tick(now: t0).map(\.outcome) == ["ok"])
        // B shares the catalog: the job ran for this due time, so B does not run it again.
        #expect(await b.tick(now: t0).isEmpty)
        server.clock.set(t0.addingTimeInterval(3599))
        #expect(await b.tick(now: server.clock.now()).isEmpty)
        #expect(await a.tick(now: server.clock.now()).isEmpty)
        server.clock.set(t0.addingTimeInterval(3600))
        #expect(await b.tick(now: server.clock.now()).map(\.outcome) == ["ok"])
        #expect(await a.tick(now: server.clock.now()).isEmpty)
        #expect(probe.count == 2)
        let runs = try await server.service.catalog.jobRuns(job: "test-job", tenant: "acme")
        #expect(runs.map(\.holder) == ["server-a", "server-b"])
        #expect(runs.allSatisfy { $0.outcome == "ok" && $0.endedAt != nil })
        await server.stop()
    }

    @Test func whileOneServerHoldsTheLeaseTheOtherDoesNotRunTheJob() async throws {
        let server = try await server()
        let probe = JobProbe(gated: true)
        let a = JobScheduler(service: server.service, holder: "server-a", jobs: [probe.job()])
        let b = JobScheduler(service: server.service, holder: "server-b", jobs: [probe.job()])
        let t0 = server.clock.now()
        let running = Task { await a.tick(now: t0) }
        for await _ in probe.started { break }
        // A is inside its run and holds the lease: B, due or not, leaves it alone.
        #expect(await b.tick(now: t0).isEmpty)
        // Nor does a second pass of A itself while its first still runs.
        #expect(await a.tick(now: t0).isEmpty)
        #expect(try await server.service.catalog.jobState(job: "test-job", tenant: "acme")?.leaseHolder == "server-a")
        probe.open()
        #expect(await running.value.map(\.outcome) == ["ok"])
        #expect(await b.tick(now: t0).isEmpty)
        #expect(probe.count == 1)
        #expect(try await server.service.catalog.jobState(job: "test-job", tenant: "acme")?.leaseHolder == nil)

        // A server that died holding a lease blocks the job only until the lease expires.
        let t1 = t0.addingTimeInterval(7200)
        server.clock.set(t1)
        #expect(try await server.service.catalog.acquireJobLease(job: "test-job", tenant: "acme", holder: "dead",
                                                           now: t1, ttl: JobScheduler.leaseTTL) != nil)
        #expect(await b.tick(now: t1).isEmpty)
        let t2 = t1.addingTimeInterval(JobScheduler.leaseTTL)
        server.clock.set(t2)
        let late = Task { await b.tick(now: t2) }
        for await _ in probe.started { break }
        probe.open()
        #expect(await late.value.map(\.outcome) == ["ok"])
        #expect(probe.count == 2)
        await server.stop()
    }

    @Test func aFailedJobIsRetriedWithABackoffThatDoubles() async throws {
        let server = try await server()
        let probe = JobProbe(failFirst: 2)
        let s = JobScheduler(service: server.service, holder: "server-a", jobs: [probe.job(interval: 86400)])
        let t0 = server.clock.now()
        func tick(at offset: TimeInterval) async -> [String] {
            server.clock.set(t0.addingTimeInterval(offset))
            return await s.tick(now: server.clock.now()).map(\.outcome)
        }
        #expect(await tick(at: 0) == ["failed"])
        var state = try #require(try await server.service.catalog.jobState(job: "test-job", tenant: "acme"))
        #expect(state.failures == 1 && state.nextDue == t0.addingTimeInterval(60))
        #expect(state.lastError?.contains("fails on purpose") == true)
        #expect(await tick(at: 59) == [])
        #expect(await tick(at: 60) == ["failed"])
        state = try #require(try await server.service.catalog.jobState(job: "test-job", tenant: "acme"))
        #expect(state.failures == 2 && state.nextDue == t0.addingTimeInterval(180))
        #expect(await tick(at: 179) == [])
        #expect(await tick(at: 180) == ["ok"])
        state = try #require(try await server.service.catalog.jobState(job: "test-job", tenant: "acme"))
        #expect(state.failures == 0 && state.nextDue == t0.addingTimeInterval(180 + 86400) && state.lastError == nil)
        #expect(JobScheduler.backoff(failures: 20, interval: 86400) == JobScheduler.maxBackoff)
        #expect(JobScheduler.backoff(failures: 20, interval: 3600) == 3600)
        // Each failure is in the audit log, naming the job and tenant.
        let failures = try await server.admin.audit().filter { $0.action == "job" }
        #expect(failures.count == 2 && failures.allSatisfy { $0.object == "test-job acme" && $0.outcome == "error" })
        await server.stop()
    }

    @Test func aFailingJobDoesNotBlockABackup() async throws {
        let server = try await server()
        let (cfg, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let probe = JobProbe(failFirst: 1, gated: true)
        let s = JobScheduler(service: server.service, holder: "server-a",
                             jobs: [probe.job(), ServerJobs.gc, ServerJobs.scrub])
        let running = Task { await s.tick(now: server.clock.now()) }
        for await _ in probe.started { break }
        // The job is running (and will fail): a host backs up meanwhile, untouched by it.
        let (packs, manifest) = try makeSnapshot(keys: try cfg.writeKeySet(), files: [("a", Array(repeating: 7,
                                                                                                 count: 3000))])
        for p in packs { _ = try await writer.uploadPack(id: p.id, bytes: p.bytes) }
        let info = try await writer.commit(manifestBytes: manifest.bytes)
        #expect(info.id == manifest.id.description)
        probe.open()
        let reports = await running.value
        #expect(reports.first { $0.job == "test-job" }?.outcome == "failed")
        // The jobs after the failing one still ran in the same pass.
        #expect(reports.first { $0.job == "gc" }?.outcome == "ok")
        #expect(reports.first { $0.job == "scrub" }?.outcome == "ok")
        #expect(try await server.service.catalog.snapshot(id: manifest.id.description) != nil)
        await writer.shutdown()
        await server.stop()
    }

    @Test func theWindowHoldsPeriodicRunsOfWindowedJobs() async throws {
        let server = try await server()
        let calendar = { () -> Calendar in
            var c = Calendar(identifier: .gregorian)
            c.timeZone = TimeZone(identifier: "UTC")!
            return c
        }()
        let day = calendar.startOfDay(for: server.clock.now()).addingTimeInterval(86400)
        server.clock.set(day.addingTimeInterval(12 * 3600))
        _ = try await server.admin.setSchedule(Wire.SetScheduleRequest(window: "01:00-05:00", windowZone: "UTC"))
        let s = JobScheduler(service: server.service, holder: "a", jobs: [ServerJobs.gc])
        #expect(await s.tick(now: server.clock.now()).isEmpty)
        let jobs = try await server.admin.jobs()
        let gc = try #require(jobs.first { $0.job == "gc" && $0.tenant == "acme" })
        #expect(gc.nextRunAt == day.addingTimeInterval(86400 + 3600))
        #expect(gc.outcome == nil)
        server.clock.set(day.addingTimeInterval(86400 + 3600))
        #expect(await s.tick(now: server.clock.now()).map(\.outcome) == ["ok"])
        let after = try #require(try await server.admin.jobs().first { $0.job == "gc" && $0.tenant == "acme" })
        #expect(after.outcome == "ok" && after.lastStartedAt == day.addingTimeInterval(86400 + 3600))
        // Window across midnight, in a named zone.
        let w = try MaintenanceWindow.parse("22:00-04:00", zone: "Europe/Berlin").get()
        #expect(w.contains(Date(timeIntervalSince1970: 1_767_222_000)))  // 2026-01-01 00:00 Berlin
        #expect(!w.contains(Date(timeIntervalSince1970: 1_767_261_600)))  // 2026-01-01 11:00 Berlin
        await server.stop()
    }

    @Test func aRequestedRunIsDueAtOnceEvenOutsideTheWindow() async throws {
        let server = try await server()
        _ = try await server.admin.setPolicy(tenant: "acme", Wire.SetPolicyRequest(rules: RetentionRules(daily: 3)))
        var c = Calendar(identifier: .gregorian)
        c.timeZone = TimeZone(identifier: "UTC")!
        let noon = c.startOfDay(for: server.clock.now()).addingTimeInterval(86400 + 12 * 3600)
        server.clock.set(noon)
        _ = try await server.admin.setSchedule(Wire.SetScheduleRequest(window: "01:00-05:00"))
        let s = JobScheduler(service: server.service, holder: "a", jobs: [ServerJobs.policyApply])
        #expect(await s.tick(now: noon).isEmpty)
        // What a failed application after a commit asks for: run now, window or not.
        await server.service.requestJob("policy-apply", tenant: "acme")
        #expect(try await server.admin.jobs().first { $0.job == "policy-apply" }?.nextRunAt == noon)
        #expect(await s.tick(now: noon).map(\.outcome) == ["ok"])
        let state = try #require(try await server.service.catalog.jobState(job: "policy-apply", tenant: "acme"))
        #expect(state.requestedAt == nil && state.nextDue == noon.addingTimeInterval(86400))
        // Done: the next periodic run waits for the window again.
        #expect(await s.tick(now: noon.addingTimeInterval(86400)).isEmpty)
        #expect(try await server.admin.jobs().first { $0.job == "policy-apply" }?.nextRunAt
                == noon.addingTimeInterval(86400 + 13 * 3600))
        await server.stop()
    }

    @Test func aHostOrRestorerCredentialCannotReadOrChangeTheSchedule() async throws {
        let server = try await server()
        let (_, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let (_, restorer) = try await server.enroll(tenant: "acme", role: "restorer", name: "vault")
        for (who, client) in [("host", writer), ("restorer", restorer)] {
            await refused("E_FORBIDDEN", "\(who) turning the scrub off") {
                _ = try await client.setSchedule(Wire.SetScheduleRequest(job: "scrub", off: true))
            }
            await refused("E_FORBIDDEN", "\(who) opening a window no job runs in") {
                _ = try await client.setSchedule(Wire.SetScheduleRequest(window: "03:00-03:01"))
            }
            await refused("E_FORBIDDEN", "\(who) reading the schedule") { _ = try await client.schedule() }
            await refused("E_FORBIDDEN", "\(who) listing jobs") { _ = try await client.jobs() }
        }
        let s = try await server.admin.schedule()
        #expect(s.window == nil && s.jobs.allSatisfy { !$0.off })
        let denied = try await server.admin.audit().filter { $0.action == "set-schedule" }
        #expect(denied.count == 4 && denied.allSatisfy { $0.outcome == "denied" })
        await writer.shutdown()
        await restorer.shutdown()
        await server.stop()
    }

    @Test func weakeningTheScheduleNeedsTheQuorumAndGCDoesNot() async throws {
        let server = try await server()
        let bob = try await server.enrollAdmin("bob")
        await refused("E_APPROVAL_REQUIRED", "turning the scrub off alone") {
            _ = try await server.admin.setSchedule(Wire.SetScheduleRequest(job: "scrub", off: true))
        }
        await refused("E_APPROVAL_REQUIRED", "running copies weekly alone") {
            _ = try await server.admin.setSchedule(Wire.SetScheduleRequest(job: "copy-sync", intervalSeconds: 604800))
        }
        #expect(try await server.admin.schedule().jobs.allSatisfy { !$0.off && $0.intervalSeconds
                                                                    == $0.defaultIntervalSeconds })
        // Less often for gc keeps more, and more often for anything is at once.
        let s = try await server.admin.setSchedule(Wire.SetScheduleRequest(job: "gc", intervalSeconds: 2 * 86400))
        let twoDays: TimeInterval = 2 * 86400
        #expect(s.jobs.first(where: { $0.job == "gc" })?.intervalSeconds == twoDays)
        _ = try await server.admin.setSchedule(Wire.SetScheduleRequest(job: "scrub", intervalSeconds: 3600))
        // With bob's approval the scrub goes off: the request names the whole schedule it makes.
        await refused("E_APPROVAL_REQUIRED", "turning the scrub off alone") {
            _ = try await server.admin.setSchedule(Wire.SetScheduleRequest(job: "scrub", off: true))
        }
        let req = try #require(try await server.admin.requests().last { $0.action == "weaken-schedule" })
        _ = try await bob.decide(request: req.id, approve: true)
        let off = try await server.admin.setSchedule(Wire.SetScheduleRequest(job: "scrub", off: true,
                                                                             requestID: req.id))
        #expect(off.jobs.first { $0.job == "scrub" }?.off == true)
        await refused("E_BAD_REQUEST", "an interval under five minutes") {
            _ = try await server.admin.setSchedule(Wire.SetScheduleRequest(job: "gc", intervalSeconds: 10))
        }
        await refused("E_BAD_REQUEST", "a window of one minute, which would all but stop the scrub") {
            _ = try await server.admin.setSchedule(Wire.SetScheduleRequest(window: "03:00-03:01"))
        }
        #expect(try await server.admin.schedule().window == nil)
        await refused("E_BAD_REQUEST", "an unknown zone") {
            _ = try await server.admin.setSchedule(Wire.SetScheduleRequest(window: "01:00-05:00", windowZone: "Mars/X"))
        }
        await bob.shutdown()
        await server.stop()
    }
}

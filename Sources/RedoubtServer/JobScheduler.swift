import Foundation
import Logging
import Synchronization
import RedoubtCore

// The server's own schedule (docs/PROTOCOL.md §4.8). `redoubt server run` ticks a
// JobScheduler about once a minute; each tick runs, per tenant, every job that is due.
// A run first takes the job's lease in the catalog (holder, expiry) in the same
// transaction that checks the job is still due, so servers sharing a catalog never run
// the same job of the same tenant at once, nor twice for one due time; the run renews the
// lease while it lasts. A run records its start, end, outcome and error; a failed run is
// retried after a backoff that doubles (1, 2, 4 … minutes, at most the job's interval).
// Jobs run off the request path: a commit never waits for one, and a failing job never
// fails a commit.

/// One job of one tenant as the catalog keeps it.
public struct JobState: Sendable, Equatable {
    public var job: String
    public var tenant: String
    /// When the job is next due (nil: at once).
    public var nextDue: Date?
    /// A run asked for (after a commit, or a failed application of a policy): due at once,
    /// outside the maintenance window too.
    public var requestedAt: Date?
    public var failures: Int
    public var lastStart: Date?
    public var lastEnd: Date?
    public var lastOutcome: String?
    public var lastError: String?
    public var leaseHolder: String?
    public var leaseExpires: Date?
}

/// One run in the history (kept 90 days).
public struct JobRun: Sendable, Equatable {
    public var seq: Int64
    public var job: String
    public var tenant: String
    public var holder: String
    public var startedAt: Date
    public var endedAt: Date?
    public var outcome: String?
    public var error: String?
}

/// Job state, leases and runs (SQLite: SQLiteCatalog+Jobs.swift).
public protocol JobRepository: Sendable {
    func jobState(job: String, tenant: String) async throws -> JobState?
    func jobStates() async throws -> [JobState]
    /// In one transaction: takes the lease for `holder` until `now + ttl` if no lease (of any
    /// holder) is unexpired AND the job is due at `now` (no `nextDue` after `now`, or a request
    /// at or before `now`); takes up the pending request, and records the run's start. Returns
    /// the run's number, nil if not taken.
    func acquireJobLease(job: String, tenant: String, holder: String, now: Date, ttl: TimeInterval) async throws
        -> Int64?
    /// Moves the lease's expiry to `now + ttl` if `holder` still holds it; false if it does not.
    func renewJobLease(job: String, tenant: String, holder: String, now: Date, ttl: TimeInterval) async throws -> Bool
    /// Records the run's end and the job's next due time, and releases `holder`'s lease (a
    /// lease another server took after it expired stays that server's). A request made
    /// after the lease was taken survives for the next run.
    func finishJob(run: Int64, job: String, tenant: String, holder: String, started: Date, ended: Date,
                   outcome: String, error: String?, failures: Int, nextDue: Date) async throws
    /// Makes the job due at once (kept if a request is already pending).
    func requestJobRun(job: String, tenant: String, at: Date) async throws
    /// Runs in order, of one job and tenant or all.
    func jobRuns(job: String?, tenant: String?) async throws -> [JobRun]
}

extension Catalog: JobRepository {}

/// What a job found: `ok`, or `findings` (it ran, and found stored objects wrong). A job
/// that could not do its work throws instead, and is retried.
public enum JobOutcome: Sendable, Equatable {
    case ok(String)
    case findings(String)

    var name: String {
        switch self {
        case .ok: "ok"
        case .findings: "findings"
        }
    }
}

/// What one job run is given.
public struct JobContext: Sendable {
    public let service: RepositoryService
    public let tenant: String
    public let now: Date
    public let schedule: JobSchedule
    let renewLease: @Sendable () async -> Bool
    /// Extends the run's lease; false once another server holds it (the job should stop).
    public func stillHoldsLease() async -> Bool { await renewLease() }
    /// The audit and log identity of this run.
    public var call: CallContext {
        var c = CallContext(principal: nil, source: "local")
        c.job = "scheduler"
        return c
    }
}

/// A job the scheduler runs per tenant.
public struct ScheduledJob: Sendable {
    public let name: String
    public let defaultInterval: TimeInterval
    /// Periodic runs wait for the maintenance window (requested runs do not).
    public let windowed: Bool
    /// Turning it off, or running it less often, weakens protection (needs the quorum).
    public let protective: Bool
    /// The tenants it applies to now.
    public let tenants: @Sendable (RepositoryService) async throws -> [String]
    public let run: @Sendable (JobContext) async throws -> JobOutcome

    public init(name: String, defaultInterval: TimeInterval, windowed: Bool, protective: Bool,
                tenants: @escaping @Sendable (RepositoryService) async throws -> [String],
                run: @escaping @Sendable (JobContext) async throws -> JobOutcome) {
        self.name = name
        self.defaultInterval = defaultInterval
        self.windowed = windowed
        self.protective = protective
        self.tenants = tenants
        self.run = run
    }
}

/// What one run did, as `tick` returns it.
public struct JobRunReport: Sendable, Equatable {
    public var job: String
    public var tenant: String
    /// `ok`, `findings` or `failed`.
    public var outcome: String
    public var detail: String
}

/// Runs the server's jobs when due, one holder per lease. Pure of timers: `tick(now:)`
/// does one pass; `run(every:)` calls it in a loop for `server run`.
public final class JobScheduler: Sendable {
    public let service: RepositoryService
    /// This server's name on the leases it takes.
    public let holder: String
    public let jobs: [ScheduledJob]
    /// How long a lease lasts without renewal: a server that dies mid-run blocks the job
    /// that long at most. Long jobs (the scrub) renew it as they go.
    public static let leaseTTL: TimeInterval = 3600
    /// The longest wait before a failed job is tried again.
    public static let maxBackoff: TimeInterval = 6 * 3600

    public init(service: RepositoryService, holder: String = JobScheduler.defaultHolder(),
                jobs: [ScheduledJob] = ServerJobs.all) {
        self.service = service
        self.holder = holder
        self.jobs = jobs
    }

    /// `host:pid:random`: unique per running server.
    public static func defaultHolder() -> String {
        var name = [CChar](repeating: 0, count: 256)
        let host = gethostname(&name, 255) == 0 ? String(cString: name) : "server"
        return "\(host):\(getpid()):\(hexString((0..<4).map { _ in UInt8.random(in: 0...255) }))"
    }

    /// The wait before retry number `failures` (1, 2, …): one minute, doubling, at most the
    /// job's interval and ``maxBackoff``.
    public static func backoff(failures: Int, interval: TimeInterval) -> TimeInterval {
        min(60 * pow(2, Double(max(0, min(failures, 30) - 1))), interval, maxBackoff)
    }

    /// One pass: runs, one after another, every job of every tenant that is due at `now`,
    /// is not off, and (periodic runs of windowed jobs) falls in the maintenance window.
    /// Returns what ran; a job another server holds or just ran is skipped.
    /// `requestedOnly`: only runs asked for (a wake-up after a commit), so a commit's copy
    /// does not wait behind periodic work; `tenant` limits the pass to one tenant.
    @discardableResult
    public func tick(now: Date, requestedOnly: Bool = false, tenant only: String? = nil) async -> [JobRunReport] {
        let schedule: JobSchedule
        do { schedule = try await service.jobSchedule() } catch {
            service.logger.error("jobs: the schedule cannot be read", metadata: ["error": "\(error)"])
            return []
        }
        var reports: [JobRunReport] = []
        for job in jobs where !schedule.isOff(job.name) {
            let tenants: [String]
            do { tenants = try await job.tenants(service) } catch {
                service.logger.error("jobs: tenants of a job cannot be read",
                                     metadata: ["job": "\(job.name)", "error": "\(error)"])
                continue
            }
            for tenant in tenants where only == nil || only == tenant {
                if Task.isCancelled { return reports }
                if let r = await runIfDue(job, tenant: tenant, schedule: schedule, now: now,
                                          requestedOnly: requestedOnly) { reports.append(r) }
            }
        }
        return reports
    }

    private func runIfDue(_ job: ScheduledJob, tenant: String, schedule: JobSchedule,
                          now: Date, requestedOnly: Bool) async -> JobRunReport? {
        let catalog = service.catalog
        do {
            let state = try await catalog.jobState(job: job.name, tenant: tenant)
            let requested = state?.requestedAt.map { $0 <= now } ?? false
            if requestedOnly, !requested { return nil }
            guard requested || (state?.nextDue ?? .distantPast) <= now else { return nil }
            if job.windowed, !requested, let window = schedule.window, !window.contains(now) { return nil }
            guard let run = try await catalog.acquireJobLease(job: job.name, tenant: tenant, holder: holder, now: now,
                                                        ttl: Self.leaseTTL) else { return nil }
            return await execute(job, tenant: tenant, run: run, failuresBefore: state?.failures ?? 0,
                                 schedule: schedule, now: now)
        } catch {
            service.logger.error("jobs: the catalog failed", metadata: ["job": "\(job.name)", "tenant": "\(tenant)",
                                                                        "error": "\(error)"])
            return nil
        }
    }

    private func execute(_ job: ScheduledJob, tenant: String, run: Int64, failuresBefore: Int,
                         schedule: JobSchedule, now: Date) async -> JobRunReport {
        let (catalog, holder, service) = (service.catalog, holder, service)
        let ctx = JobContext(service: service, tenant: tenant, now: now, schedule: schedule) {
            let t = await max(now, service.clockNow())
            return (try? await catalog.renewJobLease(job: job.name, tenant: tenant, holder: holder, now: t,
                                               ttl: Self.leaseTTL)) ?? false
        }
        let interval = schedule.interval(job.name, default: job.defaultInterval)
        var report = JobRunReport(job: job.name, tenant: tenant, outcome: "ok", detail: "")
        var failures = 0
        do {
            let outcome = try await Self.holdingLease(ctx) { try await job.run(ctx) }
            switch outcome {
            case .ok(let d), .findings(let d): report.detail = d
            }
            report.outcome = outcome.name
        } catch {
            failures = failuresBefore + 1
            report.outcome = "failed"
            report.detail = "\(error)"
        }
        let ended = await max(now, service.clockNow())
        let next = failures == 0 ? now.addingTimeInterval(interval)
            : ended.addingTimeInterval(Self.backoff(failures: failures, interval: interval))
        if failures > 0 {
            service.logger.error("job failed; retried later", metadata: [
                "job": "\(job.name)", "tenant": "\(tenant)", "failures": "\(failures)", "error": "\(report.detail)",
                "retry-at": "\(next)"])
            await service.audit(ctx.call, .jobRun, object: "\(job.name) \(tenant)", outcome: "error",
                          detail: "failure \(failures), retry at \(Int(next.timeIntervalSince1970)): \(report.detail)")
        }
        do {
            try await catalog.finishJob(run: run, job: job.name, tenant: tenant, holder: holder, started: now,
                    ended: ended,
                                  outcome: report.outcome, error: failures > 0 ? report.detail : nil,
                                  failures: failures, nextDue: next)
        } catch {
            service.logger.error("jobs: the run's end was not recorded (its lease expires by itself)",
                                 metadata: ["job": "\(job.name)", "tenant": "\(tenant)", "error": "\(error)"])
        }
        // The run took up the requests made before it started; one made while it ran (a
        // second commit) may have found the lease taken, so the loop is woken for it.
        if (try? await catalog.jobState(job: job.name, tenant: tenant))?.requestedAt != nil { service.jobWake.wake() }
        return report
    }

    /// How often a running job's lease is renewed in the background: well inside ``leaseTTL``.
    static let leaseRenewal: TimeInterval = leaseTTL / 4

    /// Runs `body` while a child task renews the run's lease every ``leaseRenewal``, so a
    /// run longer than the lease (a large gc) is not taken up by another server meanwhile.
    /// The renewal ends with `body`; a run shorter than ``leaseRenewal`` never renews.
    static func holdingLease(_ ctx: JobContext,
                             _ body: @escaping @Sendable () async throws -> JobOutcome) async throws -> JobOutcome {
        try await withThrowingTaskGroup(of: JobOutcome?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(nanoseconds: UInt64(leaseRenewal * 1e9))
                    if Task.isCancelled { break }
                    if await !ctx.stillHoldsLease() { break }
                }
                return nil
            }
            defer { group.cancelAll() }
            while let r = try await group.next() {
                if let outcome = r { return outcome }
            }
            throw CancellationError()
        }
    }

    /// Until the task is cancelled (`server run`): a full pass every `interval` seconds and,
    /// beside it, a pass of the runs asked for each time one is asked for (``JobWake``), so a
    /// commit's copy starts at once rather than at the next pass, and not behind a long scrub.
    /// Both take the same leases, so the two never run one job of one tenant at once.
    public func run(every interval: TimeInterval = 60) async {
        // Subscribed before the first pass, so a request made meanwhile is not missed.
        let wakes = service.jobWake.subscribe()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                while !Task.isCancelled {
                    await self.tick(now: self.service.clockNow())
                    try? await Task.sleep(nanoseconds: UInt64(interval * 1e9))
                }
            }
            group.addTask {
                for await _ in wakes {
                    await self.tick(now: self.service.clockNow(), requestedOnly: true)
                }
            }
        }
    }

    /// Runs the requested run of `job` for `tenant` now, in the caller's task and under the
    /// lease (`copy sync --wait`). If another run holds the lease, waits (polling, up to
    /// `limit`) for it to end and for the request to be taken up. True once no request is
    /// pending and no run holds the lease; false at the limit, or at once if the job is off.
    public func runRequested(_ job: ScheduledJob, tenant: String, limit: Duration = .seconds(600)) async -> Bool {
        // A job turned off (with the quorum) is not run by hand either; nor waited for.
        guard let schedule = try? await service.jobSchedule(), !schedule.isOff(job.name) else { return false }
        let clock = ContinuousClock()
        let end = clock.now.advanced(by: limit)
        let probe = JobScheduler(service: service, holder: holder, jobs: [job])
        while clock.now < end, !Task.isCancelled {
            let now = await service.clockNow()
            await probe.tick(now: now, requestedOnly: true, tenant: tenant)
            guard let s = try? await service.catalog.jobState(job: job.name, tenant: tenant) else { return false }
            let leased = s.leaseHolder != nil && (s.leaseExpires ?? .distantPast) > now
            if s.requestedAt == nil, !leased { return true }
            try? await Task.sleep(nanoseconds: 200_000_000)
        }
        return false
    }
}

/// Wakes the scheduler's loop when a run is asked for. Each loop subscribes; a wake-up that
/// comes while a loop is busy is kept (one, however many came), so none is lost.
public final class JobWake: Sendable {
    private let subscribers = Mutex<[UUID: AsyncStream<Void>.Continuation]>([:])

    public init() {}

    public func subscribe() -> AsyncStream<Void> {
        let (stream, cont) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let id = UUID()
        subscribers.withLock { $0[id] = cont }
        cont.onTermination = { [weak self] _ in _ = self?.subscribers.withLock { $0.removeValue(forKey: id) } }
        return stream
    }

    public func wake() {
        for c in subscribers.withLock({ Array($0.values) }) { c.yield(()) }
    }
}

extension RepositoryService {
    /// The server's time for the scheduler: never earlier than any time it used before.
    func clockNow() async -> Date { (try? await now()) ?? clock.now() }

    /// Makes `job` of `tenant` due at once (after a commit): a failure is logged, never the
    /// caller's, since the periodic run comes anyway.
    func requestJob(_ job: String, tenant: String) async {
        do {
            try await catalog.requestJobRun(job: job, tenant: tenant, at: clockNow())
            jobWake.wake()
        } catch {
            logger.warning("jobs: a run could not be requested", metadata: ["job": "\(job)", "tenant": "\(tenant)",
                                                                           "error": "\(error)"])
        }
    }
}

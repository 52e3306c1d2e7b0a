import Foundation
import PostgresNIO
import RedoubtCore
@testable import RedoubtServer
import Testing

// The server's own operations under several servers on one database: job leases and alerts.
extension PostgresCatalogConcurrencyTests {
    /// Every server asks for the same job's lease at the same instant (the job's row not there
    /// yet in the first race, there in the second): exactly one gets a run, and once it
    /// finishes the next race again has one winner.
    @Test func aJobLeaseRacedAtEveryServerGoesToOne() async throws {
        guard let peer = try PostgresPeer.fromEnvironment() else { return }
        try await peer.withFreshSchema(servers: 4) { servers in
            for round in 0..<4 {
                let tenant = "t\(round)"
                var runs: [Int64] = []
                for race in 0..<2 {
                    let now = Self.t0.addingTimeInterval(Double(race) * 3600)
                    let won = try await withThrowingTaskGroup(of: (Int, Int64?).self) { group in
                        for (i, c) in servers.enumerated() {
                            group.addTask {
                                (i, try await c.acquireJobLease(job: "gc", tenant: tenant, holder: "server\(i)",
                                                                now: now, ttl: 600))
                            }
                        }
                        var out: [(Int, Int64)] = []
                        for try await (i, run) in group { if let run { out.append((i, run)) } }
                        return out
                    }
                    #expect(won.count == 1, "round \(round), race \(race): \(won.count) servers got a run")
                    guard let first = won.first else { continue }
                    let (winner, run) = first
                    runs.append(run)
                    let state = try await servers[(winner + 1) % servers.count].jobState(job: "gc", tenant: tenant)
                    #expect(state?.leaseHolder == "server\(winner)")
                    try await servers[winner].finishJob(run: run, job: "gc", tenant: tenant, holder: "server\(winner)",
                                                        started: now, ended: now.addingTimeInterval(1),
                                                        outcome: "ok", error: nil, failures: 0, nextDue: now)
                }
                #expect(try await servers[0].jobRuns(job: "gc", tenant: tenant).map(\.seq) == runs)
            }
        }
    }

    /// A lease whose holder stopped renewing is taken by another server after its expiry; the
    /// old holder, renewing or finishing late (at once with the new holder's renewals), never
    /// takes it back nor releases it.
    @Test func anExpiredLeaseTakenOverStaysWithItsNewHolder() async throws {
        guard let peer = try PostgresPeer.fromEnvironment() else { return }
        try await peer.withFreshSchema(servers: 2) { servers in
            let (old, new) = (servers[0], servers[1])
            let ttl: TimeInterval = 60
            for round in 0..<5 {
                let tenant = "t\(round)"
                let start = Self.t0
                let first = try #require(try await old.acquireJobLease(job: "copy-sync", tenant: tenant,
                                                                       holder: "old", now: start, ttl: ttl))
                #expect(try await new.acquireJobLease(job: "copy-sync", tenant: tenant, holder: "new",
                                                      now: start.addingTimeInterval(ttl - 1), ttl: ttl) == nil)
                let later = start.addingTimeInterval(ttl + 1)
                let second = try #require(try await new.acquireJobLease(job: "copy-sync", tenant: tenant,
                                                                        holder: "new", now: later, ttl: ttl))
                #expect(second != first)
                let (renewedOld, renewedNew) = try await withThrowingTaskGroup(of: (Bool?, Bool?).self) { group in
                    group.addTask {
                        let r = try await old.renewJobLease(job: "copy-sync", tenant: tenant, holder: "old",
                                                            now: later, ttl: ttl)
                        try await old.finishJob(run: first, job: "copy-sync", tenant: tenant, holder: "old",
                                                started: start, ended: later, outcome: "ok", error: nil,
                                                failures: 0, nextDue: later.addingTimeInterval(86400))
                        return (r, nil)
                    }
                    group.addTask {
                        (nil, try await new.renewJobLease(job: "copy-sync", tenant: tenant, holder: "new",
                                                          now: later, ttl: 2 * ttl))
                    }
                    var out: (Bool?, Bool?) = (nil, nil)
                    for try await r in group { out = (r.0 ?? out.0, r.1 ?? out.1) }
                    return out
                }
                #expect(renewedOld == false && renewedNew == true)
                let s = try await old.jobState(job: "copy-sync", tenant: tenant)
                #expect(s?.leaseHolder == "new" && s?.leaseExpires == later.addingTimeInterval(2 * ttl))
                #expect(s?.lastEnd == nil, "the old holder's late finish was recorded as the job's")
                // The new holder's finish releases it.
                try await new.finishJob(run: second, job: "copy-sync", tenant: tenant, holder: "new", started: later,
                                        ended: later.addingTimeInterval(5), outcome: "ok", error: nil, failures: 0,
                                        nextDue: later.addingTimeInterval(86400))
                let done = try await old.jobState(job: "copy-sync", tenant: tenant)
                #expect(done?.leaseHolder == nil && done?.lastEnd == later.addingTimeInterval(5))
            }
        }
    }
}

extension PostgresCatalogConcurrencyTests {
    /// Every server notices the same condition at once (a new alert, and again after it was
    /// resolved, and a one-off event): exactly one of them gets the event to send; then every
    /// server resolving it at once: exactly one "resolved" event.
    @Test func anAlertOpenedAtEveryServerAtOnceSendsOneEvent() async throws {
        guard let peer = try PostgresPeer.fromEnvironment() else { return }
        try await peer.withFreshSchema(servers: 4) { servers in
            func race(_ body: @escaping @Sendable (PostgresCatalog) async throws -> Wire.NotifyEvent?) async throws
                -> [Wire.NotifyEvent] {
                try await withThrowingTaskGroup(of: Wire.NotifyEvent?.self) { group in
                    for c in servers { group.addTask { try await body(c) } }
                    var out: [Wire.NotifyEvent] = []
                    for try await e in group { if let e { out.append(e) } }
                    return out
                }
            }
            for round in 0..<5 {
                let key = "host-stale/acme/web\(round)"
                for time in 0..<2 {
                    let now = Self.t0.addingTimeInterval(Double(time) * 3600)
                    let opened = try await race { c in
                        try await c.openAlert(key: key, kind: "host-stale", tenant: "acme", host: "web\(round)",
                                              summary: "no backup", command: "redoubt admin status", lasting: true,
                                              now: now)
                    }
                    #expect(opened.count == 1, "round \(round), time \(time): \(opened.count) open events")
                    let resolved = try await race { c in try await c.resolveAlert(key: key, now: now + 60) }
                    #expect(resolved.count == 1, "round \(round), time \(time): \(resolved.count) resolved events")
                }
                let once = try await race { c in
                    try await c.openAlert(key: "approval/r\(round)", kind: "approval-requested", tenant: "-",
                                          host: "-", summary: "r", command: "c", lasting: false, now: Self.t0)
                }
                #expect(once.count == 1 && once.first?.state == "once", "round \(round): \(once.count) one-offs")
            }
            #expect(try await servers[0].openAlerts().isEmpty)
        }
    }
}

/// A database that an older build made, with any prefix of the migrations, upgrades when a
/// server of this build opens it, and the repositories of the later migrations then work.
@Suite(.firstPassOnly) struct PostgresCatalogMigrationTests {
    @Test func aSchemaMadeByAnEarlierBuildUpgrades() async throws {
        guard let peer = try PostgresPeer.fromEnvironment() else { return }
        try await peer.withFreshSchema { c in
            let schema = try #require(try await c.rows("SELECT current_schema()").first?.decode(String.self))
            let all = PostgresCatalog.migrations.map(\.id)
            for done in 0..<all.count {
                // The schema as a build that knew only the first `done` migrations left it.
                for sql in ["DROP SCHEMA \(schema) CASCADE", "CREATE SCHEMA \(schema)",
                            "CREATE TABLE redoubt_migrations (id TEXT PRIMARY KEY, at TEXT)"] {
                    _ = try await c.rows(PostgresQuery(unsafeSQL: sql))
                }
                for m in PostgresCatalog.migrations.prefix(done) {
                    for statement in m.sql.split(separator: ";") where !statement.allSatisfy(\.isWhitespace) {
                        _ = try await c.rows(PostgresQuery(unsafeSQL: String(statement)))
                    }
                    _ = try await c.rows("INSERT INTO redoubt_migrations(id, at) VALUES (\(m.id), 'then')")
                }
                let upgraded = try await PostgresCatalog(configuration: peer.configuration(schema: schema))
                do {
                    let ids = try await upgraded.rows("SELECT id FROM redoubt_migrations ORDER BY id")
                        .map { try $0.decode(String.self) }
                    #expect(ids == all.sorted(), "after \(done) migrations")
                    #expect(try await upgraded.acquireJobLease(job: "gc", tenant: "acme", holder: "s", now: Self.t0,
                                                               ttl: 60) != nil)
                    #expect(try await upgraded.openAlert(key: "k", kind: "test", tenant: "-", host: "-", summary: "",
                                                         command: "", lasting: true, now: Self.t0) != nil)
                    #expect(try await upgraded.verdicts(snapshots: ["x"]).isEmpty)
                    #expect(try await upgraded.scrubSlice(tenant: "acme", now: Self.t0, period: 60,
                                                          interval: 60).isEmpty)
                    #expect(try await upgraded.findings(tenant: nil, since: nil).isEmpty)
                } catch {
                    await upgraded.shutdown()
                    throw error
                }
                await upgraded.shutdown()
            }
        }
    }

    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)
}

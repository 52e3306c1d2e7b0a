import Foundation
import RedoubtCore
@testable import RedoubtServer
import Testing

extension CatalogConformance {
    /// The checks of what the server's own operations keep: verdicts, job leases, the
    /// scrub's ledger, monitoring and alerts.
    func runOperations(_ check: Check, _ c: any CatalogRepositories) async throws {
        let t0 = Self.t0, day = Self.day
        switch check {
        case .verdictsRoundTripAndVolumesCountOnlyUnsharedPacks:
            // p1 only in s1 (new), p2 in s1 and s2 (shared), p3 without a chunk count.
            for (n, size) in [(1, 100), (2, 1000), (3, 10)] {
                try await c.insertPack(
                    tenant: "acme", id: Self.pack(n).description, key: Self.packKey("acme", Self.pack(n)),
                    size: size, retainUntil: t0, chunkIDs: [], now: t0, uploader: "w1", batch: 10, verified: false)
            }
            try await c.recordPackChunkCount(tenant: "acme", pack: Self.pack(1).description, chunks: 7)
            try await c.recordPackChunkCount(tenant: "acme", pack: Self.pack(2).description, chunks: 50)
            // The first count stays.
            try await c.recordPackChunkCount(tenant: "acme", pack: Self.pack(1).description, chunks: 999)
            try await c.insertSnapshot(Self.snapshot(1, committed: t0, retainUntil: t0, packs: 3),
                                       packs: [Self.pack(1), Self.pack(2), Self.pack(3)], requirePacks: true,
                                       manifestKey: nil)
            try await c.insertSnapshot(Self.snapshot(2, committed: t0.addingTimeInterval(1), retainUntil: t0,
                                                     packs: 1),
                                       packs: [Self.pack(2)], requirePacks: true, manifestKey: nil)
            let v1 = try await c.snapshotPackVolumes(tenant: "acme", snapshot: Self.snapshotID(1))
            #expect(v1.newBytes == 110 && v1.newChunks == 7 && v1.referencedBytes == 1110, "\(v1)")
            let v2 = try await c.snapshotPackVolumes(tenant: "acme", snapshot: Self.snapshotID(2))
            #expect(v2.newBytes == 0 && v2.newChunks == 0 && v2.referencedBytes == 1000, "\(v2)")
            // Another tenant's view of the same snapshot names no pack of its own.
            let other = try await c.snapshotPackVolumes(tenant: "beta", snapshot: Self.snapshotID(1))
            #expect(other.newBytes == 0 && other.newChunks == 0 && other.referencedBytes == 0)
            let none = try await c.snapshotPackVolumes(tenant: "acme", snapshot: Self.snapshotID(9))
            #expect(none.newBytes == 0 && none.referencedBytes == 0)

            // Refusals: only the actor's own `denied` records after the given one.
            for (actor, outcome) in [("w1", "denied"), ("w2", "denied"), ("w1", "ok"), ("w1", "denied")] {
                _ = try await c.audit(time: t0, actor: actor, role: "writer", credential: "fp", source: "-",
                                      action: "upload-pack", object: "x", outcome: outcome, detail: "")
            }
            #expect(try await c.refusals(actor: "w1", afterSeq: 0) == (2, 4))
            #expect(try await c.refusals(actor: "w1", afterSeq: 1) == (1, 4))
            #expect(try await c.refusals(actor: "w3", afterSeq: 0) == (0, 4))

            var signals = VerdictSignals()
            signals.files = 12
            signals.newBytes = 110
            signals.refused = 3
            func record(_ n: Int, host: String, at: TimeInterval, _ kind: SnapshotVerdict.Kind) -> VerdictRecord {
                VerdictRecord(snapshot: Self.snapshotID(n), tenant: "acme", host: host,
                              committedAt: t0.addingTimeInterval(at),
                              verdict: SnapshotVerdict(kind: kind, reasons: kind == .clean ? [] : ["why \(n)"]),
                              signals: signals, auditSeq: Int64(n))
            }
            let r1 = record(1, host: "web1", at: 0.25, .suspect), r2 = record(2, host: "web1", at: 10, .clean)
            let r3 = record(3, host: "web1", at: 10, .unknown), r4 = record(4, host: "web2", at: 5, .clean)
            for r in [r1, r2, r3, r4] { try await c.insertVerdict(r) }
            // One verdict per snapshot: a second scoring keeps the first.
            try await c.insertVerdict(record(1, host: "web1", at: 0.25, .clean))
            // Newest commit first, ties by snapshot descending; times exactly as stored.
            #expect(try await c.verdicts(tenant: "acme", host: "web1", limit: 10) == [r3, r2, r1])
            #expect(try await c.verdicts(tenant: "acme", host: "web1", limit: 2) == [r3, r2])
            #expect(try await c.verdicts(tenant: "beta", host: "web1", limit: 10).isEmpty)
            let byID = try await c.verdicts(snapshots: [Self.snapshotID(1), Self.snapshotID(4), Self.snapshotID(9)])
            #expect(byID == [Self.snapshotID(1): r1, Self.snapshotID(4): r4])
            #expect(try await c.verdicts(snapshots: []).isEmpty)
            try await c.clearVerdict(snapshot: Self.snapshotID(1), reasons: ["approved by alice"])
            let cleared = try await c.verdicts(snapshots: [Self.snapshotID(1)])[Self.snapshotID(1)]
            #expect(cleared?.verdict == SnapshotVerdict(kind: .clean, reasons: ["approved by alice"]))
            #expect(cleared?.signals == signals && cleared?.auditSeq == 1)

            // Settings: defaults until set, then what was set, per tenant.
            #expect(try await c.detectionSettings(tenant: "acme") == Wire.DetectionSettings())
            var s = Wire.DetectionSettings()
            s.baselineSnapshots = 9
            s.spreadFactor = 2.5
            try await c.setDetectionSettings(tenant: "acme", s)
            #expect(try await c.detectionSettings(tenant: "acme") == s)
            s.baselineSnapshots = 4
            try await c.setDetectionSettings(tenant: "acme", s)
            #expect(try await c.detectionSettings(tenant: "acme") == s)
            #expect(try await c.detectionSettings(tenant: "beta") == Wire.DetectionSettings())

        case .jobLeaseIsExclusiveAndKeepsLaterRequests:
            let ttl: TimeInterval = 600
            func at(_ s: TimeInterval) -> Date { t0.addingTimeInterval(s) }
            #expect(try await c.jobState(job: "gc", tenant: "acme") == nil)
            #expect(try await c.jobStates().isEmpty)
            // A job never run is due; while one run holds the lease nobody else gets one, its holder neither.
            let run1 = try #require(try await c.acquireJobLease(job: "gc", tenant: "acme", holder: "s1", now: t0,
                                                                 ttl: ttl))
            #expect(try await c.acquireJobLease(job: "gc", tenant: "acme", holder: "s2", now: at(1), ttl: ttl) == nil)
            #expect(try await c.acquireJobLease(job: "gc", tenant: "acme", holder: "s1", now: at(1), ttl: ttl) == nil)
            var s = try #require(try await c.jobState(job: "gc", tenant: "acme"))
            #expect(s.leaseHolder == "s1" && s.leaseExpires == at(ttl) && s.lastStart == t0 && s.requestedAt == nil)
            // Only the holder renews.
            #expect(try await !c.renewJobLease(job: "gc", tenant: "acme", holder: "s2", now: at(100), ttl: ttl))
            #expect(try await c.renewJobLease(job: "gc", tenant: "acme", holder: "s1", now: at(100), ttl: ttl))
            #expect(try await c.jobState(job: "gc", tenant: "acme")?.leaseExpires == at(100 + ttl))
            // A request made while the run holds the lease (the first one kept) survives its end.
            try await c.requestJobRun(job: "gc", tenant: "acme", at: at(200))
            try await c.requestJobRun(job: "gc", tenant: "acme", at: at(300))
            // A finish by a server that does not hold the lease releases nothing.
            try await c.finishJob(run: run1, job: "gc", tenant: "acme", holder: "s2", started: t0, ended: at(350),
                                  outcome: "ok", error: nil, failures: 0, nextDue: at(day))
            s = try #require(try await c.jobState(job: "gc", tenant: "acme"))
            #expect(s.leaseHolder == "s1" && s.lastEnd == nil && s.nextDue == nil)
            try await c.finishJob(run: run1, job: "gc", tenant: "acme", holder: "s1", started: t0, ended: at(400),
                                  outcome: "ok", error: nil, failures: 0, nextDue: at(day))
            s = try #require(try await c.jobState(job: "gc", tenant: "acme"))
            #expect(s.leaseHolder == nil && s.leaseExpires == nil && s.lastEnd == at(400) && s.lastOutcome == "ok")
            #expect(s.nextDue == at(day) && s.requestedAt == at(200), "the request made during the run was lost")
            // Not due until nextDue, but the request makes it due now, and is taken up.
            let run2 = try #require(try await c.acquireJobLease(job: "gc", tenant: "acme", holder: "s2", now: at(500),
                                                                 ttl: ttl))
            #expect(run2 > run1)
            #expect(try await c.jobState(job: "gc", tenant: "acme")?.requestedAt == nil)
            try await c.finishJob(run: run2, job: "gc", tenant: "acme", holder: "s2", started: at(500), ended: at(510),
                                  outcome: "error", error: "boom", failures: 1, nextDue: at(560))
            s = try #require(try await c.jobState(job: "gc", tenant: "acme"))
            #expect(s.failures == 1 && s.lastError == "boom" && s.lastOutcome == "error" && s.requestedAt == nil)
            #expect(try await c.acquireJobLease(job: "gc", tenant: "acme", holder: "s1", now: at(559), ttl: 60) == nil,
                    "a job taken before it is due")
            let run3 = try #require(try await c.acquireJobLease(job: "gc", tenant: "acme", holder: "s1", now: at(560),
                                                                 ttl: 60))
            // Expired: another server takes it, and the old holder can neither renew nor release it.
            #expect(try await c.acquireJobLease(job: "gc", tenant: "acme", holder: "s2", now: at(619), ttl: 60) == nil)
            let run4 = try #require(try await c.acquireJobLease(job: "gc", tenant: "acme", holder: "s2", now: at(700),
                                                                 ttl: 60))
            #expect(try await !c.renewJobLease(job: "gc", tenant: "acme", holder: "s1", now: at(701), ttl: 60))
            try await c.finishJob(run: run3, job: "gc", tenant: "acme", holder: "s1", started: at(560),
                                  ended: at(702), outcome: "ok", error: nil, failures: 0, nextDue: at(day))
            s = try #require(try await c.jobState(job: "gc", tenant: "acme"))
            #expect(s.leaseHolder == "s2" && s.leaseExpires == at(760) && s.lastOutcome == "error")
            // A request for a job never run makes its row, and is taken up by the first run.
            try await c.requestJobRun(job: "scrub", tenant: "beta", at: t0)
            #expect(try await c.jobState(job: "scrub", tenant: "beta")?.requestedAt == t0)
            let run5 = try #require(try await c.acquireJobLease(job: "scrub", tenant: "beta", holder: "s1",
                                                                 now: at(10), ttl: ttl))
            #expect(try await c.jobState(job: "scrub", tenant: "beta")?.requestedAt == nil)
            #expect(try await c.jobStates().map { "\($0.tenant)/\($0.job)" } == ["acme/gc", "beta/scrub"])
            let runs = try await c.jobRuns(job: nil, tenant: nil)
            #expect(runs.map(\.seq) == [run1, run2, run3, run4, run5])
            #expect(runs.map(\.holder) == ["s1", "s2", "s1", "s2", "s1"])
            #expect(runs.map(\.startedAt) == [t0, at(500), at(560), at(700), at(10)])
            #expect(runs[0].endedAt == at(400) && runs[0].outcome == "ok" && runs[0].error == nil)
            #expect(runs[1].outcome == "error" && runs[1].error == "boom" && runs[3].endedAt == nil)
            #expect(try await c.jobRuns(job: "gc", tenant: nil).map(\.seq) == [run1, run2, run3, run4])
            #expect(try await c.jobRuns(job: nil, tenant: "beta").map(\.seq) == [run5])
            #expect(try await c.jobRuns(job: "scrub", tenant: "acme").isEmpty)
            // The history keeps 90 days of runs.
            try await c.finishJob(run: run4, job: "gc", tenant: "acme", holder: "s2", started: at(700),
                                  ended: at(90 * day + 600), outcome: "ok", error: nil, failures: 0, nextDue: at(day))
            #expect(try await c.jobRuns(job: nil, tenant: nil).map(\.seq) == [run4])

        default:
            Issue.record("\(check) is not an operations check")
        }
    }
}

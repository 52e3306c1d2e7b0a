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
            // p1 only in s1 (new), p2 in s1 and s2 (shared), p3 without a chunk count (recorded
            // without an upload, as a catalog rebuild records it). p1's 7 chunk IDs go in two
            // batches; the count is the pack's, not the first batch's.
            for (n, size, chunks) in [(1, 100, 7), (2, 1000, 50), (3, 10, 5)] {
                try await c.insertPack(
                    tenant: "acme", id: Self.pack(n).description, key: Self.packKey("acme", Self.pack(n)),
                    size: size, retainUntil: t0, chunkIDs: (1...chunks).map { Self.chunk(100 * n + $0) }, now: t0,
                    uploader: "w1", batch: 4, verified: false, uploadedBy: n == 3 ? nil : "web1")
            }
            // The first count stays when the pack is recorded again.
            try await c.insertPack(
                tenant: "acme", id: Self.pack(1).description, key: Self.packKey("acme", Self.pack(1)), size: 100,
                retainUntil: t0, chunkIDs: (1...9).map(Self.chunk), now: t0, uploader: "w2", batch: 4,
                verified: false, uploadedBy: "web2")
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

        case .alertsOpenOnceAndResolveOnce:
            func at(_ s: TimeInterval) -> Date { t0.addingTimeInterval(s) }
            func open(_ key: String, _ summary: String = "s", lasting: Bool = true,
                      now: Date) async throws -> Wire.NotifyEvent? {
                try await c.openAlert(key: key, kind: "host-stale", tenant: "acme", host: "web1", summary: summary,
                                      command: "redoubt admin status", lasting: lasting, now: now)
            }
            #expect(try await c.openAlerts().isEmpty)
            let e1 = try #require(try await open("stale/web1", now: at(0.5)))
            #expect(e1.state == "open" && e1.openedAt == at(0.5) && e1.resolvedAt == nil && e1.kind == "host-stale")
            #expect(e1.tenant == "acme" && e1.host == "web1" && e1.command == "redoubt admin status")
            // Open already: one message while it lasts.
            #expect(try await open("stale/web1", "again", now: at(1)) == nil)
            let listed = try await c.openAlerts()
            #expect(listed.map(\.key) == ["stale/web1"] && listed.first?.event.id == "stale/web1")
            #expect(listed.first?.event.openedAt == at(0.5) && listed.first?.event.summary == "s")
            // Resolved once.
            let r = try #require(try await c.resolveAlert(key: "stale/web1", now: at(10)))
            #expect(r.state == "resolved" && r.openedAt == at(0.5) && r.resolvedAt == at(10) && r.summary == "s")
            #expect(r.id != e1.id)
            #expect(try await c.resolveAlert(key: "stale/web1", now: at(11)) == nil)
            #expect(try await c.resolveAlert(key: "nope", now: at(11)) == nil)
            #expect(try await c.openAlerts().isEmpty)
            // The condition again: a new message.
            let e2 = try #require(try await open("stale/web1", "s2", now: at(20.25)))
            #expect(e2.id != e1.id && e2.openedAt == at(20.25) && e2.summary == "s2")
            // A one-off is sent once, ever, and never listed as open.
            #expect(try await open("approval/r1", lasting: false, now: at(5))?.state == "once")
            #expect(try await open("approval/r1", lasting: false, now: at(30)) == nil)
            #expect(try await c.resolveAlert(key: "approval/r1", now: at(32)) == nil)
            // Oldest first, ties by key.
            _ = try await open("copy/t1", now: at(20.25))
            _ = try await open("z/older", now: at(15))
            let keys = try await c.openAlerts().map(\.key)
            #expect(keys == ["z/older", "copy/t1", "stale/web1"])
            #expect(try await c.openAlerts().last?.event.summary == "s2")

            // Notification channels: listed by creation, then ID; removed once.
            let hook = Wire.AddNotifyChannelRequest(kind: "webhook", url: "https://hooks.example/x",
                                                    secretFile: "/etc/redoubt/hook",
                                                    events: ["host-stale", "job-failed"], tenant: "acme")
            try await c.insertNotifyChannel(id: "b", hook, target: "https://hooks.example/x", now: at(1))
            try await c.insertNotifyChannel(id: "a", Wire.AddNotifyChannelRequest(kind: "email", to: ["o@x"]),
                                            target: "o@x", now: at(1))
            try await c.insertNotifyChannel(id: "c", Wire.AddNotifyChannelRequest(kind: "journal"), target: "-",
                                            now: t0)
            var channels = try await c.notifyChannels()
            #expect(channels.map(\.info.id) == ["c", "a", "b"])
            #expect(channels[2].info == Wire.NotifyChannelInfo(id: "b", kind: "webhook",
                                                               target: "https://hooks.example/x",
                                                               events: ["host-stale", "job-failed"], tenant: "acme",
                                                               createdAt: at(1)))
            #expect(channels[2].config.secretFile == "/etc/redoubt/hook" && channels[1].config.to == ["o@x"])
            #expect(channels[0].info.events == [] && channels[0].info.tenant == nil)
            #expect(try await c.removeNotifyChannel("a"))
            #expect(try await !c.removeNotifyChannel("a"))
            channels = try await c.notifyChannels()
            #expect(channels.map(\.info.id) == ["c", "b"])

        case .monitoringFactsMatchWhatTheCatalogHolds:
            func at(_ s: TimeInterval) -> Date { t0.addingTimeInterval(s) }
            #expect(try await c.monitoringFacts(now: t0) == MonitoringFacts())
            try await c.insertTenant(Self.tenant("acme"))
            try await c.insertTenant(Self.tenant("beta"))
            func writer(_ id: String, _ tenant: String, _ name: String) -> Principal {
                Principal(id: id, role: .writer, tenant: tenant, name: name, fingerprint: "fp-\(id)", hostKey: nil)
            }
            // A revoked writer of the same name does not date the host's enrolment.
            try await c.insertPrincipal(writer("old", "acme", "web1"), os: nil, now: at(-100))
            _ = try await c.revokePrincipal(id: "old", now: at(-50))
            try await c.insertPrincipal(writer("w1", "acme", "web1"), os: nil, now: t0)
            try await c.insertPrincipal(writer("w2", "acme", "web2"), os: nil, now: at(5))
            try await c.insertPrincipal(writer("w3", "beta", "web1"), os: nil, now: at(6))
            try await c.insertPrincipal(Self.admin("alice"), os: nil, now: t0)
            try await c.setExpectedInterval(principalID: "w2", seconds: 3600)
            try await c.setExpectedInterval(principalID: "w3", seconds: 60)
            for (n, host, commit, retain, total, uploaded) in [(1, "web1", 10.0, day, 1000, 100),
                                                               (2, "web1", 20.0, 2 * day, 2000, 50),
                                                               (3, "ghost", 30.0, 3 * day, 5, 5)] {
                var stats = SnapshotStatistics()
                stats.bytesTotal = UInt64(total)
                stats.bytesUploaded = UInt64(uploaded)
                try await c.insertSnapshot(SnapshotRecord(
                    id: Self.snapshotID(n), tenant: "acme", host: host, time: at(commit), committedAt: at(commit),
                    retainUntil: at(retain), paths: ["/srv"], tags: [], statistics: stats, packCount: 0,
                    manifestSize: 100), packs: [], requirePacks: false, manifestKey: nil)
            }
            // An admin's expectation replaces the host's claim; one for a host never seen still shows.
            try await c.setHostExpectation(tenant: "acme", host: "web2", interval: 7200)
            try await c.setHostExpectation(tenant: "acme", host: "never", interval: 60)
            try await c.setHostExpectation(tenant: "beta", host: "web1", interval: 100)
            try await c.setHostExpectation(tenant: "beta", host: "web1", interval: nil)
            for (n, tenant, size) in [(1, "acme", 100), (2, "acme", 200), (3, "beta", 7)] {
                try await c.insertPack(
                    tenant: tenant, id: Self.pack(n).description, key: Self.packKey(tenant, Self.pack(n)), size: size,
                    retainUntil: t0, chunkIDs: [], now: t0, uploader: "w1", batch: 10, verified: false)
            }
            _ = try await c.recordDamagedPack(tenant: "acme", pack: Self.pack(1).description, reporter: "r1",
                                              problem: "short read", now: t0)
            try await c.insertHold(LegalHold(id: "h1", kind: .tenant, target: "acme", tenant: "acme", reason: "case",
                                             createdBy: "alice", createdAt: t0, releasedAt: nil, releaseRequest: nil))
            try await c.insertHold(LegalHold(id: "h2", kind: .snapshot, target: Self.snapshotID(1), tenant: "acme",
                                             reason: "case", createdBy: "alice", createdAt: t0, releasedAt: nil,
                                             releaseRequest: nil))
            #expect(try await c.releaseHold("h2", at: t0, request: nil))
            let records: [(String, String, String, String)] = [
                ("gc", "tenant acme", "ok", "snapshots=1 packs=2 bytes=4096"), ("gc", "tenant acme", "ok", "bytes=100"),
                ("verify", "snapshot x", "error", ""), ("verify", "snapshot y", "ok", ""), ("list", "-", "error", ""),
                ("copy-sync", "copy t1", "partial", ""), ("copy-proof", "copy t2", "error", ""),
            ]
            for (action, object, outcome, detail) in records {
                _ = try await c.audit(time: t0, actor: "server", role: "admin", credential: "-", source: "local",
                                      action: action, object: object, outcome: outcome, detail: detail)
            }
            for (id, tenant, created) in [("t1", "acme", 0.0), ("t2", "beta", 1)] {
                try await c.insertCopyTarget(CopyTarget(info: Wire.CopyTargetInfo(
                    id: id, tenant: tenant, url: "s3://b/\(id)", endpoint: "https://s3.example", region: "eu-1",
                    marginSeconds: day, acceptUnenforced: false, createdAt: at(created), lastProofAt: t0,
                    lastProofOK: true,
                    lastProofDetail: "ok", lastSyncAt: nil, lastSyncOK: nil, lastSyncDetail: nil),
                    credentialsFile: nil, virtualHosted: false))
            }
            try await c.recordCopySync("t1", at: at(15), ok: true, detail: "synced")
            try await c.insertRequest(id: "r1", action: "add-admin", object: "admin bob", parameters: [:],
                                      requester: Self.admin("alice"), now: at(1), expiresAt: at(day), needed: 1)

            let f = try await c.monitoringFacts(now: at(2))
            typealias Host = MonitoringFacts.Host
            #expect(f.hosts == [
                Host(tenant: "acme", host: "ghost", snapshots: 1, lastCommit: at(30), enrolledAt: nil,
                     expectedInterval: nil),
                Host(tenant: "acme", host: "never", snapshots: 0, lastCommit: nil, enrolledAt: nil,
                     expectedInterval: 60),
                Host(tenant: "acme", host: "web1", snapshots: 2, lastCommit: at(20), enrolledAt: t0,
                     expectedInterval: nil),
                Host(tenant: "acme", host: "web2", snapshots: 0, lastCommit: nil, enrolledAt: at(5),
                     expectedInterval: 7200),
                Host(tenant: "beta", host: "web1", snapshots: 0, lastCommit: nil, enrolledAt: at(6),
                     expectedInterval: 60),
            ])
            #expect(f.tenants == [
                MonitoringFacts.Tenant(tenant: "acme", snapshots: 3, logicalBytes: 3005, storedBytes: 300,
                                       newBytes: 155, earliestLockEnd: at(day), damagedPacks: 1, activeHolds: 1),
                MonitoringFacts.Tenant(tenant: "beta", snapshots: 0, logicalBytes: 0, storedBytes: 7, newBytes: 0,
                                       earliestLockEnd: nil, damagedPacks: 0, activeHolds: 0),
            ])
            #expect(f.copyTargets == [
                MonitoringFacts.CopyTargetFacts(id: "t1", tenant: "acme", lastSyncAt: at(15), lastSyncOK: true,
                                                lastProofAt: t0, lastProofOK: true, unsyncedSnapshots: 2),
                MonitoringFacts.CopyTargetFacts(id: "t2", tenant: "beta", lastSyncAt: nil, lastSyncOK: nil,
                                                lastProofAt: t0, lastProofOK: true, unsyncedSnapshots: 0),
            ])
            #expect(f.outcomes.map { "\($0.action)/\($0.outcome)=\($0.count)" }
                    == ["copy-proof/error=1", "copy-sync/partial=1", "gc/ok=2", "verify/error=1", "verify/ok=1"])
            #expect(f.gcBytesFreed == 4196 && f.auditRecords == 7)
            #expect(f.pendingApprovals.map(\.id) == ["r1"] && f.pendingApprovals.first?.createdAt == at(1))
            #expect(f.pendingApprovals.first?.action == "add-admin")
            // Failed checks and jobs after a record, oldest first (not other actions' errors).
            let failed = try await c.failedJobRecords(after: 0)
            #expect(failed.map { "\($0.seq) \($0.action) \($0.object) \($0.outcome)" }
                    == ["3 verify snapshot x error", "6 copy-sync copy t1 partial", "7 copy-proof copy t2 error"])
            #expect(try await c.failedJobRecords(after: 3).map(\.seq) == [6, 7])
            #expect(try await c.failedJobRecords(after: 7).isEmpty)

        case .scrubSliceCoversEveryPackWithinThePeriod:
            func at(_ days: Double, _ seconds: TimeInterval = 0) -> Date { t0.addingTimeInterval(days * day + seconds) }
            let period = 6 * day, interval = day
            #expect(try await c.scrubSlice(tenant: "acme", now: t0, period: period, interval: interval).isEmpty)
            for n in 1...6 {
                try await c.insertPack(
                    tenant: "acme", id: Self.pack(n).description, key: Self.packKey("acme", Self.pack(n)),
                    size: 10 * n, retainUntil: t0, chunkIDs: [], now: at(0, Double(n)), uploader: "w1", batch: 10,
                    verified: false)
            }
            // Another tenant's packs, the same upload time: ties are taken by ID.
            for n in [8, 7] {
                try await c.insertPack(
                    tenant: "beta", id: Self.pack(n).description, key: Self.packKey("beta", Self.pack(n)),
                    size: 1, retainUntil: t0, chunkIDs: [], now: t0, uploader: "w9", batch: 10, verified: false)
            }
            func slice(_ tenant: String, _ now: Date, period: TimeInterval = 6 * day) async throws
                -> [String] {
                try await c.scrubSlice(tenant: tenant, now: now, period: period, interval: interval).map(\.id)
            }
            let p = (0...8).map { Self.pack($0).description }
            // Run every interval: a sixth of the packs each time, the one checked longest ago first (an
            // upload counts as a check), and on the sixth day also the one that would pass the period.
            for k in 1...6 {
                let now = at(Double(k))
                let s = try await c.scrubSlice(tenant: "acme", now: now, period: period, interval: interval)
                #expect(s.map(\.id) == (k == 6 ? [p[6], p[1]] : [p[k]]), "day \(k)")
                #expect(s.map(\.size) == (k == 6 ? [60, 10] : [Int64(10 * k)]), "day \(k)")
                for x in s { try await c.recordScrub(tenant: "acme", pack: x.id, result: "ok", at: now) }
            }
            // After a pause, every pack whose next check would come too late, at the mark itself too.
            #expect(try await slice("acme", at(8)) == [p[2], p[3]])
            #expect(try await slice("acme", at(12)) == [p[2], p[3], p[4], p[5], p[1], p[6]])
            // A later scrub replaces the earlier one.
            try await c.recordScrub(tenant: "acme", pack: p[2], result: "damaged", at: at(7))
            #expect(try await slice("acme", at(8)) == [p[3]])
            #expect(try await slice("beta", at(0.5), period: 2 * day) == [p[7]])
            // An interval as long as the period re-reads all of them.
            #expect(try await slice("beta", at(1), period: day) == [p[7], p[8]])
            #expect(try await slice("gamma", at(1)).isEmpty)

        default:
            Issue.record("\(check) is not an operations check")
        }
    }
}

import Foundation
import Testing
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer

/// Retention policies over weeks of server time, driven through the service with the manual
/// clock (test certificates are short-lived, so no HTTP once the clock moves): a decoy flood
/// and back-dated client times take nothing from earlier kept snapshots; two months of daily
/// backups from three hosts across a month and a year boundary keep exactly what the
/// schedule says, locked until the rules' ends, and GC removes the rest.
@Suite(.serialized) struct RetentionCalendarTests {
    struct World {
        let server: TestServer
        let keys: TenantKeys
        var hosts: [(cfg: ClientConfig, ctx: CallContext)] = []
        let admin: CallContext
    }

    static let day: TimeInterval = 86400

    func world(hosts names: [String], minRetention: TimeInterval = 86400) async throws -> World {
        let server = try await TestServer.start(minRetention: minRetention, inMemory: true)
        let keys = try TenantKeys.generate()
        try await server.createTenant("acme", keys: keys)
        let principals = { try await server.service.catalog.principals(tenant: nil) }
        let admin = try #require(try await principals().first { $0.role == .admin })
        var w = World(server: server, keys: keys, admin: CallContext(principal: admin, source: "test"))
        for n in names {
            let (cfg, client) = try await server.enroll(tenant: "acme", role: "writer", name: n)
            await client.shutdown()
            let p = try #require(try await principals().first { $0.name == n && $0.role == .writer })
            w.hosts.append((cfg, CallContext(principal: p, source: "test")))
        }
        return w
    }

    /// One tiny snapshot committed through the service: its ID and its file's bytes.
    func commit(_ w: World, host: Int, time: Date? = nil) async throws -> (id: String, data: [UInt8]) {
        let data = (0..<64).map { _ in UInt8.random(in: 0...255) }
        let claimed = Int64((time ?? w.server.clock.now()).timeIntervalSince1970)
        let (packs, manifest) = try makeSnapshot(keys: try w.hosts[host].cfg.writeKeySet(), files: [("f.bin", data)],
            time: claimed)
        for p in packs {
            _ = try await w.server.service.uploadPack(idHex: p.id.description, bytes: p.bytes, ctx: w.hosts[host].ctx)
        }
        return (try await w.server.service.commit(manifest.bytes, ctx: w.hosts[host].ctx).id, data)
    }

    /// Restores `f.bin` of snapshot `id` from the store and returns its bytes.
    func restore(_ w: World, _ id: String) async throws -> [UInt8] {
        let sid = try #require(SnapshotID(hex: id))
        let store = w.server.service.store
        let m = try Manifest.parse(try await store.get(RepositoryService.manifestKey(tenant: "acme", id: sid)),
            expectedID: sid)
        var packs: [PackID: [UInt8]] = [:]
        for p in m.header.packs { packs[p] = try await store.get(RepositoryService.packKey(tenant: "acme", id: p)) }
        let reader = try SnapshotReader(manifest: m, readKey: w.keys.readKey, chunkIDKey: w.keys.chunkIDKey) {
            packs[$0]!
        }
        return try reader.contents(of: try #require(try reader.rootTree()[Array("f.bin".utf8)]))
    }

    func utc(_ y: Int, _ m: Int, _ d: Int, _ h: Int = 0) throws -> Date {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = try #require(TimeZone(identifier: "UTC"))
        return try #require(cal.date(from: DateComponents(year: y, month: m, day: d, hour: h)))
    }

    @Test func aDecoyFloodAndBackDatedTimesTakeNothingFromEarlierKeptSnapshots() async throws {
        let w = try await world(hosts: ["web1"])
        do {
            let now0 = w.server.clock.now().timeIntervalSince1970
            let midnight = Date(timeIntervalSince1970: (now0 / Self.day).rounded(.up) * Self.day)
            // A Sunday: the ten days then span three ISO weeks, so on day 10 the rules keep six
            // daily snapshots (today's period is empty) and one weekly (day 0). Started on
            // another weekday the weeks fall differently, and the count with them.
            var utc = Calendar(identifier: .gregorian)
            utc.timeZone = try #require(TimeZone(identifier: "UTC"))
            let toSunday = (8 - utc.component(.weekday, from: midnight)) % 7
            let t0 = midnight.addingTimeInterval(Double(toSunday) * Self.day)
            _ = try await w.server.service.setPolicy(tenant: "acme",
                Wire.SetPolicyRequest(rules: RetentionRules(daily: 7, weekly: 4)),
                                                     ctx: w.admin)
            var earlier: [(id: String, data: [UInt8])] = []
            for i in 0..<10 {
                w.server.clock.set(t0.addingTimeInterval(Double(i) * Self.day + 12 * 3600))
                earlier.append(try await commit(w, host: 0))
            }
            // Day 10: the locks the policy has set on the ten earlier days.
            w.server.clock.set(t0.addingTimeInterval(10 * Self.day + 3600))
            _ = try await w.server.service.applyPolicies(tenant: "acme", host: nil)
            var before: [String: Date] = [:]
            for s in earlier {
                before[s.id] = try #require(try await w.server.service.catalog.snapshot(id: s.id)).retainUntil
            }
            let keptBefore =
                try await w.server.service.simulatePolicies(tenant: "acme").snapshots
                    .filter { !$0.keeps.isEmpty }.map(\.id)
            #expect(keptBefore.count >= 7, "\(keptBefore)")

            // A taken host: a flood of decoys today, some claiming the past as far as the server lets it.
            var decoys: [String] = []
            for i in 0..<300 {
                w.server.clock.set(t0.addingTimeInterval(10 * Self.day + 3600 + Double(i)))
                let claimed = i % 3 == 0 ? w.server.clock.now().addingTimeInterval(-Self.day + 60) : nil
                decoys.append(try await commit(w, host: 0, time: claimed).id)
            }
            // Years back is refused outright: the server keeps the calendar.
            do {
                _ = try await commit(w, host: 0, time: w.server.clock.now().addingTimeInterval(-3 * 365 * Self.day))
                Issue.record("a snapshot claiming three years ago was committed")
            } catch let e as ServerError {
                #expect(e.code == "E_CLOCK", "\(e)")
            }
            let sim = try await w.server.service.simulatePolicies(tenant: "acme")
            let decided = Dictionary(uniqueKeysWithValues: sim.snapshots.map { ($0.id, $0) })
            // Every earlier kept snapshot is still kept, and no lock moved earlier.
            for id in keptBefore {
                #expect(decided[id]?.keeps.isEmpty == false, "\(id) no longer kept after the flood")
            }
            for s in earlier {
                let now = try #require(try await w.server.service.catalog.snapshot(id: s.id)).retainUntil
                #expect(now >= before[s.id]!, "\(s.id): lock \(before[s.id]!) moved to \(now)")
                for p in try await w.server.service.catalog.snapshotPacks(id: s.id) {
                    #expect(try #require(try await w.server.service.catalog.pack(tenant: "acme",
                        id: p.description)).retainUntil
                            >= Date(timeIntervalSince1970: (before[s.id]!.timeIntervalSince1970 / Self.day)
                                .rounded(.down) * Self.day))
                }
            }
            // The decoys share today's one slot, whose period is still running: none is locked
            // beyond the minimum retention, and only the newest is kept at all.
            let keptDecoys = decoys.filter { decided[$0]?.keeps.isEmpty == false }
            #expect(keptDecoys == [decoys.last!], "\(keptDecoys.count) decoys kept")
            for id in decoys {
                let s = try #require(try await w.server.service.catalog.snapshot(id: id))
                #expect(s.retainUntil == s.committedAt.addingTimeInterval(Self.day),
                    "decoy \(id) locked until \(s.retainUntil)")
            }
            // And the earlier ones restore bit for bit.
            for s in earlier where keptBefore.contains(s.id) {
                #expect(try await restore(w, s.id) == s.data, "\(s.id)")
            }
        } catch {
            Issue.record(error)
        }
        await w.server.stop()
    }

    /// The README's figure: one host, one backup a day for nine years, the README's policy set
    /// at the end, and the server's own simulation (what `redoubt admin policy simulate` asks) on 5 December.
    /// The simulation reads only the catalog's commit times: the records go in directly, which
    /// keeps nine years of backups to a second (one real commit first, so the host exists).
    @Test func theReadmePolicyKeeps46SnapshotsPerHostWithDailyBackups() async throws {
        let w = try await world(hosts: ["web1"])
        do {
            let start = w.server.clock.now()
            let thisYear =
                Calendar(identifier: .gregorian).dateComponents(in: try #require(TimeZone(identifier: "UTC")),
                                                                          from: start).year ?? 2026
            let t0 = try utc(thisYear + 1, 1, 1)
            let end = try utc(thisYear + 9, 12, 5, 18)
            var t = t0.addingTimeInterval(12 * 3600)
            var n = 0
            w.server.clock.set(t)
            _ = try await commit(w, host: 0)
            n += 1
            t = t.addingTimeInterval(Self.day)
            while t < end {
                let id = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
                try await w.server.service.catalog.insertSnapshot(SnapshotRecord(
                    id: id, tenant: "acme", host: "web1", time: t, committedAt: t,
                        retainUntil: t.addingTimeInterval(Self.day),
                    paths: [], tags: [], statistics: SnapshotStatistics(), packCount: 0, manifestSize: 0), packs: [])
                t = t.addingTimeInterval(Self.day)
                n += 1
            }
            w.server.clock.set(end)
            // Into the catalog directly: setting it through the service would apply it, and these
            // records have no manifests in the store to lock.
            #expect(try await w.server.service.catalog.setPolicy(Wire.PolicyInfo(
                tenant: "acme", hostGlob: "*", tag: "", rules: RetentionRules(daily: 14, weekly: 8, monthly: 24,
                    yearly: 7),
                updatedAt: end), from: nil))
            let sim = try await w.server.service.simulatePolicies(tenant: "acme")
            var byRule: [String: Int] = [:]
            for s in sim.snapshots { for k in s.keeps { byRule[k.rule, default: 0] += 1 } }
            print("""
                README figure: \(n) daily snapshots, \(sim.kept) kept on \(end): \(byRule.sorted { $0.key < $1.key })
                """)
            // The same rules counted by hand on the calendar (a backup every day at noon): how
            // many overlap depends on the weekdays month ends fall on, so the year matters.
            var cal = Calendar(identifier: .iso8601)
            cal.timeZone = try #require(TimeZone(identifier: "UTC"))
            let today = cal.startOfDay(for: end)
            var kept = Set<Date>()
            for d in 0..<14 { kept.insert(try #require(cal.date(byAdding: .day, value: -d, to: today))) }
            for (unit, count) in [(Calendar.Component.weekOfYear, 8), (.month, 24), (.year, 7)] {
                kept.insert(today)
                for back in 1..<count {
                    let inPeriod = try #require(cal.date(byAdding: unit, value: -back, to: today))
                    let period = try #require(cal.dateInterval(of: unit, for: inPeriod))
                    kept.insert(try #require(cal.date(byAdding: .day, value: -1, to: period.end)))
                }
            }
            #expect(sim.kept == kept.count, "\(sim.kept) kept, \(kept.count) by hand")
            #expect((45...46).contains(sim.kept), "the README's figure")
        } catch {
            Issue.record(error)
        }
        await w.server.stop()
    }

    @Test func twoMonthsOfDailyBackupsFromThreeHostsKeepExactlyWhatTheScheduleSays() async throws {
        let w = try await world(hosts: ["web1", "web2", "db1"])
        do {
            let rules = RetentionRules(daily: 14, weekly: 8, monthly: 24, yearly: 7)
            _ = try await w.server.service.setPolicy(tenant: "acme", Wire.SetPolicyRequest(rules: rules), ctx: w.admin)
            // From the next 1 December (UTC) after enrollment, whatever day the test runs: across
            // a month end and the new year.
            let start = w.server.clock.now()
            let thisYear =
                Calendar(identifier: .gregorian).dateComponents(in: try #require(TimeZone(identifier: "UTC")),
                                                                          from: start).year ?? 2026
            let t0 = try utc(thisYear, 12, 1) > start ? try utc(thisYear, 12, 1) : try utc(thisYear + 1, 12, 1)
            let days = 75
            var data: [String: [UInt8]] = [:]
            var byDay: [[String]] = []
            for d in 0..<days {
                w.server.clock.set(t0.addingTimeInterval(Double(d) * Self.day + 12 * 3600))
                var today: [String] = []
                for h in 0..<3 {
                    let s = try await commit(w, host: h)
                    data[s.id] = s.data
                    today.append(s.id)
                }
                byDay.append(today)
            }
            let now = t0.addingTimeInterval(Double(days - 1) * Self.day + 18 * 3600)
            w.server.clock.set(now)
            _ = try await w.server.service.applyPolicies(tenant: "acme", host: nil)

            // The pure schedule's answer on the catalog's commit times.
            let snaps = try await w.server.service.catalog.snapshots(tenant: "acme", host: nil)
            #expect(snaps.count == 3 * days)
            let schedule = try #require(RetentionSchedule(rules: rules, minimumRetention: Self.day))
            let decisions = schedule.decide(snaps.map { RetentionCandidate(id: $0.id, host: $0.host,
                committedAt: $0.committedAt) },
                                            now: now)
            let expectedKept = Set(decisions.filter { !$0.keeps.isEmpty }.map(\.id))
            let sim = try await w.server.service.simulatePolicies(tenant: "acme")
            #expect(Set(sim.snapshots.filter { !$0.keeps.isEmpty }.map(\.id)) == expectedKept)

            // The listing shows the same rules for each snapshot.
            let listed = try await w.server.service.listSnapshots(host: nil, tenant: "acme", ctx: w.admin)
            let keptBy = Dictionary(uniqueKeysWithValues: listed.map { ($0.id, $0.keptBy) })
            for d in sim.snapshots {
                #expect(keptBy[d.id] == .some(d.keeps),
                    "\(d.id): listed \(String(describing: keptBy[d.id])) vs \(d.keeps)")
            }
            #expect(expectedKept.count < 3 * days / 2, "\(expectedKept.count) of \(3 * days) kept")

            // By hand, per host: the last 14 days; the newest of each month (last day of each
            // ended month); the newest of each ISO week of the last 8 (Sundays).
            var cal = Calendar(identifier: .gregorian)
            cal.timeZone = try #require(TimeZone(identifier: "UTC"))
            cal.firstWeekday = 2
            cal.minimumDaysInFirstWeek = 4
            let dayOf = { (d: Int) in t0.addingTimeInterval(Double(d) * Self.day + 12 * 3600) }
            let nowWeek = try #require(cal.dateInterval(of: .weekOfYear, for: now)).start
            var hand = Set<String>()
            for d in 0..<days {
                let t = dayOf(d)
                let lastOfMonth = cal.component(.month, from: t) != cal.component(.month, from: dayOf(d + 1))
                    || d == days - 1
                let lastOfWeek = cal.component(.weekday, from: t) == 1 || d == days - 1
                let weekStart = try #require(cal.dateInterval(of: .weekOfYear, for: t)).start
                let inLast8Weeks = weekStart > nowWeek.addingTimeInterval(-8 * 7 * Self.day)
                if d >= days - 14 || lastOfMonth || (lastOfWeek && inLast8Weeks) { hand.formUnion(byDay[d]) }
            }
            #expect(hand == expectedKept, "by hand \(hand.count), schedule \(expectedKept.count)")

            // Locks: the catalog holds each final rule's end; hand-computed ends for the year's
            // last snapshot (yearly: 7 years from its year's start) and a month's last (24 months).
            var locks: [String: Date] = [:]
            for r in try await w.server.service.catalog.snapshots(tenant: "acme",
                    host: nil) { locks[r.id] = r.retainUntil }
            for d in decisions where d.lockUntil != nil {
                let expected = max(d.lockUntil!, d.committedAt.addingTimeInterval(Self.day))
                #expect(locks[d.id] == expected,
                    "\(d.id): locked \(String(describing: locks[d.id])), expected \(expected)")
            }
            let year = cal.component(.year, from: t0)
            let yearEnd = (0..<days).last { cal.component(.year, from: dayOf($0)) == year }
            try #require(yearEnd != nil && yearEnd! < days - 1, "the backups cross a new year")
            // The year's last snapshot: yearly, 7 years from the year's start.
            let newYear7 = try utc(year + 7, 1, 1)
            for id in byDay[yearEnd!] { #expect(locks[id] == newYear7, "\(id) \(String(describing: locks[id]))") }
            // The next month's last (January): monthly, 24 months from its start.
            let janEnd = (0..<days).last {
                cal.component(.year, from: dayOf($0)) == year + 1 && cal.component(.month, from: dayOf($0)) == 1
            }
            try #require(janEnd != nil && janEnd! < days - 1, "the backups cover January")
            let jan24 = try utc(year + 3, 1, 1)
            for id in byDay[janEnd!] { #expect(locks[id] == jan24, "\(id) \(String(describing: locks[id]))") }
            // A decoy-free check of the packs: each kept snapshot's packs are locked at least to its day.
            for id in expectedKept {
                let l = try #require(locks[id])
                for p in try await w.server.service.catalog.snapshotPacks(id: id) {
                    let pl = try #require(try await w.server.service.catalog.pack(tenant: "acme",
                        id: p.description)).retainUntil
                    #expect(pl >= l.addingTimeInterval(-Self.day), "pack \(p) of \(id) locked \(pl) < \(l)")
                }
            }

            // GC removes everything else and keeps these; kept ones restore bit for bit.
            let report = try await w.server.service.collectGarbage(tenant: "acme", Wire.GCRequest(dryRun: false),
                ctx: w.admin)
            let left = Set(try await w.server.service.catalog.snapshots(tenant: "acme", host: nil).map(\.id))
            #expect(left == expectedKept,
                "left \(left.count), kept \(expectedKept.count), removed \(report.snapshotsRemoved.count)")
            #expect(report.snapshotsRemoved.count == 3 * days - expectedKept.count)
            for id in expectedKept.sorted().prefix(12) { #expect(try await restore(w, id) == data[id], "\(id)") }
        } catch {
            Issue.record(error)
        }
        await w.server.stop()
    }
}

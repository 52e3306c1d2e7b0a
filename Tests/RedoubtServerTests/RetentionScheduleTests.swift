import Foundation
import Testing
import RedoubtCore
@testable import RedoubtServer

/// The retention arithmetic against a table: which rule keeps which snapshot and until when,
/// across DST changes, month ends, leap years, ISO weeks and empty periods, on server commit
/// times only.
@Suite struct RetentionScheduleTests {
    static func at(_ s: String) -> Date {
        let f = ISO8601DateFormatter()
        guard let d = f.date(from: s) else { fatalError("bad test date \(s)") }
        return d
    }

    static func schedule(_ rules: RetentionRules, min: TimeInterval = 30 * 86400) throws -> RetentionSchedule {
        try #require(RetentionSchedule(rules: rules, minimumRetention: min))
    }

    static func snaps(_ times: [String], host: String = "h1") -> [RetentionCandidate] {
        times.enumerated().map {
            RetentionCandidate(id: "\(host)-\($0.offset)", host: host, committedAt: at($0.element))
        }
    }

    /// id → [rule: (until, final)]
    static func table(_ d: [RetentionDecision]) -> [String: [RetentionRule: (Date, Bool)]] {
        var out: [String: [RetentionRule: (Date, Bool)]] = [:]
        for x in d where !x.keeps.isEmpty {
            out[x.id] = Dictionary(uniqueKeysWithValues: x.keeps.map { ($0.rule, ($0.until, $0.final)) })
        }
        return out
    }

    @Test func dailyKeepsTheNewestOfEachOfTheLastNDaysCountingToday() throws {
        var times: [String] = []
        for day in 10...20 { times += ["2026-05-\(day)T10:00:00Z", "2026-05-\(day)T20:00:00Z"] }
        let s = try Self.schedule(RetentionRules(daily: 3))
        let d = Self.table(s.decide(Self.snaps(times), now: Self.at("2026-05-20T12:00:00Z")))
        // Today's 10:00 is the newest so far (20:00 is in the future and left out): kept, not final.
        #expect(Set(d.keys) == ["h1-20", "h1-19", "h1-17"])
        #expect(d["h1-20"]?[.daily]?.0 == Self.at("2026-05-23T00:00:00Z"))
        #expect(d["h1-20"]?[.daily]?.1 == false)
        #expect(d["h1-19"]?[.daily]?.0 == Self.at("2026-05-22T00:00:00Z"))
        #expect(d["h1-19"]?[.daily]?.1 == true)
        #expect(d["h1-17"]?[.daily]?.0 == Self.at("2026-05-21T00:00:00Z"))
        let lock = s.decide(Self.snaps(times), now: Self.at("2026-05-20T12:00:00Z")).first {
            $0.id == "h1-20"
        }?.lockUntil
        #expect(lock == nil, "an open period's newest snapshot gets no lock yet")
    }

    @Test func emptyPeriodsCountUnlikeRestic() throws {
        // Backups on the 1st … 10th, none since; on the 15th keep-daily 7 covers the 9th … 15th.
        let times = (1...9).map { "2026-06-0\($0)T08:00:00Z" } + ["2026-06-10T08:00:00Z"]
        let d = Self.table(try Self.schedule(RetentionRules(daily: 7)).decide(Self.snaps(times),
                                                                              now: Self.at("2026-06-15T12:00:00Z")))
        #expect(Set(d.keys) == ["h1-8", "h1-9"])
        #expect(d["h1-8"]?[.daily]?.0 == Self.at("2026-06-16T00:00:00Z"))
    }

    @Test func daysAreLocalDaysAcrossTheSpringDSTChangeInBerlin() throws {
        // 29 March 2026: Berlin skips 02:00–03:00, the day lasts 23 hours (22:00Z on the 28th to 22:00Z on the 29th).
        let times = ["2026-03-29T21:30:00Z", "2026-03-29T22:30:00Z"]  // 23:30 CEST on the 29th, 00:30 CEST on the 30th
        let berlin = try Self.schedule(RetentionRules(daily: 2, timeZone: "Europe/Berlin"))
        let now = Self.at("2026-03-30T12:00:00Z")
        let d = Self.table(berlin.decide(Self.snaps(times), now: now))
        #expect(d["h1-0"]?[.daily]?.1 == true)
        #expect(d["h1-1"]?[.daily]?.1 == false, "the 30th is still running")
        #expect(d["h1-0"]?[.daily]?.0 == Self.at("2026-03-30T22:00:00Z"),
            "the 29th plus two local days: 31 March 00:00 CEST")
        #expect(d["h1-1"]?[.daily]?.0 == Self.at("2026-03-31T22:00:00Z"))
        #expect(berlin.period(.daily, of: Self.at(times[0]))?.end == Self.at("2026-03-29T22:00:00Z"))
        #expect(berlin.period(.daily, of: Self.at(times[0]))?.start == Self.at("2026-03-28T23:00:00Z"))
        // In UTC both fall on the 29th: only the newer is kept.
        let utc = Self.table(try Self.schedule(RetentionRules(daily: 2)).decide(Self.snaps(times), now: now))
        #expect(Set(utc.keys) == ["h1-1"])
        #expect(utc["h1-1"]?[.daily]?.0 == Self.at("2026-03-31T00:00:00Z"))
    }

    @Test func theAutumnDSTChangeMakesA25HourDayAndTwoDistinctHours() throws {
        // 25 October 2026: 03:00 CEST becomes 02:00 CET; 02:30 happens twice (00:30Z and 01:30Z).
        let s = try Self.schedule(RetentionRules(hourly: 48, daily: 1, timeZone: "Europe/Berlin"))
        #expect(s.period(.daily, of: Self.at("2026-10-25T12:00:00Z"))?.start == Self.at("2026-10-24T22:00:00Z"))
        #expect(s.period(.daily, of: Self.at("2026-10-25T12:00:00Z"))?.end == Self.at("2026-10-25T23:00:00Z"))
        let times = ["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"]
        let d = Self.table(s.decide(Self.snaps(times), now: Self.at("2026-10-25T22:00:00Z")))
        #expect(d["h1-0"]?[.hourly]?.0 == Self.at("2026-10-27T00:00:00Z"))
        #expect(d["h1-1"]?[.hourly]?.0 == Self.at("2026-10-27T01:00:00Z"))
        #expect(d["h1-1"]?[.daily]?.0 == Self.at("2026-10-25T23:00:00Z"))
        #expect(d["h1-0"]?[.daily] == nil)
    }

    @Test func monthEndsAndLeapYears() throws {
        let s = try Self.schedule(RetentionRules(daily: 1, monthly: 24, yearly: 4))
        let times = ["2024-01-31T23:59:59Z", "2024-02-01T00:00:00Z", "2024-02-29T12:00:00Z", "2024-12-31T23:00:00Z"]
        let d = Self.table(s.decide(Self.snaps(times), now: Self.at("2025-01-02T00:00:00Z")))
        #expect(d["h1-0"]?[.monthly]?.0 == Self.at("2026-01-01T00:00:00Z"), "January 2024 + 24 months")
        #expect(d["h1-1"] == nil, "an earlier snapshot of February 2024")
        #expect(d["h1-2"]?[.monthly]?.0 == Self.at("2026-02-01T00:00:00Z"))
        #expect(d["h1-3"]?[.yearly]?.0 == Self.at("2028-01-01T00:00:00Z"), "2024 + 4 years")
        #expect(d["h1-3"]?[.monthly]?.0 == Self.at("2026-12-01T00:00:00Z"))
        #expect(d["h1-3"]?[.daily] == nil, "31 December ended a day before now")
        // The leap day is its own day: kept by daily until 1 March.
        let leap = Self.table(try Self.schedule(RetentionRules(daily: 1)).decide(Self.snaps(["2024-02-29T12:00:00Z"]),
                                                                                now: Self.at("2024-02-29T23:00:00Z")))
        #expect(leap["h1-0"]?[.daily]?.0 == Self.at("2024-03-01T00:00:00Z"))
    }

    @Test func isoWeeksStartOnMondayAndCrossTheYear() throws {
        let s = try Self.schedule(RetentionRules(weekly: 8))
        // 2024-12-31 (Tuesday) and 2025-01-01 share ISO week 2025-W01 (from Monday 30 December).
        let d = Self.table(s.decide(Self.snaps(["2024-12-31T10:00:00Z", "2025-01-01T10:00:00Z"]),
                                    now: Self.at("2025-01-10T00:00:00Z")))
        #expect(Set(d.keys) == ["h1-1"])
        #expect(d["h1-1"]?[.weekly]?.0 == Self.at("2025-02-24T00:00:00Z"))
        // 2020-W53 runs from Monday 28 December 2020 to Sunday 3 January 2021.
        #expect(s.period(.weekly, of: Self.at("2021-01-03T23:00:00Z"))?.start == Self.at("2020-12-28T00:00:00Z"))
        #expect(s.period(.weekly, of: Self.at("2021-01-04T00:00:00Z"))?.start == Self.at("2021-01-04T00:00:00Z"))
    }

    @Test func lastAndWithinUseNowAndTheMinimumRetention() throws {
        let s = try Self.schedule(RetentionRules(last: 2, withinSeconds: 3 * 86400), min: 7 * 86400)
        let times = ["2026-01-01T00:00:00Z", "2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z", "2026-01-07T00:00:00Z"]
        let now = Self.at("2026-01-07T12:00:00Z")
        let d = Self.table(s.decide(Self.snaps(times), now: now))
        #expect(Set(d.keys) == ["h1-1", "h1-2", "h1-3"])
        #expect(d["h1-3"]?[.last]?.0 == now.addingTimeInterval(7 * 86400))
        #expect(d["h1-2"]?[.last] != nil)
        #expect(d["h1-1"]?[.last] == nil)
        #expect(d["h1-1"]?[.within]?.0 == Self.at("2026-01-08T00:00:00Z"))
    }

    @Test func hostsAreCountedSeparatelyAndFutureCommitsAreIgnored() throws {
        let s = try Self.schedule(RetentionRules(daily: 1))
        let all = Self.snaps(["2026-02-02T08:00:00Z"], host: "a") + Self.snaps(["2026-02-02T09:00:00Z"], host: "b")
            + Self.snaps(["2026-02-02T10:00:00Z", "2026-02-03T01:00:00Z"], host: "c")
        let decisions = s.decide(all, now: Self.at("2026-02-02T12:00:00Z"))
        #expect(decisions.count == 4 - 1, "the snapshot committed after now is left out")
        #expect(Set(Self.table(decisions).keys) == ["a-0", "b-0", "c-0"])
    }

    @Test func aDecoyFloodTakesOnlyTodaysSlot() throws {
        let rules = RetentionRules(last: 3, daily: 7, weekly: 4, monthly: 12)
        let s = try Self.schedule(rules)
        let history = (1...28).map { RetentionCandidate(id: "real-\($0)", host: "h",
                                                        committedAt: Self.at("2026-02-01T06:00:00Z")
                                                            .addingTimeInterval(Double($0 - 1) * 86400)) }
        let now = Self.at("2026-03-01T09:00:00Z")
        let before = s.decide(history, now: now)
        // 10 000 decoys committed this morning (the server's time; whatever they claim).
        let decoys = (0..<10_000).map { RetentionCandidate(id: "decoy-\($0)", host: "h",
                                                           committedAt: now.addingTimeInterval(-3600
                                                               + Double($0) * 0.3)) }
        let after = s.decide(history + decoys, now: now)
        // Every lock set before (final calendar keeps) is set alike after; only this week's open slot moves to a decoy.
        let keptBefore = Dictionary(uniqueKeysWithValues: before.map {
            ($0.id, $0.keeps.filter { $0.rule != .last && $0.final })
        })
        for x in after where x.id.hasPrefix("real-") {
            #expect(x.keeps.filter { $0.rule != .last && $0.final } == keptBefore[x.id], "\(x.id) kept as before")
            #expect((x.lockUntil ?? .distantPast) >= (before.first { $0.id == x.id }?.keeps.filter {
                $0.rule != .last && $0.final
            }
                .map(\.until).max() ?? .distantPast))
        }
        let lockedDecoys = after.filter {
            $0.id.hasPrefix("decoy-") && $0.keeps.contains { $0.rule != .last && $0.final }
        }
        #expect(lockedDecoys.isEmpty, "no decoy gets a calendar lock while its day is open")
        #expect(after.filter { $0.id.hasPrefix("decoy-") && !$0.keeps.isEmpty }.count == 3, "keep-last 3 only")
        #expect(Set(Self.table(before).keys).subtracting(["real-28"]).isSubset(of: Set(Self.table(after).keys)))
    }

    @Test func weakeningIsAnyRuleFewerOrShorterOrAnotherZone() {
        let base = RetentionRules(daily: 14, weekly: 8, monthly: 24, yearly: 7)
        #expect(!base.isWeakened(by: base))
        #expect(!base.isWeakened(by: RetentionRules(daily: 30, weekly: 8, monthly: 24, yearly: 7)))
        #expect(!base.isWeakened(by: RetentionRules(last: 5, daily: 14, weekly: 8, monthly: 24, yearly: 7)))
        #expect(base.isWeakened(by: RetentionRules(daily: 14, weekly: 8, monthly: 24, yearly: 6)))
        #expect(base.isWeakened(by: RetentionRules(daily: 14, weekly: 8, monthly: 24, yearly: 7,
            timeZone: "Europe/Berlin")))
        #expect(RetentionRules(withinSeconds: 86400).isWeakened(by: RetentionRules(daily: 100)))
    }

    @Test func rulesAreChecked() {
        #expect(RetentionRules().problem() != nil)
        #expect(RetentionRules(daily: -1).problem()?.contains("keep-daily") == true)
        #expect(RetentionRules(daily: 1, timeZone: "Mars/Olympus").problem()?.contains("Mars/Olympus") == true)
        #expect(RetentionRules(daily: 14, timeZone: "Europe/Berlin").problem() == nil)
        #expect(RetentionRules.parseDuration("30d").map { Int($0) } == 2_592_000)
        #expect(RetentionRules.parseDuration("-3d") == nil)
        #expect(RetentionRules.parseDuration("x") == nil)
    }
}

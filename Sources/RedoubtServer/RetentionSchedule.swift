import Foundation
import RedoubtCore

// Which snapshots a retention policy keeps, and until when: pure arithmetic over the
// server's commit times, no catalog and no store (docs/PROTOCOL.md §4.7).
//
// Calendar rules (hourly … yearly) follow restic's `forget`: the newest snapshot of each
// period is the one a rule keeps. Unlike restic, periods are counted back from `now`
// (the current period is the first, empty periods count), because a lock, once set,
// can never be taken back: "the last 14 days" must be a date range fixed when the
// snapshot's period ends, not "the last 14 days that have a snapshot", which the next
// snapshot could change. A calendar rule's lock therefore ends N periods after the start
// of the snapshot's period, and it is set only once that period has ended (the newest
// snapshot of a period is known only then): a flood of decoys today takes today's slot
// and nothing else, and locks none of them beyond the tenant's minimum retention.

/// A rule that can keep a snapshot.
public enum RetentionRule: String, Codable, Sendable, CaseIterable, Comparable {
    case last, hourly, daily, weekly, monthly, yearly, within

    public static func < (a: Self, b: Self) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }

    /// The calendar period of a calendar rule (nil for `last` and `within`).
    var component: Calendar.Component? {
        switch self {
        case .hourly: .hour
        case .daily: .day
        case .weekly: .weekOfYear
        case .monthly: .month
        case .yearly: .year
        case .last, .within: nil
        }
    }
}

/// One snapshot as the schedule sees it: its server commit time, never the time the host claims.
public struct RetentionCandidate: Sendable, Equatable {
    public let id: String
    public let host: String
    public let committedAt: Date

    public init(id: String, host: String, committedAt: Date) {
        self.id = id
        self.host = host
        self.committedAt = committedAt
    }
}

/// Why one rule keeps a snapshot and until when.
public struct RetentionKeep: Codable, Sendable, Equatable {
    public let rule: RetentionRule
    /// When this rule stops keeping the snapshot.
    public let until: Date
    /// Whether the lock is set now: false while the snapshot's period is still running (a newer
    /// snapshot in the same period would take its place).
    public let final: Bool
}

/// What the schedule decided for one snapshot.
public struct RetentionDecision: Sendable, Equatable {
    public let id: String
    public let host: String
    public let committedAt: Date
    /// The rules keeping it, in rule order; empty if none does.
    public let keeps: [RetentionKeep]

    /// The lock to set now: the latest end among the rules whose decision is final.
    public var lockUntil: Date? { keeps.filter(\.final).map(\.until).max() }
}

/// The retention arithmetic of one policy.
public struct RetentionSchedule: Sendable {
    public let rules: RetentionRules
    /// The tenant's minimum retention: how long `keep-last` keeps a snapshot ahead of each application.
    public let minimumRetention: TimeInterval
    let calendar: Calendar

    /// Nil when the rules name an unknown time zone.
    public init?(rules: RetentionRules, minimumRetention: TimeInterval) {
        guard let zone = TimeZone(identifier: rules.timeZone) else { return nil }
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = zone
        // ISO 8601 weeks: Monday first; week 1 holds the year's first Thursday.
        cal.firstWeekday = 2
        cal.minimumDaysInFirstWeek = 4
        self.rules = rules
        self.minimumRetention = minimumRetention
        self.calendar = cal
    }

    func count(_ rule: RetentionRule) -> Int {
        switch rule {
        case .last: rules.last
        case .hourly: rules.hourly
        case .daily: rules.daily
        case .weekly: rules.weekly
        case .monthly: rules.monthly
        case .yearly: rules.yearly
        case .within: rules.withinSeconds > 0 ? 1 : 0
        }
    }

    /// The period of `rule` holding `t`, in the policy's zone.
    func period(_ rule: RetentionRule, of t: Date) -> DateInterval? {
        guard let c = rule.component else { return nil }
        return calendar.dateInterval(of: c, for: t)
    }

    /// The instant `n` periods of `rule` after `start` (local midnight stays local midnight across DST).
    func advance(_ rule: RetentionRule, _ start: Date, by n: Int) -> Date? {
        guard let c = rule.component else { return nil }
        return calendar.date(byAdding: c, value: n, to: start)
    }

    /// Decides, per host, which rules keep each snapshot and until when. Snapshots committed
    /// after `now` are left out (nothing keeps what doesn't exist yet).
    public func decide(_ snapshots: [RetentionCandidate], now: Date) -> [RetentionDecision] {
        let present = snapshots.filter { $0.committedAt <= now }
        var keeps: [String: [RetentionKeep]] = [:]
        for (_, group) in Dictionary(grouping: present, by: \.host) {
            // Newest first, the commit order breaking ties by id (as the catalog lists them).
            let newest = group.sorted { ($0.committedAt, $0.id) > ($1.committedAt, $1.id) }
            if rules.last > 0 {
                for s in newest.prefix(rules.last) {
                    keeps[s.id, default: []].append(RetentionKeep(rule: .last,
                        until: now.addingTimeInterval(minimumRetention),
                                                                  final: true))
                }
            }
            if rules.withinSeconds > 0 {
                for s in newest where s.committedAt > now.addingTimeInterval(-rules.withinSeconds) {
                    let until = s.committedAt.addingTimeInterval(rules.withinSeconds)
                    keeps[s.id, default: []].append(RetentionKeep(rule: .within, until: until, final: true))
                }
            }
            for rule in [RetentionRule.hourly, .daily, .weekly, .monthly, .yearly] {
                let n = count(rule)
                guard n > 0 else { continue }
                var seen = Set<Date>()
                for s in newest {
                    guard let p = period(rule, of: s.committedAt), seen.insert(p.start).inserted,
                          let until = advance(rule, p.start, by: n), until > now else { continue }
                    keeps[s.id, default: []].append(RetentionKeep(rule: rule, until: until, final: p.end <= now))
                }
            }
        }
        return present.map { s in
            RetentionDecision(id: s.id, host: s.host, committedAt: s.committedAt,
                              keeps: (keeps[s.id] ?? []).sorted { $0.rule < $1.rule })
        }
    }
}

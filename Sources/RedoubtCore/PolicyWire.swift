import Foundation

// Retention policies on the wire (docs/PROTOCOL.md §4.7). The arithmetic that applies
// them is the server's (RetentionSchedule); a client only names rules and reads decisions.

/// The rules of one retention policy. A count of 0 means the rule is off.
public struct RetentionRules: Codable, Equatable, Sendable {
    public var last: Int
    public var hourly: Int
    public var daily: Int
    public var weekly: Int
    public var monthly: Int
    public var yearly: Int
    /// Keep every snapshot committed within this many seconds before now (0: off).
    public var withinSeconds: TimeInterval
    /// An IANA time zone name; periods start at local midnight (hour, Monday, the 1st, 1 January) there.
    public var timeZone: String

    public init(last: Int = 0, hourly: Int = 0, daily: Int = 0, weekly: Int = 0, monthly: Int = 0, yearly: Int = 0,
                withinSeconds: TimeInterval = 0, timeZone: String = "UTC") {
        self.last = last
        self.hourly = hourly
        self.daily = daily
        self.weekly = weekly
        self.monthly = monthly
        self.yearly = yearly
        self.withinSeconds = withinSeconds
        self.timeZone = timeZone
    }

    /// Largest count accepted for any rule (hourly for 100 years fits; dates beyond overflow).
    public static let maxCount = 876_600
    /// Longest keep-within accepted: 100 years.
    public static let maxWithin: TimeInterval = 100 * 366 * 86400

    /// Why rules can't be used: a message naming the rule and the accepted range, or nil.
    public func problem() -> String? {
        let counts = [("keep-last", last), ("keep-hourly", hourly), ("keep-daily", daily), ("keep-weekly", weekly),
                      ("keep-monthly", monthly), ("keep-yearly", yearly)]
        for (name, n) in counts where n < 0 || n > Self.maxCount {
            return "\(name) \(n) is out of range: give 0 (off) to \(Self.maxCount)"
        }
        if !(0...Self.maxWithin).contains(withinSeconds) {
            return "keep-within must be between 0 (off) and 100 years"
        }
        if TimeZone(identifier: timeZone) == nil {
            return "time zone \(timeZone) is unknown: give an IANA name such as UTC or Europe/Berlin"
        }
        if counts.allSatisfy({ $0.1 == 0 }) && withinSeconds == 0 {
            return "a policy needs at least one rule (--keep-last, --keep-hourly … --keep-yearly or --keep-within)"
        }
        return nil
    }

    /// Whether replacing `self` by `new` could keep anything less long: any rule fewer or
    /// shorter, or another time zone (its periods end at other instants). Such a change
    /// needs the admins' quorum; every other change takes effect at once.
    public func isWeakened(by new: RetentionRules) -> Bool {
        new.last < last || new.hourly < hourly || new.daily < daily || new.weekly < weekly
            || new.monthly < monthly || new.yearly < yearly || new.withinSeconds < withinSeconds
            || new.timeZone != timeZone
    }

    /// Short human form, e.g. `daily 14, weekly 8, monthly 24 (UTC)`.
    public var summary: String {
        var parts: [String] = []
        for (name, n) in [("last", last), ("hourly", hourly), ("daily", daily), ("weekly", weekly),
                          ("monthly", monthly), ("yearly", yearly)] where n > 0 {
            parts.append("\(name) \(n)")
        }
        if withinSeconds > 0 { parts.append("within \(RetentionRules.formatDuration(withinSeconds))") }
        return parts.joined(separator: ", ") + " (\(timeZone))"
    }

    /// Parses `30d`, `12h`, `2w`, `1y` (365 days) or plain seconds.
    public static func parseDuration(_ s: String) -> TimeInterval? {
        let units: [Character: TimeInterval] = ["s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400,
            "y": 365 * 86400]
        if let last = s.last, let unit = units[last], let n = Int(s.dropLast()), n >= 0 {
            return TimeInterval(n) * unit
        }
        return Int(s).flatMap { $0 >= 0 ? TimeInterval($0) : nil }
    }

    public static func formatDuration(_ t: TimeInterval) -> String {
        let s = Int(t)
        if s % 86400 == 0 { return "\(s / 86400)d" }
        if s % 3600 == 0 { return "\(s / 3600)h" }
        return "\(s)s"
    }
}

extension Wire {
    /// A tenant's retention policy for the hosts matching `hostGlob` (shell glob, `*` all)
    /// and the snapshots carrying `tag` (empty: every snapshot).
    public struct PolicyInfo: Codable, Sendable, Equatable {
        public let tenant: String
        public let hostGlob: String
        public let tag: String
        public let rules: RetentionRules
        public let updatedAt: Date
        public init(tenant: String, hostGlob: String, tag: String, rules: RetentionRules, updatedAt: Date) {
            self.tenant = tenant
            self.hostGlob = hostGlob
            self.tag = tag
            self.rules = rules
            self.updatedAt = updatedAt
        }
    }

    /// Sets (or, with `remove`, removes) the policy of one host glob and tag. Lowering or
    /// removing needs the admins' quorum: `requestID` names the approved request.
    public struct SetPolicyRequest: Codable, Sendable {
        public var hostGlob: String
        public var tag: String
        public var rules: RetentionRules?
        public var remove: Bool?
        public var requestID: String?
        public init(hostGlob: String = "*", tag: String = "", rules: RetentionRules?, remove: Bool? = nil,
                    requestID: String? = nil) {
            self.hostGlob = hostGlob
            self.tag = tag
            self.rules = rules
            self.remove = remove
            self.requestID = requestID
        }
    }

    /// Why one rule keeps a snapshot, until when, and whether that lock is set yet.
    public struct PolicyKeep: Codable, Sendable, Equatable {
        public let rule: String
        public let until: Date
        public let final: Bool
        public init(rule: String, until: Date, final: Bool) {
            self.rule = rule
            self.until = until
            self.final = final
        }
    }

    /// What the tenant's policies decide for one snapshot.
    public struct PolicyDecisionInfo: Codable, Sendable, Equatable {
        public let id: String
        public let host: String
        public let committedAt: Date
        /// The lock the snapshot has now.
        public let retainUntil: Date
        public let keeps: [PolicyKeep]
        /// The lock the policies set (nil: none; the minimum retention's lock stands).
        public let lockUntil: Date?
        public init(id: String, host: String, committedAt: Date, retainUntil: Date, keeps: [PolicyKeep],
            lockUntil: Date?) {
            self.id = id
            self.host = host
            self.committedAt = committedAt
            self.retainUntil = retainUntil
            self.keeps = keeps
            self.lockUntil = lockUntil
        }
    }

    public struct PolicySimulation: Codable, Sendable, Equatable {
        public let tenant: String
        public let now: Date
        public let snapshots: [PolicyDecisionInfo]
        /// Snapshots some rule keeps.
        public let kept: Int
        /// Snapshots whose lock the application moved later (0 in a simulation).
        public let extended: Int
        public init(tenant: String, now: Date, snapshots: [PolicyDecisionInfo], kept: Int, extended: Int) {
            self.tenant = tenant
            self.now = now
            self.snapshots = snapshots
            self.kept = kept
            self.extended = extended
        }
    }
}

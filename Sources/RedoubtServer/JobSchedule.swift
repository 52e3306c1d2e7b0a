import Foundation
import RedoubtCore

// The schedule of the server's jobs: an interval per job, jobs turned off, and one
// maintenance window that the heavy periodic runs wait for. Kept as one JSON setting
// (`job-schedule`); `redoubt admin schedule show|set` reads and changes it.

/// A daily window, `HH:MM-HH:MM` in a named time zone; it may wrap midnight (`22:00-04:00`).
public struct MaintenanceWindow: Codable, Sendable, Equatable {
    public var startMinute: Int
    public var endMinute: Int
    public var zone: String
    /// The shortest window accepted.
    public static let minimumMinutes = 60

    /// Parses `HH:MM-HH:MM` in the IANA zone `zone`; nil with a reason when malformed.
    public static func parse(_ text: String, zone: String) -> Result<MaintenanceWindow, ServerError> {
        guard TimeZone(identifier: zone) != nil else {
            return .failure(.badRequest("time zone \(SafeText.echo(zone)) is unknown: give an IANA name such as "
                                        + "UTC or Europe/Berlin"))
        }
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let a = minute(parts[0]), let b = minute(parts[1]), a != b else {
            return .failure(.badRequest("window \(SafeText.echo(text)) must be HH:MM-HH:MM with two different "
                                        + "times (e.g. 01:00-05:00), or off"))
        }
        // Why a floor: a window of a minute or two would let one admin all but stop the
        // windowed jobs (the scrub among them) without the quorum that turning them off needs.
        guard (b - a + 1440) % 1440 >= minimumMinutes else {
            return .failure(.badRequest("window \(SafeText.echo(text)) is shorter than \(minimumMinutes / 60) hour: "
                                        + "give at least an hour (e.g. 01:00-05:00)"))
        }
        return .success(MaintenanceWindow(startMinute: a, endMinute: b, zone: zone))
    }

    private static func minute(_ s: Substring) -> Int? {
        let hm = s.split(separator: ":", omittingEmptySubsequences: false)
        guard hm.count == 2, hm[0].count == 2, hm[1].count == 2, let h = Int(hm[0]), let m = Int(hm[1]),
              (0...23).contains(h), (0...59).contains(m) else { return nil }
        return h * 60 + m
    }

    public var text: String {
        func hm(_ m: Int) -> String { String(format: "%02d:%02d", m / 60, m % 60) }
        return "\(hm(startMinute))-\(hm(endMinute))"
    }

    private func minuteOfDay(_ d: Date) -> Int {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone(identifier: zone) ?? .gmt
        let c = cal.dateComponents([.hour, .minute], from: d)
        return (c.hour ?? 0) * 60 + (c.minute ?? 0)
    }

    /// Whether `d` falls in the window (start inclusive, end exclusive), in its zone.
    public func contains(_ d: Date) -> Bool {
        let m = minuteOfDay(d)
        return startMinute < endMinute ? (m >= startMinute && m < endMinute) : (m >= startMinute || m < endMinute)
    }

    /// `d` if it falls in the window, else the window's next opening after it (to the minute).
    public func nextOpening(atOrAfter d: Date) -> Date {
        if contains(d) { return d }
        var t = Date(timeIntervalSince1970: (d.timeIntervalSince1970 / 60).rounded(.up) * 60)
        // At most a day and an hour of minutes (a DST change can lengthen a day).
        for _ in 0..<(25 * 60) {
            if contains(t) { return t }
            t.addTimeInterval(60)
        }
        return t
    }
}

/// The whole schedule. Jobs not named take their default interval.
public struct JobSchedule: Codable, Sendable, Equatable {
    public var intervals: [String: TimeInterval] = [:]
    public var off: [String] = []
    public var window: MaintenanceWindow?

    public init() {}

    public func interval(_ job: String, default d: TimeInterval) -> TimeInterval { intervals[job] ?? d }
    public func isOff(_ job: String) -> Bool { off.contains(job) }

    /// The shortest and longest interval a job may have: no job runs more than every five
    /// minutes, and the longest, 30 days, still lets the scrub re-read each pack in its period.
    public static let intervalRange: ClosedRange<TimeInterval> = 300...(30 * 86400)
    static let settingKey = "job-schedule"
}

extension RepositoryService {
    /// The stored schedule, or the defaults.
    public func jobSchedule() async throws -> JobSchedule {
        guard let json = try await catalog.setting(JobSchedule.settingKey) else { return JobSchedule() }
        return try JSONDecoder().decode(JobSchedule.self, from: Data(json.utf8))
    }

    /// `GET /v1/schedule`.
    public func scheduleInfo() async throws -> Wire.ScheduleInfo {
        let s = try await jobSchedule()
        return Wire.ScheduleInfo(jobs: ServerJobs.all.map { j in
            Wire.JobScheduleInfo(job: j.name, intervalSeconds: s.interval(j.name, default: j.defaultInterval),
                                 defaultIntervalSeconds: j.defaultInterval, off: s.isOff(j.name), windowed: j.windowed)
        }, window: s.window?.text, windowZone: s.window?.zone ?? "UTC")
    }

    /// `PUT /v1/schedule`: turning a protective job off, or making it run less often, weakens
    /// protection and needs the admins' quorum (`weaken-schedule`); everything else is at once.
    public func setSchedule(_ req: Wire.SetScheduleRequest, ctx: CallContext) async throws -> Wire.ScheduleInfo {
        var s = try await jobSchedule()
        let before = s
        var weakening: [String] = []
        if let name = req.job {
            guard let job = ServerJobs.all.first(where: { $0.name == name }) else {
                throw ServerError.badRequest("no job \(SafeText.echo(name)): the jobs are "
                                             + ServerJobs.all.map(\.name).joined(separator: ", "))
            }
            guard req.intervalSeconds != nil || req.off != nil else {
                throw ServerError.badRequest("say what changes for job \(name): an interval, off or on")
            }
            if let i = req.intervalSeconds {
                guard JobSchedule.intervalRange.contains(i) else {
                    throw ServerError.badRequest("interval of \(name) must be between 5 minutes and 30 days "
                                                 + "(\(Int(i)) s given)")
                }
                if job.protective, i > s.interval(name, default: job.defaultInterval) {
                    weakening.append("\(name) every \(Int(i))s")
                }
                s.intervals[name] = i == job.defaultInterval ? nil : i
            }
            if let off = req.off {
                if off, !s.isOff(name) {
                    if job.protective { weakening.append("\(name) off") }
                    s.off.append(name)
                } else if !off {
                    s.off.removeAll { $0 == name }
                }
            }
        } else if req.intervalSeconds != nil || req.off != nil {
            throw ServerError.badRequest("an interval or off/on needs a job")
        }
        if let w = req.window {
            if w == "off" {
                s.window = nil
            } else {
                s.window = try MaintenanceWindow.parse(w, zone: req.windowZone ?? "UTC").get()
            }
        } else if req.windowZone != nil {
            throw ServerError.badRequest("a window zone needs a window (HH:MM-HH:MM)")
        }
        guard s != before else { return try await scheduleInfo() }
        let json = String(decoding: try JSONEncoder.sorted.encode(s), as: UTF8.self)
        if !weakening.isEmpty {
            try await authorize(.weakenSchedule, object: "schedule", parameters: ["schedule": json],
                          requestID: req.requestID, consume: true, ctx: ctx)
        }
        try await catalog.setSetting(JobSchedule.settingKey, json)
        await audit(ctx, .setSchedule, object: "schedule", outcome: "ok", detail: Self.scheduleSummary(s))
        return try await scheduleInfo()
    }

    static func scheduleSummary(_ s: JobSchedule) -> String {
        let intervals = s.intervals.sorted { $0.key < $1.key }.map { "\($0.key)=\(Int($0.value))s" }
        return (intervals + ["off=\(s.off.sorted().joined(separator: ","))",
                             "window=\(s.window.map { "\($0.text) \($0.zone)" } ?? "none")"]).joined(separator: " ")
    }

    /// `GET /v1/jobs`: every job of every tenant it applies to, with its last run and next run.
    public func listJobs() async throws -> [Wire.JobInfo] {
        let now = await clockNow()
        let schedule = try await jobSchedule()
        var states: [String: JobState] = [:]
        for s in try await catalog.jobStates() { states["\(s.job) \(s.tenant)"] = s }
        var out: [Wire.JobInfo] = []
        for job in ServerJobs.all {
            for tenant in try await job.tenants(self) {
                let s = states["\(job.name) \(tenant)"]
                let running = s?.leaseHolder.flatMap { h in (s?.leaseExpires ?? .distantPast) > now ? h : nil }
                var next: Date? = nil
                if !schedule.isOff(job.name) {
                    if let r = s?.requestedAt {
                        next = max(r, now)
                    } else {
                        let due = max(s?.nextDue ?? now, now)
                        next = job.windowed ? schedule.window?.nextOpening(atOrAfter: due) ?? due : due
                    }
                }
                out.append(Wire.JobInfo(job: job.name, tenant: tenant, lastStartedAt: s?.lastStart,
                                        lastEndedAt: s?.lastEnd, outcome: s?.lastOutcome, error: s?.lastError,
                                        failures: s?.failures ?? 0, nextRunAt: next, runningOn: running))
            }
        }
        return out.sorted { ($0.tenant, $0.job) < ($1.tenant, $1.job) }
    }
}

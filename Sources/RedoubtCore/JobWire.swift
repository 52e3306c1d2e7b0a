import Foundation

// The server's own jobs on the wire (docs/PROTOCOL.md §4.8): their schedule, their runs,
// and a host's expected backup interval. The server runs the jobs; a client only reads
// and sets the schedule.

extension Wire {
    /// HTTP header of `POST /v1/snapshots` that carries how often the host expects to commit,
    /// in whole seconds (optional; `redoubt backup --expected-interval`).
    public static let expectedIntervalHeader = "Redoubt-Expected-Interval"
    /// The range of expected intervals the server records (a minute to 366 days).
    public static let expectedIntervalRange: ClosedRange<TimeInterval> = 60...(366 * 86400)

    /// One job's schedule.
    public struct JobScheduleInfo: Codable, Sendable, Equatable {
        /// `policy-apply`, `gc`, `copy-sync`, `lock-probe` or `scrub`.
        public var job: String
        public var intervalSeconds: TimeInterval
        public var defaultIntervalSeconds: TimeInterval
        /// Turned off: the job's periodic runs stop (runs requested after a commit too).
        public var off: Bool
        /// Whether its periodic runs wait for the maintenance window.
        public var windowed: Bool
        public init(job: String, intervalSeconds: TimeInterval, defaultIntervalSeconds: TimeInterval, off: Bool,
                    windowed: Bool) {
            self.job = job
            self.intervalSeconds = intervalSeconds
            self.defaultIntervalSeconds = defaultIntervalSeconds
            self.off = off
            self.windowed = windowed
        }
    }

    /// `GET /v1/schedule`, and the answer of `PUT /v1/schedule`.
    public struct ScheduleInfo: Codable, Sendable, Equatable {
        public var jobs: [JobScheduleInfo]
        /// `HH:MM-HH:MM` in `windowZone`, nil: no window (windowed jobs run whenever due).
        public var window: String?
        public var windowZone: String
        public init(jobs: [JobScheduleInfo], window: String?, windowZone: String) {
            self.jobs = jobs
            self.window = window
            self.windowZone = windowZone
        }
    }

    /// `PUT /v1/schedule`: changes one job (`job` with `intervalSeconds` and/or `off`), the
    /// window (`window`: `HH:MM-HH:MM` or `off`, with `windowZone`), or both.
    public struct SetScheduleRequest: Codable, Sendable {
        public var job: String?
        public var intervalSeconds: TimeInterval?
        public var off: Bool?
        public var window: String?
        public var windowZone: String?
        /// An approved request, for a change that weakens protection (docs/PROTOCOL.md §4.2).
        public var requestID: String?
        public init(job: String? = nil, intervalSeconds: TimeInterval? = nil, off: Bool? = nil, window: String? = nil,
                    windowZone: String? = nil, requestID: String? = nil) {
            self.job = job
            self.intervalSeconds = intervalSeconds
            self.off = off
            self.window = window
            self.windowZone = windowZone
            self.requestID = requestID
        }
    }

    /// One job of one tenant, as `GET /v1/jobs` lists it.
    public struct JobInfo: Codable, Sendable, Equatable {
        public var job: String
        public var tenant: String
        public var lastStartedAt: Date?
        public var lastEndedAt: Date?
        public var durationSeconds: TimeInterval?
        /// `ok`, `findings` (a scrub or probe found a problem) or `failed`; nil: never ran.
        public var outcome: String?
        public var error: String?
        /// Failed runs in a row (each retried after a longer backoff).
        public var failures: Int
        /// When it runs next (nil: the job is off).
        public var nextRunAt: Date?
        /// The server holding its lease while it runs.
        public var runningOn: String?
        public init(job: String, tenant: String, lastStartedAt: Date?, lastEndedAt: Date?, outcome: String?,
                    error: String?, failures: Int, nextRunAt: Date?, runningOn: String?) {
            self.job = job
            self.tenant = tenant
            self.lastStartedAt = lastStartedAt
            self.lastEndedAt = lastEndedAt
            if let s = lastStartedAt, let e = lastEndedAt, e >= s { durationSeconds = e.timeIntervalSince(s) }
            self.outcome = outcome
            self.error = error
            self.failures = failures
            self.nextRunAt = nextRunAt
            self.runningOn = runningOn
        }
    }
}

import Foundation

// Notifications and status (docs/PROTOCOL.md §5.3): JSON bodies of `/v1/notify/…` and `/v1/status`.
extension Wire {
    /// `POST /v1/notify/channels`: where notifications go. A webhook names `url` (https, or
    /// http to loopback) and optionally `secretFile` and `caFile`; an email channel names
    /// `smtp` (HOST:PORT), `from`, `to`, and optionally `starttls` and `credentialsFile`.
    /// Files are paths on the server host, read when a message is sent: the catalog never
    /// holds a secret. `events` lists the event kinds this channel receives (empty: all);
    /// `tenant` limits it to one tenant's events (nil: every tenant and server-wide events).
    public struct AddNotifyChannelRequest: Codable, Sendable {
        public var kind: String
        public var url: String?
        public var secretFile: String?
        public var caFile: String?
        public var smtp: String?
        public var from: String?
        public var to: [String]?
        public var starttls: Bool?
        public var credentialsFile: String?
        public var events: [String]?
        public var tenant: String?
        public init(kind: String, url: String? = nil, secretFile: String? = nil, caFile: String? = nil,
                    smtp: String? = nil, from: String? = nil, to: [String]? = nil, starttls: Bool? = nil,
                    credentialsFile: String? = nil, events: [String]? = nil, tenant: String? = nil) {
            self.kind = kind
            self.url = url
            self.secretFile = secretFile
            self.caFile = caFile
            self.smtp = smtp
            self.from = from
            self.to = to
            self.starttls = starttls
            self.credentialsFile = credentialsFile
            self.events = events
            self.tenant = tenant
        }
    }

    /// A notification channel as listed (`GET /v1/notify/channels`).
    public struct NotifyChannelInfo: Codable, Sendable, Equatable {
        public var id: String
        /// `webhook` or `email`.
        public var kind: String
        /// The webhook URL, or `smtp://HOST:PORT` with the recipients after it.
        public var target: String
        /// Event kinds it receives; empty: all.
        public var events: [String]
        public var tenant: String?
        public var createdAt: Date
        public init(id: String, kind: String, target: String, events: [String], tenant: String?, createdAt: Date) {
            self.id = id
            self.kind = kind
            self.target = target
            self.events = events
            self.tenant = tenant
            self.createdAt = createdAt
        }
    }

    /// `PUT /v1/notify/expectations`: how often a host is expected to commit (nil clears it).
    public struct HostExpectationRequest: Codable, Sendable {
        public var tenant: String
        public var host: String
        public var intervalSeconds: Double?
        public init(tenant: String, host: String, intervalSeconds: Double?) {
            self.tenant = tenant
            self.host = host
            self.intervalSeconds = intervalSeconds
        }
    }

    /// One event, as a webhook receives it and as `GET /v1/status` lists open ones.
    public struct NotifyEvent: Codable, Sendable, Equatable {
        /// Unique per message (a resolution has its own).
        public var id: String
        /// What happened: `host-stale`, `integrity-failure`, `copy-lagging`, `lock-proof-failed`,
        /// `refusal-burst`, `approval-requested`, `hold-placed`, `hold-lifted`, `job-failed`,
        /// `suspect-snapshot`, `test`.
        public var kind: String
        /// `open` (it started), `resolved` (it ended) or `once` (an event with no duration).
        public var state: String
        public var tenant: String
        /// The host, principal, copy target or request it is about ("-" if none).
        public var host: String
        public var summary: String
        /// The command that shows more.
        public var command: String
        /// When it started (server clock), and when it ended.
        public var openedAt: Date
        public var resolvedAt: Date?
        public init(id: String, kind: String, state: String, tenant: String, host: String, summary: String,
                    command: String, openedAt: Date, resolvedAt: Date?) {
            self.id = id
            self.kind = kind
            self.state = state
            self.tenant = tenant
            self.host = host
            self.summary = summary
            self.command = command
            self.openedAt = openedAt
            self.resolvedAt = resolvedAt
        }
    }

    /// `GET /v1/status`: what needs a person now.
    public struct StatusInfo: Codable, Sendable {
        public var serverTime: Date
        public var staleHosts: [StaleHost]
        public var laggingCopies: [LaggingCopy]
        public var failedJobs: [FailedJob]
        public var pendingApprovals: [PendingApproval]
        public var openAlerts: [NotifyEvent]

        public init(serverTime: Date, staleHosts: [StaleHost], laggingCopies: [LaggingCopy], failedJobs: [FailedJob],
                    pendingApprovals: [PendingApproval], openAlerts: [NotifyEvent]) {
            self.serverTime = serverTime
            self.staleHosts = staleHosts
            self.laggingCopies = laggingCopies
            self.failedJobs = failedJobs
            self.pendingApprovals = pendingApprovals
            self.openAlerts = openAlerts
        }

        public struct StaleHost: Codable, Sendable, Equatable {
            public var tenant: String
            public var host: String
            public var lastCommit: Date?
            public var ageSeconds: Double
            public var expectedIntervalSeconds: Double
            public init(tenant: String, host: String, lastCommit: Date?, ageSeconds: Double,
                        expectedIntervalSeconds: Double) {
                self.tenant = tenant
                self.host = host
                self.lastCommit = lastCommit
                self.ageSeconds = ageSeconds
                self.expectedIntervalSeconds = expectedIntervalSeconds
            }
        }

        public struct LaggingCopy: Codable, Sendable, Equatable {
            public var tenant: String
            public var target: String
            public var problem: String
            public init(tenant: String, target: String, problem: String) {
                self.tenant = tenant
                self.target = target
                self.problem = problem
            }
        }

        public struct FailedJob: Codable, Sendable, Equatable {
            public var action: String
            public var count: Int
            public init(action: String, count: Int) {
                self.action = action
                self.count = count
            }
        }

        public struct PendingApproval: Codable, Sendable, Equatable {
            public var id: String
            public var action: String
            public var object: String
            public var requester: String
            public var createdAt: Date
            public init(id: String, action: String, object: String, requester: String, createdAt: Date) {
                self.id = id
                self.action = action
                self.object = object
                self.requester = requester
                self.createdAt = createdAt
            }
        }
    }
}

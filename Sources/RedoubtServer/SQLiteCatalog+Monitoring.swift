import Foundation
import GRDB
import RedoubtCore

/// What monitoring reads from the catalog: facts about hosts, tenants, copies and
/// integrity, none of which needs a key (docs/PROTOCOL.md §8). Metrics, notifications and
/// `admin status` all derive from one read of it, so they never disagree.
public struct MonitoringFacts: Sendable, Codable, Equatable {
    /// One protected host: an enrolled writer, or a host name that committed snapshots.
    public struct Host: Sendable, Codable, Equatable {
        public var tenant: String
        public var host: String
        public var snapshots: Int
        /// The server's commit time of its newest snapshot; nil if it never committed.
        public var lastCommit: Date?
        /// When it was enrolled (nil for a host known only from snapshots).
        public var enrolledAt: Date?
        /// How often it is expected to commit (`redoubt admin notify expect`); nil if unknown.
        public var expectedInterval: TimeInterval?
    }

    /// One tenant's totals.
    public struct Tenant: Sendable, Codable, Equatable {
        public var tenant: String
        public var snapshots: Int
        /// Sum over snapshots of the files' logical size (`bytesTotal` the host declared).
        public var logicalBytes: Int64
        /// Bytes of packs the store holds for the tenant.
        public var storedBytes: Int64
        /// Sum over snapshots of the pack bytes each uploaded (new after dedup).
        public var newBytes: Int64
        /// The earliest lock end among the tenant's kept snapshots; nil with none.
        public var earliestLockEnd: Date?
        /// Packs a restorer or a verify reported damaged.
        public var damagedPacks: Int
        /// Legal holds in force.
        public var activeHolds: Int
    }

    public var hosts: [Host] = []
    public var tenants: [Tenant] = []
    /// Copy targets in use, with their last sync and lock proof.
    public var copyTargets: [CopyTargetFacts] = []
    /// Audited outcomes of server-side checks and jobs, by action and outcome
    /// (`verify`, `gc`, `gc-store`, `copy-sync`, `report-damaged-pack`).
    public var outcomes: [Outcome] = []
    /// Bytes garbage collection removed, summed over its audit records.
    public var gcBytesFreed: Int64 = 0
    /// Approval requests waiting for admins.
    public var pendingApprovals: [PendingApproval] = []
    /// Records in the audit log (its chain length).
    public var auditRecords: Int64 = 0

    public struct CopyTargetFacts: Sendable, Codable, Equatable {
        public var id: String
        public var tenant: String
        public var lastSyncAt: Date?
        public var lastSyncOK: Bool?
        public var lastProofAt: Date?
        public var lastProofOK: Bool?
        /// Snapshots of the tenant committed after the last sync attempt (all of them if none).
        public var unsyncedSnapshots: Int
    }

    public struct Outcome: Sendable, Codable, Equatable {
        public var action: String
        public var outcome: String
        public var count: Int
    }

    public struct PendingApproval: Sendable, Codable, Equatable {
        public var id: String
        public var action: String
        public var object: String
        public var requester: String
        public var createdAt: Date
    }
}

extension Catalog {
    /// Audit actions whose outcomes monitoring counts (server-side checks and jobs).
    static let monitoredActions = ["verify", "gc", "gc-store", "copy-sync", "copy-proof", "report-damaged-pack"]

    /// One consistent read of everything monitoring shows (``MonitoringFacts``).
    public func monitoringFacts(now: Date) throws -> MonitoringFacts {
        let targets = try copyTargets()
        let approvals = try requests(now: now).filter { $0.state == .pending }
        return try db.read { db in
            var f = MonitoringFacts()
            f.hosts = try Self.monitoredHosts(db)
            f.tenants = try Self.monitoredTenants(db)
            f.copyTargets = try targets.map { t in
                let since = t.info.lastSyncAt?.timeIntervalSince1970 ?? 0
                let n = try Int.fetchOne(db,
                                         sql: "SELECT COUNT(*) FROM snapshots WHERE tenant = ? AND committed_at > ?",
                                         arguments: [t.info.tenant, since]) ?? 0
                return MonitoringFacts.CopyTargetFacts(
                    id: t.info.id, tenant: t.info.tenant, lastSyncAt: t.info.lastSyncAt, lastSyncOK: t.info.lastSyncOK,
                    lastProofAt: t.info.lastProofAt, lastProofOK: t.info.lastProofOK, unsyncedSnapshots: n)
            }
            let marks = Self.monitoredActions.map { _ in "?" }.joined(separator: ",")
            f.outcomes = try Row.fetchAll(db, sql: """
                SELECT action, outcome, COUNT(*) AS n FROM audit WHERE action IN (\(marks)) GROUP BY action, outcome \
                ORDER BY action, outcome
                """, arguments: StatementArguments(Self.monitoredActions)).map { r in
                    MonitoringFacts.Outcome(action: r["action"], outcome: r["outcome"], count: r["n"])
                }
            // The catalog side of a run records `bytes=N` in its detail (GarbageCollection.swift).
            for detail in try String.fetchAll(db, sql: "SELECT detail FROM audit WHERE action = 'gc'") {
                f.gcBytesFreed += Self.field("bytes", in: detail) ?? 0
            }
            f.pendingApprovals = approvals.map {
                MonitoringFacts.PendingApproval(id: $0.id, action: $0.action, object: $0.object,
                                                requester: $0.requester, createdAt: $0.createdAt)
            }
            f.auditRecords = try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(seq), 0) FROM audit") ?? 0
            return f
        }
    }

    private static func monitoredHosts(_ db: Database) throws -> [MonitoringFacts.Host] {
        var hosts: [String: MonitoringFacts.Host] = [:]
        func key(_ t: String, _ h: String) -> String { t + "\u{0}" + h }
        for r in try Row.fetchAll(db, sql: """
            SELECT tenant, name, MIN(created_at) AS at, MAX(expected_interval) AS claimed FROM principals \
            WHERE role = 'writer' AND revoked = 0 AND tenant IS NOT NULL GROUP BY tenant, name
            """) {
            let (t, h): (String, String) = (r["tenant"], r["name"])
            // The interval the host sends with its commits (--expected-interval) is the default;
            // an admin's expectation below replaces it, since a taken host could claim a year.
            hosts[key(t, h)] = .init(tenant: t, host: h, snapshots: 0, lastCommit: nil,
                                     enrolledAt: Date(timeIntervalSince1970: r["at"]), expectedInterval: r["claimed"])
        }
        for r in try Row.fetchAll(db, sql: """
            SELECT tenant, host, COUNT(*) AS n, MAX(committed_at) AS last FROM snapshots GROUP BY tenant, host
            """) {
            let (t, h): (String, String) = (r["tenant"], r["host"])
            var x = hosts[key(t, h)] ?? .init(tenant: t, host: h, snapshots: 0, lastCommit: nil, enrolledAt: nil,
                                              expectedInterval: nil)
            x.snapshots = r["n"]
            x.lastCommit = Date(timeIntervalSince1970: r["last"])
            hosts[key(t, h)] = x
        }
        for r in try Row.fetchAll(db, sql: "SELECT tenant, host, interval_seconds FROM host_expectations") {
            let (t, h): (String, String) = (r["tenant"], r["host"])
            // An expectation for a host that never enrolled or committed still shows: it is overdue.
            var x = hosts[key(t, h)] ?? .init(tenant: t, host: h, snapshots: 0, lastCommit: nil, enrolledAt: nil,
                                              expectedInterval: nil)
            x.expectedInterval = r["interval_seconds"]
            hosts[key(t, h)] = x
        }
        return hosts.values.sorted { ($0.tenant, $0.host) < ($1.tenant, $1.host) }
    }

    private static func monitoredTenants(_ db: Database) throws -> [MonitoringFacts.Tenant] {
        var out: [MonitoringFacts.Tenant] = []
        for name in try String.fetchAll(db, sql: "SELECT name FROM tenants ORDER BY name") {
            let s = try Row.fetchOne(db, sql: """
                SELECT COUNT(*) AS n, \
                COALESCE(SUM(json_extract(meta, '$.statistics.bytesTotal')), 0) AS logical, \
                COALESCE(SUM(json_extract(meta, '$.statistics.bytesUploaded')), 0) AS new, \
                MIN(retain_until) AS lock FROM snapshots WHERE tenant = ?
                """, arguments: [name])
            let stored = try Int64.fetchOne(db, sql: "SELECT COALESCE(SUM(size), 0) FROM packs WHERE tenant = ?",
                                            arguments: [name]) ?? 0
            let damaged = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM damaged_packs WHERE tenant = ?",
                                           arguments: [name]) ?? 0
            let holds = try Int.fetchOne(db,
                                         sql: "SELECT COUNT(*) FROM holds WHERE tenant = ? AND released_at IS NULL",
                                         arguments: [name]) ?? 0
            out.append(MonitoringFacts.Tenant(
                tenant: name, snapshots: s?["n"] ?? 0, logicalBytes: s?["logical"] ?? 0, storedBytes: stored,
                newBytes: s?["new"] ?? 0,
                earliestLockEnd: (s?["lock"] as Double?).map(Date.init(timeIntervalSince1970:)),
                damagedPacks: damaged, activeHolds: holds))
        }
        return out
    }

    /// `name=N` from an audit detail such as `snapshots=2 packs=3 bytes=4096`.
    static func field(_ name: String, in detail: String) -> Int64? {
        for part in detail.split(separator: " ") where part.hasPrefix(name + "=") {
            return Int64(part.dropFirst(name.count + 1))
        }
        return nil
    }

    /// Sets (or with nil clears) how often `host` of `tenant` is expected to commit.
    public func setHostExpectation(tenant: String, host: String, interval: TimeInterval?) throws {
        try db.write { db in
            if let interval {
                try db.execute(sql: """
                    INSERT OR REPLACE INTO host_expectations(tenant, host, interval_seconds) VALUES (?, ?, ?)
                    """, arguments: [tenant, host, interval])
            } else {
                try db.execute(sql: "DELETE FROM host_expectations WHERE tenant = ? AND host = ?",
                               arguments: [tenant, host])
            }
        }
    }

    /// The monitoring tables (CatalogSchema.swift's notifications migration).
    static let monitoringSchema = """
        CREATE TABLE host_expectations (
            tenant TEXT NOT NULL, host TEXT NOT NULL, interval_seconds REAL NOT NULL,
            PRIMARY KEY (tenant, host)) WITHOUT ROWID;
        CREATE INDEX audit_action ON audit(action, outcome);
        CREATE TABLE notify_channels (
            id TEXT PRIMARY KEY, kind TEXT NOT NULL, target TEXT NOT NULL, config TEXT NOT NULL,
            events TEXT NOT NULL, tenant TEXT, created_at REAL NOT NULL);
        CREATE TABLE notify_alerts (
            key TEXT PRIMARY KEY, kind TEXT NOT NULL, tenant TEXT NOT NULL, host TEXT NOT NULL,
            summary TEXT NOT NULL, command TEXT NOT NULL, opened_at REAL NOT NULL, resolved_at REAL);
        CREATE INDEX notify_alerts_open ON notify_alerts(opened_at) WHERE resolved_at IS NULL;
        """
}

// Notification channels and alerts (Notifier.swift).
extension Catalog {
    /// A stored channel: its listing, and the settings delivery needs (paths, never secrets).
    public struct NotifyChannel: Sendable {
        public var info: Wire.NotifyChannelInfo
        public var config: Wire.AddNotifyChannelRequest
    }

    public func insertNotifyChannel(id: String, _ req: Wire.AddNotifyChannelRequest, target: String,
                                    now: Date) throws {
        let config = String(decoding: try JSONEncoder().encode(req), as: UTF8.self)
        try db.write { db in
            try db.execute(sql: """
                INSERT INTO notify_channels(id, kind, target, config, events, tenant, created_at) \
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """, arguments: [id, req.kind, target, config, (req.events ?? []).joined(separator: ","),
                                 req.tenant, now.timeIntervalSince1970])
        }
    }

    public func notifyChannels() throws -> [NotifyChannel] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM notify_channels ORDER BY created_at, id").compactMap { r in
                let configText: String = r["config"]
                guard let config = try? JSONDecoder().decode(Wire.AddNotifyChannelRequest.self,
                                                             from: Data(configText.utf8)) else { return nil }
                let events: String = r["events"]
                return NotifyChannel(info: Wire.NotifyChannelInfo(
                    id: r["id"], kind: r["kind"], target: r["target"],
                    events: events.split(separator: ",").map(String.init), tenant: r["tenant"],
                    createdAt: Date(timeIntervalSince1970: r["created_at"])), config: config)
            }
        }
    }

    /// Removes a channel: false if there was none.
    public func removeNotifyChannel(_ id: String) throws -> Bool {
        try db.write { db in
            try db.execute(sql: "DELETE FROM notify_channels WHERE id = ?", arguments: [id])
            return db.changesCount > 0
        }
    }

    /// Records that the condition `key` started, unless it is open already (or, for an event
    /// with no duration, was ever recorded): the event to send, or nil to send nothing.
    public func openAlert(key: String, kind: String, tenant: String, host: String, summary: String, command: String,
                   lasting: Bool, now: Date) throws -> Wire.NotifyEvent? {
        try db.write { db in
            let existing = try Row.fetchOne(db, sql: "SELECT resolved_at FROM notify_alerts WHERE key = ?",
                                            arguments: [key])
            if let existing {
                let resolved: Double? = existing["resolved_at"]
                // Open already (one message while it lasts), or a one-off already sent.
                if resolved == nil || !lasting { return nil }
            }
            try db.execute(sql: """
                INSERT OR REPLACE INTO notify_alerts(key, kind, tenant, host, summary, command, opened_at, \
                resolved_at) \
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [key, kind, tenant, host, summary, command, now.timeIntervalSince1970,
                                 lasting ? nil : now.timeIntervalSince1970])
            return Wire.NotifyEvent(id: UUID().uuidString.lowercased(), kind: kind, state: lasting ? "open" : "once",
                                    tenant: tenant, host: host, summary: summary, command: command, openedAt: now,
                                    resolvedAt: nil)
        }
    }

    /// Records that the open condition `key` ended: the "resolved" event to send, or nil.
    public func resolveAlert(key: String, now: Date) throws -> Wire.NotifyEvent? {
        try db.write { db in
            guard let r = try Row.fetchOne(db, sql: "SELECT * FROM notify_alerts WHERE key = ? AND resolved_at IS NULL",
                                           arguments: [key]) else { return nil }
            try db.execute(sql: "UPDATE notify_alerts SET resolved_at = ? WHERE key = ?",
                           arguments: [now.timeIntervalSince1970, key])
            return Wire.NotifyEvent(id: UUID().uuidString.lowercased(), kind: r["kind"], state: "resolved",
                                    tenant: r["tenant"], host: r["host"], summary: r["summary"],
                                    command: r["command"], openedAt: Date(timeIntervalSince1970: r["opened_at"]),
                                    resolvedAt: now)
        }
    }

    /// Conditions that started and have not ended, oldest first, with their keys.
    public func openAlerts() throws -> [(key: String, event: Wire.NotifyEvent)] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM notify_alerts WHERE resolved_at IS NULL ORDER BY opened_at, key")
                .map { r in
                    (r["key"], Wire.NotifyEvent(id: r["key"], kind: r["kind"], state: "open", tenant: r["tenant"],
                                                host: r["host"], summary: r["summary"], command: r["command"],
                                                openedAt: Date(timeIntervalSince1970: r["opened_at"]),
                                                resolvedAt: nil))
                }
        }
    }

    /// Audit records of failed checks and jobs after `seq`: (seq, action, object, outcome).
    public func failedJobRecords(after seq: Int64) throws
        -> [(seq: Int64, action: String, object: String, outcome: String)] {
        let marks = Self.monitoredActions.map { _ in "?" }.joined(separator: ",")
        return try db.read { db in
            try Row.fetchAll(db, sql: """
                SELECT seq, action, object, outcome FROM audit WHERE seq > ? AND action IN (\(marks)) \
                AND outcome IN ('error', 'partial', 'damaged') ORDER BY seq LIMIT 100
                """, arguments: StatementArguments([seq] as [any DatabaseValueConvertible])
                    + StatementArguments(Self.monitoredActions)).map { r in
                (r["seq"], r["action"], r["object"], r["outcome"])
            }
        }
    }
}

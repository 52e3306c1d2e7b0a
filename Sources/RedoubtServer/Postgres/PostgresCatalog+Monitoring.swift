import Foundation
import PostgresNIO
import RedoubtCore

// The PostgreSQL implementation of ``MonitoringRepository`` (SQLite: SQLiteCatalog+Monitoring.swift).
// An alert is opened and resolved by one statement each, whose row lock orders two servers
// noticing the same condition at once: the second reads what the first committed, so exactly
// one of them gets the event to send.

extension PostgresCatalog {
    /// Migration `pg-v5-pgrepos-monitoring`: SQLite's notifications migration.
    static let monitoringSchema = """
        CREATE TABLE host_expectations (
            tenant CTEXT NOT NULL, host CTEXT NOT NULL, interval_seconds DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (tenant, host));
        CREATE INDEX audit_action ON audit(action, outcome);
        CREATE TABLE notify_channels (
            id CTEXT PRIMARY KEY, kind CTEXT NOT NULL, target CTEXT NOT NULL, config CTEXT NOT NULL,
            events CTEXT NOT NULL, tenant CTEXT, created_at DOUBLE PRECISION NOT NULL);
        CREATE TABLE notify_alerts (
            key CTEXT PRIMARY KEY, kind CTEXT NOT NULL, tenant CTEXT NOT NULL, host CTEXT NOT NULL,
            summary CTEXT NOT NULL, command CTEXT NOT NULL, opened_at DOUBLE PRECISION NOT NULL,
            resolved_at DOUBLE PRECISION);
        CREATE INDEX notify_alerts_open ON notify_alerts(opened_at) WHERE resolved_at IS NULL;
        """
}

extension PostgresCatalog: MonitoringRepository {
    /// The catalog's part is read from one snapshot (copy targets and approvals before it,
    /// as SQLite does).
    public func monitoringFacts(now: Date) async throws -> MonitoringFacts {
        let targets = try await copyTargets(tenant: nil)
        let approvals = try await requests(now: now).filter { $0.state == .pending }
        return try await transaction(.snapshot, "monitoringFacts") { conn in
            var f = MonitoringFacts()
            f.hosts = try await monitoredHosts(conn)
            f.tenants = try await monitoredTenants(conn)
            for t in targets {
                let since = t.info.lastSyncAt?.timeIntervalSince1970 ?? 0
                let n = try await conn.all("""
                    SELECT COUNT(*) FROM snapshots WHERE tenant = \(t.info.tenant) AND committed_at > \(since)
                    """, logger).first?.decode(Int64.self) ?? 0
                f.copyTargets.append(MonitoringFacts.CopyTargetFacts(
                    id: t.info.id, tenant: t.info.tenant, lastSyncAt: t.info.lastSyncAt, lastSyncOK: t.info.lastSyncOK,
                    lastProofAt: t.info.lastProofAt, lastProofOK: t.info.lastProofOK, unsyncedSnapshots: Int(n)))
            }
            f.outcomes = try await conn.all("""
                SELECT action, outcome, COUNT(*) FROM audit WHERE action = ANY(\(Catalog.monitoredActions)::text[])
                GROUP BY action, outcome ORDER BY action, outcome
                """, logger).map { r in
                let (action, outcome, n) = try r.decode((String, String, Int64).self)
                return MonitoringFacts.Outcome(action: action, outcome: outcome, count: Int(n))
            }
            // The catalog side of a run records `bytes=N` in its detail (GarbageCollection.swift).
            for r in try await conn.all("SELECT detail FROM audit WHERE action = 'gc'", logger) {
                f.gcBytesFreed += Catalog.field("bytes", in: try r.decode(String.self)) ?? 0
            }
            f.pendingApprovals = approvals.map {
                MonitoringFacts.PendingApproval(id: $0.id, action: $0.action, object: $0.object,
                                                requester: $0.requester, createdAt: $0.createdAt)
            }
            f.auditRecords = try await conn.all("SELECT COALESCE(MAX(seq), 0) FROM audit", logger).first?
                .decode(Int64.self) ?? 0
            return f
        }
    }

    private func monitoredHosts(_ conn: PostgresConnection) async throws -> [MonitoringFacts.Host] {
        var hosts: [String: MonitoringFacts.Host] = [:]
        func key(_ t: String, _ h: String) -> String { t + "\u{0}" + h }
        for r in try await conn.all("""
            SELECT tenant, name, MIN(created_at), MAX(expected_interval) FROM principals
            WHERE role = 'writer' AND NOT revoked AND tenant IS NOT NULL GROUP BY tenant, name
            """, logger) {
            let (t, h, at, claimed) = try r.decode((String, String, Double, Double?).self)
            // The interval the host sends with its commits is the default; an admin's
            // expectation below replaces it, since a taken host could claim a year.
            hosts[key(t, h)] = .init(tenant: t, host: h, snapshots: 0, lastCommit: nil, enrolledAt: Self.date(at),
                                     expectedInterval: claimed)
        }
        for r in try await conn.all("""
            SELECT tenant, host, COUNT(*), MAX(committed_at) FROM snapshots GROUP BY tenant, host
            """, logger) {
            let (t, h, n, last) = try r.decode((String, String, Int64, Double).self)
            var x = hosts[key(t, h)] ?? .init(tenant: t, host: h, snapshots: 0, lastCommit: nil, enrolledAt: nil,
                                              expectedInterval: nil)
            x.snapshots = Int(n)
            x.lastCommit = Self.date(last)
            hosts[key(t, h)] = x
        }
        for r in try await conn.all("SELECT tenant, host, interval_seconds FROM host_expectations", logger) {
            let (t, h, interval) = try r.decode((String, String, Double).self)
            // An expectation for a host that never enrolled or committed still shows: it is overdue.
            var x = hosts[key(t, h)] ?? .init(tenant: t, host: h, snapshots: 0, lastCommit: nil, enrolledAt: nil,
                                              expectedInterval: nil)
            x.expectedInterval = interval
            hosts[key(t, h)] = x
        }
        return hosts.values.sorted { ($0.tenant, $0.host) < ($1.tenant, $1.host) }
    }

    private func monitoredTenants(_ conn: PostgresConnection) async throws -> [MonitoringFacts.Tenant] {
        var out: [MonitoringFacts.Tenant] = []
        for name in try await conn.all("SELECT name FROM tenants ORDER BY name", logger)
            .map({ try $0.decode(String.self) }) {
            // The statistics the host declared, read from the stored record as SQLite's json_extract does.
            guard let s = try await conn.all("""
                SELECT COUNT(*),
                    COALESCE(SUM((meta::jsonb #>> '{statistics,bytesTotal}')::numeric), 0)::bigint,
                    COALESCE(SUM((meta::jsonb #>> '{statistics,bytesUploaded}')::numeric), 0)::bigint,
                    MIN(retain_until),
                    (SELECT COALESCE(SUM(size), 0)::bigint FROM packs WHERE tenant = \(name)),
                    (SELECT COUNT(*) FROM damaged_packs WHERE tenant = \(name)),
                    (SELECT COUNT(*) FROM holds WHERE tenant = \(name) AND released_at IS NULL)
                FROM snapshots WHERE tenant = \(name)
                """, logger).first else { continue }
            let (n, logical, new, lock, stored, damaged, holds) = try s.decode(
                (Int64, Int64, Int64, Double?, Int64, Int64, Int64).self)
            out.append(MonitoringFacts.Tenant(
                tenant: name, snapshots: Int(n), logicalBytes: logical, storedBytes: stored, newBytes: new,
                earliestLockEnd: lock.map(Self.date), damagedPacks: Int(damaged), activeHolds: Int(holds)))
        }
        return out
    }

    public func setHostExpectation(tenant: String, host: String, interval: TimeInterval?) async throws {
        if let interval {
            _ = try await rows("""
                INSERT INTO host_expectations(tenant, host, interval_seconds) VALUES (\(tenant), \(host), \(interval))
                ON CONFLICT (tenant, host) DO UPDATE SET interval_seconds = EXCLUDED.interval_seconds
                """)
        } else {
            _ = try await rows("DELETE FROM host_expectations WHERE tenant = \(tenant) AND host = \(host)")
        }
    }

    public func insertNotifyChannel(id: String, _ req: Wire.AddNotifyChannelRequest, target: String,
                                    now: Date) async throws {
        let config = String(decoding: try JSONEncoder().encode(req), as: UTF8.self)
        let events = (req.events ?? []).joined(separator: ",")
        _ = try await rows("""
            INSERT INTO notify_channels(id, kind, target, config, events, tenant, created_at)
            VALUES (\(id), \(req.kind), \(target), \(config), \(events), \(req.tenant), \(now.timeIntervalSince1970))
            """)
    }

    public func notifyChannels() async throws -> [Catalog.NotifyChannel] {
        try await rows("""
            SELECT id, kind, target, config, events, tenant, created_at FROM notify_channels ORDER BY created_at, id
            """).compactMap { r in
            let (id, kind, target, configText, events, tenant, created) = try r.decode(
                (String, String, String, String, String, String?, Double).self)
            guard let config = try? JSONDecoder().decode(Wire.AddNotifyChannelRequest.self,
                                                         from: Data(configText.utf8)) else { return nil }
            return Catalog.NotifyChannel(info: Wire.NotifyChannelInfo(
                id: id, kind: kind, target: target, events: events.split(separator: ",").map(String.init),
                tenant: tenant, createdAt: Self.date(created)), config: config)
        }
    }

    public func removeNotifyChannel(_ id: String) async throws -> Bool {
        try await !rows("DELETE FROM notify_channels WHERE id = \(id) RETURNING 1").isEmpty
    }

    /// One upsert: a new key is inserted; an existing one is replaced only if it is a lasting
    /// condition that ended (an open one sends one message while it lasts, a one-off is sent
    /// once). The row is returned only when written, so of two servers opening one key at
    /// once, the one that waited for the other's row lock writes nothing and sends nothing.
    public func openAlert(key: String, kind: String, tenant: String, host: String, summary: String, command: String,
                          lasting: Bool, now: Date) async throws -> Wire.NotifyEvent? {
        let t = now.timeIntervalSince1970
        let resolved: Double? = lasting ? nil : t
        let written = try await !rows("""
            INSERT INTO notify_alerts(key, kind, tenant, host, summary, command, opened_at, resolved_at)
            VALUES (\(key), \(kind), \(tenant), \(host), \(summary), \(command), \(t), \(resolved))
            ON CONFLICT (key) DO UPDATE SET kind = EXCLUDED.kind, tenant = EXCLUDED.tenant, host = EXCLUDED.host,
                summary = EXCLUDED.summary, command = EXCLUDED.command, opened_at = EXCLUDED.opened_at,
                resolved_at = EXCLUDED.resolved_at
            WHERE \(lasting) AND notify_alerts.resolved_at IS NOT NULL
            RETURNING 1
            """).isEmpty
        guard written else { return nil }
        return Wire.NotifyEvent(id: UUID().uuidString.lowercased(), kind: kind, state: lasting ? "open" : "once",
                                tenant: tenant, host: host, summary: summary, command: command, openedAt: now,
                                resolvedAt: nil)
    }

    /// One compare-and-set on `resolved_at IS NULL`: of two servers resolving one alert at
    /// once, one gets the event.
    public func resolveAlert(key: String, now: Date) async throws -> Wire.NotifyEvent? {
        guard let r = try await rows("""
            UPDATE notify_alerts SET resolved_at = \(now.timeIntervalSince1970)
            WHERE key = \(key) AND resolved_at IS NULL
            RETURNING kind, tenant, host, summary, command, opened_at
            """).first else { return nil }
        let (kind, tenant, host, summary, command, opened) = try r.decode(
            (String, String, String, String, String, Double).self)
        return Wire.NotifyEvent(id: UUID().uuidString.lowercased(), kind: kind, state: "resolved", tenant: tenant,
                                host: host, summary: summary, command: command, openedAt: Self.date(opened),
                                resolvedAt: now)
    }

    public func openAlerts() async throws -> [(key: String, event: Wire.NotifyEvent)] {
        try await rows("""
            SELECT key, kind, tenant, host, summary, command, opened_at FROM notify_alerts WHERE resolved_at IS NULL
            ORDER BY opened_at, key
            """).map { r in
            let (key, kind, tenant, host, summary, command, opened) = try r.decode(
                (String, String, String, String, String, String, Double).self)
            return (key, Wire.NotifyEvent(id: key, kind: kind, state: "open", tenant: tenant, host: host,
                                          summary: summary, command: command, openedAt: Self.date(opened),
                                          resolvedAt: nil))
        }
    }

    public func failedJobRecords(after seq: Int64) async throws
        -> [(seq: Int64, action: String, object: String, outcome: String)] {
        try await rows("""
            SELECT seq, action, object, outcome FROM audit
            WHERE seq > \(seq) AND action = ANY(\(Catalog.monitoredActions)::text[])
              AND outcome IN ('error', 'partial', 'damaged')
            ORDER BY seq LIMIT 100
            """).map { r in
            let (seq, action, object, outcome) = try r.decode((Int64, String, String, String).self)
            return (seq: seq, action: action, object: object, outcome: outcome)
        }
    }
}

import Foundation
import GRDB
import RedoubtCore

// The SQLite implementation of ``JobRepository`` and ``FindingRepository``, the scrub's
// ledger, and each host's expected backup interval.

extension Catalog {
    /// Migration `v15-server-jobs`: per job and tenant its state and lease, a history of runs,
    /// when the scrub last re-read each pack, integrity findings, and hosts' expected intervals.
    static let jobSchema = """
        CREATE TABLE job_state (
            job TEXT NOT NULL, tenant TEXT NOT NULL, next_due REAL, requested_at REAL,
            failures INTEGER NOT NULL DEFAULT 0, last_start REAL, last_end REAL, last_outcome TEXT, last_error TEXT,
            lease_holder TEXT, lease_expires REAL, PRIMARY KEY (job, tenant)) WITHOUT ROWID;
        CREATE TABLE job_runs (
            seq INTEGER PRIMARY KEY, job TEXT NOT NULL, tenant TEXT NOT NULL, holder TEXT NOT NULL,
            started_at REAL NOT NULL, ended_at REAL, outcome TEXT, error TEXT);
        CREATE INDEX job_runs_started ON job_runs(started_at);
        CREATE TABLE pack_scrubs (
            tenant TEXT NOT NULL, pack TEXT NOT NULL, scrubbed_at REAL NOT NULL, outcome TEXT NOT NULL,
            PRIMARY KEY (tenant, pack)) WITHOUT ROWID;
        CREATE TABLE integrity_findings (
            id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, object TEXT NOT NULL, code TEXT NOT NULL,
            detail TEXT NOT NULL, source TEXT NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL,
            count INTEGER NOT NULL, UNIQUE (tenant, object, code));
        ALTER TABLE principals ADD COLUMN expected_interval REAL;
        """

    /// How long the run history is kept.
    static let jobRunHistory: TimeInterval = 90 * 86400

    public func jobState(job: String, tenant: String) throws -> JobState? {
        try db.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM job_state WHERE job = ? AND tenant = ?",
                             arguments: [job, tenant]).map(Self.jobState)
        }
    }

    public func jobStates() throws -> [JobState] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM job_state ORDER BY tenant, job").map(Self.jobState)
        }
    }

    static func jobState(_ r: Row) -> JobState {
        let date = { (k: String) in (r[k] as Double?).map(Date.init(timeIntervalSince1970:)) }
        return JobState(job: r["job"], tenant: r["tenant"], nextDue: date("next_due"),
                        requestedAt: date("requested_at"),
                        failures: r["failures"], lastStart: date("last_start"), lastEnd: date("last_end"),
                        lastOutcome: r["last_outcome"], lastError: r["last_error"], leaseHolder: r["lease_holder"],
                        leaseExpires: date("lease_expires"))
    }

    public func acquireJobLease(job: String, tenant: String, holder: String, now: Date,
                                ttl: TimeInterval) throws -> Int64? {
        try db.write { db in
            let t = now.timeIntervalSince1970
            if let r = try Row.fetchOne(db, sql: "SELECT * FROM job_state WHERE job = ? AND tenant = ?",
                                        arguments: [job, tenant]) {
                let s = Self.jobState(r)
                // Any unexpired lease, this holder's too: one process never runs a job twice at once either.
                if s.leaseHolder != nil, let e = s.leaseExpires, e > now { return nil }
                let requested = s.requestedAt.map { $0 <= now } ?? false
                if let due = s.nextDue, due > now, !requested { return nil }
                // The run takes up the request here, not at its end: which requests it covers is
                // decided by transaction order, never by comparing clock readings (a request in
                // the same second as the start, or on a clock that stands still, is not lost).
                try db.execute(sql: """
                    UPDATE job_state SET lease_holder = ?, lease_expires = ?, last_start = ?, requested_at = NULL
                    WHERE job = ? AND tenant = ?
                    """, arguments: [holder, t + ttl, t, job, tenant])
            } else {
                try db.execute(sql: """
                    INSERT INTO job_state(job, tenant, lease_holder, lease_expires, last_start) VALUES (?, ?, ?, ?, ?)
                    """, arguments: [job, tenant, holder, t + ttl, t])
            }
            try db.execute(sql: "INSERT INTO job_runs(job, tenant, holder, started_at) VALUES (?, ?, ?, ?)",
                           arguments: [job, tenant, holder, t])
            return db.lastInsertedRowID
        }
    }

    public func renewJobLease(job: String, tenant: String, holder: String, now: Date,
                              ttl: TimeInterval) throws -> Bool {
        try db.write { db in
            try db.execute(sql: """
                UPDATE job_state SET lease_expires = ? WHERE job = ? AND tenant = ? AND lease_holder = ?
                """, arguments: [now.timeIntervalSince1970 + ttl, job, tenant, holder])
            return db.changesCount == 1
        }
    }

    public func finishJob(run: Int64, job: String, tenant: String, holder: String, started: Date, ended: Date,
                          outcome: String, error: String?, failures: Int, nextDue: Date) throws {
        try db.write { db in
            try db.execute(sql: "UPDATE job_runs SET ended_at = ?, outcome = ?, error = ? WHERE seq = ?",
                           arguments: [ended.timeIntervalSince1970, outcome, error, run])
            // A request made while the run ran (a commit meanwhile) stays for the next run: the
            // lease took up only the ones before it.
            try db.execute(sql: """
                UPDATE job_state SET last_end = ?, last_outcome = ?, last_error = ?, failures = ?, next_due = ?,
                    lease_holder = NULL, lease_expires = NULL
                WHERE job = ? AND tenant = ? AND lease_holder = ?
                """, arguments: [ended.timeIntervalSince1970, outcome, error, failures, nextDue.timeIntervalSince1970,
                                 job, tenant, holder])
            try db.execute(sql: "DELETE FROM job_runs WHERE started_at < ?",
                           arguments: [ended.timeIntervalSince1970 - Self.jobRunHistory])
        }
    }

    public func requestJobRun(job: String, tenant: String, at: Date) throws {
        try db.write { db in
            try db.execute(sql: """
                INSERT INTO job_state(job, tenant, requested_at) VALUES (?, ?, ?)
                ON CONFLICT(job, tenant) DO UPDATE SET requested_at = COALESCE(requested_at, excluded.requested_at)
                """, arguments: [job, tenant, at.timeIntervalSince1970])
        }
    }

    public func jobRuns(job: String?, tenant: String?) throws -> [JobRun] {
        try db.read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM job_runs WHERE (? IS NULL OR job = ?) AND (? IS NULL OR tenant = ?) ORDER BY seq
                """, arguments: [job, job, tenant, tenant]).map { r in
                JobRun(seq: r["seq"], job: r["job"], tenant: r["tenant"], holder: r["holder"],
                       startedAt: Date(timeIntervalSince1970: r["started_at"]),
                       endedAt: (r["ended_at"] as Double?).map(Date.init(timeIntervalSince1970:)),
                       outcome: r["outcome"], error: r["error"])
            }
        }
    }
}

// MARK: the scrub's ledger

extension Catalog {
    /// The packs of `tenant` the scrub re-reads now: the ones checked longest ago (a pack's
    /// upload counts as a check: the server hashed it then), at least `ceil(packs × interval /
    /// period)` of them, and every one whose last check is so old that waiting one more
    /// interval would pass `period`. Run every `interval`, this re-reads each pack at least
    /// once per `period`.
    public func scrubSlice(tenant: String, now: Date, period: TimeInterval,
                    interval: TimeInterval) throws -> [(id: String, size: Int64)] {
        try db.read { db in
            let total = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM packs WHERE tenant = ?",
                                         arguments: [tenant]) ?? 0
            let share = Int((Double(total) * min(1, interval / max(period, 1))).rounded(.up))
            let overdue = now.timeIntervalSince1970 - max(0, period - interval)
            let rows = try Row.fetchCursor(db, sql: """
                SELECT p.id, p.size, COALESCE(s.scrubbed_at, p.created_at) AS checked
                FROM packs p LEFT JOIN pack_scrubs s ON s.tenant = p.tenant AND s.pack = p.id
                WHERE p.tenant = ? ORDER BY checked, p.id
                """, arguments: [tenant])
            var out: [(id: String, size: Int64)] = []
            while let r = try rows.next() {
                guard out.count < share || (r["checked"] as Double) <= overdue else { break }
                out.append((r["id"], r["size"]))
            }
            return out
        }
    }

    public func recordScrub(tenant: String, pack: String, result: String, at: Date) throws {
        try db.write { db in
            try db.execute(sql: """
                INSERT INTO pack_scrubs(tenant, pack, scrubbed_at, outcome) VALUES (?, ?, ?, ?)
                ON CONFLICT(tenant, pack) DO UPDATE SET scrubbed_at = excluded.scrubbed_at, outcome = excluded.outcome
                """, arguments: [tenant, pack, at.timeIntervalSince1970, result])
        }
    }
}

// MARK: findings

extension Catalog: FindingRepository {
    @discardableResult
    public func recordFinding(tenant: String, object: String, code: String, detail: String, source: String,
                              at: Date) throws -> Bool {
        try db.write { db in
            let t = at.timeIntervalSince1970
            try db.execute(sql: """
                UPDATE integrity_findings SET last_seen = ?, count = count + 1, detail = ?, source = ?
                WHERE tenant = ? AND object = ? AND code = ?
                """, arguments: [t, detail, source, tenant, object, code])
            guard db.changesCount == 0 else { return false }
            try db.execute(sql: """
                INSERT INTO integrity_findings(tenant, object, code, detail, source, first_seen, last_seen, count)
                VALUES (?, ?, ?, ?, ?, ?, ?, 1)
                """, arguments: [tenant, object, code, detail, source, t, t])
            return true
        }
    }

    public func findings(tenant: String?, since: Date?) throws -> [IntegrityFinding] {
        try db.read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM integrity_findings WHERE (? IS NULL OR tenant = ?) AND last_seen >= ? ORDER BY id
                """, arguments: [tenant, tenant, since?.timeIntervalSince1970 ?? -Double.greatestFiniteMagnitude])
                .map { r in
                    IntegrityFinding(tenant: r["tenant"], object: r["object"], code: r["code"], detail: r["detail"],
                                     source: r["source"], firstSeen: Date(timeIntervalSince1970: r["first_seen"]),
                                     lastSeen: Date(timeIntervalSince1970: r["last_seen"]), count: r["count"])
                }
        }
    }
}

// MARK: hosts' expected intervals

extension Catalog {
    /// Records how often the writer `principalID` says it commits (nil clears it).
    public func setExpectedInterval(principalID: String, seconds: TimeInterval?) throws {
        try db.write { db in
            try db.execute(sql: "UPDATE principals SET expected_interval = ? WHERE id = ?",
                           arguments: [seconds, principalID])
        }
    }

    /// Expected intervals by principal ID (writers that sent one).
    public func expectedIntervals() throws -> [String: TimeInterval] {
        try db.read { db in
            var out: [String: TimeInterval] = [:]
            for r in try Row.fetchAll(db, sql: """
                SELECT id, expected_interval FROM principals WHERE expected_interval IS NOT NULL
                """) {
                out[r["id"]] = r["expected_interval"]
            }
            return out
        }
    }
}

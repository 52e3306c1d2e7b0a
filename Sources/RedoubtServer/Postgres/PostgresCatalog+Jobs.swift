import Foundation
import PostgresNIO
import RedoubtCore

// The PostgreSQL implementation of ``JobRepository`` (SQLite: SQLiteCatalog+Jobs.swift): the
// per-job-and-tenant lease that lets several servers on one database run each job of each
// tenant on one server at a time. Taking the lease locks the job's row (`INSERT … ON CONFLICT
// DO NOTHING` so there is a row, then `SELECT … FOR UPDATE`), so two servers taking it at once
// are ordered: the second reads what the first committed (its unexpired lease) and gets no run.
// Renewal and release are one `UPDATE … WHERE lease_holder = <holder>`: a server whose lease
// expired and was taken changes nothing.

extension PostgresCatalog {
    /// Migration `pg-v4-pgrepos-jobs`: the job tables of SQLite's `v15-server-jobs` (its
    /// findings and expected intervals are pg-v2).
    static let jobSchema = """
        CREATE TABLE job_state (
            job CTEXT NOT NULL, tenant CTEXT NOT NULL, next_due DOUBLE PRECISION, requested_at DOUBLE PRECISION,
            failures BIGINT NOT NULL DEFAULT 0, last_start DOUBLE PRECISION, last_end DOUBLE PRECISION,
            last_outcome CTEXT, last_error CTEXT, lease_holder CTEXT, lease_expires DOUBLE PRECISION,
            PRIMARY KEY (job, tenant));
        CREATE TABLE job_runs (
            seq BIGSERIAL PRIMARY KEY, job CTEXT NOT NULL, tenant CTEXT NOT NULL, holder CTEXT NOT NULL,
            started_at DOUBLE PRECISION NOT NULL, ended_at DOUBLE PRECISION, outcome CTEXT, error CTEXT);
        CREATE INDEX job_runs_started ON job_runs(started_at);
        CREATE TABLE pack_scrubs (
            tenant CTEXT NOT NULL, pack CTEXT NOT NULL, scrubbed_at DOUBLE PRECISION NOT NULL,
            outcome CTEXT NOT NULL, PRIMARY KEY (tenant, pack));
        """

    static let jobStateColumns = """
        job, tenant, next_due, requested_at, failures, last_start, last_end, last_outcome, last_error, \
        lease_holder, lease_expires
        """

    static func jobState(_ r: PostgresRow) throws -> JobState {
        let (job, tenant, due, requested, failures, start, end, outcome, error, holder, expires) = try r.decode(
            (String, String, Double?, Double?, Int64, Double?, Double?, String?, String?, String?, Double?).self)
        return JobState(job: job, tenant: tenant, nextDue: due.map(date), requestedAt: requested.map(date),
                        failures: Int(failures), lastStart: start.map(date), lastEnd: end.map(date),
                        lastOutcome: outcome, lastError: error, leaseHolder: holder,
                        leaseExpires: expires.map(date))
    }
}

extension PostgresCatalog: JobRepository {
    public func jobState(job: String, tenant: String) async throws -> JobState? {
        try await rows("""
            SELECT \(unescaped: Self.jobStateColumns) FROM job_state WHERE job = \(job) AND tenant = \(tenant)
            """).first.map(Self.jobState)
    }

    public func jobStates() async throws -> [JobState] {
        try await rows("SELECT \(unescaped: Self.jobStateColumns) FROM job_state ORDER BY tenant, job")
            .map(Self.jobState)
    }

    public func acquireJobLease(job: String, tenant: String, holder: String, now: Date,
                                ttl: TimeInterval) async throws -> Int64? {
        let t = now.timeIntervalSince1970
        return try await transaction(.readCommitted, "acquireJobLease") { conn -> Int64? in
            // A row to lock, then the lock: another server's acquire of the same job waits here
            // until this transaction ends, and then reads the lease this one took. (A row only
            // inserted is a job never run: due, no lease, the same as no row.)
            try await conn.query("""
                INSERT INTO job_state(job, tenant) VALUES (\(job), \(tenant)) ON CONFLICT DO NOTHING
                """, logger: logger)
            guard let r = try await conn.all("""
                SELECT \(unescaped: Self.jobStateColumns) FROM job_state WHERE job = \(job) AND tenant = \(tenant)
                FOR UPDATE
                """, logger).first else { return nil }
            let s = try Self.jobState(r)
            // Any unexpired lease, this holder's too: one process never runs a job twice at once either.
            if s.leaseHolder != nil, let e = s.leaseExpires, e > now { return nil }
            let requested = s.requestedAt.map { $0 <= now } ?? false
            if let due = s.nextDue, due > now, !requested { return nil }
            // The run takes up the request here, not at its end: which requests it covers is
            // decided by the row lock's order, never by comparing clock readings.
            try await conn.query("""
                UPDATE job_state SET lease_holder = \(holder), lease_expires = \(t + ttl), last_start = \(t),
                    requested_at = NULL
                WHERE job = \(job) AND tenant = \(tenant)
                """, logger: logger)
            return try await conn.all("""
                INSERT INTO job_runs(job, tenant, holder, started_at) VALUES (\(job), \(tenant), \(holder), \(t))
                RETURNING seq
                """, logger).first?.decode(Int64.self)
        }
    }

    public func renewJobLease(job: String, tenant: String, holder: String, now: Date,
                              ttl: TimeInterval) async throws -> Bool {
        try await rows("""
            UPDATE job_state SET lease_expires = \(now.timeIntervalSince1970 + ttl)
            WHERE job = \(job) AND tenant = \(tenant) AND lease_holder = \(holder) RETURNING 1
            """).count == 1
    }

    public func finishJob(run: Int64, job: String, tenant: String, holder: String, started: Date, ended: Date,
                          outcome: String, error: String?, failures: Int, nextDue: Date) async throws {
        let end = ended.timeIntervalSince1970
        try await transaction(.readCommitted, "finishJob") { conn in
            try await conn.query("""
                UPDATE job_runs SET ended_at = \(end), outcome = \(outcome), error = \(error) WHERE seq = \(run)
                """, logger: logger)
            // A request made while the run ran stays for the next run: the lease took up only
            // the ones before it. A lease another server took after this one expired stays its.
            try await conn.query("""
                UPDATE job_state SET last_end = \(end), last_outcome = \(outcome), last_error = \(error),
                    failures = \(Int64(failures)), next_due = \(nextDue.timeIntervalSince1970),
                    lease_holder = NULL, lease_expires = NULL
                WHERE job = \(job) AND tenant = \(tenant) AND lease_holder = \(holder)
                """, logger: logger)
            try await conn.query("DELETE FROM job_runs WHERE started_at < \(end - Catalog.jobRunHistory)",
                                 logger: logger)
        }
    }

    /// One upsert: the row lock orders it against a run taking the lease (which clears the
    /// request it took up), so a request is either taken up by that run or kept for the next.
    public func requestJobRun(job: String, tenant: String, at: Date) async throws {
        _ = try await rows("""
            INSERT INTO job_state(job, tenant, requested_at) VALUES (\(job), \(tenant), \(at.timeIntervalSince1970))
            ON CONFLICT (job, tenant) DO UPDATE
                SET requested_at = COALESCE(job_state.requested_at, EXCLUDED.requested_at)
            """)
    }

    public func jobRuns(job: String?, tenant: String?) async throws -> [JobRun] {
        try await rows("""
            SELECT seq, job, tenant, holder, started_at, ended_at, outcome, error FROM job_runs
            WHERE (\(job)::text IS NULL OR job = \(job)) AND (\(tenant)::text IS NULL OR tenant = \(tenant))
            ORDER BY seq
            """).map { r in
            let (seq, job, tenant, holder, started, ended, outcome, error) = try r.decode(
                (Int64, String, String, String, Double, Double?, String?, String?).self)
            return JobRun(seq: seq, job: job, tenant: tenant, holder: holder, startedAt: Self.date(started),
                          endedAt: ended.map(Self.date), outcome: outcome, error: error)
        }
    }
}

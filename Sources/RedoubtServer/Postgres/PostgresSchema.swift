import Foundation
import PostgresNIO

// The PostgreSQL catalog's schema: the SQLite catalog's tables (CatalogSchema.swift, as of its
// last migration), in PostgreSQL types. Times are `double precision` seconds since 1970, as in
// SQLite, so they read back exactly as the audit hash covers them; flags are `boolean`; chunk
// IDs and keys `bytea`. Like SQLite's, each migration runs once, in order, recorded by its
// identifier in `redoubt_migrations`; a released one is never edited. Servers starting at once
// serialise on an advisory lock, so only one runs a migration.

extension PostgresCatalog {
    /// Advisory lock namespaces (the first key of the two-key form; the second is the schema's hash).
    enum LockSpace: Int32 {
        case migrations = 0x5244_0001
        case audit = 0x5244_0002
    }

    static let migrations: [(id: String, sql: String)] = [
        ("pg-v1", """
            -- Text compares and sorts by code point, as in SQLite, whatever the database's locale:
            -- listing order and cursors must not depend on how the cluster was initialised.
            CREATE DOMAIN ctext AS text COLLATE "C";
            CREATE TABLE tenants (
                name CTEXT PRIMARY KEY, read_key_id CTEXT NOT NULL, read_public_key BYTEA NOT NULL,
                write_material BYTEA NOT NULL, wrapped_read_key CTEXT NOT NULL,
                min_retention DOUBLE PRECISION NOT NULL, created_at DOUBLE PRECISION NOT NULL,
                key_version INTEGER NOT NULL DEFAULT 1, shredded_at DOUBLE PRECISION,
                dedup_scope CTEXT NOT NULL DEFAULT 'host');
            CREATE TABLE retired_keks (
                tenant CTEXT NOT NULL, version INTEGER NOT NULL, stub CTEXT NOT NULL,
                retired_at DOUBLE PRECISION NOT NULL, destroyed_at DOUBLE PRECISION, PRIMARY KEY (tenant, version));
            CREATE TABLE principals (
                id CTEXT PRIMARY KEY, role CTEXT NOT NULL, tenant CTEXT, name CTEXT NOT NULL,
                fingerprint CTEXT NOT NULL UNIQUE, host_key BYTEA, os CTEXT, created_at DOUBLE PRECISION NOT NULL,
                revoked BOOLEAN NOT NULL DEFAULT FALSE, revoked_at DOUBLE PRECISION);
            CREATE UNIQUE INDEX principals_tenant_role_name ON principals(tenant, role, name) NULLS NOT DISTINCT
                WHERE NOT revoked;
            CREATE TABLE enrollments (
                token_hash CTEXT PRIMARY KEY, role CTEXT NOT NULL, tenant CTEXT, name CTEXT NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL, used_at DOUBLE PRECISION, created_by CTEXT NOT NULL,
                cancelled_at DOUBLE PRECISION);
            CREATE TABLE packs (
                tenant CTEXT NOT NULL, id CTEXT NOT NULL, size BIGINT NOT NULL, retain_until DOUBLE PRECISION NOT NULL,
                created_at DOUBLE PRECISION NOT NULL, uploader CTEXT, PRIMARY KEY (tenant, id));
            CREATE TABLE chunks (
                tenant CTEXT NOT NULL, chunk_id BYTEA NOT NULL, scope CTEXT NOT NULL, pack_id CTEXT NOT NULL,
                verified BOOLEAN NOT NULL DEFAULT FALSE, PRIMARY KEY (tenant, chunk_id, scope));
            CREATE INDEX chunks_pack ON chunks(tenant, pack_id);
            CREATE TABLE snapshots (
                id CTEXT PRIMARY KEY, tenant CTEXT NOT NULL, host CTEXT NOT NULL, time DOUBLE PRECISION NOT NULL,
                committed_at DOUBLE PRECISION NOT NULL, retain_until DOUBLE PRECISION NOT NULL, meta CTEXT NOT NULL,
                manifest_size BIGINT NOT NULL);
            CREATE INDEX snapshots_tenant_host ON snapshots(tenant, host, time);
            CREATE INDEX snapshots_listing ON snapshots(tenant, committed_at, id);
            CREATE INDEX snapshots_host_listing ON snapshots(tenant, host, committed_at, id);
            CREATE TABLE snapshot_packs (snapshot CTEXT NOT NULL, pack CTEXT NOT NULL, PRIMARY KEY (snapshot, pack));
            CREATE INDEX snapshot_packs_pack ON snapshot_packs(pack);
            CREATE TABLE audit (
                seq BIGINT PRIMARY KEY, time DOUBLE PRECISION NOT NULL, actor CTEXT NOT NULL, role CTEXT NOT NULL,
                credential CTEXT NOT NULL, source CTEXT NOT NULL, action CTEXT NOT NULL, object CTEXT NOT NULL,
                outcome CTEXT NOT NULL, detail CTEXT NOT NULL, prev_hash CTEXT NOT NULL, hash CTEXT NOT NULL);
            CREATE INDEX audit_actor_seq ON audit(actor, seq);
            CREATE TABLE clock (id INTEGER PRIMARY KEY CHECK (id = 1), latest DOUBLE PRECISION NOT NULL);
            CREATE TABLE settings (key CTEXT PRIMARY KEY, value CTEXT NOT NULL);
            CREATE TABLE requests (
                id CTEXT PRIMARY KEY, action CTEXT NOT NULL, object CTEXT NOT NULL, parameters CTEXT NOT NULL,
                requester_id CTEXT NOT NULL, requester CTEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL, needed INTEGER NOT NULL, rejected_by CTEXT,
                executed_at DOUBLE PRECISION);
            CREATE TABLE approvals (
                request_id CTEXT NOT NULL, approver_id CTEXT NOT NULL, approver CTEXT NOT NULL,
                time DOUBLE PRECISION NOT NULL, PRIMARY KEY (request_id, approver_id));
            CREATE TABLE copy_targets (
                id CTEXT PRIMARY KEY, tenant CTEXT NOT NULL, url CTEXT NOT NULL, endpoint CTEXT NOT NULL,
                region CTEXT NOT NULL, credentials_file CTEXT, virtual_hosted BOOLEAN NOT NULL,
                margin DOUBLE PRECISION NOT NULL, accept_unenforced BOOLEAN NOT NULL,
                created_at DOUBLE PRECISION NOT NULL, last_proof_at DOUBLE PRECISION, last_proof_ok BOOLEAN,
                last_proof_detail CTEXT, last_sync_at DOUBLE PRECISION, last_sync_ok BOOLEAN, last_sync_detail CTEXT,
                removed_at DOUBLE PRECISION);
            CREATE TABLE holds (
                id CTEXT PRIMARY KEY, kind CTEXT NOT NULL, target CTEXT NOT NULL, tenant CTEXT NOT NULL,
                reason CTEXT NOT NULL, created_by CTEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
                released_at DOUBLE PRECISION, release_request CTEXT);
            CREATE INDEX holds_tenant ON holds(tenant) WHERE released_at IS NULL;
            CREATE TABLE copy_legal_holds (place CTEXT NOT NULL, key CTEXT NOT NULL, PRIMARY KEY (place, key));
            CREATE TABLE gc_pending (
                key CTEXT PRIMARY KEY, tenant CTEXT NOT NULL, queued_at DOUBLE PRECISION NOT NULL,
                claimed_at DOUBLE PRECISION);
            CREATE TABLE quotas (tenant CTEXT NOT NULL, host CTEXT NOT NULL, bytes BIGINT NOT NULL,
                PRIMARY KEY (tenant, host));
            CREATE TABLE pack_uploads (tenant CTEXT NOT NULL, pack_id CTEXT NOT NULL, host CTEXT NOT NULL,
                PRIMARY KEY (tenant, pack_id));
            CREATE INDEX pack_uploads_host ON pack_uploads(tenant, host);
            CREATE TABLE damaged_packs (
                tenant CTEXT NOT NULL, pack CTEXT NOT NULL, uploader CTEXT, reported_at DOUBLE PRECISION NOT NULL,
                reporter CTEXT NOT NULL, problem CTEXT NOT NULL, PRIMARY KEY (tenant, pack));
            CREATE TABLE pack_verifications (
                tenant CTEXT NOT NULL, pack CTEXT NOT NULL, verified_at DOUBLE PRECISION NOT NULL,
                outcome CTEXT NOT NULL, reporter CTEXT NOT NULL, PRIMARY KEY (tenant, pack));
            CREATE INDEX pack_verifications_age ON pack_verifications(tenant, verified_at);
            CREATE TABLE retention_policies (
                tenant CTEXT NOT NULL, host_glob CTEXT NOT NULL, tag CTEXT NOT NULL, rules CTEXT NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (tenant, host_glob, tag));
            """),
        // Integrity findings and hosts' expected intervals (SQLite: part of v15-server-jobs).
        ("pg-v2-findings", """
            CREATE TABLE integrity_findings (
                id BIGSERIAL PRIMARY KEY, tenant CTEXT NOT NULL, object CTEXT NOT NULL, code CTEXT NOT NULL,
                detail CTEXT NOT NULL, source CTEXT NOT NULL, first_seen DOUBLE PRECISION NOT NULL,
                last_seen DOUBLE PRECISION NOT NULL, count BIGINT NOT NULL, UNIQUE (tenant, object, code));
            ALTER TABLE principals ADD COLUMN expected_interval DOUBLE PRECISION;
            """),
        ("pg-v3-pgrepos-verdicts", verdictSchema),
        ("pg-v4-pgrepos-jobs", jobSchema),
        ("pg-v5-pgrepos-monitoring", monitoringSchema),
    ]

    /// Runs the migrations this database has not run yet, each in its own transaction,
    /// under an advisory lock so servers starting together run each exactly once.
    func migrate() async throws {
        try await transaction(.readCommitted, "migrate") { conn in
            try await conn.query("""
                SELECT pg_advisory_xact_lock(\(LockSpace.migrations.rawValue), hashtext(current_schema()))
                """, logger: logger)
            try await conn.query("CREATE TABLE IF NOT EXISTS redoubt_migrations (id TEXT PRIMARY KEY, at TEXT)",
                                 logger: logger)
            let done = Set(try await conn.query("SELECT id FROM redoubt_migrations", logger: logger)
                .collect().map { try $0.decode(String.self) })
            for m in Self.migrations where !done.contains(m.id) {
                // One statement per query (the extended protocol takes one); the schema's SQL has no
                // semicolon but those that end statements.
                for statement in m.sql.split(separator: ";") where !statement.allSatisfy(\.isWhitespace) {
                    try await conn.query(PostgresQuery(unsafeSQL: String(statement)), logger: logger)
                }
                try await conn.query("INSERT INTO redoubt_migrations(id, at) VALUES (\(m.id), now()::text)",
                                     logger: logger)
            }
        }
    }
}

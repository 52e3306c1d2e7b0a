import GRDB

// The catalog's whole SQLite schema: every migration, in the order they run. A catalog on
// disk records the identifier of each migration it ran (GRDB's `grdb_migrations`), so an
// identifier never changes and a released migration is never edited, reordered or removed
// (CatalogSchemaTests checks both against a catalog written by an earlier version). A schema
// change is a new migration appended at the end, with a new unique identifier.

extension Catalog {
    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE tenants (
                    name TEXT PRIMARY KEY, read_key_id TEXT NOT NULL, read_public_key BLOB NOT NULL,
                    write_material BLOB NOT NULL, wrapped_read_key TEXT NOT NULL,
                    min_retention REAL NOT NULL, created_at REAL NOT NULL);
                CREATE TABLE principals (
                    id TEXT PRIMARY KEY, role TEXT NOT NULL, tenant TEXT, name TEXT NOT NULL,
                    fingerprint TEXT NOT NULL UNIQUE, host_key BLOB, os TEXT, created_at REAL NOT NULL,
                    revoked INTEGER NOT NULL DEFAULT 0);
                CREATE UNIQUE INDEX principals_tenant_role_name ON principals(tenant, role, name) WHERE revoked = 0;
                CREATE TABLE enrollments (
                    token_hash TEXT PRIMARY KEY, role TEXT NOT NULL, tenant TEXT, name TEXT NOT NULL,
                    expires_at REAL NOT NULL, used_at REAL, created_by TEXT NOT NULL);
                CREATE TABLE packs (
                    tenant TEXT NOT NULL, id TEXT NOT NULL, size INTEGER NOT NULL, retain_until REAL NOT NULL,
                    created_at REAL NOT NULL, PRIMARY KEY (tenant, id)) WITHOUT ROWID;
                CREATE TABLE chunks (
                    tenant TEXT NOT NULL, chunk_id BLOB NOT NULL, pack_id TEXT NOT NULL,
                    PRIMARY KEY (tenant, chunk_id)) WITHOUT ROWID;
                CREATE TABLE snapshots (
                    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, host TEXT NOT NULL, time REAL NOT NULL,
                    committed_at REAL NOT NULL, retain_until REAL NOT NULL, meta TEXT NOT NULL, manifest_size INTEGER \
                NOT NULL);
                CREATE INDEX snapshots_tenant_host ON snapshots(tenant, host, time);
                CREATE TABLE snapshot_packs (snapshot TEXT NOT NULL, pack TEXT NOT NULL, PRIMARY KEY (snapshot, pack)) \
                WITHOUT ROWID;
                CREATE TABLE audit (
                    seq INTEGER PRIMARY KEY, time REAL NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL,
                    credential TEXT NOT NULL, source TEXT NOT NULL, action TEXT NOT NULL, object TEXT NOT NULL,
                    outcome TEXT NOT NULL, detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
                CREATE TABLE clock (id INTEGER PRIMARY KEY CHECK (id = 1), latest REAL NOT NULL);
                CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                """)
        }
        // Key rotation and crypto-shredding.
        m.registerMigration("v2-read-key-versions") { db in
            try db.execute(sql: """
                ALTER TABLE tenants ADD COLUMN key_version INTEGER NOT NULL DEFAULT 1;
                ALTER TABLE tenants ADD COLUMN shredded_at REAL;
                CREATE TABLE retired_keks (
                    tenant TEXT NOT NULL, version INTEGER NOT NULL, stub TEXT NOT NULL, retired_at REAL NOT NULL,
                    destroyed_at REAL, PRIMARY KEY (tenant, version)) WITHOUT ROWID;
                """)
        }
        // M-of-N approvals of weakening changes (Approvals.swift).
        m.registerMigration("v3-approvals") { db in
            try db.execute(sql: """
                CREATE TABLE requests (
                    id TEXT PRIMARY KEY, action TEXT NOT NULL, object TEXT NOT NULL, parameters TEXT NOT NULL,
                    requester_id TEXT NOT NULL, requester TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT \
                NULL,
                    needed INTEGER NOT NULL, rejected_by TEXT, executed_at REAL);
                CREATE TABLE approvals (
                    request_id TEXT NOT NULL, approver_id TEXT NOT NULL, approver TEXT NOT NULL, time REAL NOT NULL,
                    PRIMARY KEY (request_id, approver_id)) WITHOUT ROWID;
                """)
        }
        // Off-site S3 copy targets and their last proof and sync (CopyTargets.swift).
        m.registerMigration("v4-copy-targets") { db in
            try db.execute(sql: """
                CREATE TABLE copy_targets (
                    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, url TEXT NOT NULL, endpoint TEXT NOT NULL, region TEXT \
                NOT NULL,
                    credentials_file TEXT, virtual_hosted INTEGER NOT NULL, margin REAL NOT NULL, accept_unenforced \
                INTEGER NOT NULL,
                    created_at REAL NOT NULL, last_proof_at REAL, last_proof_ok INTEGER, last_proof_detail TEXT,
                    last_sync_at REAL, last_sync_ok INTEGER, last_sync_detail TEXT, removed_at REAL);
                """)
        }
        // Legal holds, and which keys each copy target holds (LegalHolds.swift).
        m.registerMigration("v5-legal-holds") { db in
            try db.execute(sql: """
                CREATE TABLE holds (
                    id TEXT PRIMARY KEY, kind TEXT NOT NULL, target TEXT NOT NULL, tenant TEXT NOT NULL, reason TEXT \
                NOT NULL,
                    created_by TEXT NOT NULL, created_at REAL NOT NULL, released_at REAL, release_request TEXT);
                CREATE INDEX holds_tenant ON holds(tenant) WHERE released_at IS NULL;
                CREATE TABLE copy_legal_holds (place TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (place, key)) \
                WITHOUT ROWID;
                """)
        }
        // Revoking principals and cancelling enrollment tokens (Principals.swift).
        m.registerMigration("v6-principal-revocation") { db in
            try db.execute(sql: """
                ALTER TABLE principals ADD COLUMN revoked_at REAL;
                ALTER TABLE enrollments ADD COLUMN cancelled_at REAL;
                """)
        }
        // The store keys garbage collection has queued for deletion (GarbageCollection.swift).
        m.registerMigration("v7-gc") { db in
            try db.execute(sql: """
                CREATE TABLE gc_pending (key TEXT PRIMARY KEY, tenant TEXT NOT NULL, queued_at REAL NOT NULL, \
                claimed_at REAL) WITHOUT ROWID;
                CREATE INDEX snapshot_packs_pack ON snapshot_packs(pack);
                """)
        }
        // Per-host quotas and which host uploaded each pack (Quotas.swift).
        m.registerMigration("v8-quotas") { db in
            try db.execute(sql: """
                CREATE TABLE quotas (tenant TEXT NOT NULL, host TEXT NOT NULL, bytes INTEGER NOT NULL,
                    PRIMARY KEY (tenant, host)) WITHOUT ROWID;
                CREATE TABLE pack_uploads (tenant TEXT NOT NULL, pack_id TEXT NOT NULL, host TEXT NOT NULL,
                    PRIMARY KEY (tenant, pack_id)) WITHOUT ROWID;
                CREATE INDEX pack_uploads_host ON pack_uploads(tenant, host);
                """)
        }
        // Chunk rows carry the principal that uploaded them (their `scope`), and tenants their
        // dedup scope (DedupScope.swift). Rows recorded before this existed have the empty scope:
        // no host reuses them under host scope, so each host uploads its data once more after the upgrade.
        m.registerMigration("v9-dedup-scope") { db in
            try db.execute(sql: """
                ALTER TABLE tenants ADD COLUMN dedup_scope TEXT NOT NULL DEFAULT 'host';
                ALTER TABLE packs ADD COLUMN uploader TEXT;
                CREATE TABLE chunks_scoped (
                    tenant TEXT NOT NULL, chunk_id BLOB NOT NULL, scope TEXT NOT NULL, pack_id TEXT NOT NULL,
                    PRIMARY KEY (tenant, chunk_id, scope)) WITHOUT ROWID;
                INSERT INTO chunks_scoped(tenant, chunk_id, scope, pack_id) SELECT tenant, chunk_id, '', pack_id FROM \
                chunks;
                DROP TABLE chunks;
                ALTER TABLE chunks_scoped RENAME TO chunks;
                """)
        }
        // Packs a restorer reported damaged (DamagedPacks.swift).
        m.registerMigration("v10-damaged-packs") { db in
            try db.execute(sql: """
                CREATE TABLE damaged_packs (
                    tenant TEXT NOT NULL, pack TEXT NOT NULL, uploader TEXT, reported_at REAL NOT NULL, reporter TEXT \
                NOT NULL,
                    problem TEXT NOT NULL, PRIMARY KEY (tenant, pack)) WITHOUT ROWID;
                """)
        }
        // When a restorer last deep-verified each pack (DeepVerifyLedger.swift).
        m.registerMigration("v11-pack-verifications") { db in
            try db.execute(sql: """
                CREATE TABLE pack_verifications (
                    tenant TEXT NOT NULL, pack TEXT NOT NULL, verified_at REAL NOT NULL, outcome TEXT NOT NULL,
                    reporter TEXT NOT NULL, PRIMARY KEY (tenant, pack)) WITHOUT ROWID;
                CREATE INDEX pack_verifications_age ON pack_verifications(tenant, verified_at);
                """)
        }
        // Snapshot listings read a page from an index in listing order (SnapshotPageQuery.swift).
        m.registerMigration("v12-snapshot-listing") { db in
            try db.execute(sql: """
                CREATE INDEX snapshots_listing ON snapshots(tenant, committed_at, id);
                CREATE INDEX snapshots_host_listing ON snapshots(tenant, host, committed_at, id);
                """)
        }
        // Chunk rows record whether the server checked their bytes against their ID (format-2
        // packs). Rows from before are unchecked, as every format-1 chunk is.
        m.registerMigration("v13-verified-chunks") { db in
            try db.execute(sql: "ALTER TABLE chunks ADD COLUMN verified INTEGER NOT NULL DEFAULT 0")
        }
        // Retention policies per tenant, host glob and tag (RetentionPolicies.swift).
        m.registerMigration("v14-retention-policies") { db in try db.execute(sql: Catalog.policySchema) }
        // The server's own jobs, their leases and runs, the scrub's ledger, integrity findings and
        // hosts' expected backup intervals (JobScheduler.swift, SQLiteCatalog+Jobs.swift).
        m.registerMigration("v15-server-jobs") { db in try db.execute(sql: Catalog.jobSchema) }
        // Host commit expectations, notification channels and open alerts (SQLiteCatalog+Monitoring.swift).
        m.registerMigration("v16-notifications") { db in try db.execute(sql: Catalog.monitoringSchema) }
        // Ransomware verdicts per snapshot, detection settings per tenant, chunks per pack (SnapshotVerdicts.swift).
        m.registerMigration("v17-snapshot-verdicts") { db in try db.execute(sql: Catalog.verdictSchema) }
        // New migrations go here, after every released one.
        return m
    }
}

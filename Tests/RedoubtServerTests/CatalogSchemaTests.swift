import Foundation
import GRDB
import RedoubtCore
@testable import RedoubtServer
import Testing

/// The catalog's schema and its migrations: an existing catalog on disk records the
/// identifiers of the migrations it ran, so they never change name or order, and a
/// catalog written by an earlier version opens and migrates without losing a row.
@Suite(.firstPassOnly) struct CatalogSchemaTests {
    /// The migrations a released catalog may have recorded, in order. New ones are appended
    /// after these; none of these may be renamed, reordered or removed.
    static let released = [
        "v1", "v2-read-key-versions", "v3-approvals", "v4-copy-targets", "v5-legal-holds",
        "v6-principal-revocation", "v7-gc", "v8-quotas", "v9-dedup-scope", "v10-damaged-packs",
    ]

    /// A catalog written by the migrations up to `v8-quotas` (before chunk rows had a dedup
    /// scope, whose migration rebuilds the chunk table), one or more rows in every table.
    static let golden = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/catalog/catalog-v8.sqlite")

    static let tenant = "acme"
    static let chunkIDs: [ChunkID] = (1...3).map { i in ChunkID(bytes: [UInt8](repeating: UInt8(i), count: 32))! }
    static let packIDs: [PackID] = (1...2).map { i in PackID(bytes: [UInt8](repeating: UInt8(0x10 + i), count: 32))! }
    static let snapshotID = String(repeating: "ab", count: 32)

    static func temporaryCopy() throws -> (dir: URL, path: String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-catalog-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("catalog.sqlite").path
        try FileManager.default.copyItem(atPath: golden.path, toPath: path)
        return (dir, path)
    }

    static func rowCounts(_ db: Database) throws -> [String: Int] {
        var out: [String: Int] = [:]
        for t in try String.fetchAll(
            db, sql: "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        {
            out[t] = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \"\(t)\"") ?? 0
        }
        return out
    }

    static func schema(_ db: Database) throws -> [String] {
        try String.fetchAll(
            db,
            sql: """
                SELECT type || ' ' || name || ': ' || COALESCE(sql, '') FROM sqlite_master
                WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name
                """)
    }

    @Test func migrationIdentifiersKeepTheirNamesAndOrder() {
        let ids = Catalog.migrator.migrations
        #expect(
            Array(ids.prefix(Self.released.count)) == Self.released, "a released migration was renamed or moved: \(ids)"
        )
        #expect(Set(ids).count == ids.count, "two migrations share an identifier: \(ids)")
    }

    @Test func aCatalogOfAnEarlierVersionMigratesWithoutLoss() async throws {
        let (dir, path) = try Self.temporaryCopy()
        defer { try? FileManager.default.removeItem(at: dir) }
        let before = try DatabaseQueue(path: path)
        let countsBefore = try await before.read { try Self.rowCounts($0) }
        let applied = try await before.read {
            try String.fetchAll($0, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid")
        }
        try before.close()
        #expect(applied == Array(Self.released.prefix(8)))
        #expect(
            countsBefore["chunks"] == 3 && countsBefore["audit"] == 3,
            "the fixture is not the one this test describes: \(countsBefore)")

        let catalog = try Catalog(path: path)
        let countsAfter = try await catalog.db.read { try Self.rowCounts($0) }
        // grdb_migrations gains the rows of the migrations just run; no other table changes size.
        for (table, n) in countsBefore where table != "grdb_migrations" {
            #expect(countsAfter[table] == n, "table \(table): \(n) rows before, \(countsAfter[table] ?? -1) after")
        }
        let completed = try await catalog.db.read { try Catalog.migrator.completedMigrations($0) }
        #expect(completed == Catalog.migrator.migrations)

        // Every row reads back through the catalog's own API.
        let t = try #require(try catalog.tenant(Self.tenant))
        #expect(t.keyVersion == 2 && t.writeMaterial == [1, 2, 3] && t.minRetention == 86400 && t.shreddedAt == nil)
        #expect(try catalog.retiredKEKs(tenant: Self.tenant).map(\.version) == [1])
        #expect(try catalog.dedupScope(tenant: Self.tenant) == .host)
        // Chunks recorded before dedup scopes exist in the empty scope: found tenant-wide,
        // reused by no host under host scope.
        let locations = try await catalog.chunkLocations(tenant: Self.tenant, ids: Self.chunkIDs)
        #expect(
            locations == [
                Self.chunkIDs[0]: Self.packIDs[0], Self.chunkIDs[1]: Self.packIDs[0], Self.chunkIDs[2]: Self.packIDs[1],
            ])
        #expect(try catalog.chunkLocations(tenant: Self.tenant, ids: Self.chunkIDs, scope: "writer-1").isEmpty)
        #expect(try catalog.packs(tenant: Self.tenant).map(\.id) == Self.packIDs.map(\.description))
        let snap = try #require(try catalog.snapshot(id: Self.snapshotID))
        #expect(snap.host == "host1" && snap.paths == ["/etc"] && snap.packCount == 2)
        #expect(try catalog.snapshotPacks(id: Self.snapshotID) == Self.packIDs)
        #expect(try await catalog.verifyAudit() == (nil, 3))
        #expect(try catalog.principal(fingerprint: "fp-writer")?.hostKey == [7, 7, 7])
        #expect(try catalog.principals(tenant: nil).map(\.name).sorted() == ["alice", "bob", "host1"])
        #expect(try catalog.request("req1", now: Date(timeIntervalSince1970: 1_800_000_100))?.approvers == ["bob"])
        #expect(try catalog.copyTargets(tenant: Self.tenant).map(\.info.id) == ["ct1"])
        #expect(try catalog.holds(active: true).map(\.id) == ["hold1"])
        #expect(try catalog.pendingDeletes(tenant: Self.tenant) == ["gone-key"])
        #expect(try catalog.quota(tenant: Self.tenant, host: "host1") == 1 << 30)
        #expect(try catalog.setting("quorum") == "2")
        #expect(try catalog.pendingEnrollments(now: Date(timeIntervalSince1970: 1_800_000_100)).count == 1)
    }

    /// Migrating an old catalog gives exactly the schema a new one gets.
    @Test func aMigratedCatalogHasTheSchemaOfANewOne() throws {
        let (dir, path) = try Self.temporaryCopy()
        defer { try? FileManager.default.removeItem(at: dir) }
        let migrated = try Catalog(path: path)
        let fresh = try Catalog(path: dir.appendingPathComponent("fresh.sqlite").path)
        let a = try migrated.db.read { try Self.schema($0) }
        let b = try fresh.db.read { try Self.schema($0) }
        #expect(a == b)
    }

    /// A commit is on disk before the catalog returns, for a new catalog and for one opened
    /// again: under WAL mode's usual `NORMAL`, a power loss could take back a snapshot, a
    /// revocation or an audit record that was already answered.
    @Test func everyCommitIsSyncedBeforeItReturns() async throws {
        let (dir, path) = try Self.temporaryCopy()
        defer { try? FileManager.default.removeItem(at: dir) }
        for catalogPath in [path, dir.appendingPathComponent("fresh.sqlite").path] {
            for _ in 0..<2 {
                let catalog = try Catalog(path: catalogPath)
                let (mode, sync) = try await catalog.db.writeWithoutTransaction { db in
                    (try String.fetchOne(db, sql: "PRAGMA journal_mode"),
                     try Int.fetchOne(db, sql: "PRAGMA synchronous"))
                }
                #expect(mode == "wal", "\(catalogPath): journal mode \(mode ?? "none")")
                // 2 is FULL: the WAL is synced at every commit (1, NORMAL, syncs at checkpoints only).
                #expect(sync == 2, "\(catalogPath): the writer runs synchronous = \(sync ?? -1)")
            }
        }
    }

    /// A pack's chunk rows reach the database file through the checkpointer, beside the
    /// writer: the writer's own checkpoint is only a far ceiling, yet the file alone, read
    /// without its log, soon holds every row.
    @Test func aPacksRowsReachTheFileWithoutTheWritersCheckpoint() async throws {
        let (dir, path) = try Self.temporaryCopy()
        defer { try? FileManager.default.removeItem(at: dir) }
        let catalog = try Catalog(path: path)
        let ceiling = try await catalog.db.writeWithoutTransaction {
            try Int.fetchOne($0, sql: "PRAGMA wal_autocheckpoint")
        }
        #expect(ceiling == CatalogCheckpointer.ceilingPages)
        var rng = SystemRandomNumberGenerator()
        let ids = (0..<3000).map { _ in ChunkID(bytes: (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) })! }
        let pack = PackID(bytes: [UInt8](repeating: 0x5c, count: 32))!
        try await catalog.insertPack(tenant: Self.tenant, id: pack.description, key: "t/\(Self.tenant)/packs/\(pack)",
                                     size: 1, retainUntil: Date(), chunkIDs: ids, now: Date())
        var inFile = 0
        let deadline = ContinuousClock.now + .seconds(20)
        repeat {
            // A copy of the file alone: a reader there sees no log, only what was checkpointed.
            // A copy taken mid-checkpoint may be torn; the next one is not.
            let copy = dir.appendingPathComponent("file-only-\(UUID().uuidString).sqlite").path
            try FileManager.default.copyItem(atPath: path, toPath: copy)
            inFile = (try? await DatabaseQueue(path: copy).read { db in
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM chunks WHERE pack_id = ?",
                                 arguments: [pack.description])
            } ?? 0) ?? 0
            if inFile == ids.count { break }
            try await Task.sleep(for: .milliseconds(50))
        } while ContinuousClock.now < deadline
        #expect(inFile == ids.count, "the database file holds \(inFile) of the pack's \(ids.count) chunk rows")
    }

    /// The checkpointer's connection closes with the catalog, at once: the last connection
    /// to close folds the log into the file and removes it, so a command that opened the
    /// catalog and exits (`server init`, an admin command) leaves one whole file behind.
    @Test func aClosedCatalogLeavesNoLogBehind() async throws {
        let (dir, path) = try Self.temporaryCopy()
        defer { try? FileManager.default.removeItem(at: dir) }
        do {
            let catalog = try Catalog(path: path)
            try await catalog.db.write { db in
                try db.execute(sql: "INSERT INTO settings(key, value) VALUES ('probe', 'written')")
            }
            #expect(FileManager.default.fileExists(atPath: path + "-wal"))
        }
        // No waiting: a process may exit right after it lets the catalog go.
        #expect(!FileManager.default.fileExists(atPath: path + "-wal"), "the catalog's log outlived it")
        let value = try await DatabaseQueue(path: path).read { db in
            try String.fetchOne(db, sql: "SELECT value FROM settings WHERE key = 'probe'")
        }
        #expect(value == "written")
    }

    @Test(.disabled("wrote the golden catalog once, with the migrations up to v8-quotas; kept to show how"))
    func writeGolden() throws {
        let path = "/tmp/catalog-v8.sqlite"
        try? FileManager.default.removeItem(atPath: path)
        let q = try DatabaseQueue(path: path)
        try Catalog.migrator.migrate(q, upTo: "v8-quotas")
        let t0 = 1_800_000_000.0
        try q.write { db in
            try db.execute(
                sql: """
                    INSERT INTO tenants(name, read_key_id, read_public_key, write_material, wrapped_read_key,
                        min_retention, created_at, key_version)
                    VALUES ('acme', 'rk1', X'0A0B', X'010203', '{"wrapped":1}', 86400, ?, 2);
                    INSERT INTO retired_keks(tenant, version, stub, retired_at) VALUES ('acme', 1, '{"stub":1}', ?);
                    INSERT INTO principals(id, role, tenant, name, fingerprint, host_key, os, created_at)
                    VALUES ('admin-1', 'admin', NULL, 'alice', 'fp-alice', NULL, NULL, ?),
                           ('admin-2', 'admin', NULL, 'bob', 'fp-bob', NULL, NULL, ?),
                           ('writer-1', 'writer', 'acme', 'host1', 'fp-writer', X'070707', 'Linux', ?);
                    INSERT INTO enrollments(token_hash, role, tenant, name, expires_at, created_by)
                    VALUES ('tok1', 'writer', 'acme', 'host2', ?, 'alice'), ('tok2', 'restorer', 'acme', 'vault', ?,
                        'alice');
                    UPDATE enrollments SET cancelled_at = ? WHERE token_hash = 'tok2';
                    INSERT INTO settings(key, value) VALUES ('quorum', '2');
                    INSERT INTO clock(id, latest) VALUES (1, ?);
                    INSERT INTO requests(id, action, object, parameters, requester_id, requester, created_at,
                        expires_at, needed)
                    VALUES ('req1', 'shred-tenant', 'tenant acme', '{}', 'admin-1', 'alice', ?, ?, 1);
                    INSERT INTO approvals(request_id, approver_id, approver, time) VALUES ('req1', 'admin-2', 'bob', ?);
                    INSERT INTO copy_targets(id, tenant, url, endpoint, region, virtual_hosted, margin,
                        accept_unenforced, created_at)
                    VALUES ('ct1', 'acme', 's3://bucket/acme', 'https://s3.example', 'us-east-1', 0, 86400, 0, ?);
                    INSERT INTO holds(id, kind, target, tenant, reason, created_by, created_at)
                    VALUES ('hold1', 'tenant', 'acme', 'acme', 'litigation', 'alice', ?);
                    INSERT INTO copy_legal_holds(place, key) VALUES ('ct1', 'packs/x');
                    INSERT INTO gc_pending(key, tenant, queued_at) VALUES ('gone-key', 'acme', ?);
                    INSERT INTO quotas(tenant, host, bytes) VALUES ('acme', 'host1', 1073741824);
                    """, arguments: [t0, t0, t0, t0, t0, t0 + 3600, t0 + 3600, t0, t0, t0, t0 + 3600, t0, t0, t0, t0])
            for (i, p) in Self.packIDs.enumerated() {
                try db.execute(
                    sql: "INSERT INTO packs(tenant, id, size, retain_until, created_at) VALUES ('acme', ?, ?, ?, ?)",
                    arguments: [p.description, 100 * (i + 1), t0 + 86400, t0])
                try db.execute(
                    sql: "INSERT INTO pack_uploads(tenant, pack_id, host) VALUES ('acme', ?, 'host1')",
                    arguments: [p.description])
            }
            for (i, c) in Self.chunkIDs.enumerated() {
                try db.execute(
                    sql: "INSERT INTO chunks(tenant, chunk_id, pack_id) VALUES ('acme', ?, ?)",
                    arguments: [Data(c.bytes), Self.packIDs[i < 2 ? 0 : 1].description])
            }
            var stats = SnapshotStatistics()
            stats.files = 3
            let rec = SnapshotRecord(
                id: Self.snapshotID, tenant: "acme", host: "host1", time: Date(timeIntervalSince1970: t0),
                committedAt: Date(timeIntervalSince1970: t0), retainUntil: Date(timeIntervalSince1970: t0 + 86400),
                paths: ["/etc"], tags: [], statistics: stats, packCount: 2, manifestSize: 512)
            try db.execute(
                sql: """
                    INSERT INTO snapshots(id, tenant, host, time, committed_at, retain_until, meta,
                        manifest_size) VALUES (?, 'acme', 'host1', ?, ?, ?, ?, 512)
                    """,
                arguments: [rec.id, t0, t0, t0 + 86400, String(decoding: try JSONEncoder().encode(rec), as: UTF8.self)])
            for p in Self.packIDs {
                try db.execute(
                    sql: "INSERT INTO snapshot_packs(snapshot, pack) VALUES (?, ?)", arguments: [rec.id, p.description])
            }
            var prev = Catalog.auditGenesis
            for seq in Int64(1)...3 {
                let h = Catalog.AuditRecord.computeHash(
                    seq: seq, time: t0, actor: "alice", role: "admin", credential: "fp-alice", source: "local",
                    action: "create-tenant", object: "tenant acme", outcome: "ok", detail: "n=\(seq)", prevHash: prev)
                try db.execute(
                    sql: """
                        INSERT INTO audit(seq, time, actor, role, credential, source, action, object, outcome,
                            detail, prev_hash, hash)
                        VALUES (?, ?, 'alice', 'admin', 'fp-alice', 'local', 'create-tenant', 'tenant acme', 'ok', ?,
                            ?, ?)
                        """, arguments: [seq, t0, "n=\(seq)", prev, h])
                prev = h
            }
        }
        try q.close()
    }
}

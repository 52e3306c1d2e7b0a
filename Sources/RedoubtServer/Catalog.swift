import Crypto
import Foundation
import GRDB
import RedoubtCore

/// A principal's role (DESIGN.md §3).
public enum Role: String, Sendable, Codable, CaseIterable {
    /// A protected host: add packs, commit its own snapshots, list their metadata.
    case writer
    /// Downloads a tenant's packs and manifests to restore (holds the wrapped read key).
    case restorer
    /// Reads the audit log and metrics.
    case auditor
    /// Manages tenants and enrollments.
    case admin
}

/// An authenticated caller.
public struct Principal: Sendable, Equatable, Codable {
    public let id: String
    public let role: Role
    /// Nil for admins and auditors of the whole server.
    public let tenant: String?
    public let name: String
    public let fingerprint: String
    /// A writer's Ed25519 key that signs its manifests.
    public let hostKey: [UInt8]?
}

/// A tenant as the server knows it: public material only, plus the write material it
/// hands to enrolling hosts and the *wrapped* read key it hands to restorers.
public struct TenantRecord: Sendable, Equatable {
    public let name: String
    public let readKeyID: String
    public let readPublicKey: [UInt8]
    /// Encoded SharedWriteMaterial (chunk-ID key, chunker seed, read public key). It
    /// decrypts nothing, but is confidential: it would let an intruder confirm guesses
    /// about content through chunk IDs.
    public let writeMaterial: [UInt8]
    /// JSON of the wrapped read key (RedoubtKMS.WrappedReadKey): useless without the
    /// key provider.
    public let wrappedReadKey: String
    public let minRetention: TimeInterval
    public let createdAt: Date
    /// The read key's wrapping version: 1 at creation, +1 on every rotation (and on the
    /// shred, which leaves no wrapped copy). The tenant descriptor is `tenant-v<N>.json`.
    public var keyVersion: Int = 1
    /// When the tenant was crypto-shredded; nil while its read key still exists.
    public var shreddedAt: Date? = nil

    public init(name: String, readKeyID: String, readPublicKey: [UInt8], writeMaterial: [UInt8], wrappedReadKey: String,
                minRetention: TimeInterval, createdAt: Date, keyVersion: Int = 1, shreddedAt: Date? = nil) {
        self.name = name
        self.readKeyID = readKeyID
        self.readPublicKey = readPublicKey
        self.writeMaterial = writeMaterial
        self.wrappedReadKey = wrappedReadKey
        self.minRetention = minRetention
        self.createdAt = createdAt
        self.keyVersion = keyVersion
        self.shreddedAt = shreddedAt
    }
}

extension TenantRecord {
    func withWriteMaterial(_ material: [UInt8]) -> TenantRecord {
        TenantRecord(name: name, readKeyID: readKeyID, readPublicKey: readPublicKey, writeMaterial: material, wrappedReadKey: wrappedReadKey,
                     minRetention: minRetention, createdAt: createdAt, keyVersion: keyVersion, shreddedAt: shreddedAt)
    }
}

/// A key-encryption key that once wrapped a tenant's read key and was rotated away from.
/// `stub` is the wrapped key's JSON with the wrapped bytes removed: it names the provider
/// and the KEK, so the KEK can be destroyed later, but holds nothing that unwraps.
public struct RetiredKEK: Sendable, Equatable, Codable {
    public let version: Int
    public let stub: String
    public let retiredAt: Date
    public let destroyedAt: Date?
}

/// Public metadata of a committed snapshot.
public struct SnapshotRecord: Sendable, Equatable, Codable {
    public let id: String
    public let tenant: String
    public let host: String
    public let time: Date
    public let committedAt: Date
    public let retainUntil: Date
    public let paths: [String]
    public let tags: [String]
    public let statistics: SnapshotStatistics
    public let packCount: Int
    public let manifestSize: Int
}

/// The server's SQLite catalog (GRDB). Everything in it can be rebuilt from the store
/// except principals, enrollments and the audit log (docs/PROTOCOL.md §6).
public final class Catalog: Sendable {
    let db: DatabasePool

    public init(path: String) throws {
        var config = Configuration()
        config.busyMode = .timeout(10)
        // Why: a shred's cleared write material (and other deleted rows) must not linger in
        // the file's free pages.
        config.prepareDatabase { db in try db.execute(sql: "PRAGMA secure_delete = ON") }
        db = try DatabasePool(path: path, configuration: config)
        // Why: SQLite creates the file and its -wal/-shm 0644; the catalog holds write
        // material and the audit log, readable by the service user only (doctor: data.private).
        for suffix in ["", "-wal", "-shm"] { _ = chmod(path + suffix, 0o600) }
        try Self.migrator.migrate(db)
    }

    /// Opens an existing catalog read-only, without migrating it: for `doctor`, which must
    /// not change what it inspects. (SQLite may still create `-wal`/`-shm`; run as root,
    /// it gives them the database file's owner, so the service can still open them.)
    public init(readOnlyPath path: String) throws {
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.readonly = true
        db = try DatabasePool(path: path, configuration: config)
    }

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
                    committed_at REAL NOT NULL, retain_until REAL NOT NULL, meta TEXT NOT NULL, manifest_size INTEGER NOT NULL);
                CREATE INDEX snapshots_tenant_host ON snapshots(tenant, host, time);
                CREATE TABLE snapshot_packs (snapshot TEXT NOT NULL, pack TEXT NOT NULL, PRIMARY KEY (snapshot, pack)) WITHOUT ROWID;
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
        registerApprovalMigrations(&m)
        registerCopyTargetMigrations(&m)
        registerHoldMigrations(&m)
        registerPrincipalMigrations(&m)
        registerGCMigrations(&m)
        registerQuotaMigrations(&m)
        registerDedupMigrations(&m)
        registerDamagedPackMigrations(&m)
        registerVerifiedChunkMigrations(&m)
        return m
    }

    // MARK: settings and clock

    public func setting(_ key: String) throws -> String? {
        try db.read { try Self.setting($0, key) }
    }

    static func setting(_ db: Database, _ key: String) throws -> String? {
        try String.fetchOne(db, sql: "SELECT value FROM settings WHERE key = ?", arguments: [key])
    }

    public func setSetting(_ key: String, _ value: String) throws {
        try db.write { try $0.execute(sql: "INSERT OR REPLACE INTO settings(key, value) VALUES (?, ?)", arguments: [key, value]) }
    }

    /// The latest time the server has seen; never decreases (DESIGN.md: retention by time).
    public func advanceClock(to t: Date) throws -> Date {
        try db.write { db in
            let latest = try Double.fetchOne(db, sql: "SELECT latest FROM clock WHERE id = 1") ?? 0
            let next = max(latest, t.timeIntervalSince1970)
            try db.execute(sql: "INSERT OR REPLACE INTO clock(id, latest) VALUES (1, ?)", arguments: [next])
            return Date(timeIntervalSince1970: next)
        }
    }

    // MARK: tenants

    public func insertTenant(_ t: TenantRecord) throws {
        try db.write { db in
            try db.execute(sql: """
                INSERT INTO tenants(name, read_key_id, read_public_key, write_material, wrapped_read_key, min_retention, created_at, key_version, shredded_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [t.name, t.readKeyID, Data(t.readPublicKey), Data(t.writeMaterial), t.wrappedReadKey, t.minRetention,
                                 t.createdAt.timeIntervalSince1970, t.keyVersion, t.shreddedAt?.timeIntervalSince1970])
        }
    }

    /// Replaces the tenant's wrapped read key with version `newVersion` (which must be the
    /// next one) and records the previous KEK as retired, in one transaction. An empty
    /// `wrapped` with `shredded` set is the shred: no wrapped copy remains here.
    public func replaceReadKey(tenant: String, newVersion: Int, wrapped: String, retiredStub: String, now: Date, shredded: Bool) throws {
        try db.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT key_version, shredded_at FROM tenants WHERE name = ?", arguments: [tenant]) else {
                throw ServerError.notFound("tenant \(tenant) does not exist")
            }
            guard (row["shredded_at"] as Double?) == nil else { throw ServerError.shredded(tenant) }
            // Checked again here, in the same transaction as the shred: a hold placed after
            // the service's first check (across its awaits) still stops it.
            if shredded, let hold = try String.fetchOne(db, sql: "SELECT id FROM holds WHERE tenant = ? AND released_at IS NULL LIMIT 1", arguments: [tenant]) {
                throw ServerError(409, "E_HELD", "tenant \(tenant) is under legal hold \(hold): release it first (`redoubt admin hold release \(hold)`)")
            }
            let current: Int = row["key_version"]
            guard newVersion == current + 1 else {
                throw ServerError(409, "E_CONFLICT", "tenant \(tenant)'s read key is at version \(current), not \(newVersion - 1): another rotation came first; fetch it again")
            }
            try db.execute(sql: "UPDATE tenants SET wrapped_read_key = ?, key_version = ?, shredded_at = ? WHERE name = ?",
                           arguments: [wrapped, newVersion, shredded ? now.timeIntervalSince1970 : nil, tenant])
            // A shred forgets the write material in the same transaction: its chunk-ID key
            // would still let whoever reads this disk confirm guessed content.
            if shredded { try db.execute(sql: "UPDATE tenants SET write_material = ? WHERE name = ?", arguments: [Data(), tenant]) }
            try db.execute(sql: "INSERT INTO retired_keks(tenant, version, stub, retired_at) VALUES (?, ?, ?, ?)",
                           arguments: [tenant, current, retiredStub, now.timeIntervalSince1970])
        }
    }

    /// Gives a tenant whose catalog row has no write material (rebuilt from the store) its
    /// material back; a row that has one is not changed.
    public func setWriteMaterial(tenant: String, material: [UInt8]) throws -> Bool {
        try db.write { db in
            try db.execute(sql: "UPDATE tenants SET write_material = ? WHERE name = ? AND length(write_material) = 0", arguments: [Data(material), tenant])
            return db.changesCount > 0
        }
    }

    /// Forgets the write material of every shredded tenant (shreds before the shred did it
    /// itself); returns how many rows changed.
    public func clearShreddedWriteMaterial() throws -> Int {
        try db.write { db in
            try db.execute(sql: "UPDATE tenants SET write_material = ? WHERE shredded_at IS NOT NULL AND length(write_material) > 0", arguments: [Data()])
            return db.changesCount
        }
    }

    /// Sets a tenant's minimum retention (whether that may happen is the caller's question).
    /// Sets a tenant's minimum retention if it is still `from`; false if it changed meanwhile.
    public func setMinRetention(tenant: String, seconds: TimeInterval, from: TimeInterval) throws -> Bool {
        try db.write { db in
            try db.execute(sql: "UPDATE tenants SET min_retention = ? WHERE name = ? AND min_retention = ?", arguments: [seconds, tenant, from])
            return db.changesCount > 0
        }
    }

    /// Revokes an admin credential by name: it authenticates no more, and unused admin
    /// tokens for that name are cancelled.
    public func revokeAdmin(name: String, now: Date) throws -> Bool {
        try db.write { db in
            try db.execute(sql: "UPDATE principals SET revoked = 1, revoked_at = ? WHERE role = 'admin' AND tenant IS NULL AND name = ? AND revoked = 0",
                           arguments: [now.timeIntervalSince1970, name])
            guard db.changesCount > 0 else { return false }
            _ = try Self.cancelEnrollments(db, role: .admin, tenant: nil, name: name, now: now)
            return true
        }
    }

    /// The KEKs the tenant's read key was wrapped under before its current one.
    public func retiredKEKs(tenant: String) throws -> [RetiredKEK] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM retired_keks WHERE tenant = ? ORDER BY version", arguments: [tenant]).map {
                RetiredKEK(version: $0["version"], stub: $0["stub"], retiredAt: Date(timeIntervalSince1970: $0["retired_at"]),
                           destroyedAt: ($0["destroyed_at"] as Double?).map(Date.init(timeIntervalSince1970:)))
            }
        }
    }

    /// Records that the KEKs of these retired versions were destroyed at their KMS or HSM.
    public func markKEKsDestroyed(tenant: String, versions: [Int], now: Date) throws {
        try db.write { db in
            for v in versions {
                try db.execute(sql: "UPDATE retired_keks SET destroyed_at = ? WHERE tenant = ? AND version = ? AND destroyed_at IS NULL",
                               arguments: [now.timeIntervalSince1970, tenant, v])
            }
        }
    }

    public func tenant(_ name: String) throws -> TenantRecord? {
        try db.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM tenants WHERE name = ?", arguments: [name]).map(Self.tenantRecord)
        }
    }

    public func tenants() throws -> [TenantRecord] {
        try db.read { db in try Row.fetchAll(db, sql: "SELECT * FROM tenants ORDER BY name").map(Self.tenantRecord) }
    }

    static func tenantRecord(_ r: Row) -> TenantRecord {
        TenantRecord(name: r["name"], readKeyID: r["read_key_id"], readPublicKey: Array(r["read_public_key"] as Data),
                     writeMaterial: Array(r["write_material"] as Data), wrappedReadKey: r["wrapped_read_key"],
                     minRetention: r["min_retention"], createdAt: Date(timeIntervalSince1970: r["created_at"]),
                     keyVersion: r["key_version"], shreddedAt: (r["shredded_at"] as Double?).map(Date.init(timeIntervalSince1970:)))
    }

    // MARK: principals and enrollment

    public func insertPrincipal(_ p: Principal, os: String?, now: Date) throws {
        try db.write { db in try Self.insertPrincipal(db, p, os: os, now: now) }
    }

    static func insertPrincipal(_ db: Database, _ p: Principal, os: String?, now: Date) throws {
        try db.execute(sql: """
            INSERT INTO principals(id, role, tenant, name, fingerprint, host_key, os, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """, arguments: [p.id, p.role.rawValue, p.tenant, p.name, p.fingerprint, p.hostKey.map { Data($0) }, os, now.timeIntervalSince1970])
    }

    /// Sets a principal's reported OS; returns the previous value (itself optional) when it
    /// changed, nil when it was already `os`.
    public func updatePrincipalOS(id: String, os: String) throws -> String?? {
        try db.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT os FROM principals WHERE id = ?", arguments: [id]) else { return nil }
            let previous: String? = row["os"]
            guard previous != os else { return nil }
            try db.execute(sql: "UPDATE principals SET os = ? WHERE id = ?", arguments: [os, id])
            return .some(previous)
        }
    }

    /// The active principal whose client certificate has this fingerprint.
    public func principal(fingerprint: String) throws -> Principal? {
        try db.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM principals WHERE fingerprint = ? AND revoked = 0", arguments: [fingerprint]).map(Self.principal)
        }
    }

    public func principals(tenant: String?) throws -> [Principal] {
        try db.read { db in
            if let tenant {
                return try Row.fetchAll(db, sql: "SELECT * FROM principals WHERE tenant = ? AND revoked = 0 ORDER BY role, name", arguments: [tenant]).map(Self.principal)
            }
            return try Row.fetchAll(db, sql: "SELECT * FROM principals WHERE revoked = 0 ORDER BY role, name").map(Self.principal)
        }
    }

    static func principal(_ r: Row) -> Principal {
        Principal(id: r["id"], role: Role(rawValue: r["role"]) ?? .writer, tenant: r["tenant"], name: r["name"], fingerprint: r["fingerprint"],
                  hostKey: (r["host_key"] as Data?).map { Array($0) })
    }

    public func insertEnrollment(tokenHash: String, role: Role, tenant: String?, name: String, expiresAt: Date, createdBy: String) throws {
        try db.write { db in
            try db.execute(sql: "INSERT INTO enrollments(token_hash, role, tenant, name, expires_at, created_by) VALUES (?, ?, ?, ?, ?, ?)",
                           arguments: [tokenHash, role.rawValue, tenant, name, expiresAt.timeIntervalSince1970, createdBy])
        }
    }

    public struct Enrollment: Sendable {
        public let role: Role
        public let tenant: String?
        public let name: String
    }

    public enum RedeemError: Error {
        /// Unknown, used, cancelled or expired.
        case unknownToken
        /// An active principal already has the token's tenant, role and name.
        case nameTaken(Enrollment)
    }

    /// Redeems a one-time token and records the principal `make` builds from it, in one
    /// transaction: the token is used up only if the principal is recorded. Errors that
    /// `make` throws pass through (and leave the token unused).
    public func redeemEnrollment(tokenHash: String, now: Date, os: String?, _ make: (Enrollment) throws -> Principal) throws -> Principal {
        try db.write { db in
            guard let r = try Row.fetchOne(db, sql: """
                    SELECT * FROM enrollments WHERE token_hash = ? AND used_at IS NULL AND cancelled_at IS NULL AND expires_at > ?
                    """, arguments: [tokenHash, now.timeIntervalSince1970]),
                  let role = Role(rawValue: r["role"]) else { throw RedeemError.unknownToken }
            let e = Enrollment(role: role, tenant: r["tenant"], name: r["name"])
            // A writer or restorer gets the tenant's write material: without it (a catalog
            // rebuilt from the store) the token is refused but not used up.
            if let tenant = e.tenant, role == .writer || role == .restorer,
               let material = try Data.fetchOne(db, sql: "SELECT write_material FROM tenants WHERE name = ?", arguments: [tenant]), material.isEmpty {
                throw ServerError.noWriteMaterial(tenant)
            }
            let p = try make(e)
            let taken = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM principals WHERE tenant IS ? AND role = ? AND name = ? AND revoked = 0",
                                         arguments: [e.tenant, role.rawValue, e.name]) ?? 0
            guard taken == 0 else { throw RedeemError.nameTaken(e) }
            try Self.insertPrincipal(db, p, os: os, now: now)
            try db.execute(sql: "UPDATE enrollments SET used_at = ? WHERE token_hash = ?", arguments: [now.timeIntervalSince1970, tokenHash])
            return p
        }
    }

    // MARK: packs and chunks

    public func pack(tenant: String, id: String) throws -> (size: Int, retainUntil: Date)? {
        try db.read { db in
            try Row.fetchOne(db, sql: "SELECT size, retain_until FROM packs WHERE tenant = ? AND id = ?", arguments: [tenant, id]).map {
                (size: $0["size"], retainUntil: Date(timeIntervalSince1970: $0["retain_until"]))
            }
        }
    }

    /// Records a stored pack and the chunks it holds, in the dedup scope of `uploader` (the
    /// principal ID that uploaded it; nil when unknown, as in a rebuild from the store: then
    /// no host reuses them under host scope). The first pack wins for a chunk within a scope.
    /// A pack garbage collection queued for deletion is taken back off the queue (its bytes
    /// were uploaded again); one whose deletion is under way is refused (``BeingCollected``).
    ///
    /// The chunk index is written `batch` rows per transaction, the pack's own row with the
    /// first: the catalog has one writer, and a pack of a million chunk IDs in one
    /// transaction would hold every other tenant's upload and commit until it is done.
    /// Should the server stop between batches, the pack is recorded with part of its index:
    /// the chunks not indexed are only not deduplicated against, and nothing is lost.
    /// `verified`: the server checked every chunk's bytes against its ID (format-2 packs;
    /// docs/PROTOCOL.md §4.6), so other hosts may reuse them under tenant scope.
    public func insertPack(tenant: String, id: String, key: String, size: Int, retainUntil: Date, chunkIDs: [ChunkID], now: Date,
                           uploader: String? = nil, batch: Int = 4096, verified: Bool = false) throws {
        let step = max(1, batch)
        func insert(_ db: Database, _ ids: ArraySlice<ChunkID>) throws {
            let stmt = try db.cachedStatement(
                sql: "INSERT OR IGNORE INTO chunks(tenant, chunk_id, scope, pack_id, verified) VALUES (?, ?, ?, ?, ?)")
            for c in ids { try stmt.execute(arguments: [tenant, Data(c.bytes), uploader ?? "", id, verified ? 1 : 0]) }
        }
        try db.write { db in
            try Self.reclaim(db, key: key)
            try db.execute(sql: "INSERT OR IGNORE INTO packs(tenant, id, size, retain_until, created_at, uploader) VALUES (?, ?, ?, ?, ?, ?)",
                           arguments: [tenant, id, size, retainUntil.timeIntervalSince1970, now.timeIntervalSince1970, uploader])
            try insert(db, chunkIDs.prefix(step))
        }
        var i = step
        while i < chunkIDs.count {
            let end = min(i + step, chunkIDs.count)
            try db.write { db in try insert(db, chunkIDs[i..<end]) }
            i = end
        }
    }

    /// For each of `ids` the tenant holds, a pack that holds it: only among chunks uploaded
    /// by principal `scope` when given (host-scoped dedup), else among all of the tenant's;
    /// with `orVerified`, also among every chunk whose bytes the server checked (tenant scope).
    public func chunkLocations(tenant: String, ids: [ChunkID], scope: String? = nil,
                               orVerified: Bool = false) throws -> [ChunkID: PackID] {
        try db.read { db in
            var out: [ChunkID: PackID] = [:]
            var i = 0
            while i < ids.count {
                let batch = ids[i..<min(i + 500, ids.count)]
                i += batch.count
                let marks = Array(repeating: "?", count: batch.count).joined(separator: ",")
                var args: [any DatabaseValueConvertible] = [tenant]
                args += batch.map { Data($0.bytes) }
                var sql = "SELECT chunk_id, pack_id FROM chunks WHERE tenant = ? AND chunk_id IN (\(marks))"
                if let scope {
                    sql += orVerified ? " AND (scope = ? OR verified = 1)" : " AND scope = ?"
                    args.append(scope)
                }
                let rows = try Row.fetchAll(db, sql: sql, arguments: StatementArguments(args))
                for r in rows {
                    if let c = ChunkID(bytes: Array(r["chunk_id"] as Data)), let p = PackID(hex: r["pack_id"]) { out[c] = p }
                }
            }
            return out
        }
    }

    /// Which of `packs` the tenant does not hold.
    public func missingPacks(tenant: String, packs: [PackID]) throws -> [PackID] {
        try db.read { db in
            try packs.filter { p in
                try Int.fetchOne(db, sql: "SELECT 1 FROM packs WHERE tenant = ? AND id = ?", arguments: [tenant, p.description]) == nil
            }
        }
    }

    /// Moves pack locks later (never earlier); returns the packs whose lock moved, with
    /// their new retain-until, so the store's locks can follow. With `requireAll` (a
    /// commit) a pack the catalog does not hold (collected meanwhile) is ``PacksMissing``
    /// and nothing moves; once this has run, garbage collection cannot take these packs.
    public func extendPackLocks(tenant: String, packs: [PackID], until: Date, requireAll: Bool = false) throws -> [(PackID, Date)] {
        try db.write { db in
            var moved: [(PackID, Date)] = []
            var missing: [PackID] = []
            for p in packs {
                guard let cur = try Double.fetchOne(db, sql: "SELECT retain_until FROM packs WHERE tenant = ? AND id = ?", arguments: [tenant, p.description]) else {
                    missing.append(p)
                    continue
                }
                if until.timeIntervalSince1970 > cur {
                    try db.execute(sql: "UPDATE packs SET retain_until = ? WHERE tenant = ? AND id = ?",
                                   arguments: [until.timeIntervalSince1970, tenant, p.description])
                    moved.append((p, until))
                }
            }
            if requireAll, !missing.isEmpty { throw PacksMissing(packs: missing) }
            return moved
        }
    }

    public func packs(tenant: String) throws -> [(id: String, size: Int, retainUntil: Date)] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT id, size, retain_until FROM packs WHERE tenant = ? ORDER BY id", arguments: [tenant]).map {
                (id: $0["id"], size: $0["size"], retainUntil: Date(timeIntervalSince1970: $0["retain_until"]))
            }
        }
    }

    // MARK: snapshots

    /// A commit named packs the catalog no longer holds (garbage collection removed them
    /// after the commit first looked).
    public struct PacksMissing: Error { public let packs: [PackID] }

    /// Records a snapshot and the packs it names. With `requirePacks` (a commit) every pack
    /// must still be in the catalog, checked in the same transaction, so a garbage
    /// collection can never remove a pack between the commit's check and its record
    /// (throws ``PacksMissing``). A rebuild records what the store holds, missing packs too.
    public func insertSnapshot(_ s: SnapshotRecord, packs: [PackID], requirePacks: Bool = false, manifestKey: String? = nil) throws {
        let meta = try JSONEncoder().encode(s)
        try db.write { db in
            if let manifestKey { try Self.reclaim(db, key: manifestKey) }
            if requirePacks {
                let missing = try packs.filter { p in
                    try Int.fetchOne(db, sql: "SELECT 1 FROM packs WHERE tenant = ? AND id = ?", arguments: [s.tenant, p.description]) == nil
                }
                guard missing.isEmpty else { throw PacksMissing(packs: missing) }
            }
            try db.execute(sql: """
                INSERT INTO snapshots(id, tenant, host, time, committed_at, retain_until, meta, manifest_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [s.id, s.tenant, s.host, s.time.timeIntervalSince1970, s.committedAt.timeIntervalSince1970,
                                 s.retainUntil.timeIntervalSince1970, String(decoding: meta, as: UTF8.self), s.manifestSize])
            let stmt = try db.cachedStatement(sql: "INSERT OR IGNORE INTO snapshot_packs(snapshot, pack) VALUES (?, ?)")
            for p in packs { try stmt.execute(arguments: [s.id, p.description]) }
        }
    }

    public func snapshot(id: String) throws -> SnapshotRecord? {
        try db.read { db in
            try String.fetchOne(db, sql: "SELECT meta FROM snapshots WHERE id = ?", arguments: [id]).flatMap {
                try JSONDecoder().decode(SnapshotRecord.self, from: Data($0.utf8))
            }
        }
    }

    /// Snapshots of a tenant, optionally of one host, in the order the server committed
    /// them (never by the time a host claims: a host's clock decides nothing).
    public func snapshots(tenant: String, host: String? = nil) throws -> [SnapshotRecord] {
        try db.read { db in
            let rows: [String]
            if let host {
                rows = try String.fetchAll(db, sql: "SELECT meta FROM snapshots WHERE tenant = ? AND host = ? ORDER BY committed_at, id",
                                           arguments: [tenant, host])
            } else {
                rows = try String.fetchAll(db, sql: "SELECT meta FROM snapshots WHERE tenant = ? ORDER BY committed_at, id", arguments: [tenant])
            }
            return try rows.map { try JSONDecoder().decode(SnapshotRecord.self, from: Data($0.utf8)) }
        }
    }

    /// The latest time a host's snapshots claim, and when the host's credential was
    /// enrolled: what a new snapshot's claimed time is checked against.
    public func hostTimeFloor(tenant: String, host: String, principalID: String) throws -> (lastClaimed: Date?, enrolled: Date?) {
        try db.read { db in
            let last = try Double.fetchOne(db, sql: "SELECT MAX(time) FROM snapshots WHERE tenant = ? AND host = ?", arguments: [tenant, host])
            let enrolled = try Double.fetchOne(db, sql: "SELECT created_at FROM principals WHERE id = ?", arguments: [principalID])
            return (last.map(Date.init(timeIntervalSince1970:)), enrolled.map(Date.init(timeIntervalSince1970:)))
        }
    }

    public func snapshotPacks(id: String) throws -> [PackID] {
        try db.read { db in
            try String.fetchAll(db, sql: "SELECT pack FROM snapshot_packs WHERE snapshot = ? ORDER BY pack", arguments: [id]).compactMap { PackID(hex: $0) }
        }
    }

    // MARK: audit

    /// One audit record (docs/PROTOCOL.md §5).
    public struct AuditRecord: Sendable, Codable, Equatable {
        public let seq: Int64
        public let time: Date
        public let actor: String
        public let role: String
        public let credential: String
        public let source: String
        public let action: String
        public let object: String
        public let outcome: String
        public let detail: String
        public let prevHash: String
        public let hash: String

        /// The hash of this record: SHA-256 over the previous hash and every field.
        static func computeHash(seq: Int64, time: Double, actor: String, role: String, credential: String, source: String,
                                action: String, object: String, outcome: String, detail: String, prevHash: String) -> String {
            var w = ByteWriter()
            w.raw(Array("redoubt/v1/audit".utf8))
            w.string(prevHash)
            w.u64(UInt64(bitPattern: seq))
            w.u64(time.bitPattern)
            for f in [actor, role, credential, source, action, object, outcome, detail] { w.string(f) }
            return hexString(SHA256.hash(data: w.bytes))
        }
    }

    public static let auditGenesis = String(repeating: "0", count: 64)

    /// Appends a record chained to the previous one. Every field is first made safe
    /// (`SafeText.auditField`: control, bidi and other invisible characters escaped, length
    /// bounded), and that one value is both hashed and stored: SQLite's TEXT would cut a
    /// raw NUL, and a terminal would act on a raw escape sequence.
    @discardableResult
    public func audit(time: Date, actor: String, role: String, credential: String, source: String, action: String,
                      object: String, outcome: String, detail: String = "") throws -> AuditRecord {
        let (actor, role, credential, source) = (SafeText.auditField(actor), SafeText.auditField(role),
                                                 SafeText.auditField(credential), SafeText.auditField(source))
        let (action, object, outcome, detail) = (SafeText.auditField(action), SafeText.auditField(object),
                                                 SafeText.auditField(outcome), SafeText.auditField(detail))
        return try db.write { db in
            let last = try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            let seq: Int64 = (last?["seq"] as Int64? ?? 0) + 1
            let prev: String = last?["hash"] ?? Self.auditGenesis
            let t = time.timeIntervalSince1970
            let h = AuditRecord.computeHash(seq: seq, time: t, actor: actor, role: role, credential: credential, source: source,
                                            action: action, object: object, outcome: outcome, detail: detail, prevHash: prev)
            try db.execute(sql: """
                INSERT INTO audit(seq, time, actor, role, credential, source, action, object, outcome, detail, prev_hash, hash)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [seq, t, actor, role, credential, source, action, object, outcome, detail, prev, h])
            return AuditRecord(seq: seq, time: time, actor: actor, role: role, credential: credential, source: source, action: action,
                               object: object, outcome: outcome, detail: detail, prevHash: prev, hash: h)
        }
    }

    public func auditRecords(after seq: Int64 = 0, limit: Int = 10_000) throws -> [AuditRecord] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", arguments: [seq, limit]).map { r in
                AuditRecord(seq: r["seq"], time: Date(timeIntervalSince1970: r["time"]), actor: r["actor"], role: r["role"], credential: r["credential"],
                            source: r["source"], action: r["action"], object: r["object"], outcome: r["outcome"], detail: r["detail"],
                            prevHash: r["prev_hash"], hash: r["hash"])
            }
        }
    }

    /// The newest record's sequence number and hash: the value other places (an S3 copy,
    /// a media set) store so that a later rewrite or truncation of this log is provable.
    public struct AuditChainHead: Sendable, Codable, Equatable {
        /// Sequence number of the newest record (0 for an empty log).
        public let seq: Int64
        /// Hash of the newest record (`auditGenesis` for an empty log).
        public let hash: String
        public init(seq: Int64, hash: String) { self.seq = seq; self.hash = hash }
    }

    /// The current chain head, to be anchored somewhere the server cannot rewrite.
    public func auditChainHead() throws -> AuditChainHead {
        try db.read { db in
            guard let r = try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1") else {
                return AuditChainHead(seq: 0, hash: Self.auditGenesis)
            }
            return AuditChainHead(seq: r["seq"], hash: r["hash"])
        }
    }

    /// Checks the chain against an anchored head: the chain must verify and must still contain
    /// record `anchor.seq` with exactly `anchor.hash`. A log cut back to before the anchor
    /// (truncation, which the chain alone cannot show) reports `anchor.seq` as the first bad record.
    public func verifyAudit(anchor: AuditChainHead) throws -> (firstBad: Int64?, count: Int) {
        let plain = try verifyAudit()
        if let bad = plain.firstBad, bad <= anchor.seq { return plain }
        if anchor.seq == 0 { return plain }
        // Why: a consistent but shorter (or re-written) chain passes the plain check; only the anchor shows it.
        let at = try auditRecords(after: anchor.seq - 1, limit: 1).first
        if at?.seq != anchor.seq || at?.hash != anchor.hash { return (anchor.seq, plain.count) }
        return plain
    }

    /// Checks the whole chain; returns the sequence number of the first bad record, or nil.
    public func verifyAudit() throws -> (firstBad: Int64?, count: Int) {
        var prev = Self.auditGenesis
        var expectedSeq: Int64 = 1
        var count = 0
        var after: Int64 = 0
        while true {
            let batch = try auditRecords(after: after, limit: 5000)
            if batch.isEmpty { break }
            for r in batch {
                let h = AuditRecord.computeHash(seq: r.seq, time: r.time.timeIntervalSince1970, actor: r.actor, role: r.role, credential: r.credential,
                                                source: r.source, action: r.action, object: r.object, outcome: r.outcome, detail: r.detail, prevHash: prev)
                if r.seq != expectedSeq || r.prevHash != prev || r.hash != h { return (r.seq, count) }
                prev = r.hash
                expectedSeq += 1
                count += 1
            }
            guard let last = batch.last else { break }
            after = last.seq
        }
        return (nil, count)
    }
}

import Crypto
import Foundation
import GRDB
import RedoubtCore

// The SQLite implementation of ``TenantRepository``.

extension Catalog {
    public func insertTenant(_ t: TenantRecord) throws {
        try db.write { db in
            try db.execute(sql: """
                INSERT INTO tenants(name, read_key_id, read_public_key, write_material, wrapped_read_key, \
                min_retention, created_at, key_version, shredded_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [t.name, t.readKeyID, Data(t.readPublicKey), Data(t.writeMaterial), t.wrappedReadKey,
                                 t.minRetention,
                                 t.createdAt.timeIntervalSince1970, t.keyVersion, t.shreddedAt?.timeIntervalSince1970])
        }
    }

    /// Replaces the tenant's wrapped read key with version `newVersion` (which must be the
    /// next one) and records the previous KEK as retired, in one transaction. An empty
    /// `wrapped` with `shredded` set is the shred: no wrapped copy remains here.
    public func replaceReadKey(tenant: String, newVersion: Int, wrapped: String, retiredStub: String, now: Date,
        shredded: Bool) throws {
        try db.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT key_version, shredded_at FROM tenants WHERE name = ?",
                arguments: [tenant]) else {
                throw CatalogError(.notFound, object: "tenant \(tenant)", "tenant \(tenant) does not exist")
            }
            guard (row["shredded_at"] as Double?) == nil else { throw CatalogError.shredded(tenant) }
            // Checked again here, in the same transaction as the shred: a hold placed after
            // the service's first check (across its awaits) still stops it.
            if shredded, let hold = try String.fetchOne(db,
                sql: "SELECT id FROM holds WHERE tenant = ? AND released_at IS NULL LIMIT 1", arguments: [tenant]) {
                throw CatalogError(.held, object: "tenant \(tenant)",
                    """
                        tenant \(tenant) is under legal hold \(hold): release it first (`redoubt admin hold release \
                        \(hold)`)
                        """)
            }
            let current: Int = row["key_version"]
            guard newVersion == current + 1 else {
                throw CatalogError(.conflict, object: "tenant \(tenant)",
                    """
                        tenant \(tenant)'s read key is at version \(current), not \(newVersion - 1): another rotation \
                        came first; fetch it again
                        """)
            }
            try db.execute(sql: """
                UPDATE tenants SET wrapped_read_key = ?, key_version = ?, shredded_at = ? WHERE name = ?
                """,
                           arguments: [wrapped, newVersion, shredded ? now.timeIntervalSince1970 : nil, tenant])
            // A shred forgets the write material in the same transaction: its chunk-ID key
            // would still let whoever reads this disk confirm guessed content.
            if shredded {
                try db.execute(sql: "UPDATE tenants SET write_material = ? WHERE name = ?", arguments: [Data(), tenant])
            }
            try db.execute(sql: "INSERT INTO retired_keks(tenant, version, stub, retired_at) VALUES (?, ?, ?, ?)",
                           arguments: [tenant, current, retiredStub, now.timeIntervalSince1970])
        }
    }

    /// Gives a tenant whose catalog row has no write material (rebuilt from the store) its
    /// material back; a row that has one is not changed.
    public func setWriteMaterial(tenant: String, material: [UInt8]) throws -> Bool {
        try db.write { db in
            try db.execute(sql: "UPDATE tenants SET write_material = ? WHERE name = ? AND length(write_material) = 0",
                arguments: [Data(material), tenant])
            return db.changesCount > 0
        }
    }

    /// Forgets the write material of every shredded tenant (shreds before the shred did it
    /// itself); returns how many rows changed.
    public func clearShreddedWriteMaterial() throws -> Int {
        try db.write { db in
            try db.execute(sql: """
                UPDATE tenants SET write_material = ? WHERE shredded_at IS NOT NULL AND length(write_material) > 0
                """, arguments: [Data()])
            return db.changesCount
        }
    }

    /// Sets a tenant's minimum retention (whether that may happen is the caller's question).
    /// Sets a tenant's minimum retention if it is still `from`; false if it changed meanwhile.
    public func setMinRetention(tenant: String, seconds: TimeInterval, from: TimeInterval) throws -> Bool {
        try db.write { db in
            try db.execute(sql: "UPDATE tenants SET min_retention = ? WHERE name = ? AND min_retention = ?",
                arguments: [seconds, tenant, from])
            return db.changesCount > 0
        }
    }

    /// Revokes an admin credential by name: it authenticates no more, and unused admin
    /// tokens for that name are cancelled.
    public func revokeAdmin(name: String, now: Date) throws -> Bool {
        try db.write { db in
            try db.execute(sql: "UPDATE principals SET revoked = 1, revoked_at = ? WHERE role = 'admin' AND tenant IS "
                + "NULL AND name = ? AND revoked = 0",
                           arguments: [now.timeIntervalSince1970, name])
            guard db.changesCount > 0 else { return false }
            guard try Int.fetchOne(db, sql: """
                SELECT COUNT(*) FROM principals WHERE role = 'admin' AND tenant IS NULL AND revoked = 0
                """) ?? 0 > 0 else { throw CatalogError.lastAdmin(name) }
            _ = try Self.cancelEnrollments(db, role: .admin, tenant: nil, name: name, now: now)
            return true
        }
    }

    /// The KEKs the tenant's read key was wrapped under before its current one.
    public func retiredKEKs(tenant: String) throws -> [RetiredKEK] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM retired_keks WHERE tenant = ? ORDER BY version",
                arguments: [tenant]).map {
                RetiredKEK(version: $0["version"], stub: $0["stub"],
                    retiredAt: Date(timeIntervalSince1970: $0["retired_at"]),
                           destroyedAt: ($0["destroyed_at"] as Double?).map(Date.init(timeIntervalSince1970:)))
            }
        }
    }

    /// Records that the KEKs of these retired versions were destroyed at their KMS or HSM.
    public func markKEKsDestroyed(tenant: String, versions: [Int], now: Date) throws {
        try db.write { db in
            for v in versions {
                try db.execute(sql: """
                    UPDATE retired_keks SET destroyed_at = ? WHERE tenant = ? AND version = ? AND destroyed_at IS NULL
                    """,
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
                     keyVersion: r["key_version"],
                         shreddedAt: (r["shredded_at"] as Double?).map(Date.init(timeIntervalSince1970:)))
    }
}

extension Catalog {
    /// The tenant's dedup scope (host when the tenant is unknown: the narrower one).
    public func dedupScope(tenant: String) throws -> DedupScope {
        try db.read { db in
            try String.fetchOne(db, sql: "SELECT dedup_scope FROM tenants WHERE name = ?", arguments: [tenant])
                .flatMap(DedupScope.init(rawValue:)) ?? .host
        }
    }

    /// Every tenant's dedup scope, in one read (for listings).
    public func dedupScopes() throws -> [String: DedupScope] {
        try db.read { db in
            var out: [String: DedupScope] = [:]
            for r in try Row.fetchAll(db, sql: "SELECT name, dedup_scope FROM tenants") {
                out[r["name"]] = DedupScope(rawValue: r["dedup_scope"]) ?? .host
            }
            return out
        }
    }

    /// Sets the tenant's dedup scope if it is still `from`; false if it changed meanwhile.
    public func setDedupScope(tenant: String, _ scope: DedupScope, from: DedupScope) throws -> Bool {
        try db.write { db in
            try db.execute(sql: "UPDATE tenants SET dedup_scope = ? WHERE name = ? AND dedup_scope = ?",
                           arguments: [scope.rawValue, tenant, from.rawValue])
            return db.changesCount == 1
        }
    }
}

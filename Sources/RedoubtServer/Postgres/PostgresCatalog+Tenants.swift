import Foundation
import NIOCore
import PostgresNIO
import RedoubtCore

// The PostgreSQL implementations of ``TenantRepository`` and ``PrincipalRepository``.
// Compare-and-set changes are one UPDATE with the expected value in its WHERE (the row lock
// orders concurrent ones); checks followed by writes run SERIALIZABLE.

extension PostgresCatalog: TenantRepository {
    public func insertTenant(_ t: TenantRecord) async throws {
        _ = try await rows("""
            INSERT INTO tenants(name, read_key_id, read_public_key, write_material, wrapped_read_key, min_retention,
                                created_at, key_version, shredded_at)
            VALUES (\(t.name), \(t.readKeyID), \(Self.bytes(t.readPublicKey)), \(Self.bytes(t.writeMaterial)),
                    \(t.wrappedReadKey), \(t.minRetention), \(t.createdAt.timeIntervalSince1970),
                    \(Int64(t.keyVersion)), \(t.shreddedAt?.timeIntervalSince1970))
            """)
    }

    static let tenantColumns = "name, read_key_id, read_public_key, write_material, wrapped_read_key, min_retention, "
        + "created_at, key_version, shredded_at"

    static func tenantRecord(_ r: PostgresRow) throws -> TenantRecord {
        let (name, keyID, pub, material, wrapped, minRetention, created, version, shredded) = try r.decode(
            (String, String, ByteBuffer, ByteBuffer, String, Double, Double, Int32, Double?).self)
        return TenantRecord(name: name, readKeyID: keyID, readPublicKey: array(pub), writeMaterial: array(material),
                            wrappedReadKey: wrapped, minRetention: minRetention, createdAt: date(created),
                            keyVersion: Int(version), shreddedAt: shredded.map(date))
    }

    public func tenant(_ name: String) async throws -> TenantRecord? {
        try await rows("SELECT \(unescaped: Self.tenantColumns) FROM tenants WHERE name = \(name)").first
            .map(Self.tenantRecord)
    }

    public func tenants() async throws -> [TenantRecord] {
        try await rows("SELECT \(unescaped: Self.tenantColumns) FROM tenants ORDER BY name").map(Self.tenantRecord)
    }

    public func replaceReadKey(tenant: String, newVersion: Int, wrapped: String, retiredStub: String, now: Date,
                               shredded: Bool) async throws {
        let t = now.timeIntervalSince1970
        try await transaction(.serializable, "replaceReadKey") { conn in
            guard let (current, shreddedAt) = try await conn.all("""
                SELECT key_version, shredded_at FROM tenants WHERE name = \(tenant)
                """, logger).first?.decode((Int32, Double?).self) else {
                throw CatalogError(.notFound, object: "tenant \(tenant)", "tenant \(tenant) does not exist")
            }
            guard shreddedAt == nil else { throw CatalogError.shredded(tenant) }
            // Checked again here, in the same transaction as the shred: a hold placed after
            // the service's first check (across its awaits) still stops it.
            if shredded, let hold = try await conn.all("""
                SELECT id FROM holds WHERE tenant = \(tenant) AND released_at IS NULL LIMIT 1
                """, logger).first?.decode(String.self) {
                throw CatalogError(.held, object: "tenant \(tenant)", """
                    tenant \(tenant) is under legal hold \(hold): release it first (`redoubt admin hold release \
                    \(hold)`)
                    """)
            }
            guard newVersion == Int(current) + 1 else {
                throw CatalogError(.conflict, object: "tenant \(tenant)", """
                    tenant \(tenant)'s read key is at version \(current), not \(newVersion - 1): another rotation \
                    came first; fetch it again
                    """)
            }
            // A shred forgets the write material in the same transaction: its chunk-ID key
            // would still let whoever reads the database confirm guessed content.
            try await conn.query("""
                UPDATE tenants SET wrapped_read_key = \(wrapped), key_version = \(Int32(newVersion)),
                    shredded_at = \(shredded ? t : nil),
                    write_material = CASE WHEN \(shredded) THEN ''::bytea ELSE write_material END
                WHERE name = \(tenant)
                """, logger: logger)
            try await conn.query("""
                INSERT INTO retired_keks(tenant, version, stub, retired_at)
                VALUES (\(tenant), \(current), \(retiredStub), \(t))
                """, logger: logger)
        }
    }

    public func setWriteMaterial(tenant: String, material: [UInt8]) async throws -> Bool {
        try await !rows("""
            UPDATE tenants SET write_material = \(Self.bytes(material))
            WHERE name = \(tenant) AND length(write_material) = 0 RETURNING 1
            """).isEmpty
    }

    public func clearShreddedWriteMaterial() async throws -> Int {
        try await rows("""
            UPDATE tenants SET write_material = ''::bytea
            WHERE shredded_at IS NOT NULL AND length(write_material) > 0 RETURNING 1
            """).count
    }

    public func setMinRetention(tenant: String, seconds: TimeInterval, from: TimeInterval) async throws -> Bool {
        try await !rows("""
            UPDATE tenants SET min_retention = \(seconds) WHERE name = \(tenant) AND min_retention = \(from)
            RETURNING 1
            """).isEmpty
    }

    public func retiredKEKs(tenant: String) async throws -> [RetiredKEK] {
        try await rows("""
            SELECT version, stub, retired_at, destroyed_at FROM retired_keks WHERE tenant = \(tenant) ORDER BY version
            """).map { r in
            let (version, stub, retired, destroyed) = try r.decode((Int32, String, Double, Double?).self)
            return RetiredKEK(version: Int(version), stub: stub, retiredAt: Self.date(retired),
                              destroyedAt: destroyed.map(Self.date))
        }
    }

    public func markKEKsDestroyed(tenant: String, versions: [Int], now: Date) async throws {
        let v = versions.map { Int32(truncatingIfNeeded: $0) }
        _ = try await rows("""
            UPDATE retired_keks SET destroyed_at = \(now.timeIntervalSince1970)
            WHERE tenant = \(tenant) AND version = ANY(\(v)::integer[]) AND destroyed_at IS NULL
            """)
    }

    public func dedupScope(tenant: String) async throws -> DedupScope {
        try await rows("SELECT dedup_scope FROM tenants WHERE name = \(tenant)").first
            .flatMap { DedupScope(rawValue: try $0.decode(String.self)) } ?? .host
    }

    public func dedupScopes() async throws -> [String: DedupScope] {
        var out: [String: DedupScope] = [:]
        for r in try await rows("SELECT name, dedup_scope FROM tenants") {
            let (name, scope) = try r.decode((String, String).self)
            out[name] = DedupScope(rawValue: scope) ?? .host
        }
        return out
    }

    public func setDedupScope(tenant: String, _ scope: DedupScope, from: DedupScope) async throws -> Bool {
        try await rows("""
            UPDATE tenants SET dedup_scope = \(scope.rawValue) WHERE name = \(tenant) AND dedup_scope = \(from.rawValue)
            RETURNING 1
            """).count == 1
    }
}

import Foundation
import NIOCore
import PostgresNIO
import RedoubtCore

// The PostgreSQL implementation of ``PrincipalRepository``. Redeeming a token runs
// SERIALIZABLE: of two servers redeeming one token at once, one commits and the other is run
// again and finds it used. The unique index on (tenant, role, name) of active principals
// (NULLS NOT DISTINCT, so it also covers admins, whose tenant is NULL) is the backstop.

extension PostgresCatalog: PrincipalRepository {
    static func insertPrincipal(_ conn: PostgresConnection, _ p: Principal, os: String?, now: Date,
                                _ logger: Logger) async throws {
        try await conn.query("""
            INSERT INTO principals(id, role, tenant, name, fingerprint, host_key, os, created_at)
            VALUES (\(p.id), \(p.role.rawValue), \(p.tenant), \(p.name), \(p.fingerprint),
                    \(p.hostKey.map(Self.bytes)), \(os), \(now.timeIntervalSince1970))
            """, logger: logger)
    }

    public func insertPrincipal(_ p: Principal, os: String?, now: Date) async throws {
        try await transaction(.readCommitted, "insertPrincipal") { conn in
            try await Self.insertPrincipal(conn, p, os: os, now: now, logger)
        }
    }

    public func updatePrincipalOS(id: String, os: String) async throws -> String?? {
        try await transaction(.serializable, "updatePrincipalOS") { conn -> String?? in
            guard let row = try await conn.all("SELECT os FROM principals WHERE id = \(id)", logger).first else {
                return nil
            }
            let previous = try row.decode(String?.self)
            guard previous != os else { return nil }
            try await conn.query("UPDATE principals SET os = \(os) WHERE id = \(id)", logger: logger)
            return .some(previous)
        }
    }

    static let principalColumns = "id, role, tenant, name, fingerprint, host_key"

    static func principal(_ r: PostgresRow) throws -> Principal {
        let (id, role, tenant, name, fingerprint, key) = try r.decode(
            (String, String, String?, String, String, ByteBuffer?).self)
        return Principal(id: id, role: Role(rawValue: role) ?? .writer, tenant: tenant, name: name,
                         fingerprint: fingerprint, hostKey: key.map(array))
    }

    public func principal(fingerprint: String) async throws -> Principal? {
        try await rows("""
            SELECT \(unescaped: Self.principalColumns) FROM principals
            WHERE fingerprint = \(fingerprint) AND NOT revoked
            """).first.map(Self.principal)
    }

    public func principals(tenant: String?) async throws -> [Principal] {
        try await rows("""
            SELECT \(unescaped: Self.principalColumns) FROM principals
            WHERE NOT revoked AND (\(tenant)::text IS NULL OR tenant = \(tenant)) ORDER BY role, name
            """).map(Self.principal)
    }

    static let infoColumns = "p.id, p.role, p.tenant, p.name, p.fingerprint, p.created_at, p.os, p.revoked, "
        + "p.revoked_at"

    static func principalInfo(_ r: PostgresRow, lastSnapshot: Double?) throws -> Wire.PrincipalInfo {
        let (id, role, tenant, name, fingerprint, created, os, revoked, revokedAt) = try r.decode(
            (String, String, String?, String, String, Double, String?, Bool, Double?).self)
        return Wire.PrincipalInfo(id: id, role: role, tenant: tenant, name: name, fingerprint: fingerprint,
                                  createdAt: date(created), os: os,
                                  revokedAt: revoked ? date(revokedAt ?? 0) : nil,
                                  lastSnapshotAt: lastSnapshot.map(date))
    }

    public func principalListing(includeRevoked: Bool) async throws -> [Wire.PrincipalInfo] {
        let damaged = try await damagedPackCounts()
        let verified = try await deepVerifyByUploader()
        return try await rows("""
            SELECT \(unescaped: Self.infoColumns), CASE WHEN p.role = 'writer' THEN
                (SELECT MAX(s.committed_at) FROM snapshots s WHERE s.tenant = p.tenant AND s.host = p.name) END
            FROM principals p WHERE \(includeRevoked) OR NOT p.revoked
            ORDER BY p.tenant NULLS FIRST, p.role, p.name, p.created_at
            """).map { r in
            var i = try Self.principalInfo(r, lastSnapshot: try r.decode(
                (String, String, String?, String, String, Double, String?, Bool, Double?, Double?).self).9)
            i.damagedPacks = damaged[i.id]
            if let v = verified[i.id] {
                i.packsNotDeepVerified = v.never > 0 ? v.never : nil
                i.oldestDeepVerifyAt = v.oldest
            }
            return i
        }
    }

    public func principalInfo(id: String) async throws -> Wire.PrincipalInfo? {
        try await rows("SELECT \(unescaped: Self.infoColumns) FROM principals p WHERE p.id = \(id)").first
            .map { try Self.principalInfo($0, lastSnapshot: nil) }
    }

    /// Cancels the unused tokens that would enroll this tenant, role and name; returns how many.
    static func cancelEnrollments(_ conn: PostgresConnection, role: Role, tenant: String?, name: String, now: Date,
                                  _ logger: Logger) async throws -> Int {
        try await conn.count("""
            UPDATE enrollments SET cancelled_at = \(now.timeIntervalSince1970)
            WHERE role = \(role.rawValue) AND tenant IS NOT DISTINCT FROM \(tenant) AND name = \(name)
              AND used_at IS NULL AND cancelled_at IS NULL
            RETURNING 1
            """, logger)
    }

    public func revokeAdmin(name: String, now: Date) async throws -> Bool {
        try await transaction(.serializable, "revokeAdmin") { conn in
            guard try await conn.any("""
                UPDATE principals SET revoked = TRUE, revoked_at = \(now.timeIntervalSince1970)
                WHERE role = 'admin' AND tenant IS NULL AND name = \(name) AND NOT revoked RETURNING 1
                """, logger) else { return false }
            // SERIALIZABLE: two revocations that each still see the other admin cannot both commit.
            guard try await conn.any("""
                SELECT 1 FROM principals WHERE role = 'admin' AND tenant IS NULL AND NOT revoked
                """, logger) else { throw CatalogError.lastAdmin(name) }
            _ = try await Self.cancelEnrollments(conn, role: .admin, tenant: nil, name: name, now: now, logger)
            return true
        }
    }

    public func revokePrincipal(id: String, now: Date) async throws -> Int? {
        try await transaction(.serializable, "revokePrincipal") { conn -> Int? in
            guard let (role, tenant, name) = try await conn.all("""
                UPDATE principals SET revoked = TRUE, revoked_at = \(now.timeIntervalSince1970)
                WHERE id = \(id) AND NOT revoked AND role != 'admin' RETURNING role, tenant, name
                """, logger).first?.decode((String, String?, String).self),
                let role = Role(rawValue: role) else { return nil }
            return try await Self.cancelEnrollments(conn, role: role, tenant: tenant, name: name, now: now, logger)
        }
    }

    public func insertEnrollment(tokenHash: String, role: Role, tenant: String?, name: String, expiresAt: Date,
                                 createdBy: String) async throws {
        _ = try await rows("""
            INSERT INTO enrollments(token_hash, role, tenant, name, expires_at, created_by)
            VALUES (\(tokenHash), \(role.rawValue), \(tenant), \(name), \(expiresAt.timeIntervalSince1970),
                    \(createdBy))
            """)
    }

    public func redeemEnrollment(tokenHash: String, now: Date, os: String?,
                                 _ make: (Catalog.Enrollment) throws -> Principal) async throws -> Principal {
        try await transaction(.serializable, "redeemEnrollment") { conn in
            guard let (roleName, tenant, name) = try await conn.all("""
                SELECT role, tenant, name FROM enrollments
                WHERE token_hash = \(tokenHash) AND used_at IS NULL AND cancelled_at IS NULL
                  AND expires_at > \(now.timeIntervalSince1970)
                """, logger).first?.decode((String, String?, String).self),
                let role = Role(rawValue: roleName) else {
                throw CatalogError(.notFound, object: "enrollment token", """
                    enrollment token unknown, already used, cancelled or expired: ask an admin for \
                    a new one (`redoubt admin host add`)
                    """)
            }
            let e = Catalog.Enrollment(role: role, tenant: tenant, name: name)
            // A writer or restorer gets the tenant's write material: without it (a catalog
            // rebuilt from the store) the token is refused but not used up.
            if let tenant, role == .writer || role == .restorer,
               let material = try await conn.all("SELECT write_material FROM tenants WHERE name = \(tenant)", logger)
                .first?.decode(ByteBuffer.self), material.readableBytes == 0 {
                throw CatalogError.noWriteMaterial(tenant)
            }
            let p = try make(e)
            guard try await !conn.any("""
                SELECT 1 FROM principals
                WHERE tenant IS NOT DISTINCT FROM \(tenant) AND role = \(role.rawValue) AND name = \(name)
                  AND NOT revoked
                """, logger) else {
                throw CatalogError(.conflict, object: "\(role.rawValue) \(name)", """
                    a \(role.rawValue) named \(name) is already enrolled in this tenant: revoke it first \
                    (`redoubt admin \(role == .writer ? "host" : role.rawValue) revoke`); the token is not used up
                    """)
            }
            try await Self.insertPrincipal(conn, p, os: os, now: now, logger)
            try await conn.query("""
                UPDATE enrollments SET used_at = \(now.timeIntervalSince1970) WHERE token_hash = \(tokenHash)
                """, logger: logger)
            return p
        }
    }

    static func enrollmentInfo(_ r: PostgresRow) throws -> Wire.EnrollmentInfo {
        let (hash, role, tenant, name, by, expires) = try r.decode(
            (String, String, String?, String, String, Double).self)
        return Wire.EnrollmentInfo(id: String(hash.prefix(16)), role: role, tenant: tenant, name: name,
                                   createdBy: by, expiresAt: date(expires))
    }

    public func pendingEnrollments(now: Date) async throws -> [Wire.EnrollmentInfo] {
        try await rows("""
            SELECT token_hash, role, tenant, name, created_by, expires_at FROM enrollments
            WHERE used_at IS NULL AND cancelled_at IS NULL AND expires_at > \(now.timeIntervalSince1970)
            ORDER BY expires_at
            """).map(Self.enrollmentInfo)
    }

    public func cancelEnrollment(id: String, now: Date) async throws -> Wire.EnrollmentInfo? {
        try await transaction(.serializable, "cancelEnrollment") { conn -> Wire.EnrollmentInfo? in
            let found = try await conn.all("""
                SELECT token_hash, role, tenant, name, created_by, expires_at FROM enrollments
                WHERE substr(token_hash, 1, \(Int32(id.count))) = \(id) AND used_at IS NULL AND cancelled_at IS NULL
                  AND expires_at > \(now.timeIntervalSince1970)
                LIMIT 2
                """, logger)
            guard found.count == 1, let r = found.first else { return nil }
            let info = try Self.enrollmentInfo(r)
            let hash = try r.decode((String, String, String?, String, String, Double).self).0
            try await conn.query("""
                UPDATE enrollments SET cancelled_at = \(now.timeIntervalSince1970) WHERE token_hash = \(hash)
                """, logger: logger)
            return info
        }
    }

    public func enrolledHostSystems() async throws -> [Catalog.HostOS] {
        try await rows("""
            SELECT tenant, name, os FROM principals WHERE role = 'writer' AND NOT revoked ORDER BY tenant, name
            """).map { r in
            let (tenant, name, os) = try r.decode((String?, String, String?).self)
            return Catalog.HostOS(tenant: tenant, name: name, os: os)
        }
    }

    public func hostKeyWriters(tenant: String?) async throws -> [HostKeyObjects.Writer] {
        try await rows("""
            SELECT id, tenant, name, host_key, created_at, revoked, revoked_at FROM principals
            WHERE role = 'writer' AND host_key IS NOT NULL AND tenant IS NOT NULL
              AND (\(tenant)::text IS NULL OR tenant = \(tenant))
            ORDER BY created_at
            """).compactMap { r in
            let (id, tenant, name, raw, created, revoked, revokedAt) = try r.decode(
                (String, String, String, ByteBuffer, Double, Bool, Double?).self)
            guard let key = try? HostPublicKey(rawRepresentation: Self.array(raw)) else { return nil }
            return HostKeyObjects.Writer(id: id, tenant: tenant, name: name, hostKey: key,
                                         createdAt: Self.date(created),
                                         revokedAt: revoked ? Self.date(revokedAt ?? 0) : nil)
        }
    }
}

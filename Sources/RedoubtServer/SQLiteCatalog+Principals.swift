import Crypto
import Foundation
import GRDB
import RedoubtCore
import RedoubtStore

// The SQLite implementation of ``PrincipalRepository``.

extension Catalog {
    public func insertPrincipal(_ p: Principal, os: String?, now: Date) throws {
        try db.write { db in try Self.insertPrincipal(db, p, os: os, now: now) }
    }

    static func insertPrincipal(_ db: Database, _ p: Principal, os: String?, now: Date) throws {
        try db.execute(sql: """
            INSERT INTO principals(id, role, tenant, name, fingerprint, host_key, os, created_at) VALUES (?, ?, ?, ?, \
            ?, ?, ?, ?)
            """, arguments: [p.id, p.role.rawValue, p.tenant, p.name, p.fingerprint, p.hostKey.map { Data($0) }, os,
                             now.timeIntervalSince1970])
    }

    /// Sets a principal's reported OS; returns the previous value (itself optional) when it
    /// changed, nil when it was already `os`.
    public func updatePrincipalOS(id: String, os: String) throws -> String?? {
        try db.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT os FROM principals WHERE id = ?", arguments: [id]) else {
                return nil
            }
            let previous: String? = row["os"]
            guard previous != os else { return nil }
            try db.execute(sql: "UPDATE principals SET os = ? WHERE id = ?", arguments: [os, id])
            return .some(previous)
        }
    }

    /// The active principal whose client certificate has this fingerprint.
    public func principal(fingerprint: String) throws -> Principal? {
        try db.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM principals WHERE fingerprint = ? AND revoked = 0",
                arguments: [fingerprint]).map(Self.principal)
        }
    }

    public func principals(tenant: String?) throws -> [Principal] {
        try db.read { db in
            if let tenant {
                return try Row.fetchAll(db,
                    sql: "SELECT * FROM principals WHERE tenant = ? AND revoked = 0 ORDER BY role, name",
                    arguments: [tenant]).map(Self.principal)
            }
            return try Row.fetchAll(db,
                sql: "SELECT * FROM principals WHERE revoked = 0 ORDER BY role, name").map(Self.principal)
        }
    }

    static func principal(_ r: Row) -> Principal {
        Principal(id: r["id"], role: Role(rawValue: r["role"]) ?? .writer, tenant: r["tenant"], name: r["name"],
            fingerprint: r["fingerprint"],
                  hostKey: (r["host_key"] as Data?).map { Array($0) })
    }

    public func insertEnrollment(tokenHash: String, role: Role, tenant: String?, name: String, expiresAt: Date,
        createdBy: String) throws {
        try db.write { db in
            try db.execute(sql: "INSERT INTO enrollments(token_hash, role, tenant, name, expires_at, created_by) "
                + "VALUES (?, ?, ?, ?, ?, ?)",
                           arguments: [tokenHash, role.rawValue, tenant, name, expiresAt.timeIntervalSince1970,
                               createdBy])
        }
    }

    public struct Enrollment: Sendable {
        public let role: Role
        public let tenant: String?
        public let name: String
    }

    /// Redeems a one-time token and records the principal `make` builds from it, in one
    /// transaction: the token is used up only if the principal is recorded. Errors that
    /// `make` throws pass through (and leave the token unused). An unknown, used, cancelled
    /// or expired token is ``CatalogError/Code/notFound``; an active principal that already
    /// has the token's tenant, role and name is ``CatalogError/Code/conflict``.
    public func redeemEnrollment(tokenHash: String, now: Date, os: String?,
        _ make: (Enrollment) throws -> Principal) throws -> Principal {
        try db.write { db in
            guard let r = try Row.fetchOne(db, sql: """
                    SELECT * FROM enrollments WHERE token_hash = ? AND used_at IS NULL AND cancelled_at IS NULL AND \
                    expires_at > ?
                    """, arguments: [tokenHash, now.timeIntervalSince1970]),
                  let role = Role(rawValue: r["role"]) else {
                throw CatalogError(.notFound, object: "enrollment token",
                                   """
                                       enrollment token unknown, already used, cancelled or expired: ask an admin for \
                                       a new one (`redoubt admin host add`)
                                       """)
            }
            let e = Enrollment(role: role, tenant: r["tenant"], name: r["name"])
            // A writer or restorer gets the tenant's write material: without it (a catalog
            // rebuilt from the store) the token is refused but not used up.
            if let tenant = e.tenant, role == .writer || role == .restorer,
               let material = try Data.fetchOne(db, sql: "SELECT write_material FROM tenants WHERE name = ?",
                   arguments: [tenant]), material.isEmpty {
                throw CatalogError.noWriteMaterial(tenant)
            }
            let p = try make(e)
            let taken = try Int.fetchOne(db,
                sql: "SELECT COUNT(*) FROM principals WHERE tenant IS ? AND role = ? AND name = ? AND revoked = 0",
                                         arguments: [e.tenant, role.rawValue, e.name]) ?? 0
            guard taken == 0 else {
                throw CatalogError(.conflict, object: "\(role.rawValue) \(e.name)",
                    """
                        a \(role.rawValue) named \(e.name) is already enrolled in this tenant: revoke it first \
                        (`redoubt admin \(role == .writer ? "host" : role.rawValue) revoke`); the token is not used up
                        """)
            }
            try Self.insertPrincipal(db, p, os: os, now: now)
            try db.execute(sql: "UPDATE enrollments SET used_at = ? WHERE token_hash = ?",
                arguments: [now.timeIntervalSince1970, tokenHash])
            return p
        }
    }
}

extension Catalog {
    /// Every principal (`includeRevoked`: revoked ones too), by tenant, role and name,
    /// with each writer's newest committed snapshot.
    public func principalListing(includeRevoked: Bool) throws -> [Wire.PrincipalInfo] {
        let damaged = try damagedPackCounts()
        let verified = try deepVerifyByUploader()
        return try db.read { db in
            try Row.fetchAll(db, sql: """
                SELECT p.*, CASE WHEN p.role = 'writer' THEN
                    (SELECT MAX(s.committed_at) FROM snapshots s WHERE s.tenant = p.tenant AND s.host = p.name) END AS \
                last_snapshot
                FROM principals p \(includeRevoked ? "" : "WHERE p.revoked = 0")
                ORDER BY p.tenant, p.role, p.name, p.created_at
                """).map(Self.principalInfo)
        }.map { info in
            var i = info
            i.damagedPacks = damaged[info.id]
            if let v = verified[info.id] {
                i.packsNotDeepVerified = v.never > 0 ? v.never : nil
                i.oldestDeepVerifyAt = v.oldest
            }
            return i
        }
    }

    static func principalInfo(_ r: Row) -> Wire.PrincipalInfo {
        let revoked: Bool = r["revoked"]
        return Wire.PrincipalInfo(id: r["id"], role: r["role"], tenant: r["tenant"], name: r["name"],
            fingerprint: r["fingerprint"],
                                  createdAt: Date(timeIntervalSince1970: r["created_at"]), os: r["os"],
                                  // A credential revoked before revoked_at existed shows the epoch.
                                  revokedAt: revoked ? Date(timeIntervalSince1970: (r["revoked_at"] as Double?)
                                      ?? 0) : nil,
                                  lastSnapshotAt: (r["last_snapshot"] as Double?).map {
                                      Date(timeIntervalSince1970: $0)
                                  })
    }

    /// The principal with this ID, revoked or not.
    public func principalInfo(id: String) throws -> Wire.PrincipalInfo? {
        try db.read { db in
            try Row.fetchOne(db, sql: "SELECT p.*, NULL AS last_snapshot FROM principals p WHERE p.id = ?",
                arguments: [id]).map(Self.principalInfo)
        }
    }

    /// Revokes a writer, restorer or auditor credential, and with it every unused
    /// enrollment token for the same tenant, role and name (a token taken with the host
    /// must not enroll it again). Nil if it was not active; else how many tokens were
    /// cancelled.
    public func revokePrincipal(id: String, now: Date) throws -> Int? {
        try db.write { db in
            guard let r = try Row.fetchOne(db,
                sql: "SELECT role, tenant, name FROM principals WHERE id = ? AND revoked = 0 AND role != 'admin'",
                                           arguments: [id]),
                  let role = Role(rawValue: r["role"]) else { return nil }
            try db.execute(sql: "UPDATE principals SET revoked = 1, revoked_at = ? WHERE id = ?",
                arguments: [now.timeIntervalSince1970, id])
            return try Self.cancelEnrollments(db, role: role, tenant: r["tenant"], name: r["name"], now: now)
        }
    }

    /// Cancels the unused tokens that would enroll this tenant, role and name; returns how
    /// many. Redemption refuses a cancelled token whatever its expiry.
    static func cancelEnrollments(_ db: Database, role: Role, tenant: String?, name: String, now: Date) throws -> Int {
        try db.execute(sql: """
            UPDATE enrollments SET cancelled_at = ? WHERE role = ? AND tenant IS ? AND name = ? AND used_at IS NULL \
            AND cancelled_at IS NULL
            """, arguments: [now.timeIntervalSince1970, role.rawValue, tenant, name])
        return db.changesCount
    }
}

extension Catalog {
    /// Tokens that could still enroll someone (unused, not cancelled, unexpired at `now`).
    public func pendingEnrollments(now: Date) throws -> [Wire.EnrollmentInfo] {
        try db.read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM enrollments WHERE used_at IS NULL AND cancelled_at IS NULL AND expires_at > ? ORDER BY \
                expires_at
                """, arguments: [now.timeIntervalSince1970]).map(Self.enrollmentInfo)
        }
    }

    static func enrollmentInfo(_ r: Row) -> Wire.EnrollmentInfo {
        Wire.EnrollmentInfo(id: String((r["token_hash"] as String).prefix(16)), role: r["role"], tenant: r["tenant"],
            name: r["name"],
                            createdBy: r["created_by"], expiresAt: Date(timeIntervalSince1970: r["expires_at"]))
    }

    /// Cancels the one pending token whose hash starts with `id`; returns it, or nil when
    /// none or several match.
    public func cancelEnrollment(id: String, now: Date) throws -> Wire.EnrollmentInfo? {
        try db.write { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT * FROM enrollments WHERE substr(token_hash, 1, ?) = ? AND used_at IS NULL AND cancelled_at IS \
                NULL AND expires_at > ? LIMIT 2
                """, arguments: [id.count, id, now.timeIntervalSince1970])
            guard rows.count == 1, let r = rows.first else { return nil }
            try db.execute(sql: "UPDATE enrollments SET cancelled_at = ? WHERE token_hash = ?",
                arguments: [now.timeIntervalSince1970, r["token_hash"] as String])
            return Self.enrollmentInfo(r)
        }
    }
}

extension Catalog {
    /// An enrolled writer and the OS it reported at enrollment.
    public struct HostOS: Sendable, Equatable {
        public let tenant: String?
        public let name: String
        public let os: String?
        public init(tenant: String?, name: String, os: String?) {
            self.tenant = tenant
            self.name = name
            self.os = os
        }
        var label: String { "\(tenant ?? "-")/\(name)" }
    }

    /// Active (not revoked) writers with the `os` each reported at enrollment.
    public func enrolledHostSystems() throws -> [HostOS] {
        try db.read { db in
            try Row.fetchAll(db,
                sql: "SELECT tenant, name, os FROM principals WHERE role = 'writer' AND revoked = 0 ORDER BY tenant, "
                    + "name").map {
                HostOS(tenant: $0["tenant"], name: $0["name"], os: $0["os"])
            }
        }
    }
}

extension Catalog {
    public func hostKeyWriters(tenant: String?) throws -> [HostKeyObjects.Writer] {
        try db.read { db in
            try Row.fetchAll(db, sql: """
                SELECT id, tenant, name, host_key, created_at, revoked, revoked_at FROM principals
                WHERE role = 'writer' AND host_key IS NOT NULL AND tenant IS NOT NULL AND (? IS NULL OR tenant = ?)
                ORDER BY created_at
                """, arguments: [tenant, tenant])
        }.compactMap { r in
            guard let raw = r["host_key"] as Data?, let key = try? HostPublicKey(rawRepresentation: Array(raw)) else {
                return nil
            }
            let revoked: Bool = r["revoked"]
            return HostKeyObjects.Writer(id: r["id"], tenant: r["tenant"], name: r["name"], hostKey: key,
                                         createdAt: Date(timeIntervalSince1970: r["created_at"]),
                                         // A credential revoked before revoked_at existed shows the epoch.
                                         revokedAt: revoked
                                             ? Date(timeIntervalSince1970: (r["revoked_at"] as Double?) ?? 0) : nil)
        }
    }
}

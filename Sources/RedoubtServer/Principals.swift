import Foundation
import GRDB
import RedoubtCore

// Listing and revoking enrolled credentials (docs/PROTOCOL.md §3, §4.4). A revoked
// credential authenticates no more from its next request on (every request looks its
// certificate up, AuthMiddleware); what it committed stays, under its locks, and its
// snapshots still verify (the host key is kept). Revoking a restorer or an auditor
// takes effect at once: it only narrows who can read. Revoking a writer stops that
// host's backups, which weakens protection, so it is gated like the other weakening
// changes (§4.2, `revoke-writer`). Admins are removed with `admins remove` instead.

extension Catalog {
    static func registerPrincipalMigrations(_ m: inout DatabaseMigrator) {
        m.registerMigration("v6-principal-revocation") { db in
            try db.execute(sql: """
                ALTER TABLE principals ADD COLUMN revoked_at REAL;
                ALTER TABLE enrollments ADD COLUMN cancelled_at REAL;
                """)
        }
    }

    /// Every principal (`includeRevoked`: revoked ones too), by tenant, role and name,
    /// with each writer's newest committed snapshot.
    public func principalListing(includeRevoked: Bool) throws -> [Wire.PrincipalInfo] {
        let damaged = try damagedPackCounts()
        let verified = try deepVerifyByUploader()
        return try db.read { db in
            try Row.fetchAll(db, sql: """
                SELECT p.*, CASE WHEN p.role = 'writer' THEN
                    (SELECT MAX(s.committed_at) FROM snapshots s WHERE s.tenant = p.tenant AND s.host = p.name) END AS last_snapshot
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
        return Wire.PrincipalInfo(id: r["id"], role: r["role"], tenant: r["tenant"], name: r["name"], fingerprint: r["fingerprint"],
                                  createdAt: Date(timeIntervalSince1970: r["created_at"]), os: r["os"],
                                  // A credential revoked before revoked_at existed shows the epoch.
                                  revokedAt: revoked ? Date(timeIntervalSince1970: (r["revoked_at"] as Double?) ?? 0) : nil,
                                  lastSnapshotAt: (r["last_snapshot"] as Double?).map { Date(timeIntervalSince1970: $0) })
    }

    /// The principal with this ID, revoked or not.
    public func principalInfo(id: String) throws -> Wire.PrincipalInfo? {
        try db.read { db in
            try Row.fetchOne(db, sql: "SELECT p.*, NULL AS last_snapshot FROM principals p WHERE p.id = ?", arguments: [id]).map(Self.principalInfo)
        }
    }

    /// Revokes a writer, restorer or auditor credential, and with it every unused
    /// enrollment token for the same tenant, role and name (a token taken with the host
    /// must not enroll it again). Nil if it was not active; else how many tokens were
    /// cancelled.
    func revokePrincipal(id: String, now: Date) throws -> Int? {
        try db.write { db in
            guard let r = try Row.fetchOne(db, sql: "SELECT role, tenant, name FROM principals WHERE id = ? AND revoked = 0 AND role != 'admin'",
                                           arguments: [id]),
                  let role = Role(rawValue: r["role"]) else { return nil }
            try db.execute(sql: "UPDATE principals SET revoked = 1, revoked_at = ? WHERE id = ?", arguments: [now.timeIntervalSince1970, id])
            return try Self.cancelEnrollments(db, role: role, tenant: r["tenant"], name: r["name"], now: now)
        }
    }

    /// Cancels the unused tokens that would enroll this tenant, role and name; returns how
    /// many. Redemption refuses a cancelled token whatever its expiry.
    static func cancelEnrollments(_ db: Database, role: Role, tenant: String?, name: String, now: Date) throws -> Int {
        try db.execute(sql: """
            UPDATE enrollments SET cancelled_at = ? WHERE role = ? AND tenant IS ? AND name = ? AND used_at IS NULL AND cancelled_at IS NULL
            """, arguments: [now.timeIntervalSince1970, role.rawValue, tenant, name])
        return db.changesCount
    }
}

extension Catalog {
    /// Tokens that could still enroll someone (unused, not cancelled, unexpired at `now`).
    public func pendingEnrollments(now: Date) throws -> [Wire.EnrollmentInfo] {
        try db.read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM enrollments WHERE used_at IS NULL AND cancelled_at IS NULL AND expires_at > ? ORDER BY expires_at
                """, arguments: [now.timeIntervalSince1970]).map(Self.enrollmentInfo)
        }
    }

    static func enrollmentInfo(_ r: Row) -> Wire.EnrollmentInfo {
        Wire.EnrollmentInfo(id: String((r["token_hash"] as String).prefix(16)), role: r["role"], tenant: r["tenant"], name: r["name"],
                            createdBy: r["created_by"], expiresAt: Date(timeIntervalSince1970: r["expires_at"]))
    }

    /// Cancels the one pending token whose hash starts with `id`; returns it, or nil when
    /// none or several match.
    func cancelEnrollment(id: String, now: Date) throws -> Wire.EnrollmentInfo? {
        try db.write { db in
            let rows = try Row.fetchAll(db, sql: """
                SELECT * FROM enrollments WHERE substr(token_hash, 1, ?) = ? AND used_at IS NULL AND cancelled_at IS NULL AND expires_at > ? LIMIT 2
                """, arguments: [id.count, id, now.timeIntervalSince1970])
            guard rows.count == 1, let r = rows.first else { return nil }
            try db.execute(sql: "UPDATE enrollments SET cancelled_at = ? WHERE token_hash = ?", arguments: [now.timeIntervalSince1970, r["token_hash"] as String])
            return Self.enrollmentInfo(r)
        }
    }
}

extension RepositoryService {
    /// `GET /v1/enrollments`: the tokens that could still enroll someone.
    public func listEnrollments() throws -> [Wire.EnrollmentInfo] { try catalog.pendingEnrollments(now: try now()) }

    /// `POST /v1/enrollments/{id}/cancel`: a token sent to the wrong place enrolls no one.
    /// Immediate: it only narrows who can join.
    public func cancelEnrollment(id: String, ctx: CallContext) throws -> Wire.EnrollmentInfo {
        let id = id.lowercased()
        guard id.count >= 12, id.count <= 64, id.allSatisfy(\.isHexDigit) else {
            throw ServerError.badRequest("a token ID is 12 to 64 hex digits, as `redoubt admin token list` shows it")
        }
        guard let e = try catalog.cancelEnrollment(id: id, now: try now()) else {
            throw refuse(ctx, .cancelEnrollment, object: "token \(id)", .notFound("no pending token \(id) (or several match): `redoubt admin token list`"))
        }
        audit(ctx, .cancelEnrollment, object: "token \(e.id)", outcome: "ok", detail: "\(e.role) \(e.tenant ?? "-")/\(e.name)")
        return e
    }

    /// `GET /v1/principals[?all=1]`.
    public func listPrincipals(includeRevoked: Bool) throws -> [Wire.PrincipalInfo] {
        try catalog.principalListing(includeRevoked: includeRevoked).map { p in
            guard p.role == Role.writer.rawValue, let t = p.tenant else { return p }
            var p = p
            p.quota = try quotaInfo(tenant: t, host: p.name)
            return p
        }
    }

    /// `POST /v1/principals/{id}/revoke`: see the comment at the top of this file.
    public func revokePrincipal(id: String, _ req: Wire.ApprovedChange, ctx: CallContext) throws -> Wire.PrincipalInfo {
        guard let p = try catalog.principalInfo(id: id) else {
            throw ServerError.notFound("no principal with ID \(id): `redoubt admin host list TENANT --all`")
        }
        let object = "\(p.role) \(p.tenant.map { $0 + "/" } ?? "")\(p.name)"
        guard p.role != Role.admin.rawValue else {
            throw refuse(ctx, .revokePrincipal, object: object, .badRequest("\(p.name) is an admin: remove admins with `redoubt admin admins remove \(p.name)` (it needs approval)"))
        }
        if let at = p.revokedAt {
            throw refuse(ctx, .revokePrincipal, object: object, ServerError(409, "E_CONFLICT", "\(object) was already revoked at \(at)"))
        }
        if p.role == Role.writer.rawValue {
            // The principal ID, not the name: approving the revocation of web1 must not
            // revoke a web1 enrolled anew after the request was filed.
            try authorize(.revokeWriter, object: object, parameters: ["principal": id], requestID: req.requestID, consume: true, ctx: ctx)
        }
        guard let cancelled = try catalog.revokePrincipal(id: id, now: try now()) else {
            throw refuse(ctx, .revokePrincipal, object: object, ServerError(409, "E_CONFLICT", "\(object) was revoked meanwhile"))
        }
        audit(ctx, .revokePrincipal, object: object, outcome: "ok", detail: "principal=\(id) fingerprint=\(p.fingerprint.prefix(16)) tokens-cancelled=\(cancelled)")
        return try catalog.principalInfo(id: id) ?? p
    }
}

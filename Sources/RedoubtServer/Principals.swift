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

extension RepositoryService {
    /// `GET /v1/enrollments`: the tokens that could still enroll someone.
    public func listEnrollments() async throws -> [Wire.EnrollmentInfo] {
        try await catalog.pendingEnrollments(now: try await now())
    }

    /// `POST /v1/enrollments/{id}/cancel`: a token sent to the wrong place enrolls no one.
    /// Immediate: it only narrows who can join.
    public func cancelEnrollment(id: String, ctx: CallContext) async throws -> Wire.EnrollmentInfo {
        let id = id.lowercased()
        guard id.count >= 12, id.count <= 64, id.allSatisfy(\.isHexDigit) else {
            throw ServerError.badRequest("a token ID is 12 to 64 hex digits, as `redoubt admin token list` shows it")
        }
        guard let e = try await catalog.cancelEnrollment(id: id, now: try now()) else {
            throw await refuse(ctx, .cancelEnrollment, object: "token \(id)",
                .notFound("no pending token \(id) (or several match): `redoubt admin token list`"))
        }
        await audit(ctx, .cancelEnrollment, object: "token \(e.id)", outcome: "ok",
            detail: "\(e.role) \(e.tenant ?? "-")/\(e.name)")
        return e
    }

    /// `GET /v1/principals[?all=1]`.
    public func listPrincipals(includeRevoked: Bool) async throws -> [Wire.PrincipalInfo] {
        let now = try await now()
        // The same expectation `admin status`, metrics and notifications judge a host by: the
        // interval it sends with its commits, replaced by an admin's `notify expect`.
        var expected: [String: TimeInterval] = [:]
        for h in try await catalog.monitoringFacts(now: now).hosts {
            if let e = h.expectedInterval { expected[h.tenant + "\u{0}" + h.host] = e }
        }
        var listing = try await catalog.principalListing(includeRevoked: includeRevoked)
        for (i, p) in listing.enumerated() {
            guard p.role == Role.writer.rawValue, let t = p.tenant, p.revokedAt == nil else { continue }
            listing[i].quota = try await quotaInfo(tenant: t, host: p.name)
            let interval = expected[t + "\u{0}" + p.name]
            listing[i].expectedIntervalSeconds = interval
            listing[i].backupStatus = Self.backupStatus(last: p.lastSnapshotAt, expected: interval, now: now).rawValue
        }
        return listing
    }

    /// `POST /v1/principals/{id}/revoke`: see the comment at the top of this file.
    public func revokePrincipal(id: String, _ req: Wire.ApprovedChange,
            ctx: CallContext) async throws -> Wire.PrincipalInfo {
        guard let p = try await catalog.principalInfo(id: id) else {
            throw ServerError.notFound("no principal with ID \(id): `redoubt admin host list TENANT --all`")
        }
        let object = "\(p.role) \(p.tenant.map { $0 + "/" } ?? "")\(p.name)"
        guard p.role != Role.admin.rawValue else {
            throw await refuse(ctx, .revokePrincipal, object: object,
                .badRequest("""
                    \(p.name) is an admin: remove admins with `redoubt admin admins remove \(p.name)` (it needs \
                    approval)
                    """))
        }
        if let at = p.revokedAt {
            throw await refuse(ctx, .revokePrincipal, object: object, ServerError(409, "E_CONFLICT",
                "\(object) was already revoked at \(at)"))
        }
        if p.role == Role.writer.rawValue {
            // The principal ID, not the name: approving the revocation of web1 must not
            // revoke a web1 enrolled anew after the request was filed.
            try await authorize(.revokeWriter, object: object, parameters: ["principal": id], requestID: req.requestID,
                consume: true, ctx: ctx)
        }
        guard let cancelled = try await catalog.revokePrincipal(id: id, now: try now()) else {
            throw await refuse(ctx, .revokePrincipal, object: object, ServerError(409, "E_CONFLICT",
                "\(object) was revoked meanwhile"))
        }
        await audit(ctx, .revokePrincipal, object: object, outcome: "ok",
            detail: "principal=\(id) fingerprint=\(p.fingerprint.prefix(16)) tokens-cancelled=\(cancelled)")
        return try await catalog.principalInfo(id: id) ?? p
    }
}

import Crypto
import Foundation
import GRDB
import RedoubtCore

// M-of-N approvals (docs/PROTOCOL.md §4.2). A change that weakens protection — shredding
// a tenant, lowering its minimum retention, adding or removing an admin, changing the
// quorum — is a *request* until enough other admins approve it. The requester's own
// approval does not count; one rejection ends it; it expires (72 h by default). Once
// approved, the change is made by repeating the call with the request's ID, and the
// request can be used exactly once, for exactly the change it names.

/// A request for a change that needs other admins' approval.
public struct ApprovalRequest: Sendable, Equatable, Codable {
    public enum State: String, Sendable, Codable, CaseIterable {
        case pending, approved, rejected, expired, executed
    }
    public let id: String
    /// What is asked (`shred-tenant`, `lower-retention`, `add-admin`, `remove-admin`, `set-quorum`).
    public let action: String
    /// What it applies to (`tenant acme`, `admin bob`, `quorum`).
    public let object: String
    /// The exact change: it is what the approvers approve, and what the final call must repeat.
    public let parameters: [String: String]
    public let requester: String
    /// The requester's principal ID: only the requester may carry the change out.
    public let requesterID: String
    public let createdAt: Date
    public let expiresAt: Date
    /// Approvals needed from admins other than the requester: fixed when the request is
    /// made, raised if the quorum has been raised since.
    public let needed: Int
    /// Admins who approved and are admins still (a revoked admin's approval no longer counts).
    public let approvers: [String]
    public let rejectedBy: String?
    public let state: State
}

extension JSONEncoder {
    static var sorted: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return e
    }
}

extension RepositoryService {
    /// How long a request stays open.
    public static let requestLifetime: TimeInterval = 72 * 3600

    /// Lets a weakening change through, or turns it into a request. With `requestID`, the
    /// request must be approved, unexpired, unused, and name exactly this action, object
    /// and parameters; it is consumed when `consume` is set (the final call), so it
    /// authorises one change. Without one, and when the quorum needs other admins, a
    /// request is filed and `E_APPROVAL_REQUIRED` names it.
    func authorize(_ action: Action, object: String, parameters: [String: String], requestID: String?, consume: Bool,
                   ctx: CallContext) async throws {
        guard let p = ctx.principal, p.role == .admin else {
            throw ServerError.forbidden("only an admin may \(action)")
        }
        try Self.checkRequestID(requestID)
        let now = try await now()
        let quorum = try await catalog.effectiveQuorum()
        if let requestID {
            guard let req = try await catalog.request(requestID, now: now) else {
                throw await refuse(ctx, action, object: object,
                    .notFound("request \(requestID) does not exist: `redoubt admin request list`"))
            }
            // Why: otherwise any admin could carry out another's approved change first,
            // e.g. take the one-time enrollment token of an approved add-admin and so
            // become a second admin who can approve their own requests.
            guard req.requesterID == p.id else {
                throw await refuse(ctx, action, object: object,
                    .forbidden("request \(requestID) was made by \(req.requester); only they may carry it out"))
            }
            guard req.state == .approved else {
                throw await refuse(ctx, action, object: object, ServerError(409, "E_APPROVAL_PENDING",
                    "request \(requestID) is \(req.state.rawValue) (\(req.approvers.count) of \(req.needed) approvals)"
                    + (req.state == .pending ? """
                        : other admins run `redoubt admin request approve \(requestID)`
                        """ : ": file a new request")))
            }
            // After the state: a used request no longer matches a state that moved on (e.g.
            // a rotation's key version), and "already used" is the answer that helps.
            guard req.action == action.rawValue, req.object == object, req.parameters == parameters else {
                throw await refuse(ctx, action, object: object,
                    .forbidden("""
                        request \(requestID) approved \(req.action) of \(req.object) \(req.parameters), not this \
                        change; file a new request
                        """))
            }
            if consume {
                guard try await catalog.consumeRequest(requestID, now: now) else {
                    throw await refuse(ctx, action, object: object, ServerError(409, "E_APPROVAL_PENDING",
                        "request \(requestID) was already used"))
                }
                await audit(ctx, .executeRequest, object: object, outcome: "ok",
                    detail: "request=\(requestID) action=\(action)")
            }
            return
        }
        guard quorum > 1 else { return }
        let id = hexString((0..<8).map { _ in UInt8.random(in: 0...255) })
        try await catalog.insertRequest(id: id, action: action.rawValue, object: object, parameters: parameters,
                requester: p,
            now: now,
                                  expiresAt: now.addingTimeInterval(Self.requestLifetime), needed: quorum - 1)
        await audit(ctx, .fileRequest, object: object, outcome: "pending",
            detail: """
                request=\(id) action=\(action) needs=\(quorum - 1) \
                \(parameters.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
                """)
        var filed = ServerError(403, "E_APPROVAL_REQUIRED",
                                "\(action) of \(object) weakens protection and needs \(quorum - 1) approval(s) from "
                                    + "other admins: filed as request \(id), open for 72 h. "
                                + """
                                    They run `redoubt admin request approve \(id)`; then repeat this command with \
                                    --request \(id)
                                    """)
        filed.audited = true
        throw filed
    }

    public func listRequests() async throws -> [ApprovalRequest] { try await catalog.requests(now: try now()) }

    public func decideRequest(_ id: String, approve: Bool, ctx: CallContext) async throws -> ApprovalRequest {
        guard let p = ctx.principal, p.role == .admin else {
            throw ServerError.forbidden("only an admin may decide a request")
        }
        try Self.checkRequestID(id, field: "request ID")
        let r: ApprovalRequest
        do { r = try await catalog.decide(id, by: p, approve: approve, now: try now()) } catch let e as CatalogError {
            throw await refuse(ctx, approve ? .approveRequest : .rejectRequest, object: "request \(id)", ServerError(e))
        }
        await audit(ctx, approve ? .approveRequest : .rejectRequest, object: "request \(id)", outcome: "ok",
              detail: """
                  action=\(r.action) object=\(r.object) approvals=\(r.approvers.count)/\(r.needed) \
                  state=\(r.state.rawValue)
                  """)
        return r
    }
}

// MARK: the changes that need approval (besides the shred, in RepositoryService)

extension RepositoryService {
    /// Raising a tenant's minimum retention takes effect at once; lowering it is a request.
    public func setMinRetention(tenant: String, _ req: Wire.SetRetentionRequest,
        ctx: CallContext) async throws -> Wire.TenantInfo {
        let object = "tenant \(tenant)"
        guard let rec = try await catalog.tenant(tenant) else {
            throw ServerError.notFound("tenant \(tenant) does not exist")
        }
        try Self.checkRetention(req.minRetentionSeconds)
        // Why, and before any approval is used up: the descriptor is replaced under its own
        // key (delete, then put); without the material here its sealed copy would be the only
        // one, and a crash between the two would lose it.
        if rec.writeMaterial.isEmpty && rec.shreddedAt == nil {
            throw await refuse(ctx, .setRetention, object: object, .noWriteMaterial(tenant))
        }
        if req.minRetentionSeconds < rec.minRetention {
            // "from" too: an approval to lower 90 days to 7 must not undo a raise made since.
            try await authorize(.lowerRetention, object: object,
                          parameters: ["from": String(Int(rec.minRetention)),
                              "minRetentionSeconds": String(Int(req.minRetentionSeconds))],
                          requestID: req.requestID, consume: true, ctx: ctx)
        }
        let updated = TenantRecord(name: rec.name, readKeyID: rec.readKeyID, readPublicKey: rec.readPublicKey,
            writeMaterial: rec.writeMaterial,
                                   wrappedReadKey: rec.wrappedReadKey, minRetention: req.minRetentionSeconds,
                                       createdAt: rec.createdAt,
                                   keyVersion: rec.keyVersion, shreddedAt: rec.shreddedAt)
        // The descriptor carries the retention for a catalog rebuild: replace it (unlocked).
        let key = Self.tenantKey(tenant, version: rec.keyVersion)
        let descriptor = try await descriptor(updated)
        if try await store.head(key) != nil { try await deleteUnlessHeld(key, now: try now()) }
        _ = try await store.put(key, try descriptor.encoded(), retainUntil: nil)
        // Compare-and-set: a change made meanwhile (another admin's raise) is not overwritten.
        guard try await catalog.setMinRetention(tenant: tenant, seconds: req.minRetentionSeconds,
            from: rec.minRetention) else {
            throw await refuse(ctx, .setRetention, object: object, ServerError(409, "E_CONFLICT",
                """
                    tenant \(tenant)'s minimum retention changed meanwhile; look again (`redoubt admin tenant list`) \
                    and repeat
                    """))
        }
        await audit(ctx, .setRetention, object: object, outcome: "ok",
            detail: "min-retention \(Int(rec.minRetention))s→\(Int(req.minRetentionSeconds))s")
        return try await tenantInfo(updated)
    }

    /// Longest minimum retention accepted (about 100 years): beyond it, dates overflow.
    public static let maxRetentionSeconds: Double = 100 * 365 * 86400

    static func checkRetention(_ seconds: Double) throws {
        guard seconds.isFinite, seconds >= 86400, seconds <= maxRetentionSeconds else {
            throw ServerError.badRequest("minimum retention must be between 1 day and 100 years")
        }
    }

    /// A one-time enrollment token for another admin.
    public func addAdmin(_ req: Wire.AddAdminRequest, ctx: CallContext) async throws -> Wire.CreateEnrollmentResponse {
        guard Self.isValidPrincipalName(req.name) else {
            throw ServerError.badRequest("""
                name \(req.name.debugDescription) must be 1–253 characters of A-Z, a-z, 0-9, '.', '-', '_'
                """)
        }
        let admins = try await catalog.principals(tenant: nil).filter { $0.role == .admin }
        guard !admins.contains(where: { $0.name == req.name }) else {
            throw ServerError(409, "E_CONFLICT", "an admin named \(req.name) already exists")
        }
        try await authorize(.addAdmin, object: "admin \(req.name)", parameters: [:], requestID: req.requestID,
                consume: true,
            ctx: ctx)
        let ttl = min(max(req.ttlSeconds ?? 86400, 60), 7 * 86400)
        let now = try await now()
        let secret = hexString((0..<32).map { _ in UInt8.random(in: 0...255) })
        let expires = now.addingTimeInterval(ttl)
        try await catalog.insertEnrollment(tokenHash: hexString(SHA256.hash(data: Array(secret.utf8))), role: .admin,
            tenant: nil, name: req.name,
                                     expiresAt: expires, createdBy: ctx.principal?.name ?? "-")
        let token = Wire.EnrollmentToken(url: serverURL,
            ca: Data(try ca.certificate.serializeAsPEM().derBytes).base64EncodedString(), pin: try ca.pin,
                                         secret: secret, role: Role.admin.rawValue, tenant: nil, name: req.name,
                                             expires: Int64(expires.timeIntervalSince1970))
        await audit(ctx, .createEnrollment, object: "admin \(req.name)", outcome: "ok",
            detail: "expires=\(Int(expires.timeIntervalSince1970))")
        return Wire.CreateEnrollmentResponse(token: try token.encoded(), expires: expires)
    }

    /// Revokes another admin's credential. The last admin cannot be removed.
    public func removeAdmin(name: String, _ req: Wire.ApprovedChange,
            ctx: CallContext) async throws -> Wire.QuorumInfo {
        let admins = try await catalog.principals(tenant: nil).filter { $0.role == .admin }
        guard admins.contains(where: { $0.name == name }) else { throw ServerError.notFound("no admin named \(name)") }
        guard admins.count > 1 else {
            throw ServerError(409, "E_CONFLICT", "\(name) is the last admin; enroll another first")
        }
        try await authorize(.removeAdmin, object: "admin \(name)", parameters: [:], requestID: req.requestID,
                consume: true,
            ctx: ctx)
        _ = try await catalog.revokeAdmin(name: name, now: try now())
        // The configured quorum stays: effectiveQuorum() caps it by the admins left, and
        // it applies again in full once replacements are enrolled.
        await audit(ctx, .removeAdmin, object: "admin \(name)", outcome: "ok")
        return try await quorum()
    }

    public func quorum() async throws -> Wire.QuorumInfo {
        Wire.QuorumInfo(configured: try await catalog.configuredQuorum(),
                effective: try await catalog.effectiveQuorum(),
            admins: try await catalog.adminCount())
    }

    /// Changes the quorum (either way: it is the rule every other approval rests on).
    public func setQuorum(_ req: Wire.ApprovedChange, ctx: CallContext) async throws -> Wire.QuorumInfo {
        guard let q = req.quorum, q >= 1 else { throw ServerError.badRequest("quorum must be at least 1") }
        let admins = try await catalog.adminCount()
        guard q <= max(admins, 2) else {
            throw ServerError.badRequest("quorum \(q) exceeds the \(admins) admins there are: enroll more first")
        }
        try await authorize(.setQuorum, object: "quorum", parameters: ["quorum": String(q)], requestID: req.requestID,
            consume: true, ctx: ctx)
        try await catalog.setSetting("quorum", String(q))
        await audit(ctx, .setQuorum, object: "quorum", outcome: "ok", detail: "quorum=\(q)")
        return try await quorum()
    }
}

extension ApprovalRequest {
    public var wire: Wire.RequestInfo {
        Wire.RequestInfo(id: id, action: action, object: object, parameters: parameters, requester: requester,
            createdAt: createdAt,
                         expiresAt: expiresAt, needed: needed, approvers: approvers, rejectedBy: rejectedBy,
                             state: state.rawValue)
    }
}

// Policy over the repositories, not a query: the same for every catalog backend.
extension ApprovalRepository where Self: AuditRepository {
    /// For a command run on the server host itself, which has no principal: a weakening
    /// change goes through only when the quorum is one admin, or with an approved, unused
    /// request for exactly this change (filed through the API, e.g. `admin copy add
    /// --accept-unenforced`), which it consumes.
    public func authorizeLocally(_ action: Action, object: String, parameters: [String: String], requestID: String?,
        now: Date) async throws {
        guard try await effectiveQuorum() > 1 else { return }
        try RepositoryService.checkRequestID(requestID)
        guard let requestID, let req = try await request(requestID, now: now), req.action == action.rawValue,
            req.object == object,
              req.parameters == parameters, req.state == .approved, try await consumeRequest(requestID, now: now) else {
            throw ServerError(403, "E_APPROVAL_REQUIRED",
                """
                    \(action) of \(object) weakens protection and needs an approved request for exactly this change: \
                    file it through the API (e.g. `redoubt admin copy add … --accept-unenforced`), have other admins \
                    approve it, then pass --request ID
                    """)
        }
        _ = try await audit(time: now, actor: "local-admin", role: "admin", credential: "-", source: "local",
                      action: Action.executeRequest.rawValue,
                      object: object, outcome: "ok", detail: "request=\(requestID) action=\(action)")
    }
}

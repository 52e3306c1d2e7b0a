import Foundation
import Hummingbird
import HummingbirdTLS
import HTTPTypes
import Logging
import NIOCore
import NIOSSL
import RedoubtCore
import RedoubtStore

/// Per-request state: the channel (for the peer certificate and address) and, after
/// authentication, who is calling.
public struct RedoubtRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel
    var call = CallContext(principal: nil, source: "?")

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    public var maxUploadSize: Int { 1 << 20 }
}

/// Authenticates every request by its client certificate and authorises it by its
/// route's ``Access`` before any handler runs. A request for anything the API does not
/// offer (by path or by method), or that the caller's role may not make, is refused
/// with 403 and audited.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = RedoubtRequestContext
    let service: RepositoryService

    func handle(_ request: Request, context: Context, next: (Request,
        Context) async throws -> Response) async throws -> Response {
        var ctx = context
        ctx.call = try await caller(context)
        let what = "\(request.method) \(request.uri.path)"
        // Why: the route is the one the router chose (its `endpointPath`), so the policy
        // can never judge another route than the handler that runs.
        let chosen = context.endpointPath.flatMap { RedoubtHTTP.routesByEndpoint["\(request.method) \($0)"] }
        switch Self.admission(route: chosen, role: ctx.call.principal?.role, certificate: ctx.call.certificate,
            what: what) {
        case .refuse(let action, let error):
            return withoutMarks(errorResponse(await service.refuse(ctx.call, action, object: what, error)))
        case .admit(let action):
            let response = try await next(request, ctx)
            await auditFailure(response, method: request.method, call: ctx.call, action: action, what: what)
            return withoutMarks(response)
        }
    }

    /// Who is calling: the principal the presented client certificate names, if any.
    private func caller(_ context: Context) async throws -> CallContext {
        let source = context.channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
        var principal: Principal? = nil
        var presented: String? = nil
        if let cert = try? await context.channel.nioSSL_peerCertificate().get(), let der = try? cert.toDERBytes() {
            let fingerprint = certificateFingerprint(der: der)
            presented = fingerprint
            principal = try await service.catalog.principal(fingerprint: fingerprint)
        }
        return CallContext(principal: principal, source: source, certificate: presented)
    }

    /// What the edge decides before any handler runs.
    enum Admission {
        /// The route's handler runs; `Action` names it in the audit log.
        case admit(Action)
        /// Refused (and audited) with this error; no handler runs.
        case refuse(Action, ServerError)
    }

    /// The edge's decision, from the route the router chose (nil: none), the caller's role
    /// (nil: no principal) and the certificate it presented. Pure: tested without a socket.
    static func admission(route: Route?, role: Role?, certificate presented: String?, what: String) -> Admission {
        guard let route else {
            if role == nil { return .refuse(.unknownRoute, .unauthorized("no valid client certificate")) }
            return .refuse(.unknownRoute,
                .forbidden("\(what) is not part of the API; nothing deletes or overwrites backups"))
        }
        let action = route.action
        if route.access != .anyone && role == nil {
            // A certificate this CA issued but the catalog does not know was revoked (or
            // enrolled into a catalog since lost): say so, not "enroll first".
            let why =
                presented.map { "this credential (certificate \($0.prefix(16))) was revoked or is not enrolled here: "
                + "ask an admin for a new enrollment token and enroll again (`redoubt enroll TOKEN`)" }
                ?? "a client certificate from this server's CA is required: enroll first (`redoubt enroll TOKEN`)"
            return .refuse(action, .unauthorized(why))
        }
        guard route.access.allows(role) else {
            return .refuse(action, .forbidden("a \(role?.rawValue ?? "caller") may not \(action.rawValue)"))
        }
        return .admit(action)
    }

    /// Why: the audit log must show attempts to change things that failed, not only
    /// refusals by role (a probing credential, a bad quorum, a missing name).
    private func auditFailure(_ response: Response, method: HTTPRequest.Method, call: CallContext, action: Action,
        what: String) async {
        guard response.status.code >= 400, method != .get, method != .head,
            response.headers[auditedHeader] == nil else {
            return
        }
        await service.audit(call, action, object: what, outcome: "error",
                      detail: "\(response.status.code) \(response.headers[errorCodeHeader] ?? "")")
    }

    /// The internal "already audited" mark is not sent to clients.
    private func withoutMarks(_ response: Response) -> Response {
        var r = response
        r.headers[auditedHeader] = nil
        return r
    }
}

/// Set by ``errorResponse(_:)``: the error's code, and whether it is already audited.
let errorCodeHeader = HTTPField.Name("x-redoubt-error")!
let auditedHeader = HTTPField.Name("x-redoubt-audited")!

func jsonResponse<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) -> Response {
    let e = WireDate.encoder()
    e.outputFormatting = [.sortedKeys]
    let data = (try? e.encode(value)) ?? Data("{}".utf8)
    return Response(status: status, headers: [.contentType: "application/json"],
        body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

func bytesResponse(_ bytes: [UInt8]) -> Response {
    Response(status: .ok, headers: [.contentType: "application/octet-stream"],
        body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
}

/// Bytes read from the store per write of a streamed answer.
let streamedPieceSize = 1 << 20

/// An answer read from `object` a piece at a time, each read once the connection has taken
/// the one before (``WritableGate``): a restorer that stops reading costs the server one
/// piece, not its pack, and one that takes less than a piece in `stallSeconds` has its
/// connection closed. A read that fails once the head is sent can only cut the answer
/// short: the client sees a truncated body, and the operator's log says why.
func streamedResponse(_ object: ObjectReader, to channel: any Channel, stallSeconds: Double,
                      metrics: ServerMetrics, caller: Principal?, _ logger: Logger) -> Response {
    let who = caller.map { "\($0.tenant ?? "-")/\($0.name)" } ?? "anonymous"
    return Response(status: .ok, headers: [.contentType: "application/octet-stream"],
        body: ResponseBody(contentLength: object.size) { writer in
            do {
                try await object.forEachPiece(of: streamedPieceSize) {
                    try await writer.write($0)
                    try await channel.writable(within: stallSeconds)
                }
            } catch let e as StoreError {
                logger.error("answer cut short", metadata: [
                    "object": "\(object.key.path)", "code": "\(e.code.rawValue)", "error": "\(e)",
                    "principal": "\(who)",
                ])
                metrics.answerCutShort(reason: "store-error", tenant: caller?.tenant, principal: caller?.name)
                throw e
            } catch let e as StalledReader {
                logger.notice("answer cut short", metadata: [
                    "object": "\(object.key.path)", "error": "\(e)", "principal": "\(who)",
                ])
                metrics.answerCutShort(reason: "stalled-reader", tenant: caller?.tenant, principal: caller?.name)
                throw e
            }
            try await writer.finish(nil)
        })
}

func errorResponse(_ e: ServerError) -> Response {
    var r = jsonResponse(Wire.ErrorBody(code: e.code, message: e.message), status: .init(code: e.status))
    r.headers[errorCodeHeader] = e.code
    if e.audited { r.headers[auditedHeader] = "1" }
    return r
}

/// Runs a handler and turns every error into a JSON error body with the right status.
func handle(_ logger: Logger, _ body: () async throws -> Response) async -> Response {
    // Why: a server-side failure (a full disk, a broken store) must reach the operator's
    // log with its request ID, not only the audit log and the client.
    func failed(_ e: ServerError) -> Response {
        if e.status >= 500 {
            logger.error("request failed", metadata: ["status": "\(e.status)", "code": "\(e.code)",
                                                      "error": "\(e.message)"])
        }
        return errorResponse(e)
    }
    do { return try await body() } catch let e as ServerError {
        return failed(e)
    } catch let e as CatalogError {
        return failed(ServerError(e))
    } catch let e as StoreError {
        let status = switch e.code {
        case .notFound: 404
        case .conflict, .locked: 409
        case .integrity: 422
        default: 500
        }
        return failed(ServerError(status, e.code.rawValue, e.description))
    } catch let e as CoreError {
        return errorResponse(ServerError(422, e.code.rawValue, e.description))
    } catch is NIOTooManyBytesError {
        return errorResponse(ServerError(413, "E_TOO_LARGE",
            "request body exceeds the limit for this endpoint (see docs/PROTOCOL.md §3)"))
    } catch let e as HTTPError {
        return errorResponse(ServerError(Int(e.status.code), "E_HTTP", e.body ?? "\(e.status)"))
    } catch {
        return failed(ServerError(500, "E_INTERNAL", "internal error: \(error)"))
    }
}

extension Request {
    /// The body decoded as `T`, after `RequestJSON.decode`'s strict check (duplicate keys,
    /// depth, trailing bytes, number ranges): every refusal is a 400 naming the problem.
    func json<T: Decodable>(_ type: T.Type) async throws -> T {
        try RequestJSON.decode(T.self, from: try await bytes(limit: 1 << 20))
    }
}

/// Builds the v1 API on Hummingbird (docs/PROTOCOL.md).
public enum RedoubtHTTP {
    /// Largest pack body accepted (a pack is ~32 MiB; the format allows more).
    public static let maxPackBody = 512 << 20

    /// Every endpoint of the v1 API, once (docs/PROTOCOL.md §3, docs/openapi.yaml): the
    /// router, the policy and the audit log's action names derive from this table.
    public static let routes: [Route] = [
        Route(.get, "/v1/health", .health, .anyone) { _, _, _, _ in
            jsonResponse(["status": "ok", "version": RedoubtVersion.string])
        },
        Route(.post, "/v1/enroll", .enroll, .anyone) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.enroll(try await req.json(Wire.EnrollRequest.self), ctx: ctx.call))
            }
        },
        Route(.post, "/v1/chunks/query", .queryChunks, .roles([.writer, .restorer])) { service, logger, req, ctx in
            await handle(logger) {
                bytesResponse(try await service.queryChunks(try await req.bytes(limit: 100_000 * 32), ctx: ctx.call))
            }
        },
        Route(.post, "/v1/packs/query", .queryPacks, .writer) { service, logger, req, ctx in
            await handle(logger) {
                bytesResponse(try await service.queryPacks(try await req.bytes(limit: 100_000 * 32), ctx: ctx.call))
            }
        },
        Route(.put, "/v1/packs/{id}", .uploadPack, .writer) { service, logger, req, ctx in
            await handle(logger) {
                let id = ctx.parameters.get("id") ?? ""
                let limit = service.limits.maxPackBytes
                let r = if let spool = service.uploads {
                    try await spool.receive(req, limit: limit) {
                        try await service.uploadPack(idHex: id, file: $0, size: $1, ctx: ctx.call)
                    }
                } else {
                    try await service.uploadPack(idHex: id, bytes: try await req.bytes(limit: limit), ctx: ctx.call)
                }
                return jsonResponse(r, status: r.created ? .created : .ok)
            }
        },
        Route(.post, "/v1/packs/chunk-lists", .packChunkLists, .restorer) { service, logger, req, ctx in
            await handle(logger) {
                bytesResponse(try await service.packChunkLists(try await req.bytes(limit: 100_000 * 32), ctx: ctx.call))
            }
        },
        Route(.get, "/v1/packs/{id}", .getPack, .restorer) { service, logger, _, ctx in
            await handle(logger) {
                streamedResponse(try await service.pack(ctx.parameters.get("id") ?? "", ctx: ctx.call), to: ctx.channel,
                                 stallSeconds: service.limits.idleTimeoutSeconds, metrics: service.metrics,
                                 caller: ctx.call.principal, logger)
            }
        },
        Route(.post, "/v1/packs/{id}/damaged", .reportDamagedPack, .restorer) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.reportDamagedPack(idHex: ctx.parameters.get("id") ?? "",
                                                           try await req.json(Wire.DamagedPackReport.self),
                                                               ctx: ctx.call))
            }
        },
        Route(.post, "/v1/packs/verified", .reportVerifiedPacks, .restorer) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.reportVerifiedPacks(try await req.json(Wire.PacksVerifiedReport.self),
                    ctx: ctx.call))
            }
        },
        Route(.get, "/v1/deep-verify", .deepVerifyState, .restorer) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.deepVerifyState(budget: req.uri.queryParameters.get("budget"),
                                                               ctx: ctx.call))
            }
        },
        Route(.post, "/v1/snapshots", .commitSnapshot, .writer) { service, logger, req, ctx in
            let os = req.headers.first { $0.name.canonicalName == Wire.hostOSHeader.lowercased() }?.value
            let interval = req.headers.first {
                $0.name.canonicalName == Wire.expectedIntervalHeader.lowercased()
            }?.value
            return await handle(logger) {
                jsonResponse(try await service.commit(try await req.bytes(limit: min(service.limits.maxManifestBytes,
                    Manifest.maxSize)), os: os, expectedInterval: interval, ctx: ctx.call), status: .created)
            }
        },
        Route(.get, "/v1/snapshots", .listSnapshots, .anyRole) { service, logger, req, ctx in
            await handle(logger) {
                let q = req.uri.queryParameters
                let page = try SnapshotPage(after: q.get("after"), limit: q.get("limit"))
                return jsonResponse(try await service.listSnapshots(host: q.get("host"), tenant: q.get("tenant"),
                                                                    page: page, ctx: ctx.call))
            }
        },
        Route(.get, "/v1/snapshots/{id}", .showSnapshot, .anyRole) { service, logger, _, ctx in
            await handle(logger) {
                jsonResponse(try await service.showSnapshot(ctx.parameters.get("id") ?? "", ctx: ctx.call))
            }
        },
        Route(.get, "/v1/snapshots/{id}/manifest", .getManifest, .restorer) { service, logger, _, ctx in
            await handle(logger) {
                bytesResponse(try await service.manifest(ctx.parameters.get("id") ?? "", ctx: ctx.call))
            }
        },
        Route(.post, "/v1/snapshots/{id}/verify", .verifySnapshot, .roles([.restorer, .admin, .auditor])) { service,
            logger, _, ctx in
            await handle(logger) {
                jsonResponse(try await service.verify(ctx.parameters.get("id") ?? "", ctx: ctx.call))
            }
        },
        Route(.post, "/v1/snapshots/{id}/verdict", .clearVerdict, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.clearVerdict(ctx.parameters.get("id") ?? "",
                    try await req.json(Wire.ClearVerdictRequest.self), ctx: ctx.call))
            }
        },
        Route(.post, "/v1/tenants", .createTenant, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.createTenant(try await req.json(Wire.CreateTenantRequest.self),
                    ctx: ctx.call), status: .created)
            }
        },
        Route(.get, "/v1/tenants", .listTenants, .admin) { service, logger, _,
            _ in await handle(logger) { jsonResponse(try await service.listTenants()) } },
        Route(.post, "/v1/tenants/{tenant}/enrollments", .createEnrollment, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.createEnrollment(tenant: ctx.parameters.get("tenant") ?? "",
                    try await req.json(Wire.CreateEnrollmentRequest.self),
                                                          ctx: ctx.call), status: .created)
            }
        },
        Route(.get, "/v1/tenants/{tenant}/read-key", .getReadKey, .roles([.admin, .restorer])) { service, logger, _,
            ctx in
            await handle(logger) {
                jsonResponse(try await service.readKey(tenant: ctx.parameters.get("tenant") ?? "", ctx: ctx.call))
            }
        },
        Route(.put, "/v1/tenants/{tenant}/read-key", .rotateReadKey, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.rotateReadKey(tenant: ctx.parameters.get("tenant") ?? "",
                    try await req.json(Wire.RotateReadKeyRequest.self), ctx: ctx.call))
            }
        },
        Route(.post, "/v1/tenants/{tenant}/read-key/destroyed", .markKEKsDestroyed, .admin) { service, logger, req,
            ctx in
            await handle(logger) {
                jsonResponse(try await service.markKEKsDestroyed(tenant: ctx.parameters.get("tenant") ?? "",
                    try await req.json(Wire.DestroyedKEKsRequest.self), ctx: ctx.call))
            }
        },
        Route(.get, "/v1/tenants/{tenant}/write-material", .getWriteMaterial, .admin) { service, logger, _, ctx in
            await handle(logger) {
                jsonResponse(try await service.writeMaterial(tenant: ctx.parameters.get("tenant") ?? "", ctx: ctx.call))
            }
        },
        Route(.put, "/v1/tenants/{tenant}/write-material", .restoreWriteMaterial, .admin) { service, logger, req, ctx in
            await handle(logger) {
                let body = try await req.json(Wire.RestoreWriteMaterialRequest.self)
                return jsonResponse(try await service.restoreWriteMaterial(tenant: ctx.parameters.get("tenant") ?? "",
                                                                           body, ctx: ctx.call))
            }
        },
        Route(.post, "/v1/tenants/{tenant}/shred", .shredTenant, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.shredTenant(tenant: ctx.parameters.get("tenant") ?? "",
                    try await req.json(Wire.ShredRequest.self), ctx: ctx.call))
            }
        },
        Route(.put, "/v1/tenants/{tenant}/retention", .setRetention, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.setMinRetention(tenant: ctx.parameters.get("tenant") ?? "",
                    try await req.json(Wire.SetRetentionRequest.self), ctx: ctx.call))
            }
        },
        Route(.put, "/v1/tenants/{tenant}/dedup-scope", .setDedupScope, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.setDedupScope(tenant: ctx.parameters.get("tenant") ?? "",
                                                       try await req.json(Wire.SetDedupScopeRequest.self),
                                                           ctx: ctx.call))
            }
        },
        Route(.post, "/v1/admins", .addAdmin, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.addAdmin(try await req.json(Wire.AddAdminRequest.self), ctx: ctx.call),
                    status: .created)
            }
        },
        Route(.post, "/v1/admins/{name}/remove", .removeAdmin, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.removeAdmin(name: ctx.parameters.get("name") ?? "",
                    try await req.json(Wire.ApprovedChange.self), ctx: ctx.call))
            }
        },
        Route(.get, "/v1/quorum", .getQuorum, .admin) { service, logger, _,
            _ in await handle(logger) { jsonResponse(try await service.quorum()) } },
        Route(.put, "/v1/quorum", .setQuorum, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.setQuorum(try await req.json(Wire.ApprovedChange.self), ctx: ctx.call))
            }
        },
        Route(.get, "/v1/requests", .listRequests, .admin) { service, logger, _,
            _ in await handle(logger) { jsonResponse(try await service.listRequests().map(\.wire)) } },
        Route(.post, "/v1/requests/{id}/approve", .approveRequest, .admin) { service, logger, _, ctx in
            await handle(logger) {
                jsonResponse(try await service.decideRequest(ctx.parameters.get("id") ?? "", approve: true,
                    ctx: ctx.call).wire)
            }
        },
        Route(.post, "/v1/requests/{id}/reject", .rejectRequest, .admin) { service, logger, _, ctx in
            await handle(logger) {
                jsonResponse(try await service.decideRequest(ctx.parameters.get("id") ?? "", approve: false,
                    ctx: ctx.call).wire)
            }
        },
        Route(.post, "/v1/copy-targets", .addCopyTarget, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.addCopyTarget(try await req.json(Wire.AddCopyTargetRequest.self),
                    ctx: ctx.call), status: .created)
            }
        },
        Route(.get, "/v1/copy-targets", .listCopyTargets, .admin) { service, logger, _,
            _ in await handle(logger) { jsonResponse(try await service.listCopyTargets()) } },
        Route(.post, "/v1/copy-targets/{id}/remove", .removeCopyTarget, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.removeCopyTarget(id: ctx.parameters.get("id") ?? "",
                    try await req.json(Wire.ApprovedChange.self), ctx: ctx.call))
            }
        },
        Route(.post, "/v1/copy-targets/{id}/sync", .syncCopyTarget, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.syncCopyTarget(id: ctx.parameters.get("id") ?? "",
                    wait: req.uri.queryParameters.get("wait") == "1"))
            }
        },
        Route(.post, "/v1/holds", .placeHold, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.placeHold(try await req.json(Wire.PlaceHoldRequest.self), ctx: ctx.call),
                    status: .created)
            }
        },
        Route(.get, "/v1/holds", .listHolds, .admin) { service, logger, _,
            _ in await handle(logger) { jsonResponse(try await service.listHolds()) } },
        Route(.post, "/v1/holds/{id}/release", .releaseHold, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.releaseHold(id: ctx.parameters.get("id") ?? "",
                    try await req.json(Wire.ApprovedChange.self), ctx: ctx.call))
            }
        },
        Route(.get, "/v1/principals", .listPrincipals, .admin) { service, logger, req, _ in
            await handle(logger) {
                let all = req.uri.queryParameters.get("all") == "1"
                return jsonResponse(try await service.listPrincipals(includeRevoked: all))
            }
        },
        Route(.post, "/v1/tenants/{tenant}/gc", .collectGarbage, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.collectGarbage(tenant: ctx.parameters.get("tenant") ?? "",
                    try await req.json(Wire.GCRequest.self), ctx: ctx.call))
            }
        },
        Route(.put, "/v1/tenants/{tenant}/quota", .setQuota, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.setQuota(tenant: ctx.parameters.get("tenant") ?? "",
                    try await req.json(Wire.SetQuotaRequest.self),
                                                  ctx: ctx.call))
            }
        },
        Route(.put, "/v1/tenants/{tenant}/detection", .setDetection, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.setDetection(tenant: ctx.parameters.get("tenant") ?? "",
                    try await req.json(Wire.DetectionSettings.self), ctx: ctx.call))
            }
        },
        Route(.put, "/v1/tenants/{tenant}/policy", .setPolicy, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.setPolicy(tenant: ctx.parameters.get("tenant") ?? "",
                                                         try await req.json(Wire.SetPolicyRequest.self), ctx: ctx.call))
            }
        },
        Route(.get, "/v1/policies", .listPolicies, .admin) { service, logger, req, _ in
            await handle(logger) {
                jsonResponse(try await service.listPolicies(tenant: req.uri.queryParameters.get("tenant")))
            }
        },
        Route(.get, "/v1/tenants/{tenant}/policy/simulate", .simulatePolicy, .admin) { service, logger, _, ctx in
            await handle(logger) {
                jsonResponse(try await service.simulatePolicies(tenant: ctx.parameters.get("tenant") ?? ""))
            }
        },
        Route(.post, "/v1/tenants/{tenant}/policy/apply", .applyPolicy, .admin) { service, logger, _, ctx in
            await handle(logger) {
                jsonResponse(try await service.applyPolicies(tenant: ctx.parameters.get("tenant") ?? "", host: nil))
            }
        },
        Route(.get, "/v1/schedule", .getSchedule, .admin) { service, logger, _,
            _ in await handle(logger) { jsonResponse(try await service.scheduleInfo()) } },
        Route(.put, "/v1/schedule", .setSchedule, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.setSchedule(try await req.json(Wire.SetScheduleRequest.self),
                                                           ctx: ctx.call))
            }
        },
        Route(.get, "/v1/jobs", .listJobs, .admin) { service, logger, _,
            _ in await handle(logger) { jsonResponse(try await service.listJobs()) } },
        Route(.get, "/v1/enrollments", .listEnrollments, .admin) { service, logger, _,
            _ in await handle(logger) { jsonResponse(try await service.listEnrollments()) } },
        Route(.post, "/v1/enrollments/{id}/cancel", .cancelEnrollment, .admin) { service, logger, _, ctx in
            await handle(logger) {
                jsonResponse(try await service.cancelEnrollment(id: ctx.parameters.get("id") ?? "", ctx: ctx.call))
            }
        },
        Route(.post, "/v1/principals/{id}/revoke", .revokePrincipal, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.revokePrincipalRecorded(id: ctx.parameters.get("id") ?? "",
                                                                       try await req.json(Wire.ApprovedChange.self),
                                                                       ctx: ctx.call))
            }
        },
        Route(.get, "/v1/audit", .listAudit, .roles([.admin, .auditor])) { service, logger, req, _ in
            await handle(logger) {
                let after = req.uri.queryParameters.get("after").flatMap { Int64($0) } ?? 0
                let limit = max(1, min(req.uri.queryParameters.get("limit").flatMap { Int($0) } ?? 1000, 10_000))
                return jsonResponse(try await service.auditEntries(after: after, limit: limit))
            }
        },
        Route(.get, "/v1/audit/verify", .verifyAudit, .roles([.admin, .auditor])) { service, logger, _, _ in
            await handle(logger) {
                let (bad, count) = try await service.catalog.verifyAudit()
                return jsonResponse(AuditVerifyResult(ok: bad == nil, records: count, firstBad: bad))
            }
        },
        Route(.get, "/v1/status", .getStatus, .roles([.admin, .auditor])) { service, logger, _, _ in
            await handle(logger) { jsonResponse(try await service.status()) }
        },
        Route(.put, "/v1/notify/expectations", .setHostExpectation, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.setHostExpectation(try await req.json(Wire.HostExpectationRequest.self),
                                                            ctx: ctx.call))
            }
        },
        Route(.post, "/v1/notify/channels", .addNotifyChannel, .admin) { service, logger, req, ctx in
            await handle(logger) {
                jsonResponse(try await service.addNotifyChannel(try await req.json(Wire.AddNotifyChannelRequest.self),
                                                          ctx: ctx.call), status: .created)
            }
        },
        Route(.get, "/v1/notify/channels", .listNotifyChannels, .admin) { service, logger, _, _ in
            await handle(logger) { jsonResponse(try await service.listNotifyChannels()) }
        },
        Route(.post, "/v1/notify/channels/{id}/remove", .removeNotifyChannel, .admin) { service, logger, _, ctx in
            await handle(logger) {
                jsonResponse(try await service.removeNotifyChannel(id: ctx.parameters.get("id") ?? "", ctx: ctx.call))
            }
        },
        Route(.post, "/v1/notify/channels/{id}/test", .testNotifyChannel, .admin) { service, logger, _, ctx in
            await handle(logger) {
                jsonResponse(try await service.testNotifyChannel(id: ctx.parameters.get("id") ?? "", ctx: ctx.call))
            }
        },
        Route(.get, "/v1/metrics", .getMetrics, .roles([.admin, .auditor])) { service, logger, _, _ in
            await handle(logger) {
                await Response(status: .ok, headers: [.contentType: MetricsListener.contentType],
                         body: .init(byteBuffer: ByteBuffer(string: try service.metricsExposition())))
            }
        },
    ]

    /// The routes by action: each action is served by at most one route.
    static let routesByAction: [Action: Route] = Dictionary(routes.map { ($0.action, $0) },
                                                             uniquingKeysWith: { a, _ in a })
    /// The routes by method and the router's own spelling of their path (`endpointPath`).
    static let routesByEndpoint: [String: Route] = Dictionary(
        routes.map { ("\($0.method) \(RouterPath($0.path).description)", $0) }, uniquingKeysWith: { a, _ in a })

    static func route(for action: Action) -> Route? { routesByAction[action] }

    public static func router(service: RepositoryService, logger: Logger) -> Router<RedoubtRequestContext> {
        let router = Router(context: RedoubtRequestContext.self)
        router.add(middleware: RequestMetricsMiddleware(metrics: service.metrics))
        router.add(middleware: RequestLimitsMiddleware(limits: service.limits))
        router.add(middleware: AuthMiddleware(service: service))
        for route in routes {
            let handler = route.handler
            router.on(RouterPath(route.path), method: route.method) { req, ctx in
                // The request's own logger: its lines carry the request ID (hb.request.id).
                await handler(service, ctx.logger, req, ctx)
            }
        }
        return router
    }

    /// The server's TLS: TLS 1.3 only, its own certificate, and client certificates
    /// checked against the server CA whenever presented (enrollment comes without one).
    public static func tlsConfiguration(home: ServerHome) throws -> TLSConfiguration {
        let files = try home.tlsMaterial()
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: [.certificate(try NIOSSLCertificate(bytes: Array(files.serverCertPEM.utf8),
                format: .pem))],
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(files.serverKeyPEM.utf8), format: .pem)))
        tls.minimumTLSVersion = .tlsv13
        tls.trustRoots = .certificates([try NIOSSLCertificate(bytes: Array(files.caCertPEM.utf8), format: .pem)])
        tls.certificateVerification = .optionalVerification
        return tls
    }

    /// An application serving `service` over TLS on `host:port` (port 0 picks one;
    /// `onRunning` receives the bound port).
    public static func application(service: RepositoryService, home: ServerHome, host: String, port: Int,
        logger: Logger,
                                   onRunning: @escaping @Sendable (Int) async -> Void =
                                       { _ in }) throws -> some ApplicationProtocol {
        Application(router: router(service: service, logger: logger),
                    server: try GuardedTLSChannel.builder(tls: tlsConfiguration(home: home), limits: service.limits,
                                                          counter: service.connections),
                    configuration: .init(address: .hostname(host, port: port), serverName: "redoubt"),
                    onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) },
                    logger: logger)
    }
}

struct AuditVerifyResult: Codable {
    let ok: Bool
    let records: Int
    let firstBad: Int64?
}

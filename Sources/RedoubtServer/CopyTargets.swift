// Copy targets: a tenant's S3 Object Lock copies, kept in the catalog and
// served by the scheduler's `copy-sync` job (ServerJobs.swift): a commit asks for a sync of
// the tenant's targets at once (resumable: what is there is skipped), and the hourly run
// proves each target again and retries a failed sync.
// Adding a target proves it first; accepting one that fails the proof, or removing one,
// weakens protection and goes through approvals (docs/PROTOCOL.md §4.2).
import Foundation
import GRDB
import Logging
import RedoubtAWS
import RedoubtCore
import RedoubtStore

/// A copy target as the catalog keeps it: what the API shows (`info`, its fields read
/// through as `target.id`, `target.lastProofAt`, …) plus how the server reaches the bucket.
@dynamicMemberLookup
public struct CopyTarget: Sendable {
    public var info: Wire.CopyTargetInfo
    /// AWS shared-credentials file on the server host (nil: the service's AWS environment).
    public var credentialsFile: String?
    public var virtualHosted: Bool

    public subscript<T>(dynamicMember field: WritableKeyPath<Wire.CopyTargetInfo, T>) -> T {
        get { info[keyPath: field] }
        set { info[keyPath: field] = newValue }
    }

    /// Where this target is, checked by the one parser the CLI uses too (https, or http to
    /// loopback only); a target that fails it is a bad request, refused before any network use.
    public func target() throws -> S3Target {
        do {
            return try S3Target.parse(url: info.url, endpoint: info.endpoint, region: info.region,
                                      credentialsFile: credentialsFile, pathStyle: !virtualHosted)
        } catch {
            throw ServerError.badRequest("copy target \(info.url): \(error.detail)")
        }
    }

    /// The S3 store this target names. Credentials are read now, never stored in the catalog.
    public func store() throws -> any CopyTargetStore {
        let target = try target()
        let creds: AWSCredentials
        do { creds = try target.awsCredentials() } catch {
            throw ServerError(500, "E_CONFIG", "copy target \(info.url): no S3 credentials (\(error)); "
                                                + "the file must be readable by the service user")
        }
        return S3Store(client: S3Client(location: target.location, credentials: creds))
    }
}

extension RepositoryService {
    /// Adds a copy target after proving it enforces Object Lock COMPLIANCE. A target that
    /// fails the proof is refused, unless `acceptUnenforced` — which needs approval.
    public func addCopyTarget(_ req: Wire.AddCopyTargetRequest, ctx: CallContext) async throws -> Wire.CopyTargetInfo {
        guard let rec = try await catalog.tenant(req.tenant) else {
            throw ServerError.notFound("tenant \(req.tenant) does not exist")
        }
        guard rec.shreddedAt == nil else { throw ServerError.shredded(req.tenant) }
        guard req.marginSeconds.isFinite, req.marginSeconds >= 0,
            req.marginSeconds <= CopyApproval.maxMarginSeconds else {
            throw ServerError.badRequest("the retention margin must be between 0 and 10 years")
        }
        let now = try await now()
        var target = CopyTarget(
            info: Wire.CopyTargetInfo(id: hexString((0..<6).map { _ in UInt8.random(in: 0...255) }), tenant: req.tenant,
                url: req.url,
                                      endpoint: req.endpoint, region: req.region, marginSeconds: req.marginSeconds,
                                      acceptUnenforced: req.acceptUnenforced ?? false, createdAt: now, lastProofAt: nil,
                                          lastProofOK: nil,
                                      lastProofDetail: nil, lastSyncAt: nil, lastSyncOK: nil, lastSyncDetail: nil),
            credentialsFile: req.credentialsFile, virtualHosted: req.virtualHosted ?? false)
        // Checked before an approval is used up or the endpoint is contacted at all.
        _ = try target.target()
        if target.acceptUnenforced {
            try await authorize(.acceptUnenforced, object: "copy target \(req.url)",
                          parameters: CopyApproval.parameters(tenant: req.tenant, endpoint: req.endpoint,
                              region: req.region,
                                                              credentialsFile: req.credentialsFile,
                                                                  virtualHosted: req.virtualHosted ?? false,
                                                              marginSeconds: req.marginSeconds),
                          requestID: req.requestID, consume: true, ctx: ctx)
        }
        let s3 = try target.store()
        let proof = await s3.proveLocks(now: now)
        target.lastProofAt = now
        target.lastProofOK = proof.passed
        target.lastProofDetail = proof.firstFailure ?? "all lock checks passed"
        await audit(ctx, .copyProof, object: req.url,
            outcome: proof.passed ? "ok" : (target.acceptUnenforced ? "warning" : "denied"),
              detail: target.lastProofDetail ?? "")
        guard proof.passed || target.acceptUnenforced else {
            var refused =
                ServerError.badRequest("copy target \(req.url) does not enforce Object Lock COMPLIANCE "
                    + "(\(proof.firstFailure ?? "?")): use a bucket with Object Lock and versioning enabled; only "
                    + "with approval can --accept-unenforced keep it")
            refused.audited = true  // as copy-proof, just above
            throw refused
        }
        try await catalog.insertCopyTarget(target)
        await audit(ctx, .addCopyTarget, object: req.url, outcome: "ok",
              detail: """
                  id=\(target.id) tenant=\(req.tenant) \
                  margin=\(Int(req.marginSeconds))s\(target.acceptUnenforced ? " UNENFORCED" : "")
                  """)
        await requestJob(ServerJobs.copySync.name, tenant: req.tenant)
        return target.info
    }

    public func listCopyTargets() async throws -> [Wire.CopyTargetInfo] { try await catalog.copyTargets().map(\.info) }

    /// Removes a target (the bucket and its locked objects stay as they are): needs approval.
    public func removeCopyTarget(id: String, _ req: Wire.ApprovedChange,
        ctx: CallContext) async throws -> [Wire.CopyTargetInfo] {
        guard let t = try await catalog.copyTargets().first(where: { $0.id == id }) else {
            throw ServerError.notFound("no copy target \(id): `redoubt admin copy status`")
        }
        try await authorize(.removeCopyTarget, object: "copy target \(t.url)", parameters: ["id": id],
            requestID: req.requestID, consume: true, ctx: ctx)
        _ = try await catalog.removeCopyTarget(id, at: try now())
        await audit(ctx, .removeCopyTarget, object: t.url, outcome: "ok", detail: "id=\(id) tenant=\(t.tenant)")
        return try await listCopyTargets()
    }

    /// Asks for a sync of the target's tenant now (the scheduler's `copy-sync`, under its
    /// lease); with `wait`, runs it in this request, or waits for the run that holds the lease.
    public func syncCopyTarget(id: String, wait: Bool) async throws -> Wire.CopyTargetInfo {
        guard let t = try await catalog.copyTargets().first(where: { $0.id == id }) else {
            throw ServerError.notFound("no copy target \(id): `redoubt admin copy status`")
        }
        await requestJob(ServerJobs.copySync.name, tenant: t.tenant)
        if wait { _ = await JobScheduler(service: self).runRequested(ServerJobs.copySync, tenant: t.tenant) }
        return try await catalog.copyTargets().first { $0.id == id }?.info ?? t.info
    }

    /// Syncs every target of `tenant` (proof included): true if all succeeded. Errors are
    /// recorded on the target and in the audit log, never thrown: the job goes on.
    func syncCopies(tenant: String) async -> Bool {
        guard let targets = try? await catalog.copyTargets(tenant: tenant) else { return false }
        var allOK = true
        for t in targets {
            let now = (try? await now()) ?? Date()
            do {
                try await recordHostKeys(tenant: tenant)
                let s = try await BucketCopy.sync(catalog: catalog, store: store, tenant: tenant, target: try t.store(),
                    margin: t.marginSeconds,
                                                  acceptUnenforced: t.acceptUnenforced, actor: "copy-job", now: now) {
                                                      _ in
                                                  }
                try await catalog.recordCopyProof(t.id, at: now, ok: s.proof?.passed ?? false,
                        detail: s.proof?.firstFailure
                    ?? "all lock checks passed")
                try await catalog.recordCopySync(t.id, at: now, ok: true,
                    detail: "\(s.copied) copied, \(s.alreadyThere) already there, \(s.extended) extended"
                                            + (s.legalHolds
                                                + s.legalHoldsLifted > 0 ? """
                                                    , \(s.legalHolds) legal hold(s), \(s.legalHoldsLifted) lifted
                                                    """ : ""))
            } catch {
                allOK = false
                logger.warning("copy to \(t.url) failed", metadata: ["tenant": "\(tenant)", "error": "\(error)"])
                try? await catalog.recordCopySync(t.id, at: now, ok: false, detail: "\(error)")
                _ = try? await catalog.audit(time: now, actor: "copy-job", role: "-", credential: "-", source: "local",
                    action: "copy-sync",
                                   object: t.url, outcome: "error", detail: "tenant \(tenant): \(error)")
            }
        }
        return allOK
    }
}

/// What an approval of `--accept-unenforced` binds: the whole target, so that an approval
/// for one endpoint, credential and margin cannot be used for another.
public enum CopyApproval {
    public static let maxMarginSeconds: Double = 10 * 365 * 86400

    public static func parameters(tenant: String, endpoint: String, region: String, credentialsFile: String?,
        virtualHosted: Bool,
                                  marginSeconds: Double) -> [String: String] {
        ["tenant": tenant, "endpoint": endpoint, "region": region, "credentials": credentialsFile ?? "",
         "virtualHosted": String(virtualHosted), "marginSeconds": String(Int(marginSeconds.rounded()))]
    }
}

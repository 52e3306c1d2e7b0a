import Foundation
import GRDB
import RedoubtCore

/// Which chunks a host may learn of and reuse when it deduplicates (docs/PROTOCOL.md §4.6).
public enum DedupScope: String, Sendable, Codable, CaseIterable {
    /// A host sees only chunks its own credential uploaded. The default: a taken host can
    /// neither confirm guesses about other hosts' files nor make them reuse its bytes.
    case host
    /// Every writer of the tenant sees every chunk of the tenant: less storage for hosts
    /// with the same files, at the price of trusting every host of the tenant.
    case tenant
}

extension RepositoryService {
    /// The scope a caller's chunk queries are answered in: a writer's own principal ID,
    /// and under tenant scope also every chunk the server verified; restorers see all.
    ///
    /// Why only verified chunks of other hosts: a format-1 chunk's bytes cannot be checked
    /// without keys, so a taken host could list garbage under another host's future chunk
    /// ID; a verified (format-2) chunk's bytes are, by their hash, exactly what any host
    /// computing that ID would have stored.
    func chunkScope(_ p: Principal, tenant: String) async throws -> (principal: String?, orVerified: Bool) {
        guard p.role == .writer else { return (nil, false) }
        return (p.id, try await catalog.dedupScope(tenant: tenant) == .tenant)
    }

    /// Narrowing to host scope takes effect at once; widening to tenant scope lets every
    /// host of the tenant confirm guesses about the others' files and reuse their chunks,
    /// so it is a weakening change that needs the admins' quorum.
    public func setDedupScope(tenant: String, _ req: Wire.SetDedupScopeRequest,
        ctx: CallContext) async throws -> Wire.TenantInfo {
        let object = "tenant \(tenant)"
        guard let rec = try await catalog.tenant(tenant) else {
            throw ServerError.notFound("tenant \(tenant) does not exist")
        }
        guard let scope = DedupScope(rawValue: req.dedupScope) else {
            throw ServerError.badRequest("dedupScope must be \"host\" or \"tenant\"")
        }
        let current = try await catalog.dedupScope(tenant: tenant)
        if scope == current { return try await tenantInfo(rec) }
        if scope == .tenant {
            try await authorize(.widenDedupScope, object: object, parameters: ["dedupScope": scope.rawValue],
                          requestID: req.requestID, consume: true, ctx: ctx)
        }
        guard try await catalog.setDedupScope(tenant: tenant, scope, from: current) else {
            throw await refuse(ctx, .setDedupScope, object: object, ServerError(409, "E_CONFLICT",
                """
                    tenant \(tenant)'s dedup scope changed meanwhile; look again (`redoubt admin tenant list`) and \
                    repeat
                    """))
        }
        await audit(ctx, .setDedupScope, object: object, outcome: "ok",
            detail: "dedup-scope \(current.rawValue)→\(scope.rawValue)")
        return try await tenantInfo(rec)
    }

    /// What tenant listings show of a tenant (`scope` when the caller has read it already).
    func tenantInfo(_ rec: TenantRecord, scope: DedupScope? = nil) async throws -> Wire.TenantInfo {
        var dedup = scope
        if dedup == nil { dedup = try await catalog.dedupScope(tenant: rec.name) }
        return Wire.TenantInfo(name: rec.name, readKeyID: rec.readKeyID, minRetentionSeconds: rec.minRetention,
                               createdAt: rec.createdAt, dedupScope: (dedup ?? .host).rawValue)
    }
}

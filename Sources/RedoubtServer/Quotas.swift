import Foundation
import GRDB
import RedoubtCore

// Storage quotas (docs/PROTOCOL.md §3.3): a tenant's, and each host's, bound on the bytes
// of packs it holds, committed (named by a snapshot) or not yet, so that neither one host
// nor one tenant can fill the store, and junk packs that are never committed (locked for
// the full retention all the same) count against the host that sent them. A pack counts
// against the host that first uploaded it; packs stored before quotas existed count
// against their tenant only.

extension RepositoryService {
    /// Refuses a pack of `size` bytes that would take the tenant or the host past its
    /// quota (507 `E_QUOTA`, naming the quota and the fix); otherwise returns a warning
    /// when the upload leaves either at 90 % of its quota or more.
    func checkQuota(tenant: String, host: String, adding size: Int, ctx: CallContext,
            pack: PackID) async throws -> String? {
        var warnings: [String] = []
        for (h, name, fix) in [(host, "host \(tenant)/\(host)",
            "redoubt admin host set \(tenant) \(host) --quota SIZE"),
                               ("", "tenant \(tenant)", "redoubt admin tenant set \(tenant) --quota SIZE")] {
            guard let quota = try await catalog.quota(tenant: tenant, host: h) else { continue }
            let u = try await catalog.usage(tenant: tenant, host: h.isEmpty ? nil : h)
            let used = u.committed + u.uncommitted
            if used + Int64(size) > quota {
                throw await refuse(ctx, .uploadPack, object: "pack \(pack)", ServerError(507, "E_QUOTA",
                    "\(name) is at its storage quota of \(quota) bytes: it holds \(u.committed) bytes committed and "
                    + "\(u.uncommitted) not yet committed, and this pack adds \(size); an admin raises the quota "
                    + """
                        (`\(fix)`), or garbage collection frees what no lock protects any more (`redoubt admin gc \
                        \(tenant)`)
                        """))
            }
            if (used + Int64(size)) * 10 >= quota * 9 {
                warnings.append("\(name) holds \(used + Int64(size)) of its \(quota)-byte quota")
            }
        }
        return warnings.isEmpty ? nil : warnings.joined(separator: "; ")
    }

    /// `PUT /v1/tenants/{tenant}/quota` (admin).
    public func setQuota(tenant: String, _ req: Wire.SetQuotaRequest, ctx: CallContext) async throws -> Wire.QuotaInfo {
        guard try await catalog.tenant(tenant) != nil else {
            throw ServerError.notFound("tenant \(tenant) does not exist: `redoubt admin tenant list`")
        }
        if let b = req.bytes, b <= 0 {
            throw ServerError.badRequest("a quota must be above zero bytes; to remove one, send none")
        }
        let host = req.host ?? ""
        if !host.isEmpty, !(try await catalog.principalListing(includeRevoked: true).contains { $0.role == "writer"
            && $0.tenant == tenant && $0.name == host }) {
            throw ServerError.notFound("""
                tenant \(tenant) has no host \(host): `redoubt admin host list \(tenant) --all`
                """)
        }
        try await catalog.setQuota(tenant: tenant, host: host, bytes: req.bytes)
        await audit(ctx, .setQuota, object: host.isEmpty ? "tenant \(tenant)" : "host \(tenant)/\(host)", outcome: "ok",
              detail: req.bytes.map { "bytes=\($0)" } ?? "removed")
        return try await quotaInfo(tenant: tenant, host: req.host)
    }

    func quotaInfo(tenant: String, host: String?) async throws -> Wire.QuotaInfo {
        let u = try await catalog.usage(tenant: tenant, host: host)
        return Wire.QuotaInfo(tenant: tenant, host: host, quotaBytes: try await catalog.quota(tenant: tenant, host: host
            ?? ""),
                              committedBytes: u.committed, uncommittedBytes: u.uncommitted)
    }
}

import Foundation
import GRDB
import RedoubtCore

// Storage quotas (docs/PROTOCOL.md §3.3): a tenant's, and each host's, bound on the bytes
// of packs it holds, committed (named by a snapshot) or not yet, so that neither one host
// nor one tenant can fill the store, and junk packs that are never committed (locked for
// the full retention all the same) count against the host that sent them. A pack counts
// against the host that first uploaded it; packs stored before quotas existed count
// against their tenant only.

extension Catalog {
    /// Sets (or with nil removes) the quota of a tenant (`host` "") or of one of its hosts.
    func setQuota(tenant: String, host: String, bytes: Int64?) throws {
        try db.write { db in
            if let bytes {
                try db.execute(sql: "INSERT OR REPLACE INTO quotas(tenant, host, bytes) VALUES (?, ?, ?)", arguments: [tenant, host, bytes])
            } else {
                try db.execute(sql: "DELETE FROM quotas WHERE tenant = ? AND host = ?", arguments: [tenant, host])
            }
        }
    }

    func quota(tenant: String, host: String) throws -> Int64? {
        try db.read { try Int64.fetchOne($0, sql: "SELECT bytes FROM quotas WHERE tenant = ? AND host = ?", arguments: [tenant, host]) }
    }

    /// Records the host that uploaded a pack (the first one, if several sent it).
    func recordUpload(tenant: String, pack: String, host: String) throws {
        try db.write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO pack_uploads(tenant, pack_id, host) VALUES (?, ?, ?)", arguments: [tenant, pack, host])
        }
    }

    /// Bytes of the tenant's packs (with `host`, of those that host uploaded), split into
    /// those a committed snapshot of the tenant names and the rest.
    func usage(tenant: String, host: String?) throws -> (committed: Int64, uncommitted: Int64) {
        try db.read { db in
            let named = "EXISTS (SELECT 1 FROM snapshot_packs sp JOIN snapshots s ON s.id = sp.snapshot WHERE sp.pack = p.id AND s.tenant = p.tenant)"
            let from = host == nil ? "packs p WHERE p.tenant = ?"
                : "packs p JOIN pack_uploads u ON u.tenant = p.tenant AND u.pack_id = p.id WHERE p.tenant = ? AND u.host = ?"
            let row = try Row.fetchOne(db, sql: """
                SELECT COALESCE(SUM(CASE WHEN \(named) THEN p.size ELSE 0 END), 0) AS c,
                       COALESCE(SUM(CASE WHEN \(named) THEN 0 ELSE p.size END), 0) AS u FROM \(from)
                """, arguments: host.map { [tenant, $0] } ?? [tenant])
            return (row?["c"] ?? 0, row?["u"] ?? 0)
        }
    }
}

extension RepositoryService {
    /// Refuses a pack of `size` bytes that would take the tenant or the host past its
    /// quota (507 `E_QUOTA`, naming the quota and the fix); otherwise returns a warning
    /// when the upload leaves either at 90 % of its quota or more.
    func checkQuota(tenant: String, host: String, adding size: Int, ctx: CallContext, pack: PackID) throws -> String? {
        var warnings: [String] = []
        for (h, name, fix) in [(host, "host \(tenant)/\(host)", "redoubt admin host set \(tenant) \(host) --quota SIZE"),
                               ("", "tenant \(tenant)", "redoubt admin tenant set \(tenant) --quota SIZE")] {
            guard let quota = try catalog.quota(tenant: tenant, host: h) else { continue }
            let u = try catalog.usage(tenant: tenant, host: h.isEmpty ? nil : h)
            let used = u.committed + u.uncommitted
            if used + Int64(size) > quota {
                throw refuse(ctx, .uploadPack, object: "pack \(pack)", ServerError(507, "E_QUOTA",
                    "\(name) is at its storage quota of \(quota) bytes: it holds \(u.committed) bytes committed and "
                    + "\(u.uncommitted) not yet committed, and this pack adds \(size); an admin raises the quota "
                    + "(`\(fix)`), or garbage collection frees what no lock protects any more (`redoubt admin gc \(tenant)`)"))
            }
            if (used + Int64(size)) * 10 >= quota * 9 {
                warnings.append("\(name) holds \(used + Int64(size)) of its \(quota)-byte quota")
            }
        }
        return warnings.isEmpty ? nil : warnings.joined(separator: "; ")
    }

    /// `PUT /v1/tenants/{tenant}/quota` (admin).
    public func setQuota(tenant: String, _ req: Wire.SetQuotaRequest, ctx: CallContext) throws -> Wire.QuotaInfo {
        guard try catalog.tenant(tenant) != nil else { throw ServerError.notFound("tenant \(tenant) does not exist: `redoubt admin tenant list`") }
        if let b = req.bytes, b <= 0 { throw ServerError.badRequest("a quota must be above zero bytes; to remove one, send none") }
        let host = req.host ?? ""
        if !host.isEmpty, !(try catalog.principalListing(includeRevoked: true).contains { $0.role == "writer" && $0.tenant == tenant && $0.name == host }) {
            throw ServerError.notFound("tenant \(tenant) has no host \(host): `redoubt admin host list \(tenant) --all`")
        }
        try catalog.setQuota(tenant: tenant, host: host, bytes: req.bytes)
        audit(ctx, .setQuota, object: host.isEmpty ? "tenant \(tenant)" : "host \(tenant)/\(host)", outcome: "ok",
              detail: req.bytes.map { "bytes=\($0)" } ?? "removed")
        return try quotaInfo(tenant: tenant, host: req.host)
    }

    func quotaInfo(tenant: String, host: String?) throws -> Wire.QuotaInfo {
        let u = try catalog.usage(tenant: tenant, host: host)
        return Wire.QuotaInfo(tenant: tenant, host: host, quotaBytes: try catalog.quota(tenant: tenant, host: host ?? ""),
                              committedBytes: u.committed, uncommittedBytes: u.uncommitted)
    }
}

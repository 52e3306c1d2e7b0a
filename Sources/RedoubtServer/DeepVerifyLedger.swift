import Foundation
import GRDB
import RedoubtCore

// When a restorer last deep-verified each pack, and with what outcome (docs/PROTOCOL.md
// §4.6.1). The server cannot check a deep verify (it holds no key): the ledger only
// orders a rolling verify (never verified first, then the longest ago) and shows an
// admin how far behind it is. It changes nothing stored, so a restorer that lies about
// it delays the next check of a pack, never hides a damaged-pack report already made.

extension Catalog {
    // The contracts are DeepVerifyLedgerRepository's (CatalogRepositories.swift).
    public func recordPackVerifications(tenant: String, packs: [String], outcome: String, reporter: String,
                                        now: Date) throws -> [String] {
        try db.write { db in
            var unknown: [String] = []
            for pack in packs {
                guard try Bool.fetchOne(db, sql: "SELECT 1 FROM packs WHERE tenant = ? AND id = ?",
                                        arguments: [tenant, pack]) != nil else {
                    unknown.append(pack)
                    continue
                }
                try db.execute(sql: """
                    INSERT INTO pack_verifications(tenant, pack, verified_at, outcome, reporter) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT(tenant, pack) DO UPDATE SET
                        verified_at = excluded.verified_at, outcome = excluded.outcome, reporter = excluded.reporter
                    """, arguments: [tenant, pack, now.timeIntervalSince1970, outcome, reporter])
            }
            return unknown
        }
    }

    public func deepVerifyState(tenant: String, budget: Int64) throws -> Wire.DeepVerifyState {
        try db.read { db in
            let join = "FROM packs p LEFT JOIN pack_verifications v ON v.tenant = p.tenant AND v.pack = p.id "
                + "WHERE p.tenant = ?"
            let s = try Row.fetchOne(db, sql: """
                SELECT COUNT(*) AS n, COALESCE(SUM(p.size), 0) AS bytes,
                       COALESCE(SUM(v.pack IS NULL), 0) AS never_n,
                       COALESCE(SUM(CASE WHEN v.pack IS NULL THEN p.size ELSE 0 END), 0) AS never_bytes,
                       MIN(v.verified_at) AS oldest, MAX(v.verified_at) AS newest,
                       COALESCE(SUM(v.outcome = 'damaged'), 0) AS damaged
                \(join)
                """, arguments: [tenant])
            var due: [Wire.DeepVerifyPack] = []
            if budget > 0 {
                var sum: Int64 = 0
                let rows = try Row.fetchCursor(db, sql: """
                    SELECT p.id, p.size, v.verified_at, v.outcome \(join)
                    ORDER BY v.verified_at IS NOT NULL, v.verified_at, p.id
                    """, arguments: [tenant])
                while sum < budget, due.count < Wire.DeepVerifyState.maxDue, let r = try rows.next() {
                    let size: Int64 = r["size"]
                    let at = (r["verified_at"] as Double?).map(Date.init(timeIntervalSince1970:))
                    due.append(Wire.DeepVerifyPack(id: r["id"], size: size, lastVerifiedAt: at,
                        lastOutcome: r["outcome"]))
                    sum += size
                }
            }
            let date = { (key: String) in (s?[key] as Double?).map(Date.init(timeIntervalSince1970:)) }
            return Wire.DeepVerifyState(tenant: tenant, packs: s?["n"] ?? 0, bytes: s?["bytes"] ?? 0,
                                        neverVerifiedPacks: s?["never_n"] ?? 0,
                                        neverVerifiedBytes: s?["never_bytes"] ?? 0,
                                        oldestVerifiedAt: date("oldest"), newestVerifiedAt: date("newest"),
                                        damagedPacks: s?["damaged"] ?? 0, due: due)
        }
    }

    /// (What `host list` shows.)
    public func deepVerifyByUploader() throws -> [String: (never: Int, oldest: Date?)] {
        try db.read { db in
            var out: [String: (never: Int, oldest: Date?)] = [:]
            for r in try Row.fetchAll(db, sql: """
                SELECT p.uploader, COALESCE(SUM(v.pack IS NULL), 0) AS never_n, MIN(v.verified_at) AS oldest
                FROM packs p LEFT JOIN pack_verifications v ON v.tenant = p.tenant AND v.pack = p.id
                WHERE p.uploader IS NOT NULL GROUP BY p.uploader
                """) {
                out[r["uploader"]] = (r["never_n"], (r["oldest"] as Double?).map(Date.init(timeIntervalSince1970:)))
            }
            return out
        }
    }
}

extension RepositoryService {
    /// A restorer reports packs of its tenant that its deep verify opened whole. Only a
    /// restorer holds the read key a deep verify needs; a writer (a host that may have been
    /// taken) must not be able to mark its own uploads checked and push them to the back
    /// of the rolling queue.
    public func reportVerifiedPacks(_ req: Wire.PacksVerifiedReport,
                                    ctx: CallContext) async throws -> Wire.PacksVerifiedInfo {
        guard let p = ctx.principal, p.role == .restorer, let tenant = p.tenant else {
            throw ServerError.forbidden("only a restorer reports deep-verified packs")
        }
        guard req.packs.count <= Wire.PacksVerifiedReport.maxPacks else {
            throw ServerError.badRequest("a report names at most \(Wire.PacksVerifiedReport.maxPacks) packs "
                                         + "(\(req.packs.count) given): send them in batches")
        }
        var ids: [String] = []
        var seen = Set<String>()
        for hex in req.packs {
            guard let id = PackID(hex: hex) else {
                throw ServerError.badRequest("pack ID \(SafeText.echo(hex, maxBytes: 80)) must be 64 lowercase "
                                             + "hex digits")
            }
            if seen.insert(id.description).inserted { ids.append(id.description) }
        }
        let unknown = try await catalog.recordPackVerifications(tenant: tenant, packs: ids, outcome: "ok",
                reporter: p.id,
                                                          now: try now())
        await audit(ctx, .reportVerifiedPacks, object: "\(ids.count - unknown.count) packs", outcome: "ok",
              detail: unknown.isEmpty ? "" : "\(unknown.count) not held by tenant \(tenant)")
        return Wire.PacksVerifiedInfo(recorded: ids.count - unknown.count, unknown: unknown)
    }

    /// The caller's tenant's deep-verify state, with the packs due next up to `budget` bytes.
    public func deepVerifyState(budget: String?, ctx: CallContext) async throws -> Wire.DeepVerifyState {
        guard let p = ctx.principal, p.role == .restorer, let tenant = p.tenant else {
            throw ServerError.forbidden("only a restorer asks which packs a deep verify is due to open")
        }
        let b = try budget.map { text -> Int64 in
            guard let n = Int64(text), n >= 0 else {
                throw ServerError.badRequest("budget must be a whole number of bytes, 0 or more")
            }
            return n
        } ?? 0
        return try await catalog.deepVerifyState(tenant: tenant, budget: b)
    }
}

import Foundation
import GRDB
import RedoubtCore

extension Catalog {
    static func registerDamagedPackMigrations(_ m: inout DatabaseMigrator) {
        m.registerMigration("v10-damaged-packs") { db in
            try db.execute(sql: """
                CREATE TABLE damaged_packs (
                    tenant TEXT NOT NULL, pack TEXT NOT NULL, uploader TEXT, reported_at REAL NOT NULL, reporter TEXT NOT NULL,
                    problem TEXT NOT NULL, PRIMARY KEY (tenant, pack)) WITHOUT ROWID;
                """)
        }
    }

    /// Records a restorer's report that a pack does not open; returns the uploader's
    /// principal ID (nil if unknown). A pack reported twice keeps its first report.
    func recordDamagedPack(tenant: String, pack: String, reporter: String, problem: String, now: Date) throws -> String?? {
        try db.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT uploader FROM packs WHERE tenant = ? AND id = ?", arguments: [tenant, pack]) else {
                return nil
            }
            let uploader: String? = row["uploader"]
            try db.execute(sql: """
                INSERT OR IGNORE INTO damaged_packs(tenant, pack, uploader, reported_at, reporter, problem) VALUES (?, ?, ?, ?, ?, ?)
                """, arguments: [tenant, pack, uploader, now.timeIntervalSince1970, reporter, problem])
            return .some(uploader)
        }
    }

    /// Damaged packs reported per uploading principal ID.
    func damagedPackCounts() throws -> [String: Int] {
        try db.read { db in
            var out: [String: Int] = [:]
            for r in try Row.fetchAll(db, sql: "SELECT uploader, COUNT(*) AS n FROM damaged_packs WHERE uploader IS NOT NULL GROUP BY uploader") {
                out[r["uploader"]] = r["n"]
            }
            return out
        }
    }
}

extension RepositoryService {
    /// A restorer reports a pack of its tenant that does not open. The server cannot check
    /// the claim (it has no key), so it changes nothing stored: it names the host whose
    /// credential uploaded the pack, records the report for `host list`, and audits it —
    /// a host that uploads bytes its chunk IDs do not name is a host that may have been taken.
    public func reportDamagedPack(idHex: String, _ req: Wire.DamagedPackReport, ctx: CallContext) throws -> Wire.DamagedPackInfo {
        guard let p = ctx.principal, p.role == .restorer, let tenant = p.tenant else {
            throw ServerError.forbidden("only a restorer reports damaged packs")
        }
        guard let id = PackID(hex: idHex) else { throw ServerError.badRequest("pack ID must be 64 lowercase hex digits") }
        let problem = SafeText.echo(req.problem, maxBytes: 512)
        guard let uploader = try catalog.recordDamagedPack(tenant: tenant, pack: id.description, reporter: p.id, problem: problem,
                                                            now: try now()) else {
            throw ServerError.notFound("pack \(id) not found in tenant \(tenant)")
        }
        // The rolling deep verify counts a damaged pack as checked now: it is reported, and
        // re-opening it every day would spend the budget on what is already known.
        _ = try catalog.recordPackVerifications(tenant: tenant, packs: [id.description], outcome: "damaged",
                                                reporter: p.id, now: try now())
        let host = try uploader.flatMap { try catalog.principalInfo(id: $0) }
        let who = host.map { "host \(tenant)/\($0.name) (principal \($0.id))" } ?? "an unknown host"
        audit(ctx, .reportDamagedPack, object: "pack \(id)", outcome: "warning", detail: "uploaded by \(who): \(problem)")
        logger.warning("a restorer reported a damaged pack", metadata: ["pack": "\(id)", "uploader": "\(who)"])
        return Wire.DamagedPackInfo(pack: id.description, uploader: host?.name)
    }
}

import Foundation
import GRDB
import RedoubtCore

extension RepositoryService {
    /// A restorer reports a pack of its tenant that does not open. The server cannot check
    /// the claim (it has no key), so it changes nothing stored: it names the host whose
    /// credential uploaded the pack, records the report for `host list`, and audits it —
    /// a host that uploads bytes its chunk IDs do not name is a host that may have been taken.
    public func reportDamagedPack(idHex: String, _ req: Wire.DamagedPackReport,
        ctx: CallContext) async throws -> Wire.DamagedPackInfo {
        guard let p = ctx.principal, p.role == .restorer, let tenant = p.tenant else {
            throw ServerError.forbidden("only a restorer reports damaged packs")
        }
        guard let id = PackID(hex: idHex) else {
            throw ServerError.badRequest("pack ID must be 64 lowercase hex digits")
        }
        let problem = SafeText.echo(req.problem, maxBytes: 512)
        guard let uploader = try await catalog.recordDamagedPack(tenant: tenant, pack: id.description, reporter: p.id,
            problem: problem,
                                                            now: try now()) else {
            throw ServerError.notFound("pack \(id) not found in tenant \(tenant)")
        }
        // The rolling deep verify counts a damaged pack as checked now: it is reported, and
        // re-opening it every day would spend the budget on what is already known.
        _ = try await catalog.recordPackVerifications(tenant: tenant, packs: [id.description], outcome: "damaged",
                                                reporter: p.id, now: try now())
        var host: Wire.PrincipalInfo?
        if let uploader { host = try await catalog.principalInfo(id: uploader) }
        let who = host.map { "host \(tenant)/\($0.name) (principal \($0.id))" } ?? "an unknown host"
        await audit(ctx, .reportDamagedPack, object: "pack \(id)", outcome: "warning",
            detail: "uploaded by \(who): \(problem)")
        logger.warning("a restorer reported a damaged pack", metadata: ["pack": "\(id)", "uploader": "\(who)"])
        return Wire.DamagedPackInfo(pack: id.description, uploader: host?.name)
    }
}

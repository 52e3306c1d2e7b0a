import Foundation
import Logging
import RedoubtCore

/// A snapshot judged suspect, as announced to whoever listens (a log line today; the
/// server's notifications call ``RepositoryService/announceSuspect(_:)``'s listeners).
public struct SuspectSnapshotEvent: Sendable, Equatable {
    public let tenant: String
    public let host: String
    public let snapshot: String
    public let reasons: [String]
    /// The legal holds placed on the host's newest snapshots not judged suspect.
    public let holds: [String]
    /// The snapshots those holds cover.
    public let heldSnapshots: [String]
}

extension RepositoryService {
    /// Judges a commit the catalog has just recorded (docs/PROTOCOL.md §4.9) and, when it is
    /// suspect, holds the host's newest snapshots not judged suspect, audits and announces it.
    /// The commit stands whatever happens here: a failure is logged and audited, never thrown.
    @discardableResult
    func judgeCommit(_ rec: SnapshotRecord, manifest: Manifest, principal p: Principal) async -> SnapshotVerdict? {
        do {
            let stored = try await catalog.detectionSettings(tenant: rec.tenant)
            let settings = Wire.DetectionSettings.defaults.merging(stored)
            let baseline = settings.baselineSnapshots ?? 10
            // Why suspect ones are left out: a slow attack must not raise its own baseline.
            let past = try await catalog.verdicts(tenant: rec.tenant, host: rec.host, limit: baseline * 4 + 16)
            let history = past.filter { $0.verdict.kind != .suspect && $0.snapshot != rec.id }.prefix(baseline)
            var s = VerdictSignals()
            s.activity = manifest.header.activity
            s.files = rec.statistics.files
            (s.newBytes, s.newChunks, s.referencedBytes) = try await catalog.snapshotPackVolumes(tenant: rec.tenant,
                                                                                           snapshot: rec.id)
            let actor = "\(p.role.rawValue):\(p.tenant.map { $0 + "/" } ?? "")\(p.name)"
            let refusals = try await catalog.refusals(actor: actor, afterSeq: past.first?.auditSeq ?? 0)
            s.refused = refusals.count
            var verdict = VerdictScorer.score(s, history: history.map(\.signals), settings: settings)
            // Why a suspect host stays suspect: after an attack the files stay encrypted and the
            // next snapshots change little, so they would look clean and `latest-clean` would pick them.
            let inherited = past.first { $0.snapshot != rec.id }.flatMap { $0.verdict.kind == .suspect ? $0 : nil }
            if let inherited {
                verdict = SnapshotVerdict(kind: .suspect, reasons: [
                    "follows suspect snapshot \(inherited.snapshot) of this host, which no admin has cleared",
                ] + (verdict.kind == .suspect ? verdict.reasons : []))
            }
            try await catalog.insertVerdict(VerdictRecord(snapshot: rec.id, tenant: rec.tenant, host: rec.host,
                                                    committedAt: rec.committedAt, verdict: verdict, signals: s,
                                                    auditSeq: refusals.lastSeq))
            await detectorAudit(.snapshotVerdict, object: "snapshot \(rec.id)", outcome: verdict.kind.rawValue,
                          detail: "host=\(rec.tenant)/\(rec.host) " + verdict.reasons.joined(separator: "; "))
            if verdict.kind == .suspect && inherited == nil {
                let candidates = past.filter { $0.verdict.kind != .suspect && $0.snapshot != rec.id }
                try await holdAfterSuspect(rec, verdict: verdict,
                                           keep: Array(candidates.prefix(settings.holdSnapshots ?? 3)))
            }
            return verdict
        } catch {
            logger.error("could not judge a snapshot", metadata: ["snapshot": "\(rec.id)", "error": "\(error)"])
            await detectorAudit(.snapshotVerdict, object: "snapshot \(rec.id)", outcome: "error", detail: "\(error)")
            return nil
        }
    }

    /// Places a legal hold on each of `keep` (the host's newest snapshots not judged suspect)
    /// that none holds yet. A hold only protects; lifting it is `release-hold`, approved by
    /// the admins' quorum like any other (§4.2), and no writer may ask for it.
    private func holdAfterSuspect(_ rec: SnapshotRecord, verdict: SnapshotVerdict, keep: [VerdictRecord]) async throws {
        let now = try await now()
        var holds: [String] = [], held: [String] = []
        let why = String("automatic: snapshot \(rec.id.prefix(16)) of host \(rec.host) is suspect: "
                         + (verdict.reasons.first ?? "")).prefix(1000)
        for v in keep where try await !catalog.isHeld(snapshot: v.snapshot) {
            let hold = LegalHold(id: hexString((0..<6).map { _ in UInt8.random(in: 0...255) }), kind: .snapshot,
                                 target: v.snapshot, tenant: rec.tenant, reason: String(why),
                                 createdBy: "detector", createdAt: now, releasedAt: nil, releaseRequest: nil)
            try await catalog.insertHold(hold)
            await detectorAudit(.placeHold, object: "hold \(hold.id)",
                          outcome: "ok", detail: "snapshot=\(v.snapshot) tenant=\(rec.tenant) reason=\(why)")
            holds.append(hold.id)
            held.append(v.snapshot)
        }
        if !holds.isEmpty {
            try await enforceHolds(tenant: rec.tenant)
            if try await !catalog.copyTargets(tenant: rec.tenant).isEmpty {
                await requestJob(ServerJobs.copySync.name, tenant: rec.tenant)
            }
        }
        await announceSuspect(SuspectSnapshotEvent(tenant: rec.tenant, host: rec.host, snapshot: rec.id,
                                             reasons: verdict.reasons, holds: holds, heldSnapshots: held))
    }

    /// Announces a suspect snapshot: one log line at `critical` today. Notifications hook in
    /// here (one call per suspect snapshot, after its holds are placed and audited).
    public func announceSuspect(_ event: SuspectSnapshotEvent) async {
        logger.critical("suspect snapshot: possible ransomware on the host", metadata: [
            "tenant": "\(event.tenant)", "host": "\(event.host)", "snapshot": "\(event.snapshot)",
            "reasons": "\(event.reasons.joined(separator: "; "))", "holds": "\(event.holds.joined(separator: ","))",
        ])
        let held = event.heldSnapshots.isEmpty ? "no earlier snapshot to hold"
            : "held: " + event.heldSnapshots.map { String($0.prefix(8)) }.joined(separator: ", ")
        await notifier.post(MonitorEvent(.suspectSnapshot, tenant: event.tenant, host: event.host,
                                   summary: "snapshot \(event.snapshot.prefix(8)) of \(event.host) looks like "
                                       + "ransomware (\(event.reasons.joined(separator: "; "))); \(held)",
                                   command: "redoubt snapshots --host \(event.host)",
                                   key: "suspect-snapshot:\(event.tenant):\(event.snapshot)", lasting: false))
    }

    private func detectorAudit(_ action: Action, object: String, outcome: String, detail: String) async {
        do {
            _ = try await catalog.audit(time: (try? now()) ?? clock.now(), actor: "detector", role: "-",
                    credential: "-",
                                  source: "local", action: action.rawValue, object: limits.boundedAuditField(object),
                                  outcome: outcome, detail: limits.boundedAuditField(detail))
        } catch {
            logger.error("audit write failed", metadata: ["action": "\(action)", "error": "\(error)"])
        }
    }

    /// Adds each snapshot's verdict and reasons (for the roles that may see them).
    func withVerdicts(_ list: [Wire.SnapshotInfo]) async throws -> [Wire.SnapshotInfo] {
        let verdicts = try await catalog.verdicts(snapshots: list.map(\.id))
        return list.map { info in
            var i = info
            if let v = verdicts[i.id] {
                i.verdict = v.verdict.kind.rawValue
                i.verdictReasons = v.verdict.reasons
            }
            return i
        }
    }

    /// `POST /v1/snapshots/{id}/verdict` (admin): marks a suspect snapshot clean with the
    /// admin's reason. It weakens protection (`latest-clean` may then restore it, and the
    /// host's next snapshots no longer follow it as suspect), so it is the gated change
    /// `clear-verdict` (§4.2). Holds already placed stay until released as any hold.
    public func clearVerdict(_ idHex: String, _ req: Wire.ClearVerdictRequest,
                             ctx: CallContext) async throws -> Wire.VerdictInfo {
        guard let p = ctx.principal, p.role == .admin else {
            throw ServerError.forbidden("only an admin may clear a verdict")
        }
        guard SafeText.isValidFreeText(req.reason, maxBytes: 1024) else {
            throw ServerError.badRequest("the reason must be 1 to 1024 bytes of printable text (no control, format "
                                         + "or line-separator characters, no leading or trailing space)")
        }
        let id = try await resolveSnapshotID(idHex, ctx: ctx)
        guard let v = try await catalog.verdicts(snapshots: [id])[id] else {
            throw ServerError.notFound("snapshot \(id) has no verdict: `redoubt snapshots` shows verdicts")
        }
        guard v.verdict.kind == .suspect else {
            throw ServerError(409, "E_CONFLICT", "snapshot \(id) is \(v.verdict.kind.rawValue), not suspect")
        }
        try await authorize(.clearVerdict, object: "snapshot \(id)", parameters: ["reason": req.reason],
                      requestID: req.requestID, consume: true, ctx: ctx)
        let reasons = ["cleared by admin \(p.name): \(req.reason)"] + v.verdict.reasons.map { "was: " + $0 }
        try await catalog.clearVerdict(snapshot: id, reasons: reasons)
        await audit(ctx, .clearVerdict, object: "snapshot \(id)", outcome: "ok",
              detail: "host=\(v.tenant)/\(v.host) request=\(req.requestID ?? "-") reason=\(req.reason)")
        return Wire.VerdictInfo(snapshot: id, verdict: SnapshotVerdict.Kind.clean.rawValue, reasons: reasons)
    }

    /// `PUT /v1/tenants/{tenant}/detection` (admin): sets the fields the request sends, keeps
    /// the rest, and returns the settings in force (defaults filled in).
    public func setDetection(tenant: String, _ req: Wire.DetectionSettings,
                             ctx: CallContext) async throws -> Wire.DetectionSettings {
        guard try await catalog.tenant(tenant) != nil else {
            throw ServerError.notFound("tenant \(tenant) does not exist: `redoubt admin tenant list`")
        }
        if let problem = req.problem { throw ServerError.badRequest("detection settings refused: \(problem)") }
        let merged = try await catalog.detectionSettings(tenant: tenant).merging(req)
        if req != Wire.DetectionSettings() {
            try await catalog.setDetectionSettings(tenant: tenant, merged)
            let json = (try? JSONEncoder().encode(req)).map { String(decoding: $0, as: UTF8.self) } ?? ""
            await audit(ctx, .setDetection, object: "tenant \(tenant)", outcome: "ok", detail: json)
        }
        return Wire.DetectionSettings.defaults.merging(merged)
    }
}

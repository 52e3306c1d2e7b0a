import Foundation
import Glibc
import RedoubtCore

// Retention policies the server enforces (docs/PROTOCOL.md §4.7): stored per tenant, host
// glob and tag; applied after each commit and on `policy apply` by moving the locks of the
// snapshots a rule keeps (manifest and packs) to the rule's end. Locks only ever move
// later; what no rule keeps expires at the tenant's minimum retention as before.

extension RepositoryService {
    /// Whether `host` matches a policy's shell glob (`*`, `?`, `[…]`).
    static func hostMatches(_ glob: String, _ host: String) -> Bool { fnmatch(glob, host, 0) == 0 }

    static func policyObject(_ tenant: String, _ glob: String, _ tag: String) -> String {
        "policy \(tenant) host=\(glob)" + (tag.isEmpty ? "" : " tag=\(tag)")
    }

    /// Sets or removes one policy. Raising (no rule fewer or shorter, same time zone) or a
    /// new policy takes effect at once; lowering or removing is a weakening change that needs
    /// the admins' quorum, as lowering the minimum retention does.
    public func setPolicy(tenant: String, _ req: Wire.SetPolicyRequest,
        ctx: CallContext) async throws -> [Wire.PolicyInfo] {
        guard try await catalog.tenant(tenant) != nil else {
            throw ServerError.notFound("tenant \(tenant) does not exist")
        }
        guard !req.hostGlob.isEmpty, req.hostGlob.utf8.count <= 253,
              req.hostGlob.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-*?[]!".contains($0)) }) else {
            throw ServerError.badRequest("host glob \(SafeText.echo(req.hostGlob)) must be 1–253 characters of "
                                         + "A-Z, a-z, 0-9, '.', '-', '_' and the glob characters * ? [ ] !")
        }
        guard req.tag.utf8.count <= 255, req.tag.isEmpty || SafeText.isValidFreeText(req.tag, maxBytes: 255) else {
            throw ServerError.badRequest("tag \(SafeText.echo(req.tag)) must be printable text of at most 255 bytes")
        }
        let object = Self.policyObject(tenant, req.hostGlob, req.tag)
        let current = try await catalog.policies(tenant: tenant)
            .first { $0.hostGlob == req.hostGlob && $0.tag == req.tag }
        let rulesJSON = {
            (r: RetentionRules) in String(decoding: (try? JSONEncoder.sorted.encode(r)) ?? Data(), as: UTF8.self)
        }
        if req.remove == true {
            guard let current else {
                throw ServerError.notFound("\(object) does not exist: `redoubt admin policy list`")
            }
            try await authorize(.lowerPolicy, object: object, parameters: ["from": rulesJSON(current.rules),
                    "to": "removed"],
                          requestID: req.requestID, consume: true, ctx: ctx)
            guard try await catalog.removePolicy(tenant: tenant, hostGlob: req.hostGlob, tag: req.tag,
                from: current.rules) else {
                throw ServerError(409, "E_CONFLICT",
                    "\(object) changed meanwhile; look again (`redoubt admin policy show`)")
            }
            await audit(ctx, .setPolicy, object: object, outcome: "ok",
                    detail: "removed (was \(current.rules.summary))")
            return try await catalog.policies(tenant: tenant)
        }
        guard let rules = req.rules else { throw ServerError.badRequest("a policy needs rules (or remove)") }
        if let problem = rules.problem() { throw ServerError.badRequest("\(object): \(problem)") }
        if let current, current.rules.isWeakened(by: rules) {
            // "from" too: an approval to lower one policy must not undo a raise made since.
            try await authorize(.lowerPolicy, object: object, parameters: ["from": rulesJSON(current.rules),
                "to": rulesJSON(rules)],
                          requestID: req.requestID, consume: true, ctx: ctx)
        }
        let info = Wire.PolicyInfo(tenant: tenant, hostGlob: req.hostGlob, tag: req.tag, rules: rules,
            updatedAt: try await now())
        guard try await catalog.setPolicy(info, from: current?.rules) else {
            throw ServerError(409, "E_CONFLICT",
                "\(object) changed meanwhile; look again (`redoubt admin policy show`)")
        }
        await audit(ctx, .setPolicy, object: object, outcome: "ok",
              detail: "\(current.map { $0.rules.summary } ?? "none") → \(rules.summary)")
        _ = try await applyPolicies(tenant: tenant, host: nil)
        return try await catalog.policies(tenant: tenant)
    }

    public func listPolicies(tenant: String?) async throws -> [Wire.PolicyInfo] {
        if let tenant, try await catalog.tenant(tenant) == nil {
            throw ServerError.notFound("tenant \(tenant) does not exist")
        }
        return try await catalog.policies(tenant: tenant)
    }

    /// What every policy of the tenant decides for each of its snapshots (optionally one
    /// host's), on the server's commit times and clock. Several policies matching one
    /// snapshot all keep it: the latest lock wins (locks only move later).
    func policyDecisions(tenant: String, host: String?, now: Date) async throws -> [(SnapshotRecord, [Wire.PolicyKeep],
        Date?)] {
        guard let t = try await catalog.tenant(tenant) else {
            throw ServerError.notFound("tenant \(tenant) does not exist")
        }
        let snaps = try await catalog.snapshots(tenant: tenant, host: host)
        var keeps: [String: [Wire.PolicyKeep]] = [:]
        var locks: [String: Date] = [:]
        for p in try await catalog.policies(tenant: tenant) {
            guard let schedule = RetentionSchedule(rules: p.rules, minimumRetention: t.minRetention) else { continue }
            let matching = snaps.filter {
                Self.hostMatches(p.hostGlob, $0.host) && (p.tag.isEmpty || $0.tags.contains(p.tag))
            }
            for d in schedule.decide(matching.map { RetentionCandidate(id: $0.id, host: $0.host,
                committedAt: $0.committedAt) },
                                     now: now) {
                keeps[d.id, default: []] += d.keeps.map {
                    Wire.PolicyKeep(rule: $0.rule.rawValue, until: $0.until, final: $0.final)
                }
                if let l = d.lockUntil { locks[d.id] = max(locks[d.id] ?? l, l) }
            }
        }
        return snaps.map { ($0, keeps[$0.id] ?? [], locks[$0.id]) }
    }

    /// A listing with, for each snapshot a policy covers, the rules keeping it (`keptBy`),
    /// decided per host on the server's clock as `policy simulate` does.
    func withPolicyKeeps(_ list: [Wire.SnapshotInfo]) async throws -> [Wire.SnapshotInfo] {
        let now = try await now()
        var keeps: [String: [Wire.PolicyKeep]] = [:]
        var withPolicies: [String: Bool] = [:]
        for (tenant, hosts) in Dictionary(grouping: list, by: \.tenant).mapValues({ Set($0.map(\.host)) }) {
            let policies = try await catalog.policies(tenant: tenant)
            guard !policies.isEmpty else { continue }
            for host in hosts where policies.contains(where: { Self.hostMatches($0.hostGlob, host) }) {
                withPolicies["\(tenant)/\(host)"] = true
                for (s, k, _) in try await policyDecisions(tenant: tenant, host: host, now: now) { keeps[s.id] = k }
            }
        }
        return list.map { s in
            var s = s
            if withPolicies["\(s.tenant)/\(s.host)"] == true { s.keptBy = keeps[s.id] ?? [] }
            return s
        }
    }

    /// What the policies would keep and until when; changes nothing.
    public func simulatePolicies(tenant: String) async throws -> Wire.PolicySimulation {
        let now = try await now()
        let rows = try await policyDecisions(tenant: tenant, host: nil, now: now).map { s, keeps, lock in
            Wire.PolicyDecisionInfo(id: s.id, host: s.host, committedAt: s.committedAt, retainUntil: s.retainUntil,
                                    keeps: keeps, lockUntil: lock)
        }
        return Wire.PolicySimulation(tenant: tenant, now: now, snapshots: rows,
            kept: rows.filter { !$0.keeps.isEmpty }.count,
                                     extended: 0)
    }

    /// Moves the lock of every snapshot a rule keeps (its manifest and its packs, in the store
    /// and the catalog) to the rule's end. The store first: the catalog never claims a lock
    /// the store does not hold. Copies follow at their next sync (they lock what the catalog says).
    public func applyPolicies(tenant: String, host: String?) async throws -> Wire.PolicySimulation {
        let now = try await now()
        var rows: [Wire.PolicyDecisionInfo] = []
        var extended = 0
        for (s, keeps, lock) in try await policyDecisions(tenant: tenant, host: host, now: now) {
            var retain = s.retainUntil
            if let lock, lock > s.retainUntil, let id = SnapshotID(hex: s.id) {
                let packs = try await catalog.snapshotPacks(id: s.id)
                let packLock = Self.ceilDay(lock)
                for p in packs { try await store.extendRetention(Self.packKey(tenant: tenant, id: p), until: packLock) }
                try await store.extendRetention(Self.manifestKey(tenant: tenant, id: id), until: lock)
                _ = try await catalog.extendPackLocks(tenant: tenant, packs: packs, until: packLock, requireAll: false)
                if let moved = try await catalog.extendSnapshotLock(id: s.id, until: lock) {
                    retain = moved.retainUntil
                    extended += 1
                }
            }
            rows.append(Wire.PolicyDecisionInfo(id: s.id, host: s.host, committedAt: s.committedAt, retainUntil: retain,
                                                keeps: keeps, lockUntil: lock))
        }
        if extended > 0 {
            _ = try? await catalog.audit(time: now, actor: "policy", role: "-", credential: "-", source: "local",
                               action: Action.applyPolicy.rawValue, object: "tenant \(tenant)", outcome: "ok",
                               detail: "extended=\(extended)" + (host.map { " host=\($0)" } ?? ""))
            if !(try await catalog.copyTargets(tenant: tenant).isEmpty) {
                await requestJob(ServerJobs.copySync.name, tenant: tenant)
            }
        }
        return Wire.PolicySimulation(tenant: tenant, now: now, snapshots: rows,
            kept: rows.filter { !$0.keeps.isEmpty }.count,
                                     extended: extended)
    }

    /// After a commit: the committing host's snapshots only. A failure is logged, never the
    /// commit's: the snapshot is committed and locked for the minimum retention already, and
    /// the next application (the scheduler's `policy-apply`, asked for here) sets what this one could not.
    func applyPoliciesAfterCommit(tenant: String, host: String) async {
        do {
            guard try await !catalog.policies(tenant: tenant).isEmpty else { return }
            _ = try await applyPolicies(tenant: tenant, host: host)
        } catch {
            logger.error("retention policy: could not apply after a commit; the scheduler retries",
                         metadata: ["tenant": "\(tenant)", "host": "\(host)", "error": "\(error)"])
            await requestJob(ServerJobs.policyApply.name, tenant: tenant)
        }
    }
}

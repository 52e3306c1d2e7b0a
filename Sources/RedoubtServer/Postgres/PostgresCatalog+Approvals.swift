import Foundation
import PostgresNIO
import RedoubtCore

// The PostgreSQL implementations of ``ApprovalRepository``, ``QuotaRepository``,
// ``PolicyRepository`` and ``DeepVerifyLedgerRepository``. A decision and a consumption read
// the request's state and write in one SERIALIZABLE transaction: of two admins consuming one
// approved request at once, one commits and the other, run again, finds it executed.

extension PostgresCatalog: ApprovalRepository {
    public func insertRequest(id: String, action: String, object: String, parameters: [String: String],
                              requester: Principal, now: Date, expiresAt: Date, needed: Int) async throws {
        let params = String(decoding: try JSONEncoder.sorted.encode(parameters), as: UTF8.self)
        _ = try await rows("""
            INSERT INTO requests(id, action, object, parameters, requester_id, requester, created_at, expires_at,
                                 needed)
            VALUES (\(id), \(action), \(object), \(params), \(requester.id), \(requester.name),
                    \(now.timeIntervalSince1970), \(expiresAt.timeIntervalSince1970), \(Int32(needed)))
            """)
    }

    /// The request with its approvals, its state computed at `now`, read in `conn`'s transaction.
    func request(_ conn: PostgresConnection, _ id: String, now: Date) async throws -> ApprovalRequest? {
        guard let r = try await conn.all("""
            SELECT action, object, parameters, requester_id, requester, created_at, expires_at, needed, rejected_by,
                   executed_at,
                   EXISTS (SELECT 1 FROM principals p WHERE p.id = requests.requester_id AND p.role = 'admin'
                           AND NOT p.revoked)
            FROM requests WHERE id = \(id)
            """, logger).first else { return nil }
        let (action, object, parameters, requesterID, requester, created, expires, stored, rejectedBy, executed,
             requesterActive) = try r.decode((String, String, String, String, String, Double, Double, Int32, String?,
                                              Double?, Bool).self)
        // Why only current admins: an admin removed (say, as compromised) must not keep
        // approving, nor keep a request of theirs alive.
        let approvers = try await conn.all("""
            SELECT a.approver FROM approvals a JOIN principals p ON p.id = a.approver_id
            WHERE a.request_id = \(id) AND p.role = 'admin' AND NOT p.revoked ORDER BY a.time
            """, logger).map { try $0.decode(String.self) }
        let params = (try? JSONDecoder().decode([String: String].self, from: Data(parameters.utf8))) ?? [:]
        // A quorum raised since the request was made applies to it too.
        let needed = max(Int(stored), try await effectiveQuorum(conn) - 1)
        let expiresAt = Self.date(expires)
        let live = expiresAt > now && requesterActive
        let state: ApprovalRequest.State =
            executed != nil ? .executed
            : rejectedBy != nil ? .rejected
            : !live ? .expired
            : approvers.count >= needed ? .approved : .pending
        return ApprovalRequest(id: id, action: action, object: object, parameters: params, requester: requester,
                               requesterID: requesterID, createdAt: Self.date(created), expiresAt: expiresAt,
                               needed: needed, approvers: approvers, rejectedBy: rejectedBy, state: state)
    }

    public func request(_ id: String, now: Date) async throws -> ApprovalRequest? {
        try await transaction(.snapshot, "request") { conn in try await request(conn, id, now: now) }
    }

    public func requests(now: Date) async throws -> [ApprovalRequest] {
        try await transaction(.snapshot, "requests") { conn in
            var out: [ApprovalRequest] = []
            for id in try await conn.all("SELECT id FROM requests ORDER BY created_at", logger)
                .map({ try $0.decode(String.self) }) {
                if let r = try await request(conn, id, now: now) { out.append(r) }
            }
            return out
        }
    }

    public func decide(_ id: String, by admin: Principal, approve: Bool, now: Date) async throws -> ApprovalRequest {
        try await transaction(.serializable, "decide") { conn in
            guard let req = try await request(conn, id, now: now) else {
                throw CatalogError(.notFound, object: "request \(id)",
                                   "request \(id) does not exist: `redoubt admin request list`")
            }
            guard req.state == .pending else {
                throw CatalogError(.conflict, object: "request \(id)",
                                   "request \(id) is \(req.state.rawValue); only a pending request can be decided")
            }
            guard req.requesterID != admin.id else {
                throw CatalogError(.forbidden, object: "request \(id)",
                                   "request \(id) was made by you: the requester's own approval does not count; "
                                       + "another admin must decide")
            }
            if approve {
                guard try await !conn.any("""
                    SELECT 1 FROM approvals WHERE request_id = \(id) AND approver_id = \(admin.id)
                    """, logger) else {
                    throw CatalogError(.conflict, object: "request \(id)",
                                       "you already approved request \(id); it needs approvals from other admins")
                }
                try await conn.query("""
                    INSERT INTO approvals(request_id, approver_id, approver, time)
                    VALUES (\(id), \(admin.id), \(admin.name), \(now.timeIntervalSince1970))
                    """, logger: logger)
            } else {
                try await conn.query("UPDATE requests SET rejected_by = \(admin.name) WHERE id = \(id)",
                                     logger: logger)
            }
            guard let after = try await request(conn, id, now: now) else {
                throw CatalogError(.notFound, object: "request \(id)", "request \(id) vanished")
            }
            return after
        }
    }

    public func consumeRequest(_ id: String, now: Date) async throws -> Bool {
        try await transaction(.serializable, "consumeRequest") { conn in
            guard try await request(conn, id, now: now)?.state == .approved else { return false }
            try await conn.query("UPDATE requests SET executed_at = \(now.timeIntervalSince1970) WHERE id = \(id)",
                                 logger: logger)
            return true
        }
    }

    func configuredQuorum(_ conn: PostgresConnection) async throws -> Int {
        try await conn.all("SELECT value FROM settings WHERE key = 'quorum'", logger).first
            .flatMap { Int(try $0.decode(String.self)) } ?? 2
    }

    func adminCount(_ conn: PostgresConnection) async throws -> Int {
        Int(try await conn.all("SELECT COUNT(*) FROM principals WHERE role = 'admin' AND NOT revoked", logger)
            .first?.decode(Int64.self) ?? 0)
    }

    func effectiveQuorum(_ conn: PostgresConnection) async throws -> Int {
        max(1, min(try await configuredQuorum(conn), try await adminCount(conn)))
    }

    public func configuredQuorum() async throws -> Int {
        try await transaction(.snapshot, "configuredQuorum") { conn in try await configuredQuorum(conn) }
    }

    public func effectiveQuorum() async throws -> Int {
        try await transaction(.snapshot, "effectiveQuorum") { conn in try await effectiveQuorum(conn) }
    }

    public func adminCount() async throws -> Int {
        try await transaction(.snapshot, "adminCount") { conn in try await adminCount(conn) }
    }
}

extension PostgresCatalog: QuotaRepository {
    public func setQuota(tenant: String, host: String, bytes: Int64?) async throws {
        if let bytes {
            _ = try await rows("""
                INSERT INTO quotas(tenant, host, bytes) VALUES (\(tenant), \(host), \(bytes))
                ON CONFLICT (tenant, host) DO UPDATE SET bytes = EXCLUDED.bytes
                """)
        } else {
            _ = try await rows("DELETE FROM quotas WHERE tenant = \(tenant) AND host = \(host)")
        }
    }

    public func quota(tenant: String, host: String) async throws -> Int64? {
        try await rows("SELECT bytes FROM quotas WHERE tenant = \(tenant) AND host = \(host)").first?
            .decode(Int64.self)
    }

    public func usage(tenant: String, host: String?) async throws -> (committed: Int64, uncommitted: Int64) {
        let row = try await rows("""
            WITH p AS (
                SELECT p.size, EXISTS (SELECT 1 FROM snapshot_packs sp JOIN snapshots s ON s.id = sp.snapshot
                                       WHERE sp.pack = p.id AND s.tenant = p.tenant) AS named
                FROM packs p
                WHERE p.tenant = \(tenant) AND (\(host)::text IS NULL OR EXISTS (
                    SELECT 1 FROM pack_uploads u WHERE u.tenant = p.tenant AND u.pack_id = p.id AND u.host = \(host)))
            )
            SELECT COALESCE(SUM(size) FILTER (WHERE named), 0)::bigint,
                   COALESCE(SUM(size) FILTER (WHERE NOT named), 0)::bigint FROM p
            """).first?.decode((Int64, Int64).self)
        return (row?.0 ?? 0, row?.1 ?? 0)
    }
}

extension PostgresCatalog: PolicyRepository {
    public func policies(tenant: String?) async throws -> [Wire.PolicyInfo] {
        try await rows("""
            SELECT tenant, host_glob, tag, rules, updated_at FROM retention_policies
            WHERE \(tenant)::text IS NULL OR tenant = \(tenant) ORDER BY tenant, host_glob, tag
            """).map { r in
            let (tenant, glob, tag, rules, updated) = try r.decode((String, String, String, String, Double).self)
            return Wire.PolicyInfo(tenant: tenant, hostGlob: glob, tag: tag,
                                   rules: try JSONDecoder().decode(RetentionRules.self, from: Data(rules.utf8)),
                                   updatedAt: Self.date(updated))
        }
    }

    func currentRules(_ conn: PostgresConnection, _ tenant: String, _ glob: String,
                      _ tag: String) async throws -> RetentionRules? {
        try await conn.all("""
            SELECT rules FROM retention_policies WHERE tenant = \(tenant) AND host_glob = \(glob) AND tag = \(tag)
            """, logger).first.map {
            try JSONDecoder().decode(RetentionRules.self, from: Data($0.decode(String.self).utf8))
        }
    }

    public func setPolicy(_ p: Wire.PolicyInfo, from: RetentionRules?) async throws -> Bool {
        let rules = String(decoding: try JSONEncoder.sorted.encode(p.rules), as: UTF8.self)
        return try await transaction(.serializable, "setPolicy") { conn in
            guard try await currentRules(conn, p.tenant, p.hostGlob, p.tag) == from else { return false }
            try await conn.query("""
                INSERT INTO retention_policies(tenant, host_glob, tag, rules, updated_at)
                VALUES (\(p.tenant), \(p.hostGlob), \(p.tag), \(rules), \(p.updatedAt.timeIntervalSince1970))
                ON CONFLICT (tenant, host_glob, tag) DO UPDATE SET rules = EXCLUDED.rules,
                    updated_at = EXCLUDED.updated_at
                """, logger: logger)
            return true
        }
    }

    public func removePolicy(tenant: String, hostGlob: String, tag: String,
                             from: RetentionRules) async throws -> Bool {
        try await transaction(.serializable, "removePolicy") { conn in
            guard try await currentRules(conn, tenant, hostGlob, tag) == from else { return false }
            try await conn.query("""
                DELETE FROM retention_policies WHERE tenant = \(tenant) AND host_glob = \(hostGlob) AND tag = \(tag)
                """, logger: logger)
            return true
        }
    }

    public func extendSnapshotLock(id: String, until: Date) async throws -> SnapshotRecord? {
        try await transaction(.serializable, "extendSnapshotLock") { conn -> SnapshotRecord? in
            guard let meta = try await conn.all("SELECT meta FROM snapshots WHERE id = \(id)", logger).first?
                .decode(String.self) else { return nil }
            let s = try Self.snapshotRecord(meta)
            guard until > s.retainUntil else { return nil }
            let moved = SnapshotRecord(id: s.id, tenant: s.tenant, host: s.host, time: s.time,
                                       committedAt: s.committedAt, retainUntil: until, paths: s.paths, tags: s.tags,
                                       statistics: s.statistics, packCount: s.packCount,
                                       manifestSize: s.manifestSize)
            let json = String(decoding: try JSONEncoder().encode(moved), as: UTF8.self)
            try await conn.query("""
                UPDATE snapshots SET retain_until = \(until.timeIntervalSince1970), meta = \(json) WHERE id = \(id)
                """, logger: logger)
            return moved
        }
    }
}

extension PostgresCatalog: DeepVerifyLedgerRepository {
    public func recordPackVerifications(tenant: String, packs: [String], outcome: String, reporter: String,
                                        now: Date) async throws -> [String] {
        try await transaction(.serializable, "recordPackVerifications") { conn in
            let held = Set(try await conn.all("""
                SELECT id FROM packs WHERE tenant = \(tenant) AND id = ANY(\(packs)::text[])
                """, logger).map { try $0.decode(String.self) })
            let known = packs.filter(held.contains)
            try await conn.query("""
                INSERT INTO pack_verifications(tenant, pack, verified_at, outcome, reporter)
                SELECT \(tenant), p, \(now.timeIntervalSince1970), \(outcome), \(reporter)
                FROM unnest(\(known)::text[]) p
                ON CONFLICT (tenant, pack) DO UPDATE SET verified_at = EXCLUDED.verified_at,
                    outcome = EXCLUDED.outcome, reporter = EXCLUDED.reporter
                """, logger: logger)
            return packs.filter { !held.contains($0) }
        }
    }

    public func deepVerifyState(tenant: String, budget: Int64) async throws -> Wire.DeepVerifyState {
        try await transaction(.snapshot, "deepVerifyState") { conn in
            let s = try await conn.all("""
                SELECT COUNT(*), COALESCE(SUM(p.size), 0)::bigint, COUNT(*) FILTER (WHERE v.pack IS NULL),
                       COALESCE(SUM(p.size) FILTER (WHERE v.pack IS NULL), 0)::bigint,
                       MIN(v.verified_at), MAX(v.verified_at), COUNT(*) FILTER (WHERE v.outcome = 'damaged')
                FROM packs p LEFT JOIN pack_verifications v ON v.tenant = p.tenant AND v.pack = p.id
                WHERE p.tenant = \(tenant)
                """, logger).first?.decode((Int64, Int64, Int64, Int64, Double?, Double?, Int64).self)
            var due: [Wire.DeepVerifyPack] = []
            if budget > 0 {
                var sum: Int64 = 0
                let rows = try await conn.all("""
                    SELECT p.id, p.size, v.verified_at, v.outcome
                    FROM packs p LEFT JOIN pack_verifications v ON v.tenant = p.tenant AND v.pack = p.id
                    WHERE p.tenant = \(tenant)
                    ORDER BY v.verified_at IS NOT NULL, v.verified_at, p.id
                    LIMIT \(Int64(Wire.DeepVerifyState.maxDue))
                    """, logger)
                for r in rows {
                    guard sum < budget else { break }
                    let (id, size, at, outcome) = try r.decode((String, Int64, Double?, String?).self)
                    due.append(Wire.DeepVerifyPack(id: id, size: size, lastVerifiedAt: at.map(Self.date),
                                                   lastOutcome: outcome))
                    sum += size
                }
            }
            return Wire.DeepVerifyState(tenant: tenant, packs: Int(s?.0 ?? 0), bytes: s?.1 ?? 0,
                                        neverVerifiedPacks: Int(s?.2 ?? 0), neverVerifiedBytes: s?.3 ?? 0,
                                        oldestVerifiedAt: s?.4.map(Self.date), newestVerifiedAt: s?.5.map(Self.date),
                                        damagedPacks: Int(s?.6 ?? 0), due: due)
        }
    }

    public func deepVerifyByUploader() async throws -> [String: (never: Int, oldest: Date?)] {
        var out: [String: (never: Int, oldest: Date?)] = [:]
        for r in try await rows("""
            SELECT p.uploader, COUNT(*) FILTER (WHERE v.pack IS NULL), MIN(v.verified_at)
            FROM packs p LEFT JOIN pack_verifications v ON v.tenant = p.tenant AND v.pack = p.id
            WHERE p.uploader IS NOT NULL GROUP BY p.uploader
            """) {
            let (uploader, never, oldest) = try r.decode((String, Int64, Double?).self)
            out[uploader] = (Int(never), oldest.map(Self.date))
        }
        return out
    }
}

import Foundation
import PostgresNIO
import RedoubtCore
import RedoubtStore

// The PostgreSQL implementations of ``GCQueueRepository`` and ``LegalHoldRepository``. The
// reclaim race (GarbageCollection.swift) is decided by SERIALIZABLE transactions: a claim
// that checks "not recorded" and a record that checks "not claimed" cannot both commit.

extension PostgresCatalog: GCQueueRepository {
    /// For an object about to be recorded (again), in the caller's transaction: refuses one
    /// whose store deletion is under way, takes one merely queued off the queue.
    static func reclaim(_ conn: PostgresConnection, key: String, _ logger: Logger) async throws {
        guard let row = try await conn.all("SELECT claimed_at FROM gc_pending WHERE key = \(key)", logger)
            .first else { return }
        // The deletion of this object is under way: it cannot be recorded again until it is done.
        if try row.decode(Double?.self) != nil { throw CatalogError.beingCollected(key: key) }
        try await conn.query("DELETE FROM gc_pending WHERE key = \(key)", logger: logger)
    }

    public func collect(tenant: String, now: Date, grace: TimeInterval, dryRun: Bool) async throws -> Catalog.GCPlan {
        let t = now.timeIntervalSince1970
        do {
            return try await collect(tenant: tenant, at: t, grace: grace, dryRun: dryRun)
        } catch let d as DryRun {
            return d.plan
        }
    }

    private func collect(tenant: String, at t: Double, grace: TimeInterval, dryRun: Bool) async throws
        -> Catalog.GCPlan {
        try await transaction(.serializable, "collect") { conn in
            var plan = Catalog.GCPlan()
            if try await Self.isTenantHeld(conn, tenant, logger) {
                plan.keptHeld = Int(try await conn.all("""
                    SELECT COUNT(*) FROM snapshots WHERE tenant = \(tenant) AND retain_until < \(t)
                    """, logger).first?.decode(Int64.self) ?? 0)
                return plan
            }
            // Expired snapshots, each with whether it is its host's newest and whether a hold covers it.
            for r in try await conn.all("""
                SELECT s.id,
                    s.committed_at >= (SELECT MAX(s2.committed_at) FROM snapshots s2
                                       WHERE s2.tenant = s.tenant AND s2.host = s.host),
                    EXISTS (SELECT 1 FROM holds h WHERE h.released_at IS NULL AND h.kind = 'snapshot'
                            AND h.target = s.id)
                FROM snapshots s WHERE s.tenant = \(tenant) AND s.retain_until < \(t) ORDER BY s.committed_at, s.id
                """, logger) {
                let (id, newest, held) = try r.decode((String, Bool, Bool).self)
                if held {
                    plan.keptHeld += 1
                } else if newest {
                    plan.keptNewest += 1
                } else {
                    plan.snapshots.append(id)
                }
            }
            let gone = plan.snapshots
            try await conn.query("DELETE FROM snapshot_packs WHERE snapshot = ANY(\(gone)::text[])", logger: logger)
            try await conn.query("DELETE FROM snapshots WHERE tenant = \(tenant) AND id = ANY(\(gone)::text[])",
                                 logger: logger)
            // Packs no remaining snapshot of the tenant names.
            plan.packs = try await conn.all("""
                SELECT p.id, p.size FROM packs p
                WHERE p.tenant = \(tenant) AND p.retain_until < \(t) AND p.created_at < \(t - grace)
                  AND NOT EXISTS (SELECT 1 FROM snapshot_packs sp JOIN snapshots s ON s.id = sp.snapshot
                                  WHERE sp.pack = p.id AND s.tenant = p.tenant)
                ORDER BY p.id
                """, logger).map { r in
                let (id, size) = try r.decode((String, Int64).self)
                return (id: id, size: size)
            }
            let packIDs = plan.packs.map(\.id)
            try await conn.query("DELETE FROM chunks WHERE tenant = \(tenant) AND pack_id = ANY(\(packIDs)::text[])",
                                 logger: logger)
            try await conn.query("DELETE FROM packs WHERE tenant = \(tenant) AND id = ANY(\(packIDs)::text[])",
                                 logger: logger)
            // A dry run reports the plan and changes nothing.
            if dryRun { throw DryRun(plan: plan) }
            let keys = plan.snapshots.compactMap {
                SnapshotID(hex: $0).map { RepositoryLayout.manifestKey(tenant: tenant, id: $0).path }
            } + plan.packs.compactMap {
                PackID(hex: $0.id).map { RepositoryLayout.packKey(tenant: tenant, id: $0).path }
            }
            try await conn.query("""
                INSERT INTO gc_pending(key, tenant, queued_at) SELECT k, \(tenant), \(t) FROM unnest(\(keys)::text[]) k
                ON CONFLICT DO NOTHING
                """, logger: logger)
            return plan
        }
    }

    /// Rolls a dry run's transaction back while carrying its plan out.
    struct DryRun: Error { let plan: Catalog.GCPlan }

    public func reclaim(key: String) async throws {
        try await transaction(.serializable, "reclaim") { conn in try await Self.reclaim(conn, key: key, logger) }
    }

    public func unclaimPendingDeletes(tenant: String) async throws {
        _ = try await rows("UPDATE gc_pending SET claimed_at = NULL WHERE tenant = \(tenant)")
    }

    public func pendingDeletes(tenant: String) async throws -> [String] {
        try await rows("SELECT key FROM gc_pending WHERE tenant = \(tenant) ORDER BY key")
            .map { try $0.decode(String.self) }
    }

    public func claimPendingDelete(_ key: String, tenant: String, now: Date) async throws -> Bool {
        try await transaction(.serializable, "claimPendingDelete") { conn in
            guard try await conn.any("SELECT 1 FROM gc_pending WHERE key = \(key)", logger) else { return false }
            let recorded: Bool
            switch BucketVerify.kind(key, tenant: tenant) {
            case .pack(let id):
                recorded = try await conn.any("""
                    SELECT 1 FROM packs WHERE tenant = \(tenant) AND id = \(id.description)
                    """, logger)
            case .manifest(let id):
                recorded = try await conn.any("SELECT 1 FROM snapshots WHERE id = \(id.description)", logger)
            default:
                recorded = false
            }
            if recorded {
                // Recorded again since it was queued: its object stays, the key leaves the queue.
                try await conn.query("DELETE FROM gc_pending WHERE key = \(key)", logger: logger)
                return false
            }
            try await conn.query("UPDATE gc_pending SET claimed_at = \(now.timeIntervalSince1970) WHERE key = \(key)",
                                 logger: logger)
            return true
        }
    }

    public func finishPendingDelete(_ key: String, done: Bool) async throws {
        _ = try await rows(done ? "DELETE FROM gc_pending WHERE key = \(key)"
                                : "UPDATE gc_pending SET claimed_at = NULL WHERE key = \(key)")
    }
}

extension PostgresCatalog: LegalHoldRepository {
    public func insertHold(_ h: LegalHold) async throws {
        try await transaction(.serializable, "insertHold") { conn in
            // In the same transaction as the insert: garbage collection must not take the
            // snapshot between the caller's check and the hold.
            if h.kind == .snapshot, try await !conn.any("SELECT 1 FROM snapshots WHERE id = \(h.target)", logger) {
                throw CatalogError(.notFound, object: "snapshot \(h.target)",
                                   "snapshot \(h.target) is no longer in the catalog (collected?)")
            }
            try await conn.query("""
                INSERT INTO holds(id, kind, target, tenant, reason, created_by, created_at)
                VALUES (\(h.id), \(h.kind.rawValue), \(h.target), \(h.tenant), \(h.reason), \(h.createdBy),
                        \(h.createdAt.timeIntervalSince1970))
                """, logger: logger)
        }
    }

    public func holds(active: Bool) async throws -> [LegalHold] {
        try await rows("""
            SELECT id, kind, target, tenant, reason, created_by, created_at, released_at, release_request FROM holds
            WHERE NOT \(active) OR released_at IS NULL ORDER BY created_at, id
            """).compactMap { r in
            let (id, kind, target, tenant, reason, by, at, released, request) = try r.decode(
                (String, String, String, String, String, String, Double, Double?, String?).self)
            guard let kind = LegalHold.Kind(rawValue: kind) else { return nil }
            return LegalHold(id: id, kind: kind, target: target, tenant: tenant, reason: reason, createdBy: by,
                             createdAt: Self.date(at), releasedAt: released.map(Self.date), releaseRequest: request)
        }
    }

    public func releaseHold(_ id: String, at: Date, request: String?) async throws -> Bool {
        try await !rows("""
            UPDATE holds SET released_at = \(at.timeIntervalSince1970), release_request = \(request)
            WHERE id = \(id) AND released_at IS NULL RETURNING 1
            """).isEmpty
    }

    public func isHeld(snapshot id: String) async throws -> Bool {
        try await !rows("""
            SELECT 1 FROM holds h WHERE h.released_at IS NULL AND (
                (h.kind = 'snapshot' AND h.target = \(id)) OR
                (h.kind = 'tenant' AND h.tenant = (SELECT tenant FROM snapshots WHERE id = \(id)))) LIMIT 1
            """).isEmpty
    }

    public func isHeld(tenant: String, pack id: String) async throws -> Bool {
        try await !rows("""
            SELECT 1 FROM holds h WHERE h.released_at IS NULL AND (
                (h.kind = 'tenant' AND h.tenant = \(tenant)) OR
                (h.kind = 'snapshot' AND h.tenant = \(tenant) AND EXISTS (
                    SELECT 1 FROM snapshot_packs sp WHERE sp.snapshot = h.target AND sp.pack = \(id)))) LIMIT 1
            """).isEmpty
    }

    public func isTenantHeld(_ tenant: String) async throws -> Bool {
        try await transaction(.snapshot, "isTenantHeld") { conn in try await Self.isTenantHeld(conn, tenant, logger) }
    }

    static func isTenantHeld(_ conn: PostgresConnection, _ tenant: String, _ logger: Logger) async throws -> Bool {
        try await conn.any("""
            SELECT 1 FROM holds WHERE released_at IS NULL AND kind = 'tenant' AND tenant = \(tenant) LIMIT 1
            """, logger)
    }

    public func copyLegalHolds(place: String) async throws -> Set<String> {
        Set(try await rows("SELECT key FROM copy_legal_holds WHERE place = \(place)")
            .map { try $0.decode(String.self) })
    }

    public func setCopyLegalHold(place: String, key: String, on: Bool) async throws {
        _ = try await rows(on ? """
            INSERT INTO copy_legal_holds(place, key) VALUES (\(place), \(key)) ON CONFLICT DO NOTHING
            """ : "DELETE FROM copy_legal_holds WHERE place = \(place) AND key = \(key)")
    }
}

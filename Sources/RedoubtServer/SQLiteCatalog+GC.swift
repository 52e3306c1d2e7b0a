import Foundation
import GRDB
import RedoubtCore
import RedoubtStore

// The SQLite implementation of ``GCQueueRepository`` (the rules: GarbageCollection.swift).

extension Catalog {
    /// What one garbage-collection run removes (or, dry, would).
    public struct GCPlan: Sendable {
        public var snapshots: [String] = []
        public var keptNewest = 0
        public var keptHeld = 0
        public var packs: [(id: String, size: Int64)] = []
    }

    /// Finds what garbage collection removes for `tenant` at `now` and, unless `dryRun`,
    /// removes it from the catalog and queues its store keys, in one transaction.
    public func collect(tenant: String, now: Date, grace: TimeInterval, dryRun: Bool) throws -> GCPlan {
        try db.write { db in
            var plan = GCPlan()
            try db.inSavepoint {
                let t = now.timeIntervalSince1970
                if try Self.isTenantHeld(db, tenant) {
                    plan.keptHeld = try Int.fetchOne(db,
                        sql: "SELECT COUNT(*) FROM snapshots WHERE tenant = ? AND retain_until < ?", arguments: [tenant,
                        t]) ?? 0
                    return .rollback
                }
                // Expired snapshots, each with whether it is its host's newest and whether a hold covers it.
                let rows = try Row.fetchAll(db, sql: """
                    SELECT s.id,
                        s.committed_at >= (SELECT MAX(s2.committed_at) FROM snapshots s2 WHERE s2.tenant = s.tenant \
                    AND s2.host = s.host) AS newest,
                        EXISTS (SELECT 1 FROM holds h WHERE h.released_at IS NULL AND h.kind = 'snapshot' AND h.target \
                    = s.id) AS held
                    FROM snapshots s WHERE s.tenant = ? AND s.retain_until < ? ORDER BY s.committed_at, s.id
                    """, arguments: [tenant, t])
                for r in rows {
                    if r["held"] as Bool {
                        plan.keptHeld += 1
                    } else if r["newest"] as Bool {
                        plan.keptNewest += 1
                    } else {
                        plan.snapshots.append(r["id"])
                    }
                }
                for id in plan.snapshots {
                    try db.execute(sql: "DELETE FROM snapshot_packs WHERE snapshot = ?", arguments: [id])
                    try db.execute(sql: "DELETE FROM snapshots WHERE id = ? AND tenant = ?", arguments: [id, tenant])
                }
                // Packs no remaining snapshot of the tenant names.
                plan.packs = try Row.fetchAll(db, sql: """
                    SELECT p.id, p.size FROM packs p
                    WHERE p.tenant = ? AND p.retain_until < ? AND p.created_at < ?
                      AND NOT EXISTS (SELECT 1 FROM snapshot_packs sp JOIN snapshots s ON s.id = sp.snapshot WHERE \
                    sp.pack = p.id AND s.tenant = p.tenant)
                    ORDER BY p.id
                    """, arguments: [tenant, t, t - grace]).map { (id: $0["id"], size: $0["size"]) }
                for p in plan.packs {
                    try db.execute(sql: "DELETE FROM chunks WHERE tenant = ? AND pack_id = ?", arguments: [tenant,
                        p.id])
                    try db.execute(sql: "DELETE FROM packs WHERE tenant = ? AND id = ?", arguments: [tenant, p.id])
                }
                if dryRun { return .rollback }
                let queue =
                    try db.cachedStatement(sql: """
                        INSERT OR IGNORE INTO gc_pending(key, tenant, queued_at) VALUES (?, ?, ?)
                        """)
                let keys = plan.snapshots.compactMap {
                    SnapshotID(hex: $0).map { RepositoryLayout.manifestKey(tenant: tenant, id: $0) }
                }
                    + plan.packs.compactMap {
                        PackID(hex: $0.id).map { RepositoryLayout.packKey(tenant: tenant, id: $0) }
                    }
                for k in keys { try queue.execute(arguments: [k.path, tenant, t]) }
                return .commit
            }
            return plan
        }
    }

    /// For an object about to be recorded (again): refuses one whose store deletion is
    /// under way, and takes one merely queued off the queue, so that it is not deleted
    /// from under the record.
    static func reclaim(_ db: Database, key: String) throws {
        guard let claimed = try Row.fetchOne(db, sql: "SELECT claimed_at FROM gc_pending WHERE key = ?",
            arguments: [key]) else {
            return
        }
        // The deletion of this object is under way: it cannot be recorded again until it is done.
        if (claimed["claimed_at"] as Double?) != nil { throw CatalogError.beingCollected(key: key) }
        try db.execute(sql: "DELETE FROM gc_pending WHERE key = ?", arguments: [key])
    }

    /// Before an object is stored (again): refuses one whose deletion is under way and
    /// takes one merely queued off the queue, in its own transaction, so that no run can
    /// claim it between the store write and the record.
    public func reclaim(key: String) throws {
        try db.write { db in try Self.reclaim(db, key: key) }
    }

    /// Releases every claim of `tenant` (a run that cannot delete now, under a hold).
    public func unclaimPendingDeletes(tenant: String) throws {
        try db.write {
            db in try db.execute(sql: "UPDATE gc_pending SET claimed_at = NULL WHERE tenant = ?", arguments: [tenant])
        }
    }

    public func pendingDeletes(tenant: String) throws -> [String] {
        try db.read {
            db in try String.fetchAll(db, sql: "SELECT key FROM gc_pending WHERE tenant = ? ORDER BY key",
                arguments: [tenant])
        }
    }

    /// Claims a queued key for deletion from the store: true if it is still queued and
    /// the catalog does not hold its object (else it is dropped from the queue: the
    /// object was recorded again). While claimed, ``reclaim(_:key:)`` refuses it.
    public func claimPendingDelete(_ key: String, tenant: String, now: Date) throws -> Bool {
        try db.write { db in
            guard try Int.fetchOne(db, sql: "SELECT 1 FROM gc_pending WHERE key = ?", arguments: [key]) != nil else {
                return false
            }
            let recorded = switch BucketVerify.kind(key, tenant: tenant) {
            case .pack(let id): try Int.fetchOne(db, sql: "SELECT 1 FROM packs WHERE tenant = ? AND id = ?",
                arguments: [tenant, id.description]) != nil
            case .manifest(let id): try Int.fetchOne(db, sql: "SELECT 1 FROM snapshots WHERE id = ?",
                arguments: [id.description]) != nil
            default: false
            }
            if recorded {
                try db.execute(sql: "DELETE FROM gc_pending WHERE key = ?", arguments: [key])
                return false
            }
            try db.execute(sql: "UPDATE gc_pending SET claimed_at = ? WHERE key = ?",
                arguments: [now.timeIntervalSince1970, key])
            return true
        }
    }

    /// Ends a claim: `done` drops the key from the queue, else it waits for the next run.
    public func finishPendingDelete(_ key: String, done: Bool) throws {
        try db.write { db in
            try db.execute(sql: done ? "DELETE FROM gc_pending WHERE key = ?" : """
                UPDATE gc_pending SET claimed_at = NULL WHERE key = ?
                """, arguments: [key])
        }
    }
}

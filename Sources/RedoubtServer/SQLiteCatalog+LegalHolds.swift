import Foundation
import GRDB
import RedoubtCore
import RedoubtStore

// The SQLite implementation of ``LegalHoldRepository``.

extension Catalog {
    public func insertHold(_ h: LegalHold) throws {
        try db.write {
            // In the same transaction as the insert: garbage collection must not take the
            // snapshot between the caller's check and the hold.
            if h.kind == .snapshot, try Int.fetchOne($0, sql: "SELECT 1 FROM snapshots WHERE id = ?", arguments: [h.target]) == nil {
                throw CatalogError(.notFound, object: "snapshot \(h.target)", "snapshot \(h.target) is no longer in the catalog (collected?)")
            }
            try $0.execute(sql: """
                INSERT INTO holds(id, kind, target, tenant, reason, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                """, arguments: [h.id, h.kind.rawValue, h.target, h.tenant, h.reason, h.createdBy, h.createdAt.timeIntervalSince1970])
        }
    }

    /// Every hold, released ones included (`active`: only those in force), oldest first.
    public func holds(active: Bool = false) throws -> [LegalHold] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM holds\(active ? " WHERE released_at IS NULL" : "") ORDER BY created_at, id").compactMap { r in
                guard let kind = LegalHold.Kind(rawValue: r["kind"]) else { return nil }
                return LegalHold(id: r["id"], kind: kind, target: r["target"], tenant: r["tenant"], reason: r["reason"], createdBy: r["created_by"],
                                 createdAt: Date(timeIntervalSince1970: r["created_at"]),
                                 releasedAt: (r["released_at"] as Double?).map(Date.init(timeIntervalSince1970:)), releaseRequest: r["release_request"])
            }
        }
    }

    /// Marks a hold released, once: false if it was not in force.
    public func releaseHold(_ id: String, at: Date, request: String?) throws -> Bool {
        try db.write { db in
            try db.execute(sql: "UPDATE holds SET released_at = ?, release_request = ? WHERE id = ? AND released_at IS NULL",
                           arguments: [at.timeIntervalSince1970, request, id])
            return db.changesCount > 0
        }
    }

    /// Whether a hold in force covers this snapshot (its own, or its tenant's).
    /// Anything that deletes a manifest (a future prune included) must ask this first.
    public func isHeld(snapshot id: String) throws -> Bool {
        try db.read { db in
            try Int.fetchOne(db, sql: """
                SELECT 1 FROM holds h WHERE h.released_at IS NULL AND (
                    (h.kind = 'snapshot' AND h.target = ?) OR
                    (h.kind = 'tenant' AND h.tenant = (SELECT tenant FROM snapshots WHERE id = ?))) LIMIT 1
                """, arguments: [id, id]) != nil
        }
    }

    /// Whether a hold in force covers this pack: a tenant hold covers every pack of the
    /// tenant, a snapshot hold every pack the snapshot names. Anything that deletes a
    /// pack (a future prune included) must ask this first.
    public func isHeld(tenant: String, pack id: String) throws -> Bool {
        try db.read { db in
            try Int.fetchOne(db, sql: """
                SELECT 1 FROM holds h WHERE h.released_at IS NULL AND (
                    (h.kind = 'tenant' AND h.tenant = ?) OR
                    (h.kind = 'snapshot' AND h.tenant = ? AND EXISTS (SELECT 1 FROM snapshot_packs sp WHERE sp.snapshot = h.target AND sp.pack = ?))) LIMIT 1
                """, arguments: [tenant, tenant, id]) != nil
        }
    }

    /// Whether a store object is a held pack or manifest (`t/<tenant>/packs/…`,
    /// `t/<tenant>/snapshots/<id>`); other objects are never held.
    public func isHeld(key: ObjectKey) throws -> Bool {
        let parts = key.path.split(separator: "/", maxSplits: 2)
        guard parts.count == 3, parts[0] == "t" else { return false }
        let tenant = String(parts[1])
        switch BucketVerify.kind(key.path, tenant: tenant) {
        case .pack(let id):
            return try isHeld(tenant: tenant, pack: id.description)
        case .manifest(let id):
            // The tenant from the key: a manifest garbage collection queued has no snapshot
            // row left to name its tenant, and a tenant hold must still cover it.
            return try isTenantHeld(tenant) || isHeld(snapshot: id.description)
        default:
            return false
        }
    }

    /// Whether a tenant hold in force covers `tenant`.
    public func isTenantHeld(_ tenant: String) throws -> Bool {
        try db.read { db in try Self.isTenantHeld(db, tenant) }
    }

    static func isTenantHeld(_ db: Database, _ tenant: String) throws -> Bool {
        try Int.fetchOne(db, sql: "SELECT 1 FROM holds WHERE released_at IS NULL AND kind = 'tenant' AND tenant = ? LIMIT 1", arguments: [tenant]) != nil
    }

    /// The store keys that holds in force cover for `tenant` (packs and manifests).
    func heldKeys(tenant: String) throws -> Set<String> {
        var keys = Set<String>()
        for h in try holds(active: true) where h.tenant == tenant {
            let snaps = h.kind == .tenant ? try snapshots(tenant: tenant).map(\.id) : [h.target]
            if h.kind == .tenant {
                for p in try packs(tenant: tenant) {
                    if let id = PackID(hex: p.id) { keys.insert(RepositoryService.packKey(tenant: tenant, id: id).path) }
                }
            }
            for s in snaps {
                guard let sid = SnapshotID(hex: s) else { continue }
                keys.insert(RepositoryService.manifestKey(tenant: tenant, id: sid).path)
                for p in try snapshotPacks(id: s) { keys.insert(RepositoryService.packKey(tenant: tenant, id: p).path) }
            }
            // Objects garbage collection queued but has not deleted: the hold keeps them locked too.
            if h.kind == .tenant { keys.formUnion(try pendingDeletes(tenant: tenant)) }
        }
        return keys
    }

    /// Keys of `place` (an S3 copy) whose original version was given a legal hold.
    public func copyLegalHolds(place: String) throws -> Set<String> {
        try db.read { Set(try String.fetchAll($0, sql: "SELECT key FROM copy_legal_holds WHERE place = ?", arguments: [place])) }
    }

    public func setCopyLegalHold(place: String, key: String, on: Bool) throws {
        try db.write {
            try $0.execute(sql: on ? "INSERT OR IGNORE INTO copy_legal_holds(place, key) VALUES (?, ?)" : "DELETE FROM copy_legal_holds WHERE place = ? AND key = ?",
                           arguments: [place, key])
        }
    }
}

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
            if h.kind == .snapshot, try Int.fetchOne($0, sql: "SELECT 1 FROM snapshots WHERE id = ?",
                arguments: [h.target]) == nil {
                throw CatalogError(.notFound, object: "snapshot \(h.target)",
                    "snapshot \(h.target) is no longer in the catalog (collected?)")
            }
            try $0.execute(sql: """
                INSERT INTO holds(id, kind, target, tenant, reason, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                """, arguments: [h.id, h.kind.rawValue, h.target, h.tenant, h.reason, h.createdBy,
                                 h.createdAt.timeIntervalSince1970])
        }
    }

    /// Every hold, released ones included (`active`: only those in force), oldest first.
    public func holds(active: Bool = false) throws -> [LegalHold] {
        try db.read { db in
            try Row.fetchAll(db,
                sql: "SELECT * FROM holds\(active ? " WHERE released_at IS NULL" : "") ORDER BY created_at, id")
                .compactMap { r in
                guard let kind = LegalHold.Kind(rawValue: r["kind"]) else { return nil }
                return LegalHold(id: r["id"], kind: kind, target: r["target"], tenant: r["tenant"], reason: r["reason"],
                    createdBy: r["created_by"],
                                 createdAt: Date(timeIntervalSince1970: r["created_at"]),
                                 releasedAt: (r["released_at"] as Double?).map(Date.init(timeIntervalSince1970:)),
                                     releaseRequest: r["release_request"])
            }
        }
    }

    /// Marks a hold released, once: false if it was not in force.
    public func releaseHold(_ id: String, at: Date, request: String?) throws -> Bool {
        try db.write { db in
            try db.execute(sql: """
                UPDATE holds SET released_at = ?, release_request = ? WHERE id = ? AND released_at IS NULL
                """,
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
                    (h.kind = 'snapshot' AND h.tenant = ? AND EXISTS (SELECT 1 FROM snapshot_packs sp WHERE \
                sp.snapshot = h.target AND sp.pack = ?))) LIMIT 1
                """, arguments: [tenant, tenant, id]) != nil
        }
    }

    /// Whether a tenant hold in force covers `tenant`.
    public func isTenantHeld(_ tenant: String) throws -> Bool {
        try db.read { db in try Self.isTenantHeld(db, tenant) }
    }

    static func isTenantHeld(_ db: Database, _ tenant: String) throws -> Bool {
        try Int.fetchOne(db,
            sql: "SELECT 1 FROM holds WHERE released_at IS NULL AND kind = 'tenant' AND tenant = ? LIMIT 1",
            arguments: [tenant]) != nil
    }

    /// Keys of `place` (an S3 copy) whose original version was given a legal hold.
    public func copyLegalHolds(place: String) throws -> Set<String> {
        try db.read {
            Set(try String.fetchAll($0, sql: "SELECT key FROM copy_legal_holds WHERE place = ?", arguments: [place]))
        }
    }

    public func setCopyLegalHold(place: String, key: String, on: Bool) throws {
        try db.write {
            try $0.execute(sql: on ? """
                INSERT OR IGNORE INTO copy_legal_holds(place, key) VALUES (?, ?)
                """ : "DELETE FROM copy_legal_holds WHERE place = ? AND key = ?",
                           arguments: [place, key])
        }
    }
}

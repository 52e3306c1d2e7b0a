import Foundation
import GRDB
import Logging
import RedoubtAWS
import RedoubtCore
import RedoubtStore

// The SQLite implementation of ``CopyTargetRepository``.

extension Catalog {
    public func insertCopyTarget(_ t: CopyTarget) throws {
        try db.write { db in
            try db.execute(sql: """
                INSERT INTO copy_targets(id, tenant, url, endpoint, region, credentials_file, virtual_hosted, margin, \
                accept_unenforced, created_at,
                                         last_proof_at, last_proof_ok, last_proof_detail)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [t.id, t.tenant, t.url, t.endpoint, t.region, t.credentialsFile, t.virtualHosted,
                                 t.marginSeconds, t.acceptUnenforced,
                                 t.createdAt.timeIntervalSince1970, t.lastProofAt?.timeIntervalSince1970, t.lastProofOK,
                                     t.lastProofDetail])
        }
    }

    /// Targets in use (not removed), optionally of one tenant.
    public func copyTargets(tenant: String? = nil) throws -> [CopyTarget] {
        try db.read { db in
            let rows = try tenant.map {
                try Row.fetchAll(db,
                    sql: "SELECT * FROM copy_targets WHERE removed_at IS NULL AND tenant = ? ORDER BY created_at",
                    arguments: [$0])
            }
                ?? Row.fetchAll(db, sql: "SELECT * FROM copy_targets WHERE removed_at IS NULL ORDER BY created_at")
            return rows.map(Self.copyTarget)
        }
    }

    static func copyTarget(_ r: Row) -> CopyTarget {
        func date(_ c: String) -> Date? { (r[c] as Double?).map(Date.init(timeIntervalSince1970:)) }
        return CopyTarget(
            info: Wire.CopyTargetInfo(id: r["id"], tenant: r["tenant"], url: r["url"], endpoint: r["endpoint"],
                region: r["region"],
                                      marginSeconds: r["margin"], acceptUnenforced: r["accept_unenforced"],
                                      createdAt: Date(timeIntervalSince1970: r["created_at"]),
                                          lastProofAt: date("last_proof_at"),
                                      lastProofOK: r["last_proof_ok"], lastProofDetail: r["last_proof_detail"],
                                          lastSyncAt: date("last_sync_at"),
                                      lastSyncOK: r["last_sync_ok"], lastSyncDetail: r["last_sync_detail"]),
            credentialsFile: r["credentials_file"], virtualHosted: r["virtual_hosted"])
    }

    public func recordCopyProof(_ id: String, at: Date, ok: Bool, detail: String) throws {
        try db.write {
            try $0.execute(sql: """
                UPDATE copy_targets SET last_proof_at = ?, last_proof_ok = ?, last_proof_detail = ? WHERE id = ?
                """,
                           arguments: [at.timeIntervalSince1970, ok, detail, id])
        }
    }

    public func recordCopySync(_ id: String, at: Date, ok: Bool, detail: String) throws {
        try db.write {
            try $0.execute(sql: """
                UPDATE copy_targets SET last_sync_at = ?, last_sync_ok = ?, last_sync_detail = ? WHERE id = ?
                """,
                           arguments: [at.timeIntervalSince1970, ok, detail, id])
        }
    }

    public func removeCopyTarget(_ id: String, at: Date) throws -> Bool {
        try db.write { db in
            try db.execute(sql: "UPDATE copy_targets SET removed_at = ? WHERE id = ? AND removed_at IS NULL",
                arguments: [at.timeIntervalSince1970, id])
            return db.changesCount > 0
        }
    }
}

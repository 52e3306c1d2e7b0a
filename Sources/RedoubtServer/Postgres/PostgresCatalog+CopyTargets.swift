import Foundation
import PostgresNIO
import RedoubtCore

// The PostgreSQL implementation of ``CopyTargetRepository``: single statements; removal is a
// compare-and-set on `removed_at`, so of two concurrent removals one returns true.

extension PostgresCatalog: CopyTargetRepository {
    public func insertCopyTarget(_ t: CopyTarget) async throws {
        _ = try await rows("""
            INSERT INTO copy_targets(id, tenant, url, endpoint, region, credentials_file, virtual_hosted, margin,
                                     accept_unenforced, created_at, last_proof_at, last_proof_ok, last_proof_detail)
            VALUES (\(t.info.id), \(t.info.tenant), \(t.info.url), \(t.info.endpoint), \(t.info.region),
                    \(t.credentialsFile), \(t.virtualHosted), \(t.info.marginSeconds), \(t.info.acceptUnenforced),
                    \(t.info.createdAt.timeIntervalSince1970), \(t.info.lastProofAt?.timeIntervalSince1970),
                    \(t.info.lastProofOK), \(t.info.lastProofDetail))
            """)
    }

    public func copyTargets(tenant: String?) async throws -> [CopyTarget] {
        try await rows("""
            SELECT id, tenant, url, endpoint, region, margin, accept_unenforced, created_at, last_proof_at,
                   last_proof_ok, last_proof_detail, last_sync_at, last_sync_ok, last_sync_detail, credentials_file,
                   virtual_hosted
            FROM copy_targets WHERE removed_at IS NULL AND (\(tenant)::text IS NULL OR tenant = \(tenant))
            ORDER BY created_at
            """).map { r in
            let (id, tenant, url, endpoint, region, margin, accept, created, proofAt, proofOK, proofDetail, syncAt,
                 syncOK, syncDetail, credentials, virtualHosted) = try r.decode(
                (String, String, String, String, String, Double, Bool, Double, Double?, Bool?, String?, Double?,
                 Bool?, String?, String?, Bool).self)
            return CopyTarget(
                info: Wire.CopyTargetInfo(id: id, tenant: tenant, url: url, endpoint: endpoint, region: region,
                                          marginSeconds: margin, acceptUnenforced: accept,
                                          createdAt: Self.date(created), lastProofAt: proofAt.map(Self.date),
                                          lastProofOK: proofOK, lastProofDetail: proofDetail,
                                          lastSyncAt: syncAt.map(Self.date), lastSyncOK: syncOK,
                                          lastSyncDetail: syncDetail),
                credentialsFile: credentials, virtualHosted: virtualHosted)
        }
    }

    public func recordCopyProof(_ id: String, at: Date, ok: Bool, detail: String) async throws {
        _ = try await rows("""
            UPDATE copy_targets SET last_proof_at = \(at.timeIntervalSince1970), last_proof_ok = \(ok),
                last_proof_detail = \(detail) WHERE id = \(id)
            """)
    }

    public func recordCopySync(_ id: String, at: Date, ok: Bool, detail: String) async throws {
        _ = try await rows("""
            UPDATE copy_targets SET last_sync_at = \(at.timeIntervalSince1970), last_sync_ok = \(ok),
                last_sync_detail = \(detail) WHERE id = \(id)
            """)
    }

    public func removeCopyTarget(_ id: String, at: Date) async throws -> Bool {
        try await !rows("""
            UPDATE copy_targets SET removed_at = \(at.timeIntervalSince1970) WHERE id = \(id) AND removed_at IS NULL
            RETURNING 1
            """).isEmpty
    }
}

// Server side of `redoubt media write` (issue 6, docs/FORMAT.md §13): streams a tenant's
// stored objects, ciphertext as stored, into a media set. Needs no key.
import Foundation
import RedoubtCore
import RedoubtMedia
import RedoubtStore

/// What a media export wrote.
public struct MediaExportSummary: Sendable {
    public var snapshots: [String]
    public var packs: Int
    public var auditSeq: Int64
    public var media: MediaWriteSummary
}

/// Writes the selected snapshots of one tenant to a media set.
public enum MediaExport {
    /// Which snapshots to write.
    public enum Selection: Sendable {
        case latest, all
        case ids([String])
    }

    /// Streams the tenant descriptor, each selected snapshot's packs then manifest, and an
    /// audit anchor (the audit record of this export: `{"seq":N,"hash":"…"}`) into `writer`,
    /// then finishes the set. `progress` gets one line per object.
    public static func run(catalog: Catalog, store: any ObjectStore, tenant: String, selection: Selection, writer: MediaWriter,
                           actor: String, now: Date, progress: (String) -> Void) async throws -> MediaExportSummary {
        let all = try catalog.snapshots(tenant: tenant).sorted { $0.time < $1.time }
        let chosen: [SnapshotRecord]
        switch selection {
        case .all: chosen = all
        case .latest: chosen = all.last.map { [$0] } ?? []
        case .ids(let ids):
            chosen = try ids.map { id in
                guard let s = all.first(where: { $0.id == id }) else {
                    throw ServerError.badRequest("snapshot \(id) is not a snapshot of tenant \(tenant); see `redoubt snapshots`")
                }
                return s
            }
        }
        guard !chosen.isEmpty else { throw ServerError.badRequest("tenant \(tenant) has no snapshots to write") }
        // The descriptor carries the wrapped read key, so a restore from media needs only the volumes and the unwrap secret.
        let version = try catalog.tenant(tenant)?.keyVersion ?? 1
        let tkey = RepositoryService.tenantKey(tenant, version: version)
        try writer.append(MediaRecord(type: .object, id: "tenant-v\(version).json", body: try await store.get(tkey)))
        var written = Set<String>()
        for s in chosen {
            for p in try catalog.snapshotPacks(id: s.id) where !written.contains(p.description) {
                let bytes = try await store.get(RepositoryService.packKey(tenant: tenant, id: p))
                try writer.append(MediaRecord(type: .pack, id: p.description, body: bytes))
                written.insert(p.description)
                progress("pack \(p.description) (\(bytes.count) bytes)")
            }
            guard let sid = SnapshotID(hex: s.id) else { throw ServerError.badRequest("catalog holds a malformed snapshot ID \(s.id)") }
            let m = try await store.get(RepositoryService.manifestKey(tenant: tenant, id: sid))
            try writer.append(MediaRecord(type: .manifest, id: s.id, body: m))
            progress("snapshot \(s.id)")
        }
        let rec = try catalog.audit(time: now, actor: actor, role: "admin", credential: "", source: "local", action: "media-write",
                                    object: "tenant/\(tenant)", outcome: "ok",
                                    detail: "\(chosen.count) snapshots, \(written.count) packs")
        try writer.append(MediaRecord(type: .auditAnchor, id: "", body: Array(#"{"seq":\#(rec.seq),"hash":"\#(rec.hash)"}"#.utf8)))
        let media = try writer.finish()
        return MediaExportSummary(snapshots: chosen.map(\.id), packs: written.count, auditSeq: rec.seq, media: media)
    }
}

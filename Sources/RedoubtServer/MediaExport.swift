// Server side of `redoubt media write` (docs/FORMAT.md §13): streams a tenant's
// stored objects, ciphertext as stored, into a media set. Needs no key.
import Crypto
import Foundation
import Logging
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
    public static func run(catalog: any CatalogRepositories, store: any ObjectStore, tenant: String,
                           selection: Selection,
        writer: MediaWriter,
                           actor: String, now: Date, progress: (String) -> Void) async throws -> MediaExportSummary {
        // Commit order: "latest" is what the server committed last, whatever a host's clock said.
        let all = try await catalog.snapshots(tenant: tenant)
        let chosen: [SnapshotRecord]
        switch selection {
        case .all: chosen = all
        case .latest: chosen = all.last.map { [$0] } ?? []
        case .ids(let ids):
            chosen = try ids.map { id in
                guard let s = all.first(where: { $0.id == id }) else {
                    throw ServerError.badRequest("""
                        snapshot \(id) is not a snapshot of tenant \(tenant); see `redoubt snapshots`
                        """)
                }
                return s
            }
        }
        guard !chosen.isEmpty else { throw ServerError.badRequest("tenant \(tenant) has no snapshots to write") }
        // What goes on the media, in order: the descriptor (it carries the wrapped read key,
        // so a restore from media needs only the volumes and the unwrap secret), then each
        // snapshot's packs not yet written and its manifest.
        let version = try await catalog.tenant(tenant)?.keyVersion ?? 1
        var items: [Item] = [Item(type: .object, id: RepositoryLayout.descriptorName(version: version),
            key: RepositoryLayout.descriptorKey(tenant: tenant, version: version), hash: nil, note: nil)]
        // The host key statements (registrations, revocations), so a restore from the set
        // alone can tell a snapshot an enrolled host wrote from one planted on the volumes.
        let statements = HostKeyObjects.prefix(tenant: tenant)
        for info in try await store.list(prefix: statements).sorted(by: { $0.key < $1.key }) {
            let name = "host-keys/" + info.key.path.dropFirst(statements.count)
            guard HostKeyObjects.isStatementName(name) else { continue }
            items.append(Item(type: .object, id: name, key: info.key, hash: nil, note: name))
        }
        var written = Set<String>()
        for s in chosen {
            for p in try await catalog.snapshotPacks(id: s.id) where written.insert(p.description).inserted {
                items.append(Item(type: .pack, id: p.description, key: RepositoryLayout.packKey(tenant: tenant, id: p),
                    hash: p.bytes, note: "pack \(p.description)"))
            }
            guard let sid = SnapshotID(hex: s.id) else {
                throw ServerError.badRequest("catalog holds a malformed snapshot ID \(s.id)")
            }
            items.append(Item(type: .manifest, id: s.id, key: RepositoryLayout.manifestKey(tenant: tenant, id: sid),
                hash: sid.bytes, note: "snapshot \(s.id)"))
        }
        // Why a pipeline: the next two records are read, checked and hashed on other
        // threads while this one is checksummed and written. Loading (two SHA-256 over
        // every byte) costs more than writing, so one load in flight left the writer
        // waiting; with two, `time` showed ~1.35 cores busy on this 2-core VM
        // (docs/BENCHMARKS.md has the figures of all the media changes together).
        var loading: [Task<FramedMediaRecord, Error>] = []
        var toLoad = items.startIndex
        func startLoads() {
            while loading.count < 2, toLoad < items.endIndex {
                let i = items[toLoad]
                loading.append(Task.detached { try await Self.load(i, from: store) })
                toLoad += 1
            }
        }
        defer { for t in loading { t.cancel() } }
        for idx in items.indices {
            startLoads()
            let current = try await loading.removeFirst().value
            startLoads()
            try writer.append(current)
            if let note = items[idx].note {
                progress(items[idx].type == .pack ? "\(note) (\(current.size) bytes)" : note)
            }
        }
        let rec = try await catalog.audit(time: now, actor: actor, role: "admin", credential: "", source: "local",
            action: "media-write",
                                    object: "tenant/\(tenant)", outcome: "ok",
                                    detail: "\(chosen.count) snapshots, \(written.count) packs")
        try writer.append(MediaRecord(type: .auditAnchor, id: "",
            body: Array(#"{"seq":\#(rec.seq),"hash":"\#(rec.hash)"}"#.utf8)))
        let media = try writer.finish()
        return MediaExportSummary(snapshots: chosen.map(\.id), packs: written.count, auditSeq: rec.seq, media: media)
    }

    /// One object to write: its record type and ID, its store key, and for packs and
    /// manifests the SHA-256 its bytes must have (their ID).
    struct Item: Sendable {
        var type: MediaRecordType
        var id: String
        var key: ObjectKey
        var hash: [UInt8]?
        var note: String?
    }

    /// Reads an object, checks it is the bytes its ID names (a damaged local copy must not
    /// become a media set that looks whole), and frames it.
    static func load(_ i: Item, from store: any ObjectStore) async throws -> FramedMediaRecord {
        var body = try await store.get(i.key)
        if i.hash == nil, !HostKeyObjects.isStatementName(i.id) {
            // The descriptor leaves the server only with its write material sealed.
            guard let export = TenantDescriptor.forExport(body) else {
                throw StoreError(.integrity, key: i.key.path, "the tenant descriptor in the store does not decode")
            }
            body = export
        }
        let record = MediaRecord(type: i.type, id: i.id, body: body)
        guard let h = i.hash else { return record.framed() }
        guard let framed = record.framed(ifBodyHashes: h) else {
            throw StoreError(.integrity, key: i.key.path,
                """
                    \(i.type == .pack ? "pack" : "manifest") \(i.id) in the store does not hash to its ID: damaged; \
                    run `redoubt verify` and restore it from a copy before writing media
                    """)
        }
        return framed
    }
}

/// What a media import brought back.
public struct MediaImportSummary: Sendable {
    public var tenant: String
    public var objects = 0
    public var alreadyThere = 0
    public var bytes: UInt64 = 0
    public var damage: [String] = []
    /// Manifests left out because no host key statement verified under the trust root
    /// vouches for their signer (planted on the set), each with the reason.
    public var unverified: [String] = []
    public var rebuild: RebuildReport
}

/// Server side of `redoubt media import` (disaster recovery onto a fresh repository host):
/// puts a media set's objects into a server's store, locked again, and rebuilds the
/// catalog from the store. Needs no key: everything on media is ciphertext or public.
public enum MediaImport {
    /// What the import checks each manifest's signer against.
    public enum Trust: Sendable {
        /// The old server's CA (pinned in every restorer's credential.json): a manifest is
        /// imported only if a statement it signed registers the key (docs/FORMAT.md §6.4).
        case trustRoot(P256.Signing.PublicKey)
        /// No check: whoever wrote the set decides what the new catalog lists.
        case unchecked
    }

    /// Reads every supplied volume in order. Records are verified by the reader (block
    /// CRCs, record SHA-256); packs and manifests are verified once more by the rebuild,
    /// which leaves out anything that does not check and names it. Objects are locked
    /// until the later of the set's own retention and now plus the tenant's minimum
    /// retention: never shorter than they were. Run with the server stopped.
    public static func run(home: ServerHome, source: SequentialSource, skipDamaged: Bool, trust: Trust, now: Date,
                           logger: Logger, progress: (String) -> Void) async throws -> MediaImportSummary {
        let fm = FileManager.default
        // Records arrive through a synchronous callback; they are spooled beside the store
        // (same filesystem, private) and put into the store afterwards.
        let spool = home.root.appendingPathComponent("import-spool-\(UUID().uuidString)")
        try fm.createDirectory(at: spool, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
        defer { try? fm.removeItem(at: spool) }
        var spooled: [(key: String, file: String)] = []
        var failure: String?
        let report = try MediaReader(source: source, skipDamaged: skipDamaged).read { r throws(MediaError) in
            guard failure == nil else { return }
            let name: String
            switch r.type {
            case .pack:
                guard let id = PackID(hex: r.id) else {
                    failure = "a pack record with a malformed ID \(r.id.debugDescription)"; return
                }
                name = "pack-\(id)"
            case .manifest:
                guard let id = SnapshotID(hex: r.id) else {
                    failure = "a manifest record with a malformed ID \(r.id.debugDescription)"; return
                }
                name = "manifest-\(id)"
            case .object:
                // Why the strict pattern: the name becomes a store key.
                if HostKeyObjects.isStatementName(r.id) {
                    name = "hostkey-\(r.id.dropFirst("host-keys/".count))"
                    break
                }
                guard RepositoryLayout.descriptorVersion(name: r.id) != nil else { return }
                name = "object-\(r.id)"
            case .auditAnchor:
                return
            }
            let file = spool.appendingPathComponent(name).path
            guard fm.createFile(atPath: file, contents: Data(r.body), attributes: [.posixPermissions: 0o600]) else {
                failure = "cannot write \(file)"; return
            }
            spooled.append((name, file))
        }
        if let failure { throw ServerError.badRequest("media import: \(failure); nothing was put into the store") }
        guard let tenant = report.labels.first?.tenant, RepositoryService.isValidTenantName(tenant) else {
            throw ServerError.badRequest("the media set's label names no valid tenant")
        }
        let store = try home.openStore()
        // The tenant's minimum retention, from the newest descriptor on the media.
        var minRetention: TimeInterval = 30 * 86400
        var newest = 0
        for s in spooled where RepositoryLayout.descriptorVersion(name: s.key.dropFirst("object-".count)) != nil {
            if let d = fm.contents(atPath: s.file), let t = try? JSONDecoder().decode(TenantDescriptor.self, from: d),
                t.name == tenant,
               (t.keyVersion ?? 1) >= newest {
                newest = t.keyVersion ?? 1
                minRetention = t.minRetentionSeconds
            }
        }
        guard newest > 0 else {
            throw ServerError.badRequest("the media set holds no descriptor of tenant \(tenant); it cannot be imported")
        }
        let setRetention = report.labels.first?.retainUntil.flatMap { ISO8601DateFormatter().date(from: $0) }
        let until = max(now.addingTimeInterval(minRetention), setRetention ?? now)
        // An existing tenant of the same name must be the same tenant (same read key).
        if let existing = try await home.openCatalog().tenant(tenant) {
            let d = fm.contents(atPath: spooled.first { $0.key == "object-"
                + RepositoryLayout.descriptorName(version: newest) }?.file ?? "")
            let incoming = d.flatMap { try? JSONDecoder().decode(TenantDescriptor.self, from: $0) }
            guard incoming?.readKeyID == existing.readKeyID else {
                throw ServerError(409, "E_CONFLICT",
                    """
                        this server already has a tenant \(tenant) with another read key; import into a fresh data \
                        directory
                        """)
            }
        }
        var summary = MediaImportSummary(tenant: tenant, damage: report.damage.map(\.description),
            rebuild: RebuildReport())
        // Why before anything is put: the new server has a new CA and cannot tell a planted
        // manifest from a genuine one later; only the old CA's statements on the set can.
        if case .trustRoot(let root) = trust {
            let statements = spooled.filter { $0.key.hasPrefix("hostkey-") }.compactMap { s in
                fm.contents(atPath: s.file).map { (name: "host-keys/\(s.key.dropFirst("hostkey-".count)) on the media",
                                                   bytes: Array($0)) }
            }
            let registry = HostKeyRegistry(tenant: tenant, trustRoot: root, objects: statements)
            // Statements that do not open under the trust root (forged) are not carried on
            // into the store and so into later copies.
            let ignored = Set(registry.ignored.map(\.name))
            spooled = spooled.filter { s in
                if s.key.hasPrefix("hostkey-") {
                    return !ignored.contains("host-keys/\(s.key.dropFirst("hostkey-".count)) on the media")
                }
                guard s.key.hasPrefix("manifest-"), let id = SnapshotID(hex: String(s.key.dropFirst("manifest-".count)))
                else { return true }
                do {
                    guard let bytes = fm.contents(atPath: s.file) else { return false }
                    try registry.check(try Manifest.parse(Array(bytes), expectedID: id), readKeyID: nil)
                    return true
                } catch {
                    summary.unverified.append("\(error)")
                    return false
                }
            }
        }
        for s in spooled {
            let kind = s.key.prefix { $0 != "-" }
            let id = String(s.key.dropFirst(kind.count + 1))
            let key: ObjectKey?
            var retain: Date? = until
            switch kind {
            case "pack": key = PackID(hex: id).map { RepositoryLayout.packKey(tenant: tenant, id: $0) }
            case "manifest": key = SnapshotID(hex: id).map { RepositoryLayout.manifestKey(tenant: tenant, id: $0) }
            case "hostkey": key = ObjectKey(HostKeyObjects.prefix(tenant: tenant) + id)
            default:
                key = RepositoryLayout.descriptorVersion(name: id).map {
                    RepositoryLayout.descriptorKey(tenant: tenant, version: $0)
                }
                retain = nil  // descriptors are replaced on rotation, as on the server
            }
            guard let key, let bytes = fm.contents(atPath: s.file) else { continue }
            if kind == "object", let local = try? await store.get(key),
               let here = try? JSONDecoder().decode(TenantDescriptor.self, from: Data(local)),
               let there = try? JSONDecoder().decode(TenantDescriptor.self, from: bytes),
                   here.isSameVersion(as: there) {
                // The server's own descriptor of this key version (its seal differs): kept.
                summary.alreadyThere += 1
                continue
            }
            let r = try await store.put(key, Array(bytes), retainUntil: retain)
            if r == .created { summary.objects += 1 } else { summary.alreadyThere += 1 }
            // Already there with an older lock (say, queued by garbage collection): the rebuild
            // below takes locks from the store, so lock it as the import promises.
            if r != .created, let retain { try await store.extendRetention(key, until: retain) }
            summary.bytes += UInt64(bytes.count)
            progress("\(key.path) (\(bytes.count) bytes)")
        }
        // Older descriptors than the newest would carry older wrapped copies: keep only the newest.
        for v in 1..<max(newest, 1) {
            let k = RepositoryLayout.descriptorKey(tenant: tenant, version: v)
            if try await store.head(k) != nil { try await store.delete(k, now: now) }
        }
        summary.rebuild = try await CatalogRebuilder.rebuild(home: home, logger: logger)
        return summary
    }
}

// The off-site copy: a tenant's objects, ciphertext as stored, written to an
// S3 bucket under Object Lock COMPLIANCE with their own retain-until, after a proof that
// the bucket enforces it. The bucket mirrors the local store's layout, so a restore
// needs only the bucket and the read key.
import Foundation
import RedoubtCore
import RedoubtStore

/// What one copy run did.
public struct BucketCopySummary: Sendable, Codable {
    public var copied: Int
    public var alreadyThere: Int
    public var extended: Int
    public var auditSeq: Int64
    public var proof: S3LockProof.Result?
    /// Objects this run put under a legal hold in the bucket.
    public var legalHolds: Int = 0
    /// Objects whose legal hold this run lifted (their hold was released).
    public var legalHoldsLifted: Int = 0
}

/// Copies a tenant to an S3 target, resumably: objects already in the bucket are
/// checked (same bytes) and skipped, their lock extended when the local lock grew.
public enum BucketCopy {
    /// Runs the proof (unless `acceptUnenforced`, which is recorded), then copies the
    /// tenant descriptor, every pack and every manifest, each locked until its local lock
    /// plus `margin`, and finally the audit chain head as `audit-head/<seq>.json`.
    public static func sync(catalog: any CatalogRepositories, store: any ObjectStore, tenant: String,
                            target: any CopyTargetStore, margin: TimeInterval,
                            acceptUnenforced: Bool, actor: String, now: Date,
                            progress: (String) -> Void) async throws -> BucketCopySummary {
        let proof = await target.proveLocks(now: now)
        let where_ = target.place
        _ = try await catalog.audit(time: now, actor: actor, role: "admin", credential: "", source: "local",
            action: "copy-proof",
                              object: where_, outcome: proof.passed ? "ok" : (acceptUnenforced ? "warning" : "denied"),
                              detail: proof.firstFailure ?? "all lock checks passed")
        // Why refuse: a bucket that lets locked versions be deleted is no copy at all.
        guard proof.passed || acceptUnenforced else {
            throw ServerError.badRequest("""
                copy target \(where_) does not enforce Object Lock COMPLIANCE (\(proof.firstFailure ?? "?")); use a \
                bucket with Object Lock enabled, or --accept-unenforced to keep it with a warning
                """)
        }
        if !proof.passed {
            progress("WARNING: \(where_) failed the lock proof (\(proof.firstFailure ?? "?")); copying anyway as asked")
        }

        var summary = BucketCopySummary(copied: 0, alreadyThere: 0, extended: 0, auditSeq: 0, proof: proof)
        let snapshots = try await catalog.snapshots(tenant: tenant)
        // Objects without a local lock of their own (the tenant descriptor, which carries the
        // wrapped read key) stay locked as long as the newest snapshot that needs them.
        let floor = snapshots.map(\.retainUntil).max() ?? now
        /// Moves the bucket original's lock up to `until` if it is behind.
        func extendIfBehind(_ key: ObjectKey, _ remoteUntil: Date?, _ until: Date) async throws {
            guard (remoteUntil ?? .distantPast) < until else { return }
            try await target.extendRetention(key, until: until)
            summary.extended += 1
        }
        /// `sha256`: the object's hash when its key is that hash (packs, manifests).
        /// `atLeastFloor`: locked at least as long as the newest snapshot, whatever the local lock.
        func copy(_ key: ObjectKey, sha256: String? = nil, atLeastFloor: Bool = false) async throws {
            let local = try await store.head(key)
            let until = max(local?.retainUntil ?? floor, atLeastFloor ? floor : now, now).addingTimeInterval(margin)
            // A rerun skips what is there without reading it: for a content-addressed
            // object the hash recorded with the bucket's original version must be the
            // key's own hash, and the size the local size. (A whole read from the bucket
            // checks the bytes against that hash, so a lying version fails restore and
            // verify, never passes as data.)
            if let sha256, let local, let remote = try await target.headRecorded(key),
                remote.sha256 == sha256, remote.info.size == local.size
            {
                summary.alreadyThere += 1
                try await extendIfBehind(key, remote.info.retainUntil, until)
                progress("\(key.path) (already there)")
                return
            }
            var bytes = try await store.get(key)
            let outcome: PutResult
            if sha256 == nil, !atLeastFloor, BucketVerify.descriptorVersion(key.path, tenant: tenant) != nil {
                // A descriptor leaves the server only with its write material sealed, and one
                // of the same key version already there stands for it (the server rewrites its
                // own in place: a fresh seal, a later retention; the bucket keeps the original).
                guard let export = TenantDescriptor.forExport(bytes) else {
                    throw StoreError(.integrity, key: key.path, "the local tenant descriptor does not decode")
                }
                bytes = export
                do {
                    outcome = try await target.put(key, bytes, retainUntil: until)
                } catch let e as StoreError where e.code == .conflict {
                    let there = try? JSONDecoder().decode(TenantDescriptor.self, from: Data(try await target.get(key)))
                    guard let there, let here = try? JSONDecoder().decode(TenantDescriptor.self, from: Data(bytes)),
                        there.isSameVersion(as: here) else {
                        throw e
                    }
                    try await extendIfBehind(key, try await target.head(key)?.retainUntil, until)
                    summary.alreadyThere += 1
                    progress("\(key.path) (already there, same key version)")
                    return
                }
            } else {
                outcome = try await target.put(key, bytes, retainUntil: until)
            }
            // One HEAD serves both checks: the bytes landed, and the lock is not behind.
            guard let remote = try await target.head(key), remote.size == bytes.count else {
                throw StoreError(.integrity, key: key.path,
                    "the bucket does not hold the \(bytes.count) bytes just copied")
            }
            if outcome == .created {
                summary.copied += 1
            } else {
                summary.alreadyThere += 1
                try await extendIfBehind(key, remote.retainUntil, until)
            }
            progress("\(key.path) (\(bytes.count) bytes)")
        }
        // The current descriptor: after a rotation it carries the newly wrapped read key; the
        // older ones already in the bucket stay, locked, and name their own (retired) KEKs.
        try await copy(RepositoryLayout.descriptorKey(tenant: tenant, version: try catalog.tenant(tenant)?.keyVersion
            ?? 1))
        // The host key statements: a restore from the bucket alone checks who signed each
        // manifest against them. Locked as long as the newest snapshot, which they vouch for.
        let statements = try await store.list(prefix: HostKeyObjects.prefix(tenant: tenant))
        for info in statements.sorted(by: { $0.key < $1.key }) {
            try await copy(info.key, atLeastFloor: true)
        }
        var done = Set<String>()
        for s in snapshots {
            for p in try await catalog.snapshotPacks(id: s.id) where done.insert(p.description).inserted {
                try await copy(RepositoryLayout.packKey(tenant: tenant, id: p), sha256: p.description)
            }
            guard let sid = SnapshotID(hex: s.id) else {
                throw ServerError.badRequest("catalog holds a malformed snapshot ID \(s.id)")
            }
            try await copy(RepositoryLayout.manifestKey(tenant: tenant, id: sid), sha256: sid.description)
        }
        // Legal holds (docs/PROTOCOL.md §4.3): the original version of every newly held
        // object gets an S3 legal hold (one request each, once: a tenant hold may cover
        // many packs; the COMPLIANCE retention copied above follows the local lock, which
        // the hold keeps ahead, so it protects them as well); objects whose hold was
        // released since lose theirs.
        let held = try await catalog.heldKeys(tenant: tenant)
        let marked = try await catalog.copyLegalHolds(place: where_)
        for k in held.subtracting(marked).sorted() {
            guard let key = ObjectKey(k) else { continue }
            try await target.setLegalHold(key, on: true)
            try await catalog.setCopyLegalHold(place: where_, key: k, on: true)
            summary.legalHolds += 1
            progress("\(k) (legal hold)")
        }
        for k in marked.subtracting(held).sorted() where k.hasPrefix(RepositoryLayout.tenantPrefix(tenant)) {
            guard let key = ObjectKey(k) else { continue }
            try await target.setLegalHold(key, on: false)
            try await catalog.setCopyLegalHold(place: where_, key: k, on: false)
            summary.legalHoldsLifted += 1
            progress("\(k) (legal hold lifted)")
        }
        // A catalog export when anything changed: the snapshots as the server lists them
        // (public metadata, no key), locked like the descriptor, so the copy says what it
        // should hold without a server.
        if summary.copied > 0 || summary.extended > 0 {
            var export = CatalogExport(format: 1, tenant: tenant, exportedAt: now, snapshots: [])
            for s in snapshots {
                let packs = try await catalog.snapshotPacks(id: s.id).map(\.description)
                export.snapshots.append(.init(id: s.id, host: s.host, time: s.time, committedAt: s.committedAt,
                                              retainUntil: s.retainUntil, packs: packs))
            }
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            e.dateEncodingStrategy = .iso8601
            let bytes = Array(try e.encode(export))
            let ms = Int64(now.timeIntervalSince1970 * 1000)
            // Two syncs within one millisecond (a quick re-sync, a clock held still) must not
            // collide on the name: the later export takes the next free millisecond.
            var bump: Int64 = 0
            while let key = RepositoryLayout.key(.catalogExport(tenant: tenant, milliseconds: ms + bump)) {
                do {
                    let outcome = try await target.put(key, bytes, retainUntil: max(floor,
                        now).addingTimeInterval(margin))
                    if outcome == .created {
                        progress("\(key.path) (catalog export, \(export.snapshots.count) snapshots)")
                    }
                    break
                } catch let error as StoreError where error.code == .conflict && bump < 63 {
                    bump += 1
                }
            }
        }
        let record = try await catalog.audit(time: now, actor: actor, role: "admin", credential: "", source: "local",
            action: "copy-sync",
                                       object: where_, outcome: "ok",
                                       detail: "tenant \(tenant): \(summary.copied) copied, \(summary.alreadyThere) "
                                           + "already there, \(summary.extended) extended"
                                           + (summary.legalHolds
                                               + summary.legalHoldsLifted > 0 ? """
                                                   , \(summary.legalHolds) legal hold(s), \(summary.legalHoldsLifted) \
                                                   lifted
                                                   """ : ""))
        summary.auditSeq = record.seq
        // The chain head, locked in the bucket: a later rewrite of the server's log is provable.
        let time = ISO8601DateFormatter().string(from: now)
        let head = Array(#"{"seq":\#(record.seq),"hash":"\#(record.hash)","time":"\#(time)"}"#.utf8)
        if let key = RepositoryLayout.key(.auditHead(seq: record.seq)) {
            _ = try await target.put(key, head, retainUntil: now.addingTimeInterval(max(margin, 86400) + 365 * 86400))
        }
        return summary
    }

    /// `t/<tenant>/catalog/<unix ms>.json` (docs/FORMAT.md §7.1.1).
    public struct CatalogExport: Codable, Sendable {
        public struct Snapshot: Codable, Sendable {
            public var id: String
            public var host: String
            public var time: Date
            public var committedAt: Date
            public var retainUntil: Date
            public var packs: [String]
        }
        public var format: Int
        public var tenant: String
        public var exportedAt: Date
        public var snapshots: [Snapshot]
    }

    /// Snapshot manifests of `tenant` in a bucket copy, by snapshot ID.
    public static func manifests(in target: any OriginalVersionStore,
                                 tenant: String) async throws -> [String: [UInt8]] {
        var out: [String: [UInt8]] = [:]
        let prefix = RepositoryLayout.snapshotsPrefix(tenant)
        for info in try await target.list(prefix: prefix) where info.key.path.hasPrefix(prefix) {
            // Only `snapshots/<snapshot ID>`: anything else (a nested or misnamed key that
            // someone with the bucket's credentials added) is not a manifest Redoubt wrote;
            // `copy verify` lists it as EXTRA.
            let name = String(info.key.path.dropFirst(prefix.count))
            guard SnapshotID(hex: name) != nil else { continue }
            out[name] = try await target.get(info.key)
        }
        return out
    }

    /// The key of a pack in a bucket copy (the local store's layout).
    public static func packKey(tenant: String, id: PackID) -> ObjectKey {
        RepositoryLayout.packKey(tenant: tenant, id: id)
    }
}

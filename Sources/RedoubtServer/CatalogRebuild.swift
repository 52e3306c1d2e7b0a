import Foundation
import GRDB
import Logging
import RedoubtCore
import RedoubtStore

/// A tenant as stored in the store (`t/<tenant>/tenant-v<N>.json`): its public material,
/// its write material sealed to its read key, and its *wrapped* read key. What the catalog
/// needs to be rebuilt. Format 1 held the write material in the clear (docs/FORMAT.md §7.1).
struct TenantDescriptor: Codable {
    var format = 2
    var name: String
    var readKeyID: String
    var readPublicKey: String
    /// Format 1 only: the write material in the clear. Read, never written.
    var writeMaterial: String?
    /// Format 2: base64 of the write material sealed to the read key (§7.3), and its public
    /// check (`SharedWriteMaterial.check`). Both absent once the tenant is shredded.
    var sealedWriteMaterial: String?
    var writeMaterialCheck: String?
    var wrappedReadKey: String
    var minRetentionSeconds: Double
    var createdAt: Double
    /// Absent in descriptors written before rotation existed: version 1.
    var keyVersion: Int?
    /// Set once the tenant is crypto-shredded (the descriptor then holds no wrapped key).
    var shreddedAt: Double?

    init(_ r: TenantRecord, sealedWriteMaterial sealed: [UInt8]?, check: String?) {
        name = r.name
        readKeyID = r.readKeyID
        readPublicKey = Data(r.readPublicKey).base64EncodedString()
        sealedWriteMaterial = sealed.map { Data($0).base64EncodedString() }
        writeMaterialCheck = check
        wrappedReadKey = r.wrappedReadKey
        minRetentionSeconds = r.minRetention
        createdAt = r.createdAt.timeIntervalSince1970
        keyVersion = r.keyVersion
        shreddedAt = r.shreddedAt?.timeIntervalSince1970
    }

    var sealed: [UInt8]? { sealedWriteMaterial.flatMap { Data(base64Encoded: $0) }.map(Array.init) }

    /// Whether `other` is this tenant's descriptor of the same key version (same read key and
    /// wrapped key). Such two stand for each other in copies, whatever else differs: a fresh
    /// seal of the same material, a later minimum retention, format 1 against format 2.
    /// (A check is compared when both have one: a descriptor planted with the real wrapped
    /// key but other sealed material must not pass for the server's.)
    func isSameVersion(as other: TenantDescriptor) -> Bool {
        guard name == other.name, readKeyID == other.readKeyID, readPublicKey == other.readPublicKey,
              (keyVersion ?? 1) == (other.keyVersion ?? 1), wrappedReadKey == other.wrappedReadKey,
                  shreddedAt == other.shreddedAt else {
                  return false
              }
        if let mine = materialCheck, let theirs = other.materialCheck { return mine == theirs }
        return true
    }

    /// The material's check: recorded (format 2), or computed from the clear material (format 1).
    var materialCheck: String? {
        if let writeMaterialCheck { return writeMaterialCheck }
        guard let clear = writeMaterial.flatMap({ Data(base64Encoded: $0) }),
              let material = try? SharedWriteMaterial.decode(SecretBytes(copying: Array(clear))) else { return nil }
        return material.check
    }

    /// A stored descriptor as it may leave the server (bucket copy, media): a format-1
    /// descriptor, which holds the write material in the clear, is sealed first; anything
    /// else goes as it is. Nil if `bytes` is not a descriptor.
    static func forExport(_ bytes: [UInt8]) -> [UInt8]? {
        guard let d = try? JSONDecoder().decode(TenantDescriptor.self, from: Data(bytes)), let r = d.record else {
            return nil
        }
        guard d.writeMaterial != nil else { return bytes }
        guard let material = try? SharedWriteMaterial.decode(SecretBytes(copying: r.writeMaterial)),
              let sealed = try? material.sealed(tenant: r.name) else { return nil }
        var out = TenantDescriptor(r, sealedWriteMaterial: sealed, check: material.check)
        out.keyVersion = d.keyVersion
        return try? out.encoded()
    }

    func encoded() throws -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        return Array(try e.encode(self))
    }

    /// The tenant's record; its write material is empty unless the descriptor is format 1
    /// (a server cannot open the sealed copy).
    var record: TenantRecord? {
        guard let pub = Data(base64Encoded: readPublicKey) else { return nil }
        let wm: Data
        switch (writeMaterial, sealedWriteMaterial) {
        case (let clear?, nil): guard let d = Data(base64Encoded: clear) else { return nil }; wm = d
        case (nil, let sealed?): guard Data(base64Encoded: sealed) != nil else { return nil }; wm = Data()
        case (nil, nil) where shreddedAt != nil: wm = Data()  // a shred leaves no material anywhere
        default: return nil
        }
        return TenantRecord(name: name, readKeyID: readKeyID, readPublicKey: Array(pub), writeMaterial: Array(wm),
            wrappedReadKey: wrappedReadKey,
                            minRetention: minRetentionSeconds, createdAt: Date(timeIntervalSince1970: createdAt),
                            keyVersion: keyVersion ?? 1, shreddedAt: shreddedAt.map(Date.init(timeIntervalSince1970:)))
    }
}

/// What a rebuild found.
public struct RebuildReport: Sendable, Codable {
    public var tenants = 0
    public var packs = 0
    public var chunks = 0
    public var snapshots = 0
    /// Objects that failed their checks and were left out, each named with the reason.
    public var rejected: [String] = []
    /// What an admin must do before the rebuilt catalog serves everyone as before.
    public var toDo: [String] = []
    public var previousCatalog: String?
}

/// Rebuilds the catalog's tenants, packs, chunk index and snapshots from the store alone:
/// every pack is re-hashed and its public chunk list read; every manifest is parsed.
/// Principals, enrollment tokens, the audit log, settings, legal holds, retired KEKs, copy
/// targets and approval requests are not in the store: they are carried over from the
/// previous catalog if it can still be opened.
public enum CatalogRebuilder {
    public static func rebuild(home: ServerHome, clock: any ServerClock = SystemClock(),
        logger: Logger) async throws -> RebuildReport {
        if let pg = try home.settings().catalog {
            return try await rebuildShared(home: home, settings: pg, clock: clock, logger: logger)
        }
        var report = RebuildReport()
        let fm = FileManager.default
        let path = home.catalogPath
        if fm.fileExists(atPath: path) {
            // Two rebuilds within a second must not collide: the first free name wins.
            let stamp = path + ".old-\(Int(clock.now().timeIntervalSince1970))"
            var old = stamp
            var n = 1
            while fm.fileExists(atPath: old) { n += 1; old = "\(stamp).\(n)" }
            // Why a checkpoint first: the WAL may hold committed rows not yet in the main file.
            if let q = try? DatabaseQueue(path: path) {
                try? await q.writeWithoutTransaction { try $0.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
            }
            try fm.moveItem(atPath: path, toPath: old)
            for suffix in ["-wal", "-shm"] where fm.fileExists(atPath: path + suffix) {
                try? fm.moveItem(atPath: path + suffix, toPath: old + suffix)
            }
            report.previousCatalog = old
        }
        let catalog = try Catalog(path: path)
        // Write material by tenant, from the previous catalog: the store holds it sealed.
        var oldMaterial: [String: (readKeyID: String, material: [UInt8])] = [:]
        if let old = report.previousCatalog {
            let (lost, material): ([String], [String: (readKeyID: String,
                material: [UInt8])]) = try await catalog.db.writeWithoutTransaction { db in
                var lost: [String] = []
                var material: [String: (readKeyID: String, material: [UInt8])] = [:]
                try db.execute(sql: "ATTACH DATABASE ? AS old", arguments: [old])
                do {
                    for row in try Row.fetchAll(db, sql: "SELECT name, read_key_id, write_material FROM old.tenants") {
                        material[row["name"]] = (row["read_key_id"], Array(row["write_material"] as Data))
                    }
                } catch {
                    lost.append("write material of the previous catalog not carried over: \(error)")
                }
                // Legal holds are not in the store either; losing one in a rebuild would release it unapproved.
                // Retired KEKs: a shred after the rebuild must still destroy the KEKs rotated away from
                // (their descriptors are gone from the store). Copy targets: copies must not stop
                // silently. Requests and approvals: an approved change stays approved.
                for table in ["principals", "enrollments", "audit", "clock", "settings", "holds", "copy_legal_holds",
                              "retired_keks", "copy_targets", "requests", "approvals"] {
                    do {
                        // By name, the columns both have: a catalog an older build last wrote has
                        // fewer (they take their defaults), and the previous catalog is only read.
                        let ours = try Row.fetchAll(db, sql: "SELECT name FROM pragma_table_info(?, 'main')",
                            arguments: [table]).map {
                            $0["name"] as String
                        }
                        let theirs = Set(try Row.fetchAll(db, sql: "SELECT name FROM pragma_table_info(?, 'old')",
                            arguments: [table]).map {
                            $0["name"] as String
                        })
                        let columns = ours.filter(theirs.contains).map { "\"\($0)\"" }.joined(separator: ", ")
                        guard !columns.isEmpty else {
                            throw CatalogError(.inconsistent, object: "table \(table)",
                                "no such table in the previous catalog")
                        }
                        try db.execute(sql: """
                            INSERT OR IGNORE INTO main.\(table) (\(columns)) SELECT \(columns) FROM old.\(table)
                            """)
                    } catch {
                        lost.append("\(table) of the previous catalog not carried over: \(error)")
                    }
                }
                try db.execute(sql: "DETACH DATABASE old")
                return (lost, material)
            }
            report.rejected += lost
            oldMaterial = material
        }
        try await fill(catalog, from: try home.openStore(), oldMaterial: oldMaterial, now: clock.now(),
                       report: &report)
        return report
    }

    /// Rebuilds a PostgreSQL catalog, which must be empty (a new database or schema): what
    /// a lost database held besides the store's objects cannot be carried over, so a new
    /// admin credential is issued when no admin remains.
    static func rebuildShared(home: ServerHome, settings: CatalogSettings, clock: any ServerClock,
                              logger: Logger) async throws -> RebuildReport {
        var report = RebuildReport()
        let catalog = try await CatalogPools.shared.catalog(settings)
        let tenants = try await catalog.tenants()
        guard tenants.isEmpty else {
            throw ServerError(409, "E_EXISTS", """
                catalog \(try settings.target().redacted) still holds \(tenants.count) tenant(s): a rebuild writes \
                only into an empty database; create one (or a new schema, search_path=…), point catalog.url in \
                server.json at it on every node, and run this again
                """)
        }
        let ca = try home.certificateAuthority()
        try await catalog.setSetting(ServerHome.clusterCASetting, try ca.pin)
        let store = try home.openStore()
        try await fill(catalog, from: store, oldMaterial: [:], now: clock.now(), report: &report)
        let admins = try await catalog.principalListing(includeRevoked: false).filter { $0.role == Role.admin.rawValue }
        if admins.isEmpty {
            let s = try home.settings()
            let path = try await home.issueAdminCredential(catalog: catalog, store: store, ca: ca,
                                                           settings: s, name: "admin-rebuilt")
            report.toDo.append("""
                no admin was left: a new admin credential is in \(path) (0600); principals, tokens, the audit log, \
                holds and copy targets were in the lost database: re-enroll hosts and re-add copy targets
                """)
        }
        return report
    }

    /// The store phase of a rebuild: tenants, packs and their chunks, snapshots, then one
    /// audit record of what was done.
    static func fill(_ catalog: any CatalogRepositories, from store: any ObjectStore,
                     oldMaterial: [String: (readKeyID: String, material: [UInt8])], now: Date,
                     report: inout RebuildReport) async throws {
        let objects = try await store.list(prefix: RepositoryLayout.tenantsPrefix)
        var tenants: [String: TenantRecord] = [:]
        var checks: [String: String] = [:]
        for o in objects where o.key.path.hasSuffix(".json") && o.key.path.contains("/tenant-v") {
            let bytes = try await store.get(o.key)
            guard let d = try? JSONDecoder().decode(TenantDescriptor.self, from: Data(bytes)), let r = d.record,
                  o.key.path.hasPrefix(RepositoryLayout.tenantPrefix(r.name)) else {
                report.rejected.append("\(o.key): not a tenant descriptor")
                continue
            }
            // After a rotation an older descriptor may survive (a crash between writing the
            // new one and deleting the old): the highest key version wins.
            if (tenants[r.name]?.keyVersion ?? 0) < r.keyVersion {
                tenants[r.name] = r
                checks[r.name] = d.writeMaterialCheck
            }
        }
        for var r in tenants.values.sorted(by: { $0.name < $1.name }) {
            if r.writeMaterial.isEmpty, r.shreddedAt == nil, let old = oldMaterial[r.name],
                old.readKeyID == r.readKeyID,
               let material = try? SharedWriteMaterial.decode(SecretBytes(copying: old.material)),
               checks[r.name].map({ $0 == material.check }) ?? true {
                r = r.withWriteMaterial(old.material)
            }
            if r.writeMaterial.isEmpty && r.shreddedAt == nil {
                report.toDo.append("""
                    tenant \(r.name): its write material is sealed to the read key in the store; hosts cannot enroll \
                    until an admin gives it back (`redoubt admin tenant restore-material \(r.name)`)
                    """)
            }
            try await catalog.insertTenant(r)
            report.tenants += 1
        }
        for o in objects {
            let parts = o.key.path.split(separator: "/").map(String.init)
            guard parts.count >= 4, let tenant = tenants[parts[1]] else { continue }
            if parts[2] == "packs", let id = PackID(hex: parts[parts.count - 1]) {
                do {
                    let summary = try PackReader.inspect(try await store.get(o.key), expectedID: id)
                    guard summary.keyID.description == tenant.readKeyID else {
                        throw CoreError(.wrongTenant, object: "pack \(id)", "sealed to another tenant's key")
                    }
                    try await catalog.insertPack(tenant: tenant.name, id: id.description, key: o.key.path, size: o.size,
                        retainUntil: o.retainUntil ?? now, chunkIDs: summary.chunkIDs, now: now,
                                           verified: summary.chunksVerified)
                    report.packs += 1
                    report.chunks += summary.chunkIDs.count
                } catch { report.rejected.append("\(o.key): \(error)") }
            }
        }
        for o in objects {
            let parts = o.key.path.split(separator: "/").map(String.init)
            guard parts.count == 4, parts[2] == "snapshots", let tenant = tenants[parts[1]],
                let id = SnapshotID(hex: parts[3]) else {
                continue
            }
            do {
                let bytes = try await store.get(o.key)
                let m = try Manifest.parse(bytes, expectedID: id)
                guard m.header.tenant == tenant.name, m.header.readKeyID.description == tenant.readKeyID else {
                    throw CoreError(.wrongTenant, object: "snapshot \(id)", "names another tenant or read key")
                }
                // Why no signature check: host keys live with principals, which a rebuild
                // from the store alone does not have. (Restores check a manifest's ID, not
                // its signature either; the server checked it at commit.)
                let missing = try await catalog.missingPacks(tenant: tenant.name, packs: m.header.packs)
                if !missing.isEmpty {
                    report.rejected.append("""
                        snapshot \(id): \(missing.count) pack(s) missing, e.g. \(missing[0]) (kept; restore will fail \
                        on them)
                        """)
                }
                let h = m.header
                let retain = o.retainUntil ?? now
                let rec = SnapshotRecord(id: id.description, tenant: tenant.name, host: h.host,
                                         time: h.time.date,
                                         committedAt: retain.addingTimeInterval(-tenant.minRetention),
                                             retainUntil: retain, paths: h.paths.map(printable),
                                         tags: h.tags, statistics: h.statistics, packCount: h.packs.count,
                                             manifestSize: bytes.count)
                try await catalog.insertSnapshot(rec, packs: h.packs)
                report.snapshots += 1
            } catch { report.rejected.append("\(o.key): \(error)") }
        }
        try await catalog.audit(time: now, actor: "local", role: "-", credential: "-", source: "local",
            action: "rebuild-catalog", object: "catalog",
                          outcome: report.rejected.isEmpty ? "ok" : "warning",
                          detail: """
                              tenants=\(report.tenants) packs=\(report.packs) snapshots=\(report.snapshots) \
                              rejected=\(report.rejected.count)
                              """)
    }
}

import Crypto
import Foundation
import GRDB
import RedoubtCore

// The SQLite implementation of ``PackRepository``: packs, the chunk index, damaged packs.

extension Catalog {
    public func pack(tenant: String, id: String) throws -> (size: Int, retainUntil: Date)? {
        try db.read { db in
            try Row.fetchOne(db, sql: "SELECT size, retain_until FROM packs WHERE tenant = ? AND id = ?",
                arguments: [tenant, id]).map {
                (size: $0["size"], retainUntil: Date(timeIntervalSince1970: $0["retain_until"]))
            }
        }
    }

    /// Records a stored pack and the chunks it holds, in the dedup scope of `uploader` (the
    /// principal ID that uploaded it; nil when unknown, as in a rebuild from the store: then
    /// no host reuses them under host scope). The first pack wins for a chunk within a scope.
    /// A pack garbage collection queued for deletion is taken back off the queue (its bytes
    /// were uploaded again); one whose deletion is under way is refused (``CatalogError/Code/beingCollected``).
    ///
    /// The chunk index is written `batch` rows per transaction, the pack's own row with the
    /// first: the catalog has one writer, and a pack of a million chunk IDs in one
    /// transaction would hold every other tenant's upload and commit until it is done.
    /// Should the server stop between batches, the pack is recorded with part of its index:
    /// the chunks not indexed are only not deduplicated against, and nothing is lost.
    /// `verified`: the server checked every chunk's bytes against its ID (format-2 packs;
    /// docs/PROTOCOL.md §4.6), so other hosts may reuse them under tenant scope. `host`: the
    /// uploading host's name; its upload record and the pack's chunk count go in the first
    /// transaction (one commit instead of three, and no crash can part them).
    public func insertPack(tenant: String, id: String, key: String, size: Int, retainUntil: Date, chunkIDs: [ChunkID],
        now: Date,
                           uploader: String? = nil, batch: Int = 4096, verified: Bool = false,
                           uploadedBy host: String? = nil) throws {
        let step = max(1, batch)
        let shared: [any DatabaseValueConvertible] = [tenant, uploader ?? "", id, verified ? 1 : 0]
        func insert(_ db: Database, _ ids: ArraySlice<ChunkID>) throws {
            var rest = ids[...]
            while !rest.isEmpty {
                let rows = rest.prefix(Self.chunkRowsPerStatement)
                rest = rest.dropFirst(rows.count)
                // The last, shorter statement of a pack is not cached: its length varies by pack.
                let statement = rows.count == Self.chunkRowsPerStatement
                    ? try db.cachedStatement(sql: Self.insertChunkRows)
                    : try db.makeStatement(sql: Self.insertChunkRowsSQL(rows.count))
                try statement.execute(arguments: StatementArguments(shared + rows.map { Data($0.bytes) }))
            }
        }
        try db.write { db in
            try Self.reclaim(db, key: key)
            try db.execute(sql: """
                INSERT OR IGNORE INTO packs(tenant, id, size, retain_until, created_at, uploader) VALUES (?, ?, ?, ?, \
                ?, ?)
                """,
                           arguments: [tenant, id, size, retainUntil.timeIntervalSince1970, now.timeIntervalSince1970,
                               uploader])
            if let host {
                try db.execute(sql: "INSERT OR IGNORE INTO pack_uploads(tenant, pack_id, host) VALUES (?, ?, ?)",
                               arguments: [tenant, id, host])
                try db.execute(sql: "INSERT OR IGNORE INTO pack_chunk_counts(tenant, pack, chunks) VALUES (?, ?, ?)",
                               arguments: [tenant, id, chunkIDs.count])
            }
            try insert(db, chunkIDs.prefix(step))
        }
        var i = step
        while i < chunkIDs.count {
            let end = min(i + step, chunkIDs.count)
            try db.write { db in try insert(db, chunkIDs[i..<end]) }
            i = end
        }
        checkpointer?.written()
    }

    /// Chunk rows per INSERT. Every chunk of every pack is a row: one statement per row took
    /// 9 to 13 µs of the server's CPU a row, on the core a first backup's client needs;
    /// 128 a statement took 5.3 µs (87 438 rows: a bench run's backups of the kernel tree).
    static let chunkRowsPerStatement = 128
    static let insertChunkRows = insertChunkRowsSQL(chunkRowsPerStatement)

    /// An INSERT of `n` chunk rows whose tenant, scope, pack and verified flag are the
    /// parameters 1 to 4, shared by every row, and whose chunk IDs are parameters 5 onward.
    static func insertChunkRowsSQL(_ n: Int) -> String {
        "INSERT OR IGNORE INTO chunks(tenant, chunk_id, scope, pack_id, verified) VALUES "
            + (0..<n).map { "(?1, ?\($0 + 5), ?2, ?3, ?4)" }.joined(separator: ", ")
    }

    /// For each of `ids` the tenant holds, a pack that holds it: only among chunks uploaded
    /// by principal `scope` when given (host-scoped dedup), else among all of the tenant's;
    /// with `orVerified`, also among every chunk whose bytes the server checked (tenant scope).
    public func chunkLocations(tenant: String, ids: [ChunkID], scope: String? = nil,
                               orVerified: Bool = false) throws -> [ChunkID: PackID] {
        // Every backup asks this of every cached file's chunks: rows are read in place by
        // column number from a cached statement, and each pack's hex ID is parsed once.
        try db.read { db in
            var out: [ChunkID: PackID] = [:]
            var packs: [Data: PackID] = [:]
            var i = 0
            while i < ids.count {
                let batch = ids[i..<min(i + 500, ids.count)]
                i += batch.count
                let marks = Array(repeating: "?", count: batch.count).joined(separator: ",")
                var args: [any DatabaseValueConvertible] = [tenant]
                args += batch.map { Data($0.bytes) }
                var sql = "SELECT chunk_id, pack_id FROM chunks WHERE tenant = ? AND chunk_id IN (\(marks))"
                if let scope {
                    sql += orVerified ? " AND (scope = ? OR verified = 1)" : " AND scope = ?"
                    args.append(scope)
                }
                let statement = try db.cachedStatement(sql: sql)
                try statement.setArguments(StatementArguments(args))
                let rows = try Row.fetchCursor(statement)
                while let r = try rows.next() {
                    let chunk = try r.withUnsafeData(atIndex: 0) { d in d.flatMap { ChunkID(bytes: [UInt8]($0)) } }
                    let pack = try r.withUnsafeData(atIndex: 1) { d -> PackID? in
                        guard let d else { return nil }
                        if let known = packs[d] { return known }
                        // Copied: `d` points into the row, which the next step reuses.
                        let parsed = PackID(hex: String(decoding: d, as: UTF8.self))
                        packs[Data([UInt8](d))] = parsed
                        return parsed
                    }
                    if let chunk, let pack { out[chunk] = pack }
                }
            }
            return out
        }
    }

    /// Which of `packs` the tenant does not hold.
    public func missingPacks(tenant: String, packs: [PackID]) throws -> [PackID] {
        try db.read { db in
            try packs.filter { p in
                try Int.fetchOne(db, sql: "SELECT 1 FROM packs WHERE tenant = ? AND id = ?", arguments: [tenant,
                    p.description]) == nil
            }
        }
    }

    public func uploadedPacks(tenant: String, uploader: String, packs: [PackID]) throws -> Set<PackID> {
        try db.read { db in
            var out = Set<PackID>()
            var i = 0
            while i < packs.count {
                let batch = packs[i..<min(i + 500, packs.count)]
                i += batch.count
                let marks = Array(repeating: "?", count: batch.count).joined(separator: ",")
                let args: [any DatabaseValueConvertible] = [tenant, uploader] + batch.map(\.description)
                let statement = try db.cachedStatement(
                    sql: "SELECT id FROM packs WHERE tenant = ? AND uploader = ? AND id IN (\(marks))")
                for id in try String.fetchAll(statement, arguments: StatementArguments(args)) {
                    if let p = PackID(hex: id) { out.insert(p) }
                }
            }
            return out
        }
    }

    /// Moves pack locks later (never earlier); returns the packs whose lock moved, with
    /// their new retain-until, so the store's locks can follow. With `requireAll` (a
    /// commit) a pack the catalog does not hold (collected meanwhile) is ``CatalogError/Code/packsMissing``
    /// and nothing moves; once this has run, garbage collection cannot take these packs.
    public func extendPackLocks(tenant: String, packs: [PackID], until: Date,
        requireAll: Bool = false) throws -> [(PackID, Date)] {
        try db.write { db in
            var moved: [(PackID, Date)] = []
            var missing: [PackID] = []
            for p in packs {
                guard let cur = try Double.fetchOne(db,
                    sql: "SELECT retain_until FROM packs WHERE tenant = ? AND id = ?", arguments: [tenant,
                    p.description]) else {
                    missing.append(p)
                    continue
                }
                if until.timeIntervalSince1970 > cur {
                    try db.execute(sql: "UPDATE packs SET retain_until = ? WHERE tenant = ? AND id = ?",
                                   arguments: [until.timeIntervalSince1970, tenant, p.description])
                    moved.append((p, until))
                }
            }
            if requireAll, !missing.isEmpty { throw Self.packsMissing(tenant: tenant, missing) }
            return moved
        }
    }

    public func packs(tenant: String) throws -> [(id: String, size: Int, retainUntil: Date)] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT id, size, retain_until FROM packs WHERE tenant = ? ORDER BY id",
                arguments: [tenant]).map {
                (id: $0["id"], size: $0["size"], retainUntil: Date(timeIntervalSince1970: $0["retain_until"]))
            }
        }
    }
}

extension Catalog {
    /// Records a restorer's report that a pack does not open; returns the uploader's
    /// principal ID (nil if unknown). A pack reported twice keeps its first report.
    public func recordDamagedPack(tenant: String, pack: String, reporter: String, problem: String,
        now: Date) throws -> String?? {
        try db.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT uploader FROM packs WHERE tenant = ? AND id = ?",
                arguments: [tenant, pack]) else {
                return nil
            }
            let uploader: String? = row["uploader"]
            try db.execute(sql: """
                INSERT OR IGNORE INTO damaged_packs(tenant, pack, uploader, reported_at, reporter, problem) VALUES (?, \
                ?, ?, ?, ?, ?)
                """, arguments: [tenant, pack, uploader, now.timeIntervalSince1970, reporter, problem])
            return .some(uploader)
        }
    }

    /// Damaged packs reported per uploading principal ID.
    public func damagedPackCounts() throws -> [String: Int] {
        try db.read { db in
            var out: [String: Int] = [:]
            for r in try Row.fetchAll(db,
                sql: "SELECT uploader, COUNT(*) AS n FROM damaged_packs WHERE uploader IS NOT NULL GROUP BY uploader") {
                out[r["uploader"]] = r["n"]
            }
            return out
        }
    }
}

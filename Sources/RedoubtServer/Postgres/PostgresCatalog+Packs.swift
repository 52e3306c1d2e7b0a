import Foundation
import NIOCore
import PostgresNIO
import RedoubtCore
import RedoubtStore

// The PostgreSQL implementations of ``PackRepository`` and ``SnapshotRepository``. Every
// write that checks something first runs SERIALIZABLE (PostgresCatalog.transaction): the
// check and the write commit together or the transaction is run again.

extension PostgresCatalog: PackRepository {
    public func pack(tenant: String, id: String) async throws -> (size: Int, retainUntil: Date)? {
        guard let (size, until) = try await rows("""
            SELECT size, retain_until FROM packs WHERE tenant = \(tenant) AND id = \(id)
            """).first?.decode((Int64, Double).self) else { return nil }
        return (Int(size), Self.date(until))
    }

    public func insertPack(tenant: String, id: String, key: String, size: Int, retainUntil: Date,
                           chunkIDs: [ChunkID], now: Date, uploader: String?, batch: Int,
                           verified: Bool, uploadedBy host: String?) async throws {
        let step = max(1, batch)
        let scope = uploader ?? ""
        func insert(_ conn: PostgresConnection, _ ids: ArraySlice<ChunkID>) async throws {
            guard !ids.isEmpty else { return }
            let column = ids.map { Self.bytes($0.bytes) }
            // One statement per batch; within a scope the first pack recorded for a chunk keeps it.
            try await conn.query("""
                INSERT INTO chunks(tenant, chunk_id, scope, pack_id, verified)
                SELECT \(tenant), c, \(scope), \(id), \(verified) FROM unnest(\(column)::bytea[]) AS c
                ON CONFLICT DO NOTHING
                """, logger: logger)
        }
        try await transaction(.serializable, "insertPack") { conn in
            try await Self.reclaim(conn, key: key, logger)
            try await conn.query("""
                INSERT INTO packs(tenant, id, size, retain_until, created_at, uploader)
                VALUES (\(tenant), \(id), \(Int64(size)), \(retainUntil.timeIntervalSince1970),
                        \(now.timeIntervalSince1970), \(uploader))
                ON CONFLICT DO NOTHING
                """, logger: logger)
            if let host {
                try await conn.query("""
                    INSERT INTO pack_uploads(tenant, pack_id, host) VALUES (\(tenant), \(id), \(host))
                    ON CONFLICT DO NOTHING
                    """, logger: logger)
                try await conn.query("""
                    INSERT INTO pack_chunk_counts(tenant, pack, chunks)
                    VALUES (\(tenant), \(id), \(Int64(chunkIDs.count)))
                    ON CONFLICT DO NOTHING
                    """, logger: logger)
            }
            try await insert(conn, chunkIDs.prefix(step))
        }
        var i = step
        while i < chunkIDs.count {
            let end = min(i + step, chunkIDs.count)
            let slice = chunkIDs[i..<end]
            try await transaction(.readCommitted, "insertPack chunks") { conn in try await insert(conn, slice) }
            i = end
        }
    }

    public func chunkLocations(tenant: String, ids: [ChunkID], scope: String?,
                               orVerified: Bool) async throws -> [ChunkID: PackID] {
        var out: [ChunkID: PackID] = [:]
        var i = 0
        while i < ids.count {
            let batch = ids[i..<min(i + 5000, ids.count)]
            i += batch.count
            let column = batch.map { Self.bytes($0.bytes) }
            let query: PostgresQuery
            if let scope {
                query = """
                    SELECT chunk_id, pack_id FROM chunks
                    WHERE tenant = \(tenant) AND chunk_id = ANY(\(column)::bytea[])
                      AND (scope = \(scope) OR (\(orVerified) AND verified))
                    """
            } else {
                query = """
                    SELECT chunk_id, pack_id FROM chunks WHERE tenant = \(tenant) AND chunk_id = ANY(\(column)::bytea[])
                    """
            }
            for r in try await rows(query) {
                let (c, p) = try r.decode((ByteBuffer, String).self)
                if let c = ChunkID(bytes: Self.array(c)), let p = PackID(hex: p) { out[c] = p }
            }
        }
        return out
    }

    public func missingPacks(tenant: String, packs: [PackID]) async throws -> [PackID] {
        let held = try await heldPacks(tenant: tenant, packs: packs, nil)
        return packs.filter { !held.contains($0.description) }
    }

    public func uploadedPacks(tenant: String, uploader: String, packs: [PackID]) async throws -> Set<PackID> {
        let ids = packs.map(\.description)
        let query: PostgresQuery = """
            SELECT id FROM packs WHERE tenant = \(tenant) AND uploader = \(uploader) AND id = ANY(\(ids)::text[])
            """
        return Set(try await rows(query).compactMap { PackID(hex: try $0.decode(String.self)) })
    }

    /// Which of `packs` the tenant holds (in `conn`'s transaction when given).
    func heldPacks(tenant: String, packs: [PackID], _ conn: PostgresConnection?) async throws -> Set<String> {
        let ids = packs.map(\.description)
        let query: PostgresQuery = "SELECT id FROM packs WHERE tenant = \(tenant) AND id = ANY(\(ids)::text[])"
        let found = if let conn { try await conn.all(query, logger) } else { try await rows(query) }
        return Set(try found.map { try $0.decode(String.self) })
    }

    public func extendPackLocks(tenant: String, packs: [PackID], until: Date,
                                requireAll: Bool) async throws -> [(PackID, Date)] {
        let ids = packs.map(\.description)
        let t = until.timeIntervalSince1970
        let moved = try await transaction(.serializable, "extendPackLocks") { conn -> [String] in
            if requireAll {
                let held = try await heldPacks(tenant: tenant, packs: packs, conn)
                let missing = packs.filter { !held.contains($0.description) }
                if !missing.isEmpty { throw Catalog.packsMissing(tenant: tenant, missing) }
            }
            return try await conn.all("""
                UPDATE packs SET retain_until = \(t)
                WHERE tenant = \(tenant) AND id = ANY(\(ids)::text[]) AND retain_until < \(t) RETURNING id
                """, logger).map { try $0.decode(String.self) }
        }
        let set = Set(moved)
        return packs.filter { set.contains($0.description) }.map { ($0, until) }
    }

    public func packs(tenant: String) async throws -> [(id: String, size: Int, retainUntil: Date)] {
        try await rows("SELECT id, size, retain_until FROM packs WHERE tenant = \(tenant) ORDER BY id").map {
            let (id, size, until) = try $0.decode((String, Int64, Double).self)
            return (id: id, size: Int(size), retainUntil: Self.date(until))
        }
    }

    public func recordDamagedPack(tenant: String, pack: String, reporter: String, problem: String,
                                  now: Date) async throws -> String?? {
        try await transaction(.serializable, "recordDamagedPack") { conn -> String?? in
            guard let row = try await conn.all("""
                SELECT uploader FROM packs WHERE tenant = \(tenant) AND id = \(pack)
                """, logger).first else { return nil }
            let uploader = try row.decode(String?.self)
            try await conn.query("""
                INSERT INTO damaged_packs(tenant, pack, uploader, reported_at, reporter, problem)
                VALUES (\(tenant), \(pack), \(uploader), \(now.timeIntervalSince1970), \(reporter), \(problem))
                ON CONFLICT DO NOTHING
                """, logger: logger)
            return .some(uploader)
        }
    }

    public func damagedPackCounts() async throws -> [String: Int] {
        var out: [String: Int] = [:]
        for r in try await rows("""
            SELECT uploader, COUNT(*) FROM damaged_packs WHERE uploader IS NOT NULL GROUP BY uploader
            """) {
            let (uploader, n) = try r.decode((String, Int64).self)
            out[uploader] = Int(n)
        }
        return out
    }
}

extension PostgresCatalog: SnapshotRepository {
    public func insertSnapshot(_ s: SnapshotRecord, packs: [PackID], requirePacks: Bool,
                               manifestKey: String?) async throws {
        let meta = String(decoding: try JSONEncoder().encode(s), as: UTF8.self)
        let ids = packs.map(\.description)
        try await transaction(.serializable, "insertSnapshot") { conn in
            if let manifestKey { try await Self.reclaim(conn, key: manifestKey, logger) }
            if requirePacks {
                let held = try await heldPacks(tenant: s.tenant, packs: packs, conn)
                let missing = packs.filter { !held.contains($0.description) }
                if !missing.isEmpty { throw Catalog.packsMissing(tenant: s.tenant, missing) }
            }
            try await conn.query("""
                INSERT INTO snapshots(id, tenant, host, time, committed_at, retain_until, meta, manifest_size)
                VALUES (\(s.id), \(s.tenant), \(s.host), \(s.time.timeIntervalSince1970),
                        \(s.committedAt.timeIntervalSince1970), \(s.retainUntil.timeIntervalSince1970), \(meta),
                        \(Int64(s.manifestSize)))
                """, logger: logger)
            try await conn.query("""
                INSERT INTO snapshot_packs(snapshot, pack) SELECT \(s.id), p FROM unnest(\(ids)::text[]) AS p
                ON CONFLICT DO NOTHING
                """, logger: logger)
        }
    }

    static func snapshotRecord(_ meta: String) throws -> SnapshotRecord {
        try JSONDecoder().decode(SnapshotRecord.self, from: Data(meta.utf8))
    }

    public func snapshot(id: String) async throws -> SnapshotRecord? {
        try await rows("SELECT meta FROM snapshots WHERE id = \(id)").first
            .map { try Self.snapshotRecord($0.decode(String.self)) }
    }

    public func snapshots(tenant: String, host: String?) async throws -> [SnapshotRecord] {
        try await rows("""
            SELECT meta FROM snapshots WHERE tenant = \(tenant) AND (\(host)::text IS NULL OR host = \(host))
            ORDER BY committed_at, id
            """).map { try Self.snapshotRecord($0.decode(String.self)) }
    }

    public func hostTimeFloor(tenant: String, host: String,
                              principalID: String) async throws -> (lastClaimed: Date?, enrolled: Date?) {
        let (last, enrolled) = try await transaction(.snapshot, "hostTimeFloor") { conn in
            let last = try await conn.all("""
                SELECT MAX(time) FROM snapshots WHERE tenant = \(tenant) AND host = \(host)
                """, logger).first?.decode(Double?.self)
            let enrolled = try await conn.all("SELECT created_at FROM principals WHERE id = \(principalID)", logger)
                .first?.decode(Double.self)
            return (last ?? nil, enrolled)
        }
        return (last.map(Self.date), enrolled.map(Self.date))
    }

    public func snapshotPacks(id: String) async throws -> [PackID] {
        try await rows("SELECT pack FROM snapshot_packs WHERE snapshot = \(id) ORDER BY pack")
            .compactMap { PackID(hex: try $0.decode(String.self)) }
    }

    public func snapshotPage(tenant: String?, host: String?, after: String?,
                             limit: Int?) async throws -> [SnapshotRecord] {
        try await transaction(.snapshot, "snapshotPage") { conn in
            var cursor: (String, Double, String)?
            if let after {
                guard let (t, committed) = try await conn.all("""
                    SELECT tenant, committed_at FROM snapshots s WHERE id = \(after)
                      AND (\(tenant)::text IS NULL OR tenant = \(tenant)) AND (\(host)::text IS NULL OR host = \(host))
                    """, logger).first?.decode((String, Double).self) else {
                    throw CatalogError(.notFound, object: "snapshot \(after)",
                                       "snapshot \(after) is no longer listed (garbage collection removed it): "
                                       + "list again from the start")
                }
                cursor = (t, committed, after)
            }
            let (ct, cc, cid) = cursor ?? ("", 0, "")
            // Why a row value and both orders in the index: the scan starts at the cursor, so a
            // page costs its own rows however many snapshots come before it.
            return try await conn.all("""
                SELECT meta FROM snapshots s
                WHERE EXISTS (SELECT 1 FROM tenants WHERE name = s.tenant)
                  AND (\(tenant)::text IS NULL OR tenant = \(tenant)) AND (\(host)::text IS NULL OR host = \(host))
                  AND (\(cursor == nil) OR (tenant, committed_at, id) > (\(ct), \(cc), \(cid)))
                ORDER BY tenant, committed_at, id
                LIMIT \(limit.map { Int64(max(0, $0)) })
                """, logger).map { try Self.snapshotRecord($0.decode(String.self)) }
        }
    }
}

import Foundation
import PostgresNIO
import RedoubtCore

// The PostgreSQL implementation of ``ScrubRepository`` (SQLite: SQLiteCatalog+Jobs.swift, "the
// scrub's ledger"; its table is in pg-v4-pgrepos-jobs). Only the job's lease holder scrubs a
// tenant, so the ledger needs no more than single statements.

extension PostgresCatalog: ScrubRepository {
    /// The packs checked longest ago (a pack's upload counts as a check), at least
    /// `ceil(packs × interval / period)` of them, and every one whose last check is so old
    /// that waiting one more interval would pass `period`: SQLite's loop, as one query read
    /// from one snapshot. Ordered by last check, then ID, the overdue packs come first, so the
    /// slice is the rows numbered up to the share or checked no later than the overdue mark.
    public func scrubSlice(tenant: String, now: Date, period: TimeInterval,
                           interval: TimeInterval) async throws -> [(id: String, size: Int64)] {
        try await transaction(.snapshot, "scrubSlice") { conn in
            let total = try await conn.all("SELECT COUNT(*) FROM packs WHERE tenant = \(tenant)", logger).first?
                .decode(Int64.self) ?? 0
            let share = Int64((Double(total) * min(1, interval / max(period, 1))).rounded(.up))
            let overdue = now.timeIntervalSince1970 - max(0, period - interval)
            return try await conn.all("""
                SELECT id, size FROM (
                    SELECT p.id, p.size, COALESCE(s.scrubbed_at, p.created_at) AS checked,
                        row_number() OVER (ORDER BY COALESCE(s.scrubbed_at, p.created_at), p.id) AS n
                    FROM packs p LEFT JOIN pack_scrubs s ON s.tenant = p.tenant AND s.pack = p.id
                    WHERE p.tenant = \(tenant)) o
                WHERE n <= \(share) OR checked <= \(overdue)
                ORDER BY n
                """, logger).map { r in
                let (id, size) = try r.decode((String, Int64).self)
                return (id: id, size: size)
            }
        }
    }

    /// A later scrub of a pack replaces the earlier one.
    public func recordScrub(tenant: String, pack: String, result: String, at: Date) async throws {
        _ = try await rows("""
            INSERT INTO pack_scrubs(tenant, pack, scrubbed_at, outcome)
            VALUES (\(tenant), \(pack), \(at.timeIntervalSince1970), \(result))
            ON CONFLICT (tenant, pack) DO UPDATE SET scrubbed_at = EXCLUDED.scrubbed_at, outcome = EXCLUDED.outcome
            """)
    }
}

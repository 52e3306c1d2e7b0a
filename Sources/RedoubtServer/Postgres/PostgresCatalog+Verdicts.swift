import Foundation
import PostgresNIO
import RedoubtCore

// The PostgreSQL implementation of ``VerdictRepository`` (SQLite: SQLiteCatalog+Verdicts.swift):
// single statements. A verdict is written once per snapshot (`ON CONFLICT DO NOTHING`, as
// SQLite's `INSERT OR IGNORE`), so two servers scoring one commit keep the first verdict.

extension PostgresCatalog {
    /// Migration `pg-v3-pgrepos-verdicts`: SQLite's `v17-snapshot-verdicts` (its index on the
    /// audit log's actor is in pg-v1 already).
    static let verdictSchema = """
        CREATE TABLE snapshot_verdicts (
            snapshot CTEXT PRIMARY KEY, tenant CTEXT NOT NULL, host CTEXT NOT NULL,
            committed_at DOUBLE PRECISION NOT NULL, verdict CTEXT NOT NULL, reasons CTEXT NOT NULL,
            signals CTEXT NOT NULL, audit_seq BIGINT NOT NULL);
        CREATE INDEX snapshot_verdicts_host ON snapshot_verdicts(tenant, host, committed_at);
        CREATE TABLE detection_settings (tenant CTEXT PRIMARY KEY, settings CTEXT NOT NULL);
        CREATE TABLE pack_chunk_counts (
            tenant CTEXT NOT NULL, pack CTEXT NOT NULL, chunks BIGINT NOT NULL, PRIMARY KEY (tenant, pack));
        """
}

extension PostgresCatalog: VerdictRepository {
    public func snapshotPackVolumes(tenant: String, snapshot: String) async throws
        -> (newBytes: Int64, newChunks: Int64, referencedBytes: Int64) {
        // SUM of bigint is numeric in PostgreSQL: cast back so the row decodes as SQLite's integers.
        guard let row = try await rows("""
            SELECT COALESCE(SUM(CASE WHEN n.fresh THEN p.size ELSE 0 END), 0)::bigint,
                   COALESCE(SUM(CASE WHEN n.fresh THEN COALESCE(c.chunks, 0) ELSE 0 END), 0)::bigint,
                   COALESCE(SUM(p.size), 0)::bigint
            FROM (SELECT sp.pack AS pack, NOT EXISTS (SELECT 1 FROM snapshot_packs o
                      WHERE o.pack = sp.pack AND o.snapshot <> sp.snapshot) AS fresh
                  FROM snapshot_packs sp WHERE sp.snapshot = \(snapshot)) n
            JOIN packs p ON p.tenant = \(tenant) AND p.id = n.pack
            LEFT JOIN pack_chunk_counts c ON c.tenant = p.tenant AND c.pack = p.id
            """).first else { return (0, 0, 0) }
        let (nb, nc, rb) = try row.decode((Int64, Int64, Int64).self)
        return (nb, nc, rb)
    }

    /// One snapshot for both counts, as SQLite's single read.
    public func refusals(actor: String, afterSeq: Int64) async throws -> (count: Int64, lastSeq: Int64) {
        guard let row = try await rows("""
            SELECT (SELECT COUNT(*) FROM audit WHERE seq > \(afterSeq) AND actor = \(actor) AND outcome = 'denied'),
                   (SELECT COALESCE(MAX(seq), 0) FROM audit)
            """).first else { return (0, 0) }
        let (n, last) = try row.decode((Int64, Int64).self)
        return (n, last)
    }

    public func insertVerdict(_ v: VerdictRecord) async throws {
        let reasons = String(decoding: try JSONEncoder().encode(v.verdict.reasons), as: UTF8.self)
        let signals = String(decoding: try JSONEncoder().encode(v.signals), as: UTF8.self)
        _ = try await rows("""
            INSERT INTO snapshot_verdicts(snapshot, tenant, host, committed_at, verdict, reasons, signals, audit_seq)
            VALUES (\(v.snapshot), \(v.tenant), \(v.host), \(v.committedAt.timeIntervalSince1970),
                    \(v.verdict.kind.rawValue), \(reasons), \(signals), \(v.auditSeq))
            ON CONFLICT DO NOTHING
            """)
    }

    public func clearVerdict(snapshot: String, reasons: [String]) async throws {
        let text = String(decoding: try JSONEncoder().encode(reasons), as: UTF8.self)
        _ = try await rows("""
            UPDATE snapshot_verdicts SET verdict = 'clean', reasons = \(text) WHERE snapshot = \(snapshot)
            """)
    }

    /// Newest commit first; a negative `limit` means no limit, as SQLite's `LIMIT -1`.
    public func verdicts(tenant: String, host: String, limit: Int) async throws -> [VerdictRecord] {
        let bound: Int64? = limit < 0 ? nil : Int64(limit)
        return try await rows("""
            SELECT \(unescaped: Self.verdictColumns) FROM snapshot_verdicts WHERE tenant = \(tenant) AND host = \(host)
            ORDER BY committed_at DESC, snapshot DESC LIMIT \(bound)
            """).compactMap(Self.verdictRecord)
    }

    public func verdicts(snapshots ids: [String]) async throws -> [String: VerdictRecord] {
        guard !ids.isEmpty else { return [:] }
        var out: [String: VerdictRecord] = [:]
        for r in try await rows("""
            SELECT \(unescaped: Self.verdictColumns) FROM snapshot_verdicts WHERE snapshot = ANY(\(ids)::text[])
            """) {
            if let v = try Self.verdictRecord(r) { out[v.snapshot] = v }
        }
        return out
    }

    static let verdictColumns = "snapshot, tenant, host, committed_at, verdict, reasons, signals, audit_seq"

    /// A row of ``verdictColumns``; nil for a verdict kind this build does not know (as SQLite).
    static func verdictRecord(_ row: PostgresRow) throws -> VerdictRecord? {
        let (snapshot, tenant, host, committed, verdict, reasonsText, signalsText, seq) = try row.decode(
            (String, String, String, Double, String, String, String, Int64).self)
        guard let kind = SnapshotVerdict.Kind(rawValue: verdict) else { return nil }
        let reasons = (try? JSONDecoder().decode([String].self, from: Data(reasonsText.utf8))) ?? []
        let signals = (try? JSONDecoder().decode(VerdictSignals.self, from: Data(signalsText.utf8))) ?? VerdictSignals()
        return VerdictRecord(snapshot: snapshot, tenant: tenant, host: host, committedAt: date(committed),
                             verdict: SnapshotVerdict(kind: kind, reasons: reasons), signals: signals, auditSeq: seq)
    }

    public func detectionSettings(tenant: String) async throws -> Wire.DetectionSettings {
        guard let text = try await rows("SELECT settings FROM detection_settings WHERE tenant = \(tenant)").first?
            .decode(String.self) else { return Wire.DetectionSettings() }
        return (try? JSONDecoder().decode(Wire.DetectionSettings.self, from: Data(text.utf8)))
            ?? Wire.DetectionSettings()
    }

    public func setDetectionSettings(tenant: String, _ s: Wire.DetectionSettings) async throws {
        let text = String(decoding: try JSONEncoder().encode(s), as: UTF8.self)
        _ = try await rows("""
            INSERT INTO detection_settings(tenant, settings) VALUES (\(tenant), \(text))
            ON CONFLICT (tenant) DO UPDATE SET settings = EXCLUDED.settings
            """)
    }
}

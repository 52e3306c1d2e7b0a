import Foundation
import GRDB
import RedoubtCore

// The SQLite side of ransomware verdicts (SnapshotVerdicts.swift, docs/PROTOCOL.md §4.9):
// one verdict per snapshot with the signals it was scored on, each tenant's settings, and
// how many chunks each pack holds (counted when it is uploaded, so a verdict never scans
// the chunk table).

/// One snapshot's verdict as the catalog keeps it.
public struct VerdictRecord: Sendable, Equatable {
    public let snapshot: String
    public let tenant: String
    public let host: String
    public let committedAt: Date
    public let verdict: SnapshotVerdict
    public let signals: VerdictSignals
    /// The audit log's last record when the verdict was made: refusals after it count for the next one.
    public let auditSeq: Int64
}

/// Verdicts, detection settings and pack chunk counts: what another catalog backend implements.
public protocol VerdictRepository: Sendable {
    func snapshotPackVolumes(tenant: String, snapshot: String) async throws
        -> (newBytes: Int64, newChunks: Int64, referencedBytes: Int64)
    func refusals(actor: String, afterSeq: Int64) async throws -> (count: Int64, lastSeq: Int64)
    func insertVerdict(_ v: VerdictRecord) async throws
    func clearVerdict(snapshot: String, reasons: [String]) async throws
    func verdicts(tenant: String, host: String, limit: Int) async throws -> [VerdictRecord]
    func verdicts(snapshots ids: [String]) async throws -> [String: VerdictRecord]
    func detectionSettings(tenant: String) async throws -> Wire.DetectionSettings
    func setDetectionSettings(tenant: String, _ s: Wire.DetectionSettings) async throws
}

extension Catalog: VerdictRepository {}

extension Catalog {
    /// The tables of the `v17-snapshot-verdicts` migration.
    static let verdictSchema = """
        CREATE TABLE snapshot_verdicts (
            snapshot TEXT PRIMARY KEY, tenant TEXT NOT NULL, host TEXT NOT NULL, committed_at REAL NOT NULL,
            verdict TEXT NOT NULL, reasons TEXT NOT NULL, signals TEXT NOT NULL, audit_seq INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX snapshot_verdicts_host ON snapshot_verdicts(tenant, host, committed_at);
        CREATE INDEX audit_actor_seq ON audit(actor, seq);
        CREATE TABLE detection_settings (tenant TEXT PRIMARY KEY, settings TEXT NOT NULL) WITHOUT ROWID;
        CREATE TABLE pack_chunk_counts (
            tenant TEXT NOT NULL, pack TEXT NOT NULL, chunks INTEGER NOT NULL, PRIMARY KEY (tenant, pack)
        ) WITHOUT ROWID;
        """

    /// Bytes and chunks of the snapshot's packs that no other snapshot names, and bytes of all its packs.
    public func snapshotPackVolumes(tenant: String, snapshot: String) throws
        -> (newBytes: Int64, newChunks: Int64, referencedBytes: Int64) {
        try db.read { db in
            let row = try Row.fetchOne(db, sql: """
                SELECT COALESCE(SUM(CASE WHEN n.fresh THEN p.size ELSE 0 END), 0) AS nb,
                       COALESCE(SUM(CASE WHEN n.fresh THEN COALESCE(c.chunks, 0) ELSE 0 END), 0) AS nc,
                       COALESCE(SUM(p.size), 0) AS rb
                FROM (SELECT sp.pack AS pack, NOT EXISTS (SELECT 1 FROM snapshot_packs o
                          WHERE o.pack = sp.pack AND o.snapshot != sp.snapshot) AS fresh
                      FROM snapshot_packs sp WHERE sp.snapshot = ?) n
                JOIN packs p ON p.tenant = ? AND p.id = n.pack
                LEFT JOIN pack_chunk_counts c ON c.tenant = p.tenant AND c.pack = p.id
                """, arguments: [snapshot, tenant])
            return (row?["nb"] ?? 0, row?["nc"] ?? 0, row?["rb"] ?? 0)
        }
    }

    /// Refused (`denied`) requests audited for `actor` after record `afterSeq`, and the log's last record.
    /// (`audit_actor_seq` keeps this to the actor's own records, however busy the log.)
    public func refusals(actor: String, afterSeq: Int64) throws -> (count: Int64, lastSeq: Int64) {
        try db.read { db in
            let n = try Int64.fetchOne(db, sql: """
                SELECT COUNT(*) FROM audit WHERE seq > ? AND actor = ? AND outcome = 'denied'
                """, arguments: [afterSeq, actor]) ?? 0
            let last = try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(seq), 0) FROM audit") ?? 0
            return (n, last)
        }
    }

    public func insertVerdict(_ v: VerdictRecord) throws {
        let reasons = String(decoding: try JSONEncoder().encode(v.verdict.reasons), as: UTF8.self)
        let signals = String(decoding: try JSONEncoder().encode(v.signals), as: UTF8.self)
        try db.write { db in
            try db.execute(sql: """
                INSERT OR IGNORE INTO snapshot_verdicts(snapshot, tenant, host, committed_at, verdict, reasons,
                    signals, audit_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [v.snapshot, v.tenant, v.host, v.committedAt.timeIntervalSince1970,
                                 v.verdict.kind.rawValue, reasons, signals, v.auditSeq])
        }
    }

    /// Marks a snapshot's verdict clean with the given reasons (an admin's approved judgement).
    public func clearVerdict(snapshot: String, reasons: [String]) throws {
        let text = String(decoding: try JSONEncoder().encode(reasons), as: UTF8.self)
        try db.write { db in
            try db.execute(sql: "UPDATE snapshot_verdicts SET verdict = 'clean', reasons = ? WHERE snapshot = ?",
                           arguments: [text, snapshot])
        }
    }

    /// The host's verdicts, newest commit first (at most `limit`).
    public func verdicts(tenant: String, host: String, limit: Int) throws -> [VerdictRecord] {
        try db.read { db in
            try Row.fetchAll(db, sql: """
                SELECT * FROM snapshot_verdicts WHERE tenant = ? AND host = ? ORDER BY committed_at DESC, snapshot DESC
                LIMIT ?
                """, arguments: [tenant, host, limit]).compactMap(Self.verdictRecord)
        }
    }

    /// The verdicts of the given snapshots, by snapshot ID.
    public func verdicts(snapshots ids: [String]) throws -> [String: VerdictRecord] {
        guard !ids.isEmpty else { return [:] }
        return try db.read { db in
            var out: [String: VerdictRecord] = [:]
            for part in stride(from: 0, to: ids.count, by: 500).map({ Array(ids[$0..<min($0 + 500, ids.count)]) }) {
                let marks = Array(repeating: "?", count: part.count).joined(separator: ",")
                for row in try Row.fetchAll(db, sql: "SELECT * FROM snapshot_verdicts WHERE snapshot IN (\(marks))",
                                            arguments: StatementArguments(part)) {
                    if let r = Self.verdictRecord(row) { out[r.snapshot] = r }
                }
            }
            return out
        }
    }

    static func verdictRecord(_ row: Row) -> VerdictRecord? {
        guard let kind = SnapshotVerdict.Kind(rawValue: row["verdict"]) else { return nil }
        let reasonsText: String = row["reasons"], signalsText: String = row["signals"]
        let reasons = (try? JSONDecoder().decode([String].self, from: Data(reasonsText.utf8))) ?? []
        let signals = (try? JSONDecoder().decode(VerdictSignals.self, from: Data(signalsText.utf8))) ?? VerdictSignals()
        return VerdictRecord(snapshot: row["snapshot"], tenant: row["tenant"], host: row["host"],
                             committedAt: Date(timeIntervalSince1970: row["committed_at"]),
                             verdict: SnapshotVerdict(kind: kind, reasons: reasons), signals: signals,
                             auditSeq: row["audit_seq"])
    }

    /// The tenant's detection settings as set (fields not set take the defaults).
    public func detectionSettings(tenant: String) throws -> Wire.DetectionSettings {
        let text = try db.read { db in
            try String.fetchOne(db, sql: "SELECT settings FROM detection_settings WHERE tenant = ?",
                                arguments: [tenant])
        }
        guard let text else { return Wire.DetectionSettings() }
        return (try? JSONDecoder().decode(Wire.DetectionSettings.self, from: Data(text.utf8)))
            ?? Wire.DetectionSettings()
    }

    public func setDetectionSettings(tenant: String, _ s: Wire.DetectionSettings) throws {
        let text = String(decoding: try JSONEncoder().encode(s), as: UTF8.self)
        try db.write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO detection_settings(tenant, settings) VALUES (?, ?)",
                           arguments: [tenant, text])
        }
    }
}

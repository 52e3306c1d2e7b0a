import Foundation
import PostgresNIO
import RedoubtCore

// The PostgreSQL implementations of ``FindingRepository`` and ``ExpectedIntervalRepository``.

extension PostgresCatalog: FindingRepository {
    /// One statement: the upsert's row lock orders two servers recording the same finding, so
    /// it is inserted once and counted by both (`xmax = 0` only on the row just inserted).
    @discardableResult
    public func recordFinding(tenant: String, object: String, code: String, detail: String, source: String,
                              at: Date) async throws -> Bool {
        let t = at.timeIntervalSince1970
        return try await rows("""
            INSERT INTO integrity_findings(tenant, object, code, detail, source, first_seen, last_seen, count)
            VALUES (\(tenant), \(object), \(code), \(detail), \(source), \(t), \(t), 1)
            ON CONFLICT (tenant, object, code) DO UPDATE SET last_seen = EXCLUDED.last_seen,
                count = integrity_findings.count + 1, detail = EXCLUDED.detail, source = EXCLUDED.source
            RETURNING xmax = 0
            """).first?.decode(Bool.self) ?? false
    }

    public func findings(tenant: String?, since: Date?) async throws -> [IntegrityFinding] {
        try await rows("""
            SELECT tenant, object, code, detail, source, first_seen, last_seen, count FROM integrity_findings
            WHERE (\(tenant)::text IS NULL OR tenant = \(tenant))
              AND (\(since?.timeIntervalSince1970)::double precision IS NULL
                   OR last_seen >= \(since?.timeIntervalSince1970))
            ORDER BY id
            """).map { r in
            let (tenant, object, code, detail, source, first, last, count) = try r.decode(
                (String, String, String, String, String, Double, Double, Int64).self)
            return IntegrityFinding(tenant: tenant, object: object, code: code, detail: detail, source: source,
                                    firstSeen: Self.date(first), lastSeen: Self.date(last), count: Int(count))
        }
    }
}

extension PostgresCatalog: ExpectedIntervalRepository {
    public func setExpectedInterval(principalID: String, seconds: TimeInterval?) async throws {
        _ = try await rows("UPDATE principals SET expected_interval = \(seconds) WHERE id = \(principalID)")
    }

    public func expectedIntervals() async throws -> [String: TimeInterval] {
        var out: [String: TimeInterval] = [:]
        for r in try await rows("SELECT id, expected_interval FROM principals WHERE expected_interval IS NOT NULL") {
            let (id, seconds) = try r.decode((String, Double).self)
            out[id] = seconds
        }
        return out
    }
}

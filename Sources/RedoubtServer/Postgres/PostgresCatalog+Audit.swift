import Foundation
import PostgresNIO
import RedoubtCore

// The PostgreSQL implementations of ``SettingsRepository`` and ``AuditRepository``.

extension PostgresCatalog: SettingsRepository {
    public func setting(_ key: String) async throws -> String? {
        try await rows("SELECT value FROM settings WHERE key = \(key)").first?.decode(String.self)
    }

    public func setSetting(_ key: String, _ value: String) async throws {
        _ = try await rows("""
            INSERT INTO settings(key, value) VALUES (\(key), \(value))
            ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value
            """)
    }

    /// One statement: the row lock the upsert takes orders concurrent advances, and
    /// GREATEST never lets the stored time go back.
    public func advanceClock(to t: Date) async throws -> Date {
        let next = try await rows("""
            INSERT INTO clock(id, latest) VALUES (1, \(t.timeIntervalSince1970))
            ON CONFLICT (id) DO UPDATE SET latest = GREATEST(clock.latest, EXCLUDED.latest)
            RETURNING latest
            """).first?.decode(Double.self)
        return Self.date(next ?? t.timeIntervalSince1970)
    }
}

extension PostgresCatalog: AuditRepository {
    /// Appends one record. Why an advisory lock at READ COMMITTED and not SERIALIZABLE: every
    /// append reads the head and writes after it, so under SERIALIZABLE all concurrent appends
    /// but one would fail and retry; the lock queues them instead, and because READ COMMITTED
    /// takes a new snapshot for each statement, the head read after the lock is granted is the
    /// one the previous holder committed. The primary key on `seq` refuses a fork should
    /// anything append without the lock.
    @discardableResult
    public func audit(time: Date, actor: String, role: String, credential: String, source: String, action: String,
                      object: String, outcome: String, detail: String) async throws -> Catalog.AuditRecord {
        let (actor, role, credential, source) = (SafeText.auditField(actor), SafeText.auditField(role),
                                                 SafeText.auditField(credential), SafeText.auditField(source))
        let (action, object, outcome, detail) = (SafeText.auditField(action), SafeText.auditField(object),
                                                 SafeText.auditField(outcome), SafeText.auditField(detail))
        let t = time.timeIntervalSince1970
        return try await transaction(.readCommitted, "audit") { conn in
            try await conn.query("""
                SELECT pg_advisory_xact_lock(\(LockSpace.audit.rawValue), hashtext(current_schema()))
                """, logger: logger)
            let last = try await conn.query("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", logger: logger)
                .collect().first?.decode((Int64, String).self)
            let seq = (last?.0 ?? 0) + 1
            let prev = last?.1 ?? Catalog.auditGenesis
            let h = Catalog.AuditRecord.computeHash(seq: seq, time: t, actor: actor, role: role,
                                                    credential: credential, source: source, action: action,
                                                    object: object, outcome: outcome, detail: detail, prevHash: prev)
            try await conn.query("""
                INSERT INTO audit(seq, time, actor, role, credential, source, action, object, outcome, detail,
                                  prev_hash, hash)
                VALUES (\(seq), \(t), \(actor), \(role), \(credential), \(source), \(action), \(object), \(outcome),
                        \(detail), \(prev), \(h))
                """, logger: logger)
            return Catalog.AuditRecord(seq: seq, time: time, actor: actor, role: role, credential: credential,
                                       source: source, action: action, object: object, outcome: outcome,
                                       detail: detail, prevHash: prev, hash: h)
        }
    }

    static let auditColumns = "seq, time, actor, role, credential, source, action, object, outcome, detail, "
        + "prev_hash, hash"

    static func auditRecord(_ r: PostgresRow) throws -> Catalog.AuditRecord {
        let (seq, time, actor, role, credential, source, action, object, outcome, detail, prev, hash) =
            try r.decode((Int64, Double, String, String, String, String, String, String, String, String, String,
                          String).self)
        return Catalog.AuditRecord(seq: seq, time: date(time), actor: actor, role: role, credential: credential,
                                   source: source, action: action, object: object, outcome: outcome, detail: detail,
                                   prevHash: prev, hash: hash)
    }

    public func auditRecords(after seq: Int64, limit: Int) async throws -> [Catalog.AuditRecord] {
        try await rows("""
            SELECT \(unescaped: Self.auditColumns) FROM audit WHERE seq > \(seq) ORDER BY seq
            LIMIT \(Int64(max(0, limit)))
            """).map(Self.auditRecord)
    }

    public func auditChainHead() async throws -> Catalog.AuditChainHead {
        guard let (seq, hash) = try await rows("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").first?
            .decode((Int64, String).self) else {
            return Catalog.AuditChainHead(seq: 0, hash: Catalog.auditGenesis)
        }
        return Catalog.AuditChainHead(seq: seq, hash: hash)
    }

    public func copyEvents() async throws -> [Catalog.AuditRecord] {
        try await rows("""
            SELECT \(unescaped: Self.auditColumns) FROM audit
            WHERE action IN ('copy-proof', 'copy-sync', 'media-write') ORDER BY seq
            """).map(Self.auditRecord)
    }
}

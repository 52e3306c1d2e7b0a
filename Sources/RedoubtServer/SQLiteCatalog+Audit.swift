import Crypto
import Foundation
import GRDB
import RedoubtCore
import RedoubtStore

// The SQLite implementation of ``AuditRepository``, and the audit record's hash.

extension Catalog {
    /// One audit record (docs/PROTOCOL.md §5).
    public struct AuditRecord: Sendable, Codable, Equatable {
        public let seq: Int64
        public let time: Date
        public let actor: String
        public let role: String
        public let credential: String
        public let source: String
        public let action: String
        public let object: String
        public let outcome: String
        public let detail: String
        public let prevHash: String
        public let hash: String

        /// The hash of this record: SHA-256 over the previous hash and every field.
        static func computeHash(seq: Int64, time: Double, actor: String, role: String, credential: String,
            source: String,
                                action: String, object: String, outcome: String, detail: String,
                                    prevHash: String) -> String {
            var w = ByteWriter()
            w.raw(Array("redoubt/v1/audit".utf8))
            w.string(prevHash)
            w.u64(UInt64(bitPattern: seq))
            w.u64(time.bitPattern)
            for f in [actor, role, credential, source, action, object, outcome, detail] { w.string(f) }
            return hexString(SHA256.hash(data: w.bytes))
        }
    }

    public static let auditGenesis = String(repeating: "0", count: 64)

    /// Appends a record chained to the previous one. Every field is first made safe
    /// (`SafeText.auditField`: control, bidi and other invisible characters escaped, length
    /// bounded), and that one value is both hashed and stored: SQLite's TEXT would cut a
    /// raw NUL, and a terminal would act on a raw escape sequence.
    @discardableResult
    public func audit(time: Date, actor: String, role: String, credential: String, source: String, action: String,
                      object: String, outcome: String, detail: String = "") throws -> AuditRecord {
        let (actor, role, credential, source) = (SafeText.auditField(actor), SafeText.auditField(role),
                                                 SafeText.auditField(credential), SafeText.auditField(source))
        let (action, object, outcome, detail) = (SafeText.auditField(action), SafeText.auditField(object),
                                                 SafeText.auditField(outcome), SafeText.auditField(detail))
        return try db.write { db in
            let last = try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            let seq: Int64 = (last?["seq"] as Int64? ?? 0) + 1
            let prev: String = last?["hash"] ?? Self.auditGenesis
            let t = time.timeIntervalSince1970
            let h = AuditRecord.computeHash(seq: seq, time: t, actor: actor, role: role, credential: credential,
                source: source,
                                            action: action, object: object, outcome: outcome, detail: detail,
                                                prevHash: prev)
            try db.execute(sql: """
                INSERT INTO audit(seq, time, actor, role, credential, source, action, object, outcome, detail, \
                prev_hash, hash)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [seq, t, actor, role, credential, source, action, object, outcome, detail, prev, h])
            return AuditRecord(seq: seq, time: time, actor: actor, role: role, credential: credential, source: source,
                action: action,
                               object: object, outcome: outcome, detail: detail, prevHash: prev, hash: h)
        }
    }

    public func auditRecords(after seq: Int64 = 0, limit: Int = 10_000) throws -> [AuditRecord] {
        try db.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM audit WHERE seq > ? ORDER BY seq LIMIT ?", arguments: [seq,
                limit]).map { r in
                AuditRecord(seq: r["seq"], time: Date(timeIntervalSince1970: r["time"]), actor: r["actor"],
                    role: r["role"], credential: r["credential"],
                            source: r["source"], action: r["action"], object: r["object"], outcome: r["outcome"],
                                detail: r["detail"],
                            prevHash: r["prev_hash"], hash: r["hash"])
            }
        }
    }

    /// The newest record's sequence number and hash: the value other places (an S3 copy,
    /// a media set) store so that a later rewrite or truncation of this log is provable.
    public struct AuditChainHead: Sendable, Codable, Equatable {
        /// Sequence number of the newest record (0 for an empty log).
        public let seq: Int64
        /// Hash of the newest record (`auditGenesis` for an empty log).
        public let hash: String
        public init(seq: Int64, hash: String) { self.seq = seq; self.hash = hash }
    }

    /// The current chain head, to be anchored somewhere the server cannot rewrite.
    public func auditChainHead() throws -> AuditChainHead {
        try db.read { db in
            guard let r = try Row.fetchOne(db, sql: "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1") else {
                return AuditChainHead(seq: 0, hash: Self.auditGenesis)
            }
            return AuditChainHead(seq: r["seq"], hash: r["hash"])
        }
    }
}

extension Catalog {
    /// Audit records of copy proofs, bucket copies and media exports, oldest first.
    public func copyEvents() throws -> [AuditRecord] {
        try db.read { db in
            try Row.fetchAll(db,
                sql: "SELECT * FROM audit WHERE action IN ('copy-proof', 'copy-sync', 'media-write') ORDER BY seq")
                .map { r in
                AuditRecord(seq: r["seq"], time: Date(timeIntervalSince1970: r["time"]), actor: r["actor"],
                    role: r["role"], credential: r["credential"],
                            source: r["source"], action: r["action"], object: r["object"], outcome: r["outcome"],
                                detail: r["detail"],
                            prevHash: r["prev_hash"], hash: r["hash"])
            }
        }
    }
}

// Verification needs nothing but the paged records, so every backend gets it as it is.
extension AuditRepository {
    /// Checks the chain against an anchored head: the chain must verify and must still contain
    /// record `anchor.seq` with exactly `anchor.hash`. A log cut back to before the anchor
    /// (truncation, which the chain alone cannot show) reports `anchor.seq` as the first bad record.
    public func verifyAudit(anchor: Catalog.AuditChainHead) async throws -> (firstBad: Int64?, count: Int) {
        let plain = try await verifyAudit()
        if let bad = plain.firstBad, bad <= anchor.seq { return plain }
        if anchor.seq == 0 { return plain }
        // Why: a consistent but shorter (or re-written) chain passes the plain check; only the anchor shows it.
        let at = try await auditRecords(after: anchor.seq - 1, limit: 1).first
        if at?.seq != anchor.seq || at?.hash != anchor.hash { return (anchor.seq, plain.count) }
        return plain
    }

    /// Checks the whole chain; returns the sequence number of the first bad record, or nil.
    public func verifyAudit() async throws -> (firstBad: Int64?, count: Int) {
        var prev = Catalog.auditGenesis
        var expectedSeq: Int64 = 1
        var count = 0
        var after: Int64 = 0
        while true {
            let batch = try await auditRecords(after: after, limit: 5000)
            if batch.isEmpty { break }
            for r in batch {
                let h = Catalog.AuditRecord.computeHash(seq: r.seq, time: r.time.timeIntervalSince1970, actor: r.actor,
                    role: r.role, credential: r.credential,
                                                source: r.source, action: r.action, object: r.object,
                                                    outcome: r.outcome, detail: r.detail, prevHash: prev)
                if r.seq != expectedSeq || r.prevHash != prev || r.hash != h { return (r.seq, count) }
                prev = r.hash
                expectedSeq += 1
                count += 1
            }
            guard let last = batch.last else { break }
            after = last.seq
        }
        return (nil, count)
    }
}

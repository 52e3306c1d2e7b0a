import Crypto
import Foundation
import GRDB
import RedoubtCore

// The SQLite implementation of ``ApprovalRepository``.

extension Catalog {
    public func insertRequest(id: String, action: String, object: String, parameters: [String: String],
        requester: Principal,
                       now: Date, expiresAt: Date, needed: Int) throws {
        let params = String(decoding: try JSONEncoder.sorted.encode(parameters), as: UTF8.self)
        try db.write { db in
            try db.execute(sql: """
                INSERT INTO requests(id, action, object, parameters, requester_id, requester, created_at, expires_at, \
                needed)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [id, action, object, params, requester.id, requester.name, now.timeIntervalSince1970,
                                 expiresAt.timeIntervalSince1970, needed])
        }
    }

    /// The request with its approvals, its state computed at `now`.
    public func request(_ id: String, now: Date) throws -> ApprovalRequest? {
        try db.read { db in try Self.request(db, id, now: now) }
    }

    public func requests(now: Date) throws -> [ApprovalRequest] {
        try db.read { db in
            try String.fetchAll(db, sql: "SELECT id FROM requests ORDER BY created_at").compactMap {
                try Self.request(db, $0, now: now)
            }
        }
    }

    static func request(_ db: Database, _ id: String, now: Date) throws -> ApprovalRequest? {
        guard let r = try Row.fetchOne(db, sql: "SELECT * FROM requests WHERE id = ?", arguments: [id]) else {
            return nil
        }
        // Why only current admins: an admin removed (say, as compromised) must not keep
        // approving, nor keep a request of theirs alive.
        let approvers = try String.fetchAll(db, sql: """
            SELECT a.approver FROM approvals a JOIN principals p ON p.id = a.approver_id
            WHERE a.request_id = ? AND p.role = 'admin' AND p.revoked = 0 ORDER BY a.time
            """, arguments: [id])
        let requesterID: String = r["requester_id"]
        let requesterActive = try Int.fetchOne(db,
            sql: "SELECT COUNT(*) FROM principals WHERE id = ? AND role = 'admin' AND revoked = 0",
                                               arguments: [requesterID]) ?? 0 > 0
        let params = (try? JSONDecoder().decode([String: String].self, from: Data((r["parameters"] as String).utf8)))
            ?? [:]
        // A quorum raised since the request was made applies to it too.
        let needed = max(r["needed"] as Int, try effectiveQuorum(db) - 1)
        let rejectedBy: String? = r["rejected_by"]
        let expiresAt = Date(timeIntervalSince1970: r["expires_at"])
        let live = expiresAt > now && requesterActive
        let state: ApprovalRequest.State =
            (r["executed_at"] as Double?) != nil ? .executed
            : rejectedBy != nil ? .rejected
            : !live ? .expired
            : approvers.count >= needed ? .approved : .pending
        return ApprovalRequest(id: id, action: r["action"], object: r["object"], parameters: params,
            requester: r["requester"],
                               requesterID: requesterID, createdAt: Date(timeIntervalSince1970: r["created_at"]),
                                   expiresAt: expiresAt,
                               needed: needed, approvers: approvers, rejectedBy: rejectedBy, state: state)
    }

    /// Records one admin's decision. Refuses the requester, a second decision by the same
    /// admin, and any request that is no longer pending.
    public func decide(_ id: String, by admin: Principal, approve: Bool, now: Date) throws -> ApprovalRequest {
        try db.write { db in
            guard let req = try Self.request(db, id, now: now),
                  let requesterID = try String.fetchOne(db, sql: "SELECT requester_id FROM requests WHERE id = ?",
                      arguments: [id]) else {
                throw CatalogError(.notFound, object: "request \(id)",
                    "request \(id) does not exist: `redoubt admin request list`")
            }
            guard req.state == .pending else {
                throw CatalogError(.conflict, object: "request \(id)",
                    "request \(id) is \(req.state.rawValue); only a pending request can be decided")
            }
            guard requesterID != admin.id else {
                throw CatalogError(.forbidden, object: "request \(id)",
                    "request \(id) was made by you: the requester's own approval does not count; another admin must "
                        + "decide")
            }
            if approve {
                let done = try Int.fetchOne(db,
                    sql: "SELECT COUNT(*) FROM approvals WHERE request_id = ? AND approver_id = ?", arguments: [id,
                    admin.id]) ?? 0
                guard done == 0 else {
                    throw CatalogError(.conflict, object: "request \(id)",
                        "you already approved request \(id); it needs approvals from other admins")
                }
                try db.execute(sql: """
                    INSERT INTO approvals(request_id, approver_id, approver, time) VALUES (?, ?, ?, ?)
                    """,
                               arguments: [id, admin.id, admin.name, now.timeIntervalSince1970])
            } else {
                try db.execute(sql: "UPDATE requests SET rejected_by = ? WHERE id = ?", arguments: [admin.name, id])
            }
            guard let after = try Self.request(db, id, now: now) else {
                throw CatalogError(.notFound, object: "request \(id)", "request \(id) vanished")
            }
            return after
        }
    }

    /// Marks an approved request used, once: false if it was used (or is not approved).
    public func consumeRequest(_ id: String, now: Date) throws -> Bool {
        try db.write { db in
            guard try Self.request(db, id, now: now)?.state == .approved else { return false }
            try db.execute(sql: "UPDATE requests SET executed_at = ? WHERE id = ?",
                arguments: [now.timeIntervalSince1970, id])
            return true
        }
    }

    /// The quorum set at `server init --quorum` or by `admin quorum set`; 2 when unset.
    public func configuredQuorum() throws -> Int { try db.read { try Self.configuredQuorum($0) } }

    /// The number of admins (requester included) a weakening change needs: the configured
    /// quorum, but never more than the admins there are — a lone admin acts alone until a
    /// second one is enrolled.
    public func effectiveQuorum() throws -> Int { try db.read { try Self.effectiveQuorum($0) } }

    /// Admins that can act (not revoked).
    public func adminCount() throws -> Int { try db.read { try Self.adminCount($0) } }

    static func configuredQuorum(_ db: Database) throws -> Int {
        try setting(db, "quorum").flatMap { Int($0) } ?? 2
    }

    static func effectiveQuorum(_ db: Database) throws -> Int {
        max(1, min(try configuredQuorum(db), try adminCount(db)))
    }

    static func adminCount(_ db: Database) throws -> Int {
        try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM principals WHERE role = 'admin' AND revoked = 0") ?? 0
    }
}

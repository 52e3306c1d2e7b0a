import Foundation

// Integrity findings: what the server's own checks (the rolling scrub, the lock probe of
// copy buckets) found wrong with stored objects, kept in the catalog for an alerting
// component to read. A finding is also logged and audited when it is first seen; seen
// again, only its count and last time move, so a damaged pack that stays damaged does not
// flood the log.

/// One problem a server job found with a stored object.
public struct IntegrityFinding: Sendable, Equatable, Codable {
    public var tenant: String
    /// What holds the problem: `pack <id>`, `manifest <id>`, or a copy target's URL.
    public var object: String
    /// A stable code: `E_INTEGRITY` (bytes do not hash to their ID, or do not parse),
    /// `E_NOT_FOUND` (the catalog names an object the store lacks), `E_LOCK_UNENFORCED`
    /// (a copy bucket deleted a locked canary).
    public var code: String
    public var detail: String
    /// The job that found it (`scrub`, `lock-probe`).
    public var source: String
    public var firstSeen: Date
    public var lastSeen: Date
    /// How many runs found it.
    public var count: Int

    public init(tenant: String, object: String, code: String, detail: String, source: String, firstSeen: Date,
                lastSeen: Date, count: Int = 1) {
        self.tenant = tenant
        self.object = object
        self.code = code
        self.detail = detail
        self.source = source
        self.firstSeen = firstSeen
        self.lastSeen = lastSeen
        self.count = count
    }
}

/// Where integrity findings are kept (SQLite: SQLiteCatalog+Jobs.swift).
public protocol FindingRepository: Sendable {
    /// Records a finding seen at `at`: a new one (by tenant, object and code) is inserted;
    /// one already recorded keeps its first time and gains a count, its detail replaced.
    /// Returns true when it was new. One transaction.
    @discardableResult
    func recordFinding(tenant: String, object: String, code: String, detail: String, source: String,
                       at: Date) async throws -> Bool
    /// Findings of one tenant or all, seen at or after `since` (nil: all), oldest first.
    func findings(tenant: String?, since: Date?) async throws -> [IntegrityFinding]
}

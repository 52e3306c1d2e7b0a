import Foundation
import RedoubtCore

/// How far the time a host writes into a manifest may stray from the server's clock. The
/// host's time is recorded and shown, never trusted: retention, ordering and "latest" use
/// the server's commit time. The bounds only keep a taken host from filing snapshots that
/// would read as years ahead or centuries back to everyone who lists them.
public struct SnapshotTimeBounds: Sendable, Equatable {
    /// How far ahead of the server's clock a snapshot's time may be.
    public var maxAhead: TimeInterval
    /// How far before the host's newest snapshot, or before its enrollment, it may be.
    public var margin: TimeInterval

    public init(maxAhead: TimeInterval = 86400, margin: TimeInterval = 86400) {
        self.maxAhead = maxAhead
        self.margin = margin
    }

    /// Why `time` is refused for a host whose newest snapshot claims `lastClaimed` and
    /// whose credential was enrolled at `enrolled`, at server time `now`; nil if it is not.
    public func problem(time: Date, now: Date, lastClaimed: Date?, enrolled: Date?) -> String? {
        let latest = now.addingTimeInterval(maxAhead)
        if !(time <= latest) {
            return "its time \(WireDate.string(time)) is more than \(Int(maxAhead))s ahead of the server's clock \(WireDate.string(now))"
        }
        // A backup cannot have begun before its host was enrolled, nor before the host's
        // previous backup; the margin absorbs a clock set back by a little.
        let floors = [lastClaimed.map { ("the host's newest snapshot", $0) }, enrolled.map { ("the host's enrollment", $0) }]
        for case let (what, t)? in floors where !(time >= t.addingTimeInterval(-margin)) {
            return "its time \(WireDate.string(time)) is more than \(Int(margin))s before \(what) (\(WireDate.string(t)))"
        }
        return nil
    }
}

extension RepositoryService {
    /// Refuses a manifest whose claimed time is outside ``SnapshotTimeBounds``.
    func checkSnapshotTime(_ header: ManifestHeader, host: Principal, tenant: String, now: Date, ctx: CallContext) throws {
        let time = Date(timeIntervalSince1970: Double(header.time.seconds) + Double(header.time.nanoseconds) / 1e9)
        let floor = try catalog.hostTimeFloor(tenant: tenant, host: host.name, principalID: host.id)
        guard let why = timeBounds.problem(time: time, now: now, lastClaimed: floor.lastClaimed, enrolled: floor.enrolled) else { return }
        throw refuse(ctx, .commitSnapshot, object: "snapshot of host \(tenant)/\(host.name)", ServerError(422, "E_CLOCK",
            "commit refused: \(why). Set the host's clock (NTP, `timedatectl`) and back up again; the server orders and keeps "
            + "snapshots by its own commit time"))
    }
}

/// One page of `GET /v1/snapshots`: at most `limit` snapshots after the one named `after`,
/// in listing order. The answer is bounded by the page, never by how many snapshots a
/// tenant (or a host flooding it with decoys) has; clients ask for the next page with
/// the last ID they got until a page comes back short.
public struct SnapshotPage: Sendable {
    /// Most snapshots one answer holds, and the default.
    public static let maxLimit = 5000
    public let after: String?
    public let limit: Int

    public init(after: String?, limit: String?) throws {
        if let after, SnapshotID(hex: after) == nil {
            throw ServerError.badRequest("after must be a snapshot ID (64 lowercase hex digits), the last of the previous page")
        }
        let n = try limit.map { text -> Int in
            guard let n = Int(text), (1...Self.maxLimit).contains(n) else {
                throw ServerError.badRequest("limit must be a whole number from 1 to \(Self.maxLimit)")
            }
            return n
        } ?? Self.maxLimit
        self.after = after
        self.limit = n
    }

    /// The page of `all` this asks for.
    public func slice(_ all: [Wire.SnapshotInfo]) throws -> [Wire.SnapshotInfo] {
        var start = 0
        if let after {
            guard let i = all.firstIndex(where: { $0.id == after }) else {
                throw ServerError.notFound("snapshot \(after) is no longer listed (garbage collection removed it): list again from the start")
            }
            start = i + 1
        }
        return Array(all[start..<min(all.count, start + limit)])
    }
}

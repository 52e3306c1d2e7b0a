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
            return """
                its time \(WireDate.string(time)) is more than \(Int(maxAhead))s ahead of the server's clock \
                \(WireDate.string(now))
                """
        }
        // A backup cannot have begun before its host was enrolled, nor before the host's
        // previous backup; the margin absorbs a clock set back by a little.
        let floors = [lastClaimed.map { ("the host's newest snapshot", $0) }, enrolled.map {
            ("the host's enrollment", $0)
        }]
        for case let (what, t)? in floors where !(time >= t.addingTimeInterval(-margin)) {
            return """
                its time \(WireDate.string(time)) is more than \(Int(margin))s before \(what) (\(WireDate.string(t)))
                """
        }
        return nil
    }
}

extension RepositoryService {
    /// Refuses a manifest whose claimed time is outside ``SnapshotTimeBounds``.
    func checkSnapshotTime(_ header: ManifestHeader, host: Principal, tenant: String, now: Date,
        ctx: CallContext) async throws {
        let time = header.time.date
        let floor = try await catalog.hostTimeFloor(tenant: tenant, host: host.name, principalID: host.id)
        guard let why = timeBounds.problem(time: time, now: now, lastClaimed: floor.lastClaimed,
            enrolled: floor.enrolled) else {
            return
        }
        throw await refuse(ctx, .commitSnapshot, object: "snapshot of host \(tenant)/\(host.name)", ServerError(422,
            "E_CLOCK",
            "commit refused: \(why). Set the host's clock (NTP, `timedatectl`) and back up again; the server orders "
                + "and keeps "
            + "snapshots by its own commit time"))
    }
}

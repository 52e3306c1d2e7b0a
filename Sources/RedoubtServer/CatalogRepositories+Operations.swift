import Foundation
import RedoubtCore

/// The scrub's ledger, kept beside the job runs (JobRepository).
public protocol ScrubRepository: Sendable {
    /// The packs of `tenant` to re-read now so that each is read at least once per `period`.
    func scrubSlice(tenant: String, now: Date, period: TimeInterval,
                    interval: TimeInterval) throws -> [(id: String, size: Int64)]
    func recordScrub(tenant: String, pack: String, result: String, at: Date) throws
}

/// The interval each host says it backs up at (`--expected-interval`, with its commits).
public protocol ExpectedIntervalRepository: Sendable {
    /// Read back through ``MonitoringRepository/monitoringFacts(now:)``, where an admin's
    /// expectation replaces it.
    func setExpectedInterval(principalID: String, seconds: TimeInterval?) throws
}

/// What monitoring and notifications read and keep: the facts behind metrics and
/// `admin status`, admins' expectations of hosts, notification channels and open alerts
/// (deduplicated here so a restart neither repeats nor forgets one).
public protocol MonitoringRepository: Sendable {
    func monitoringFacts(now: Date) throws -> MonitoringFacts
    func setHostExpectation(tenant: String, host: String, interval: TimeInterval?) throws
    func insertNotifyChannel(id: String, _ req: Wire.AddNotifyChannelRequest, target: String, now: Date) throws
    func notifyChannels() throws -> [Catalog.NotifyChannel]
    func removeNotifyChannel(_ id: String) throws -> Bool
    /// The event to send if this opens the alert; nil if it was already open.
    func openAlert(key: String, kind: String, tenant: String, host: String, summary: String, command: String,
                   lasting: Bool, now: Date) throws -> Wire.NotifyEvent?
    /// The "resolved" event to send if the alert was open; nil otherwise.
    func resolveAlert(key: String, now: Date) throws -> Wire.NotifyEvent?
    func openAlerts() throws -> [(key: String, event: Wire.NotifyEvent)]
    func failedJobRecords(after seq: Int64) throws -> [(seq: Int64, action: String, object: String, outcome: String)]
}

extension Catalog: ScrubRepository, ExpectedIntervalRepository, MonitoringRepository {}

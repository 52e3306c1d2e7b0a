import Foundation
import RedoubtCore

/// The scrub's ledger, kept beside the job runs (JobRepository).
public protocol ScrubRepository: Sendable {
    /// The packs of `tenant` to re-read now so that each is read at least once per `period`.
    func scrubSlice(tenant: String, now: Date, period: TimeInterval,
                    interval: TimeInterval) async throws -> [(id: String, size: Int64)]
    func recordScrub(tenant: String, pack: String, result: String, at: Date) async throws
}

/// The interval each host says it backs up at (`--expected-interval`, with its commits).
public protocol ExpectedIntervalRepository: Sendable {
    /// Judged through ``MonitoringRepository/monitoringFacts(now:)``, where an admin's
    /// expectation replaces it.
    func setExpectedInterval(principalID: String, seconds: TimeInterval?) async throws
    /// Principal ID → the interval it sent with its last commit, as stored.
    func expectedIntervals() async throws -> [String: TimeInterval]
}

/// What monitoring and notifications read and keep: the facts behind metrics and
/// `admin status`, admins' expectations of hosts, notification channels and open alerts
/// (deduplicated here so a restart neither repeats nor forgets one).
public protocol MonitoringRepository: Sendable {
    func monitoringFacts(now: Date) async throws -> MonitoringFacts
    func setHostExpectation(tenant: String, host: String, interval: TimeInterval?) async throws
    func insertNotifyChannel(id: String, _ req: Wire.AddNotifyChannelRequest, target: String, now: Date) async throws
    func notifyChannels() async throws -> [Catalog.NotifyChannel]
    func removeNotifyChannel(_ id: String) async throws -> Bool
    /// The event to send if this opens the alert; nil if it was already open.
    func openAlert(key: String, kind: String, tenant: String, host: String, summary: String, command: String,
                   lasting: Bool, now: Date) async throws -> Wire.NotifyEvent?
    /// The "resolved" event to send if the alert was open; nil otherwise.
    func resolveAlert(key: String, now: Date) async throws -> Wire.NotifyEvent?
    func openAlerts() async throws -> [(key: String, event: Wire.NotifyEvent)]
    func failedJobRecords(after seq: Int64) async throws
        -> [(seq: Int64, action: String, object: String, outcome: String)]
}

extension Catalog: ScrubRepository, ExpectedIntervalRepository, MonitoringRepository {}

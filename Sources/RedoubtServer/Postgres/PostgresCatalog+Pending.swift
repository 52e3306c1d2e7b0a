import Foundation
import RedoubtCore

// Repositories the PostgreSQL catalog does not implement yet. Each method refuses with an
// error that names it, never an empty answer: a server on this catalog must not mistake
// "not written yet" for "nothing there". `server init` does not offer this catalog while any
// method here is left.

extension PostgresCatalog: ScrubRepository {
    public func scrubSlice(tenant: String, now: Date, period: TimeInterval,
            interval: TimeInterval) async throws -> [(id: String, size: Int64)] {
        throw PostgresCatalogError.notImplemented("ScrubRepository.scrubSlice")
    }
    public func recordScrub(tenant: String, pack: String, result: String, at: Date) async throws {
        throw PostgresCatalogError.notImplemented("ScrubRepository.recordScrub")
    }
}

extension PostgresCatalog: MonitoringRepository {
    public func monitoringFacts(now: Date) async throws -> MonitoringFacts {
        throw PostgresCatalogError.notImplemented("MonitoringRepository.monitoringFacts")
    }
    public func setHostExpectation(tenant: String, host: String, interval: TimeInterval?) async throws {
        throw PostgresCatalogError.notImplemented("MonitoringRepository.setHostExpectation")
    }
    public func insertNotifyChannel(id: String, _ req: Wire.AddNotifyChannelRequest, target: String,
            now: Date) async throws {
        throw PostgresCatalogError.notImplemented("MonitoringRepository.insertNotifyChannel")
    }
    public func notifyChannels() async throws -> [Catalog.NotifyChannel] {
        throw PostgresCatalogError.notImplemented("MonitoringRepository.notifyChannels")
    }
    public func removeNotifyChannel(_ id: String) async throws -> Bool {
        throw PostgresCatalogError.notImplemented("MonitoringRepository.removeNotifyChannel")
    }
    public func openAlert(key: String, kind: String, tenant: String, host: String, summary: String, command: String,
            lasting: Bool, now: Date) async throws -> Wire.NotifyEvent? {
        throw PostgresCatalogError.notImplemented("MonitoringRepository.openAlert")
    }
    public func resolveAlert(key: String, now: Date) async throws -> Wire.NotifyEvent? {
        throw PostgresCatalogError.notImplemented("MonitoringRepository.resolveAlert")
    }
    public func openAlerts() async throws -> [(key: String, event: Wire.NotifyEvent)] {
        throw PostgresCatalogError.notImplemented("MonitoringRepository.openAlerts")
    }
    public func failedJobRecords(after seq: Int64) async throws -> [(seq: Int64, action: String, object: String,
            outcome: String)] {
        throw PostgresCatalogError.notImplemented("MonitoringRepository.failedJobRecords")
    }
}

import Foundation
import NIOHTTP1
import RedoubtCore

// Notifications (admin) and the status screen (admin or auditor): docs/PROTOCOL.md §5.3.
extension APIClient {
    public func addNotifyChannel(_ req: Wire.AddNotifyChannelRequest) async throws -> Wire.NotifyChannelInfo {
        try await json(Wire.NotifyChannelInfo.self, .POST, "/v1/notify/channels", body: req)
    }

    public func notifyChannels() async throws -> [Wire.NotifyChannelInfo] {
        try await json([Wire.NotifyChannelInfo].self, .GET, "/v1/notify/channels")
    }

    public func removeNotifyChannel(id: String) async throws -> [Wire.NotifyChannelInfo] {
        try await json([Wire.NotifyChannelInfo].self, .POST, "/v1/notify/channels/\(id)/remove")
    }

    public func testNotifyChannel(id: String) async throws -> Wire.NotifyEvent {
        try await json(Wire.NotifyEvent.self, .POST, "/v1/notify/channels/\(id)/test")
    }

    public func setHostExpectation(_ req: Wire.HostExpectationRequest) async throws -> Wire.HostExpectationRequest {
        try await json(Wire.HostExpectationRequest.self, .PUT, "/v1/notify/expectations", body: req)
    }

    public func status() async throws -> Wire.StatusInfo { try await json(Wire.StatusInfo.self, .GET, "/v1/status") }
}

import Foundation
import NIOHTTP1
import RedoubtCore

// Legal holds (admin): place, list, release (the release needs approval).
extension APIClient {
    public func placeHold(_ req: Wire.PlaceHoldRequest) async throws -> Wire.HoldInfo {
        try await json(Wire.HoldInfo.self, .POST, "/v1/holds", body: req)
    }

    public func holds() async throws -> [Wire.HoldInfo] { try await json([Wire.HoldInfo].self, .GET, "/v1/holds") }

    public func releaseHold(id: String, requestID: String?) async throws -> Wire.HoldInfo {
        try await json(Wire.HoldInfo.self, .POST, "/v1/holds/\(id)/release",
            body: Wire.ApprovedChange(requestID: requestID))
    }
}

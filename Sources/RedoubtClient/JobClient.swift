import Foundation
import NIOHTTP1
import RedoubtCore

// The server's own jobs (docs/PROTOCOL.md §4.8), admin only; and the backup target that
// tells the server how often this host commits.
extension APIClient {
    public func schedule() async throws -> Wire.ScheduleInfo {
        try await json(Wire.ScheduleInfo.self, .GET, "/v1/schedule")
    }

    public func setSchedule(_ req: Wire.SetScheduleRequest) async throws -> Wire.ScheduleInfo {
        try await json(Wire.ScheduleInfo.self, .PUT, "/v1/schedule", body: req)
    }

    public func jobs() async throws -> [Wire.JobInfo] {
        try await json([Wire.JobInfo].self, .GET, "/v1/jobs")
    }

    /// Commits a snapshot as ``commit(manifestBytes:)`` does, also sending how often this
    /// host expects to commit (`Redoubt-Expected-Interval`, whole seconds).
    public func commit(manifestBytes: [UInt8], expectedInterval: TimeInterval?) async throws -> Wire.SnapshotInfo {
        var headers = Self.hostOS.map { [(Wire.hostOSHeader, $0)] } ?? []
        if let expectedInterval { headers.append((Wire.expectedIntervalHeader, String(Int(expectedInterval)))) }
        let (_, data) = try await send(.POST, "/v1/snapshots", body: manifestBytes, headers: headers)
        return try WireDate.decoder().decode(Wire.SnapshotInfo.self, from: Data(data))
    }
}

/// The server as a backup target, sending the host's expected interval with the commit.
public struct ServerBackupTarget: PackLocatingBackupTarget, SpooledPackTarget {
    public let client: APIClient
    public let expectedInterval: TimeInterval?

    public init(client: APIClient, expectedInterval: TimeInterval?) {
        self.client = client
        self.expectedInterval = expectedInterval
    }

    public func existingChunkLocations(_ ids: [ChunkID]) async throws -> [ChunkID: PackID] {
        try await client.existingChunkLocations(ids)
    }
    public func uploadedPacks(_ packs: [PackID]) async throws -> Set<PackID> { try await client.uploadedPacks(packs) }
    public func existingChunks(_ ids: [ChunkID]) async throws -> Set<ChunkID> { try await client.existingChunks(ids) }
    public func upload(pack: FinishedPack) async throws { try await client.upload(pack: pack) }
    public func upload(spooled pack: SpooledPack) async throws { try await client.upload(spooled: pack) }
    public func commit(manifest: Manifest) async throws {
        _ = try await client.commit(manifestBytes: manifest.bytes, expectedInterval: expectedInterval)
    }
}

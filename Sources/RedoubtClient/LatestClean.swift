import Foundation
import RedoubtCore

/// The `latest-clean` snapshot name (docs/PROTOCOL.md §4.9): resolved by the client from a
/// listing, so it means the same on every server that returns verdicts.
public enum LatestClean {
    /// The name a restore accepts in place of a snapshot ID.
    public static let name = "latest-clean"

    /// The newest snapshot whose verdict is not `suspect`, of `host` if given, from a listing
    /// of one tenant in the server's order (commit time at the catalog's full precision;
    /// `committedAt` on the wire is in whole seconds, so it cannot order two commits of one
    /// second). Snapshots with no verdict count as not suspect: they were committed before
    /// detection existed.
    public static func pick(_ list: [Wire.SnapshotInfo], host: String?) -> Wire.SnapshotInfo? {
        list.last { ($0.verdict ?? "") != "suspect" && (host == nil || $0.host == host) }
    }

    /// ``pick(_:host:)`` over the server's listing; throws naming the fix when nothing qualifies.
    public static func resolve(host: String?, from client: APIClient) async throws -> Wire.SnapshotInfo {
        let list = try await client.snapshots(host: host)
        guard let s = pick(list, host: host) else {
            throw ArchiveError(.invalidArgument, object: "snapshot \(name)",
                list.isEmpty ? "no snapshots\(host.map { " of host \($0)" } ?? ""): `redoubt snapshots` lists them"
                    : "every snapshot\(host.map { " of host \($0)" } ?? "") is suspect: choose one by ID "
                        + "(`redoubt snapshots` shows verdicts and reasons)")
        }
        return s
    }
}

// Ransomware-detection settings (admin).
extension APIClient {
    /// Marks a suspect snapshot clean (needs the admins' quorum: `E_APPROVAL_REQUIRED` files the request).
    public func clearVerdict(snapshot: String, reason: String, requestID: String?) async throws -> Wire.VerdictInfo {
        try await json(Wire.VerdictInfo.self, .POST, "/v1/snapshots/\(snapshot)/verdict",
                       body: Wire.ClearVerdictRequest(reason: reason, requestID: requestID))
    }

    public func setDetection(tenant: String, _ req: Wire.DetectionSettings) async throws -> Wire.DetectionSettings {
        try await json(Wire.DetectionSettings.self, .PUT, "/v1/tenants/\(tenant)/detection", body: req)
    }
}

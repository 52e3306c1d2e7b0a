import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore

/// A snapshot as a user names it on the command line: its ID, a unique prefix of it (8+
/// hex digits), or an alias the server's list resolves.
enum SnapshotRef {
    /// The newest snapshot (of `--host` if given) by the server's commit time, as restic's `latest`.
    static let latest = "latest"

    /// The help text for a SNAPSHOT argument that takes aliases.
    static let help = """
        Snapshot ID, a unique prefix (8+ hex digits), latest, or latest-clean (the newest not judged suspect); \
        with --host H: that host's.
        """

    /// The snapshot ID or prefix `name` stands for on the server. `latest` is the snapshot
    /// the server committed last (its clock decides, never a host's), among `host`'s if
    /// given; anything else is passed on as it is. `--host` goes only with an alias.
    static func resolve(_ name: String, host: String?, client: APIClient) async throws -> String {
        if name == LatestClean.name {
            let info = try await LatestClean.resolve(host: host, from: client)
            let why = info.verdict.map { " (verdict \($0))" } ?? " (no verdict)"
            FileHandle.standardError.write(Data("latest-clean is snapshot \(info.id) of \(info.host)\(why)\n".utf8))
            return info.id
        }
        guard name == latest else {
            if let host {
                throw ValidationError("--host \(host) goes with `latest`; \(name) names one snapshot already")
            }
            return name
        }
        let list = try await client.snapshots(host: host)
        // The server lists in commit order; the last of the newest commit time wins a tie.
        guard let newest = list.map(\.committedAt).max(), let pick = list.last(where: { $0.committedAt == newest })
        else {
            throw ArchiveError(.notFound, object: host.map { "host \($0)" } ?? "this tenant",
                               "has no snapshot yet, so `latest` names none; `redoubt snapshots` lists them")
        }
        return pick.id
    }
}

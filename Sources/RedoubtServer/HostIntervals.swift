import Foundation
import RedoubtCore

// A host's expected backup interval (docs/PROTOCOL.md §4.8): the host sends it with each
// commit (`Redoubt-Expected-Interval`, from `redoubt backup --expected-interval`), the
// server keeps the latest per host, and `host list` shows whether the host's newest
// snapshot, by the server's commit time and clock, is within it. The value is the host's
// claim and authorises nothing: a taken host can only make itself look late or on time,
// and the commit times it is judged by are the server's own. An admin's expectation
// (`admin notify expect`) replaces the claim everywhere a host is judged.

/// Whether a host backs up as often as it said it would.
public enum BackupStatus: String, Sendable {
    /// The newest snapshot is no older than the expected interval.
    case ok
    /// Older: the host missed a backup (or stopped).
    case late
    /// No expected interval was sent, or there is no snapshot.
    case unknown
}

extension RepositoryService {
    /// `late` once more than `expected` has passed since `last` on the server's clock.
    public static func backupStatus(last: Date?, expected: TimeInterval?, now: Date) -> BackupStatus {
        guard let last, let expected else { return .unknown }
        return now.timeIntervalSince(last) > expected ? .late : .ok
    }

    /// Keeps the interval a writer sent with a commit. A value that is not whole seconds in
    /// ``Wire/expectedIntervalRange`` is dropped and logged, never an error: the commit is
    /// what matters, and the value is only the host's claim. An old client sends none and
    /// the stored one stays.
    func recordExpectedInterval(_ p: Principal, _ header: String?) async {
        guard let header else { return }
        guard let seconds = Int(header.trimmingCharacters(in: .whitespaces)).map(TimeInterval.init),
              Wire.expectedIntervalRange.contains(seconds) else {
            logger.warning("dropped a malformed expected interval", metadata: [
                "host": "\(p.tenant ?? "-")/\(p.name)", "value": "\(SafeText.echo(header, maxBytes: 40))"])
            return
        }
        do { try await catalog.setExpectedInterval(principalID: p.id, seconds: seconds) } catch {
            logger.warning("could not record the host's expected interval",
                           metadata: ["host": "\(p.name)", "error": "\(error)"])
        }
    }
}

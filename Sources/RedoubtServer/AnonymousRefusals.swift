import Foundation
import Synchronization

/// Refusals of callers without a valid credential, by the certificate they presented (a
/// revoked one) or else by source address: the first in a window is audited on its own,
/// the rest are only counted and written as one record when the window ends, so that
/// anonymous traffic cannot grow the audit chain by a record per request.
final class AnonymousRefusals: Sendable {
    private struct Window {
        var start: Date
        var source: String
        var certificate: String?
        var counted = 0
    }
    private let windows = Mutex<[String: Window]>([:])
    let window: TimeInterval
    /// Sources tracked at once; beyond it, new sources share one window ("other sources").
    static let maxSources = 4096

    init(window: TimeInterval) { self.window = window }

    /// The address without its port: a new connection does not start a new window.
    static func address(_ source: String) -> String {
        if source.hasPrefix("["), let end = source.firstIndex(of: "]") {
            return String(source[source.index(after: source.startIndex)..<end])
        }
        guard let colon = source.lastIndex(of: ":"), source.firstIndex(of: ":") == colon else { return source }
        return String(source[..<colon])
    }

    /// Whether this refusal is the first of its window (audit it); otherwise it is counted.
    func first(_ ctx: CallContext, now: Date) -> Bool {
        let address = Self.address(ctx.source)
        var key = ctx.certificate.map { "certificate " + $0 } ?? address
        return windows.withLock { w in
            if w[key] == nil && w.count >= Self.maxSources { key = "other sources" }
            if var open = w[key], now.timeIntervalSince(open.start) < window {
                open.counted += 1
                w[key] = open
                return false
            }
            w[key] = Window(start: now, source: key == "other sources" ? key : address, certificate: ctx.certificate)
            return true
        }
    }

    /// Windows that have ended with refusals counted but not yet audited; they are forgotten.
    func ended(now: Date) -> [(source: String, certificate: String?, count: Int, start: Date)] {
        windows.withLock { w in
            var out: [(String, String?, Int, Date)] = []
            for (k, v) in w where now.timeIntervalSince(v.start) >= window {
                if v.counted > 0 { out.append((v.source, v.certificate, v.counted, v.start)) }
                w[k] = nil
            }
            return out.sorted { ($0.3, $0.0) < ($1.3, $1.0) }
        }
    }

    /// Appended to the first record of a window.
    static func note(_ limits: ServerLimits) -> String {
        """
             (more refusals from this source or certificate within \(Int(limits.anonymousAuditWindowSeconds)) s are \
            counted in one record)
            """
    }
}

extension RepositoryService {
    /// Writes one record for each ended window of counted anonymous refusals. Runs on every
    /// anonymous refusal and before the audit log is read, so no count is left unwritten
    /// when someone looks.
    func recordAnonymousRefusals() async {
        let now = clock.now()
        for e in anonymousRefusals.ended(now: now) {
            let seconds = Int(now.timeIntervalSince(e.start).rounded())
            let who = e.certificate.map { "certificate \($0.prefix(16))" } ?? "source \(e.source)"
            await audit(CallContext(principal: nil, source: e.source, certificate: e.certificate), .refusedAnonymous,
                object: who, outcome: "denied",
                  detail: """
                      \(e.count) more requests without a valid credential refused from \(who) in the \(seconds) s \
                      after 
                      """
                  + "\(ISO8601DateFormatter().string(from: e.start))")
        }
    }
}

extension ServerLimits {
    /// `s` cut to the audit field limit on a character boundary, saying how much was cut.
    func boundedAuditField(_ s: String) -> String {
        guard s.utf8.count > maxAuditFieldBytes else { return s }
        var out = ""
        var used = 0
        for ch in s {
            let n = ch.utf8.count
            if used + n > maxAuditFieldBytes { break }
            out.append(ch)
            used += n
        }
        return out + "…[\(s.utf8.count) bytes, cut]"
    }
}

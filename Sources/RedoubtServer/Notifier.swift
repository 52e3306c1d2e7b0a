import AsyncHTTPClient
import Crypto
import Foundation
import Logging
import NIOCore
import NIOSSL
import RedoubtCore
import Synchronization

/// Something that happened which a person should hear about (docs/PROTOCOL.md §5.3).
public struct MonitorEvent: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case hostStale = "host-stale", integrityFailure = "integrity-failure", copyLagging = "copy-lagging"
        case lockProofFailed = "lock-proof-failed", refusalBurst = "refusal-burst"
        case approvalRequested = "approval-requested", holdPlaced = "hold-placed", holdLifted = "hold-lifted"
        case jobFailed = "job-failed", suspectSnapshot = "suspect-snapshot", test
    }

    public var kind: Kind
    public var tenant: String
    /// The host, principal, copy target or request it is about ("-" if none).
    public var host: String
    public var summary: String
    /// The command that shows more.
    public var command: String
    /// One message per key while the condition lasts; the same key again is the same event.
    public var key: String
    /// A condition that lasts until resolved (`resolve(key:)`), or a one-off sent once per key.
    public var lasting: Bool

    public init(_ kind: Kind, tenant: String, host: String, summary: String, command: String, key: String? = nil,
                lasting: Bool = true) {
        self.kind = kind
        self.tenant = tenant
        self.host = host
        self.summary = summary
        self.command = command
        self.key = key ?? "\(kind.rawValue):\(tenant)/\(host)"
        self.lasting = lasting
    }
}

/// Where components report events: the server's ``Notifier``, or anything a test or a
/// future component supplies. Posting is cheap and never blocks on delivery.
public protocol EventSink: Sendable {
    /// Records `event`; the channels whose rules take it get one message while it lasts.
    func post(_ event: MonitorEvent) async
    /// Ends the condition `key` names; its channels get one "resolved" message.
    func resolve(key: String) async
}

/// Decides which events to send (deduplicated in the catalog, so a restart neither repeats
/// nor forgets an open condition) and delivers them to the channels whose rules take them:
/// webhooks (JSON, HMAC-SHA256 signed, retried with backoff). Delivery runs in ``run()``.
public final class Notifier: EventSink, Sendable {
    let catalog: any CatalogRepositories
    let clock: @Sendable () -> Date
    let logger: Logger
    private let queue: AsyncStream<Wire.NotifyEvent>.Continuation
    private let stream: AsyncStream<Wire.NotifyEvent>
    /// Refusals per credential inside the burst window.
    private let refusals = Mutex<[String: [Date]]>([:])
    /// A burst: `count` refusals of one credential within `window` seconds (default 5 in 300;
    /// `server run --refusal-burst N/DURATION`).
    private let burst: Mutex<(count: Int, window: TimeInterval)>
    public var burstCount: Int { burst.withLock { $0.count } }
    public var burstWindow: TimeInterval { burst.withLock { $0.window } }
    /// A host with no expected interval is stale after this long without a commit.
    public static let defaultStaleAfter: TimeInterval = 26 * 3600
    /// Delays before each retry of a failed delivery.
    let retryDelays: [Double]

    public init(catalog: any CatalogRepositories, clock: @escaping @Sendable () -> Date, logger: Logger,
                burstCount: Int = 5,
                burstWindow: TimeInterval = 300, retryDelays: [Double] = [1, 4, 16]) {
        self.catalog = catalog
        self.clock = clock
        self.logger = logger
        self.burst = Mutex((burstCount, burstWindow))
        self.retryDelays = retryDelays
        (stream, queue) = AsyncStream<Wire.NotifyEvent>.makeStream()
    }

    public func post(_ event: MonitorEvent) async {
        do {
            if let e = try await catalog.openAlert(key: event.key, kind: event.kind.rawValue, tenant: event.tenant,
                                             host: event.host, summary: event.summary, command: event.command,
                                             lasting: event.lasting, now: clock()) {
                queue.yield(e)
            }
        } catch {
            logger.error("notification not recorded", metadata: ["key": "\(event.key)", "error": "\(error)"])
        }
    }

    public func resolve(key: String) async {
        do {
            if let e = try await catalog.resolveAlert(key: key, now: clock()) { queue.yield(e) }
        } catch {
            logger.error("notification not resolved", metadata: ["key": "\(key)", "error": "\(error)"])
        }
    }

    /// Sends `event` to one channel now, outside dedup (`notify test`). Throws what failed.
    public func send(_ event: Wire.NotifyEvent, to channel: Catalog.NotifyChannel) async throws {
        try await deliver(event, to: channel, attempts: 1)
    }

    /// Delivers queued events until the task is cancelled.
    public func run() async {
        for await event in stream {
            guard !Task.isCancelled else { return }
            let channels = (try? await catalog.notifyChannels()) ?? []
            for c in channels where Self.takes(c.info, event) {
                do { try await deliver(event, to: c, attempts: 1 + retryDelays.count) } catch {
                    logger.error("notification not delivered", metadata: ["channel": "\(c.info.id)",
                                                                           "event": "\(event.kind)",
                                                                           "error": "\(error)"])
                }
            }
        }
    }

    /// Whether a channel's rules take an event: its kinds (all if none) and its tenant.
    static func takes(_ c: Wire.NotifyChannelInfo, _ e: Wire.NotifyEvent) -> Bool {
        (c.events.isEmpty || c.events.contains(e.kind) || e.kind == "test") && (c.tenant == nil || c.tenant == e.tenant)
    }

    // MARK: refusal bursts

    /// Sets the burst threshold: `count` (2…10 000) refusals within `window` (10 s … 1 day).
    public func setRefusalBurst(count: Int, window: TimeInterval) throws {
        guard (2...10_000).contains(count), (10...86400).contains(window) else {
            throw ServerError.badRequest("""
                --refusal-burst \(count)/\(Int(window))s is out of range: 2 to 10000 refusals within 10 s to 1 day \
                (default 5/5m)
                """)
        }
        burst.withLock { $0 = (count, window) }
    }

    /// Counts a refusal of a credential; a burst opens a `refusal-burst` event naming it.
    func refused(tenant: String?, role: String, principal: String, action: String) async {
        let now = clock()
        let (burstCount, burstWindow) = burst.withLock { $0 }
        let who = "\(role) \(tenant ?? "-")/\(principal)"
        let n = refusals.withLock { r -> Int in
            var times = (r[who] ?? []).filter { now.timeIntervalSince($0) < burstWindow }
            times.append(now)
            r[who] = times
            return times.count
        }
        guard n >= burstCount else { return }
        await post(MonitorEvent(.refusalBurst, tenant: tenant ?? "-", host: principal,
                          summary: """
                              \(n) requests refused within \(Int(burstWindow)) s from \(who) (last: \(action)); \
                              a credential asking for what its role may not do may be in an intruder's hands
                              """,
                          command: "redoubt audit list --json", key: "refusal-burst:\(who)"))
    }

    /// Bursts whose window has passed without another refusal end.
    func resolveQuietBursts(now: Date) async {
        let burstWindow = self.burstWindow
        let quiet = refusals.withLock { r -> [String] in
            let q = r.filter { $0.value.allSatisfy { now.timeIntervalSince($0) >= burstWindow } }.map(\.key)
            for k in q { r[k] = nil }
            return q
        }
        for who in quiet { await resolve(key: "refusal-burst:\(who)") }
    }

    // MARK: delivery

    private func deliver(_ event: Wire.NotifyEvent, to c: Catalog.NotifyChannel, attempts: Int) async throws {
        switch c.info.kind {
        case "webhook": try await postWebhook(event, c.config, attempts: attempts)
        case "email": try await mail(event, c.config, attempts: attempts)
        default: throw ServerError.badRequest("notification channel \(c.info.id): unknown kind \(c.info.kind)")
        }
    }

    /// The webhook body: the event as JSON, sorted keys, ISO 8601 dates.
    static func body(_ e: Wire.NotifyEvent) throws -> [UInt8] {
        let enc = WireDate.encoder()
        enc.outputFormatting = [.sortedKeys]
        return Array(try enc.encode(e))
    }

    /// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`: the signature header.
    public static func signature(body: [UInt8], secret: [UInt8]) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: secret))
        return "sha256=" + mac.map { String(format: "%02x", $0) }.joined()
    }

    /// The secret in a file: its bytes, without one trailing newline.
    static func secret(_ path: String) throws -> [UInt8] {
        guard var bytes = FileManager.default.contents(atPath: path).map(Array.init) else {
            throw ServerError.badRequest("webhook secret file \(path) cannot be read by the server's user")
        }
        if bytes.last == 0x0a { bytes.removeLast() }
        if bytes.last == 0x0d { bytes.removeLast() }
        return bytes
    }

    private func postWebhook(_ e: Wire.NotifyEvent, _ c: Wire.AddNotifyChannelRequest, attempts: Int) async throws {
        let url = try NotifyChannels.webhookURL(c.url ?? "")
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        if let ca = c.caFile { tls.trustRoots = .file(ca) }
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(tlsConfiguration: tls))
        defer { _ = client.shutdown() }
        let body = try Self.body(e)
        var req = HTTPClientRequest(url: url)
        req.method = .POST
        req.headers.add(name: "content-type", value: "application/json")
        req.headers.add(name: "x-redoubt-event", value: e.kind)
        req.headers.add(name: "x-redoubt-delivery", value: e.id)
        if let f = c.secretFile {
            req.headers.add(name: "x-redoubt-signature", value: Self.signature(body: body, secret: try Self.secret(f)))
        }
        req.body = .bytes(ByteBuffer(bytes: body))
        var lastError: any Error = ServerError(502, "E_NOTIFY", "webhook \(url): no attempt made")
        for attempt in 0..<max(1, attempts) {
            if attempt > 0 {
                try await Task.sleep(nanoseconds: UInt64(retryDelays[min(attempt - 1, retryDelays.count - 1)] * 1e9))
            }
            do {
                let r = try await client.execute(req, timeout: .seconds(30))
                _ = try? await r.body.collect(upTo: 64 << 10)
                if (200..<300).contains(r.status.code) { return }
                lastError = ServerError(502, "E_NOTIFY", "webhook \(url) answered \(r.status.code)")
                // A refusal other than throttling will not change on retry.
                if (400..<500).contains(r.status.code) && ![408, 429].contains(r.status.code) { break }
            } catch { lastError = ServerError(502, "E_NOTIFY", "webhook \(url): \(error)") }
        }
        throw lastError
    }
}

extension Notifier {
    /// The mail for an event: the subject names kind, state, tenant and host; the body the
    /// summary and the command that shows more.
    static func mailMessage(_ e: Wire.NotifyEvent, from: String, to: [String]) -> SMTPClient.Message {
        let state = e.state == "resolved" ? "RESOLVED" : e.state == "open" ? "OPEN" : "EVENT"
        let body = """
            \(e.summary)

            Event:    \(e.kind) (\(e.state))
            Tenant:   \(e.tenant)
            Host:     \(e.host)
            Since:    \(WireDate.string(e.openedAt))
            \(e.resolvedAt.map { "Resolved: \(WireDate.string($0))\n" } ?? "")Show more: \(e.command)
            """
        return SMTPClient.Message(from: from, to: to, subject: "[Redoubt] \(state) \(e.kind) \(e.tenant)/\(e.host)",
                                  body: body)
    }

    /// User and password from a credentials file: the first line is the user, the second the password.
    static func smtpCredentials(_ path: String) throws -> (user: String, password: String) {
        guard let text = FileManager.default.contents(atPath: path).map({ String(decoding: $0, as: UTF8.self) }) else {
            throw ServerError.badRequest("SMTP credentials file \(path) cannot be read by the server's user")
        }
        let lines = text.split(whereSeparator: \.isNewline).map(String.init)
        guard lines.count >= 2 else {
            throw ServerError.badRequest("SMTP credentials file \(path): the user on line 1, the password on line 2")
        }
        return (lines[0], lines[1])
    }

    func mail(_ e: Wire.NotifyEvent, _ c: Wire.AddNotifyChannelRequest, attempts: Int) async throws {
        let (host, port) = try SMTPClient.address(c.smtp ?? "")
        let settings = SMTPClient.Settings(host: host, port: port, starttls: c.starttls == true,
                                           credentials: try c.credentialsFile.map(Self.smtpCredentials),
                                           caFile: c.caFile)
        let message = Self.mailMessage(e, from: c.from ?? "", to: c.to ?? [])
        var lastError: any Error = ServerError(502, "E_NOTIFY", "SMTP \(host):\(port): no attempt made")
        for attempt in 0..<max(1, attempts) {
            if attempt > 0 {
                try await Task.sleep(nanoseconds: UInt64(retryDelays[min(attempt - 1, retryDelays.count - 1)] * 1e9))
            }
            do { return try await SMTPClient.send(message, settings) } catch { lastError = error }
        }
        throw lastError
    }
}

/// Checks on what a notification channel names, before it is stored.
public enum NotifyChannels {
    /// A webhook URL: https, or http to a loopback address only (the body names tenants
    /// and hosts); no user or password in it (the catalog would hold them).
    public static func webhookURL(_ s: String) throws -> String {
        guard let u = URLComponents(string: s), let scheme = u.scheme?.lowercased(), let host = u.host,
              !host.isEmpty else {
            throw ServerError.badRequest("webhook URL \(SafeText.echo(s)) is not a URL (https://HOST/PATH)")
        }
        guard u.user == nil && u.password == nil else {
            throw ServerError.badRequest("""
                webhook URL must not carry a user or password: put a shared secret in a file and name it with \
                --secret-file (requests are signed with HMAC-SHA256)
                """)
        }
        guard scheme == "https" || (scheme == "http" && MetricsListener.isLoopback(host)) else {
            throw ServerError.badRequest("""
                webhook URL \(SafeText.echo(s)) must be https (plain http only to a loopback address): \
                notifications name tenants and hosts
                """)
        }
        return s
    }
}

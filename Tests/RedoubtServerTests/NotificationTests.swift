import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer
import Testing

/// A real HTTPS server in the test process that records every request it receives: the
/// webhook receiver. It presents the test server's own TLS certificate (127.0.0.1), so a
/// channel that trusts that server's CA file reaches it over verified TLS.
final class WebhookReceiver: @unchecked Sendable {
    struct Received: Sendable {
        let path: String
        let headers: [String: String]
        let body: [UInt8]
    }

    let channel: any Channel
    let port: Int
    private let inbox: Inbox

    /// Requests received and not yet taken by `next()`, in arrival order.
    final class Inbox: @unchecked Sendable {
        private let lock = NSLock()
        private var items: [Received] = []
        func put(_ r: Received) { lock.withLock { items.append(r) } }
        func take() -> Received? { lock.withLock { items.isEmpty ? nil : items.removeFirst() } }
    }

    static func start(home: ServerHome) async throws -> WebhookReceiver {
        let files = try home.tlsMaterial()
        let tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: [.certificate(try NIOSSLCertificate(bytes: Array(files.serverCertPEM.utf8),
                                                                  format: .pem))],
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(files.serverKeyPEM.utf8), format: .pem)))
        let context = try NIOSSLContext(configuration: tls)
        let inbox = Inbox()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try ch.pipeline.syncOperations.configureHTTPServerPipeline()
                    try ch.pipeline.syncOperations.addHandler(Recorder(inbox))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return WebhookReceiver(channel: channel, port: channel.localAddress?.port ?? 0, inbox: inbox)
    }

    private init(channel: any Channel, port: Int, inbox: Inbox) {
        self.channel = channel
        self.port = port
        self.inbox = inbox
    }

    var url: String { "https://127.0.0.1:\(port)/hook" }

    /// The next request, waiting for the server's delivery (bounded: a delivery that never
    /// comes fails the test instead of hanging it).
    func next() async -> Received? {
        for _ in 0..<1200 {
            if let r = inbox.take() { return r }
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
        Issue.record("no webhook request within 60 s")
        return nil
    }

    func stop() async { try? await channel.close() }

    final class Recorder: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let inbox: Inbox
        var head: HTTPRequestHead?
        var body: [UInt8] = []
        init(_ inbox: Inbox) { self.inbox = inbox }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h): head = h; body = []
            case .body(var b): body += b.readBytes(length: b.readableBytes) ?? []
            case .end:
                var headers: [String: String] = [:]
                for (n, v) in head?.headers ?? [:] { headers[n.lowercased()] = v }
                inbox.put(Received(path: head?.uri ?? "", headers: headers, body: body))
                let h = HTTPResponseHead(version: .http1_1, status: .noContent, headers: ["content-length": "0"])
                context.write(wrapOutboundOut(.head(h)), promise: nil)
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}

@Suite(.serialized) struct NotificationTests {
    struct Rig {
        let w: MetricsWorld
        let receiver: WebhookReceiver
        let secret: [UInt8]
        let delivery: Task<Void, Never>

        static func start(events: [String]?) async throws -> Rig {
            let w = try await MetricsWorld.start()
            let receiver = try await WebhookReceiver.start(home: w.server.home)
            let secret = Array("a webhook secret \(UUID())".utf8)
            let secretFile = w.server.dir.appendingPathComponent("webhook.secret")
            try Data(secret + [0x0a]).write(to: secretFile)
            _ = try await w.server.admin.addNotifyChannel(Wire.AddNotifyChannelRequest(
                kind: "webhook", url: receiver.url, secretFile: secretFile.path,
                caFile: w.server.home.tlsDir.appendingPathComponent("ca.pem").path, events: events))
            let notifier = w.server.service.notifier
            return Rig(w: w, receiver: receiver, secret: secret, delivery: Task { await notifier.run() })
        }

        /// The next message, its signature checked, decoded.
        func next() async throws -> Wire.NotifyEvent? {
            guard let r = await receiver.next() else { return nil }
            #expect(r.path == "/hook")
            #expect(r.headers["x-redoubt-signature"] == Notifier.signature(body: r.body, secret: secret))
            let mac = HMAC<SHA256>.authenticationCode(for: r.body, using: SymmetricKey(data: secret))
            #expect(r.headers["x-redoubt-signature"] == "sha256=" + mac.map { String(format: "%02x", $0) }.joined())
            let e = try WireDate.decoder().decode(Wire.NotifyEvent.self, from: Data(r.body))
            #expect(r.headers["x-redoubt-event"] == e.kind)
            return e
        }

        /// Posts a one-off marker: everything queued before it has been delivered once it arrives.
        func marker(_ n: Int) async { await w.server.service.notifier.post(MonitorEvent(.jobFailed, tenant: "-",
                host: "marker",
            summary: "marker \(n)", command: "-", key: "marker-\(n)", lasting: false)) }

        func stop() async {
            delivery.cancel()
            await receiver.stop()
            await w.stop()
        }
    }

    @Test func aStaleHostIsOneSignedMessageWhileItLastsAndOneWhenItResolves() async throws {
        let rig = try await Rig.start(events: ["host-stale", "job-failed"])
        let s = rig.w.server
        _ = try await s.admin.setHostExpectation(.init(tenant: "acme", host: "web1", intervalSeconds: 3600))
        try await s.service.evaluateNotifications()
        // By the server's clock, two hours pass without a commit: stale (1.5 × 1 h).
        s.clock.set(s.clock.now().addingTimeInterval(7200))
        for _ in 0..<3 { try await s.service.evaluateNotifications() }
        // Not taken by this channel's rules: never delivered.
        await s.service.notifier.post(MonitorEvent(.approvalRequested, tenant: "-", host: "r", summary: "x",
                command: "-",
                                             key: "approval-requested:r", lasting: false))
        await rig.marker(1)
        let opened = try await rig.next()
        #expect(opened?.kind == "host-stale" && opened?.state == "open")
        #expect(opened?.tenant == "acme" && opened?.host == "web1")
        #expect(opened?.command == "redoubt admin host list acme --stale-after 26h")
        #expect(try await rig.next()?.summary == "marker 1")

        let status = try await s.admin.status()
        #expect(status.staleHosts.map(\.host) == ["web1"])
        #expect(status.openAlerts.map(\.kind) == ["host-stale"])

        // The host backs up again: one "resolved", then nothing more.
        let (packs, manifest) = try makeSnapshot(keys: try rig.w.writerConfig.writeKeySet(),
                                                 files: [("b", [1, 2, 3])])
        for p in packs { _ = try await rig.w.writer.uploadPack(id: p.id, bytes: p.bytes) }
        _ = try await rig.w.writer.commit(manifestBytes: manifest.bytes)
        for _ in 0..<3 { try await s.service.evaluateNotifications() }
        await rig.marker(2)
        let resolved = try await rig.next()
        #expect(resolved?.kind == "host-stale" && resolved?.state == "resolved" && resolved?.host == "web1")
        #expect(try await rig.next()?.summary == "marker 2")
        #expect(try await s.admin.status().openAlerts.isEmpty)
        await rig.stop()
    }

    @Test func aHostCredentialTryingDeletesRaisesOneRefusalBurstNamingTheHost() async throws {
        let rig = try await Rig.start(events: nil)
        let w = rig.w
        for path in ["/v1/snapshots/\(w.snapshot.id)", "/v1/packs/00", "/v1/tenants/acme"] {
            for _ in 0..<4 {
                await refused("E_FORBIDDEN", "DELETE \(path) by the host") {
                    _ = try await w.writer.send(.DELETE, path)
                }
            }
        }
        await rig.marker(1)
        let burst = try await rig.next()
        #expect(burst?.kind == "refusal-burst" && burst?.state == "open")
        #expect(burst?.tenant == "acme" && burst?.host == "web1")
        #expect(burst?.summary.contains("writer acme/web1") == true)
        #expect(burst?.command == "redoubt audit list --json")
        // Twelve refusals, one message.
        #expect(try await rig.next()?.summary == "marker 1")
        // And nothing the host asked for happened: its snapshot is still there, whole.
        let report = try await w.server.admin.verify(w.snapshot.id)
        #expect(report.damaged.isEmpty && report.missing.isEmpty && report.packsChecked > 0)
        await rig.stop()
    }

    @Test func webhooksMustBeHTTPSExceptToLoopbackAndCarryNoPassword() async throws {
        let server = try await TestServer.start(inMemory: true)
        for url in ["http://example.org/hook", "http://192.168.1.10/hook", "https://user:pw@example.org/hook",
                    "ftp://example.org/x", "not a url"] {
            await refused("E_BAD_REQUEST", url) {
                _ = try await server.admin.addNotifyChannel(.init(kind: "webhook", url: url))
            }
        }
        await refused("E_BAD_REQUEST", "an unknown event kind") {
            _ = try await server.admin.addNotifyChannel(.init(kind: "webhook", url: "https://example.org/h",
                                                              events: ["everything"]))
        }
        let ok = try await server.admin.addNotifyChannel(.init(kind: "webhook", url: "http://127.0.0.1:9/hook"))
        #expect(try await server.admin.notifyChannels().map(\.id) == [ok.id])
        _ = try await server.admin.removeNotifyChannel(id: ok.id)
        #expect(try await server.admin.notifyChannels().isEmpty)
        await server.stop()
    }

    @Test func theRefusalBurstThresholdIsABoundedSetting() async throws {
        let w = try await MetricsWorld.start()
        let n = w.server.service.notifier
        #expect(n.burstCount == 5 && n.burstWindow == 300)
        for (count, window) in [(1, 60.0), (20_000, 60), (5, 5), (5, 90_000)] {
            #expect(throws: ServerError.self) { try n.setRefusalBurst(count: count, window: window) }
        }
        try n.setRefusalBurst(count: 2, window: 60)
        _ = try? await w.writer.send(.DELETE, "/v1/packs/00")
        #expect(try await w.server.service.catalog.openAlerts().isEmpty)
        _ = try? await w.writer.send(.DELETE, "/v1/packs/00")
        #expect(try await w.server.service.catalog.openAlerts().map(\.event.kind) == ["refusal-burst"])
        // A window later without another refusal, the burst is over.
        w.server.clock.set(w.server.clock.now().addingTimeInterval(61))
        try await w.server.service.evaluateNotifications()
        #expect(try await w.server.service.catalog.openAlerts().isEmpty)
        await w.stop()
    }
}

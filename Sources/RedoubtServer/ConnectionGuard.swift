import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOSSL
import Synchronization

/// Open connections by source address and by client certificate, shared by every event
/// loop, so that one source or one credential cannot take all of the server's sockets.
final class ConnectionCounter: Sendable {
    private struct State {
        var total = 0
        var bySource: [String: Int] = [:]
        var byCredential: [String: Int] = [:]
        var refused: [String: Int] = [:]
    }
    private let state = Mutex(State())
    let limits: ServerLimits
    private let metrics: ServerMetrics

    init(limits: ServerLimits, metrics: ServerMetrics) {
        self.limits = limits
        self.metrics = metrics
    }

    /// Counts a new connection from `source`, or returns false (and counts nothing open) when
    /// the source or the server is at its cap.
    func open(source: String) -> Bool {
        let refusedBy: String? = state.withLock { s in
            let n = s.bySource[source, default: 0]
            let limit = n >= limits.maxConnectionsPerSource ? "connections-per-source"
                : s.total >= limits.maxConnections ? "connections" : nil
            if let limit {
                s.refused[limit, default: 0] += 1
                return limit
            }
            s.bySource[source] = n + 1
            s.total += 1
            return nil
        }
        if let refusedBy { metrics.refusedConnection(limit: refusedBy) }
        return refusedBy == nil
    }

    func close(source: String) {
        state.withLock { s in
            s.total -= 1
            let n = s.bySource[source, default: 1] - 1
            s.bySource[source] = n > 0 ? n : nil
        }
    }

    func open(credential: String) -> Bool {
        let admitted = state.withLock { s in
            let n = s.byCredential[credential, default: 0]
            guard n < limits.maxConnectionsPerCredential else {
                s.refused["connections-per-credential", default: 0] += 1
                return false
            }
            s.byCredential[credential] = n + 1
            return true
        }
        if !admitted { metrics.refusedConnection(limit: "connections-per-credential") }
        return admitted
    }

    func close(credential: String) {
        state.withLock { s in
            let n = s.byCredential[credential, default: 1] - 1
            s.byCredential[credential] = n > 0 ? n : nil
        }
    }

    /// Open connections now, in all and from `source` (for tests and `doctor`).
    func count(source: String? = nil) -> Int {
        state.withLock { s in source.map { s.bySource[$0, default: 0] } ?? s.total }
    }

    /// Connections refused since start under `limit` (its `server.toml` name).
    func refusals(limit: String) -> Int {
        state.withLock { $0.refused[limit, default: 0] }
    }
}

/// First in every connection's pipeline: counts it against its source's cap and closes
/// it at once, before any TLS work, when the source or the server is at its cap.
final class SourceLimitHandler: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    private let counter: ConnectionCounter
    private let logger: Logger
    private var source: String?
    private var started = false

    init(counter: ConnectionCounter, logger: Logger) {
        self.counter = counter
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    private func start(_ context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        let ip = context.channel.remoteAddress?.ipAddress ?? "?"
        if counter.open(source: ip) {
            source = ip
        } else {
            // Why silent: before TLS nothing can be said to the client that it could trust;
            // a closed socket at accept is the cheapest refusal.
            logger.debug("connection refused: source at its cap", metadata: ["source": "\(ip)"])
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let source { counter.close(source: source) }
        source = nil
        context.fireChannelInactive()
    }
}

/// Right after the TLS handler: closes a connection whose handshake does not finish in
/// time (a socket that never sends a ClientHello, or sends it a byte at a time), and
/// counts a finished handshake's client certificate against its own cap.
final class HandshakeGuardHandler: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    private let counter: ConnectionCounter
    private var timer: Scheduled<Void>?
    private var credential: String?
    private var started = false
    private var refused = false
    private var handshakeDone = false

    init(counter: ConnectionCounter) { self.counter = counter }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    private func start(_ context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        let ms = Int64(counter.limits.handshakeTimeoutSeconds * 1000)
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(ms)) { [context] in
            context.close(promise: nil)
        }
    }

    // Application data reaches this handler only once the handshake is done: the first
    // read ends the handshake deadline and names the credential, if one was presented.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if refused { return }
        if !handshakeDone {
            handshakeDone = true
            timer?.cancel()
            timer = nil
            if let cert = try? context.pipeline.syncOperations.nioSSL_peerCertificate(),
                let der = try? cert.toDERBytes() {
                let fingerprint = certificateFingerprint(der: der)
                if counter.open(credential: fingerprint) {
                    credential = fingerprint
                } else {
                    refused = true
                    refuse(context)
                    return
                }
            }
        }
        context.fireChannelRead(data)
    }

    /// Answers 503 on the fresh TLS session and closes: the caller learns which limit and
    /// what to do, without a request being read.
    private func refuse(_ context: ChannelHandlerContext) {
        let max = counter.limits.maxConnectionsPerCredential
        let body = #"{"code":"E_TOO_MANY_CONNECTIONS","message":"this credential already has \#(max) connections open "#
            + #"(limit connections-per-credential): close some, or ask the server's operator to raise it"}"#
        let head =
            """
                HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nx-redoubt-error: \
                E_TOO_MANY_CONNECTIONS\r\n
                """
            + "connection: close\r\ncontent-length: \(body.utf8.count)\r\n\r\n"
        let bytes = context.channel.allocator.buffer(string: head + body)
        context.writeAndFlush(NIOAny(bytes)).assumeIsolated().whenComplete {
            [context] _ in context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        if let credential { counter.close(credential: credential) }
        credential = nil
        context.fireChannelInactive()
    }
}

@available(*, unavailable)
extension SourceLimitHandler: Sendable {}
@available(*, unavailable)
extension HandshakeGuardHandler: Sendable {}

/// The server's connection: source cap, TLS with a handshake deadline and credential cap,
/// then Hummingbird's HTTP/1.1 channel with its idle timeout and header limits.
struct GuardedTLSChannel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value
    let http: HTTP1Channel
    let sslContext: NIOSSLContext
    let counter: ConnectionCounter

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let ops = channel.pipeline.syncOperations
            try ops.addHandler(SourceLimitHandler(counter: counter, logger: logger))
            try ops.addHandler(NIOSSLServerHandler(context: sslContext))
            try ops.addHandler(HandshakeGuardHandler(counter: counter))
            try ops.addHandler(WritableGate())
        }.flatMap {
            http.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: Value, logger: Logger) async {
        await http.handle(value: value, logger: logger)
    }

    /// The Hummingbird server builder for this channel.
    static func builder(tls: TLSConfiguration, limits: ServerLimits,
        counter: ConnectionCounter) throws -> HTTPServerBuilder {
        let context = try NIOSSLContext(configuration: tls)
        let decoder = HTTP1Channel.Configuration.DecoderConfiguration(maxHeaderFieldSize: limits.maxHeaderBytes,
                                                                      maxHeaderListSize: limits.maxHeaderBytes,
                                                                      maxHeaderFieldCount: 100)
        let config = HTTP1Channel.Configuration(idleTimeout: .milliseconds(Int64(limits.idleTimeoutSeconds * 1000)),
                                                httpDecoderConfiguration: decoder)
        return HTTPServerBuilder { responder in
            GuardedTLSChannel(http: HTTP1Channel(responder: responder, configuration: config), sslContext: context,
                counter: counter)
        }
    }
}

/// Lets a long answer wait for its connection. The server's writes reach the socket on the
/// connection's event loop, after the answer's task has moved on; a task that writes
/// piece after piece would otherwise have its whole answer queued in memory before the
/// socket notices it is full. ``Channel/writable(within:)`` waits for the writes made so
/// far to reach the socket's buffer and for that buffer to drain below its mark.
final class WritableGate: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    private var waiters: [EventLoopPromise<Void>] = []

    /// Succeeds once the connection can take more, or has closed (the next write then
    /// fails); fails with ``StalledReader`` and closes the connection when its buffer does
    /// not drain below the mark within `seconds` (the peer took less than what was queued).
    func writable(_ context: ChannelHandlerContext, within seconds: Double) -> EventLoopFuture<Void> {
        if context.channel.isWritable || !context.channel.isActive {
            return context.eventLoop.makeSucceededVoidFuture()
        }
        let promise = context.eventLoop.makePromise(of: Void.self)
        waiters.append(promise)
        let timer = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(seconds * 1000))) {
            [self, context] in
            waiters.removeAll { $0 == promise }
            promise.fail(StalledReader(seconds: seconds))
            context.close(promise: nil)
        }
        promise.futureResult.whenComplete { _ in timer.cancel() }
        return promise.futureResult
    }

    private func release() {
        let ready = waiters
        waiters.removeAll()
        for w in ready { w.succeed() }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { release() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        release()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { release() }
}

@available(*, unavailable)
extension WritableGate: Sendable {}

/// A peer that did not take what was queued for it within the idle timeout; its
/// connection was closed.
struct StalledReader: Error, CustomStringConvertible {
    let seconds: Double
    var description: String {
        "the peer did not take the answer's last piece in \(seconds) s (limit idle-timeout); connection closed"
    }
}

extension Channel {
    /// Waits until this connection can take more of an answer: see ``WritableGate``. A
    /// channel without the gate (not the server's) does not wait.
    func writable(within seconds: Double) async throws {
        try await eventLoop.flatSubmit { [self] in
            guard let context = try? pipeline.syncOperations.context(handlerType: WritableGate.self),
                let gate = context.handler as? WritableGate else {
                return eventLoop.makeSucceededVoidFuture()
            }
            return gate.writable(context, within: seconds)
        }.get()
    }
}

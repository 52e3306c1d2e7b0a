import Foundation
import Hummingbird
import HTTPTypes
import Logging
import NIOCore
import RedoubtCore

extension RepositoryService {
    /// Everything monitoring shows, as of the server's clock now.
    public func monitoringFacts() async throws -> MonitoringFacts {
        try await catalog.monitoringFacts(now: try now())
    }

    /// The Prometheus text exposition (docs/PROTOCOL.md §8).
    public func metricsExposition() async throws -> String {
        let now = try await now()
        return metrics.exposition(facts: try await catalog.monitoringFacts(now: now), now: now, store: store)
    }

    /// Counts a refusal `refuse` is recording.
    func refused(_ ctx: CallContext, _ action: Action) async {
        let p = ctx.principal
        metrics.refused(tenant: p?.tenant, role: p?.role.rawValue, principal: p?.name, action: action.rawValue)
        // A credential asking for what its role may not do, again and again, may be stolen.
        if let p {
            await notifier.refused(tenant: p.tenant, role: p.role.rawValue, principal: p.name, action: action.rawValue)
        }
    }
}

/// Counts every API request by its route's template (never the raw path, which may carry
/// IDs or names) and times it to the response head.
struct RequestMetricsMiddleware: RouterMiddleware {
    typealias Context = RedoubtRequestContext
    let metrics: ServerMetrics

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let route = context.endpointPath.flatMap { RedoubtHTTP.routesByEndpoint["\(request.method) \($0)"] }?.path
            ?? "unmatched"
        let method = Self.methods.contains(request.method) ? request.method.rawValue : "OTHER"
        do {
            let response = try await next(request, context)
            metrics.request(route: route, method: method, status: Int(response.status.code),
                            duration: ContinuousClock.now - start)
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            metrics.request(route: route, method: method, status: Int(status), duration: ContinuousClock.now - start)
            throw error
        }
    }

    /// Methods counted under their own name; anything else a client sends is `OTHER`.
    static let methods: Set<HTTPRequest.Method> = [.get, .head, .post, .put, .delete, .patch, .options]
}

/// The plain-HTTP metrics listener of `redoubt server run --metrics-listen` (off by
/// default). It serves `GET /metrics` only, and only on a loopback address: the metrics
/// name tenants and hosts, so anywhere else they are read over the API's TLS with an
/// auditor credential (`GET /v1/metrics`).
public enum MetricsListener {
    /// `host:port` checked to be loopback; otherwise an error that says what to do instead.
    public static func parse(_ listen: String) throws -> (host: String, port: Int) {
        guard let (host, port) = ServerHome.splitHostPort(listen) else {
            throw ServerError.badRequest("--metrics-listen \(SafeText.echo(listen)) is not HOST:PORT "
                                         + "(e.g. 127.0.0.1:9464)")
        }
        guard isLoopback(host) else {
            throw ServerError.badRequest("""
                --metrics-listen \(SafeText.echo(listen)) is not a loopback address: the metrics listener is plain \
                HTTP, so it listens on 127.0.0.1 or ::1 only. To scrape from another machine, use GET /v1/metrics \
                on the server's TLS port with an auditor credential (`redoubt admin auditor add`).
                """)
        }
        return (host, port)
    }

    /// Whether `host` is a literal IPv4 or IPv6 address (no TLS server name is sent for one).
    static func isIPAddress(_ host: String) -> Bool {
        host.contains(":") || (host.split(separator: ".").count == 4 && host.split(separator: ".").allSatisfy {
            UInt8($0) != nil
        })
    }

    static func isLoopback(_ host: String) -> Bool {
        let h = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        if h == "localhost" || h == "::1" { return true }
        let parts = h.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    /// The listener's application on `host:port` (port 0 picks one; `onRunning` gets it).
    public static func application(service: RepositoryService, host: String, port: Int, logger: Logger,
                                   onRunning: @escaping @Sendable (Int) async -> Void = { _ in })
        -> some ApplicationProtocol {
        let router = Router()
        router.get("/metrics") { _, _ -> Response in
            do {
                let text = try await service.metricsExposition()
                return Response(status: .ok, headers: [.contentType: contentType],
                                body: .init(byteBuffer: ByteBuffer(string: text)))
            } catch {
                logger.error("metrics exposition failed", metadata: ["error": "\(error)"])
                return Response(status: .internalServerError, headers: [.contentType: "text/plain"],
                                body: .init(byteBuffer: ByteBuffer(string: "metrics unavailable: \(error)\n")))
            }
        }
        return Application(router: router,
                           configuration: .init(address: .hostname(host, port: port), serverName: "redoubt-metrics"),
                           onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) },
                           logger: logger)
    }

    /// The Prometheus text format's content type.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"
}

import Hummingbird
import NIOCore

/// Refuses, before anything reads the body or looks up the caller, a request whose path
/// or declared body is over its limit (docs/PROTOCOL.md §3.2), and closes the connection
/// after the answer so that the body never sent, or sent anyway, is not read.
struct RequestLimitsMiddleware: RouterMiddleware {
    typealias Context = RedoubtRequestContext
    let limits: ServerLimits

    func handle(_ request: Request, context: Context, next: (Request,
        Context) async throws -> Response) async throws -> Response {
        let uri = request.uri.description.utf8.count
        if uri > limits.maxURIBytes {
            return closing(ServerError(414, "E_TOO_LARGE",
                "request path of \(uri) bytes exceeds the limit of \(limits.maxURIBytes) "
                                       + "(limit uri-size)"), context)
        }
        let limit = limits.bodyLimit(method: request.method.rawValue, path: request.uri.path)
        if let declared = request.headers[.contentLength] {
            guard let n = Int(declared), n >= 0 else {
                return closing(.badRequest("""
                    Content-Length \(declared.prefix(32).debugDescription) is not a byte count
                    """), context)
            }
            // Why before reading: a body declared too large is refused on its header alone,
            // so a client cannot make the server wait for (or buffer) bytes it will refuse.
            if n > limit {
                return closing(.tooLarge(what: "\(request.method) \(request.uri.path.prefix(64)) body", size: n,
                    limit: limit,
                                         setting: limits.bodySetting(method: request.method.rawValue,
                                             path: request.uri.path)), context)
            }
        }
        // The body reader (`Request.bytes(limit:)`) enforces the rate floor for this request.
        let floor = BodyRateFloor(limits: limits, channel: context.channel, logger: context.logger,
                                  request: "\(request.method) \(request.uri.path.prefix(80))")
        return try await BodyRateFloor.$current.withValue(floor) { try await next(request, context) }
    }

    /// The error response, and the connection marked to close once it is written.
    private func closing(_ e: ServerError, _ context: Context) -> Response {
        closeAfterResponse(context.channel)
        return errorResponse(e)
    }
}

/// Marks a connection to close after the response in progress (Hummingbird's connection
/// handler closes on quiesce once the response is written), so an unread body is not drained.
func closeAfterResponse(_ channel: any Channel) {
    channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
}

extension ServerError {
    /// A body or object over one of the server's limits.
    static func tooLarge(what: String, size: Int, limit: Int, setting: String) -> ServerError {
        ServerError(413, "E_TOO_LARGE", "\(what) of \(size) bytes exceeds the server's limit of \(limit) bytes "
                    + "(limit \(setting); docs/PROTOCOL.md §3.2)")
    }
}

extension ServerLimits {
    /// The `--limit` name of the body limit for a request.
    func bodySetting(method: String, path: String) -> String {
        switch bodyLimit(method: method, path: path) {
        case maxPackBytes where method == "PUT": return "pack-size"
        case maxManifestBytes where method == "POST" && path.hasPrefix("/v1/snapshots"): return "manifest-size"
        default: return "request-size"
        }
    }
}

extension Request {
    /// The body in one array, read once: the declared length (already checked against the
    /// limit) is reserved up front and each part is appended, so a 256 MiB pack is held
    /// once, never as a buffer and a copy of it.
    func bytes(limit: Int) async throws -> [UInt8] {
        var out: [UInt8] = []
        let declared = headers[.contentLength].flatMap { Int($0) }
        if let declared, declared >= 0 {
            guard declared <= limit else { throw NIOTooManyBytesError(maxBytes: limit) }
            out.reserveCapacity(declared)
        }
        let floor = BodyRateFloor.current
        var meter = floor?.meter()
        for try await part in body {
            guard part.readableBytes <= limit - out.count else { throw NIOTooManyBytesError(maxBytes: limit) }
            out.append(contentsOf: part.readableBytesView)
            if let floor, let rate = meter?.add(part.readableBytes, now: BodyRateFloor.now(),
                                                completes: out.count == declared) {
                throw floor.cut(rate: rate, received: out.count)
            }
        }
        return out
    }
}

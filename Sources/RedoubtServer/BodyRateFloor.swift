import Hummingbird
import Logging
import NIOCore

/// The slowest a request body may arrive (docs/PROTOCOL.md §3.2.1): after a grace period,
/// the bytes received in each window, divided by its length, must reach the floor. The
/// idle timeout alone closes a body that stops; this closes one that trickles (a byte a
/// second keeps the idle timer from ever firing, and a connection and a buffer open for
/// as long as the sender likes). Pure: the caller gives the time.
struct BodyRateMeter: Sendable {
    let floor: Int
    let window: Double
    let grace: Double
    private let start: Double
    private var windowStart: Double
    private var windowBytes = 0

    /// A body whose first byte is awaited from `now` (seconds on a monotonic clock).
    init(floor: Int, window: Double, grace: Double, now: Double) {
        self.floor = floor
        self.window = window
        self.grace = grace
        start = now
        windowStart = now
    }

    /// Counts `n` bytes arrived at `now`; returns the rate of the window that just ended
    /// below the floor (bytes per second), else nil. A window is judged at the first
    /// arrival once it is `window` long and the grace period is over, unless those bytes
    /// `complete` the body: a complete body holds nothing open, and a body smaller than a
    /// window's worth of the floor (a short JSON request held up by a busy client) could
    /// otherwise never pass.
    mutating func add(_ n: Int, now: Double, completes: Bool = false) -> Double? {
        windowBytes += n
        let elapsed = now - windowStart
        guard !completes, now - start >= grace, elapsed >= window else { return nil }
        let rate = Double(windowBytes) / elapsed
        if rate < Double(floor) { return rate }
        windowStart = now
        windowBytes = 0
        return nil
    }
}

/// What the body reader of the request in progress enforces, set for the request's task
/// by ``RequestLimitsMiddleware``.
struct BodyRateFloor: Sendable {
    @TaskLocal static var current: BodyRateFloor?

    let limits: ServerLimits
    let channel: any Channel
    let logger: Logger
    /// `METHOD /path`, for the log and the error.
    let request: String

    static func now() -> Double { Double(NIODeadline.now().uptimeNanoseconds) / 1e9 }

    func meter() -> BodyRateMeter {
        BodyRateMeter(floor: limits.minBodyBytesPerSecond, window: limits.bodyRateWindowSeconds,
                      grace: limits.bodyRateGraceSeconds, now: Self.now())
    }

    /// The error for a body cut at `rate` after `received` bytes; the connection is marked
    /// to close once the answer is written, so the rest of the body is never read.
    func cut(rate: Double, received: Int) -> ServerError {
        let source = channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?"
        logger.warning("request body below the rate floor: connection closed", metadata: [
            "request": "\(request)", "source": "\(source)", "bytesPerSecond": "\(Int(rate))", "received": "\(received)",
            "floor": "\(limits.minBodyBytesPerSecond)", "window": "\(limits.bodyRateWindowSeconds)"])
        closeAfterResponse(channel)
        return ServerError(408, "E_TOO_SLOW", "request body arrived at \(Int(rate)) bytes/s over the last "
                           + "\(limits.bodyRateWindowSeconds) s, below the server's floor of "
                           + "\(limits.minBodyBytesPerSecond) "
                           + "bytes/s (limit body-rate-floor; docs/PROTOCOL.md §3.2.1): the connection is closed; "
                           + "retry on a faster link, or ask the operator to lower the floor")
    }
}

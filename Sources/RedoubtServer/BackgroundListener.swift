import Hummingbird
import Logging
import ServiceLifecycle

/// A Hummingbird application served in the background until ``stop(within:)``.
///
/// Why not cancel its task: cancellation drops the connections the listener accepted but
/// had not yet handed to a handler, and NIO traps on a connection whose writer was never
/// finished, which takes the whole process down. A graceful stop closes the listening
/// socket, lets those connections be handled, closes idle keep-alive ones, and waits for
/// requests in flight.
public final class BackgroundListener: Sendable {
    private let group: ServiceGroup
    private let task: Task<Void, Error>

    public init(_ app: some ApplicationProtocol, logger: Logger) {
        let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
        self.group = group
        task = Task { try await group.run() }
    }

    /// Returns when the listener has ended by itself or been stopped: a listener that could
    /// not bind its port ends at once, with the error.
    public func ended() async throws {
        try await task.value
    }

    /// Stops gracefully; only a request still in flight after `seconds` (a client that stopped
    /// sending halfway) is cut by cancellation. Returns once the listener has stopped (true),
    /// or false after a further `seconds` if even cancellation does not end it.
    @discardableResult
    public func stop(within seconds: Double = 10) async -> Bool {
        await group.triggerGracefulShutdown()
        if await Self.finishes(task, within: seconds) { return true }
        task.cancel()
        return await Self.finishes(task, within: seconds)
    }

    /// Whether `task` ends within `seconds`; a task that does not is left running.
    private static func finishes(_ task: Task<Void, Error>, within seconds: Double) async -> Bool {
        let (stream, continuation) = AsyncStream<Bool>.makeStream()
        Task { _ = try? await task.value; continuation.yield(true) }
        let timer = Task { try? await Task.sleep(for: .seconds(seconds)); continuation.yield(false) }
        defer { timer.cancel() }
        for await done in stream { return done }
        return false
    }
}

import Foundation
import Logging
import NIOCore
import PostgresNIO
import RedoubtCore

/// The catalog on PostgreSQL 15 (postgres-nio), for several servers sharing one database.
///
/// It implements the repository protocols of ``CatalogRepositories`` (CatalogRepositories.swift)
/// with the SQLite catalog's tables and invariants (PostgresSchema.swift). How each atomic
/// operation stays atomic against other servers is said in docs/PROTOCOL.md ("The catalog on
/// PostgreSQL"): multi-statement writes run SERIALIZABLE and are retried on a serialization
/// failure; appends to the audit log take a transaction-scoped advisory lock so the chain has
/// exactly one head; a job's lease locks the job's row.
public final class PostgresCatalog: Sendable {
    let client: PostgresClient
    let logger: Logger
    /// How often a transaction that lost a serialization race is run again before the error
    /// reaches the caller (as a backend failure, a 500).
    let maxAttempts: Int
    private let runner: Task<Void, Never>

    /// Connects a pool to `configuration` and creates or upgrades the schema (in the
    /// connection's `search_path`, `public` by default). `run()`s the pool until ``shutdown()``.
    public init(configuration: PostgresClient.Configuration, logger: Logger = Logger(label: "redoubt.catalog.pg"),
                maxAttempts: Int = 20) async throws {
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.client = client
        self.logger = logger
        self.maxAttempts = max(1, maxAttempts)
        runner = Task { await client.run() }
        do {
            try await requireDurableCommits()
            try await migrate()
        } catch {
            runner.cancel()
            throw error
        }
    }

    /// Refuses a database that answers commits before they are on disk. Why: what the server
    /// has answered (a committed snapshot with its packs' lock extensions, a revocation, an
    /// audit record) must survive a crash of the database (docs/PROTOCOL.md §7), and with
    /// `synchronous_commit = off` PostgreSQL answers before its WAL is flushed. Checked rather
    /// than set: `on` set here would weaken a replicated database's `remote_apply`.
    private func requireDurableCommits() async throws {
        let setting = try await rows("SHOW synchronous_commit").first.map { try $0.decode(String.self) }
        guard setting != "off" else {
            throw ServerError(500, "E_CONFIG", """
                the catalog's database runs with synchronous_commit = off, under which a commit is answered \
                before it is on disk: set it on (ALTER DATABASE … SET synchronous_commit = on, or in \
                postgresql.conf) and start the server again
                """)
        }
    }

    /// Closes the pool's connections; calls after this fail.
    public func shutdown() async {
        runner.cancel()
        _ = await runner.value
    }

    /// Isolation of one transaction.
    enum Isolation: String {
        /// Writes whose checks must hold at commit against every other server: PostgreSQL
        /// aborts one of two transactions that could not have run one after the other (40001),
        /// and ``transaction(_:_:_:)`` runs it again.
        case serializable = "SERIALIZABLE"
        /// Statements that each see the latest committed state: with a lock taken first (the
        /// audit log's head), what is read after the lock is what the previous holder committed.
        case readCommitted = "READ COMMITTED"
        /// Several reads from one snapshot.
        case snapshot = "REPEATABLE READ READ ONLY"
    }

    /// Runs `body` in one transaction at `isolation`; a serialization failure or deadlock
    /// (40001, 40P01) runs all of it again, up to ``maxAttempts`` times, so `body` must do
    /// nothing but database work. Any error `body` throws rolls the transaction back and
    /// reaches the caller unchanged (a ``CatalogError`` refusal stays one).
    func transaction<T: Sendable>(_ isolation: Isolation, _ what: String,
                                  _ body: (PostgresConnection) async throws -> T) async throws -> T {
        var attempt = 1
        while true {
            do {
                return try await client.withConnection { conn -> T in
                    try await conn.query(PostgresQuery(unsafeSQL: "BEGIN ISOLATION LEVEL \(isolation.rawValue)"),
                                         logger: logger)
                    let value: T
                    do {
                        value = try await body(conn)
                    } catch {
                        _ = try? await conn.query("ROLLBACK", logger: logger)
                        throw error
                    }
                    do {
                        try await conn.query("COMMIT", logger: logger)
                    } catch {
                        // A COMMIT that failed has ended the transaction; ROLLBACK is then a no-op.
                        _ = try? await conn.query("ROLLBACK", logger: logger)
                        throw error
                    }
                    return value
                }
            } catch let e as PSQLError where Self.isRetryable(e) && attempt < maxAttempts {
                attempt += 1
                logger.debug("catalog: retrying after a serialization failure",
                             metadata: ["operation": "\(what)", "attempt": "\(attempt)"])
                // A short, growing, jittered pause so the same two transactions do not meet again.
                try await Task.sleep(nanoseconds: UInt64.random(in: 0...UInt64(attempt) * 2_000_000))
            } catch let e as PSQLError {
                throw Self.described(e, what)
            }
        }
    }

    /// A PSQLError's own description hides everything (it might carry row values); this keeps
    /// what an operator needs: the operation, the server's message and SQLSTATE, or the
    /// connection failure.
    static func described(_ e: PSQLError, _ what: String) -> PostgresCatalogError {
        if let info = e.serverInfo {
            return PostgresCatalogError(message: """
                catalog \(what): \(info[.message] ?? "error") (SQLSTATE \(info[.sqlState] ?? "?"))
                """)
        }
        let cause = e.underlying.map { ": \($0)" } ?? ""
        return PostgresCatalogError(message: "catalog \(what): \(e.code)\(cause)")
    }

    static func isRetryable(_ e: PSQLError) -> Bool {
        guard let state = e.serverInfo?[.sqlState] else { return false }
        return state == "40001" || state == "40P01"
    }

    /// One statement outside an explicit transaction (its own snapshot), all rows.
    func rows(_ query: PostgresQuery) async throws -> [PostgresRow] {
        do { return try await client.query(query, logger: logger).collect() } catch let e as PSQLError {
            throw Self.described(e, "read")
        }
    }

    /// The state (`23505` …) of a server error, nil for other errors.
    static func sqlState(_ error: any Error) -> String? {
        (error as? PSQLError)?.serverInfo?[.sqlState]
    }
}

/// A failure of the PostgreSQL catalog itself (not a refusal, which is a ``CatalogError``).
public struct PostgresCatalogError: Error, Sendable, CustomStringConvertible {
    public let message: String

    public var description: String { message }
}

// Encoding helpers shared by the repositories.
extension PostgresCatalog {
    static func bytes(_ b: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: b) }
    static func array(_ b: ByteBuffer) -> [UInt8] { Array(b.readableBytesView) }
    static func date(_ t: Double) -> Date { Date(timeIntervalSince1970: t) }
}

extension PostgresConnection {
    /// Every row of `query`, in the connection's transaction.
    func all(_ query: PostgresQuery, _ logger: Logger) async throws -> [PostgresRow] {
        try await self.query(query, logger: logger).collect()
    }

    /// Whether `query` returns a row (a `SELECT 1 … LIMIT 1`, or an UPDATE … RETURNING 1).
    func any(_ query: PostgresQuery, _ logger: Logger) async throws -> Bool {
        try await !all(query, logger).isEmpty
    }

    /// Runs `query` and returns how many rows it returned (an UPDATE or DELETE … RETURNING 1:
    /// how many it changed).
    func count(_ query: PostgresQuery, _ logger: Logger) async throws -> Int {
        try await all(query, logger).count
    }
}

import Foundation
import Logging
import PostgresNIO
@testable import RedoubtServer
import Testing

/// The PostgreSQL 15 peer of scripts/peers (`REDOUBT_TEST_POSTGRES=host:port`, trust
/// authentication as `postgres`), and fresh catalogs in it: each in a schema of its own, so
/// tests never see each other's rows and leave nothing behind.
struct PostgresPeer: Sendable {
    let host: String
    let port: Int

    /// The peer, or nil when none is configured (the test then says so and passes, unless
    /// `REDOUBT_PEERS_REQUIRED=1`, as scripts/test sets, makes that a failure).
    static func fromEnvironment() throws -> PostgresPeer? {
        let env = ProcessInfo.processInfo.environment
        guard let address = env["REDOUBT_TEST_POSTGRES"] else {
            try #require(env["REDOUBT_PEERS_REQUIRED"] != "1",
                         "REDOUBT_TEST_POSTGRES is not set: run scripts/peers start and source its env file")
            print("skipping: no PostgreSQL peer (REDOUBT_TEST_POSTGRES; scripts/peers start postgres)")
            return nil
        }
        let parts = address.split(separator: ":")
        let port = try #require(parts.count == 2 ? Int(parts[1]) : nil, "REDOUBT_TEST_POSTGRES=\(address)")
        return PostgresPeer(host: String(parts[0]), port: port)
    }

    func configuration(schema: String?) -> PostgresClient.Configuration {
        var c = PostgresClient.Configuration(host: host, port: port, username: "postgres", password: nil,
                                             database: "postgres", tls: .disable)
        if let schema { c.options.additionalStartupParameters = [("search_path", schema)] }
        return c
    }

    /// A schema name no test has used (its schema not created).
    static func newSchemaName() -> String {
        "redoubt_test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
    }

    /// Runs `body` on a catalog in a new, empty schema, then drops the schema.
    func withFreshSchema<T: Sendable>(_ body: (PostgresCatalog) async throws -> T) async throws -> T {
        try await withFreshSchema(servers: 1) { try await body($0[0]) }
    }

    /// Runs `body` on `servers` catalogs (each its own connection pool, as separate server
    /// processes have) sharing one new schema, then drops the schema.
    func withFreshSchema<T: Sendable>(servers: Int,
                                      _ body: ([PostgresCatalog]) async throws -> T) async throws -> T {
        let schema = Self.newSchemaName()
        try await admin("CREATE SCHEMA \(schema)")
        var catalogs: [PostgresCatalog] = []
        func close() async { for c in catalogs { await c.shutdown() } }
        do {
            for _ in 0..<max(1, servers) {
                catalogs.append(try await PostgresCatalog(configuration: configuration(schema: schema)))
            }
            let result = try await body(catalogs)
            await close()
            try await admin("DROP SCHEMA \(schema) CASCADE")
            return result
        } catch {
            await close()
            try? await admin("DROP SCHEMA \(schema) CASCADE")
            throw error
        }
    }

    /// One statement on a connection of its own (schema names cannot be bound).
    func admin(_ sql: String) async throws {
        let conn = try await PostgresConnection.connect(configuration: .init(
            host: host, port: port, username: "postgres", password: nil, database: "postgres", tls: .disable),
            id: 1, logger: Logger(label: "test.pg"))
        do {
            _ = try await conn.query(PostgresQuery(unsafeSQL: sql), logger: Logger(label: "test.pg")).collect()
        } catch {
            try? await conn.close()
            throw error
        }
        try await conn.close()
    }
}

extension PostgresPeer {
    /// Catalog settings for a new, empty schema of this peer (dropped by ``dropSchema(of:)``).
    func freshCatalogSettings() async throws -> CatalogSettings {
        let schema = Self.newSchemaName()
        try await admin("CREATE SCHEMA \(schema)")
        return CatalogSettings(url: """
            postgres://postgres@\(host):\(port)/postgres?sslmode=disable&search_path=\(schema)
            """)
    }

    /// Closes this process's pool for `settings` and drops its schema.
    func dropSchema(of settings: CatalogSettings) async {
        await CatalogPools.shared.close(settings)
        guard let schema = try? settings.target().schema else { return }
        try? await admin("DROP SCHEMA \(schema) CASCADE")
    }
}

/// Which catalog test servers use: SQLite unless `REDOUBT_TEST_CATALOG=postgres`, which runs
/// the same server suites against the PostgreSQL peer, each server in a schema of its own.
enum TestCatalog {
    static var isPostgres: Bool { ProcessInfo.processInfo.environment["REDOUBT_TEST_CATALOG"] == "postgres" }

    /// Settings for a new server's catalog: nil for SQLite.
    static func fresh() async throws -> CatalogSettings? {
        guard isPostgres else { return nil }
        let peer = try #require(try PostgresPeer.fromEnvironment(),
                                "REDOUBT_TEST_CATALOG=postgres needs the PostgreSQL peer (REDOUBT_TEST_POSTGRES)")
        return try await peer.freshCatalogSettings()
    }

    /// Closes the server's pool and drops its schema in the background: a pool closes only
    /// after every lease is returned, and a test that failed mid-request must not wait on that.
    static func release(_ settings: CatalogSettings?) async {
        guard let settings, let peer = try? PostgresPeer.fromEnvironment() else { return }
        Task.detached { await peer.dropSchema(of: settings) }
    }
}

extension Trait where Self == ConditionTrait {
    /// For a test that reads or edits `catalog.sqlite` itself (tampering with rows, SQLite
    /// migrations, the SQLite rebuild's carry-over from the previous file): it runs in the
    /// SQLite pass only.
    static var sqliteCatalogOnly: Self {
        .enabled(if: !TestCatalog.isPostgres, "reads or edits catalog.sqlite itself")
    }
}

extension Trait where Self == ConditionTrait {
    /// For a suite that makes its own catalogs of both kinds (or its own servers): the
    /// PostgreSQL pass would only repeat it.
    static var firstPassOnly: Self {
        .disabled(if: TestCatalog.isPostgres, "makes its own catalogs of both kinds: runs in the first pass")
    }
}

extension Trait where Self == ConditionTrait {
    /// For a test of the transport alone (connection and rate limits), which the catalog
    /// does not take part in: a second pass would only load the machine.
    static var transportOnly: Self {
        .disabled(if: TestCatalog.isPostgres, "tests the transport, not the catalog: runs in the first pass")
    }
}

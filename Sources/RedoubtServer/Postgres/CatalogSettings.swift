import Foundation
import Logging
import NIOSSL
import PostgresNIO

/// Where a server keeps its catalog when it is not `catalog.sqlite` in the data directory:
/// a PostgreSQL database that several `server run` nodes share (docs/SCALE-OUT.md).
///
/// `url` is `postgres://USER@HOST:PORT/DATABASE`, with optional query parameters
/// `sslmode` (`verify-full`, the default; `disable`, accepted only to a loopback address),
/// `sslrootcert` (a PEM file of the CA that signed the server's certificate; default: the
/// system's roots) and `search_path` (the schema, default `public`). A password never sits
/// in the URL, in `server.json` or on a command line: it is read at each start from
/// `passwordFile`, else from the `PGPASSWORD` environment variable of the service.
public struct CatalogSettings: Codable, Sendable, Equatable {
    public var url: String
    public var passwordFile: String?

    /// Connections one process keeps to the catalog at most.
    public static let poolSize = 6

    public init(url: String, passwordFile: String? = nil) {
        self.url = url
        self.passwordFile = passwordFile
    }

    /// What the URL names, checked.
    public struct Target: Sendable, Equatable {
        public var user: String
        public var host: String
        public var port: Int
        public var database: String
        public var tls: TLSMode
        public var rootCertificate: String?
        public var schema: String?

        /// The URL without anything secret, for messages and `doctor`.
        public var redacted: String { "postgres://\(user)@\(host):\(port)/\(database)" }
        public var isLoopback: Bool { ["127.0.0.1", "::1", "localhost"].contains(host) }
    }

    public enum TLSMode: String, Sendable, Equatable {
        case verifyFull = "verify-full"
        case disable
    }

    public func target() throws -> Target {
        func bad(_ why: String) -> ServerError {
            ServerError.badRequest("catalog \(redactedURL): \(why)")
        }
        guard let c = URLComponents(string: url), c.scheme == "postgres" || c.scheme == "postgresql" else {
            throw bad("give postgres://USER@HOST:PORT/DATABASE")
        }
        if c.password != nil {
            throw bad("""
                a password does not belong in the URL (it would sit in server.json and in argv): put it in a file \
                given with --catalog-password-file, or in PGPASSWORD
                """)
        }
        guard let user = c.user, !user.isEmpty else { throw bad("name the user: postgres://USER@HOST:PORT/DB") }
        guard let rawHost = c.host, !rawHost.isEmpty else { throw bad("name the host") }
        let host = rawHost.hasPrefix("[") ? String(rawHost.dropFirst().dropLast()) : rawHost
        let database = String(c.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty, !database.contains("/") else { throw bad("name the database: …:PORT/DATABASE") }
        var tls = TLSMode.verifyFull
        var root: String?
        var schema: String?
        for item in c.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                guard let m = item.value.flatMap(TLSMode.init(rawValue:)) else {
                    throw bad("sslmode must be verify-full or disable")
                }
                tls = m
            case "sslrootcert": root = item.value
            case "search_path":
                guard let s = item.value, s.range(of: "^[a-z_][a-z0-9_]{0,62}$", options: .regularExpression) != nil
                else { throw bad("search_path must be one lower-case schema name") }
                schema = s
            default: throw bad("unknown parameter \(item.name) (known: sslmode, sslrootcert, search_path)")
            }
        }
        let t = Target(user: user, host: host, port: c.port ?? 5432, database: database, tls: tls,
                       rootCertificate: root, schema: schema)
        if tls == .disable && !t.isLoopback {
            throw bad("""
                sslmode=disable is accepted only to a loopback address: the catalog's rows reach every node over \
                this connection; use sslmode=verify-full (and sslrootcert=FILE for a private CA)
                """)
        }
        return t
    }

    /// The URL with any password cut out (for a message about a URL that was refused).
    var redactedURL: String {
        guard var c = URLComponents(string: url) else { return "(unparsable URL)" }
        if c.password != nil { c.password = "…" }
        return c.string ?? "(unparsable URL)"
    }

    /// The password, read now: from the file, else `PGPASSWORD`, else none (trust or
    /// certificate authentication).
    func password() throws -> String? {
        if let passwordFile {
            guard let data = FileManager.default.contents(atPath: passwordFile) else {
                throw ServerError(500, "E_CONFIG",
                    "catalog \(redactedURL): cannot read the password file \(passwordFile)")
            }
            return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .newlines)
        }
        return ProcessInfo.processInfo.environment["PGPASSWORD"]
    }

    /// The connection pool's configuration, with the password and CA read now.
    public func configuration() throws -> PostgresClient.Configuration {
        let t = try target()
        let tls: PostgresClient.Configuration.TLS
        switch t.tls {
        case .disable: tls = .disable
        case .verifyFull:
            var config = TLSConfiguration.makeClientConfiguration()
            config.certificateVerification = .fullVerification
            if let root = t.rootCertificate {
                do {
                    config.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(root))
                } catch {
                    throw ServerError(500, "E_CONFIG",
                        "catalog \(t.redacted): cannot read sslrootcert \(root): \(error)")
                }
            }
            tls = .require(config)
        }
        var c = PostgresClient.Configuration(host: t.host, port: t.port, username: t.user, password: try password(),
                                             database: t.database, tls: tls)
        if let schema = t.schema { c.options.additionalStartupParameters = [("search_path", schema)] }
        c.options.connectTimeout = .seconds(10)
        // Each node holds at most this many: 16 nodes stay under PostgreSQL's default of 100
        // connections with room for replication and an operator.
        c.options.maximumConnections = Self.poolSize
        return c
    }
}

/// One connection pool per catalog URL in a process: every `openCatalog()` of a data
/// directory shares it, so a server, or a CLI command that opens the catalog several times,
/// holds one pool instead of one per call.
public actor CatalogPools {
    public static let shared = CatalogPools()
    private var pools: [CatalogSettings: Task<PostgresCatalog, any Error>] = [:]

    public func catalog(_ settings: CatalogSettings) async throws -> PostgresCatalog {
        if let t = pools[settings] {
            do { return try await t.value } catch { pools[settings] = nil }
        }
        let task = Task { () throws -> PostgresCatalog in
            let config = try settings.configuration()
            do {
                return try await PostgresCatalog(configuration: config)
            } catch {
                let t = try settings.target()
                throw ServerError(503, "E_CATALOG", """
                    catalog \(t.redacted) is not reachable or refused us: \(String(reflecting: error)); check that \
                    PostgreSQL runs, that the user may log in from this node, and its TLS settings
                    """)
            }
        }
        pools[settings] = task
        return try await task.value
    }

    /// Closes the pool of `settings`, if one is open (a test's server stopping).
    public func close(_ settings: CatalogSettings) async {
        guard let t = pools.removeValue(forKey: settings), let c = try? await t.value else { return }
        await c.shutdown()
    }
}

extension CatalogSettings: Hashable {}

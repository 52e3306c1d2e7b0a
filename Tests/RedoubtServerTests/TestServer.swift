import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import RedoubtClient
import RedoubtCore
import RedoubtKMS
import RedoubtServer
import RedoubtStore
import Testing

/// A manual clock for retention tests.
final class ManualClock: ServerClock, @unchecked Sendable {
    private let lock = NSLock()
    private var t: Date
    init(_ t: Date) { self.t = t }
    func now() -> Date { lock.withLock { t } }
    func set(_ d: Date) { lock.withLock { t = d } }
}

/// A free TCP port on loopback.
func freeLoopbackPort() throws -> Int { try ServerHome.freeLoopbackPort() }

/// The environment, if every named test-peer variable (written by `scripts/peers`) is
/// set; otherwise nil, and under `REDOUBT_PEERS_REQUIRED=1` (CI) a recorded failure
/// naming what is missing, so that a peer that did not start is never a silent pass.
func peerEnvironment(_ names: String..., sourceLocation: SourceLocation = #_sourceLocation) -> [String: String]? {
    let env = ProcessInfo.processInfo.environment
    let missing = names.filter { env[$0]?.isEmpty ?? true }
    if missing.isEmpty { return env }
    let message =
        "\(missing.joined(separator: ", ")) not set: ./scripts/peers start, then source \"$(./scripts/peers env)\""
    if env["REDOUBT_PEERS_REQUIRED"] == "1" { Issue.record(Comment(rawValue: message),
        sourceLocation: sourceLocation) } else {
        print("skipping: " + message)
    }
    return nil
}

/// A real server: TLS on loopback, a real catalog (SQLite, or a schema of its own in the
/// PostgreSQL peer under `REDOUBT_TEST_CATALOG=postgres`), a real local store with immutable
/// flags, in a temp directory. One per test.
final class TestServer: @unchecked Sendable {
    let dir: URL
    let home: ServerHome
    let service: RepositoryService
    let clock: ManualClock
    let listener: BackgroundListener
    let admin: APIClient
    let url: String
    /// The scheduler's loop, when started with `jobs`.
    let jobs: Task<Void, Never>?
    /// The PostgreSQL catalog's settings under `REDOUBT_TEST_CATALOG=postgres`; nil: SQLite.
    let catalog: CatalogSettings?
    /// How long this server's clients keep a connection pooled: well before its idle deadline,
    /// which some tests set to seconds (a pooled connection the server is closing fails a POST
    /// sent on it).
    let clientPoolIdleSeconds: Double

    static func poolIdleSeconds(_ limits: ServerLimits) -> Double { min(20, limits.idleTimeoutSeconds / 3) }

    /// `prepare` runs on the initialised data directory before the server opens it. With
    /// `inMemory`, objects go to a `MemoryStore` on the server's clock instead of the data
    /// directory's store: for suites that need no real immutable flags. With `jobs`, the
    /// scheduler's loop runs as under `server run`, but its periodic pass only every hour of
    /// real time: within a test, a job runs only when a request wakes the loop. `wrapStore`
    /// decorates the in-memory store (a recorder of reads).
    static func start(minRetention: TimeInterval = 30 * 86400, limits: ServerLimits = ServerLimits(),
        inMemory: Bool = false, jobs: Bool = false, primaryStore: PrimaryStoreSettings? = nil,
                      prepare: ((ServerHome) async throws -> Void)? = nil,
                      wrapStore: ((any ObjectStore) -> any ObjectStore)? = nil) async throws -> TestServer {
        // A port found free can be taken (by an outgoing connection's ephemeral port) before
        // the server binds it: then the listener ends at once, and a fresh server is made.
        func once() async throws -> TestServer {
            try await startOnce(minRetention: minRetention, limits: limits, inMemory: inMemory, jobs: jobs,
                                primaryStore: primaryStore, prepare: prepare, wrapStore: wrapStore)
        }
        for _ in 1..<5 {
            do { return try await once() } catch let e as ListenerDidNotBind {
                FileHandle.standardError.write(Data("test server: \(e.description); trying another port\n".utf8))
            }
        }
        return try await once()
    }

    struct ListenerDidNotBind: Error, CustomStringConvertible {
        let description: String
    }

    private static func startOnce(minRetention: TimeInterval, limits: ServerLimits, inMemory: Bool, jobs: Bool,
                                  primaryStore: PrimaryStoreSettings?, prepare: ((ServerHome) async throws -> Void)?,
                                  wrapStore: ((any ObjectStore) -> any ObjectStore)?) async throws -> TestServer {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-srv-\(UUID().uuidString)")
        let port = try freeLoopbackPort()
        let home = ServerHome(path: dir.appendingPathComponent("data").path)
        let catalog = try await TestCatalog.fresh()
        _ = try await home.initialize(listen: "127.0.0.1:\(port)", minRetention: minRetention, now: Date(),
                                      store: primaryStore, catalog: catalog)
        try await prepare?(home)
        var logger = Logger(label: "test.server")
        logger.logLevel = .warning
        let clock = ManualClock(Date())
        let store: (any ObjectStore)? = inMemory ? (wrapStore ?? { $0 })(MemoryStore(clock: { clock.now() })) : nil
        let service = try await home.openService(clock: clock, logger: logger, limits: limits, store: store)
        let (stream, cont) = AsyncStream<Int>.makeStream()
        let app = try RedoubtHTTP.application(service: service, home: home, host: "127.0.0.1", port: port,
            logger: logger) {
            p in cont.yield(p)
        }
        let listener = BackgroundListener(app, logger: logger)
        let watch = Task {
            do { try await listener.ended() } catch { cont.finish() }
        }
        var bound = false
        for await _ in stream {
            bound = true
            break
        }
        watch.cancel()
        guard bound else {
            await TestCatalog.release(catalog)
            try? FileManager.default.removeItem(at: dir)
            throw ListenerDidNotBind(description: "the listener on 127.0.0.1:\(port) ended before it was bound")
        }
        let cred = try JSONDecoder().decode(ClientCredential.self,
            from: Data(contentsOf: URL(fileURLWithPath: home.adminCredentialPath)))
        let loop = jobs ? Task { await JobScheduler(service: service).run(every: 3600) } : nil
        return TestServer(dir: dir, home: home, service: service, clock: clock, listener: listener,
            admin: try APIClient(credential: cred, poolIdleSeconds: poolIdleSeconds(limits)), url: cred.url,
            jobs: loop, catalog: catalog, clientPoolIdleSeconds: poolIdleSeconds(limits))
    }

    private init(dir: URL, home: ServerHome, service: RepositoryService, clock: ManualClock,
        listener: BackgroundListener, admin: APIClient, url: String, jobs: Task<Void, Never>?,
        catalog: CatalogSettings?, clientPoolIdleSeconds: Double) {
        self.clientPoolIdleSeconds = clientPoolIdleSeconds
        self.jobs = jobs
        self.catalog = catalog
        self.dir = dir
        self.home = home
        self.service = service
        self.clock = clock
        self.listener = listener
        self.admin = admin
        self.url = url
    }

    func stop() async {
        if let jobs {
            jobs.cancel()
            await jobs.value
        }
        await admin.shutdown()
        // Why bounded: a client a test left connected mid-request would hold a graceful stop
        // for good. The server's port and directory are the test's own, so one left running
        // harms nothing.
        if !(await listener.stop(within: 15)) {
            FileHandle.standardError.write(Data("""
                warning: the test server at \(url) did not shut down within 30 s; left running\n
                """.utf8))
        }
        await TestCatalog.release(catalog)
        // Objects are immutable: clear the flag before removing the temp tree.
        _ = system("chattr -R -i '\(dir.path)' 2>/dev/null")
        try? FileManager.default.removeItem(at: dir)
    }

    /// Creates a tenant whose keys the test holds.
    func createTenant(_ name: String, keys: TenantKeys) async throws {
        let provider = try PassphraseKeyProvider(passphrase: SecretBytes(copying: Array("pw".utf8)), logN: 10)
        let wrapped = try await provider.wrap(keys.readKey, context: KeyContext(tenant: name, keyVersion: 1))
        _ = try await admin.createTenant(Wire.CreateTenantRequest(
            name: name, readPublicKey: Data(keys.readKey.publicKey.rawRepresentation).base64EncodedString(),
            writeMaterial: keys.sharedWriteMaterial.encode().withUnsafeBytes { Data($0).base64EncodedString() },
            wrappedReadKey: String(decoding: try wrapped.encoded(), as: UTF8.self), minRetentionSeconds: nil))
    }

    /// Enrolls another admin (one admin adds the second alone) and returns its client.
    func enrollAdmin(_ name: String) async throws -> APIClient {
        let token = try await admin.addAdmin(name: name, ttlSeconds: nil, requestID: nil).token
        let cfg = ClientConfig(path: dir.appendingPathComponent("cfg-admin-\(name)").path)
        _ = try await ClientConfig.enroll(token: token, into: cfg, os: nil)
        return try APIClient(credential: cfg.credential(), poolIdleSeconds: clientPoolIdleSeconds)
    }

    /// Enrolls a principal into a fresh config directory and returns it with a client.
    func enroll(tenant: String, role: String, name: String) async throws -> (ClientConfig, APIClient) {
        let token: String
        do {
            token = try await admin.createEnrollment(tenant: tenant, role: role, name: name, ttlSeconds: 3600).token
        } catch let e as APIError where e.code == "E_CONNECT" {
            // Why once more: a server whose idle timeout is seconds can close the admin's pooled
            // connection as a run starved of CPU reuses it (seen in a loaded debug run, despite
            // the pool's third of that timeout), and the client does not resend a POST. The
            // first request may have made its token: a test listing pending tokens would see it.
            token = try await admin.createEnrollment(tenant: tenant, role: role, name: name, ttlSeconds: 3600).token
        }
        let cfg = ClientConfig(path: dir.appendingPathComponent("cfg-\(role)-\(name)").path)
        _ = try await ClientConfig.enroll(token: token, into: cfg, os: "Test OS 1")
        return (cfg, try APIClient(credential: cfg.credential(), poolIdleSeconds: clientPoolIdleSeconds))
    }
}

/// The time test snapshots claim: the server refuses manifests dated far from its clock.
let testNow = Int64(Date().timeIntervalSince1970)

/// Builds a small snapshot with Core alone: one file of `data`, under `name`.
/// `alsoNaming`: packs of earlier snapshots the manifest names too (as a backup that reuses them would).
func makeSnapshot(keys: WriteKeySet, files: [(String, [UInt8])], time: Int64 = testNow,
                  alsoNaming: [PackID] = [],
                  statistics: SnapshotStatistics = SnapshotStatistics()) throws -> (packs: [FinishedPack],
                                                                                    manifest: Manifest) {
    let pipeline = try PackPipeline(material: keys.shared)
    var nodes: [Node] = []
    for (name, data) in files {
        nodes.append(Node(name: Array(name.utf8), type: .file, size: UInt64(data.count),
            content: data.isEmpty ? [] : try pipeline.add(blob: data)))
    }
    let root = try pipeline.add(tree: Tree(nodes: nodes))
    let packs = try pipeline.flush()
    let header = ManifestHeader(tenant: keys.tenant, readKeyID: keys.shared.readPublicKey.keyID, host: keys.host,
        hostKey: keys.signingKey.publicKey,
                                time: Timestamp(seconds: time), nonce: (0..<16).map { _ in UInt8.random(in: 0...255) },
                                    paths: [Array("/data".utf8)],
                                tags: [], statistics: statistics, packs: packs.map(\.id) + alsoNaming,
                                    clientVersion: "test")
    return (packs, try Manifest.create(header: header, root: root, rootSeals: pipeline.seals(for: root),
                                       readPublicKey: keys.shared.readPublicKey, signingKey: keys.signingKey))
}

/// Runs `body` expecting the server to refuse it with `code`; returns the error.
@discardableResult
func refused(_ code: String, _ what: String, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () async throws -> Void) async -> APIError? {
    do {
        try await body()
        Issue.record("\(what) was allowed", sourceLocation: sourceLocation)
    } catch let e as APIError {
        #expect(e.code == code, "\(what): \(e)", sourceLocation: sourceLocation)
        return e
    } catch { Issue.record("\(what): \(error)", sourceLocation: sourceLocation) }
    return nil
}

/// `system(command)` on a thread of its own, awaited. Why: the whole suite shares as many
/// cooperative threads as the machine has cores (two here), and a test blocked on a child
/// process holds one for as long as the child runs; two such tests at once starve every
/// in-process server the other tests are talking to, and their requests time out.
func runShell(_ command: String) async -> Int32 {
    await withCheckedContinuation { (done: CheckedContinuation<Int32, Never>) in
        Thread { done.resume(returning: system(command)) }.start()
    }
}

/// Whether `body` finishes within `seconds`; if not, it is left running (detached).
func finishes(within seconds: Double, _ body: @escaping @Sendable () async -> Void) async -> Bool {
    let (stream, continuation) = AsyncStream<Bool>.makeStream()
    Task { await body(); continuation.yield(true) }
    Task { try? await Task.sleep(nanoseconds: UInt64(seconds * 1e9)); continuation.yield(false) }
    for await done in stream { return done }
    return false
}

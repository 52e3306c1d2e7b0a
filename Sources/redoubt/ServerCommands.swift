import ArgumentParser
import Foundation
import Logging
import RedoubtClient
import RedoubtCore
import RedoubtKMS
import RedoubtServer
import RedoubtStore

struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "server",
        abstract: "Create and run a repository server.",
                                                    subcommands: [ServerInit.self, ServerRun.self,
                                                        ServerRebuildCatalog.self, ServerClusterFile.self,
                                                        ServerJoin.self])
}

struct ServerInit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "init",
        abstract: "Create a server's data directory, CA, catalog, store and admin credential.")

    @Option(name: .long, help: "The data directory (created 0700).") var data: String
    @Option(name: .long, help: "Address to listen on.") var listen = "127.0.0.1:8443"
    @Option(name: .long, help: "Default minimum retention of new tenants (e.g. 30d).") var minRetention = "30d"
    @Option(name: .long,
        help: """
            Admins (requester included) that a change weakening protection needs, once there are that many.
            """) var quorum = 2
    @Option(name: .long,
        help: """
            A server limit, NAME=VALUE (repeatable; names, defaults and units in docs/PROTOCOL.md §3.2), kept in \
            server.json.
            """)
    var limit: [String] = []
    @Option(name: .long, help: """
        Keep objects in this S3 Object Lock bucket (s3://BUCKET/PREFIX) instead of DIR/store; it must prove \
        COMPLIANCE first (docs/SCALE-OUT.md).
        """) var store: String?
    @Option(name: .long, help: "With --store: the S3 endpoint URL (https, or http to loopback).") var endpoint: String?
    @Option(name: .long, help: "With --store: region for signing.") var region = "us-east-1"
    @Option(name: .long, help: """
        With --store: AWS shared-credentials file the server reads at each start; else the service's AWS environment.
        """) var credentials: String?
    @Option(name: .long, help: "With --store: PEM file of a private CA that signed the endpoint's certificate.")
    var ca: String?
    @Flag(name: .long, help: "With --store: virtual-hosted addressing instead of path-style.") var virtualHosted = false
    @Option(name: .long, help: """
        Keep the catalog in this PostgreSQL database (postgres://USER@HOST:PORT/DB[?sslmode=verify-full&\
        sslrootcert=FILE&search_path=SCHEMA]) instead of DIR/catalog.sqlite, so that other nodes can join \
        (docs/SCALE-OUT.md). No password in the URL.
        """) var catalog: String?
    @Option(name: .long, help: """
        With --catalog: a file holding the database password, read at each start (else PGPASSWORD).
        """) var catalogPasswordFile: String?

    func primaryStore() throws -> PrimaryStoreSettings? {
        guard let store else {
            guard endpoint == nil, credentials == nil, ca == nil, !virtualHosted else {
                throw ValidationError("--endpoint, --credentials, --ca and --virtual-hosted go with --store s3://…")
            }
            return nil
        }
        guard let endpoint else { throw ValidationError("--store needs --endpoint URL (the S3 endpoint)") }
        let absolute = { (p: String) in URL(fileURLWithPath: p).standardizedFileURL.path }
        let settings = PrimaryStoreSettings(url: store, endpoint: endpoint, region: region,
                                            credentialsFile: credentials.map(absolute), caFile: ca.map(absolute),
                                            virtualHosted: virtualHosted ? true : nil)
        do { _ = try settings.target() } catch let e as ServerError { throw ValidationError(e.message) }
        return settings
    }

    func catalogSettings() throws -> CatalogSettings? {
        guard let catalog else {
            guard catalogPasswordFile == nil else {
                throw ValidationError("--catalog-password-file goes with --catalog")
            }
            return nil
        }
        let settings = CatalogSettings(url: catalog, passwordFile: catalogPasswordFile.map {
            URL(fileURLWithPath: $0).standardizedFileURL.path
        })
        do { _ = try settings.target() } catch let e as ServerError { throw ValidationError(e.message) }
        return settings
    }

    func run() async throws {
        try await RedoubtCLI.run {
            let r = try parseDuration(minRetention)
            guard quorum >= 1 else { throw ValidationError("--quorum must be at least 1") }
            let limits = try applyLimits(ServerLimits(), limit)
            let primary = try primaryStore()
            let catalogSettings = try catalogSettings()
            let (settings, cred) = try await ServerHome(path: data).initialize(listen: listen, minRetention: r,
                now: Date(), limits: limits, store: primary, catalog: catalogSettings)
            try await ServerHome(path: data).setQuorum(quorum)
            print("Initialised a Redoubt server in \(ServerHome(path: data).root.path)")
            print("  URL:              \(settings.url)")
            if let t = try primary?.target() { print("  store:            \(t.redacted), Object Lock proved") }
            if let t = try catalogSettings?.target() { print("  catalog:          \(t.redacted)") }
            print("  admin credential: \(cred)  (mode 0600; keep it off protected hosts)")
            print("Next: redoubt server run --data \(data)")
            return .ok
        }
    }
}

struct ServerRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run",
        abstract: "Serve the API over TLS until SIGTERM or SIGINT.")

    @Option(name: .long, help: "The data directory.") var data: String
    @Option(name: .long, help: "Refuse snapshots whose time is further ahead of this server's clock (default 1d).")
    var snapshotTimeAhead = "1d"
    @Option(name: .long,
        help: "Refuse snapshots whose time is further before the host's newest snapshot or enrollment (default 1d).")
    var snapshotTimeMargin = "1d"
    @Option(name: .long,
        help: "A server limit for this run, NAME=VALUE (repeatable; over server.json; docs/PROTOCOL.md §3.2).")
    var limit: [String] = []
    @Option(name: .long,
        help: """
            Serve Prometheus metrics over plain HTTP at HOST:PORT/metrics, loopback only (e.g. 127.0.0.1:9464; \
            default: off). Elsewhere, scrape GET /v1/metrics over TLS with an auditor credential.
            """)
    var metricsListen: String?
    @Option(name: .long,
        help: "Notify a refusal burst at N refusals of one credential within DURATION (default 5/5m).")
    var refusalBurst = "5/5m"
    @Option(name: .long, help: """
        Write the operational log (start, stop, failed requests with their request ID, low disk space) to stderr \
        as logfmt or json lines, at level info or REDOUBT_LOG.
        """)
    var logFormat: OperationalLog.Format?
    @Option(name: .long, help: "Log a warning while less than this is free under --data (default 2G).")
    var diskWarningFree = "2G"

    func run() async throws {
        OperationalLog.format = logFormat
        try await RedoubtCLI.run {
            guard let threshold = ServerLimits.parseSize(diskWarningFree) else {
                throw ValidationError("--disk-warning-free \(diskWarningFree): give a size such as 2G")
            }
            let logger = Logger(label: "redoubt.server")
            let metricsAddress = try metricsListen.map { listen in
                do { return try MetricsListener.parse(listen) } catch let e as ServerError {
                    throw ValidationError(e.message)
                }
            }
            let home = ServerHome(path: data)
            let settings = try home.settings()
            let bounds = SnapshotTimeBounds(maxAhead: try parseDuration(snapshotTimeAhead),
                margin: try parseDuration(snapshotTimeMargin))
            let limits = try applyLimits(settings.limits ?? ServerLimits(), limit)
            // A bucket that stopped enforcing its locks must not take another backup.
            if let s3 = settings.store { try await home.proveStore(s3, node: settings.url) }
            let service = try await home.openService(logger: logger, limits: limits, timeBounds: bounds)
            let burst = refusalBurst.split(separator: "/", maxSplits: 1).map(String.init)
            guard burst.count == 2, let burstCount = Int(burst[0]) else {
                throw ValidationError("--refusal-burst takes N/DURATION, e.g. 5/5m")
            }
            do { try service.notifier.setRefusalBurst(count: burstCount, window: try parseDuration(burst[1])) }
            catch let e as ServerError { throw ValidationError(e.message) }
            if let store = service.store as? any ImmutabilityReporting, let warning = store.immutabilityWarning {
                // Why loud: without the flag, root on this host can alter packs unnoticed until verify.
                FileHandle.standardError.write(Data("WARNING: \(warning)\n".utf8))
                await service.recordImmutabilityWarning(warning)
            }
            // Descriptors written before format 2 held the write material in the clear; later
            // copies must not carry it.
            for failure in await service.sealDescriptors() {
                FileHandle.standardError.write(Data("""
                    WARNING: tenant descriptor still holds the write material in the clear: \(failure)\n
                    """.utf8))
            }
            // Hosts enrolled before host key statements existed get theirs now, so copies
            // made from here on prove who wrote every snapshot.
            do { try await service.recordHostKeys() } catch {
                FileHandle.standardError.write(Data("WARNING: host key registrations not written: \(error)\n".utf8))
            }
            guard let (host, port) = ServerHome.splitHostPort(settings.listen) else {
                throw ValidationError("bad listen address \(settings.listen)")
            }
            let app = try RedoubtHTTP.application(service: service, home: home, host: host, port: port,
                logger: logger) { bound in
                print("redoubt server listening on \(host):\(bound) (\(settings.url))")
                logger.info("server started", metadata: ["listen": "\(host):\(bound)", "url": "\(settings.url)",
                                                         "data": "\(data)", "version": "\(RedoubtVersion.string)"])
                DiskSpace.check(data, threshold: UInt64(threshold), logger: logger)
                // Why flush: under systemd or a pipe, stdout is block-buffered and the
                // readiness line would never show.
                fflush(nil)
            }
            // The server's own jobs (policies, gc, copies, lock probes, legal holds, scrub), under
            // leases; a commit wakes the loop for its copies.
            let jobs = Task { await JobScheduler(service: service).run(every: 60) }
            defer { jobs.cancel() }
            // The metrics listener lives as long as the API: it stops when the API stops.
            let metrics = metricsAddress.map { address in
                BackgroundListener(MetricsListener.application(service: service, host: address.host,
                                                               port: address.port, logger: logger) { bound in
                    print("redoubt metrics on http://\(address.host):\(bound)/metrics")
                    fflush(nil)
                }, logger: logger)
            }
            // Notifications: delivery, and an evaluation of the catalog every minute.
            let notifications = Task { await service.runNotifications() }
            defer { notifications.cancel() }
            // Low disk space is logged again every five minutes while it lasts; an S3 store
            // proves its locks again every day.
            let watch = Task {
                var lastProof = Date()
                while (try? await Task.sleep(for: .seconds(300))) != nil {
                    DiskSpace.check(data, threshold: UInt64(threshold), logger: logger)
                    if let s3 = settings.store, Date().timeIntervalSince(lastProof) >= 86400 {
                        lastProof = Date()
                        do {
                            try await home.proveStore(s3, node: settings.url)
                            service.setStoreUnproved(nil)
                        } catch {
                            service.setStoreUnproved("\(error)")
                            logger.error("the primary store no longer proves Object Lock; refusing backups", metadata: [
                                "error": "\(error)"])
                        }
                    }
                }
            }
            do { try await app.runService() } catch {
                watch.cancel()
                await metrics?.stop()
                logger.error("server stopped", metadata: ["error": "\(error)"])
                throw error
            }
            watch.cancel()
            await metrics?.stop()
            logger.info("server stopped")
            return .ok
        }
    }
}

struct ServerClusterFile: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cluster-file",
        abstract: """
            Write what another node needs to join this cluster (holds the CA's key: carry it safely, delete it).
            """)
    @Option(name: .long, help: "This node's data directory.") var data: String
    @Option(name: .long, help: "The file to write (0600; must not exist).") var out: String

    func run() async throws {
        try await RedoubtCLI.run {
            try ServerHome(path: data).writeClusterFile(to: out)
            print("""
                wrote \(out) (mode 0600). It holds the cluster CA's private key: copy it to the new node over a \
                channel you trust, run `redoubt server join --data DIR --from \(out) --listen HOST:PORT` there, then \
                delete it on both machines.
                """)
            return .ok
        }
    }
}

struct ServerJoin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "join",
        abstract: "Make a new data directory a node of an existing cluster (same catalog and store).")
    @Option(name: .long, help: "The new node's data directory (created 0700).") var data: String
    @Option(name: .long, help: "The cluster file from `redoubt server cluster-file`.") var from: String
    @Option(name: .long, help: "Address to listen on.") var listen = "127.0.0.1:8443"
    @Option(name: .long, help: """
        The URL this node gives clients it enrolls (e.g. a load balancer's https://backup.example:8443); \
        default: its own listen address. Its host is added to the node's certificate.
        """) var url: String?

    func run() async throws {
        try await RedoubtCLI.run {
            let home = ServerHome(path: data)
            let settings = try await home.join(from: from, listen: listen, url: url, now: Date())
            print("Joined the cluster in \(home.root.path)")
            print("  URL:      \(settings.url)")
            if let t = try settings.catalog?.target() { print("  catalog:  \(t.redacted)") }
            if let t = try settings.store?.target() { print("  store:    \(t.redacted), Object Lock proved") }
            print("Next: redoubt server run --data \(data); then delete \(from)")
            return .ok
        }
    }
}

struct ServerRebuildCatalog: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rebuild-catalog",
                                                    abstract: """
                                                        Rebuild the catalog from the store alone (run with the server \
                                                        stopped).
                                                        """)
    @Option(name: .long, help: "The data directory.") var data: String
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let r = try await CatalogRebuilder.rebuild(home: ServerHome(path: data),
                logger: Logger(label: "redoubt.rebuild"))
            if json { try printJSON(r) } else {
                print("""
                    rebuilt the catalog: \(r.tenants) tenants, \(r.packs) packs (\(r.chunks) chunks), \(r.snapshots) \
                    snapshots
                    """)
                if let old = r.previousCatalog { print("  previous catalog kept as \(old)") }
                for x in r.rejected { print("  left out: \(x)") }
                for t in r.toDo { print("  TO DO: \(t)") }
            }
            return r.rejected.isEmpty ? .ok : .partial
        }
    }
}

struct AdminCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "admin",
        abstract: "Manage tenants and enrollments (admin credential).",
                                                    subcommands: [TenantCommand.self, HostCommand.self,
                                                        RestorerCommand.self, AuditorCommand.self, TokenCommand.self,
                                                        GCCommand.self,
                                                                  RequestCommand.self, AdminsCommand.self,
                                                                      QuorumCommand.self, AdminCopyCommand.self,
                                                                      AdminHoldCommand.self,
                                                                  AdminPolicyCommand.self,
                                                                  AdminScheduleCommand.self, AdminJobsCommand.self,
                                                                  AdminNotifyCommand.self, AdminStatus.self,
                                                                  AdminDetectionCommand.self,
                                                                  AdminVerdictClearCommand.self])
    // Declared here too so `redoubt admin --credential FILE tenant …` parses; the
    // subcommands read the same value.
    @OptionGroup var admin: AdminOptions
}

struct AdminOptions: ParsableArguments {
    @Option(name: .long, help: "The admin credential file (from `redoubt server init`).") var credential: String

    func client() throws -> APIClient { try APIClient(credential: loadCredential(credential)) }
}

struct TenantCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tenant",
        abstract: "Create and list tenants; rotate, escrow or shred their read keys.",
                                                    subcommands: [TenantCreate.self, TenantList.self, TenantSet.self,
                                                        TenantSetRetention.self, TenantRotateKey.self,
                                                        TenantEscrow.self, TenantShred.self,
                                                        TenantRestoreMaterial.self])
}

struct TenantCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "create",
        abstract: "Create a tenant: its keys are made here and the read key leaves only wrapped.")
    @OptionGroup var admin: AdminOptions
    @Argument(help: "Tenant name (a-z, 0-9, '.', '-', '_').") var name: String
    @Option(name: .long,
        help: """
            Key provider URI that wraps the read key: passphrase: (default), \
            kmip://HOST:PORT/new?ca=FILE&cert=FILE&key=FILE, awskms://REGION/new[?endpoint=URL] (…/new creates the \
            KEK) or pkcs11:token=LABEL;object=LABEL?module-path=FILE&pin-source=FILE (creates the KEK on the token if \
            the label is new).
            """) var keyProvider = "passphrase:"
    @Option(name: .long, help: "Minimum retention of this tenant's snapshots (e.g. 30d).") var minRetention: String?
    @Option(name: .long,
        help: "File holding the passphrase (else REDOUBT_PASSPHRASE or a prompt).") var passphraseFile: String?
    @Option(name: .long, help: ArgumentHelp(DedupScopeHelp.text, valueName: "host|tenant")) var dedupScope = "host"

    func run() async throws {
        try await RedoubtCLI.run {
            guard ["host", "tenant"].contains(dedupScope) else {
                throw ValidationError("--dedup-scope is host or tenant")
            }
            // A `…/new` URI: the tenant's KEK is created (and activated) in the KMS or HSM now.
            let provider = try await RedoubtCLI.keyProvider(uri: keyProvider,
                passphraseFile: passphraseFile).preparingKEK(tenant: name)
            let keys = try TenantKeys.generate()
            let wrapped = try await provider.wrapChecked(keys.readKey, context: KeyContext(tenant: name, keyVersion: 1))
            let material = keys.sharedWriteMaterial.encode().withUnsafeBytes { Data($0).base64EncodedString() }
            let request = Wire.CreateTenantRequest(
                name: name, readPublicKey: Data(keys.readKey.publicKey.rawRepresentation).base64EncodedString(),
                    writeMaterial: material,
                wrappedReadKey: String(decoding: try wrapped.encoded(), as: UTF8.self),
                    minRetentionSeconds: try minRetention.map(parseDuration),
                dedupScope: dedupScope)
            let info = try await RedoubtCLI.with(try admin.client()) { try await $0.createTenant(request) }
            print("Created tenant \(info.name): read key \(info.readKeyID), wrapped by \(wrapped.provider), "
                + """
                    minimum retention \(Int(info.minRetentionSeconds / 86400)) days, dedup scope \
                    \(info.dedupScope ?? dedupScope)
                    """)
            return .ok
        }
    }
}

struct TenantList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List tenants.")
    @OptionGroup var admin: AdminOptions
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let list = try await RedoubtCLI.with(try admin.client()) { try await $0.tenants() }
            if json { try printJSON(list) } else {
                for t in list {
                    print("\(t.name)  read-key \(t.readKeyID)  min-retention \(Int(t.minRetentionSeconds / 86400))d"
                        + "  dedup-scope \(t.dedupScope ?? "tenant")")
                }
            }
            return .ok
        }
    }
}

/// What `--dedup-scope` means, for `tenant create` and `tenant set`.
enum DedupScopeHelp {
    static let text = "Which chunks a host may reuse: host (default) — only chunks its own credential uploaded; "
        + "tenant — also every chunk of the tenant the server verified, which saves storage when hosts hold the same "
        + "files but lets a host that is taken confirm guesses about other hosts' files (a PIN, a password line) by "
        + "asking whether their chunks exist. (No host can make another reuse bytes that are not what it would have "
        + "stored: the server re-hashes every chunk.) Widening to tenant needs the admins' quorum."
}

/// `host add`, `restorer add`, `auditor add`: print a one-time enrollment token.
protocol EnrollmentCommand: AsyncParsableCommand {
    var admin: AdminOptions { get }
    var enrollment: EnrollmentArguments { get }
    static var role: String { get }
}

struct EnrollmentArguments: ParsableArguments {
    @Argument(help: "The tenant.") var tenant: String
    @Argument(help: "The host's or person's name (A-Z, a-z, 0-9, '.', '-', '_').") var name: String
    @Option(name: .long, help: "How long the token stays valid.") var ttl = "24h"
}

extension EnrollmentCommand {
    func run() async throws {
        try await RedoubtCLI.run {
            let (tenant, name) = (enrollment.tenant, enrollment.name)
            let ttlSeconds = try parseDuration(enrollment.ttl)
            let r = try await RedoubtCLI.with(try admin.client()) {
                try await $0.createEnrollment(tenant: tenant, role: Self.role, name: name, ttlSeconds: ttlSeconds)
            }
            FileHandle.standardError.write(Data("""
                One-time \(Self.role) token for \(tenant)/\(name), valid until \(r.expires). On that host run:\n  \
                redoubt enroll TOKEN\n
                """.utf8))
            print(r.token)
            return .ok
        }
    }
}

struct HostCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "host",
        abstract: "Enroll, list and revoke protected hosts (writers).", subcommands: [HostAdd.self, HostList.self,
        HostSet.self, HostRevoke.self])
}

struct HostAdd: EnrollmentCommand {
    static let configuration = CommandConfiguration(commandName: "add",
        abstract: "Print a one-time token that enrolls a host as a writer.")
    static let role = "writer"
    @OptionGroup var admin: AdminOptions
    @OptionGroup var enrollment: EnrollmentArguments
}

struct RestorerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "restorer",
        abstract: "Enroll, list and revoke restore hosts.", subcommands: [RestorerAdd.self, RestorerList.self,
        RestorerRevoke.self])
}

struct RestorerAdd: EnrollmentCommand {
    static let configuration = CommandConfiguration(commandName: "add",
        abstract: "Print a one-time token that enrolls a restorer.")
    static let role = "restorer"
    @OptionGroup var admin: AdminOptions
    @OptionGroup var enrollment: EnrollmentArguments
}

struct AuditorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "auditor",
        abstract: "Enroll, list and revoke auditors.", subcommands: [AuditorAdd.self, AuditorList.self,
        AuditorRevoke.self])
}

struct AuditorAdd: EnrollmentCommand {
    static let configuration = CommandConfiguration(commandName: "add",
        abstract: "Print a one-time token that enrolls an auditor.")
    static let role = "auditor"
    @OptionGroup var admin: AdminOptions
    @OptionGroup var enrollment: EnrollmentArguments
}

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "audit",
        abstract: "Read and check the tamper-evident audit log.", subcommands: [AuditList.self, AuditVerify.self])
}

struct AuditList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List audit records (admin or auditor credential).",
        discussion: """
            Pages through the whole log (or --limit records after --after), asking the server for \
            1000 records at a time. --json writes one JSON array, element by element, so it can be \
            read before the command ends; with --follow it writes JSON Lines instead (one record \
            per line, no enclosing array), since the output never ends. Text output escapes control \
            and other invisible characters (\\xNN, \\u{N}).
            """)
    @Option(name: .long, help: "An admin or auditor credential file.") var credential: String
    @Option(name: .long, help: "Start after this record number (0: from the first).") var after: Int64 = 0
    @Option(name: .long, help: "Print at most this many records (default: all).") var limit: Int?
    @Flag(name: .long, help: "Keep running and print new records as they are written (polls the server).")
    var follow = false
    @Option(name: .long, help: "Seconds between polls with --follow.") var interval: Double = 2
    @Flag(name: .long, help: "Print JSON (an array; JSON Lines with --follow).") var json = false

    /// Records asked for per request (the server allows up to 10 000).
    static let pageSize = 1000

    func run() async throws {
        try await RedoubtCLI.run {
            guard after >= 0 else { throw ValidationError("--after must be a record number, 0 or more") }
            if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
            guard interval >= 0.1, interval <= 3600 else {
                throw ValidationError("--interval must be between 0.1 and 3600 seconds")
            }
            var out = AuditOutput(json: json, lines: follow)
            try await RedoubtCLI.with(try APIClient(credential: loadCredential(credential))) { client in
                var cursor = after
                var printed = 0
                while limit.map({ printed < $0 }) ?? true {
                    let want = min(Self.pageSize, limit.map { $0 - printed } ?? Self.pageSize)
                    let page = try await client.audit(after: cursor, limit: want)
                    // Only an empty page is the log's end for now: the server also shortens pages by size.
                    guard let last = page.last else {
                        if !follow { break }
                        try await Task.sleep(nanoseconds: UInt64(interval * 1e9))
                        continue
                    }
                    for entry in page { try out.write(entry) }
                    printed += page.count
                    cursor = last.seq
                    out.flush()
                }
            }
            out.finish()
            return .ok
        }
    }
}

/// Writes audit records as they arrive: text lines, a JSON array element by element, or
/// JSON Lines. Flushed after each page, so a reader (or `--follow`'s watcher) sees them.
struct AuditOutput {
    let json: Bool
    /// JSON Lines instead of one array.
    let lines: Bool
    private var opened = false
    private let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .iso8601
        return e
    }()

    init(json: Bool, lines: Bool) {
        self.json = json
        self.lines = lines
    }

    mutating func write(_ a: Wire.AuditEntry) throws {
        guard json else {
            let fields = [a.actor, a.source, a.action, a.object, a.outcome, a.detail].map(shown)
            print("\(a.seq)  \(a.time)  " + fields.joined(separator: "  "))
            return
        }
        let text = SafeText.terminalSafeJSON(String(decoding: try encoder.encode(a), as: UTF8.self))
        if lines { print(text); return }
        print((opened ? "," : "[") + text)
        opened = true
    }

    /// `print` buffers stdout when it is not a terminal; nil flushes every C stream.
    func flush() { fflush(nil) }

    /// Closes the JSON array (an empty one if nothing was written).
    func finish() {
        if json && !lines { print(opened ? "]" : "[]") }
        flush()
    }
}

/// `audit verify`: on the repository host, re-walks the hash chain in the catalog and, given
/// an anchored chain head (from an S3 copy or a media set), also proves the log was not cut back.
struct AuditVerify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "verify",
                                                    abstract: """
                                                        Check the audit hash chain; name the first edited, removed, \
                                                        reordered or truncated record.
                                                        """)
    @Option(name: .long, help: "The server's data directory.") var data: String
    @Option(name: .long,
        help: """
            An anchored chain head SEQ:HASH (as printed by this command) the log must still contain.
            """) var anchor: String?
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            var head: Catalog.AuditChainHead?
            if let anchor {
                let parts = anchor.split(separator: ":", maxSplits: 1).map(String.init)
                guard parts.count == 2, let seq = Int64(parts[0]), seq >= 0, parts[1].count == 64 else {
                    throw ValidationError("""
                        --anchor must be SEQ:HASH (64 hex digits), as printed by `redoubt audit verify`
                        """)
                }
                head = Catalog.AuditChainHead(seq: seq, hash: parts[1].lowercased())
            }
            let report = try await ServerHome(path: data).verifyAudit(anchor: head)
            if json { try printJSON(report) } else if let bad = report.firstBad {
                print("audit log BROKEN at record \(bad) (\(report.records) records verified before it)")
            } else {
                print("audit log intact: \(report.records) records; chain head \(report.head.seq):\(report.head.hash)")
            }
            return report.ok ? .ok : .integrity
        }
    }
}

struct GCCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc", abstract: "Remove a tenant's expired snapshots and the packs no snapshot names any more.",
        discussion: """
            Only what no lock protects goes: a snapshot whose retention has expired (unless a \
            legal hold covers it, or it is its host's newest), and a pack no remaining snapshot \
            names whose own lock has expired and that is over 7 days old. Bucket copies and \
            media sets are not touched. A backup committing while gc removes a pack it reuses \
            fails with E_PACKS_MISSING and succeeds when run again.
            """)
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The tenant.") var tenant: String
    @Flag(name: .long, help: "Report what would be removed; change nothing.") var dryRun = false
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let r = try await RedoubtCLI.with(try admin.client()) {
                try await $0.collectGarbage(tenant: tenant, dryRun: dryRun)
            }
            if json { try printJSON(r) } else {
                print("""
                    \(dryRun ? "would remove" : "removed") \(r.snapshotsRemoved.count) expired snapshots and \
                    \(r.packsRemoved) packs 
                    """
                      + """
                          (\(formatBytes(UInt64(max(0, r.bytesRemoved))))) of tenant \(tenant); kept \(r.keptNewest) \
                          expired as their host's newest, \(r.keptHeld) under a legal hold
                          """)
                for s in r.snapshotsRemoved { print("  \(s.prefix(8))") }
                if r.pendingDeletes > 0 {
                    print("  \(r.pendingDeletes) store objects could not be deleted yet (see the server log); the "
                        + "next gc retries them")
                }
            }
            return r.pendingDeletes > 0 ? .partial : .ok
        }
    }
}

/// `--limit NAME=VALUE` settings over `base`; a bad one is a usage error (exit 2).
func applyLimits(_ base: ServerLimits, _ settings: [String]) throws -> ServerLimits {
    do { return try base.applying(settings) } catch let e as ServerError { throw ValidationError(e.message) }
}

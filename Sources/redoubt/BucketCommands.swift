import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore
import RedoubtKMS
import RedoubtServer
import RedoubtStore

/// `--from s3://BUCKET/PREFIX` for `restore`, `snapshots` and `verify`: read a bucket copy
/// instead of asking the server. Absent, those commands talk to the server as before.
struct FromBucketOptions: ParsableArguments {
    @Option(name: .long,
        help: "Read a bucket copy instead of the server: s3://BUCKET/PREFIX (with --endpoint).") var from: String?
    @Option(name: .long, help: "With --from: the S3 endpoint URL.") var endpoint: String?
    @Option(name: .long, help: "With --from: region for signing.") var region = "us-east-1"
    @Option(name: .long,
        help: "With --from: AWS shared-credentials file; else the AWS environment.") var credentials: String?
    @Flag(name: .long, help: "With --from: virtual-hosted addressing instead of path-style.") var virtualHosted = false
    @Option(name: .long,
        help: "With --from: PEM file of the private CA that signed the endpoint's certificate.") var ca: String?
    @Option(name: .long, help: "With --from: the tenant (default: the bucket's only tenant).") var tenant: String?

    /// The bucket copy, or nil when `--from` is absent (then the other options must be too).
    func store() throws -> S3Store? {
        guard let from else {
            if endpoint != nil || credentials != nil || tenant != nil || ca != nil {
                throw ValidationError("--endpoint, --credentials, --ca and --tenant go with --from s3://BUCKET/PREFIX")
            }
            return nil
        }
        guard let endpoint else {
            throw ValidationError("--from needs --endpoint URL (e.g. https://s3.eu-west-1.amazonaws.com)")
        }
        return try BucketOptions.store(path: from, flag: "--from", endpoint: endpoint, region: region,
            credentials: credentials,
                                       virtualHosted: virtualHosted, ca: ca)
    }

    /// `--tenant`, else the bucket's only tenant; several or none is an error that lists them.
    func tenant(in store: S3Store) async throws -> String {
        if let tenant { return tenant }
        let all = try await BucketVerify.tenants(in: store)
        guard all.count == 1, let only = all.first else {
            throw ValidationError(all.isEmpty ? """
                \(from ?? "the bucket") holds no tenant (nothing under t/): check --from and its prefix
                """
                : "\(from ?? "the bucket") holds \(all.count) tenants (\(all.joined(separator: ", "))): pick one with "
                    + "--tenant")
        }
        return only
    }
}

/// The bucket-copy commands, shared by `copy snapshots|restore|verify` and the `--from`
/// spellings of `snapshots`, `restore` and `verify`.
enum BucketCommands {
    struct Row: Encodable {
        let id: String; let host: String; let time: Int64; let packs: Int
        /// `HostKeyRegistry.Status`, or `unchecked` without a pinned CA.
        let authorship: String
    }

    /// Lists the tenant's snapshots in the copy (oldest first), optionally one host's, each
    /// with who wrote it as the copy's host key statements prove under `trustRoot` (the CA
    /// pinned in `cfg`'s credential; `unchecked` when there is none): whoever can write the
    /// copy can add snapshots, and a listing must not show them as genuine.
    static func snapshots(store: S3Store, tenant: String, host: String?, json: Bool,
                          cfg: ClientConfig) async throws -> Exit {
        let manifests = try await BucketCopy.manifests(in: store, tenant: tenant)
        let root = try? cfg.trustRoot()
        if root == nil {
            let note = "note: no CA pinned in \(cfg.directory.path)/credential.json: authorship is not checked "
                + "(give --config of a restorer)\n"
            FileHandle.standardError.write(Data(note.utf8))
        }
        var registry: HostKeyRegistry?
        if let root {
            registry = HostKeyRegistry(tenant: tenant, trustRoot: root,
                                       objects: try await hostKeyStatements(store: store, tenant: tenant))
        }
        var rows: [Row] = []
        for (id, bytes) in manifests {
            let m = try Manifest.parse(bytes, expectedID: SnapshotID(hex: id))
            if let host, m.header.host != host { continue }
            rows.append(Row(id: id, host: m.header.host, time: m.header.time.seconds, packs: m.header.packs.count,
                            authorship: registry?.status(of: m).rawValue ?? "unchecked"))
        }
        rows.sort { $0.time < $1.time }
        if json { try printJSON(rows) } else {
            for r in rows {
                let mark = r.authorship == "verified" ? "" : "  NOT VERIFIED: \(r.authorship)"
                let when = Date(timeIntervalSince1970: TimeInterval(r.time))
                print("\(r.id.prefix(8))  \(when)  \(r.host)  \(r.packs) packs" + mark)
            }
        }
        return .ok
    }

    /// Restores one snapshot from the copy with the restorer's read key.
    static func restore(store: S3Store, place: String, tenant: String, snapshot: String, target: String,
        config cfg: ClientConfig,
                        key: ReadKeyOptions, options: RestoreOptions = RestoreOptions(),
                        lister: String = "redoubt copy snapshots", json: Bool = false) async throws -> Exit {
        let (manifest, readKey) = try await open(store: store, place: place, tenant: tenant, snapshot: snapshot,
            config: cfg, key: key, lister: lister)
        let result = try await RestoreSupport.restore(manifest: manifest, readKey: readKey,
            chunkIDKey: try cfg.sharedMaterial().chunkIDKey,
                                                      source: BucketPackSource(store: store, tenant: tenant),
                                                          target: target, options: options)
        if json {
            try printJSON(RestoreJSON(result, seconds: nil))
        } else {
            print("restored \(result.files) files, \(formatBytes(result.bytesWritten)) from \(place) into \(target)")
            for w in result.warnings { print("  warning: \(w)") }
            for d in result.damaged { print("  DAMAGED: \(d)") }
        }
        if !result.damaged.isEmpty { return .integrity }
        return result.warnings.isEmpty ? .ok : .partial
    }

    /// The snapshot's manifest from the bucket copy and the read key, unwrapped in memory
    /// (from the copy's own descriptors unless `--read-key` names an escrow copy).
    static func open(store: S3Store, place: String, tenant: String, snapshot: String, config cfg: ClientConfig,
        key: ReadKeyOptions,
                     lister: String) async throws -> (Manifest, ReadPrivateKey) {
        let copies = key.readKey == nil ? try await wrappedReadKeys(store: store, tenant: tenant, config: cfg) : []
        let readKey = try await key.unwrap(config: cfg, copies: copies)
        let manifests = try await BucketCopy.manifests(in: store, tenant: tenant)
        let manifest = try RestoreSupport.manifest(matching: snapshot, in: manifests, place: "in \(place)",
                                                   lister: lister)
        // Why: the bucket's writer could have put the manifest there; only the pinned CA's
        // registrations say which host keys may sign this tenant's snapshots.
        let statements = try await hostKeyStatements(store: store, tenant: tenant)
        try cfg.checkAuthorship(manifest, tenant: tenant, statements: statements)
        return (manifest, readKey)
    }

    /// The host key statements in the copy (originals), by key. Oversized objects and any
    /// beyond `maxStatements` are skipped with a note: whoever can write the bucket can add
    /// objects, and they must not make a restore unbounded.
    static func hostKeyStatements(store: S3Store, tenant: String) async throws -> [(name: String, bytes: [UInt8])] {
        var out: [(name: String, bytes: [UInt8])] = []
        let names = try await store.originalNames(prefix: HostKeyObjects.prefix(tenant: tenant)).sorted()
        if names.count > maxStatements {
            let note = "note: \(names.count) host key objects in the copy; reading the first \(maxStatements)\n"
            FileHandle.standardError.write(Data(note.utf8))
        }
        for name in names.prefix(maxStatements) {
            guard let key = ObjectKey(name) else { continue }
            if let info = try await store.head(key), info.size > HostKeyStatement.maxSize {
                let note = "note: skipping \(name): \(info.size) bytes is not a host key statement\n"
                FileHandle.standardError.write(Data(note.utf8))
                continue
            }
            out.append((name, try await store.get(key)))
        }
        return out
    }

    static let maxStatements = 1 << 16

    /// The wrapped read keys in the copy's tenant descriptors, newest first, so that a
    /// restore from the bucket needs no server (and after a rotation gets the current
    /// wrapping, which the enrollment copy is not). Descriptors that do not decode, or
    /// whose key service is not the enrolled one, are skipped with a note
    /// (`ReadKeyResolver.copy` says why); `ReadKeyResolver.unwrap` checks each key's ID
    /// against the enrollment's.
    static func wrappedReadKeys(store: S3Store, tenant: String, config: ClientConfig) async throws -> [(name: String,
        key: WrappedReadKey)] {
        let names = try await store.originalNames(prefix: RepositoryLayout.tenantPrefix(tenant))
            .compactMap { n in BucketVerify.descriptorVersion(n, tenant: tenant).map { (n, $0) } }
            .sorted { $0.1 > $1.1 }
        var out: [(name: String, key: WrappedReadKey)] = []
        for (name, _) in names {
            guard let key = ObjectKey(name) else { continue }
            do {
                // A descriptor is a few KiB; a huge object under that name is not one.
                if let info = try await store.head(key), info.size > 1 << 20 {
                    FileHandle.standardError.write(Data("""
                        note: skipping \(name): \(info.size) bytes is not a tenant descriptor\n
                        """.utf8))
                    continue
                }
                let resolver = RestoreSupport.resolver(config: config, passphraseFile: nil)
                if let w = try resolver.copy(descriptor: try await store.get(key), name: name, tenant: tenant) {
                    out.append((name, w))
                }
            } catch {
                FileHandle.standardError.write(Data("""
                    note: skipping \(name): not a readable tenant descriptor (\(error))\n
                    """.utf8))
            }
        }
        return out
    }

    /// Checks every object of the tenant's copy (hash, lock) and that no pack is missing.
    /// Exit 5 if anything is missing, wrong or unlocked; 8 if only expiring or extra objects.
    /// `config`: whose pinned server CA checks who wrote each snapshot; without one (no
    /// enrollment here) authorship is not checked, and a note says so.
    static func verify(store: S3Store, place: String, tenant: String, minRetain: String?, json: Bool,
                       config: ClientConfig? = nil) async throws -> Exit {
        let min = try minRetain.map(parseDuration) ?? 0
        let root = try? config?.trustRoot()
        if root == nil {
            let note = "note: no pinned server CA (--config of an enrolled restorer): "
                + "who wrote each snapshot is not checked\n"
            FileHandle.standardError.write(Data(note.utf8))
        }
        let report = try await BucketVerify.run(store: store, tenant: tenant, now: Date(), minRetain: min,
                                                trustRoot: root) { line in
            FileHandle.standardError.write(Data("  verify: \(line)\n".utf8))
        }
        if json {
            try printJSON(report)
        } else {
            print("""
                tenant \(tenant) in \(place): \(report.objects) objects (\(formatBytes(UInt64(report.bytes)))) \
                checked; 
                """
                + "\(report.manifests) snapshots, \(report.packs) packs")
            for (label, list) in [("MISSING", report.missing), ("WRONG", report.wrong), ("UNLOCKED", report.unlocked),
                                  ("EXPIRING", report.expiring), ("EXTRA", report.extra)] {
                for f in list { print("  \(label): \(f.key): \(f.detail)") }
            }
            print(report.clean ? "OK" : report.intact ? "intact, with warnings" : """
                NOT INTACT: do not count on this copy until fixed
                """)
        }
        return report.intact ? (report.clean ? .ok : .partial) : .integrity
    }
}

struct CopyVerify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: """
            Check a tenant's bucket copy alone (no server, catalog or key): every object's hash and COMPLIANCE lock, \
            and no pack missing.
            """)
    @Argument(help: "The tenant.") var tenant: String
    @OptionGroup var bucket: BucketOptions
    @Option(name: .long,
        help: "Also report objects whose lock ends sooner than this from now (e.g. 30d).") var minRetain: String?
    @Flag(name: .long,
        help: "Print JSON: {objects, bytes, missing, wrong, unlocked, expiring, extra}.") var json = false
    @Option(name: .long,
            help: "An enrolled client's configuration directory: its pinned server CA checks who wrote each snapshot.")
    var config: String?

    func run() async throws {
        try await RedoubtCLI.run {
            try await BucketCommands.verify(store: try bucket.store(), place: bucket.to, tenant: tenant,
                                            minRetain: minRetain, json: json,
                                            config: config.map { ClientConfig(path: $0) })
        }
    }
}

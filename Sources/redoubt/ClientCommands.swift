import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore
import RedoubtKMS

struct ConfigOption: ParsableArguments {
    @Option(name: .long,
        help: "Client configuration directory (default ~/.config/redoubt or REDOUBT_CONFIG).") var config: String?
    var resolved: ClientConfig { ClientConfig(path: config) }
}

struct EnrollCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "enroll",
        abstract: "Enroll this host with a one-time token; its keys are made here.")
    @Argument(help: "The token printed by `redoubt admin host add` (or restorer/auditor add).") var token: String
    @OptionGroup var config: ConfigOption

    func run() async throws {
        try await RedoubtCLI.run {
            let cred = try await ClientConfig.enroll(token: token, into: config.resolved, os: osPrettyName())
            print("Enrolled \(cred.name) as \(cred.role) of tenant \(cred.tenant ?? "-") at \(cred.url); "
                + "configuration in \(config.resolved.directory.path)")
            return .ok
        }
    }
}

struct SnapshotsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "snapshots",
        abstract: "List snapshots (a host sees only its own).")
    @OptionGroup var config: ConfigOption
    @Option(name: .long, help: "Only this host's snapshots.") var host: String?
    @Flag(name: .long, help: "Print JSON.") var json = false
    @OptionGroup(title: "A bucket copy instead of the server") var bucket: FromBucketOptions

    func run() async throws {
        try await RedoubtCLI.run {
            if let store = try bucket.store() {
                let tenant = try await bucket.tenant(in: store)
                return try await BucketCommands.snapshots(store: store, tenant: tenant, host: host, json: json,
                                                          cfg: config.resolved)
            }
            let list = try await RedoubtCLI.with(try APIClient(credential: config.resolved.credential())) {
                try await $0.snapshots(host: host)
            }
            if json {
                try printJSON(list)
            } else {
                let f = ISO8601DateFormatter()
                // NEW: what the snapshot uploaded after dedup. A sudden jump (most of SIZE) is
                // what a host whose files were just encrypted looks like.
                // COMMITTED is the server's time, the one that orders snapshots and decides
                // retention; the host's own clock is in --json (`time`).
                // KEPT BY: the retention rules keeping each snapshot (only when a policy covers some).
                let policies = list.contains { $0.keptBy != nil }
                // VERDICT: the server's ransomware verdict; a suspect one's reasons follow on the next lines.
                let verdicts = list.contains { $0.verdict != nil }
                print("ID        COMMITTED             HOST            FILES     SIZE        NEW         RETAIN UNTIL "
                    + "         " + (policies ? "KEPT BY                     " : "") + (verdicts ? "VERDICT  " : "")
                    + "PATHS")
                for s in list {
                    let more = (s.pathCount ?? 0) - s.paths.count
                    let paths: String = s.paths.map(shown).joined(separator: " ") + (more > 0 ? " (+\(more) more)" : "")
                    let sizes: String = formatBytes(s.statistics.bytesTotal).rightPadded(to: 10) + "  "
                        + formatBytes(s.statistics.bytesUploaded).rightPadded(to: 10)
                    let line: String = "\(shown(String(s.id.prefix(8))))  \(f.string(from: s.committedAt))  "
                        + "\(shown(s.host).rightPadded(to: 14))  \(String(s.statistics.files).rightPadded(to: 8))  "
                    let kept = (s.keptBy ?? []).map { $0.rule + ($0.final ? "" : "*") }.joined(separator: ",")
                    let keptColumn = policies ? (kept.isEmpty ? "-" : kept).rightPadded(to: 26) + "  " : ""
                    let verdictColumn = verdicts ? (s.verdict ?? "-").rightPadded(to: 7) + "  " : ""
                    print(line + sizes + "  \(f.string(from: s.retainUntil))  " + keptColumn + verdictColumn + paths)
                    if s.verdict == "suspect" || s.verdict == "unknown" {
                        for r in s.verdictReasons ?? [] { print("          \(s.verdict ?? ""): \(shown(r))") }
                    }
                }
            }
            return .ok
        }
    }
}

struct VerifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: """
            Check a snapshot: the server re-hashes every pack (no key); --deep decrypts and checks every chunk \
            (restorer).
            """)
    @Argument(help: """
        Snapshot ID, a unique prefix (8+ hex digits) or latest (with --host H: that host's newest); omitted with \
        --from, which checks the whole copy.
        """) var snapshot: String?
    @Flag(name: .long, help: "Decrypt every chunk and check it (needs the read key).") var deep = false
    @Flag(name: .long,
        help: """
            With --deep and no SNAPSHOT: every snapshot of the tenant (or of --host); names each snapshot that \
            references a chunk that does not open, and reports each damaged pack to the server, which names the host \
            that uploaded it.
            """)
    var all = false
    @Option(name: .long, help: "With --deep --all: only this host's snapshots; with latest: that host's newest.")
    var host: String?
    @Flag(name: .long, help: """
        With --deep and no SNAPSHOT: open the packs never deep-verified first, then those verified longest ago, \
        within a byte budget (run daily, e.g. by contrib/redoubt-verify.timer).
        """)
    var rolling = false
    @Option(name: .long, help: "With --rolling: bytes of packs to open this run (e.g. 200G).") var budget: String?
    @Option(name: .long, help: """
        With --rolling: size the budget so that, run daily, every pack is re-opened within N days (default 30).
        """)
    var days: Int?
    @Flag(name: .long, help: "Show the tenant's deep-verify state (packs never verified, the oldest verify) and exit.")
    var status = false
    @OptionGroup var config: ConfigOption
    @OptionGroup(title: "The read key") var key: ReadKeyOptions
    @Flag(name: .long, help: "Print JSON.") var json = false
    @OptionGroup(title: "A bucket copy instead of the server") var bucket: FromBucketOptions
    @Option(name: .long,
        help: """
            With --from: also report objects whose lock ends sooner than this from now (e.g. 30d).
            """) var minRetain: String?

    func run() async throws {
        try await RedoubtCLI.run {
            if let store = try bucket.store() {
                // The bucket alone: every object of the tenant, no key (so no --deep).
                guard snapshot == nil, !deep else {
                    throw ValidationError("verify --from checks the whole copy without a key: drop SNAPSHOT and --deep")
                }
                return try await BucketCommands.verify(store: store, place: bucket.from ?? "",
                    tenant: try await bucket.tenant(in: store),
                                                       minRetain: minRetain, json: json, config: config.resolved)
            }
            if rolling || status {
                guard snapshot == nil, !all, host == nil else {
                    throw ValidationError("--rolling and --status cover the whole tenant: "
                                          + "drop SNAPSHOT, --all and --host")
                }
                guard deep || status else { throw ValidationError("--rolling goes with --deep") }
                return status ? try await deepVerifyStatus() : try await verifyRolling()
            }
            if budget != nil || days != nil { throw ValidationError("--budget and --days go with --deep --rolling") }
            if all {
                guard deep, snapshot == nil else {
                    throw ValidationError("--all goes with --deep and without SNAPSHOT")
                }
                return try await verifyAll()
            }
            guard let snapshot else {
                throw ValidationError("name the snapshot to verify (or --from s3://BUCKET/PREFIX for a bucket copy)")
            }
            if minRetain != nil { throw ValidationError("--min-retain goes with --from s3://BUCKET/PREFIX") }
            let cfg = config.resolved
            return try await RedoubtCLI.with(try APIClient(credential: cfg.credential())) { client in
                let report = try await client.verify(try await SnapshotRef.resolve(snapshot, host: host,
                                                                                   client: client))
                var damaged = report.damaged + report.missing
                var chunks = 0
                if deep {
                    let readKey = try await key.unwrap(config: cfg)
                    let material = try cfg.sharedMaterial()
                    let manifestBytes = try await client.manifestBytes(report.snapshot)
                    let manifest = try Manifest.parse(manifestBytes, expectedID: SnapshotID(hex: report.snapshot))
                    _ = try manifest.openRoot(readKey: readKey)
                    let decompressor = try ChunkDecompressor()
                    for p in manifest.header.packs {
                        do {
                            let opened = try PackReader.open(try await client.pack(p), expectedID: p, readKey: readKey)
                            let seals = try opened.indexSeals(readKey: readKey)
                            for e in opened.entries {
                                do {
                                    _ = try opened.chunk(e, seal: seals[e.chunkID], chunkIDKey: material.chunkIDKey,
                                                         decompressor: decompressor)
                                    chunks += 1
                                } catch { damaged.append("\(error)") }
                            }
                        } catch { damaged.append("\(error)") }
                    }
                }
                if json {
                    try printJSON(VerifyJSON(snapshot: report.snapshot, packsChecked: Int(report.packsChecked),
                                             bytesChecked: Int64(report.bytesChecked), chunksDecrypted: Int(chunks),
                                                 problems: damaged))
                } else {
                    print("""
                        snapshot \(report.snapshot): \(report.packsChecked) packs, \
                        \(formatBytes(UInt64(report.bytesChecked))) re-hashed on the server
                        """
                        + (deep ? ", \(chunks) chunks decrypted and checked" : ""))
                    for d in damaged { print("  DAMAGED: \(d)") }
                    print(damaged.isEmpty ? "OK" : "\(damaged.count) problem(s) found")
                }
                return damaged.isEmpty ? .ok : .integrity
            }
        }
    }

    /// Every snapshot of the tenant (or host), each pack opened once; damaged packs are
    /// reported to the server, which answers with the host that uploaded them.
    private func verifyAll() async throws -> Exit {
        let cfg = config.resolved
        return try await RedoubtCLI.with(try APIClient(credential: cfg.credential())) { client in
            let readKey = try await key.unwrap(config: cfg)
            let material = try cfg.sharedMaterial()
            var manifests: [Manifest] = []
            for s in try await client.snapshots(host: host) {
                manifests.append(try Manifest.parse(try await client.manifestBytes(s.id),
                    expectedID: SnapshotID(hex: s.id)))
            }
            let report = try await DeepVerifier().verify(manifests, readKey: readKey, chunkIDKey: material.chunkIDKey,
                source: client) { line in
                if !json { FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8)) }
            }
            if !json { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
            var uploaders: [String: String] = [:]
            for d in report.damagedPacks {
                guard let id = PackID(hex: d.pack) else { continue }
                uploaders[d.pack] = (try? await client.reportDamagedPack(id, problem: d.problem))?.uploader ?? "unknown"
            }
            if json {
                struct Out: Encodable { let report: DeepVerifyReport; let uploaders: [String: String] }
                try printJSON(Out(report: report, uploaders: uploaders))
            } else {
                print("""
                    \(report.snapshots) snapshots, \(report.packsChecked) packs, \(report.chunksChecked) chunks \
                    decrypted and checked
                    """)
                for d in report.damagedPacks {
                    print("  DAMAGED PACK \(d.pack) (uploaded by host \(uploaders[d.pack] ?? "unknown")): "
                        + (d.badChunks > 0 ? "\(d.badChunks) chunk(s) do not open: " : "") + d.problem)
                }
                for a in report.affectedSnapshots {
                    print("  SNAPSHOT \(a.snapshot) of host \(a.host) cannot be restored whole: \(a.problem)")
                }
                print(report.isClean ? "OK" : """
                    \(report.damagedPacks.count) damaged pack(s), \(report.affectedSnapshots.count) snapshot(s) \
                    affected
                    """)
            }
            return report.isClean ? .ok : .integrity
        }
    }
}

/// How a restorer gets its read key: the key provider's secret, an escrow copy, a
/// provider a rotation moved the key to. Shared by restore, ls, verify --deep, copy restore and media restore.
struct ReadKeyOptions: ParsableArguments {
    @Option(name: .long, help: "Passphrase file for a passphrase-wrapped read key.") var passphraseFile: String?
    @Option(name: .long,
        help: """
            Wrapped read key file to use instead of the server's (an escrow copy from `redoubt admin tenant escrow`).
            """) var readKey: String?
    @Option(name: .long,
        help: """
            Trust this key provider (KMS, HSM) that a rotation moved the read key to (its URI; the key ID does not \
            matter).
            """) var trustKeyProvider: String?

    /// The read key, unwrapped in memory (`copies`: a bucket's or media set's wrappings, newest first).
    func unwrap(config: ClientConfig, copies: [(name: String,
        key: WrappedReadKey)] = []) async throws -> ReadPrivateKey {
        var escrow: WrappedReadKey?
        if let readKey {
            guard let d = FileManager.default.contents(atPath: readKey) else {
                throw ValidationError("cannot read wrapped read key file \(readKey)")
            }
            escrow = try WrappedReadKey.decode(d)
        }
        return try await resolver(config: config).resolve(escrow: escrow, copies: copies,
                                                          server: ReadKeyResolver.fetch(config: config))
    }

    /// The resolver with this command's secrets: a passphrase from the file, the environment or a prompt.
    func resolver(config: ClientConfig) -> ReadKeyResolver {
        RestoreSupport.resolver(config: config, passphraseFile: passphraseFile, trustProvider: trustKeyProvider)
    }
}

enum RestoreSupport {
    /// The snapshot's manifest from the server (ID or unique prefix), checked against its ID.
    /// Aliases (`latest`, `latest-clean`) are resolved before, by ``SnapshotRef``.
    static func manifest(_ snapshot: String, from client: APIClient) async throws -> Manifest {
        let info = try await client.snapshot(snapshot)
        return try Manifest.parse(try await client.manifestBytes(info.id), expectedID: SnapshotID(hex: info.id))
    }

    /// The one manifest in `manifests` (keyed by snapshot ID) whose ID starts with
    /// `prefix`, parsed and checked against its ID. `place` and `lister` name where the
    /// manifests came from and the command that lists them, for the error.
    static func manifest(matching prefix: String, in manifests: [String: [UInt8]], place: String,
        lister: String) throws -> Manifest {
        let matches = manifests.keys.filter { $0.hasPrefix(prefix.lowercased()) }
        guard prefix.count >= 8, matches.count == 1, let id = matches.first, let bytes = manifests[id] else {
            throw ValidationError("""
                snapshot \(prefix) is \(matches.isEmpty ? "not \(place)" : "ambiguous"); `\(lister)` lists them
                """)
        }
        // Why required: without an ID, parse would check nothing against the name.
        guard let expected = SnapshotID(hex: id) else {
            throw ValidationError("""
                \(id.debugDescription) \(place) is not named by a snapshot ID: not a manifest Redoubt wrote
                """)
        }
        return try Manifest.parse(bytes, expectedID: expected)
    }

    /// Restores `manifest` from `source` into `target` with a progress line on stderr.
    static func restore(manifest: Manifest, readKey: ReadPrivateKey, chunkIDKey: ChunkIDKey, source: any PackSource,
        target: String,
                        subpath: [UInt8]? = nil, skipDamaged: Bool) async throws -> RestoreResult {
        try await restore(manifest: manifest, readKey: readKey, chunkIDKey: chunkIDKey, source: source,
                          target: target, options: RestoreOptions(paths: subpath.map { [$0] } ?? [],
                                                                  skipDamaged: skipDamaged))
    }

    /// Restores what `options` selects of `manifest` into `target` with a progress line on stderr.
    static func restore(manifest: Manifest, readKey: ReadPrivateKey, chunkIDKey: ChunkIDKey, source: any PackSource,
                        target: String, options: RestoreOptions) async throws -> RestoreResult {
        let progress = ProgressLine()
        let result = try await Restorer().restore(manifest: manifest, readKey: readKey, chunkIDKey: chunkIDKey,
            source: source, target: target, options: options) { p in
            progress.update(files: p.filesDone, bytes: p.bytesDone, totalBytes: p.bytesTotal, current: p.currentPath)
        }
        progress.finish()
        return result
    }

    /// The read-key resolver for `config`, its notes on stderr, passphrases read as the CLI reads them.
    static func resolver(config: ClientConfig, passphraseFile: String?,
        trustProvider: String? = nil) -> ReadKeyResolver {
        ReadKeyResolver(config: config, trustedProvider: trustProvider,
                        makeProvider: { try RedoubtCLI.keyProvider(uri: $0, passphraseFile: passphraseFile) },
                        note: { FileHandle.standardError.write(Data("\($0)\n".utf8)) })
    }
}

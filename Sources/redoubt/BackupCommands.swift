import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore
import RedoubtKMS

struct BackupSummary: Codable {
    let snapshot: String
    let filesNew: UInt64
    let filesChanged: UInt64
    let filesUnchanged: UInt64
    let bytesTotal: UInt64
    let bytesRead: UInt64
    let bytesUploaded: UInt64
    let packsUploaded: Int
    let seconds: Double
    let warnings: [String]
}

struct BackupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "backup",
        abstract: "Back up paths to the server (write-only: this host cannot read them back).",
        discussion: "Jobs (--job) are defined in a TOML file; README \"Jobs\" gives its keys.")
    @Argument(help: "Paths to back up (with --stdin-from-command: the command and its arguments, after --).")
    var paths: [String] = []
    @OptionGroup var config: ConfigOption
    @Option(name: .long, help: "A tag for the snapshot (repeatable).") var tag: [String] = []
    @Option(name: .long, help: "Skip paths matching this glob (repeatable).") var exclude: [String] = []
    @OptionGroup var options: BackupCLIOptions
    @Flag(name: .long, help: "Print the summary as JSON.") var json = false
    @OptionGroup(title: "Progress") var progress: ProgressOptions

    func run() async throws {
        progress.apply()
        try await RedoubtCLI.run {
            let cfg = config.resolved
            let spec = try BackupSpec.resolve(config: cfg, paths: paths, tags: tag, excludes: exclude,
                options: options)
            return await BackupJobRunner.run(config: cfg, spec: spec, json: json)
        }
    }
}

/// Runs one backup of `paths` with progress, prints the human summary unless `quiet`.
func runBackup(config cfg: ClientConfig, paths: [String], tags: [String], excludes: [String],
    quiet: Bool) async throws -> BackupSummary {
    try await performBackup(config: cfg, spec: BackupSpec(paths: paths, excludes: excludes, tags: tags), quiet: quiet)
}

struct LsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
            abstract: """
                List what a snapshot holds, to find what to restore (restorer credential and the read key's provider).
                """,
        discussion: """
            Reads the snapshot's trees only. From the server that fetches just the packs that \
            hold them; from a bucket copy (--from) every pack the snapshot names is read once \
            to find them. Names that are not printable UTF-8 are escaped (\\xNN); --json \
            gives the exact bytes in pathHex and linkTargetHex.
            """)
    @Argument(help: ArgumentHelp(stringLiteral: SnapshotRef.help)) var snapshot: String
    @Argument(help: "A path in the snapshot, as backed up (/srv/www) or below its root (default: its top level).")
    var path: String?
    @Option(name: .long, help: "With latest: that host's newest snapshot.") var host: String?
    @Flag(name: [.short, .long], help: "List the directories below too.") var recursive = false
    @OptionGroup var config: ConfigOption
    @OptionGroup(title: "The read key") var key: ReadKeyOptions
    @Flag(name: .long, help: "Print a JSON array, one entry per line.") var json = false
    @OptionGroup(title: "A bucket copy instead of the server") var bucket: FromBucketOptions

    func run() async throws {
        try await RedoubtCLI.run {
            let cfg = config.resolved
            let chunkIDKey = try cfg.sharedMaterial().chunkIDKey
            let subpath = path.map { Array($0.utf8) }
            let out = Listing(json: json)
            if let store = try bucket.store() {
                let tenant = try await bucket.tenant(in: store)
                guard snapshot != SnapshotRef.latest, host == nil else {
                    throw ValidationError("""
                        latest is decided by the server's commit times: with --from name the snapshot
                        """)
                }
                let (manifest, readKey) = try await BucketCommands.open(store: store, place: bucket.from ?? "",
                    tenant: tenant, snapshot: snapshot, config: cfg,
                                                                        key: key, lister: "redoubt snapshots --from")
                try await Restorer().list(manifest: manifest, readKey: readKey, chunkIDKey: chunkIDKey,
                    source: BucketPackSource(store: store, tenant: tenant),
                                          subpath: subpath, recursive: recursive, out.print)
            } else {
                let readKey = try await key.unwrap(config: cfg)
                try await RedoubtCLI.with(try APIClient(credential: cfg.credential())) { client in
                    let id = try await SnapshotRef.resolve(snapshot, host: host, client: client)
                    try await Restorer().list(manifest: try await RestoreSupport.manifest(id, from: client),
                        readKey: readKey, chunkIDKey: chunkIDKey,
                                              source: client, subpath: subpath, recursive: recursive, out.print)
                }
            }
            out.finish()
            return .ok
        }
    }

    /// Prints entries as they come: `ls -l`-like lines, or a JSON array one entry per line.
    final class Listing {
        let json: Bool
        private let encoder = JSONEncoder()
        private let dates = ISO8601DateFormatter()
        private var pending: String? = nil
        private var started = false

        init(json: Bool) {
            self.json = json
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        }

        func print(_ e: ListedEntry) throws {
            guard json else { return Swift.print(line(e)) }
            if !started { Swift.print("["); started = true }
            if let pending { Swift.print(pending + ",") }
            pending = String(decoding: try encoder.encode(e), as: UTF8.self)
        }

        func finish() {
            guard json else { return }
            if !started { Swift.print("[") }
            if let pending { Swift.print(pending) }
            Swift.print("]")
        }

        func line(_ e: ListedEntry) -> String {
            let owner = "\(e.user.isEmpty ? String(e.uid) : e.user)/\(e.group.isEmpty ? String(e.gid) : e.group)"
            let size = e.deviceMajor.map { "\($0), \(e.deviceMinor ?? 0)" } ?? String(e.size)
            let time = dates.string(from: Date(timeIntervalSince1970: TimeInterval(e.mtime)))
            let link = e.linkTarget.map { e.kind == .hardlink ? " link to \($0)" : " -> \($0)" } ?? ""
            return """
                \(Self.modeString(e))  \(owner.rightPadded(to: 17))  \(size.leftPadded(to: 12))  \(time)  \
                \(e.path)\(link)
                """
        }

        /// `ls -l`'s mode column: the type, then rwx for owner, group and others with s/S and t/T.
        static func modeString(_ e: ListedEntry) -> String {
            var out: String = switch e.kind {
            case .directory: "d"
            case .symlink: "l"
            case .fifo: "p"
            case .charDevice: "c"
            case .blockDevice: "b"
            case .socket: "s"
            case .file, .hardlink: "-"
            }
            for (shift, special, mark) in [(6, 0o4000, "s"), (3, 0o2000, "s"), (0, 0o1000, "t")] as [(UInt32, UInt32,
                String)] {
                let bits = (e.mode >> shift) & 7
                out += bits & 4 != 0 ? "r" : "-"
                out += bits & 2 != 0 ? "w" : "-"
                let x = bits & 1 != 0
                out += e.mode & special != 0 ? (x ? mark : mark.uppercased()) : (x ? "x" : "-")
            }
            return out
        }
    }
}

extension String {
    func leftPadded(to n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
    func rightPadded(to n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
}

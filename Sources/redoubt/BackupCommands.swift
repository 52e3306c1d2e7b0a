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
        abstract: "Back up paths to the server (write-only: this host cannot read them back).")
    @Argument(help: "Paths to back up.") var paths: [String]
    @OptionGroup var config: ConfigOption
    @Option(name: .long, help: "A tag for the snapshot (repeatable).") var tag: [String] = []
    @Option(name: .long, help: "Skip paths matching this glob (repeatable).") var exclude: [String] = []
    @Flag(name: .long, help: "Print the summary as JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let cfg = config.resolved
            let summary = try await runBackup(config: cfg, paths: paths, tags: tag, excludes: exclude, quiet: json)
            if json { try printJSON(summary) }
            return summary.warnings.isEmpty ? .ok : .partial
        }
    }
}

/// Runs one backup with progress, prints the human summary unless `quiet`.
func runBackup(config cfg: ClientConfig, paths: [String], tags: [String], excludes: [String],
    quiet: Bool) async throws -> BackupSummary {
    let keys = try cfg.writeKeySet()
    let absolute = paths.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
    let progress = ProgressLine()
    let start = Date()
    let now = Date().timeIntervalSince1970
    let result = try await RedoubtCLI.with(try APIClient(credential: cfg.credential())) { client in
        try await Archiver().run(options: BackupOptions(paths: absolute, excludes: excludes, tags: tags,
            cachePath: cfg.cachePath), keys: keys, target: client,
                                 now: Timestamp(seconds: Int64(now),
                                     nanoseconds: UInt32((now - now.rounded(.down)) * 1e9))) { p in
            progress.update(files: p.filesDone, bytes: p.bytesDone, totalBytes: p.bytesTotal, current: p.currentPath)
        }
    }
    progress.finish()
    // The server accepted what these keys made: record them, so later damage is found first.
    if !cfg.hasKeyCheck { try? cfg.recordKeyCheck() }
    let s = BackupSummary(snapshot: result.manifest.id.description, filesNew: result.filesNew,
        filesChanged: result.filesChanged,
                          filesUnchanged: result.filesUnchanged, bytesTotal: result.statistics.bytesTotal,
                              bytesRead: result.bytesRead,
                          bytesUploaded: result.bytesUploaded, packsUploaded: result.packsUploaded,
                              seconds: Date().timeIntervalSince(start),
                          warnings: result.warnings.map(\.description))
    if !quiet {
        print("snapshot \(s.snapshot.prefix(8)) saved (\(s.snapshot))")
        print("  files: \(s.filesNew) new, \(s.filesChanged) changed, \(s.filesUnchanged) unchanged")
        print("""
              read \(formatBytes(s.bytesRead)) of \(formatBytes(s.bytesTotal)), uploaded \
            \(formatBytes(s.bytesUploaded)) in \(s.packsUploaded) packs after dedup and compression, \
            \(String(format: "%.1f", s.seconds)) s
            """)
        for w in s.warnings { print("  warning: \(w)") }
    }
    return s
}

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "restore",
        abstract: "Restore a snapshot (restorer credential and the read key's provider).")
    @Argument(help: """
        Snapshot ID or a unique prefix (8+ hex digits), or `latest-clean`: the newest snapshot the server did not \
        judge suspect (of --host).
        """) var snapshot: String
    @Option(name: .long, help: "With latest-clean: only this host's snapshots.") var host: String?
    @Option(name: .long, help: "Directory to restore into (created if missing).") var target: String
    @Option(name: .long, help: "Restore only this path inside the snapshot (e.g. data/etc).") var path: String?
    @OptionGroup var config: ConfigOption
    @OptionGroup(title: "The read key") var key: ReadKeyOptions
    @Flag(name: .long,
        help: """
            Restore everything undamaged and list what is damaged, instead of stopping at the first damage.
            """) var skipDamaged = false
    @Flag(name: .long, help: "Print the summary as JSON.") var json = false
    @OptionGroup(title: "A bucket copy instead of the server") var bucket: FromBucketOptions

    func run() async throws {
        try await RedoubtCLI.run {
            if let store = try bucket.store() {
                return try await BucketCommands.restore(store: store, place: bucket.from ?? "",
                    tenant: try await bucket.tenant(in: store), snapshot: snapshot,
                                                        target: target, config: config.resolved, key: key,
                                                        subpath: path, skipDamaged: skipDamaged,
                                                            lister: "redoubt snapshots --from", json: json)
            }
            let cfg = config.resolved
            let readKey = try await key.unwrap(config: cfg)
            let material = try cfg.sharedMaterial()
            let progress = ProgressLine()
            let start = Date()
            let result = try await RedoubtCLI.with(try APIClient(credential: cfg.credential())) { client in
                let manifest = try await RestoreSupport.manifest(snapshot, host: host, from: client)
                return try await Restorer().restore(manifest: manifest, readKey: readKey,
                    chunkIDKey: material.chunkIDKey, source: client, target: target,
                                                    subpath: path.map { Array($0.utf8) },
                                                        skipDamaged: skipDamaged) { p in
                    progress.update(files: p.filesDone, bytes: p.bytesDone, totalBytes: p.bytesTotal,
                        current: p.currentPath)
                }
            }
            progress.finish()
            let seconds = Date().timeIntervalSince(start)
            if json {
                try printJSON(RestoreJSON(result, seconds: seconds))
            } else {
                print("""
                    restored \(result.files) files, \(result.directories) directories, \(result.otherEntries) other \
                    entries, \(formatBytes(result.bytesWritten)) from \(result.packsFetched) packs into \(target) in \
                    \(String(format: "%.1f", seconds)) s
                    """)
                for w in result.warnings { print("  warning: \(w)") }
                for d in result.damaged { print("  DAMAGED: \(d)") }
            }
            if !result.damaged.isEmpty { return .integrity }
            return result.warnings.isEmpty ? .ok : .partial
        }
    }
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
    @Argument(help: "Snapshot ID or a unique prefix (8+ hex digits).") var snapshot: String
    @Argument(help: "A path inside the snapshot (default: its top level).") var path: String?
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
                let (manifest, readKey) = try await BucketCommands.open(store: store, place: bucket.from ?? "",
                    tenant: tenant, snapshot: snapshot, config: cfg,
                                                                        key: key, lister: "redoubt snapshots --from")
                try await Restorer().list(manifest: manifest, readKey: readKey, chunkIDKey: chunkIDKey,
                    source: BucketPackSource(store: store, tenant: tenant),
                                          subpath: subpath, recursive: recursive, out.print)
            } else {
                let readKey = try await key.unwrap(config: cfg)
                try await RedoubtCLI.with(try APIClient(credential: cfg.credential())) { client in
                    try await Restorer().list(manifest: try await RestoreSupport.manifest(snapshot, from: client),
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

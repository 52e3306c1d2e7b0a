import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore

extension OverwritePolicy: ExpressibleByArgument {}

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "restore",
        abstract: "Restore a snapshot (restorer credential and the read key's provider).",
        discussion: """
            Each entry is restored at its path in the snapshot below --target: a snapshot of /srv/www restores \
            to TARGET/srv/www (snapshots made before manifest version 3 keep their old top-level names). \
            A target that holds anything is refused unless --overwrite says what to do with what is there. \
            Every file is written under a temporary name in its directory and renamed when whole, so an \
            interrupted restore (a full disk) leaves no truncated file under a real name.
            """)
    @Argument(help: ArgumentHelp(stringLiteral: SnapshotRef.help)) var snapshot: String
    @Option(name: .long, help: "Directory to restore into (created if missing).") var target: String
    @Option(name: .long, help: """
        Restore only this path, as it was backed up (/srv/www) or as `ls` shows it (srv/www); repeatable.
        """)
    var path: [String] = []
    @Option(name: .long, help: """
        Restore only entries matching this glob (full path or name; * never matches /), what is below them and \
        the directories on their way; repeatable.
        """)
    var include: [String] = []
    @Option(name: .long, help: "Leave out entries matching this glob and what is below them; repeatable.")
    var exclude: [String] = []
    @Option(name: .long, help: """
        What to do with entries already in the target: always (replace), if-changed (keep a file of the same \
        size and modification time), never (keep). Without it, a non-empty target is refused.
        """)
    var overwrite: OverwritePolicy?
    @Option(name: .long, help: "With latest: that host's newest snapshot.") var host: String?
    @OptionGroup var config: ConfigOption
    @OptionGroup(title: "The read key") var key: ReadKeyOptions
    @Flag(name: .long,
        help: """
            Restore everything undamaged and list what is damaged, instead of stopping at the first damage.
            """) var skipDamaged = false
    @Flag(name: .long, help: "Print the summary as JSON.") var json = false
    @OptionGroup(title: "A bucket copy instead of the server") var bucket: FromBucketOptions
    @OptionGroup(title: "Progress") var progress: ProgressOptions

    var options: RestoreOptions {
        RestoreOptions(paths: path.map { Array($0.utf8) }, includes: include, excludes: exclude,
                       overwrite: overwrite ?? .always, skipDamaged: skipDamaged)
    }

    func run() async throws {
        progress.apply()
        try await RedoubtCLI.run {
            if overwrite == nil { try RestoreSupport.requireEmptyTarget(target) }
            if let store = try bucket.store() {
                guard snapshot != SnapshotRef.latest, host == nil else {
                    throw ValidationError("""
                        latest is decided by the server's commit times: with --from name the snapshot \
                        (`redoubt snapshots --from` lists them)
                        """)
                }
                return try await BucketCommands.restore(store: store, place: bucket.from ?? "",
                    tenant: try await bucket.tenant(in: store), snapshot: snapshot,
                    target: target, config: config.resolved, key: key, options: options,
                    lister: "redoubt snapshots --from", json: json)
            }
            let cfg = config.resolved
            let readKey = try await key.unwrap(config: cfg)
            let material = try cfg.sharedMaterial()
            let line = ProgressLine()
            let start = Date()
            let result = try await RedoubtCLI.with(try APIClient(credential: cfg.credential())) { client in
                let id = try await SnapshotRef.resolve(snapshot, host: host, client: client)
                let manifest = try await RestoreSupport.manifest(id, from: client)
                return try await Restorer().restore(manifest: manifest, readKey: readKey,
                    chunkIDKey: material.chunkIDKey, source: client, target: target, options: options) { p in
                    line.update(files: p.filesDone, bytes: p.bytesDone, totalBytes: p.bytesTotal,
                        current: p.currentPath)
                }
            }
            line.finish()
            let seconds = Date().timeIntervalSince(start)
            if json {
                try printJSON(RestoreJSON(result, seconds: seconds))
            } else {
                print("""
                    restored \(result.files) files, \(result.directories) directories, \(result.otherEntries) other \
                    entries, \(formatBytes(result.bytesWritten)) from \(result.packsFetched) packs into \(target) in \
                    \(String(format: "%.1f", seconds)) s
                    """ + (result.skippedExisting > 0 ? "; \(result.skippedExisting) existing entries kept" : ""))
                for w in result.warnings { print("  warning: \(w)") }
                for d in result.damaged { print("  DAMAGED: \(d)") }
            }
            if !result.damaged.isEmpty { return .integrity }
            return result.warnings.isEmpty ? .ok : .partial
        }
    }
}

extension RestoreSupport {
    /// Refuses a target that holds anything: without `--overwrite` a restore never mixes
    /// with or replaces what is there.
    static func requireEmptyTarget(_ target: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: target, isDirectory: &isDirectory) else { return }
        guard isDirectory.boolValue else {
            throw ValidationError("--target \(target) is not a directory: name a directory to restore into")
        }
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: target)) ?? []
        guard entries.isEmpty else {
            throw ValidationError("""
                --target \(target) is not empty (\(entries.count) entries): restore into an empty or new directory, \
                or choose --overwrite always|if-changed|never for what is there
                """)
        }
    }
}

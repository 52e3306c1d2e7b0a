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
    static let configuration = CommandConfiguration(commandName: "backup", abstract: "Back up paths to the server (write-only: this host cannot read them back).")
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
func runBackup(config cfg: ClientConfig, paths: [String], tags: [String], excludes: [String], quiet: Bool) async throws -> BackupSummary {
    let keys = try cfg.writeKeySet()
    let absolute = paths.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
    let progress = ProgressLine()
    let start = Date()
    let now = Date().timeIntervalSince1970
    let result = try await RedoubtCLI.with(try APIClient(credential: cfg.credential())) { client in
        try await Archiver().run(options: BackupOptions(paths: absolute, excludes: excludes, tags: tags, cachePath: cfg.cachePath), keys: keys, target: client,
                                 now: Timestamp(seconds: Int64(now), nanoseconds: UInt32((now - now.rounded(.down)) * 1e9))) { p in
            progress.update(files: p.filesDone, bytes: p.bytesDone, totalBytes: p.bytesTotal, current: p.currentPath)
        }
    }
    progress.finish()
    let s = BackupSummary(snapshot: result.manifest.id.description, filesNew: result.filesNew, filesChanged: result.filesChanged,
                          filesUnchanged: result.filesUnchanged, bytesTotal: result.statistics.bytesTotal, bytesRead: result.bytesRead,
                          bytesUploaded: result.bytesUploaded, packsUploaded: result.packsUploaded, seconds: Date().timeIntervalSince(start),
                          warnings: result.warnings.map(\.description))
    if !quiet {
        print("snapshot \(s.snapshot.prefix(8)) saved (\(s.snapshot))")
        print("  files: \(s.filesNew) new, \(s.filesChanged) changed, \(s.filesUnchanged) unchanged")
        print("  read \(formatBytes(s.bytesRead)) of \(formatBytes(s.bytesTotal)), uploaded \(formatBytes(s.bytesUploaded)) in \(s.packsUploaded) packs after dedup and compression, \(String(format: "%.1f", s.seconds)) s")
        for w in s.warnings { print("  warning: \(w)") }
    }
    return s
}

struct RestoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "restore", abstract: "Restore a snapshot (restorer credential and the read key's provider).")
    @Argument(help: "Snapshot ID or a unique prefix (8+ hex digits).") var snapshot: String
    @Option(name: .long, help: "Directory to restore into (created if missing).") var target: String
    @Option(name: .long, help: "Restore only this path inside the snapshot (e.g. data/etc).") var path: String?
    @OptionGroup var config: ConfigOption
    @Option(name: .long, help: "Passphrase file for a passphrase-wrapped read key.") var passphraseFile: String?
    @Option(name: .long, help: "Wrapped read key file to use instead of the server's (an escrow copy from `redoubt admin tenant escrow`).") var readKey: String?
    @Option(name: .long, help: "Trust this key provider (KMS, HSM) that a rotation moved the read key to (its URI; the key ID does not matter).") var trustKeyProvider: String?
    @Flag(name: .long, help: "Restore everything undamaged and list what is damaged, instead of stopping at the first damage.") var skipDamaged = false
    @Flag(name: .long, help: "Print the summary as JSON.") var json = false
    @OptionGroup(title: "A bucket copy instead of the server") var bucket: FromBucketOptions

    func run() async throws {
        try await RedoubtCLI.run {
            if let store = try bucket.store() {
                return try await BucketCommands.restore(store: store, place: bucket.from ?? "", tenant: try await bucket.tenant(in: store), snapshot: snapshot,
                                                        target: target, config: config.resolved, passphraseFile: passphraseFile, readKeyFile: readKey, trustProvider: trustKeyProvider,
                                                        subpath: path, skipDamaged: skipDamaged, lister: "redoubt snapshots --from", json: json)
            }
            let cfg = config.resolved
            let readKey = try await RestoreSupport.unwrapReadKey(config: cfg, passphraseFile: passphraseFile, readKeyFile: readKey, trustProvider: trustKeyProvider)
            let material = try cfg.sharedMaterial()
            let progress = ProgressLine()
            let start = Date()
            let result = try await RedoubtCLI.with(try APIClient(credential: cfg.credential())) { client in
                let info = try await client.snapshot(snapshot)
                let manifest = try Manifest.parse(try await client.manifestBytes(info.id), expectedID: SnapshotID(hex: info.id))
                return try await Restorer().restore(manifest: manifest, readKey: readKey, chunkIDKey: material.chunkIDKey, source: client, target: target,
                                                    subpath: path.map { Array($0.utf8) }, skipDamaged: skipDamaged) { p in
                    progress.update(files: p.filesDone, bytes: p.bytesDone, totalBytes: p.bytesTotal, current: p.currentPath)
                }
            }
            progress.finish()
            let seconds = Date().timeIntervalSince(start)
            if json {
                try printJSON(["files": "\(result.files)", "directories": "\(result.directories)", "other": "\(result.otherEntries)",
                               "bytes": "\(result.bytesWritten)", "packs": "\(result.packsFetched)", "seconds": String(format: "%.2f", seconds),
                               "warnings": result.warnings.map(\.description).joined(separator: "\n"),
                               "damaged": result.damaged.map(\.description).joined(separator: "\n")])
            } else {
                print("restored \(result.files) files, \(result.directories) directories, \(result.otherEntries) other entries, \(formatBytes(result.bytesWritten)) from \(result.packsFetched) packs into \(target) in \(String(format: "%.1f", seconds)) s")
                for w in result.warnings { print("  warning: \(w)") }
                for d in result.damaged { print("  DAMAGED: \(d)") }
            }
            if !result.damaged.isEmpty { return .integrity }
            return result.warnings.isEmpty ? .ok : .partial
        }
    }
}

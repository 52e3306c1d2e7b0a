import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore

/// A snapshot of the server opened for reading (`dump`, `diff`, `find`).
enum SnapshotOpening {
    static func browser(_ ref: String, host: String?, client: APIClient, readKey: ReadPrivateKey,
                        chunkIDKey: ChunkIDKey) async throws -> SnapshotBrowser {
        let id = try await SnapshotRef.resolve(ref, host: host, client: client)
        return try SnapshotBrowser(manifest: try await RestoreSupport.manifest(id, from: client), readKey: readKey,
                                   chunkIDKey: chunkIDKey, source: client)
    }

    /// A path below a snapshot's root as its user knew it: absolute for a whole-path snapshot.
    static func shown(_ path: [UInt8], in m: Manifest) -> [UInt8] { m.keepsPathsWhole ? [0x2f] + path : path }
}

struct DumpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dump",
        abstract: "Write a file of a snapshot to stdout byte for byte, or a directory as a tar stream (restorer).",
        discussion: """
            A regular file (or a hard link to one) is written as it was, holes of a sparse file as zeros. \
            Anything else is written as a pax tar stream (GNU tar and bsdtar read it) whose members are named \
            by their path in the snapshot, so `redoubt dump latest /srv/www | tar -x -C /restore` recreates \
            what `restore --path /srv/www --target /restore` does: modes, owners, nanosecond times, symlinks, \
            hard links, devices, FIFOs and extended attributes (sparse files are written whole; sockets are \
            left out). Every chunk is checked as a restore checks it.
            """)
    @Argument(help: ArgumentHelp(stringLiteral: SnapshotRef.help)) var snapshot: String
    @Argument(help: "The path in the snapshot, as backed up (/etc/hosts) or below its root (etc/hosts).")
    var path: String
    @Option(name: .long, help: "Write a file as a tar stream too (tar is the only archive format).")
    var archive: String?
    @Option(name: .long, help: "With latest: that host's newest snapshot.") var host: String?
    @OptionGroup var config: ConfigOption
    @OptionGroup(title: "The read key") var key: ReadKeyOptions

    func run() async throws {
        try await RedoubtCLI.run {
            if let archive, archive != "tar" {
                throw ValidationError("--archive \(archive): only tar is written")
            }
            let cfg = config.resolved
            let readKey = try await key.unwrap(config: cfg)
            let chunkIDKey = try cfg.sharedMaterial().chunkIDKey
            let out = FileHandle.standardOutput
            let sink: ([UInt8]) throws -> Void = { try out.write(contentsOf: Data($0)) }
            try await RedoubtCLI.with(try APIClient(credential: cfg.credential())) { client in
                let browser = try await SnapshotOpening.browser(snapshot, host: host, client: client,
                                                                readKey: readKey, chunkIDKey: chunkIDKey)
                let (p, node) = try await browser.node(at: Array(path.utf8))
                if archive == nil, node.type == .file {
                    try await browser.contents(of: node, path: p, sink)
                } else if archive == nil, node.type == .hardlink {
                    let (_, target) = try await browser.node(at: node.linkTarget)
                    try await browser.contents(of: target, path: p, sink)
                } else {
                    try await browser.tar(p, node: node, sink)
                }
            }
            return .ok
        }
    }
}

/// `diff --json` (docs/CLI-JSON.md).
struct DiffJSON: Encodable {
    let first: String
    let second: String
    let added: Int
    let removed: Int
    let changed: Int
    let changes: [SnapshotChange]
}

struct DiffCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "diff",
        abstract: "What changed from one snapshot to another: added, removed and changed entries (restorer).",
        discussion: """
            Lines read as restic's: `+` added, `-` removed, `M` content changed, `U` metadata only (mode, owner, \
            times, attributes), `T` type changed. Access and change times are not compared. Directories whose \
            trees are identical are not read.
            """)
    @Argument(help: ArgumentHelp(stringLiteral: SnapshotRef.help)) var first: String
    @Argument(help: ArgumentHelp(stringLiteral: SnapshotRef.help)) var second: String
    @Option(name: .long, help: "With latest: that host's newest snapshot.") var host: String?
    @Flag(name: .long, help: "Print JSON.") var json = false
    @OptionGroup var config: ConfigOption
    @OptionGroup(title: "The read key") var key: ReadKeyOptions

    func run() async throws {
        try await RedoubtCLI.run {
            let cfg = config.resolved
            let readKey = try await key.unwrap(config: cfg)
            let chunkIDKey = try cfg.sharedMaterial().chunkIDKey
            return try await RedoubtCLI.with(try APIClient(credential: cfg.credential())) { client in
                let latestHost = { (ref: String) in ref == SnapshotRef.latest ? host : nil }
                let a = try await SnapshotOpening.browser(first, host: latestHost(first), client: client,
                                                          readKey: readKey, chunkIDKey: chunkIDKey)
                let b = try await SnapshotOpening.browser(second, host: latestHost(second), client: client,
                                                          readKey: readKey, chunkIDKey: chunkIDKey)
                var changes: [SnapshotChange] = []
                try await SnapshotBrowser.diff(a, b) { change in
                    if json { return changes.append(change) }
                    let mark = switch change.change {
                    case .added: "+"
                    case .removed: "-"
                    case .changed: change.what.contains("type") ? "T"
                        : (change.what.contains("content") || change.what.contains("size")
                            || change.what.contains("linkTarget")) ? "M" : "U"
                    }
                    let what = change.what.isEmpty ? "" : "  (" + change.what.joined(separator: ", ") + ")"
                    print("\(mark)    \(a.manifest.keepsPathsWhole ? "/" : "")\(change.path)\(what)")
                    changes.append(change)
                }
                let added = changes.count { $0.change == .added }, removed = changes.count { $0.change == .removed }
                let changed = changes.count { $0.change == .changed }
                if json {
                    try printJSON(DiffJSON(first: a.manifest.id.description, second: b.manifest.id.description,
                                           added: added, removed: removed, changed: changed, changes: changes))
                } else {
                    print("\(added) added, \(removed) removed, \(changed) changed")
                }
                return .ok
            }
        }
    }
}

/// One `find --json` match (docs/CLI-JSON.md).
struct FoundJSON: Encodable {
    let snapshot: String
    let host: String
    let committedAt: Date
    let path: String
    let pathHex: String
    let type: String
    let size: UInt64
    let mtime: Int64
    let mtimeNanoseconds: UInt32
}

struct FindCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "find",
        abstract: "Find entries by name or path glob in every snapshot of the tenant or of a host (restorer).",
        discussion: """
            PATTERN is a shell glob matched against each entry's name and against its whole path (where `*` \
            never matches /): `redoubt find '*.conf'`, `redoubt find '/etc/nginx/*'`. Snapshots are searched \
            in the server's commit order; every tree of every snapshot is read, so name --host where you can. \
            Exit 0 whether or not anything matched, as restic does.
            """)
    @Argument(help: "A glob for names or whole paths.") var pattern: String
    @Option(name: .long, help: "Only this host's snapshots.") var host: String?
    @Flag(name: .long, help: "Print JSON.") var json = false
    @OptionGroup var config: ConfigOption
    @OptionGroup(title: "The read key") var key: ReadKeyOptions

    func run() async throws {
        try await RedoubtCLI.run {
            let cfg = config.resolved
            let readKey = try await key.unwrap(config: cfg)
            let chunkIDKey = try cfg.sharedMaterial().chunkIDKey
            let match = EntryPattern(pattern)
            let dates = ISO8601DateFormatter()
            var found: [FoundJSON] = []
            try await RedoubtCLI.with(try APIClient(credential: cfg.credential())) { client in
                for s in try await client.snapshots(host: host) {
                    let b = try SnapshotBrowser(manifest: try await RestoreSupport.manifest(s.id, from: client),
                                                readKey: readKey, chunkIDKey: chunkIDKey, source: client)
                    var here: [FoundJSON] = []
                    try await b.walk { path, n in
                        if match.matches(path: path, name: n.name) {
                            let shown = SnapshotOpening.shown(path, in: b.manifest)
                            here.append(FoundJSON(snapshot: s.id, host: s.host, committedAt: s.committedAt,
                                                  path: printable(shown), pathHex: hexString(shown),
                                                  type: n.type.description, size: n.size, mtime: n.mtime.seconds,
                                                  mtimeNanoseconds: n.mtime.nanoseconds))
                        }
                        return true
                    }
                    if !json && !here.isEmpty {
                        print("snapshot \(s.id.prefix(8)) of host \(shown(s.host)), committed "
                              + dates.string(from: s.committedAt) + ":")
                        for f in here {
                            let t = dates.string(from: Date(timeIntervalSince1970: TimeInterval(f.mtime)))
                            print("  \(f.type.rightPadded(to: 9)) \(String(f.size).leftPadded(to: 12))  "
                                  + "\(t)  \(f.path)")
                        }
                    }
                    found += here
                }
            }
            if json { try printJSON(found) } else if found.isEmpty { print("no entry matches \(pattern)") }
            return .ok
        }
    }
}

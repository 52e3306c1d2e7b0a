// `redoubt media …`: offline media sets (docs/FORMAT.md §13).
import ArgumentParser
import Foundation
import Logging
import RedoubtClient
import RedoubtCore
import RedoubtKMS
import RedoubtMedia
import RedoubtServer
import RedoubtStore

struct MediaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "media",
        abstract: "Write and list offline media sets (tapes, files, directories).",
                                                    subcommands: [MediaWrite.self, MediaList.self, MediaRestore.self,
                                                        MediaImportCommand.self])
}

/// Parses `123`, `64K`, `100M`, `2G`, `1T` (powers of 1024).
func parseMediaSize(_ s: String) throws -> UInt64 {
    let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
    var t = s.uppercased()
    if t.hasSuffix("B") { t.removeLast() }
    var mult: UInt64 = 1
    if let u = t.last, let m = units[u] { mult = m; t.removeLast() }
    guard let n = UInt64(t), n > 0 else {
        throw ValidationError("size \(s) is not a number with an optional K/M/G/T suffix, e.g. 400G")
    }
    return n * mult
}

struct MediaWrite: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "write",
                                                    abstract: """
                                                        Write a tenant's snapshots (ciphertext as stored) to a media \
                                                        set; run on the server host.
                                                        """)
    @Argument(help: "The tenant.") var tenant: String
    @Option(name: .long, help: "The server data directory.") var data: String
    @Option(name: .long,
        help: """
            Device: file:PATH (volumes PATH, PATH.2, …; a FIFO works), dir:PATH, or tape:/dev/nstN[?fixed].
            """) var device: String
    @Option(name: .long, help: changerHelp) var changer: String?
    @Option(name: .long, help: "Pool name written in each volume label.") var pool = "default"
    @Option(name: .long, parsing: .upToNextOption,
        help: "latest, all, or snapshot IDs.") var snapshots: [String] = ["latest"]
    @Option(name: .long, help: "Bytes per volume (e.g. 400G); without it the set is one volume.") var capacity: String?
    @Option(name: .long, help: "Block size (power of two, 256 to 4M).") var blockSize = "1M"
    @Option(name: .long,
        help: """
            Keep the volumes from being overwritten by a later media write for this long (e.g. 90d).
            """) var retain: String?

    func run() async throws {
        try await RedoubtCLI.run {
            let cap = try capacity.map(parseMediaSize)
            let blocks = Int(try parseMediaSize(blockSize))
            let dev = try MediaDeviceSpec.writer(device, capacity: cap, blockSize: blocks,
                nextMedium: mediaNextMedium(changer, device: device))
            var rng = SystemRandomNumberGenerator()
            let setID = (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let f = ISO8601DateFormatter()
            let now = Date()
            let until = try retain.map { f.string(from: now.addingTimeInterval(try parseDuration($0))) }
            let w = try MediaWriter(device: dev, setID: setID, pool: pool, tenant: tenant, blockSize: blocks,
                                    created: f.string(from: now), retainUntil: until, writer: "redoubt")
            let sel: MediaExport.Selection =
                snapshots == ["latest"] ? .latest : snapshots == ["all"] ? .all : .ids(snapshots)
            let s = try await ServerHome(path: data).exportMedia(tenant: tenant, selection: sel, writer: w,
                now: Date()) { line in
                FileHandle.standardError.write(Data("  \(line)\n".utf8))
            }
            print("""
                wrote media set \(hexString(setID)): \(s.snapshots.count) snapshots, \(s.packs) packs, \
                \(s.media.volumes) volumes, 
                """
                  + "\(formatBytes(s.media.bytes)); audit record \(s.auditSeq)")
            return .ok
        }
    }
}

struct MediaList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List a media set's volumes, records and damage; or what one volume holds.",
        discussion: """
            Given the whole set (file:PATH finds PATH, PATH.2, …), every record is read and checked. Given one volume 
            """
            + """
                (any of them, or with --volume-only), its label and catalog say what it holds and which other volumes \
                a restore needs.
                """)
    @Option(name: .long, help: "Device: file:PATH, dir:PATH or tape:/dev/nstN.") var device: String
    @Option(name: .long, help: changerHelp) var changer: String?
    @Flag(name: .long, help: "Read only the first volume the device supplies.") var volumeOnly = false
    @Flag(name: .long, help: "Read on past damaged blocks and report them.") var skipDamaged = false
    @Flag(name: .long, help: "Print JSON.") var json = false
    @OptionGroup(title: "Whose pinned CA checks who wrote each snapshot") var config: ConfigOption

    struct Listing: Encodable {
        var labels: [MediaLabel]
        var records: [MediaCatalogEntry]
        var damage: [String]
        /// Snapshot ID → `HostKeyRegistry.Status` (docs/FORMAT.md §6.4), or `unchecked`.
        var authorship: [String: String]
    }

    struct VolumeListing: Encodable {
        var label: MediaLabel
        var records: [MediaCatalogEntry]
        var setRecords: [MediaCatalogEntry]?
        var needsVolumes: [UInt32]
        var damage: [String]
    }

    func open() throws -> SequentialSource {
        guard device.hasPrefix("file:") || device.hasPrefix("dir:") || device.hasPrefix("tape:") else {
            throw ValidationError("unknown device \(device); use file:PATH, dir:PATH or tape:/dev/nstN")
        }
        return try MediaDeviceSpec.source([device], nextMedium: mediaNextMedium(changer, device: device))
    }

    func run() async throws {
        try await RedoubtCLI.run {
            if volumeOnly { return try listOne() }
            let rep: MediaReadReport
            var manifests: [(id: String, bytes: [UInt8])] = []
            var statements: [(name: String, bytes: [UInt8])] = []
            do {
                rep = try MediaReader(source: try open(), skipDamaged: skipDamaged).read { r in
                    if r.type == .manifest { manifests.append((r.id, r.body)) }
                    if r.type == .object, HostKeyObjects.isStatementName(r.id) { statements.append((r.id, r.body)) }
                }
            } catch let e as MediaError
                where (e.code == "E_MEDIA_ORDER" || e.code == "E_MEDIA_MISSING") && !isFIFO {
                // Not the whole set: say what this volume holds instead.
                FileHandle.standardError.write(Data("""
                    note: not a whole set (\(e.detail)); listing the volume alone\n
                    """.utf8))
                return try listOne()
            }
            // Whoever can write media can add snapshots: mark each with who wrote it.
            let root = try? config.resolved.trustRoot()
            let registry = root.flatMap { root in
                rep.labels.first.map { HostKeyRegistry(tenant: $0.tenant, trustRoot: root, objects: statements) }
            }
            var marks: [String: String] = [:]
            for (id, bytes) in manifests {
                let m = try? Manifest.parse(bytes, expectedID: SnapshotID(hex: id))
                marks[id] = registry.map { r in m.map { r.status(of: $0).rawValue } ?? "bad-signature" } ?? "unchecked"
            }
            let l = Listing(labels: rep.labels, records: rep.setCatalog?.records ?? [],
                            damage: rep.damage.map(\.description), authorship: marks)
            if json { try printJSON(l) } else {
                if root == nil {
                    print("note: no CA pinned in the configuration: authorship is not checked (give --config)")
                }
                for v in rep.labels {
                    print("""
                        volume \(v.volumeSeq) of set \(v.setID): pool \(v.pool), tenant \(v.tenant), written \
                        \(v.created)
                        """)
                }
                for r in l.records {
                    let mark = marks[r.id].map { $0 == "verified" ? "" : "  NOT VERIFIED: \($0)" } ?? ""
                    print("  \(r.type) \(r.id)  volume \(r.volume) blocks \(r.firstBlock)-\(r.lastBlock)" + mark)
                }
                for d in l.damage { print("DAMAGED: \(d)") }
            }
            return rep.damage.isEmpty ? .ok : .partial
        }
    }

    private var isFIFO: Bool {
        guard device.hasPrefix("file:") else { return false }
        var st = stat()
        return stat(String(device.dropFirst(5)), &st) == 0 && (st.st_mode & S_IFMT) == S_IFIFO
    }

    private func listOne() throws -> Exit {
        let v = try MediaReader(source: try open(), skipDamaged: skipDamaged).listVolume()
        let out = VolumeListing(label: v.label, records: v.volumeCatalog?.records ?? [],
            setRecords: v.setCatalog?.records,
                                needsVolumes: v.needsVolumes, damage: v.damage.map(\.description))
        if json { try printJSON(out) } else {
            let l = v.label
            print("volume \(l.volumeSeq) of set \(l.setID): pool \(l.pool), tenant \(l.tenant), written \(l.created)"
                  + (l.retainUntil.map { ", retained until \($0)" } ?? ""))
            for r in out.records {
                print("  \(r.type) \(r.id)  blocks \(r.firstBlock)-\(r.lastBlock)"
                      + (r.startsBefore ? "  (begins on volume \(l.volumeSeq - 1))" : "")
                          + (r.endsAfter ? "  (continues on volume \(l.volumeSeq + 1))" : ""))
            }
            if let set = v.setCatalog {
                print("last volume of the set: \(set.volumeCount ?? l.volumeSeq) volumes, \(set.records.count) "
                    + "records in all")
            } else {
                print("not the last volume: the set's full catalog is on the last one")
            }
            print(v.needsVolumes.isEmpty ? "a restore of what this volume holds needs no other volume"
                  : """
                      a restore of what this volume holds also needs volume(s) \
                      \(v.needsVolumes.map(String.init).joined(separator: ", "))
                      """)
            for d in out.damage { print("DAMAGED: \(d)") }
        }
        return v.damage.isEmpty ? .ok : .partial
    }
}

let changerHelp: ArgumentHelp = """
    How the next tape or removable disk is loaded: a command (run with REDOUBT_VOLUME=N and \
    REDOUBT_DEVICE=PATH; exit 0 when loaded), or `ask` to ask on the terminal. Tapes ask without it; \
    a dir: device without it keeps every volume in the one directory.
    """

/// How the device loads volumes after the first: tapes always through the changer or the
/// operator; a directory (removable disks) only when `--changer` is given; files never.
func mediaNextMedium(_ changer: String?, device: String) -> MediaDeviceSpec.NextMedium? {
    if device.hasPrefix("tape:") { return mediaChanger(changer, device: device) }
    if device.hasPrefix("dir:"), changer != nil { return mediaChanger(changer, device: device) }
    return nil
}

/// Loads the medium for volume n: the changer command, or (nil or `ask`) the operator.
func mediaChanger(_ command: String?, device: String) -> MediaDeviceSpec.NextMedium {
    { (n: UInt32) throws(MediaError) in
        if let command, command != "ask" {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", command]
            var env = ProcessInfo.processInfo.environment
            env["REDOUBT_VOLUME"] = String(n)
            env["REDOUBT_DEVICE"] = String(device.drop { $0 != ":" }.dropFirst())
            p.environment = env
            do { try p.run() } catch {
                throw MediaError(code: "E_MEDIA_DEVICE", volume: n, block: 0,
                    detail: "cannot run the changer command: \(error)")
            }
            p.waitUntilExit()
            guard p.terminationStatus == 0 else {
                throw MediaError(code: "E_MEDIA_DEVICE", volume: n, block: 0,
                                 detail: "the changer command exited \(p.terminationStatus) while loading volume \(n)")
            }
            return
        }
        guard isatty(0) != 0 else { return try MediaDeviceSpec.noChanger(n) }
        FileHandle.standardError.write(Data("""
            load the medium for volume \(n) at \(device) and press Enter (Ctrl-C stops) 
            """.utf8))
        guard readLine() != nil else {
            throw MediaError(code: "E_MEDIA_DEVICE", volume: n, block: 0,
                detail: "no medium for volume \(n): input closed")
        }
    }
}

/// Opens the volumes named by `--device` options (MediaDeviceSpec.source).
func mediaSource(_ devices: [String], changer: String? = nil) throws -> SequentialSource {
    try MediaDeviceSpec.source(devices, nextMedium: mediaNextMedium(changer, device: devices.first ?? ""))
}

/// Packs spooled from media into a directory, one file per pack ID; the restorer verifies them.
struct SpoolPackSource: PackSource {
    let dir: String
    func pack(_ id: PackID) async throws -> [UInt8] {
        guard let d = FileManager.default.contents(atPath: "\(dir)/\(id.description)") else {
            throw MediaError(code: "E_MEDIA_MISSING", volume: 0, block: 0,
                             detail: """
                                 pack \(id.description) was not on the volumes read (damaged or on a volume not \
                                 supplied)
                                 """)
        }
        return Array(d)
    }
}

struct MediaRestore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "restore",
                                                    abstract: """
                                                        Restore a snapshot from media alone (no server): restorer \
                                                        config for the read key.
                                                        """)
    @Argument(help: "Snapshot ID or a unique prefix (8+ hex digits).") var snapshot: String
    @Option(name: .long,
        help: "file:PATH (repeat for each volume, in order), dir:PATH or tape:/dev/nstN.") var device: [String]
    @Option(name: .long, help: changerHelp) var changer: String?
    @Option(name: .long, help: "Directory to restore into (created if missing).") var target: String
    @Option(name: .long, help: "Restore only this path inside the snapshot (e.g. data/etc).") var path: String?
    @OptionGroup var config: ConfigOption
    @OptionGroup(title: "The read key") var key: ReadKeyOptions
    @Flag(name: .long,
        help: "Read on past damaged blocks and restore everything that verified.") var skipDamaged = false

    func run() async throws {
        try await RedoubtCLI.run {
            let cfg = config.resolved
            let material = try cfg.sharedMaterial()
            let spool = NSTemporaryDirectory() + "redoubt-media-spool-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: spool, withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700])
            defer { try? FileManager.default.removeItem(atPath: spool) }
            var manifests: [String: [UInt8]] = [:]
            var descriptor: (version: Int, name: String, body: [UInt8])?
            var spoolError: String?
            var statements: [(name: String, bytes: [UInt8])] = []
            FileHandle.standardError.write(Data("reading volumes…\n".utf8))
            let rep = try MediaReader(source: try mediaSource(device, changer: changer),
                skipDamaged: skipDamaged).read { r throws(MediaError) in
                switch r.type {
                case .pack:
                    // Why: the ID names a file in the spool; only a 64-hex ID may become a path.
                    guard PackID(hex: r.id) != nil else { spoolError = "record with malformed pack ID"; return }
                    if !FileManager.default.createFile(atPath: "\(spool)/\(r.id)", contents: Data(r.body)) {
                        spoolError = "cannot write to \(spool)"
                    }
                case .manifest: manifests[r.id] = r.body
                case .object:
                    if HostKeyObjects.isStatementName(r.id) { statements.append(("\(r.id) on the media", r.body)) }
                    if let v = RepositoryLayout.descriptorVersion(name: r.id), v > (descriptor?.version ?? 0) {
                        descriptor = (v, r.id, r.body)
                    }
                default: break
                }
            }
            if let e = spoolError { throw ValidationError(e) }
            // The set's tenant descriptor carries the read key as wrapped when the set was
            // written (current after a rotation, unlike an old enrollment copy); a server
            // is not needed. If it does not open (say, a KEK destroyed since), the usual
            // way: the server's current wrapping, or the enrollment copy.
            let readKey = try await mediaReadKey(descriptor, config: cfg)
            for d in rep.damage { FileHandle.standardError.write(Data("DAMAGED: \(d)\n".utf8)) }
            let manifest = try RestoreSupport.manifest(matching: snapshot, in: manifests, place: "on these volumes",
                lister: "redoubt media list")
            // Why: whoever wrote the volumes could have added the manifest; only the pinned
            // CA's registrations on the set say which host keys may sign this tenant's snapshots.
            try cfg.checkAuthorship(manifest, tenant: try cfg.credential().tenant ?? "", statements: statements)
            let result = try await RestoreSupport.restore(manifest: manifest, readKey: readKey,
                chunkIDKey: material.chunkIDKey,
                                                          source: SpoolPackSource(dir: spool), target: target,
                                                          subpath: path.map { Array($0.utf8) },
                                                              skipDamaged: skipDamaged)
            print("restored \(result.files) files, \(result.directories) directories, "
                + "\(formatBytes(result.bytesWritten)) from media into \(target)")
            for d in result.damaged { print("  DAMAGED: \(d)") }
            if !result.damaged.isEmpty { return .integrity }
            return rep.damage.isEmpty && result.warnings.isEmpty ? .ok : .partial
        }
    }
}

extension MediaRestore {
    /// The read key from the set's newest tenant descriptor when it opens; otherwise the
    /// usual way (--read-key, the server's current wrapping, or the enrollment copy).
    func mediaReadKey(_ descriptor: (version: Int, name: String, body: [UInt8])?,
        config cfg: ClientConfig) async throws -> ReadPrivateKey {
        let tenant = try cfg.credential().tenant ?? ""
        var copies: [(name: String, key: WrappedReadKey)] = []
        if key.readKey == nil, let d = descriptor {
            let name = "\(d.name) on the media"
            do {
                if let w = try key.resolver(config: cfg).copy(descriptor: d.body, name: name, tenant: tenant) {
                    copies.append((name, w))
                }
            } catch {
                FileHandle.standardError.write(Data("""
                    note: skipping \(name): not a readable tenant descriptor (\(error))\n
                    """.utf8))
            }
        }
        return try await key.unwrap(config: cfg, copies: copies)
    }
}

struct MediaImportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: """
            Rebuild a server's store and catalog from a media set (disaster recovery onto a fresh repository host).
            """,
        discussion: """
            Run on the new repository host with its server stopped, after `redoubt server init --data DIR`. Every pack \
            and \
            manifest is verified (block checksums, record hashes, then pack hashes and manifest IDs in the catalog \
            rebuild) and locked again for at least the tenant's minimum retention. Hosts and restorers enroll anew \
            (the new server has its own CA); the read key's wrapping comes from the media's tenant descriptor.
            """)
    @Option(name: .long,
        help: "file:PATH (repeat for each volume, in order), dir:PATH or tape:/dev/nstN.") var device: [String]
    @Option(name: .long, help: changerHelp) var changer: String?
    @Option(name: .long, help: "The server data directory (made by `redoubt server init`).") var data: String
    @Flag(name: .long, help: "Read on past damaged blocks and import everything that verified.") var skipDamaged = false
    @Flag(name: .long, help: "Print the summary as JSON.") var json = false
    @Option(name: .long, help: ArgumentHelp(
        "A restorer's or host's config directory enrolled with the old server: its pinned CA is what each "
            + "snapshot's host key registration on the set must be signed by.", valueName: "DIR"))
    var trustedConfig: String?
    @Flag(name: .long,
          help: "Import without checking who wrote each snapshot: the set's writer decides what is listed.")
    var trustUnverifiedSnapshots = false
    @Flag(name: .long, help: "Exit 0, not 5, when snapshots were left out as unverified (they are still named).")
    var skipUnverified = false

    struct Summary: Encodable {
        var tenant: String
        var unverified: [String]
        var objects: Int
        var alreadyThere: Int
        var bytes: UInt64
        var packs: Int
        var snapshots: Int
        var rejected: [String]
        var damage: [String]
        var toDo: [String]
    }

    func run() async throws {
        try await RedoubtCLI.run {
            let home = ServerHome(path: data)
            guard (try? home.settings()) != nil else {
                throw ValidationError("""
                    \(data) is not a Redoubt server data directory: run `redoubt server init --data \(data)` first
                    """)
            }
            let trust: MediaImport.Trust
            switch (trustedConfig, trustUnverifiedSnapshots) {
            case (let dir?, false): trust = .trustRoot(try ClientConfig(path: dir).trustRoot())
            case (nil, true):
                trust = .unchecked
                FileHandle.standardError.write(Data(("WARNING: --trust-unverified-snapshots: snapshots are imported "
                    + "without checking who wrote them; anyone who could write this set could have planted some\n")
                        .utf8))
            case (_?, true): throw ValidationError("give --trusted-config or --trust-unverified-snapshots, not both")
            case (nil, false):
                throw ValidationError("media import checks each snapshot against the old server's CA: give "
                    + "--trusted-config DIR (a restorer's config enrolled with the old server), or, knowingly, "
                    + "--trust-unverified-snapshots")
            }
            var logger = Logger(label: "redoubt.media-import")
            logger.logLevel = .warning
            FileHandle.standardError.write(Data("reading volumes…\n".utf8))
            let progress = ProgressLine()
            var n: UInt64 = 0
            let s = try await MediaImport.run(home: home, source: try mediaSource(device, changer: changer),
                                              skipDamaged: skipDamaged, trust: trust, now: Date(),
                                                  logger: logger) { line in
                n += 1
                progress.update(files: n, bytes: 0, totalBytes: nil, current: line)
            }
            progress.finish()
            let out = Summary(tenant: s.tenant, unverified: s.unverified,
                              objects: s.objects, alreadyThere: s.alreadyThere, bytes: s.bytes, packs: s.rebuild.packs,
                              snapshots: s.rebuild.snapshots, rejected: s.rebuild.rejected, damage: s.damage,
                                  toDo: s.rebuild.toDo)
            if json { try printJSON(out) } else {
                print("""
                    imported tenant \(s.tenant): \(s.objects) objects (\(s.alreadyThere) already there), \
                    \(formatBytes(s.bytes)); 
                    """
                      + "catalog rebuilt: \(s.rebuild.packs) packs, \(s.rebuild.snapshots) snapshots")
                for u in s.unverified { print("  NOT IMPORTED (unverified author): \(u)") }
                for r in s.rebuild.rejected { print("  REJECTED: \(r)") }
                for d in s.damage { print("  DAMAGED: \(d)") }
                for t in s.rebuild.toDo { print("  TO DO: \(t)") }
                print("Next: redoubt server run --data \(data); then enroll hosts and restorers anew (`redoubt admin "
                    + "host add`, `restorer add`).")
            }
            if !s.unverified.isEmpty && !skipUnverified { return .integrity }
            return s.damage.isEmpty && s.rebuild.rejected.isEmpty ? .ok : .partial
        }
    }
}

// `redoubt media …`: offline media sets (issue 6, docs/FORMAT.md §13).
import ArgumentParser
import Foundation
import Logging
import RedoubtCore
import RedoubtMedia
import RedoubtServer
import RedoubtStore

struct MediaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "media", abstract: "Write and list offline media sets (tapes, files, directories).",
                                                    subcommands: [MediaWrite.self, MediaList.self])
}

/// Parses `123`, `64K`, `100M`, `2G`, `1T` (powers of 1024).
func parseMediaSize(_ s: String) throws -> UInt64 {
    let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
    var t = s.uppercased()
    if t.hasSuffix("B") { t.removeLast() }
    var mult: UInt64 = 1
    if let u = t.last, let m = units[u] { mult = m; t.removeLast() }
    guard let n = UInt64(t), n > 0 else { throw ValidationError("size \(s) is not a number with an optional K/M/G/T suffix, e.g. 400G") }
    return n * mult
}

struct MediaWrite: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "write",
                                                    abstract: "Write a tenant's snapshots (ciphertext as stored) to a media set; run on the server host.")
    @Argument(help: "The tenant.") var tenant: String
    @Option(name: .long, help: "The server data directory.") var data: String
    @Option(name: .long, help: "Device: file:PATH (volumes PATH, PATH.2, …; a FIFO works) or dir:PATH.") var device: String
    @Option(name: .long, help: "Pool name written in each volume label.") var pool = "default"
    @Option(name: .long, parsing: .upToNextOption, help: "latest, all, or snapshot IDs.") var snapshots: [String] = ["latest"]
    @Option(name: .long, help: "Bytes per volume (e.g. 400G); without it the set is one volume.") var capacity: String?
    @Option(name: .long, help: "Block size (power of two, 256 to 4M).") var blockSize = "1M"

    func run() async throws {
        try await RedoubtCLI.run {
            let cap = try capacity.map(parseMediaSize)
            let dev = try MediaDeviceSpec.writer(device, capacity: cap)
            var rng = SystemRandomNumberGenerator()
            let setID = (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let f = ISO8601DateFormatter()
            let w = try MediaWriter(device: dev, setID: setID, pool: pool, tenant: tenant, blockSize: Int(try parseMediaSize(blockSize)),
                                    created: f.string(from: Date()), retainUntil: nil, writer: "redoubt")
            let sel: MediaExport.Selection = snapshots == ["latest"] ? .latest : snapshots == ["all"] ? .all : .ids(snapshots)
            let home = ServerHome(path: data)
            let catalog = try Catalog(path: home.catalogPath)
            let store = try LocalStore(root: URL(fileURLWithPath: home.storePath))
            let s = try await MediaExport.run(catalog: catalog, store: store, tenant: tenant, selection: sel, writer: w,
                                              actor: "local-admin", now: Date()) { line in
                FileHandle.standardError.write(Data("  \(line)\n".utf8))
            }
            print("wrote media set \(hexString(setID)): \(s.snapshots.count) snapshots, \(s.packs) packs, \(s.media.volumes) volumes, "
                  + "\(formatBytes(s.media.bytes)); audit record \(s.auditSeq)")
            return .ok
        }
    }
}

struct MediaList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Read a media set and list its volumes, records and damage.")
    @Option(name: .long, help: "Device: file:PATH or dir:PATH.") var device: String
    @Flag(name: .long, help: "Read on past damaged blocks and report them.") var skipDamaged = false
    @Flag(name: .long, help: "Print JSON.") var json = false

    struct Listing: Encodable {
        var labels: [MediaLabel]
        var records: [MediaCatalogEntry]
        var damage: [String]
    }

    func run() async throws {
        try await RedoubtCLI.run {
            let src: SequentialSource
            if device.hasPrefix("file:") { src = FileSequentialDevice(path: String(device.dropFirst(5))) }
            else if device.hasPrefix("dir:") { src = try DirectorySequentialDevice(path: String(device.dropFirst(4))) }
            else { throw ValidationError("unknown device \(device); use file:PATH or dir:PATH") }
            let rep = try MediaReader(source: src, skipDamaged: skipDamaged).read { _ in }
            let l = Listing(labels: rep.labels, records: rep.setCatalog?.records ?? [], damage: rep.damage.map(\.description))
            if json { try printJSON(l) } else {
                for v in rep.labels { print("volume \(v.volumeSeq) of set \(v.setID): pool \(v.pool), tenant \(v.tenant), written \(v.created)") }
                for r in l.records { print("  \(r.type) \(r.id)  volume \(r.volume) blocks \(r.firstBlock)-\(r.lastBlock)") }
                for d in l.damage { print("DAMAGED: \(d)") }
            }
            return rep.damage.isEmpty ? .ok : .partial
        }
    }
}

import Crypto
import Foundation
import Testing
@testable import RedoubtCore
import RedoubtKMS

/// The golden repository of format v1 (Tests/RedoubtCoreTests/Fixtures/v1): written once
/// with fixed keys and committed. Every later build must read it back exactly.
///
/// Regenerate only when adding a new format version (into a new folder; never rewrite
/// v1): `REDOUBT_WRITE_FIXTURES=1 swift test --filter GoldenFixture`.
enum GoldenModel {
    static let passphrase = "redoubt golden fixture v1"
    static let tenant = "golden"
    static let host = "fixture-host"
    static let time = Timestamp(seconds: 1_795_000_000, nanoseconds: 250_000_000)

    struct Entry {
        var path: [UInt8]
        var node: Node
        var data: [UInt8] = []
    }

    static func random(_ n: Int, seed: UInt64) -> [UInt8] {
        var rng = TreeRNG(state: seed)
        return (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
    }

    static func text(_ n: Int) -> [UInt8] {
        let line = Array("Redoubt keeps the backups that ransomware cannot reach.\n".utf8)
        return (0..<n).map { line[$0 % line.count] }
    }

    /// The source tree, as nodes with their data. Paths are relative to the root.
    static func entries() -> [Entry] {
        let t = time
        func file(_ path: String, _ data: [UInt8], mode: UInt32 = 0o644, xattrs: [ExtendedAttribute] = []) -> Entry {
            let name = Array(path.split(separator: "/").last!.utf8)
            return Entry(path: Array(path.utf8), node: Node(name: name, type: .file, mode: mode, uid: 1000, gid: 1000,
                user: Array("alice".utf8),
                                                            group: Array("staff".utf8), mtime: t, ctime: t, atime: t,
                                                                size: UInt64(data.count), xattrs: xattrs), data: data)
        }
        func other(_ path: [UInt8], _ type: NodeType, mode: UInt32, link: String = "", rdev: UInt64 = 0) -> Entry {
            let name = Array(path.split(separator: 0x2f).last!)
            return Entry(path: path, node: Node(name: name, type: type, mode: mode, mtime: t, ctime: t, atime: t,
                linkTarget: Array(link.utf8), rdev: rdev))
        }
        var sparse = [UInt8](repeating: 0, count: 3 << 20)
        let a = random(4096, seed: 11), b = random(4096, seed: 12)
        sparse.replaceSubrange(0..<4096, with: a)
        sparse.replaceSubrange((2 << 20)..<((2 << 20) + 4096), with: b)
        var sparseEntry = file("sparse.img", sparse)
        sparseEntry.node.dataRegions = [Extent(offset: 0, length: 4096), Extent(offset: 2 << 20, length: 4096)]
        return [
            file("hello.txt", text(48_000), xattrs: [ExtendedAttribute(name: Array("user.comment".utf8),
                value: Array("golden".utf8)),
                                                     ExtendedAttribute(name: Array("system.posix_acl_access".utf8),
                                                                       value: [2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255,
                                                                           255, 4, 0, 4, 0, 255, 255, 255, 255, 32, 0,
                                                                           4, 0, 255, 255, 255, 255])]),
            file("random.bin", random(1_300_000, seed: 10), mode: 0o600),
            file("empty", []),
            file("sub/nested.txt", text(100)),
            Entry(path: Array("sub/".utf8) + [0x6e, 0xff, 0xfe, 0x2e, 0x62, 0x69, 0x6e],
                  node: Node(name: [0x6e, 0xff, 0xfe, 0x2e, 0x62, 0x69, 0x6e], type: .file, mode: 0o640, mtime: t,
                      ctime: t, atime: t, size: 5), data: Array("bytes".utf8)),
            other(Array("emptydir".utf8), .directory, mode: 0o700),
            other(Array("sub".utf8), .directory, mode: 0o755),
            other(Array("link".utf8), .symlink, mode: 0o777, link: "hello.txt"),
            other(Array("hard".utf8), .hardlink, mode: 0o644, link: "sub/nested.txt"),
            other(Array("fifo".utf8), .fifo, mode: 0o600),
            other(Array("null".utf8), .charDevice, mode: 0o666, rdev: 0x103),
            other(Array("setuid".utf8), .file, mode: 0o4755),
            sparseEntry,
        ]
    }

    static func keys() -> TenantKeys { TenantKeys.fixedForTests(seed: 1) }

    /// The activity section of the format-4 manifest: every field non-zero.
    static var activity: SnapshotActivity {
        var a = SnapshotActivity()
        a.hasBaseline = true
        a.filesAdded = 1; a.filesChanged = 2; a.filesDeleted = 3; a.filesRenamed = 4; a.extensionChanged = 5
        a.knownRansomExtension = 6; a.topNewExtension = "locked"; a.topNewExtensionFiles = 7
        a.ransomNoteDirectories = 8; a.sampledFiles = 9; a.highEntropyFiles = 10; a.typeMismatchFiles = 11
        a.suspiciousContentFiles = 12; a.sealedBytesRaw = 1_300_000; a.sealedBytesStored = 1_300_400
        return a
    }
    /// A directory above the backed-up path in format 3 (`srv`, `golden`).
    static func ancestor(_ name: String, subtree: [ChunkID] = [], seals: [ChunkSeal] = []) -> Node {
        var n = Node(name: Array(name.utf8), type: .directory, mode: 0o750, uid: 0, gid: 4, user: Array("root".utf8),
                     group: Array("adm".utf8), mtime: Timestamp(seconds: 1_794_000_000, nanoseconds: 7),
                     ctime: time, atime: time, subtree: subtree)
        n.subtreeSeals = seals
        return n
    }
    static func hostKey() -> HostSigningKey { HostSigningKey.fixedForTests(seed: 2) }

    /// What a reader must find: one line per entry, sorted by path.
    static func expectedLines(_ entries: [Entry]) -> [String] {
        entries.map { e in
            let n = e.node
            let digest = n.type == .file ? hexString(SHA256.hash(data: e.data)) : "-"
            return """
                \(hexString(e.path)) \(n.type) \(String(n.mode, radix: 8)) \(n.uid):\(n.gid) \(n.size) \(digest) \
                \(hexString(n.linkTarget)) \(n.rdev) xattrs=\(n.xattrs.count) sparse=\(n.dataRegions?.count ?? -1)
                """
        }.sorted()
    }
}

@Suite struct GoldenFixtureTests {
    static var fixtureDir: URL { fixtureDir(1) }

    static func fixtureDir(_ version: Int) -> URL {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("v\(version)")
    }

    /// `REDOUBT_WRITE_FIXTURES=N` writes `Fixtures/vN` with format N (1 to 4): only to add
    /// a new format's fixture; committed fixtures are never rewritten. Format 3 is format 2
    /// with the root kept whole: the model lies at `srv/golden` below the root, `srv` and
    /// `golden` being directories of their own. Format 4 is format 3 with an activity section.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["REDOUBT_WRITE_FIXTURES"] != nil))
    func writeGoldenFixture() async throws {
        let version = Int(ProcessInfo.processInfo.environment["REDOUBT_WRITE_FIXTURES"] ?? "") ?? 0
        try #require((1...4).contains(version))
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/v\(version)")
        try #require(!FileManager.default.fileExists(atPath: dir.path),
                     "Fixtures/v\(version) exists; fixtures are never rewritten")
        for sub in ["packs", "snapshots", "keys"] {
            try FileManager.default.createDirectory(at: dir.appendingPathComponent(sub),
                withIntermediateDirectories: true)
        }
        let keys = GoldenModel.keys()
        let pipeline = try PackPipeline(material: keys.sharedWriteMaterial, targetPackSize: 256 << 10,
                                        packVersion: UInt16(min(version, 2)))
        let entries = GoldenModel.entries()
        // Build trees bottom-up: "sub" first, then the root.
        func nodeWithContent(_ e: GoldenModel.Entry) throws -> Node {
            var n = e.node
            guard n.type == .file else { return n }
            var data = e.data
            if let regions = n.dataRegions {
                data = regions.flatMap { Array(e.data[Int($0.offset)..<Int($0.offset + $0.length)]) }
            }
            n.content = data.isEmpty ? [] : try pipeline.add(blob: data)
            return n
        }
        let inSub = try entries.filter { $0.path.starts(with: Array("sub/".utf8)) }.map(nodeWithContent)
        var sub = entries.first { $0.path == Array("sub".utf8) }!.node
        sub.subtree = try pipeline.add(tree: Tree(nodes: inSub))
        var emptydir = entries.first { $0.path == Array("emptydir".utf8) }!.node
        emptydir.subtree = try pipeline.add(tree: Tree(nodes: []))
        var rootNodes = try entries.filter { !$0.path.contains(0x2f)
            && $0.node.type != .directory }.map(nodeWithContent)
        rootNodes += [sub, emptydir]
        if version >= 3 {
            // The backed-up path /srv/golden, kept whole.
            var golden = GoldenModel.ancestor("golden")
            golden.subtree = try pipeline.add(tree: Tree(nodes: rootNodes))
            var srv = GoldenModel.ancestor("srv")
            srv.subtree = try pipeline.add(tree: Tree(nodes: [golden]))
            rootNodes = [srv]
        }
        let root = try pipeline.add(tree: Tree(nodes: rootNodes))
        let packs = try pipeline.flush()
        for p in packs { try Data(p.bytes).write(to: dir.appendingPathComponent("packs/\(p.id)")) }
        var stats = SnapshotStatistics()
        stats.files = UInt64(entries.filter { $0.node.type == .file }.count)
        stats.directories = version >= 3 ? 5 : 3
        stats.chunksNew = pipeline.chunksNew
        stats.chunksReused = pipeline.chunksReused
        stats.bytesUploaded = pipeline.bytesPacked
        let header = ManifestHeader(tenant: GoldenModel.tenant, readKeyID: keys.readKey.publicKey.keyID,
            host: GoldenModel.host,
                                    hostKey: GoldenModel.hostKey().publicKey, time: GoldenModel.time,
                                        nonce: [UInt8](repeating: 0x5a, count: 16),
                                    paths: [Array("/srv/golden".utf8)], tags: ["golden"], statistics: stats,
                                        packs: packs.map(\.id),
                                    clientVersion: "redoubt fixture v\(version)",
                                    activity: version >= 4 ? GoldenModel.activity : nil)
        let rootSeals = version >= 2 ? pipeline.seals(for: root) : nil
        let m = try Manifest.create(header: header, root: root, rootSeals: rootSeals, version: UInt16(max(version, 2)),
            readPublicKey: keys.readKey.publicKey,
                                    signingKey: GoldenModel.hostKey())
        try Data(m.bytes).write(to: dir.appendingPathComponent("snapshots/\(m.id)"))
        let provider = try PassphraseKeyProvider(passphrase: SecretBytes(copying: Array(GoldenModel.passphrase.utf8)),
            logN: 10)
        let wrapped = try await provider.wrap(keys.readKey, context: KeyContext(tenant: GoldenModel.tenant,
            keyVersion: 1))
        try wrapped.encoded().write(to: dir.appendingPathComponent("keys/read-key.json"))
        try keys.sharedWriteMaterial.encode().withUnsafeBytes {
            try Data($0).write(to: dir.appendingPathComponent("keys/write-material.bin"))
        }
        try Data(GoldenModel.hostKey().publicKey.rawRepresentation)
            .write(to: dir.appendingPathComponent("keys/host-\(GoldenModel.host).pub"))
        try (GoldenModel.expectedLines(entries).joined(separator: "\n")
            + "\n").write(to: dir.appendingPathComponent("expected.txt"), atomically: true, encoding: .utf8)
    }

    /// Reads the committed v1 repository with only its own files and the passphrase.
    @Test func readsTheV1GoldenRepositoryBitForBit() async throws { try await readsGoldenRepository(1) }

    /// Reads the committed v2 repository (convergent sealing: trees and root carry seals).
    @Test func readsTheV2GoldenRepositoryBitForBit() async throws { try await readsGoldenRepository(2) }

    /// Reads the committed v3 repository (format 2 with the backed-up path kept whole).
    @Test func readsTheV3GoldenRepositoryBitForBit() async throws { try await readsGoldenRepository(3) }

    /// Reads the committed v4 repository (format 3 with the host's activity section).
    @Test func readsTheV4GoldenRepositoryBitForBit() async throws { try await readsGoldenRepository(4) }

    func readsGoldenRepository(_ version: Int) async throws {
        let dir = Self.fixtureDir(version)
        let wrapped = try WrappedReadKey.decode(try Data(contentsOf: dir.appendingPathComponent("keys/read-key.json")))
        let provider = try PassphraseKeyProvider(passphrase: SecretBytes(copying: Array(GoldenModel.passphrase.utf8)))
        let readKey = try await provider.unwrap(wrapped, context: KeyContext(tenant: GoldenModel.tenant, keyVersion: 1))
        let materialFile = dir.appendingPathComponent("keys/write-material.bin")
        let material = try SharedWriteMaterial.decode(SecretBytes(copying: try Data(contentsOf: materialFile)))
        #expect(material.readPublicKey == readKey.publicKey)
        let hostKeyFile = dir.appendingPathComponent("keys/host-\(GoldenModel.host).pub")
        let hostKey = try HostPublicKey(rawRepresentation: Array(try Data(contentsOf: hostKeyFile)))

        let snapshots =
            try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("snapshots").path)
        #expect(snapshots.count == 1)
        let id = try #require(SnapshotID(hex: snapshots[0]))
        let manifest = try Manifest.parse(Array(try Data(contentsOf: dir.appendingPathComponent("snapshots/\(id)"))),
            expectedID: id)
        try manifest.verify(tenant: GoldenModel.tenant, host: GoldenModel.host, hostKey: hostKey,
            readKeyID: readKey.publicKey.keyID)
        #expect(manifest.header.time == GoldenModel.time)
        #expect(manifest.header.tags == ["golden"])
        #expect(manifest.version == UInt16(version))
        #expect(manifest.header.activity == (version >= 4 ? GoldenModel.activity : nil))

        let packDir = dir.appendingPathComponent("packs")
        let packFiles = try FileManager.default.contentsOfDirectory(atPath: packDir.path).sorted()
        #expect(packFiles == manifest.header.packs.map(\.description))
        for name in packFiles {
            let summary = try PackReader.inspect(Array(try Data(contentsOf: packDir.appendingPathComponent(name))),
                expectedID: PackID(hex: name)!)
            #expect(summary.keyID == readKey.publicKey.keyID)
            #expect(summary.version == UInt16(min(version, 2)))
        }

        let reader = try SnapshotReader(manifest: manifest, readKey: readKey, chunkIDKey: material.chunkIDKey) { id in
            Array(try Data(contentsOf: packDir.appendingPathComponent(id.description)))
        }
        var lines: [String] = []
        func walk(_ tree: Tree, prefix: [UInt8]) throws {
            for n in tree.nodes {
                let path = prefix.isEmpty ? n.name : prefix + [0x2f] + n.name
                let digest = n.type == .file ? hexString(SHA256.hash(data: try reader.contents(of: n))) : "-"
                lines.append("""
                    \(hexString(path)) \(n.type) \(String(n.mode, radix: 8)) \(n.uid):\(n.gid) \(n.size) \(digest) \
                    \(hexString(n.linkTarget)) \(n.rdev) xattrs=\(n.xattrs.count) sparse=\(n.dataRegions?.count ?? -1)
                    """)
                if n.type == .directory { try walk(try reader.tree(of: n), prefix: path) }
            }
        }
        var top = try reader.rootTree()
        #expect(manifest.keepsPathsWhole == (version >= 3))
        if version >= 3 {
            // The root holds srv, srv holds golden, with their own metadata; the model is below.
            for name in ["srv", "golden"] {
                try #require(top.nodes.count == 1)
                let n = top.nodes[0]
                #expect(n.name == Array(name.utf8) && n == GoldenModel.ancestor(name, subtree: n.subtree,
                    seals: n.subtreeSeals))
                top = try reader.tree(of: n)
            }
        }
        try walk(top, prefix: [])
        let expected = try String(contentsOf: dir.appendingPathComponent("expected.txt"),
            encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(lines.sorted() == expected)
        // The fixture model in this file must also still describe what was committed.
        #expect(expected == GoldenModel.expectedLines(GoldenModel.entries()))
    }

    @Test(arguments: [1, 2, 3, 4]) func aFlippedBitInAnyGoldenPackIsReportedWithThePack(version: Int) throws {
        let packDir = Self.fixtureDir(version).appendingPathComponent("packs")
        for name in try FileManager.default.contentsOfDirectory(atPath: packDir.path) {
            var bytes = Array(try Data(contentsOf: packDir.appendingPathComponent(name)))
            bytes[bytes.count / 2] ^= 0x10
            let e = #expect(throws: CoreError.self) { try PackReader.inspect(bytes, expectedID: PackID(hex: name)!) }
            #expect(e?.object.contains(name) == true)
            #expect(e?.code == .authenticationFailed)
        }
    }
}

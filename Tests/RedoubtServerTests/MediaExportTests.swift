import Foundation
import Testing
import RedoubtClient
import RedoubtCore
import RedoubtKMS
import RedoubtMedia
import RedoubtStore
@testable import RedoubtServer

/// Packs spooled from media into a directory, one file per pack ID.
struct SpoolPackSource: PackSource {
    let dir: String
    func pack(_ id: PackID) async throws -> [UInt8] {
        Array(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(id.description)")))
    }
}

@Suite struct MediaExportTests {
    @Test func backupWrittenToMultiVolumeMediaRestoresWithoutServerOrCatalog() async throws {
        let server = try await TestServer.start()
        let keys = try TenantKeys.generate()
        try await server.createTenant("acme", keys: keys)
        let (wc, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let (rc, restorer) = try await server.enroll(tenant: "acme", role: "restorer", name: "vault")
        let src = server.dir.appendingPathComponent("src")
        try FileManager.default.createDirectory(at: src, withIntermediateDirectories: true)
        var files: [String: [UInt8]] = [:]
        var rng = SystemRandomNumberGenerator()
        for i in 0..<4 {
            let bytes = (0..<(300_000 * (i + 1))).map { _ in UInt8.random(in: 0...255, using: &rng) }
            files["f\(i).bin"] = bytes
            try Data(bytes).write(to: src.appendingPathComponent("f\(i).bin"))
        }
        let result = try await Archiver().run(options: BackupOptions(paths: [src.path], cachePath: wc.cachePath),
            keys: try wc.writeKeySet(),
                                              target: writer, now: Timestamp(seconds: testNow))
        let chunkIDKey = try rc.sharedMaterial().chunkIDKey
        let hostKey = try wc.writeKeySet().signingKey.publicKey
        await writer.shutdown(); await restorer.shutdown()

        // Write the set from the server's own catalog and store: 64 KiB blocks, 1 MiB volumes.
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-media-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: work) }
        let media = work.appendingPathComponent("media").path
        try FileManager.default.createDirectory(atPath: media, withIntermediateDirectories: true)
        let catalog = try await server.home.openCatalog()
        let store = try LocalStore(root: URL(fileURLWithPath: server.home.storePath))
        let mw = try MediaWriter(device: FileSequentialDevice(path: "\(media)/set", capacity: 1 << 20),
            setID: Array(repeating: 7, count: 16),
                                 pool: "offsite", tenant: "acme", blockSize: 64 << 10, created: "2026-11-26T00:00:00Z",
                                 retainUntil: nil, writer: "test")
        var lines = 0
        let summary = try await MediaExport.run(catalog: catalog, store: store, tenant: "acme", selection: .latest,
            writer: mw,
                                                actor: "test", now: Date(), progress: { _ in lines += 1 })
        #expect(summary.snapshots == [result.manifest.id.description])
        #expect(summary.media.volumes >= 3, "wanted a multi-volume set, got \(summary.media.volumes)")
        // One line per pack, the manifest, and the host's registration (a host key statement).
        #expect(lines == summary.packs + 2)
        let head = try await catalog.auditRecords().last
        #expect(head?.action == "media-write" && head?.seq == summary.auditSeq)

        // No server, no catalog, no store, no client config: only the volumes (and the passphrase).
        await server.stop()
        #expect(!FileManager.default.fileExists(atPath: server.home.catalogPath))
        #expect(!FileManager.default.fileExists(atPath: rc.directory.path))

        let spool = work.appendingPathComponent("spool").path
        try FileManager.default.createDirectory(atPath: spool, withIntermediateDirectories: true)
        var manifests: [String: [UInt8]] = [:]
        var descriptor: [UInt8]?
        var anchor: String?
        let rep = try MediaReader(source: FileSequentialDevice(path: "\(media)/set"),
            skipDamaged: false).read { r throws(MediaError) in
            switch r.type {
            case .pack: try? Data(r.body).write(to: URL(fileURLWithPath: "\(spool)/\(r.id)"))
            case .manifest: manifests[r.id] = r.body
            case .object where r.id.hasPrefix("tenant-v"): descriptor = r.body
            case .object: break
            case .auditAnchor: anchor = String(decoding: r.body, as: UTF8.self)
            }
        }
        #expect(rep.labels.count == Int(summary.media.volumes))
        #expect(anchor?.contains("\"seq\":\(summary.auditSeq)") == true)
        #expect(descriptor.map { String(decoding: $0, as: UTF8.self).contains("acme") } == true)
        let mbytes = try #require(manifests[result.manifest.id.description])
        let manifest = try Manifest.parse(mbytes, expectedID: result.manifest.id)
        // The read key comes from the wrapped key in the tenant descriptor on the media.
        let desc = try JSONDecoder().decode(TenantDescriptor.self, from: Data(try #require(descriptor)))
        let readKey = try await PassphraseKeyProvider(passphrase: SecretBytes(copying: Array("pw".utf8)), logN: 10)
            .unwrap(try WrappedReadKey.decode(Data(desc.wrappedReadKey.utf8)), context: KeyContext(tenant: "acme",
                keyVersion: 1))
        try manifest.verify(tenant: "acme", host: "web1", hostKey: hostKey, readKeyID: readKey.publicKey.keyID)
        let target = work.appendingPathComponent("restored")
        let restored = try await Restorer().restore(manifest: manifest, readKey: readKey, chunkIDKey: chunkIDKey,
                                                    source: SpoolPackSource(dir: spool), target: target.path)
        #expect(restored.damaged.isEmpty)
        for (name, bytes) in files {
            let got = try Data(contentsOf: URL(fileURLWithPath: target.path + src.path + "/" + name))
            #expect(Array(got) == bytes, "\(name) differs after restore from media")
        }
    }
}

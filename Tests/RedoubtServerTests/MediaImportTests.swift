import Foundation
import Logging
import Testing
import RedoubtClient
import RedoubtCore
import RedoubtKMS
import RedoubtMedia
import RedoubtStore
@testable import RedoubtServer

/// Disaster recovery: a media set imported into a fresh repository host's empty data
/// directory, then restored through that server as usual; damaged and foreign input.
@Suite struct MediaImportTests {
    let logger = Logger(label: "test.media-import")

    @Test(.sqliteCatalogOnly) func aMediaSetImportedIntoAFreshServerRestoresThroughIt() async throws {
        // The first repository host: a tenant, a backup, a media set of several volumes.
        let first = try await TestServer.start()
        let keys = try TenantKeys.generate()
        try await first.createTenant("acme", keys: keys)
        let (wc, writer) = try await first.enroll(tenant: "acme", role: "writer", name: "web1")
        let src = first.dir.appendingPathComponent("src")
        try FileManager.default.createDirectory(at: src, withIntermediateDirectories: true)
        var files: [String: [UInt8]] = [:]
        var rng = SystemRandomNumberGenerator()
        for i in 0..<3 {
            files["f\(i).bin"] = (0..<(250_000 * (i + 1))).map { _ in UInt8.random(in: 0...255, using: &rng) }
            try Data(files["f\(i).bin"]!).write(to: src.appendingPathComponent("f\(i).bin"))
        }
        let backup = try await Archiver().run(options: BackupOptions(paths: [src.path], cachePath: wc.cachePath),
            keys: try wc.writeKeySet(),
                                              target: writer, now: Timestamp(seconds: testNow))
        await writer.shutdown()
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-import-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: work) }
        let volumes = work.appendingPathComponent("set").path
        let mw = try MediaWriter(device: FileSequentialDevice(path: volumes, capacity: 512 << 10),
            setID: Array(repeating: 9, count: 16),
                                 pool: "offsite", tenant: "acme", blockSize: 64 << 10, created: "2026-11-27T00:00:00Z",
                                     retainUntil: nil, writer: "test")
        let written = try await MediaExport.run(catalog: try await first.home.openCatalog(),
            store: try LocalStore(root: URL(fileURLWithPath: first.home.storePath)),
                                                tenant: "acme", selection: .all, writer: mw, actor: "test",
                                                    now: Date()) {
                                                    _ in
                                                }
        #expect(written.media.volumes >= 2)
        // Nothing on the media or in the store reveals the write material (its chunk-ID key
        // would let whoever holds a copy confirm guessed content).
        let secret = keys.sharedWriteMaterial.encode().withUnsafeBytes { Data($0) }
        let chunkIDKey = keys.sharedWriteMaterial.chunkIDKey.export().withUnsafeBytes { Data($0) }
        let leaks = try FileManager.default.subpathsOfDirectory(atPath: work.path).map { "\(work.path)/\($0)" }
            + FileManager.default.subpathsOfDirectory(atPath: first.home.storePath).map {
                "\(first.home.storePath)/\($0)"
            }
        for path in leaks {
            guard let d = FileManager.default.contents(atPath: path) else { continue }
            #expect(d.range(of: chunkIDKey) == nil
                && d.range(of: Data(secret.base64EncodedString().utf8).prefix(48)) == nil
                    && d.range(of: Data("\"writeMaterial\"".utf8)) == nil, "\(path)")
        }
        // The first host is lost.
        await first.stop()

        // A fresh host: init, import, then serve.
        var imported: MediaImportSummary?
        let second = try await TestServer.start { home in
            imported = try await MediaImport.run(home: home, source: FileSequentialDevice(path: volumes),
                skipDamaged: false, trust: .unchecked, now: Date(),
                                                 logger: logger) { _ in }
            // Again: nothing new, nothing lost.
            let again = try await MediaImport.run(home: home, source: FileSequentialDevice(path: volumes),
                skipDamaged: false, trust: .unchecked, now: Date(),
                                                  logger: logger) { _ in }
            #expect(again.objects == 0 && again.alreadyThere == imported?.objects)
        }
        let s = try #require(imported)
        #expect(s.tenant == "acme" && s.damage.isEmpty && s.rebuild.rejected.isEmpty)
        // The media hold the write material only sealed to the read key: the new server
        // cannot enroll anyone until an admin opens it with the read key and gives it back.
        #expect(s.rebuild.toDo.count == 1 && s.rebuild.toDo.allSatisfy {
            $0.contains("tenant acme") && $0.contains("restore-material")
        })
        let refused = await #expect(throws: APIError.self) {
            _ = try await second.enroll(tenant: "acme", role: "restorer", name: "early")
        }
        #expect(refused?.code == "E_NO_WRITE_MATERIAL")
        let info = try await second.admin.writeMaterial(tenant: "acme")
        #expect(!info.present)
        let opened =
            try SharedWriteMaterial.open(sealed: Array(try #require(Data(base64Encoded: info.sealedWriteMaterial))),
            tenant: "acme", readKey: keys.readKey)
        let material = opened.encode().withUnsafeBytes { Data($0).base64EncodedString() }
        // Material of another tenant (another read key) is refused; the right one is taken once.
        let foreign = try TenantKeys.generate().sharedWriteMaterial.encode().withUnsafeBytes {
            Data($0).base64EncodedString()
        }
        let wrongKey = await #expect(throws: APIError.self) {
            _ = try await second.admin.restoreWriteMaterial(tenant: "acme", material: foreign)
        }
        #expect(wrongKey?.code == "E_BAD_REQUEST")
        #expect(try await second.admin.restoreWriteMaterial(tenant: "acme", material: material).present)
        #expect(s.rebuild.packs == written.packs && s.rebuild.snapshots == 1)
        // Imported packs are locked again for at least the tenant's minimum retention.
        let store = try LocalStore(root: URL(fileURLWithPath: second.home.storePath))
        let packs = try await store.list(prefix: "t/acme/packs/")
        #expect(packs.count == written.packs)
        #expect(packs.allSatisfy { ($0.retainUntil ?? .distantPast) > Date().addingTimeInterval(29 * 86400) })

        // A restorer enrolled on the new server restores bit for bit.
        let (rc, restorer) = try await second.enroll(tenant: "acme", role: "restorer", name: "vault")
        let id = backup.manifest.id
        let manifest = try Manifest.parse(try await restorer.manifestBytes(id.description), expectedID: id)
        let readKey = try await PassphraseKeyProvider(passphrase: SecretBytes(copying: Array("pw".utf8)), logN: 10)
            .unwrap(try rc.wrappedReadKey(), context: KeyContext(tenant: "acme", keyVersion: 1))
        let target = work.appendingPathComponent("restored")
        let r = try await Restorer().restore(manifest: manifest, readKey: readKey,
            chunkIDKey: try rc.sharedMaterial().chunkIDKey,
                                             source: restorer, target: target.path)
        #expect(r.damaged.isEmpty)
        for (name, bytes) in files {
            #expect(Array(try Data(contentsOf: URL(fileURLWithPath: target.path + src.path + "/" + name))) == bytes,
                "\(name) differs")
        }
        await restorer.shutdown()

        // Another tenant of the same name (another read key) is never merged into.
        let other = try await TestServer.start()
        try await other.createTenant("acme", keys: try TenantKeys.generate())
        do {
            _ = try await MediaImport.run(home: other.home, source: FileSequentialDevice(path: volumes),
                skipDamaged: false, trust: .unchecked, now: Date(), logger: logger) {
                _ in
            }
            Issue.record("a set of another tenant acme was merged")
        } catch let e as ServerError { #expect(e.code == "E_CONFLICT", "\(e)") }
        #expect(try await LocalStore(root: URL(fileURLWithPath: other.home.storePath)).list(prefix: "t/acme/packs/")
            .isEmpty)
        await other.stop()

        // Damage: a flipped bit in the second volume stops the import, naming volume and block,
        // with nothing put into the store; with skipDamaged, what verified comes in and the
        // damage is listed.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: "\(volumes).2"))
        bytes[bytes.count / 2] ^= 0x10
        try bytes.write(to: URL(fileURLWithPath: "\(volumes).2"))
        let third = try await TestServer.start { home in
            do {
                _ = try await MediaImport.run(home: home, source: FileSequentialDevice(path: volumes),
                    skipDamaged: false, trust: .unchecked, now: Date(), logger: logger) {
                    _ in
                }
                Issue.record("a damaged set was imported")
            } catch let e as MediaError {
                #expect(e.volume == 2 && e.block > 0, "\(e)")
            }
            #expect(try await LocalStore(root: URL(fileURLWithPath: home.storePath)).list(prefix: "t/").isEmpty)
            let partial = try await MediaImport.run(home: home, source: FileSequentialDevice(path: volumes),
                skipDamaged: true, trust: .unchecked, now: Date(), logger: logger) {
                _ in
            }
            #expect(!partial.damage.isEmpty && partial.damage.allSatisfy { $0.contains("volume 2") })
        }
        await third.stop()

        // The same set again into a server that imported it and then rewrote its descriptor
        // (as a retention change does: other bytes, same key version). The set merges in;
        // the server keeps its own descriptor. (The set is damaged by now: what verifies
        // comes in.) Imports run with the server stopped, as here.
        let fourth = try await TestServer.start { home in
            _ = try await MediaImport.run(home: home, source: FileSequentialDevice(path: volumes), skipDamaged: true,
                trust: .unchecked, now: Date(), logger: logger) {
                _ in
            }
            let store = try LocalStore(root: URL(fileURLWithPath: home.storePath))
            let key = ObjectKey("t/acme/tenant-v1.json")!
            var d =
                try #require(try JSONSerialization.jsonObject(with: Data(try await store.get(key))) as? [String: Any])
            d["minRetentionSeconds"] = 40.0 * 86400
            try await store.delete(key, now: Date())
            _ = try await store.put(key, Array(try JSONSerialization.data(withJSONObject: d)), retainUntil: nil)
            let before = try await store.get(key)
            _ = try await MediaImport.run(home: home, source: FileSequentialDevice(path: volumes), skipDamaged: true,
                trust: .unchecked, now: Date(), logger: logger) {
                _ in
            }
            #expect(try await store.get(key) == before)
        }
        await fourth.stop()
        await second.stop()
    }
}

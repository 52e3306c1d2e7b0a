import Foundation
import Logging
import Testing
import RedoubtClient
import RedoubtCore
import RedoubtKMS
import RedoubtStore
@testable import RedoubtServer

/// The golden tenant descriptors (docs/FORMAT.md §7.1): format 1 held the write material in
/// the clear, format 2 holds it sealed to the read key. Every later build must read both.
@Suite struct DescriptorFixtureTests {
    static let directory = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/descriptors")

    /// The fixtures' tenant keys: fixed bytes, so the material can be compared.
    static func keys() throws -> TenantKeys {
        let b = {
            (o: UInt8) in SecretBytes(copying: (0..<32).map { UInt8(truncatingIfNeeded: Int($0) + Int(o) + 21) })
        }
        return TenantKeys(readKey: try ReadPrivateKey(seed: b(0)), chunkIDKey: try ChunkIDKey(secret: b(32)),
            chunkerSeed: try ChunkerSeed(secret: b(64)))
    }

    func descriptor(_ format: Int) throws -> (bytes: Data, descriptor: TenantDescriptor) {
        let bytes = try Data(contentsOf: Self.directory.appendingPathComponent("tenant-v1-format\(format).json"))
        return (bytes, try JSONDecoder().decode(TenantDescriptor.self, from: bytes))
    }

    @Test func formatOneCarriesTheMaterialInTheClear() throws {
        let keys = try Self.keys()
        let d = try descriptor(1).descriptor
        #expect(d.format == 1 && d.sealed == nil)
        let r = try #require(d.record)
        #expect(r.name == "fixture" && r.readKeyID == keys.readKey.publicKey.keyID.description)
        #expect(SecretBytes(copying: r.writeMaterial).equals(keys.sharedWriteMaterial.encode()))
    }

    @Test func formatTwoCarriesTheMaterialSealedToTheReadKey() throws {
        let keys = try Self.keys()
        let (bytes, d) = try descriptor(2)
        #expect(d.format == 2 && d.writeMaterial == nil)
        let r = try #require(d.record)
        #expect(r.writeMaterial.isEmpty)
        let opened = try SharedWriteMaterial.open(sealed: try #require(d.sealed), tenant: "fixture",
            readKey: keys.readKey)
        #expect(opened.encode().equals(keys.sharedWriteMaterial.encode()))
        #expect(d.writeMaterialCheck == keys.sharedWriteMaterial.check)
        let secret = keys.sharedWriteMaterial.chunkIDKey.export().withUnsafeBytes { Data($0) }
        #expect(bytes.range(of: secret) == nil && bytes.range(of: Data(secret.base64EncodedString().utf8)) == nil)
    }

    /// A format-1 descriptor leaves the server (bucket, media) only sealed, as the same
    /// key version; a format-2 one leaves as it is.
    @Test func descriptorsLeaveTheServerSealed() throws {
        let keys = try Self.keys()
        let (oneBytes, one) = try descriptor(1)
        let exported = try #require(TenantDescriptor.forExport(Array(oneBytes)))
        let e = try JSONDecoder().decode(TenantDescriptor.self, from: Data(exported))
        #expect(e.format == 2 && e.writeMaterial == nil && e.writeMaterialCheck == keys.sharedWriteMaterial.check)
        #expect(e.isSameVersion(as: one) && Data(exported).range(of: Data("writeMaterial\"".utf8)) == nil)
        #expect(try SharedWriteMaterial.open(sealed: try #require(e.sealed), tenant: "fixture",
            readKey: keys.readKey).encode().equals(keys.sharedWriteMaterial.encode()))
        let (twoBytes, two) = try descriptor(2)
        #expect(TenantDescriptor.forExport(Array(twoBytes)) == Array(twoBytes))
        var later = two
        later.minRetentionSeconds += 86400
        #expect(later.isSameVersion(as: two))
        later.keyVersion = 2
        #expect(!later.isSameVersion(as: two))
        // Planted with the real wrapped key but another public key or other sealed material.
        var planted = two
        planted.readPublicKey = one.readPublicKey.reversed().map(String.init).joined()
        #expect(!planted.isSameVersion(as: two))
        planted = two
        planted.writeMaterialCheck = String(repeating: "0", count: 64)
        #expect(!planted.isSameVersion(as: two) && !planted.isSameVersion(as: one))
        // the check of format 1 is computed
        #expect(two.isSameVersion(as: one) == (two.wrappedReadKey == one.wrappedReadKey))
        #expect(TenantDescriptor.forExport(Array("{}".utf8)) == nil)
    }

    /// A catalog rebuilt from the store alone: format 1 gives the material back, format 2
    /// cannot and says what to do.
    @Test(.sqliteCatalogOnly, arguments: [1,
        2]) func aRebuildFromTheStoreAloneReadsEitherFormat(format: Int) async throws {
        let (bytes, _) = try descriptor(format)
        var report: RebuildReport?
        let server = try await TestServer.start { home in
            let store = try LocalStore(root: URL(fileURLWithPath: home.storePath))
            _ = try await store.put(ObjectKey("t/fixture/tenant-v1.json")!, Array(bytes), retainUntil: nil)
            report = try await CatalogRebuilder.rebuild(home: home, logger: Logger(label: "test.descriptor-fixture"))
        }
        defer { Task { await server.stop() } }
        let r = try #require(report)
        #expect(r.tenants == 1 && r.rejected.isEmpty, "\(r)")
        let rec = try #require(try Catalog(path: server.home.catalogPath).tenant("fixture"))
        if format == 1 {
            #expect(r.toDo.isEmpty && !rec.writeMaterial.isEmpty)
            // At the next start the server rewrites the descriptor with the material sealed.
            #expect(await server.service.sealDescriptors().isEmpty)
            let store = try LocalStore(root: URL(fileURLWithPath: server.home.storePath))
            let now = try JSONDecoder().decode(TenantDescriptor.self,
                from: Data(try await store.get(ObjectKey("t/fixture/tenant-v1.json")!)))
            #expect(now.format == 2 && now.writeMaterial == nil)
            let opened = try SharedWriteMaterial.open(sealed: try #require(now.sealed), tenant: "fixture",
                readKey: try Self.keys().readKey)
            #expect(opened.encode().equals(try Self.keys().sharedWriteMaterial.encode()))
            #expect(await server.service.sealDescriptors().isEmpty)  // nothing left to do
        } else {
            #expect(r.toDo.count == 1 && rec.writeMaterial.isEmpty)
            // The server still writes the sealed copy into later descriptors.
            let info = try await server.admin.writeMaterial(tenant: "fixture")
            let expected = try descriptor(2).descriptor.sealed
            #expect(!info.present && Data(base64Encoded: info.sealedWriteMaterial).map { Array($0) } == expected)
            // Material that names the tenant's read key but holds another chunk-ID key and
            // seed (a compromised host's file) fails the descriptor's check; the real one passes.
            let keys = try Self.keys()
            let forged = SharedWriteMaterial(readPublicKey: keys.readKey.publicKey,
                chunkIDKey: try ChunkIDKey(secret: SecretBytes(copying: [UInt8](repeating: 1, count: 32))),
                                             chunkerSeed: keys.sharedWriteMaterial.chunkerSeed)
            let refused = await #expect(throws: APIError.self) {
                _ = try await server.admin.restoreWriteMaterial(tenant: "fixture",
                    material: forged.encode().withUnsafeBytes {
                    Data($0).base64EncodedString()
                })
            }
            #expect(refused?.code == "E_BAD_REQUEST"
                && refused?.message.contains("not the material its descriptor was sealed with") == true)
            let real = keys.sharedWriteMaterial.encode().withUnsafeBytes { Data($0).base64EncodedString() }
            #expect(try await server.admin.restoreWriteMaterial(tenant: "fixture", material: real).present)
            // again: no change
            #expect(try await server.admin.restoreWriteMaterial(tenant: "fixture", material: real).present)
            let late = await #expect(throws: APIError.self) {
                _ = try await server.admin.restoreWriteMaterial(tenant: "fixture",
                    material: forged.encode().withUnsafeBytes {
                    Data($0).base64EncodedString()
                })
            }
            #expect(late?.code == "E_CONFLICT")
        }
    }

    /// A token issued before the material went missing is refused, not used up, and works
    /// once the material is back.
    @Test(.sqliteCatalogOnly) func aTokenIsNotUsedUpWhileTheWriteMaterialIsMissing() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let keys = try TenantKeys.generate()
        try await server.createTenant("acme", keys: keys)
        let token = try await server.admin.createEnrollment(tenant: "acme", role: "restorer", name: "vault",
            ttlSeconds: 3600).token
        // As a rebuild from the store alone leaves it.
        try await server.service.sqlite.db.write {
            try $0.execute(sql: "UPDATE tenants SET write_material = ? WHERE name = 'acme'", arguments: [Data()])
        }
        let cfg = ClientConfig(path: server.dir.appendingPathComponent("cfg-vault").path)
        let refused = await #expect(throws: APIError.self) {
            _ = try await ClientConfig.enroll(token: token, into: cfg, os: "Test OS 1")
        }
        #expect(refused?.code == "E_NO_WRITE_MATERIAL")
        let material = keys.sharedWriteMaterial.encode().withUnsafeBytes { Data($0).base64EncodedString() }
        #expect(try await server.admin.restoreWriteMaterial(tenant: "acme", material: material).present)
        _ = try await ClientConfig.enroll(token: token, into: cfg, os: "Test OS 1")
        #expect(try cfg.sharedMaterial().encode().equals(keys.sharedWriteMaterial.encode()))
    }

    @Test(.disabled("wrote the golden descriptors once; kept to show how")) func writeFixtures() async throws {
        let keys = try Self.keys()
        let wrapped = try await PassphraseKeyProvider(passphrase: SecretBytes(copying: Array("fixture".utf8)), logN: 10)
            .wrap(keys.readKey, context: KeyContext(tenant: "fixture", keyVersion: 1))
        let material = keys.sharedWriteMaterial.encode().withUnsafeBytes { Array($0) }
        let record = TenantRecord(name: "fixture", readKeyID: keys.readKey.publicKey.keyID.description,
                                  readPublicKey: keys.readKey.publicKey.rawRepresentation, writeMaterial: material,
                                  wrappedReadKey: String(decoding: try wrapped.encoded(), as: UTF8.self),
                                      minRetention: 30 * 86400,
                                  createdAt: Date(timeIntervalSince1970: 1_800_000_000))
        var two = TenantDescriptor(record, sealedWriteMaterial: try keys.sharedWriteMaterial.sealed(tenant: "fixture"),
            check: keys.sharedWriteMaterial.check)
        two.keyVersion = 1
        var one = two
        one.format = 1
        one.sealedWriteMaterial = nil
        one.writeMaterialCheck = nil
        one.writeMaterial = Data(material).base64EncodedString()
        try Data(try one.encoded()).write(to: URL(fileURLWithPath: "/tmp/tenant-v1-format1.json"))
        try Data(try two.encoded()).write(to: URL(fileURLWithPath: "/tmp/tenant-v1-format2.json"))
    }
}

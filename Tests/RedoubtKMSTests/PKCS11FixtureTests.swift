import Crypto
import Foundation
import RedoubtCore
import Testing

@testable import RedoubtKMS

/// The golden PKCS#11-wrapped read key (docs/FORMAT.md §7.1), sealed under a KEK whose value
/// the fixture knows: software AES-GCM and the token's CKM_AES_GCM must agree on it both
/// ways, and every later build must still unwrap it.
@Suite(.serialized) struct PKCS11FixtureTests {
    static let directory = Bundle.module.resourceURL!.appendingPathComponent("Fixtures/pkcs11-v1")

    struct Fixture {
        let wrapped: WrappedReadKey
        let kek: SymmetricKey
    }

    func fixture() throws -> Fixture {
        let wrappedFile = Self.directory.appendingPathComponent("wrapped-read-key.json")
        let wrapped = try WrappedReadKey.decode(try Data(contentsOf: wrappedFile))
        let hex = try String(contentsOf: Self.directory.appendingPathComponent("kek.hex"),
            encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let kek = try #require(PKCS11KeyProvider.bytes(hex: hex))
        #expect(kek.count == 32)
        return Fixture(wrapped: wrapped, kek: SymmetricKey(data: kek))
    }

    /// Software AES-256-GCM over the fixture, exactly as §7.1 describes the token's output.
    func softwareUnwrap(_ w: WrappedReadKey, kek: SymmetricKey) throws -> [UInt8] {
        let text = try #require(w.parameters["nonce"])
        let nonce = try AES.GCM.Nonce(data: try #require(Data(base64Encoded: text)))
        let sealed = try w.wrappedBytes()
        let box = try AES.GCM.SealedBox(nonce: nonce, ciphertext: sealed.prefix(32), tag: sealed.suffix(16))
        return Array(try AES.GCM.open(box, using: kek, authenticating: w.context.associatedData))
    }

    @Test func theFixtureOpensWithSoftwareAESGCMAndNamesItsKey() throws {
        let f = try fixture()
        #expect(f.wrapped.provider.hasPrefix("pkcs11:token=redoubt-test;object=redoubt-fixture-kek;id=%52%44%42%54?"))
        #expect(f.wrapped.parameters["pkcs11-object"] == "redoubt-fixture-kek")
        #expect(f.wrapped.parameters["pkcs11-id"] == "52444254")
        #expect(f.wrapped.parameters["algorithm"] == "AES-256-GCM")
        let seed = try softwareUnwrap(f.wrapped, kek: f.kek)
        let key = try ReadPrivateKey(seed: SecretBytes(copying: seed))
        #expect(key.publicKey == (try f.wrapped.readPublicKey()))
        #expect(key.publicKey.keyID.description == f.wrapped.readKeyID)
    }

    @Test func theTokenUnwrapsTheFixtureAndItsOwnWrappingOpensInSoftware() async throws {
        guard let p = SoftHSM.peer() else { return }
        let f = try fixture()
        let label = "redoubt-fixture-kek", id: [UInt8] = [0x52, 0x44, 0x42, 0x54]
        // The fixture's URI names the peers' token; build one for this machine's peer.
        let provider = try PKCS11KeyProvider(uri: SoftHSM.uri(p, object: label))
        let value = f.kek.withUnsafeBytes { Array($0) }
        try provider.withSession { s throws(KeyProviderError) in
            // A leftover from an interrupted run would make the label ambiguous.
            while let old = try? s.findKey(label: label, id: id, required: false) { try s.destroy(old) }
            _ = try s.importAES256(label: label, id: id, value: value)
        }
        let readKey = try await provider.unwrap(f.wrapped, context: f.wrapped.context)
        #expect(readKey.publicKey == (try f.wrapped.readPublicKey()))

        // Redoubt wraps nothing new under an imported key: its value is known outside the
        // token (here, in the fixture), so destroying it would shred nothing.
        let refused = await #expect(throws: KeyProviderError.self) {
            try await provider.wrap(readKey, context: KeyContext(tenant: "fixture", keyVersion: 2))
        }
        #expect(refused?.code == "E_KEY_UNSUPPORTED")
        #expect(refused.map { "\($0)" }?.contains("CKA_NEVER_EXTRACTABLE") == true)

        // The other way: what the token's CKM_AES_GCM seals as §7.1 says, software opens.
        let context = KeyContext(tenant: "fixture", keyVersion: 2)
        let nonce = Array(AES.GCM.Nonce())
        let sealed = try provider.withSession { s throws(KeyProviderError) in
            guard let handle = try s.findKey(label: label, id: id, required: true) else {
                throw s.destroyed(label: label, id: id)
            }
            return try s.gcm(encrypt: true, key: handle, nonce: nonce, aad: context.associatedData,
                input: readKey.exportSeed()).withUnsafeBytes {
                Array($0)
            }
        }
        var fresh = f.wrapped
        fresh.context = context
        fresh.parameters["nonce"] = Data(nonce).base64EncodedString()
        fresh.wrapped = Data(sealed).base64EncodedString()
        let seed = try softwareUnwrap(fresh, kek: f.kek)
        #expect(seed == readKey.exportSeed().withUnsafeBytes { Array($0) })
        try await provider.destroyKEK(of: fresh)
        let gone = await #expect(throws: KeyProviderError.self) {
            try await provider.unwrap(f.wrapped, context: f.wrapped.context)
        }
        #expect(gone?.code == "E_KEY_DESTROYED")
    }

    @Test(.disabled("wrote the golden fixture once; kept to show how")) func writeFixture() throws {
        let kek = SymmetricKey(data: (0x40..<0x60).map { UInt8($0) })
        let key = try ReadPrivateKey(seed: SecretBytes(copying: (1...32).map { UInt8($0) }))
        let context = KeyContext(tenant: "fixture", keyVersion: 1)
        let nonce = (0xa0..<0xac).map { UInt8($0) }
        let seed = key.exportSeed().withUnsafeBytes { Array($0) }
        let box = try AES.GCM.seal(seed, using: kek, nonce: try AES.GCM.Nonce(data: nonce),
            authenticating: context.associatedData)
        let target = PKCS11URI(token: "redoubt-test", object: "redoubt-fixture-kek", id: [0x52, 0x44, 0x42, 0x54],
                               modulePath: "/usr/lib/softhsm/libsofthsm2.so",
                                   pinSource: "/var/tmp/redoubt-peers/run/softhsm/pin")
        let w = WrappedReadKey(provider: target.description, context: context, publicKey: key.publicKey, parameters: [
            "pkcs11-token": "redoubt-test", "pkcs11-object": "redoubt-fixture-kek", "pkcs11-id": "52444254",
            "algorithm": "AES-256-GCM", "nonce": Data(nonce).base64EncodedString(),
        ], wrapped: Array(box.ciphertext) + Array(box.tag))
        try w.encoded().write(to: URL(fileURLWithPath: "/tmp/wrapped-read-key.json"))
        try Data((kek.withUnsafeBytes { Array($0) }.map { String(format: "%02x", $0) }.joined()
            + "\n").utf8).write(to: URL(fileURLWithPath: "/tmp/kek.hex"))
    }
}

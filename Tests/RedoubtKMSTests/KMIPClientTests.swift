import Crypto
import Foundation
import RedoubtCore
import Testing

@testable import RedoubtKMS

/// Reads a test peer's address from the environment `scripts/peers` writes. Missing
/// peers fail the test when `REDOUBT_PEERS_REQUIRED=1` (CI), else the test is skipped.
func peer(_ name: String) -> String? {
    let env = ProcessInfo.processInfo.environment
    if let value = env[name], !value.isEmpty { return value }
    if env["REDOUBT_PEERS_REQUIRED"] == "1" {
        Issue.record("\(name) is not set: run ./scripts/peers start and source its env file")
    } else {
        print("skipping: \(name) not set (./scripts/peers start; source \"$(./scripts/peers env)\")")
    }
    return nil
}

/// Against the real PyKMIP server (mTLS, ECDSA certificates; the certificate CN owns keys).
@Suite(.serialized) struct KMIPClientTests {
    func client(_ identity: String, port: Int? = nil) -> KMIPClient? {
        guard let address = peer("REDOUBT_TEST_KMIP"), let pki = peer("REDOUBT_TEST_KMIP_PKI") else { return nil }
        let parts = address.split(separator: ":")
        return KMIPClient(endpoint: KMIPEndpoint(
            host: String(parts[0]), port: port ?? Int(parts[1]) ?? 5696, caFile: "\(pki)/ca.crt",
            certificateFile: "\(pki)/\(identity).crt", privateKeyFile: "\(pki)/\(identity).key"))
    }

    @Test func gcmUnderTheKMSKeyRoundTripsAndBindsTheAssociatedData() async throws {
        guard let a = client("tenant-a") else { return }
        let keyID = try await a.createActiveAESKey(name: "redoubt-test-\(UUID().uuidString)")
        let seed = (0..<32).map { UInt8($0) }
        let nonce = (0..<12).map { _ in UInt8.random(in: 0...255) }
        let aad = KeyContext(tenant: "acme", keyVersion: 1).associatedData
        let sealed = try await a.encrypt(keyID: keyID, plaintext: seed, nonce: nonce, associatedData: aad)
        #expect(sealed.count == 32 + 16)
        #expect(Array(sealed.prefix(32)) != seed)
        #expect(try await a.decrypt(keyID: keyID, sealed: sealed, nonce: nonce, associatedData: aad) == seed)
        // Another tenant's context, or a flipped bit, does not open.
        let otherAAD = KeyContext(tenant: "other", keyVersion: 1).associatedData
        await #expect(throws: KeyProviderError.self) {
            try await a.decrypt(keyID: keyID, sealed: sealed, nonce: nonce, associatedData: otherAAD)
        }
        var flipped = sealed
        flipped[3] ^= 1
        await #expect(throws: KeyProviderError.self) {
            try await a.decrypt(keyID: keyID, sealed: flipped, nonce: nonce, associatedData: aad)
        }
    }

    @Test func anotherTenantsCertificateCannotUseTheKey() async throws {
        guard let a = client("tenant-a"), let b = client("tenant-b") else { return }
        let keyID = try await a.createActiveAESKey(name: "redoubt-test-\(UUID().uuidString)")
        let nonce = [UInt8](repeating: 1, count: 12)
        let sealed = try await a.encrypt(keyID: keyID, plaintext: [1, 2, 3], nonce: nonce, associatedData: [9])
        let error = await #expect(throws: KeyProviderError.self) {
            try await b.decrypt(keyID: keyID, sealed: sealed, nonce: nonce, associatedData: [9])
        }
        #expect(error?.code == "E_KEY_CREDENTIAL_REJECTED")
        #expect(error.map { "\($0)" }?.contains("kmip://") == true)
    }

    @Test func aCertificateFromAnUntrustedCAIsRefusedAtTheHandshake() async throws {
        guard let rogue = client("rogue") else { return }
        let error = await #expect(throws: KeyProviderError.self) { try await rogue.createActiveAESKey(name: "rogue") }
        #expect(error?.code == "E_KEY_CREDENTIAL_REJECTED" || error?.code == "E_KEY_UNREACHABLE")
    }

    @Test func revokedThenDestroyedKeysGiveDistinctErrors() async throws {
        guard let a = client("tenant-a") else { return }
        let keyID = try await a.createActiveAESKey(name: "redoubt-test-\(UUID().uuidString)")
        let nonce = [UInt8](repeating: 2, count: 12)
        let sealed = try await a.encrypt(keyID: keyID, plaintext: [4, 5, 6], nonce: nonce, associatedData: [])
        try await a.revoke(keyID: keyID)
        let disabled = await #expect(throws: KeyProviderError.self) {
            try await a.decrypt(keyID: keyID, sealed: sealed, nonce: nonce, associatedData: [])
        }
        #expect(disabled?.code == "E_KEY_DISABLED")
        try await a.revokeAndDestroy(keyID: keyID)
        let destroyed = await #expect(throws: KeyProviderError.self) {
            try await a.decrypt(keyID: keyID, sealed: sealed, nonce: nonce, associatedData: [])
        }
        #expect(destroyed?.code == "E_KEY_DESTROYED")
    }

    @Test func aKMSThatIsNotListeningIsUnreachable() async throws {
        guard let down = client("tenant-a", port: 1) else { return }
        let error = await #expect(throws: KeyProviderError.self) { try await down.createActiveAESKey(name: "x") }
        #expect(error?.code == "E_KEY_UNREACHABLE")
    }
}

/// The provider a tenant uses: wrap, unwrap, rotate away, shred.
@Suite(.serialized) struct KMIPKeyProviderTests {
    func endpoint(_ identity: String) -> KMIPEndpoint? {
        guard let address = peer("REDOUBT_TEST_KMIP"), let pki = peer("REDOUBT_TEST_KMIP_PKI") else { return nil }
        let parts = address.split(separator: ":")
        return KMIPEndpoint(host: String(parts[0]), port: Int(parts[1]) ?? 5696, caFile: "\(pki)/ca.crt",
                            certificateFile: "\(pki)/\(identity).crt", privateKeyFile: "\(pki)/\(identity).key")
    }

    @Test func wrapsUnwrapsRotatesAwayAndShreds() async throws {
        guard let e = endpoint("tenant-a") else { return }
        let provider = try await KMIPKeyProvider.createKEK(endpoint: e, tenant: "acme")
        // The URI round-trips and carries no secret beyond file paths.
        let reparsed = try KMIPKeyProvider(uri: provider.uri)
        #expect(reparsed.keyID == provider.keyID && reparsed.client.endpoint == e)

        let readKey = try ReadPrivateKey.generate()
        let v1 = KeyContext(tenant: "acme", keyVersion: 1)
        let wrapped = try await provider.wrap(readKey, context: v1)
        #expect(wrapped.provider.hasPrefix("kmip://"))
        let back = try await reparsed.unwrap(wrapped, context: v1)
        #expect(back.publicKey == readKey.publicKey)
        await #expect(throws: KeyProviderError.self) {
            try await provider.unwrap(wrapped, context: KeyContext(tenant: "other", keyVersion: 1))
        }

        // Rotation: re-wrap under a second KEK, destroy the first; the key still unwraps.
        let next = try await KMIPKeyProvider.createKEK(endpoint: e, tenant: "acme")
        let v2 = KeyContext(tenant: "acme", keyVersion: 2)
        let rewrapped = try await next.wrap(try await provider.unwrap(wrapped, context: v1), context: v2)
        try await provider.destroyKEK()
        let old = await #expect(throws: KeyProviderError.self) { try await provider.unwrap(wrapped, context: v1) }
        #expect(old?.code == "E_KEY_DESTROYED")
        #expect(try await next.unwrap(rewrapped, context: v2).publicKey == readKey.publicKey)

        // Shred: destroy the current KEK; nothing unwraps any more.
        try await next.destroyKEK()
        let shredded = await #expect(throws: KeyProviderError.self) { try await next.unwrap(rewrapped, context: v2) }
        #expect(shredded?.code == "E_KEY_DESTROYED")
        #expect(shredded.map { "\($0)" }?.contains("key destroyed") == true)
    }

    /// Shred checks each KEK's Name at the KMS before destroying it: a server that names
    /// another tenant's KEK (or a key Redoubt did not create) is refused there.
    @Test func aKEKShowsItsTenantByNameAtTheKMS() async throws {
        guard let e = endpoint("tenant-a") else { return }
        let acme = try await KMIPKeyProvider.createKEK(endpoint: e, tenant: "acme")
        let acmeB = try await KMIPKeyProvider.createKEK(endpoint: e, tenant: "acme-b")
        let readKey = try ReadPrivateKey.generate()
        let wrapped = try await acme.wrap(readKey, context: KeyContext(tenant: "acme", keyVersion: 1))
        try await acme.checkKEKOwner(of: wrapped, tenant: "acme")
        for tenant in ["acme-b", "acm", "other"] {
            let e = await #expect(throws: KeyProviderError.self) {
                try await acme.checkKEKOwner(of: wrapped, tenant: tenant)
            }
            #expect(e?.code == "E_KEY_FOREIGN_KEK", "\(tenant)")
        }
        // Tenant acme-b's KEK is named redoubt-kek-acme-b-…, which starts like acme's.
        var pointed = wrapped
        pointed.parameters["kmip-key-id"] = acmeB.keyID
        let foreign = await #expect(throws: KeyProviderError.self) {
            try await acme.checkKEKOwner(of: pointed, tenant: "acme")
        }
        #expect(foreign?.code == "E_KEY_FOREIGN_KEK")
        #expect(foreign.map { "\($0)" }?.contains("redoubt-kek-acme-b-") == true)
        // A key Redoubt did not create (adopted by ID) shows no tenant.
        let adopted = try await acme.client.createActiveAESKey(name: "ops-kek-\(UUID().uuidString)")
        pointed.parameters["kmip-key-id"] = adopted
        let unnamed = await #expect(throws: KeyProviderError.self) {
            try await acme.checkKEKOwner(of: pointed, tenant: "acme")
        }
        #expect(unnamed?.code == "E_KEY_FOREIGN_KEK")
        // Destroyed: nothing left to check or destroy.
        try await acme.destroyKEK()
        try await acme.checkKEKOwner(of: wrapped, tenant: "acme")
        try await acmeB.destroyKEK()
        try await acme.client.revokeAndDestroy(keyID: adopted)
    }

    @Test func kekNamesMatchExactlyOneTenant() {
        let name = KMIPKeyProvider.kekName(tenant: "a", unique: UUID())
        #expect(KMIPKeyProvider.isKEKName(name, of: "a"))
        #expect(!KMIPKeyProvider.isKEKName(name, of: "a-"))
        #expect(!KMIPKeyProvider.isKEKName(KMIPKeyProvider.kekName(tenant: "a-b", unique: UUID()), of: "a"))
        #expect(!KMIPKeyProvider.isKEKName("redoubt-kek-a-", of: "a"))
        // upper case: not one Redoubt made
        #expect(!KMIPKeyProvider.isKEKName("redoubt-kek-a-\(UUID().uuidString)", of: "a"))
        #expect(!KMIPKeyProvider.isKEKName(name + "x", of: "a"))
    }

    @Test func refusesURIsWithoutTheirFiles() {
        #expect(throws: KeyProviderError.self) { try KMIPKeyProvider(uri: "kmip://127.0.0.1:5696/KEY") }
        #expect(throws: KeyProviderError.self) { try KMIPKeyProvider(uri: "kmip://127.0.0.1:5696/?ca=a&cert=b&key=c") }
        #expect(throws: KeyProviderError.self) { try KMIPKeyProvider(uri: "awskms://us-east-1/k") }
    }
}

import Foundation
import RedoubtClient
import RedoubtCore
import RedoubtKMS
import Testing

/// Which wrapped read key a restorer trusts: every wrapping is checked against the
/// enrollment before it is unwrapped, as an attacker who can write a copy, an escrow file
/// or the server's answer would try to get around it.
@Suite struct ReadKeyResolverTests {
    /// A restorer of tenant `acme` enrolled with a passphrase-wrapped read key.
    struct Restorer {
        let dir: String
        let keys: TenantKeys
        let config: ClientConfig
        let enrolled: WrappedReadKey
        let notes = Notes()

        init(passphrase: String = "right") async throws {
            keys = try TenantKeys.generate()
            dir = NSTemporaryDirectory() + "redoubt-resolver-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let cred = ClientCredential(url: "https://127.0.0.1:1", caPEM: "", pin: "", certificatePEM: "", keyPEM: "",
                                        principalID: "p1", role: "restorer", tenant: "acme", name: "vault")
            try JSONEncoder().encode(cred).write(to: URL(fileURLWithPath: dir + "/credential.json"))
            try keys.sharedWriteMaterial.encode().withUnsafeBytes { Data($0) }
                .write(to: URL(fileURLWithPath: dir + "/write-material.bin"))
            enrolled = try await Self.provider(passphrase).wrap(keys.readKey, context: KeyContext(tenant: "acme",
                keyVersion: 1))
            try enrolled.encoded().write(to: URL(fileURLWithPath: dir + "/read-key.json"))
            config = ClientConfig(path: dir)
        }

        static func provider(_ passphrase: String, logN: Int = 10) throws -> PassphraseKeyProvider {
            try PassphraseKeyProvider(passphrase: SecretBytes(copying: Array(passphrase.utf8)), logN: logN)
        }

        /// The resolver with the passphrase `right`; any other provider URI is refused unmade.
        func resolver(trusting: String? = nil) -> ReadKeyResolver {
            let notes = self.notes
            return ReadKeyResolver(config: config, trustedProvider: trusting, makeProvider: { uri in
                guard uri.hasPrefix("passphrase") else {
                    throw KeyProviderError.unreachable(provider: uri, detail: "not in tests")
                }
                return try Self.provider("right")
            }, note: { notes.append($0) })
        }

        func remove() { try? FileManager.default.removeItem(atPath: dir) }
    }

    final class Notes: @unchecked Sendable {
        // Why @unchecked: the lock guards `lines`.
        private let lock = NSLock()
        private var lines: [String] = []
        func append(_ s: String) { lock.withLock { lines.append(s) } }
        var all: [String] { lock.withLock { lines } }
    }

    func json(_ w: WrappedReadKey) throws -> String { String(decoding: try w.encoded(), as: UTF8.self) }

    @Test func opensTheEnrolledKeyFromAnEscrowFileACopyOrTheServer() async throws {
        let r = try await Restorer()
        defer { r.remove() }
        let escrow = try await Restorer.provider("right").wrap(r.keys.readKey, context: KeyContext(tenant: "acme",
            keyVersion: 1))
        #expect(try await r.resolver().resolve(escrow: escrow, server: nil).publicKey == r.keys.readKey.publicKey)
        #expect(try await r.resolver().resolve(copies: [("t/acme/tenant-v1.json", escrow)], server: nil).publicKey
            == r.keys.readKey.publicKey)
        // A rotation on the server (version 2, same key service): used, and saved over the stale enrollment copy.
        let v2 = try await Restorer.provider("right").wrap(r.keys.readKey, context: KeyContext(tenant: "acme",
            keyVersion: 2))
        let info = Wire.ReadKeyInfo(tenant: "acme", keyVersion: 2, wrappedReadKey: try json(v2), shreddedAt: nil,
            retired: [])
        #expect(try await r.resolver().resolve(server: { info }).publicKey == r.keys.readKey.publicKey)
        #expect(try r.config.wrappedReadKey() == v2)
    }

    @Test func refusesAWrappingOfAnotherReadKeyNamingBothKeys() async throws {
        let r = try await Restorer()
        defer { r.remove() }
        // Whoever writes the escrow file or a copy wraps their own read key with the right passphrase.
        let other = try TenantKeys.generate()
        let swapped = try await Restorer.provider("right").wrap(other.readKey, context: KeyContext(tenant: "acme",
            keyVersion: 1))
        let e = await #expect(throws: KeyProviderError.self) {
            try await r.resolver().resolve(escrow: swapped, server: nil)
        }
        #expect(e?.code == "E_KEY_MISMATCH")
        #expect(e.map { "\($0)" }?.contains(swapped.readKeyID) == true)
        #expect(e.map { "\($0)" }?.contains(r.keys.readKey.publicKey.keyID.description) == true)

        // The same from the server: refused, and the enrollment copy is not replaced by it.
        let info = Wire.ReadKeyInfo(tenant: "acme", keyVersion: 2, wrappedReadKey: try json(swapped), shreddedAt: nil,
            retired: [])
        let s = await #expect(throws: KeyProviderError.self) { try await r.resolver().resolve(server: { info }) }
        #expect(s?.code == "E_KEY_MISMATCH")
    }

    @Test func refusesATamperedWrappingNamingTheKey() async throws {
        let r = try await Restorer()
        defer { r.remove() }
        // A flipped bit in the sealed seed: the AEAD refuses it; the error names the provider.
        var flipped = r.enrolled
        var bytes = try #require(Data(base64Encoded: flipped.wrapped))
        bytes[bytes.count - 1] ^= 1
        flipped.wrapped = bytes.base64EncodedString()
        let e = await #expect(throws: KeyProviderError.self) {
            try await r.resolver().resolve(escrow: flipped, server: nil)
        }
        #expect(e?.code == "E_KEY_WRONG_SECRET")
        #expect(e.map { "\($0)" }?.contains("passphrase:") == true)

        // The claimed key ID edited to the enrolled one over another key's wrapping: the
        // unwrapped key is checked too, and the message names the claimed key.
        let other = try TenantKeys.generate()
        var relabelled = try await Restorer.provider("right").wrap(other.readKey, context: KeyContext(tenant: "acme",
            keyVersion: 1))
        relabelled.readKeyID = r.enrolled.readKeyID
        let m = await #expect(throws: KeyProviderError.self) {
            try await r.resolver().resolve(escrow: relabelled, server: nil)
        }
        #expect(m?.code == "E_KEY_MISMATCH")
        #expect(m.map { "\($0)" }?.contains(r.enrolled.readKeyID) == true)

        // Another tenant's context: the restorer binds its own tenant, so it does not open.
        let beta = try await Restorer.provider("right").wrap(r.keys.readKey, context: KeyContext(tenant: "beta",
            keyVersion: 1))
        await #expect(throws: KeyProviderError.self) { try await r.resolver().resolve(escrow: beta, server: nil) }
    }

    @Test func aRetiredOrCostlyCopyDoesNotStandInTheWayOfTheRealOne() async throws {
        let r = try await Restorer()
        defer { r.remove() }
        // The stub the server keeps of a retired wrapping (bytes removed), put in a copy as the newest.
        var retired = r.enrolled
        retired.wrapped = ""
        retired.context = KeyContext(tenant: "acme", keyVersion: 2)
        // A copy asking for far more scrypt work than the enrollment's.
        let costly = try await Restorer.provider("right", logN: 12).wrap(r.keys.readKey,
            context: KeyContext(tenant: "acme", keyVersion: 3))
        let key = try await r.resolver().resolve(copies: [("tenant-v3", costly), ("tenant-v2", retired), ("tenant-v1",
            r.enrolled)],
                                                 server: nil)
        #expect(key.publicKey == r.keys.readKey.publicKey)
        let notes = r.notes.all
        #expect(notes.contains { $0.contains("skipping tenant-v3") && $0.contains("scrypt") })
        #expect(notes.contains { $0.contains("tenant-v2 did not open") })

        // Alone, the retired wrapping is refused, naming its key service.
        let e = await #expect(throws: KeyProviderError.self) { try await r.resolver().unwrap(retired) }
        #expect(e?.code == "E_KEY_WRONG_SECRET")
    }

    @Test func aCopyAtAnotherKeyServiceOrSayingShreddedIsNotUsed() async throws {
        let r = try await Restorer()
        defer { r.remove() }
        var elsewhere = r.enrolled
        elsewhere.provider = "kmip://evil.example:5696/k1"
        let body = Array(try JSONEncoder().encode(["wrappedReadKey": try json(elsewhere)]))
        #expect(try r.resolver().copy(descriptor: body, name: "t/acme/tenant-v9.json", tenant: "acme") == nil)
        #expect(r.notes.all.last?.contains("not using the wrapped read key in t/acme/tenant-v9.json") == true)
        let shredded = Array(#"{"shreddedAt": 1800000000}"#.utf8)
        #expect(try r.resolver().copy(descriptor: shredded, name: "v10", tenant: "acme") == nil)
        #expect(r.notes.all.last?.contains("says tenant acme was crypto-shredded") == true)
        let same = Array(try JSONEncoder().encode(["wrappedReadKey": try json(r.enrolled)]))
        #expect(try r.resolver().copy(descriptor: same, name: "v1", tenant: "acme") == r.enrolled)
    }

    @Test func theServerMayNotMoveTheKeyToAnotherKeyServiceUnlessTheRestorerSaysSo() async throws {
        let r = try await Restorer()
        defer { r.remove() }
        var moved = r.enrolled
        moved.provider = "kmip://evil.example:5696/k2"
        let info = Wire.ReadKeyInfo(tenant: "acme", keyVersion: 2, wrappedReadKey: try json(moved), shreddedAt: nil,
            retired: [])
        let e = await #expect(throws: KeyProviderError.self) { try await r.resolver().resolve(server: { info }) }
        #expect(e?.code == "E_KEY_UNTRUSTED_PROVIDER")
        #expect(e.map { "\($0)" }?.contains("kmip://evil.example:5696") == true)
        #expect(try r.config.wrappedReadKey() == r.enrolled, "the refused wrapping replaced the enrollment copy")
        // A shredded tenant, and a server that cannot be reached (the enrollment copy is used).
        let gone = Wire.ReadKeyInfo(tenant: "acme", keyVersion: 3, wrappedReadKey: nil, shreddedAt: Date(), retired: [])
        let d = await #expect(throws: KeyProviderError.self) { try await r.resolver().resolve(server: { gone }) }
        #expect(d?.code == "E_KEY_DESTROYED")
        let down: ReadKeyResolver.FetchCurrent = {
            throw APIError(status: 0, code: "E_CONNECT", message: "connection refused")
        }
        #expect(try await r.resolver().resolve(server: down).publicKey == r.keys.readKey.publicKey)
        #expect(r.notes.all.last?.contains("saved at enrollment") == true)

        // With the restorer's word the new service is asked (here: it cannot be reached);
        // its wrapping is saved as the restorer's own first, as a rotation's is.
        let t = await #expect(throws: KeyProviderError.self) {
            try await r.resolver(trusting: "kmip://evil.example:5696/k2").resolve(server: { info })
        }
        #expect(t?.code == "E_KEY_UNREACHABLE")
        #expect(try r.config.wrappedReadKey() == moved)
    }
}

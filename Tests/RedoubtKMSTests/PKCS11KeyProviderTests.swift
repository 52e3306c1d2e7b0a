import Crypto
import Foundation
import RedoubtCore
import Testing

@testable import RedoubtKMS

#if canImport(Glibc)
import Glibc
#endif

/// The SoftHSM2 token `scripts/peers` set up, as a provider URI.
///
/// SoftHSM2 reads `SOFTHSM2_CONF` from the environment inside `C_Initialize`, and Redoubt
/// initializes each module once per process, so the variable cannot be passed per call.
/// It is set here once, in a lazily run initializer, before this process first loads the
/// module; nothing else in the test process reads it, and it must equal the peers' file
/// (a different value already set is an error, not overwritten). The binary end-to-end
/// test passes it per command instead.
enum SoftHSM {
    struct Peer {
        let conf: String, module: String, token: String, pinFile: String
    }

    static let configured: Peer? = {
        let env = ProcessInfo.processInfo.environment
        guard let conf = env["REDOUBT_TEST_SOFTHSM_CONF"], let module = env["REDOUBT_TEST_SOFTHSM_MODULE"],
              let token = env["REDOUBT_TEST_SOFTHSM_TOKEN"], let pin = env["REDOUBT_TEST_SOFTHSM_PIN_FILE"]
        else { return nil }
        if let current = getenv("SOFTHSM2_CONF").map({ String(cString: $0) }), current != conf { return nil }
        setenv("SOFTHSM2_CONF", conf, 1)
        return Peer(conf: conf, module: module, token: token, pinFile: pin)
    }()

    /// The peer, or nil (recorded as a failure when peers are required).
    static func peer() -> Peer? {
        _ = RedoubtKMSTests.peer("REDOUBT_TEST_SOFTHSM_CONF")
        if configured == nil, ProcessInfo.processInfo.environment["REDOUBT_TEST_SOFTHSM_CONF"] != nil {
            Issue.record("""
                REDOUBT_TEST_SOFTHSM_MODULE, _TOKEN or _PIN_FILE is missing, or SOFTHSM2_CONF is already set to \
                another file than REDOUBT_TEST_SOFTHSM_CONF
                """)
        }
        return configured
    }

    static func uri(_ p: Peer, token: String? = nil, object: String, pinFile: String? = nil,
        module: String? = nil) -> String {
        "pkcs11:token=\(PKCS11URI.encode(Array((token ?? p.token).utf8)))"
            + ";object=\(PKCS11URI.encode(Array(object.utf8)))"
            + "?module-path=\(module ?? p.module)&pin-source=\(pinFile ?? p.pinFile)"
    }

    static func label() -> String { "redoubt-test-\(UUID().uuidString.lowercased())" }
}

/// Against a real SoftHSM2 token: the KEK is made and kept on the token, wraps and unwraps
/// the read key, is refused to other contexts and to tampering, and when destroyed leaves
/// nothing that unwraps.
@Suite(.serialized) struct PKCS11KeyProviderTests {
    let v1 = KeyContext(tenant: "acme", keyVersion: 1)

    func prepared(_ p: SoftHSM.Peer, label: String) async throws -> PKCS11KeyProvider {
        let provider = try await PKCS11KeyProvider(uri: SoftHSM.uri(p, object: label)).preparingKEK(tenant: "acme")
        return try #require(provider as? PKCS11KeyProvider)
    }

    @Test func createsANonExtractableKEKOnTheTokenAndRoundTripsTheReadKey() async throws {
        guard let p = SoftHSM.peer() else { return }
        let label = SoftHSM.label()
        let provider = try await prepared(p, label: label)
        let id = try #require(provider.target.id)
        #expect(id.count == 16)
        // The URI pins the key's CKA_ID and parses back to the same target.
        #expect(provider.uri.contains(";id=%"))
        #expect(try PKCS11URI(parsing: provider.uri) == provider.target)

        // The key is on the token, AES-256, sensitive, and the token will not hand it out.
        let facts = try provider.withSession { s throws(KeyProviderError) in
            guard let key = try s.findKey(label: label, id: id, required: true) else {
                throw s.destroyed(label: label, id: id)
            }
            return try s.facts(key)
        }
        #expect(facts.extractable == false)
        #expect(facts.sensitive == true)
        #expect(facts.valueReadable == false)
        #expect(facts.valueLength == 32)
        #expect(facts.id == id)

        let readKey = try ReadPrivateKey.generate()
        let wrapped = try await provider.wrap(readKey, context: v1)
        #expect(wrapped.parameters["pkcs11-object"] == label)
        #expect(wrapped.parameters["pkcs11-id"] == id.map { String(format: "%02x", $0) }.joined())
        #expect(wrapped.parameters["algorithm"] == "AES-256-GCM")
        #expect(try wrapped.wrappedBytes().count == 48)
        // Neither the seed nor the PIN appears in what is stored.
        let json = String(decoding: try wrapped.encoded(), as: UTF8.self)
        let pin = try String(contentsOfFile: p.pinFile, encoding: .utf8)
        #expect(!json.contains(pin))
        #expect(!json.contains(readKey.exportSeed().withUnsafeBytes { Data($0).base64EncodedString() }))

        // A fresh provider from the recorded URI (as a restorer would build) unwraps it.
        let restorer = try PKCS11KeyProvider(uri: wrapped.provider)
        #expect(try await restorer.unwrap(wrapped, context: v1).publicKey == readKey.publicKey)

        // Preparing again with the same label adopts the existing key rather than adding one.
        let again = try await prepared(p, label: label)
        #expect(again.target.id == id)
        try await provider.destroyKEK(of: wrapped)
    }

    /// Shred checks each KEK's CKA_ID on the token before destroying it: the first half of
    /// an ID Redoubt generates names the tenant; labels are the operator's and prove nothing.
    @Test func aKEKShowsItsTenantInItsIDOnTheToken() async throws {
        guard let p = SoftHSM.peer() else { return }
        let provider = try await prepared(p, label: SoftHSM.label())
        let wrapped = try await provider.wrap(try ReadPrivateKey.generate(), context: v1)
        try await provider.checkKEKOwner(of: wrapped, tenant: "acme")
        let wrongTenant = await #expect(throws: KeyProviderError.self) {
            try await provider.checkKEKOwner(of: wrapped, tenant: "acme-b")
        }
        #expect(wrongTenant?.code == "E_KEY_FOREIGN_KEK")

        // Another tenant's KEK on the same token, named in this tenant's stub.
        let otherLabel = SoftHSM.label()
        let other = try #require(try await PKCS11KeyProvider(uri: SoftHSM.uri(p,
            object: otherLabel)).preparingKEK(tenant: "acme-b") as? PKCS11KeyProvider)
        var pointed = wrapped
        pointed.parameters["pkcs11-object"] = otherLabel
        pointed.parameters["pkcs11-id"] = other.target.id.map { $0.map { String(format: "%02x", $0) }.joined() }
        let foreign = await #expect(throws: KeyProviderError.self) {
            try await provider.checkKEKOwner(of: pointed, tenant: "acme")
        }
        #expect(foreign?.code == "E_KEY_FOREIGN_KEK")
        try await other.checkKEKOwner(of: pointed, tenant: "acme-b")

        // An operator-provisioned key adopted by label: its ID is the operator's.
        let adoptedLabel = SoftHSM.label()
        let adoptedID: [UInt8] = [1, 2, 3, 4]
        _ = try provider.withSession {
            s throws(KeyProviderError) in try s.generateAES256(label: adoptedLabel, id: adoptedID, extractable: false)
        }
        let adopted = try #require(try await PKCS11KeyProvider(uri: SoftHSM.uri(p,
            object: adoptedLabel)).preparingKEK(tenant: "acme") as? PKCS11KeyProvider)
        #expect(adopted.target.id == adoptedID)
        let adoptedWrap = try await adopted.wrap(try ReadPrivateKey.generate(), context: v1)
        let unmarked = await #expect(throws: KeyProviderError.self) {
            try await adopted.checkKEKOwner(of: adoptedWrap, tenant: "acme")
        }
        #expect(unmarked?.code == "E_KEY_FOREIGN_KEK")
        #expect(unmarked.map { "\($0)" }?.contains("pkcs11-tool --delete-object") == true)

        // Gone from the token: nothing left to check.
        try await provider.destroyKEK(of: wrapped)
        try await provider.checkKEKOwner(of: wrapped, tenant: "acme")
        try await other.destroyKEK(of: pointed)
        try await adopted.destroyKEK(of: adoptedWrap)
    }

    @Test func anotherTenantsContextAndTamperedBytesDoNotUnwrap() async throws {
        guard let p = SoftHSM.peer() else { return }
        let provider = try await prepared(p, label: SoftHSM.label())
        let wrapped = try await provider.wrap(try ReadPrivateKey.generate(), context: v1)

        let other = KeyContext(tenant: "other", keyVersion: 1)
        let refused = await #expect(throws: KeyProviderError.self) {
            try await provider.unwrap(wrapped, context: other)
        }
        #expect(refused?.code == "E_KEY_WRONG_CONTEXT")

        // An attacker relabels the file for their tenant: the AAD no longer matches.
        var relabelled = wrapped
        relabelled.context = other
        let forged = await #expect(throws: KeyProviderError.self) {
            try await provider.unwrap(relabelled, context: other)
        }
        #expect(forged?.code == "E_KEY_WRONG_SECRET")
        #expect(forged.map { "\($0)" }?.contains("altered") == true)

        var bytes = try wrapped.wrappedBytes()
        for index in [0, 31, 47] {
            var flipped = bytes
            flipped[index] ^= 0x01
            var tampered = wrapped
            tampered.wrapped = Data(flipped).base64EncodedString()
            let e = await #expect(throws: KeyProviderError.self) { try await provider.unwrap(tampered, context: v1) }
            #expect(e?.code == "E_KEY_WRONG_SECRET")
        }
        var otherNonce = wrapped
        otherNonce.parameters["nonce"] = Data(AES.GCM.Nonce()).base64EncodedString()
        let n = await #expect(throws: KeyProviderError.self) { try await provider.unwrap(otherNonce, context: v1) }
        #expect(n?.code == "E_KEY_WRONG_SECRET")
        bytes.removeLast()
        var short = wrapped
        short.wrapped = Data(bytes).base64EncodedString()
        let s = await #expect(throws: KeyProviderError.self) { try await provider.unwrap(short, context: v1) }
        #expect(s?.code == "E_KEY_MALFORMED")

        // Sealed under another KEK (a second key, its wrapped file pointed at the first).
        let second = try await prepared(p, label: SoftHSM.label())
        var foreign = try await second.wrap(try ReadPrivateKey.generate(), context: v1)
        let secondParameters = foreign.parameters
        foreign.parameters["pkcs11-object"] = wrapped.parameters["pkcs11-object"]
        foreign.parameters["pkcs11-id"] = wrapped.parameters["pkcs11-id"]
        let f = await #expect(throws: KeyProviderError.self) { try await provider.unwrap(foreign, context: v1) }
        #expect(f?.code == "E_KEY_WRONG_SECRET")
        foreign.parameters = secondParameters
        try await second.destroyKEK(of: foreign)
        try await provider.destroyKEK(of: wrapped)
    }

    @Test func aWrongPINIsACredentialErrorThatNamesTheFileAndNotThePIN() async throws {
        guard let p = SoftHSM.peer() else { return }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-pkcs11-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let wrongPIN = "not-the-pin-4711"
        let file = dir.appendingPathComponent("pin").path
        _ = FileManager.default.createFile(atPath: file, contents: Data((wrongPIN + "\n").utf8),
            attributes: [.posixPermissions: 0o600])
        let provider = try PKCS11KeyProvider(uri: SoftHSM.uri(p, object: SoftHSM.label(), pinFile: file))
        let e = await #expect(throws: KeyProviderError.self) { try await provider.preparingKEK(tenant: "acme") }
        #expect(e?.code == "E_KEY_CREDENTIAL_REJECTED")
        let text = e.map { "\($0)" } ?? ""
        #expect(text.contains("pin-source \(file)"))
        #expect(text.contains("CKR_PIN_INCORRECT"))
        #expect(!text.contains(wrongPIN))

        let missing = try PKCS11KeyProvider(uri: SoftHSM.uri(p, object: "x",
            pinFile: dir.appendingPathComponent("absent").path))
        let m = await #expect(throws: KeyProviderError.self) { try await missing.preparingKEK(tenant: "acme") }
        #expect(m?.code == "E_KEY_SECRET_MISSING")
    }

    @Test func anUnknownTokenOrModuleIsUnreachableAndNamesIt() async throws {
        guard let p = SoftHSM.peer() else { return }
        let noToken = try PKCS11KeyProvider(uri: SoftHSM.uri(p, token: "no such token", object: "x"))
        let t = await #expect(throws: KeyProviderError.self) { try await noToken.preparingKEK(tenant: "acme") }
        #expect(t?.code == "E_KEY_UNREACHABLE")
        #expect(t.map { "\($0)" }?.contains("no token labelled \"no such token\"") == true)
        #expect(t.map { "\($0)" }?.contains(p.token) == true, "lists the tokens that are present")

        let noModule = try PKCS11KeyProvider(uri: SoftHSM.uri(p, object: "x", module: "/nonexistent/libpkcs11.so"))
        let m = await #expect(throws: KeyProviderError.self) { try await noModule.preparingKEK(tenant: "acme") }
        #expect(m?.code == "E_KEY_UNREACHABLE")
        #expect(m.map { "\($0)" }?.contains("/nonexistent/libpkcs11.so") == true)

        // A file that is not a PKCS#11 module.
        let notModule = try PKCS11KeyProvider(uri: SoftHSM.uri(p, object: "x", module: "/etc/hostname"))
        let n = await #expect(throws: KeyProviderError.self) { try await notModule.preparingKEK(tenant: "acme") }
        #expect(n?.code == "E_KEY_UNREACHABLE")
    }

    @Test func aModuleOthersCouldReplaceIsNeverLoaded() async throws {
        guard let p = SoftHSM.peer() else { return }
        // The real module, copied where any user could swap it: what a hostile URI (the
        // restorer gets it from the server) would point at.
        let dir =
            FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-pkcs11-module-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o777])
        defer { try? FileManager.default.removeItem(at: dir) }
        let copy = dir.appendingPathComponent("libsofthsm2.so").path
        try FileManager.default.copyItem(atPath: URL(fileURLWithPath: p.module).resolvingSymlinksInPath().path,
            toPath: copy)
        let hostile = try PKCS11KeyProvider(uri: SoftHSM.uri(p, object: "x", module: copy))
        let e = await #expect(throws: KeyProviderError.self) { try await hostile.preparingKEK(tenant: "acme") }
        #expect(e?.code == "E_KEY_UNSUPPORTED")
        #expect(e.map { "\($0)" }?.contains("refusing to load PKCS#11 module") == true)

        // A module file others may write is refused the same way (here /tmp alone would be).
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: dir.path)
        try FileManager.default.setAttributes([.posixPermissions: 0o666], ofItemAtPath: copy)
        let writable = await #expect(throws: KeyProviderError.self) { try await hostile.preparingKEK(tenant: "acme") }
        #expect(writable?.code == "E_KEY_UNSUPPORTED")

        let relative = try PKCS11KeyProvider(uri: SoftHSM.uri(p, object: "x", module: "libsofthsm2.so"))
        let r = await #expect(throws: KeyProviderError.self) { try await relative.preparingKEK(tenant: "acme") }
        #expect(r?.code == "E_KEY_UNSUPPORTED")
    }

    @Test func destroyingTheKEKShredsEveryCopyAndARecreatedLabelDoesNotRevive() async throws {
        guard let p = SoftHSM.peer() else { return }
        let label = SoftHSM.label()
        let provider = try await prepared(p, label: label)
        let readKey = try ReadPrivateKey.generate()
        let wrapped = try await provider.wrap(readKey, context: v1)
        #expect(try await provider.unwrap(wrapped, context: v1).publicKey == readKey.publicKey)

        try await provider.destroyKEK(of: wrapped)
        let gone = await #expect(throws: KeyProviderError.self) { try await provider.unwrap(wrapped, context: v1) }
        #expect(gone?.code == "E_KEY_DESTROYED")
        #expect(gone.map { "\($0)" }?.contains("no AES key labelled \"\(label)\"") == true)
        #expect(gone.map { "\($0)" }?.contains("destroyed or never created") == true)
        // Destroying again is done, not an error.
        try await provider.destroyKEK(of: wrapped)

        // Someone re-creates a key under the same label: the old copy still does not open,
        // because it names the destroyed key's CKA_ID.
        let reborn = try await prepared(p, label: label)
        #expect(reborn.target.id != provider.target.id)
        let still = await #expect(throws: KeyProviderError.self) { try await reborn.unwrap(wrapped, context: v1) }
        #expect(still?.code == "E_KEY_DESTROYED")
        let w2 = try await reborn.wrap(readKey, context: v1)
        try await reborn.destroyKEK(of: w2)

        // Wrapping under a URI whose pinned key is gone fails the same way.
        let w = await #expect(throws: KeyProviderError.self) { try await provider.wrap(readKey, context: v1) }
        #expect(w?.code == "E_KEY_DESTROYED")
    }

    @Test func rotationToASecondKEKSurvivesDestroyingTheFirst() async throws {
        guard let p = SoftHSM.peer() else { return }
        let first = try await prepared(p, label: SoftHSM.label())
        let second = try await prepared(p, label: SoftHSM.label())
        let readKey = try ReadPrivateKey.generate()
        let old = try await first.wrap(readKey, context: v1)
        let v2 = KeyContext(tenant: "acme", keyVersion: 2)
        let current = try await second.wrap(try await first.unwrap(old, context: v1), context: v2)
        // The copy names its own KEK: even the first URI finds the second key for it.
        #expect(try await first.unwrap(current, context: v2).publicKey == readKey.publicKey)

        try await first.destroyKEK(of: old)
        let e = await #expect(throws: KeyProviderError.self) { try await first.unwrap(old, context: v1) }
        #expect(e?.code == "E_KEY_DESTROYED")
        #expect(try await second.unwrap(current, context: v2).publicKey == readKey.publicKey)
        try await second.destroyKEK(of: current)
    }

    @Test func anOperatorKeyThatCanBeExtractedIsRefused() async throws {
        guard let p = SoftHSM.peer() else { return }
        let label = SoftHSM.label()
        let provider = try PKCS11KeyProvider(uri: SoftHSM.uri(p, object: label))
        let id: [UInt8] = [0xde, 0xad, 0xbe, 0xef]
        try provider.withSession { s throws(KeyProviderError) in
            _ = try s.generateAES256(label: label, id: id, extractable: true)
        }
        let e = await #expect(throws: KeyProviderError.self) { try await provider.preparingKEK(tenant: "acme") }
        #expect(e?.code == "E_KEY_UNSUPPORTED")
        #expect(e.map { "\($0)" }?.contains("CKA_EXTRACTABLE=false") == true)
        var pinned = provider.target
        pinned.id = id
        let w = await #expect(throws: KeyProviderError.self) {
            try await PKCS11KeyProvider(target: pinned).wrap(try ReadPrivateKey.generate(), context: v1)
        }
        #expect(w?.code == "E_KEY_UNSUPPORTED")
        try provider.withSession { s throws(KeyProviderError) in
            if let key = try s.findKey(label: label, id: id, required: false) { try s.destroy(key) }
        }
    }
}

/// RFC 7512 parsing: no token needed.
@Suite struct PKCS11URITests {
    @Test func parsesPercentEncodingFileURIsAndIDs() throws {
        let u = try PKCS11URI(parsing: "pkcs11:token=Backup%20HSM;object=kek%2Facme;id=%01%FF;type=secret-key"
            + "?module-path=/usr/lib/x.so&pin-source=file:/etc/redoubt/pin")
        #expect(u.token == "Backup HSM")
        #expect(u.object == "kek/acme")
        #expect(u.id == [0x01, 0xff])
        #expect(u.modulePath == "/usr/lib/x.so")
        #expect(u.pinSource == "/etc/redoubt/pin")
        #expect(try PKCS11URI(parsing: u.description) == u)
        #expect(try PKCS11URI(parsing: "pkcs11:token=t;object=o?module-path=/m.so&pin-source=file:///p")
            .pinSource == "/p")
        let plain = try PKCS11URI(parsing: "pkcs11:object=o;token=t?pin-source=/p&module-path=/m.so")
        #expect(plain.pinSource == "/p" && plain.token == "t" && plain.id == nil)
        #expect(try PKCS11URI(parsing: "pkcs11:token=t;object=o?module-path=/m.so").pinSource == nil)
        // Labels with any bytes survive the round trip.
        let odd = PKCS11URI(token: "a;b?c&d=e", object: "ü %", id: [0, 0x25], modulePath: "/a b/m.so",
            pinSource: "/p?q")
        #expect(try PKCS11URI(parsing: odd.description) == odd)
    }

    @Test func refusesURIsThatAreIncompleteAmbiguousOrCarryAPIN() {
        func error(_ uri: String) -> KeyProviderError? {
            #expect(throws: KeyProviderError.self) { try PKCS11URI(parsing: uri) }
        }
        #expect(error("pkcs11:object=o?module-path=/m.so").map { "\($0)" }?.contains("token=") == true)
        #expect(error("pkcs11:token=t?module-path=/m.so").map { "\($0)" }?.contains("object=") == true)
        #expect(error("pkcs11:token=t;object=o").map { "\($0)" }?.contains("module-path") == true)
        #expect(error("pkcs11:token=t;object=o?module-path=/m.so&pin-value=1234")
            .map { "\($0)" }?.contains("1234") == false)
        #expect(error("pkcs11:token=t;object=o?module-path=/m.so&pin-value=1234")?.code == "E_KEY_MALFORMED")
        #expect(error("pkcs11:token=t;object=o;serial=9?module-path=/m.so") != nil)
        #expect(error("pkcs11:token=t;token=u;object=o?module-path=/m.so").map { "\($0)" }?.contains("repeats") == true)
        #expect(error("pkcs11:token=t%4;object=o?module-path=/m.so") != nil)
        #expect(error("pkcs11:token=t%zz;object=o?module-path=/m.so") != nil)
        #expect(error("pkcs11:token=t;object=o;type=private?module-path=/m.so") != nil)
        #expect(error("pkcs11:token=t;object=o?module-path=/m.so&pin-source=|/bin/cat%20/p") != nil)
        #expect(error("pkcs11:token=t;object=o?module-name=softhsm2") != nil)
        #expect(error("pkcs11:token;object=o?module-path=/m.so") != nil)
        #expect(error("pkcs11:token=%FF;object=o?module-path=/m.so") != nil)
        #expect(error("kmip://h/k")?.code == "E_KEY_PROVIDER")
    }
}

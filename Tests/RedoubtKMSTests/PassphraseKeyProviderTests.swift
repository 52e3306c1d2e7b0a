import Foundation
import Testing
import RedoubtCore
@testable import RedoubtKMS

@Suite struct PassphraseKeyProviderTests {
    let context = KeyContext(tenant: "acme", keyVersion: 1)

    func provider(_ pw: String = "correct horse battery staple") throws -> PassphraseKeyProvider {
        try PassphraseKeyProvider(passphrase: SecretBytes(copying: Array(pw.utf8)), logN: 10)
    }

    @Test func wrapsAndUnwrapsTheSameReadKey() async throws {
        let key = try ReadPrivateKey.generate()
        let wrapped = try await provider().wrap(key, context: context)
        let back = try await provider().unwrap(wrapped, context: context)
        #expect(back.publicKey == key.publicKey)
        #expect(back.exportSeed().equals(key.exportSeed()))
        #expect(try wrapped.readPublicKey() == key.publicKey)
    }

    @Test func theWrappedFormNeverHoldsTheSeedOrPassphrase() async throws {
        let key = try ReadPrivateKey.generate()
        let json = String(decoding: try await provider("hunter2-is-my-passphrase").wrap(key,
            context: context).encoded(), as: UTF8.self)
        let seedHex = key.exportSeed().withUnsafeBytes { hexString($0) }
        let seedB64 = key.exportSeed().withUnsafeBytes { Data($0).base64EncodedString() }
        #expect(!json.contains(seedHex))
        #expect(!json.contains(seedB64))
        #expect(!json.contains("hunter2"))
    }

    @Test func aWrongPassphraseIsNamedAsSuch() async throws {
        let wrapped = try await provider().wrap(try .generate(), context: context)
        await #expect(throws: KeyProviderError.wrongSecret(provider: "passphrase:")) {
            try await provider("wrong").unwrap(wrapped, context: context)
        }
    }

    @Test func aWrappedKeyCannotBeUsedForAnotherTenantOrVersion() async throws {
        var wrapped = try await provider().wrap(try .generate(), context: context)
        let other = KeyContext(tenant: "evil", keyVersion: 1)
        await #expect(throws: KeyProviderError.self) { try await provider().unwrap(wrapped, context: other) }
        // Relabelling the context inside the file breaks the AEAD binding.
        wrapped.context = other
        await #expect(throws: KeyProviderError.wrongSecret(provider: "passphrase:")) {
            try await provider().unwrap(wrapped, context: other)
        }
    }

    @Test func tamperedParametersOrCiphertextAreRefused() async throws {
        let wrapped = try await provider().wrap(try .generate(), context: context)
        var a = wrapped
        a.parameters["logN"] = "40"
        await #expect(throws: KeyProviderError.self) { try await provider().unwrap(a, context: context) }
        var b = wrapped
        var raw = Array(Data(base64Encoded: b.wrapped)!)
        raw[raw.count - 20] ^= 1
        b.wrapped = Data(raw).base64EncodedString()
        await #expect(throws: KeyProviderError.wrongSecret(provider: "passphrase:")) {
            try await provider().unwrap(b, context: context)
        }
        var c = wrapped
        c.parameters["salt"] = Data(repeating: 1, count: 32).base64EncodedString()
        await #expect(throws: KeyProviderError.wrongSecret(provider: "passphrase:")) {
            try await provider().unwrap(c, context: context)
        }
    }

    @Test func aSwappedPublicKeyIsDetected() async throws {
        let wrapped = try await provider().wrap(try .generate(), context: context)
        let other = try await provider().wrap(try .generate(), context: context)
        var w = wrapped
        w.publicKey = other.publicKey
        w.readKeyID = other.readKeyID
        await #expect(throws: KeyProviderError.keyMismatch(provider: "passphrase:", readKeyID: other.readKeyID)) {
            try await provider().unwrap(w, context: context)
        }
    }

    @Test func anEmptyPassphraseIsRefused() throws {
        #expect(throws: KeyProviderError.self) { try PassphraseKeyProvider(passphrase: SecretBytes(copying: [])) }
    }

    @Test func malformedFilesGiveAClearError() throws {
        for input in ["", "{}", "[1,2]", "{\"format\": 2}", String(repeating: "{", count: 10000)] {
            #expect(throws: KeyProviderError.self) { try WrappedReadKey.decode(Data(input.utf8)) }
        }
    }
}

/// `wrapChecked` refuses a wrapping that does not open again, or opens to another key: a
/// provider of our own that breaks its wrapping on purpose (a module that ignored the
/// caller's IV would do the first).
@Suite struct WrapCheckedTests {
    struct Breaking: KeyProvider {
        enum Fault { case unopenable, otherKey }
        let inner: PassphraseKeyProvider
        let fault: Fault
        let other: ReadPrivateKey
        var uri: String { inner.uri }
        func wrap(_ key: ReadPrivateKey, context: KeyContext) async throws -> WrappedReadKey {
            try await inner.wrap(key, context: context)
        }
        func unwrap(_ wrapped: WrappedReadKey, context: KeyContext) async throws -> ReadPrivateKey {
            switch fault {
            case .unopenable: throw KeyProviderError.wrongSecret(provider: uri)
            case .otherKey: return other
            }
        }
        func destroyKEK(of wrapped: WrappedReadKey) async throws {}
        func checkKEKOwner(of wrapped: WrappedReadKey, tenant: String) async throws {}
    }

    @Test func aWrappingThatDoesNotOpenToTheSameKeyIsRefused() async throws {
        let inner = try PassphraseKeyProvider(passphrase: SecretBytes(copying: Array("pw".utf8)), logN: 10)
        let key = try ReadPrivateKey.generate(), other = try ReadPrivateKey.generate()
        let context = KeyContext(tenant: "acme", keyVersion: 1)
        let good = try await inner.wrapChecked(key, context: context)
        #expect(good.readKeyID == key.publicKey.keyID.description)
        await #expect(throws: KeyProviderError.self) {
            _ = try await Breaking(inner: inner, fault: .unopenable, other: other).wrapChecked(key, context: context)
        }
        let e = await #expect(throws: KeyProviderError.self) {
            _ = try await Breaking(inner: inner, fault: .otherKey, other: other).wrapChecked(key, context: context)
        }
        #expect(e?.code == KeyProviderError.keyMismatch(provider: "", readKeyID: "").code)
    }
}

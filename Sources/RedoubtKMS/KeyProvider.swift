import Foundation
import RedoubtCore

/// What a wrapped read key is bound to: unwrapping it under another tenant or key
/// version fails, so a wrapped key cannot be swapped between tenants.
public struct KeyContext: Sendable, Hashable, Codable {
    public let tenant: String
    /// Increases by one on every rotation.
    public let keyVersion: Int

    public init(tenant: String, keyVersion: Int) {
        self.tenant = tenant
        self.keyVersion = keyVersion
    }

    /// Canonical bytes bound into every provider's wrapping as associated data.
    public var associatedData: [UInt8] {
        var w = ByteWriter()
        w.raw(Array("redoubt/v1/wrapped-read-key".utf8))
        w.string(tenant)
        w.u64(UInt64(keyVersion))
        return w.bytes
    }
}

/// A tenant's read private key as stored at rest: wrapped by a key provider.
///
/// Self-describing JSON (docs/FORMAT.md §7): which provider, its public parameters, the
/// read key's public half and ID, and the wrapped seed. Holds no secret in the clear.
public struct WrappedReadKey: Sendable, Codable, Equatable {
    public static let currentFormat = 1
    public var format: Int
    /// The provider's URI without secrets (e.g. `passphrase:`, `kmip://host:5696/KEY`).
    public var provider: String
    public var context: KeyContext
    /// Hex of the read key ID, for messages and for checking the unwrapped key.
    public var readKeyID: String
    /// The read public key (base64), so hosts and servers can use it without unwrapping.
    public var publicKey: String
    /// Provider parameters that are not secret (salt, cost, key identifiers), as strings.
    public var parameters: [String: String]
    /// The wrapped 32-byte seed (base64), in the provider's own format.
    public var wrapped: String

    public init(provider: String, context: KeyContext, publicKey: ReadPublicKey, parameters: [String: String],
        wrapped: [UInt8]) {
        format = Self.currentFormat
        self.provider = provider
        self.context = context
        readKeyID = publicKey.keyID.description
        self.publicKey = Data(publicKey.rawRepresentation).base64EncodedString()
        self.parameters = parameters
        self.wrapped = Data(wrapped).base64EncodedString()
    }

    /// The read public key this wrapped key claims to hold.
    public func readPublicKey() throws -> ReadPublicKey {
        guard let raw = Data(base64Encoded: publicKey) else {
            throw KeyProviderError.malformed("public key is not base64")
        }
        let key = try ReadPublicKey(rawRepresentation: Array(raw))
        guard key.keyID.description == readKeyID else {
            throw KeyProviderError.malformed("public key does not match read key ID \(readKeyID)")
        }
        return key
    }

    func wrappedBytes() throws -> [UInt8] {
        guard let raw = Data(base64Encoded: wrapped) else {
            throw KeyProviderError.malformed("wrapped key is not base64")
        }
        return Array(raw)
    }

    /// Canonical JSON.
    public func encoded() throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        return try e.encode(self)
    }

    public static func decode(_ data: Data) throws -> WrappedReadKey {
        let w: WrappedReadKey
        do { w = try JSONDecoder().decode(WrappedReadKey.self, from: data) } catch {
            throw KeyProviderError.malformed("not a Redoubt wrapped read key: \(error)")
        }
        guard w.format == currentFormat else {
            throw KeyProviderError.malformed("""
                wrapped key format \(w.format); this build reads \(currentFormat): upgrade redoubt
                """)
        }
        guard w.context.keyVersion >= 1 else {
            throw KeyProviderError.malformed("wrapped key version \(w.context.keyVersion) is not a version")
        }
        guard isWellFormedProviderURI(w.provider) else {
            throw KeyProviderError.malformed("""
                wrapped key names provider \(w.provider.debugDescription), which is not a well-formed key provider URI
                """)
        }
        return w
    }
}

/// The one public error of RedoubtKMS. Each case names the provider and what to do;
/// `code` is stable and maps to a distinct CLI exit code.
public enum KeyProviderError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The wrapped key or its parameters do not parse.
    case malformed(String)
    /// The secret (passphrase, PIN) is wrong, or the wrapped key was modified.
    case wrongSecret(provider: String)
    /// The wrapped key is for another tenant or key version.
    case wrongContext(provider: String, expected: KeyContext, found: KeyContext)
    /// The unwrapped key is not the one the wrapped key names.
    case keyMismatch(provider: String, readKeyID: String)
    /// The provider needs a secret that was not supplied.
    case secretMissing(provider: String, how: String)
    /// The URI names a provider this build does not know.
    case unknownProvider(String)
    /// The KMS sent bytes that break its protocol (a malformed KMIP message).
    case kmsProtocol(provider: String, detail: String)
    /// The KMS or HSM could not be reached or did not answer in time.
    case unreachable(provider: String, detail: String)
    /// The key-encryption key exists but is disabled or revoked.
    case keyDisabled(provider: String, detail: String)
    /// The key-encryption key is destroyed or scheduled for deletion: crypto-shredded.
    case keyDestroyed(provider: String, detail: String)
    /// The KMS refused our credential (client certificate, PIN, access key).
    case credentialRejected(provider: String, detail: String)
    /// A wrapped key names a KMS or HSM this restorer was never told to trust.
    case untrustedProvider(provider: String, detail: String)
    /// The provider cannot do what was asked (e.g. destroy a passphrase).
    case unsupported(provider: String, detail: String)
    /// The KMS or HSM does not show the key-encryption key as the tenant's (no tag or
    /// name made for it): it is not destroyed on anyone's word.
    case foreignKEK(provider: String, detail: String)

    /// Whether trying another wrapped copy at the same service is pointless or harmful:
    /// the service is unreachable, a secret is missing, the provider is not trusted, or an
    /// HSM refused the PIN (each retry counts towards locking the token). A KMS refusing
    /// access to one key is about that copy's key (which whoever wrote the copy chose).
    public func endsTheSearch(provider: String) -> Bool {
        switch self {
        case .unreachable, .secretMissing, .untrustedProvider, .unknownProvider: true
        case .credentialRejected: provider.hasPrefix("pkcs11:")
        default: false
        }
    }

    public var code: String {
        switch self {
        case .malformed: "E_KEY_MALFORMED"
        case .wrongSecret: "E_KEY_WRONG_SECRET"
        case .wrongContext: "E_KEY_WRONG_CONTEXT"
        case .keyMismatch: "E_KEY_MISMATCH"
        case .secretMissing: "E_KEY_SECRET_MISSING"
        case .unknownProvider: "E_KEY_PROVIDER"
        case .kmsProtocol: "E_KEY_KMS_PROTOCOL"
        case .unreachable: "E_KEY_UNREACHABLE"
        case .keyDisabled: "E_KEY_DISABLED"
        case .keyDestroyed: "E_KEY_DESTROYED"
        case .credentialRejected: "E_KEY_CREDENTIAL_REJECTED"
        case .untrustedProvider: "E_KEY_UNTRUSTED_PROVIDER"
        case .unsupported: "E_KEY_UNSUPPORTED"
        case .foreignKEK: "E_KEY_FOREIGN_KEK"
        }
    }

    public var description: String {
        switch self {
        case .malformed(let s): "wrapped read key: \(s)"
        case .wrongSecret(let p) where p.hasPrefix("passphrase"): """
            \(p): the read key does not unwrap: wrong passphrase, or the wrapped key file was modified. Check the \
            passphrase (REDOUBT_PASSPHRASE or --passphrase-file).
            """
        case .wrongSecret(let p): """
            \(p): the KMS refused to unwrap the read key: the wrapped key file (its bytes, context or key ID) was \
            altered, or it was not sealed by this KMS key
            """
        case .wrongContext(let p, let e,
            let f): """
                \(p): wrapped key is for tenant \(f.tenant.debugDescription) version \(f.keyVersion), expected \
                \(e.tenant.debugDescription) version \(e.keyVersion)
                """
        case .keyMismatch(let p, let id): "\(p): unwrapped key is not read key \(id): the wrapped key file was altered"
        case .secretMissing(let p, let how): "\(p): no secret supplied; \(how)"
        case .unknownProvider(let u):
            "unknown key provider \(u.debugDescription); use one of \(KeyProviderRegistry.known)"
        case .kmsProtocol(let p, let d): "\(p): \(d); check that the address is a KMS speaking this protocol"
        case .unreachable(let p, let d): "\(p): KMS unreachable: \(d)"
        case .keyDisabled(let p, let d): "\(p): key disabled: \(d)"
        case .keyDestroyed(let p, let d): "\(p): key destroyed: \(d)"
        case .credentialRejected(let p, let d): "\(p): credential rejected: \(d)"
        case .untrustedProvider(let p, let d): "\(p): not a key provider this restorer trusts: \(d)"
        case .unsupported(let p, let d): "\(p): \(d)"
        case .foreignKEK(let p, let d): "\(p): not shown as this tenant's key-encryption key: \(d)"
        }
    }
}

/// Wraps and unwraps a tenant's read private key. Implementations talk to whatever holds
/// the key-encryption key (a passphrase, a KMS, an HSM); the read key is unwrapped only
/// in memory, for one operation.
///
/// Contract: `wrap` never stores the unwrapped key; `unwrap` checks the context and that
/// the result's public key matches `wrapped.readKeyID`, and throws ``KeyProviderError``
/// naming the provider on any failure. Neither logs secrets.
public protocol KeyProvider: Sendable {
    /// The provider's URI without secrets, recorded in ``WrappedReadKey/provider``.
    var uri: String { get }
    func wrap(_ key: ReadPrivateKey, context: KeyContext) async throws -> WrappedReadKey
    func unwrap(_ wrapped: WrappedReadKey, context: KeyContext) async throws -> ReadPrivateKey
    /// When the URI asks for a fresh key-encryption key (`…/new`), creates one for
    /// `tenant` in the KMS or HSM and returns a provider that names it; otherwise `self`.
    func preparingKEK(tenant: String) async throws -> any KeyProvider
    /// Crypto-shreds the KEK that wrapped `wrapped` (KMIP Revoke then Destroy, KMS
    /// ScheduleKeyDeletion, PKCS#11 C_DestroyObject), so that no copy wrapped under it can
    /// ever be unwrapped again. A KEK that is already destroyed counts as done. Providers
    /// without a KEK of their own throw ``KeyProviderError/unsupported(provider:detail:)``.
    func destroyKEK(of wrapped: WrappedReadKey) async throws
    /// Checks at the KMS or HSM itself that the KEK which wrapped `wrapped` was made for
    /// `tenant` (a tag, name or ID set when Redoubt created it), before anyone destroys it.
    /// Why: the wrapped key comes from the server, and a compromised server must not be able
    /// to make an admin's shred destroy another tenant's KEK. Throws
    /// ``KeyProviderError/foreignKEK(provider:detail:)`` when the key does not show it (an
    /// adopted key, another tenant's). A KEK that ``destroyKEK(of:)`` would count as
    /// destroyed already passes: there is nothing left to destroy.
    func checkKEKOwner(of wrapped: WrappedReadKey, tenant: String) async throws
}

extension KeyProvider {
    public func preparingKEK(tenant: String) async throws -> any KeyProvider { self }

    /// Wraps `key`, then unwraps the result once and compares: a wrapping that does not
    /// open (e.g. a PKCS#11 module that picks its own GCM IV, as AWS CloudHSM documents)
    /// is refused now, not found at the first restore months later.
    public func wrapChecked(_ key: ReadPrivateKey, context: KeyContext) async throws -> WrappedReadKey {
        let wrapped = try await wrap(key, context: context)
        let back: ReadPrivateKey
        do { back = try await unwrap(wrapped, context: context) } catch {
            throw KeyProviderError.kmsProtocol(provider: uri,
                detail: "a new wrapping does not open again (\(error)); this provider cannot hold the read key")
        }
        guard back.publicKey == key.publicKey else {
            throw KeyProviderError.keyMismatch(provider: uri, readKeyID: wrapped.readKeyID)
        }
        return wrapped
    }
}

extension KeyProvider {
    /// Checks the context a wrapped key claims against the one expected.
    func checkContext(_ wrapped: WrappedReadKey, _ context: KeyContext) throws {
        guard wrapped.context == context else {
            throw KeyProviderError.wrongContext(provider: uri, expected: context, found: wrapped.context)
        }
    }

    /// Checks an unwrapped key against the ID the wrapped key names.
    func checkUnwrapped(_ key: ReadPrivateKey, _ wrapped: WrappedReadKey) throws -> ReadPrivateKey {
        guard key.publicKey.keyID.description == wrapped.readKeyID,
            (try? wrapped.readPublicKey()) == key.publicKey else {
            throw KeyProviderError.keyMismatch(provider: uri, readKeyID: wrapped.readKeyID)
        }
        return key
    }
}

/// Where a provider URI sends a wrapped key to be unwrapped, without the key's own ID:
/// scheme, server and the files or module it uses. Two URIs with the same location differ
/// only in which key they name (a rotation to a new KEK on the same KMS).
///
/// Why it matters: a restorer takes the current wrapped key from the server, and a
/// compromised server must not be able to send the restorer's credentials (a signed KMS
/// request, a client certificate, an HSM module to load) anywhere it likes.
public func keyProviderLocation(_ uri: String) -> String {
    // Why: a second parser (URLComponents below, the provider's own) could read a URI with a
    // fragment or control characters differently, e.g. `awskms://r/k#?endpoint=https://evil`
    // is region r for one and endpoint evil for the other. Such a URI is a location of its
    // own that matches nothing enrolled.
    guard isWellFormedProviderURI(uri) else { return "malformed:\(uri)" }
    if uri.hasPrefix("passphrase") { return "passphrase:" }
    if uri.hasPrefix("pkcs11:") {
        let body = uri.dropFirst("pkcs11:".count)
        let path = body.prefix { $0 != "?" }
        let query = body.dropFirst(path.count + 1)
        let token = path.split(separator: ";").first { $0.hasPrefix("token=") }.map(String.init) ?? ""
        let module = query.split(separator: "&").first { $0.hasPrefix("module-path=") }.map(String.init) ?? ""
        // The PIN's source too: a server must not make a restorer try a wrong PIN (a file of
        // its choosing) until the token locks.
        let pin = query.split(separator: "&").first { $0.hasPrefix("pin-source=") }.map(String.init) ?? ""
        return "pkcs11:\(token);\(module);\(pin)"
    }
    guard let c = URLComponents(string: uri), let scheme = c.scheme else { return uri }
    let query = (c.queryItems ?? []).filter { ["ca", "cert", "key", "endpoint"].contains($0.name) }
        .sorted { $0.name < $1.name }.map { "\($0.name)=\($0.value ?? "")" }.joined(separator: "&")
    return "\(scheme)://\(c.host ?? "")\(c.port.map { ":\($0)" } ?? "")\(query.isEmpty ? "" : "?\(query)")"
}

/// A key provider URI Redoubt accepts anywhere: printable ASCII without spaces and without a
/// fragment (`#`), which no provider uses and which parsers disagree on.
public func isWellFormedProviderURI(_ uri: String) -> Bool {
    !uri.isEmpty && !uri.contains("#") && uri.unicodeScalars.allSatisfy { $0.value > 0x20 && $0.value < 0x7F }
}

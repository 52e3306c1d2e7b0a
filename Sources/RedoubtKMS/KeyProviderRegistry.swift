import Foundation
import RedoubtCore

/// One kind of key provider: how its URI is recognised, parsed without I/O into a location
/// that holds no secret, and turned into a provider. The registry below is the one place
/// that lists them; nothing else switches on a provider URI's scheme.
public struct KeyProviderScheme: Sendable {
    /// The URI's start, as users write it: `passphrase:`, `kmip://`, `awskms://`, `pkcs11:`.
    public let prefix: String
    /// The URI's shape, for errors.
    public let usage: String
    let parse: @Sendable (String) throws(KeyProviderError) -> String
    let make: @Sendable (String, () throws -> SecretBytes) throws -> any KeyProvider

    /// Whether `uri` is of this kind (`passphrase` alone is also a passphrase).
    public func matches(_ uri: String) -> Bool {
        uri.hasPrefix(prefix) || (prefix == "passphrase:" && uri == "passphrase")
    }
}

public enum KeyProviderRegistry {
    /// Every provider Redoubt knows, in the order errors list them.
    public static let schemes: [KeyProviderScheme] = [
        KeyProviderScheme(
            prefix: "passphrase:", usage: "passphrase:",
            parse: { uri throws(KeyProviderError) in
                guard uri == "passphrase:" || uri == "passphrase" else {
                    // Why: anything after the colon could be the passphrase itself; never echo it.
                    throw .malformed(
                        "a passphrase provider is written `passphrase:` alone; the passphrase comes from a file, "
                            + "the environment or a prompt, never the URI")
                }
                return "passphrase:"
            },
            make: { _, passphrase in try PassphraseKeyProvider(passphrase: passphrase()) }),
        KeyProviderScheme(
            prefix: "kmip://", usage: "kmip://HOST:PORT/KEY-ID?ca=FILE&cert=FILE&key=FILE",
            parse: { uri throws(KeyProviderError) in try KMIPKeyProvider(uri: uri).uri },
            make: { uri, _ in try KMIPKeyProvider(uri: uri) }),
        KeyProviderScheme(
            prefix: "awskms://", usage: "awskms://REGION/KEY-ID[?endpoint=URL]",
            parse: { uri throws(KeyProviderError) in try awsKMS(uri).uri },
            // Credentials are read from the AWS environment or credentials file when the KMS
            // is first called, so commands that never unwrap never need them.
            make: { uri, _ in try awsKMS(uri) }),
        KeyProviderScheme(
            prefix: "pkcs11:", usage: "pkcs11:token=LABEL;object=LABEL?module-path=FILE&pin-source=FILE",
            parse: { uri throws(KeyProviderError) in try PKCS11KeyProvider(uri: uri).uri },
            make: { uri, _ in try PKCS11KeyProvider(uri: uri) }),
    ]

    /// The known shapes, for an error about an unknown one.
    public static var known: String { schemes.map(\.usage).joined(separator: ", ") }

    /// The scheme of `uri`, or ``KeyProviderError/unknownProvider(_:)``.
    public static func scheme(of uri: String) throws(KeyProviderError) -> KeyProviderScheme {
        guard let s = schemes.first(where: { $0.matches(uri) }) else { throw .unknownProvider(uri) }
        return s
    }

    /// Parses `uri` without I/O and returns it with no secret in it (what is recorded beside
    /// a wrapped key and shown in messages). Not ``keyProviderLocation(_:)``, which is what a
    /// restorer compares before trusting a provider the server names (it leaves out the key).
    public static func secretFreeURI(_ uri: String) throws(KeyProviderError) -> String {
        try scheme(of: uri).parse(uri)
    }

    /// The provider `uri` names. `passphrase` is asked only for `passphrase:`.
    public static func make(uri: String, passphrase: () throws -> SecretBytes) throws -> any KeyProvider {
        let s = try scheme(of: uri)
        _ = try s.parse(uri)
        return try s.make(uri, passphrase)
    }

    /// An AWS KMS provider; an endpoint carrying a user or password is refused, since the
    /// URI is stored beside the wrapped key.
    static func awsKMS(_ uri: String) throws(KeyProviderError) -> AWSKMSKeyProvider {
        let p = try AWSKMSKeyProvider(uri: uri)
        if let e = p.endpointOverride, e.user != nil || e.password != nil {
            throw .malformed(
                "AWS KMS provider URI: the endpoint must not carry a user or password; use the AWS credentials chain")
        }
        return p
    }
}

import Crypto
import Foundation
import RedoubtCore

/// Wraps the read key with a KEK held by a KMIP 1.4 server: the KMS's own AES-256-GCM
/// Encrypt and Decrypt, with the key context as associated data, so the KEK never leaves
/// the KMS.
///
/// URI: `kmip://HOST:PORT/KEY-ID?ca=FILE&cert=FILE&key=FILE`. The files hold the CA and
/// the client's certificate and private key; no secret appears in the URI itself.
public struct KMIPKeyProvider: KeyProvider {
    public let client: KMIPClient
    public let keyID: String

    public var uri: String {
        let e = client.endpoint
        let query = [("ca", e.caFile), ("cert", e.certificateFile), ("key", e.privateKeyFile)]
            .map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? $0.1)" }
            .joined(separator: "&")
        return "kmip://\(e.host):\(e.port)/\(keyID)?\(query)"
    }

    public init(client: KMIPClient, keyID: String) {
        self.client = client
        self.keyID = keyID
    }

    /// Parses a `kmip://` URI.
    public init(uri: String) throws(KeyProviderError) {
        guard isWellFormedProviderURI(uri) else {
            throw .malformed("\(uri.debugDescription): not a well-formed kmip:// URI (printable ASCII, no '#')")
        }
        guard let parts = URLComponents(string: uri), parts.scheme == "kmip", let host = parts.host,
            !host.isEmpty else {
            throw .unknownProvider(uri)
        }
        let keyID = String(parts.path.drop { $0 == "/" })
        let query = Dictionary((parts.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        guard let ca = query["ca"], let cert = query["cert"], let key = query["key"], !keyID.isEmpty else {
            throw .malformed("""
                KMIP provider URI needs a key ID and ca=, cert= and key= files: \
                kmip://HOST:PORT/KEY-ID?ca=FILE&cert=FILE&key=FILE
                """)
        }
        self.init(client: KMIPClient(endpoint: KMIPEndpoint(host: host, port: parts.port ?? 5696, caFile: ca,
            certificateFile: cert, privateKeyFile: key)), keyID: keyID)
    }

    /// Creates and activates a fresh AES-256 KEK for a tenant at the KMS and returns a
    /// provider for it. The KEK is owned by the client certificate's identity.
    public static func createKEK(endpoint: KMIPEndpoint,
        tenant: String) async throws(KeyProviderError) -> KMIPKeyProvider {
        let client = KMIPClient(endpoint: endpoint)
        let id = try await client.createActiveAESKey(name: kekName(tenant: tenant, unique: UUID()))
        return KMIPKeyProvider(client: client, keyID: id)
    }

    /// The Name a KEK made for `tenant` carries: `redoubt-kek-TENANT-UUID`.
    static func kekName(tenant: String, unique: UUID) -> String {
        "redoubt-kek-\(tenant)-\(unique.uuidString.lowercased())"
    }

    /// Whether `name` is one ``kekName(tenant:unique:)`` made for exactly `tenant`: tenant
    /// `a` must not match `redoubt-kek-a-b-…`, which is tenant `a-b`'s.
    static func isKEKName(_ name: String, of tenant: String) -> Bool {
        let prefix = "redoubt-kek-\(tenant)-"
        guard name.hasPrefix(prefix) else { return false }
        let unique = name.dropFirst(prefix.count)
        return UUID(uuidString: String(unique)).map { $0.uuidString.lowercased() == unique } ?? false
    }

    public func wrap(_ key: ReadPrivateKey, context: KeyContext) async throws -> WrappedReadKey {
        let nonce = Array(AES.GCM.Nonce())
        var seed = key.exportSeed().withUnsafeBytes { Array($0) }
        defer { for i in seed.indices { seed[i] = 0 } }
        let sealed = try await client.encrypt(keyID: keyID, plaintext: seed, nonce: nonce,
            associatedData: context.associatedData)
        return WrappedReadKey(
            provider: uri, context: context, publicKey: key.publicKey,
            parameters: ["kmip-key-id": keyID, "algorithm": "AES-256-GCM", "nonce": Data(nonce).base64EncodedString()],
            wrapped: sealed)
    }

    public func unwrap(_ wrapped: WrappedReadKey, context: KeyContext) async throws -> ReadPrivateKey {
        try checkContext(wrapped, context)
        guard let nonceText = wrapped.parameters["nonce"], let nonce = Data(base64Encoded: nonceText),
            nonce.count == 12 else {
            throw KeyProviderError.malformed("KMIP-wrapped key has no 12-byte nonce")
        }
        // The wrapped key names the KEK that sealed it; rotation may have moved on since.
        let kek = wrapped.parameters["kmip-key-id"] ?? keyID
        var seed = try await client.decrypt(keyID: kek, sealed: try wrapped.wrappedBytes(), nonce: Array(nonce),
            associatedData: context.associatedData)
        defer { for i in seed.indices { seed[i] = 0 } }
        let key = try ReadPrivateKey(seed: SecretBytes(copying: seed))
        return try checkUnwrapped(key, wrapped)
    }

    /// `kmip://…/new` creates the tenant's KEK now.
    public func preparingKEK(tenant: String) async throws -> any KeyProvider {
        keyID == "new" ? try await Self.createKEK(endpoint: client.endpoint, tenant: tenant) : self
    }

    /// Crypto-shreds: revokes and destroys the KEK at the KMS. Every copy wrapped under it
    /// becomes unrecoverable.
    public func destroyKEK() async throws(KeyProviderError) {
        try await client.revokeAndDestroy(keyID: keyID)
    }

    /// Checks the KEK's Name at the KMS: Redoubt names each KEK it creates after its tenant.
    public func checkKEKOwner(of wrapped: WrappedReadKey, tenant: String) async throws {
        let kek = wrapped.parameters["kmip-key-id"] ?? keyID
        let names: [String]
        do {
            let facts = try await client.namesAndState(keyID: kek)
            if facts.destroyed { return }
            names = facts.names
        } catch {
            if case .keyDestroyed = error { return }
            throw error
        }
        guard names.contains(where: { Self.isKEKName($0, of: tenant) }) else {
            throw KeyProviderError.foreignKEK(provider: client.provider,
                detail: "key \(kek) is named "
                    + "\(names.isEmpty ? "nothing" : names.map(\.debugDescription).joined(separator: ", ")), not "
                    + "redoubt-kek-\(tenant)-UUID as the KEKs Redoubt creates for tenant \(tenant) are. Nothing was "
                    + "destroyed. If it really is this tenant's (a key adopted at tenant creation), destroy it at the "
                    + "KMS yourself and repeat")
        }
    }

    /// Destroys the KEK named in `wrapped` (which may be an older one than this URI's).
    /// A KEK the KMS reports destroyed already counts as done.
    public func destroyKEK(of wrapped: WrappedReadKey) async throws {
        let kek = wrapped.parameters["kmip-key-id"] ?? keyID
        do {
            // Some servers keep a destroyed object (state Destroyed) and refuse to destroy it again.
            if try await client.namesAndState(keyID: kek).destroyed { return }
            try await client.revokeAndDestroy(keyID: kek)
        } catch {
            // (A typed `catch .keyDestroyed` here crashes swift-frontend 6.3.1's SILGen.)
            if case .keyDestroyed = error { return }
            throw error
        }
    }
}

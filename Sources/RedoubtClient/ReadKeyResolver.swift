import Foundation
import RedoubtCore
import RedoubtKMS

/// Decides which wrapped read key a restorer trusts, and unwraps it in memory.
///
/// A wrapped read key can come from four places: an escrow file the restorer names, the
/// tenant descriptors of a bucket copy or media set, the server, and the copy saved at
/// enrollment. Each but the enrollment copy may have been written by someone else, so
/// every one is checked against the enrollment before its provider is asked to unwrap it:
/// its read key ID must be the enrolled write material's (`E_KEY_MISMATCH` names both
/// IDs), and the context bound into the unwrap is the restorer's own tenant, never the
/// one the wrapping claims. Copies are used only at the enrolled key service; the server
/// may name a new key (a rotation) but not a new key service without the restorer's word.
public struct ReadKeyResolver: Sendable {
    /// Makes the key provider a wrapping's URI names (its secret, if any, read by the caller).
    public typealias MakeProvider = @Sendable (_ uri: String) throws -> any KeyProvider
    /// Asks the server for the tenant's current wrapped read key.
    public typealias FetchCurrent = @Sendable () async throws -> Wire.ReadKeyInfo

    /// Copies tried before falling back to the server or the enrollment copy: a copy holds
    /// one descriptor per key version, and each try may cost a KMS call or a scrypt run.
    public static let copiesTried = 4

    /// The restorer's configuration: its credential names the tenant, its write material
    /// the read key, and it holds the wrapped copy saved at enrollment.
    public let config: ClientConfig
    /// A key service the restorer trusts besides the enrolled one (`--trust-key-provider`).
    public let trustedProvider: String?
    private let makeProvider: MakeProvider
    private let note: @Sendable (String) -> Void

    /// `note` receives one line for each copy skipped or used (the CLI prints it on stderr).
    public init(config: ClientConfig, trustedProvider: String? = nil, makeProvider: @escaping MakeProvider,
                note: @escaping @Sendable (String) -> Void = { _ in }) {
        self.config = config
        self.trustedProvider = trustedProvider
        self.makeProvider = makeProvider
        self.note = note
    }

    /// The read key, unwrapped in memory. The wrapped key is `escrow` if given; else the
    /// first of `copies` that opens (newest first: no server needed, and current after a
    /// rotation); else the server's current one (saved as the enrollment copy, which a
    /// rotation made stale); else, when the server cannot be reached, the enrollment copy.
    public func resolve(escrow: WrappedReadKey? = nil, copies: [(name: String, key: WrappedReadKey)] = [],
                        server: FetchCurrent?) async throws -> ReadPrivateKey {
        if let escrow { return try await unwrap(escrow) }
        // One that does not open (damaged, or added by whoever can write the copy) must not
        // stand in the way of an older, real one; nor may it cost without bound.
        let enrolled = try? config.wrappedReadKey()
        for (name, wrapped) in copies.prefix(Self.copiesTried) {
            if wrapped.provider.hasPrefix("passphrase"), let enrolled, Self.costlier(wrapped, than: enrolled) {
                note("note: skipping \(name): its scrypt parameters cost more than the enrollment copy's")
                continue
            }
            do {
                return try await unwrap(wrapped)
            } catch let e as KeyProviderError where !e.endsTheSearch(provider: wrapped.provider) {
                note("note: the wrapped read key in \(name) did not open (\(e)); trying the next")
            }
        }
        return try await unwrap(try await current(server: server))
    }

    /// Unwraps `wrapped` after checking it holds the enrolled read key, bound to this
    /// restorer's tenant.
    public func unwrap(_ wrapped: WrappedReadKey) async throws -> ReadPrivateKey {
        let tenant = try config.credential().tenant ?? ""
        // Why: whoever handed us the wrapped key (server, file, copy) must not be able to swap
        // in another read key; the enrollment's write material names the tenant's one.
        let expected = try config.sharedMaterial().readPublicKey.keyID.description
        guard wrapped.readKeyID == expected else {
            throw KeyProviderError.keyMismatch(provider: wrapped.provider,
                                               readKeyID: """
                                                   \(wrapped.readKeyID) (tenant \(tenant)'s read key is \(expected))
                                                   """)
        }
        let provider = try makeProvider(wrapped.provider)
        // Why the credential's tenant: the context bound into the wrapping must be this
        // restorer's tenant, not whatever the file claims.
        return try await provider.unwrap(wrapped, context: KeyContext(tenant: tenant,
            keyVersion: wrapped.context.keyVersion))
    }

    /// The wrapped read key in a tenant descriptor copied off the server (a bucket copy, a
    /// media set), or nil when it has none or it is not to be used. Why only at the enrolled
    /// key service: whoever can write the copy can add a descriptor whose provider URI
    /// points elsewhere (their KMS, or a PKCS#11 module path of their choosing). Such a
    /// descriptor is not used unless its provider is the same service (scheme, host and
    /// port, query) as the enrollment's; the key's own name may differ (a KEK rotation).
    /// `unwrap` then checks the key ID against the enrollment's.
    public func copy(descriptor: [UInt8], name: String, tenant: String) throws -> WrappedReadKey? {
        struct Descriptor: Decodable { let wrappedReadKey: String?; let shreddedAt: Double? }
        let d = try JSONDecoder().decode(Descriptor.self, from: Data(descriptor))
        if d.shreddedAt != nil {
            // Not final: whoever can write the copy can add a descriptor that says so. If the
            // tenant really was shredded, its KEKs are gone and the unwrap fails by itself.
            note("note: \(name) says tenant \(tenant) was crypto-shredded; trying the other copies of the read key "
                 + "(only an escrowed copy, --read-key FILE, restores a shredded tenant)")
            return nil
        }
        guard let json = d.wrappedReadKey, !json.isEmpty else { return nil }
        let wrapped = try WrappedReadKey.decode(Data(json.utf8))
        guard let enrolled = try? config.wrappedReadKey(),
              keyProviderLocation(wrapped.provider) == keyProviderLocation(enrolled.provider) else {
            note("note: not using the wrapped read key in \(name): its key provider is not the one this restorer "
                 + "enrolled with; pass --read-key FILE to use another")
            return nil
        }
        note("note: using the wrapped read key in \(name)")
        return wrapped
    }

    /// Whether `w`'s scrypt parameters ask for more work than `enrolled`'s.
    public static func costlier(_ w: WrappedReadKey, than enrolled: WrappedReadKey) -> Bool {
        func cost(_ k: WrappedReadKey) -> Double? {
            guard let n = k.parameters["logN"].flatMap(Int.init), let r = k.parameters["r"].flatMap(Int.init),
                  let p = k.parameters["p"].flatMap(Int.init) else { return nil }
            return pow(2, Double(n)) * Double(r) * Double(p)
        }
        guard let mine = cost(enrolled) else { return false }
        return (cost(w) ?? .infinity) > mine
    }

    /// Asks the server with this restorer's own credential (`server` for `resolve`).
    public static func fetch(config: ClientConfig) -> FetchCurrent {
        return {
            let client = try APIClient(credential: config.credential())
            do {
                let info = try await client.readKey(tenant: try config.credential().tenant ?? "")
                await client.shutdown()
                return info
            } catch {
                await client.shutdown()
                throw error
            }
        }
    }

    /// The server's current wrapping if its key service is trusted (saved over the
    /// enrollment copy), else the enrollment copy when the server cannot answer.
    func current(server: FetchCurrent?) async throws -> WrappedReadKey {
        guard let server else { return try config.wrappedReadKey() }
        let tenant = try config.credential().tenant ?? ""
        let saved = try? config.wrappedReadKey()
        do {
            let info = try await server()
            guard let json = info.wrappedReadKey else {
                throw KeyProviderError.keyDestroyed(provider: "redoubt server",
                                                    detail: """
                                                        tenant \(tenant) was crypto-shredded; its backups cannot be \
                                                        decrypted
                                                        """)
            }
            let current = try WrappedReadKey.decode(Data(json.utf8))
            try checkTrusted(current, saved: saved, tenant: tenant)
            try config.storeWrappedReadKey(json)
            return current
        } catch let e as APIError where e.code == "E_TENANT_SHREDDED" {
            throw KeyProviderError.keyDestroyed(provider: "redoubt server", detail: e.message)
        } catch let e as APIError where e.isRefusal {
            // A credential that may not read (a host's, a revoked one): say so, exit 4.
            throw e
        } catch let e as APIError {
            // The server is gone or older: the enrollment copy is the best we have.
            note("note: using the wrapped read key saved at enrollment (server: \(e.message)); "
                 + "after a rotation pass --read-key FILE")
        }
        return try config.wrappedReadKey()
    }

    /// The server may name a new key (a rotation) but not a new place to send our
    /// credentials to: that takes this restorer's own word (--trust-key-provider).
    func checkTrusted(_ current: WrappedReadKey, saved: WrappedReadKey?, tenant: String) throws {
        let location = keyProviderLocation(current.provider)
        let enrolled = saved.map { keyProviderLocation($0.provider) }
        let trusted = [enrolled, trustedProvider.map(keyProviderLocation), "passphrase:"].compactMap { $0 }
        guard trusted.contains(location) else {
            throw KeyProviderError.untrustedProvider(
                provider: location,
                detail: """
                    the server hands out tenant \(tenant)'s read key wrapped by it, but this restorer was enrolled 
                    """
                    + "with \(enrolled ?? "none"). If the admins rotated the key there, repeat with "
                    + "--trust-key-provider '\(location)'; otherwise treat the server as compromised")
        }
    }
}

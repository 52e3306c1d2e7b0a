import Foundation
import RedoubtCore
import RedoubtKMS

/// What happens to the key that decrypts a tenant's backups: rotation to another KEK,
/// escrow under a passphrase, crypto-shredding, and giving a rebuilt server its write
/// material back. Runs on the admin's machine: the read key is unwrapped here, in memory,
/// and never reaches the server.
///
/// It lives in RedoubtClient, not RedoubtKMS, because each step is a conversation between
/// the server's admin API and one or more key providers, in an order that matters (nothing
/// is destroyed at a KMS before the server agrees; nothing changes on the server if a KMS
/// cannot be reached); RedoubtKMS knows key providers only and imports no API client.
public struct KeyCustody: Sendable {
    /// Which secret a provider is made for: the CLI reads each from its own file, variable
    /// or prompt.
    public enum Secret: Sendable {
        /// The current wrapping's passphrase, to unwrap the read key.
        case current
        /// The new wrapping's passphrase (`rotate-key --key-provider passphrase:`).
        case new
        /// The escrow passphrase.
        case escrow
        /// None: the provider is made only to check or destroy its KEK.
        case none
    }

    /// Makes the key provider `uri` names, with the secret `Secret` says.
    public typealias MakeProvider = @Sendable (_ uri: String, _ secret: Secret) throws -> any KeyProvider

    public let client: APIClient
    public let tenant: String
    private let makeProvider: MakeProvider

    /// `client` holds an admin credential.
    public init(client: APIClient, tenant: String, makeProvider: @escaping MakeProvider) {
        self.client = client
        self.tenant = tenant
        self.makeProvider = makeProvider
    }

    /// The tenant's current wrapped read key as the server holds it.
    public func current() async throws -> (info: Wire.ReadKeyInfo, wrapped: WrappedReadKey) {
        let info = try await client.readKey(tenant: tenant)
        guard let json = info.wrappedReadKey else {
            throw KeyProviderError.keyDestroyed(
                provider: "redoubt server",
                detail: "tenant \(tenant) was crypto-shredded\(info.shreddedAt.map { " at \($0)" } ?? "")")
        }
        return (info, try WrappedReadKey.decode(Data(json.utf8)))
    }

    /// The read key, unwrapped in memory with the provider its current wrapping names.
    public func unwrapCurrent(_ wrapped: WrappedReadKey) async throws -> ReadPrivateKey {
        let provider = try makeProvider(wrapped.provider, .current)
        return try await provider.unwrap(wrapped, context: KeyContext(tenant: tenant,
            keyVersion: wrapped.context.keyVersion))
    }

    // MARK: Rotation

    /// What a rotation did.
    public struct Rotation: Sendable {
        public var keyVersion: Int
        public var previousKeyVersion: Int
        public var wrapped: WrappedReadKey
        public var previous: WrappedReadKey
        public var previousKEKDestroyed: Bool
    }

    /// Re-wraps the read key under `keyProvider` as the next key version (or applies the
    /// approved request `requestID`, which holds the wrapping made when it was filed).
    /// With `destroyOld`, the old KEK is destroyed at its KMS or HSM once the new wrapping
    /// is in place, after the KMS showed it is this tenant's. No pack is rewritten.
    public func rotate(to keyProvider: String?, requestID: String?, destroyOld: Bool) async throws -> Rotation {
        let (info, old) = try await current()
        if destroyOld && old.provider.hasPrefix("passphrase") {
            throw KeyCustodyError.usage("the current wrapping is a passphrase, which cannot be destroyed: "
                                        + "drop --destroy-old (nothing was changed)")
        }
        // Before anything changes: the KMS must show the old KEK as this tenant's.
        let oldKEK = destroyOld ? try makeProvider(old.provider, .none) : nil
        try await oldKEK?.checkKEKOwner(of: old, tenant: tenant)
        let after: Wire.ReadKeyInfo
        let wrapped: WrappedReadKey
        if let requestID {
            // The approvers approved the wrapping made (and checked to open) when the
            // request was filed; the server applies exactly that one.
            guard keyProvider == nil else {
                throw KeyCustodyError.usage("--request applies the wrapping the request holds: drop --key-provider")
            }
            after = try await client.rotateReadKey(tenant: tenant, wrappedReadKey: "", requestID: requestID)
            wrapped = try WrappedReadKey.decode(Data((after.wrappedReadKey ?? "").utf8))
        } else {
            guard let keyProvider else {
                throw KeyCustodyError.usage("give --key-provider URI (or --request ID for an approved rotation)")
            }
            let key = try await unwrapCurrent(old)
            let provider = try await makeProvider(keyProvider, .new).preparingKEK(tenant: tenant)
            let context = KeyContext(tenant: tenant, keyVersion: info.keyVersion + 1)
            // Checked to open: the server cannot check that, we can, before anything depends on it.
            wrapped = try await provider.wrapChecked(key, context: context)
            // With two admins or more this files a request (E_APPROVAL_REQUIRED, exit
            // 13) holding this wrapping; once approved: `rotate-key T --request ID`.
            after = try await client.rotateReadKey(tenant: tenant,
                                                   wrappedReadKey: String(decoding: try wrapped.encoded(),
                                                       as: UTF8.self))
        }
        var destroyed = false
        if let oldKEK {
            guard old.provider != wrapped.provider else {
                throw KeyCustodyError.usage("the new wrapping uses the same KEK as the old (\(old.provider)); "
                                            + "it was not destroyed. The rotation itself is done.")
            }
            try await oldKEK.destroyKEK(of: old)
            _ = try await client.markKEKsDestroyed(tenant: tenant, versions: [info.keyVersion])
            destroyed = true
        }
        return Rotation(keyVersion: after.keyVersion, previousKeyVersion: info.keyVersion, wrapped: wrapped,
            previous: old,
                        previousKEKDestroyed: destroyed)
    }

    // MARK: Shredding

    /// What a shred did.
    public struct Shred: Encodable, Sendable {
        public var tenant: String
        public var shreddedAt: Date?
        public var destroyedKeyVersions: [Int]
        public var notDestroyable: [String]
    }

    /// Crypto-shreds the tenant: every KEK its read key was ever wrapped under is destroyed
    /// at its KMS or HSM, then the server deletes every wrapped copy it holds. `confirm` is
    /// called once the wrapping is known to be destroyable, before anything is asked of the
    /// server; `progress` hears each KEK destroyed.
    public func shred(requestID: String?, confirm: () throws -> Void,
                      progress: (String) -> Void = { _ in }) async throws -> Shred {
        let (info, current) = try await current()
        guard !Self.isPassphrase(current.provider) else {
            throw KeyProviderError.unsupported(
                provider: current.provider,
                detail: """
                    tenant \(tenant)'s read key is wrapped by a passphrase, which no one can destroy: rotate it to 
                    """
                    + "a KMS or HSM first (`redoubt admin tenant rotate-key \(tenant) --key-provider kmip://…/new "
                    + "--destroy-old`), then shred")
        }
        try confirm()
        // Authorised? (Files an approval request if the quorum needs one.) Nothing
        // is destroyed at the KMS before the server says yes.
        _ = try await client.shredTenant(tenant: tenant, confirm: tenant, destroyedVersions: [], requestID: requestID,
            check: true)
        let keks = try Self.everyKEK(info, current: current)
        // A wrapping the server says belongs to another tenant is not destroyed here.
        for (_, w) in keks where w.context.tenant != tenant {
            throw KeyProviderError.wrongContext(provider: w.provider,
                                                expected: KeyContext(tenant: tenant, keyVersion: w.context.keyVersion),
                                                found: w.context)
        }
        // A server that forges the context too is caught at the KMS or HSM: each KEK
        // must show there that it was made for this tenant, before any is destroyed.
        let providers = try keks.map {
            Self.isPassphrase($0.wrapped.provider) ? nil : try makeProvider($0.wrapped.provider, .none)
        }
        for (kek, provider) in zip(keks, providers) {
            try await provider?.checkKEKOwner(of: kek.wrapped, tenant: tenant)
        }
        var destroyed: [Int] = []
        var undestroyable: [String] = []
        for ((version, w), provider) in zip(keks, providers) {
            guard let provider else {
                undestroyable.append("""
                    key version \(version) (\(w.provider)): copies wrapped under it before its rotation 
                    """
                                     + """
                                         (bucket copies, media, escrow files) stay readable to whoever knows that \
                                         passphrase
                                         """)
                continue
            }
            do {
                try await provider.destroyKEK(of: w)
                destroyed.append(version)
                progress("destroyed the KEK of key version \(version) at \(w.provider)")
            } catch {
                // Record what is already gone, change nothing else, and say why.
                let retired = destroyed.filter { $0 != info.keyVersion }
                if !retired.isEmpty { _ = try? await client.markKEKsDestroyed(tenant: tenant, versions: retired) }
                throw error
            }
        }
        let after = try await client.shredTenant(tenant: tenant, confirm: tenant, destroyedVersions: destroyed,
            requestID: requestID)
        return Shred(tenant: tenant, shreddedAt: after.shreddedAt, destroyedKeyVersions: destroyed,
            notDestroyable: undestroyable)
    }

    /// Every KEK that ever wrapped this read key and is not destroyed yet, newest first.
    static func everyKEK(_ info: Wire.ReadKeyInfo, current: WrappedReadKey) throws -> [(version: Int,
        wrapped: WrappedReadKey)] {
        var keks: [(version: Int, wrapped: WrappedReadKey)] = [(info.keyVersion, current)]
        for r in info.retired.reversed() where r.destroyedAt == nil {
            keks.append((r.version, try WrappedReadKey.decode(Data(r.stub.utf8))))
        }
        return keks
    }

    static func isPassphrase(_ uri: String) -> Bool { uri.hasPrefix("passphrase") }

    // MARK: Escrow and write material

    /// Writes an escrow copy of the read key to `path` (created 0600, never overwritten),
    /// wrapped under the escrow passphrase; returns it.
    public func escrow(to path: String) async throws -> WrappedReadKey {
        guard !FileManager.default.fileExists(atPath: path) else {
            throw KeyCustodyError.usage("\(path) exists; an escrow copy is never overwritten: choose another path")
        }
        let (_, current) = try await current()
        let key = try await unwrapCurrent(current)
        let wrapped = try await makeProvider("passphrase:", .escrow).wrap(key, context: current.context)
        guard FileManager.default.createFile(atPath: path, contents: try wrapped.encoded(),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw KeyCustodyError.usage("cannot write \(path)")
        }
        return wrapped
    }

    /// Gives the server back the tenant's write material after its catalog was rebuilt:
    /// `material` (an enrolled host's write-material.bin, which the server checks) if given,
    /// else the sealed copy the store holds, opened here with the read key. False when the
    /// server has it already (nothing is sent).
    public func restoreWriteMaterial(_ material: [UInt8]?) async throws -> Bool {
        let bytes: [UInt8]
        if let material {
            bytes = material
        } else {
            let info = try await client.writeMaterial(tenant: tenant)
            if info.present { return false }
            guard let sealed = Data(base64Encoded: info.sealedWriteMaterial) else {
                throw KeyCustodyError.usage("the server sent no sealed write material for tenant \(tenant)")
            }
            let (_, current) = try await current()
            let key = try await unwrapCurrent(current)
            bytes = try SharedWriteMaterial.open(sealed: Array(sealed), tenant: tenant, readKey: key).encode()
                .withUnsafeBytes { Array($0) }
        }
        _ = try await client.restoreWriteMaterial(tenant: tenant, material: Data(bytes).base64EncodedString())
        return true
    }
}

/// A key-custody request that cannot be carried out as given (exit 2); the message says
/// what to change, and whether anything was changed already.
public struct KeyCustodyError: RedoubtError {
    public let message: String
    public static func usage(_ message: String) -> KeyCustodyError { KeyCustodyError(message: message) }
    public var errorCode: String { "E_USAGE" }
    public var exitCategory: ExitCategory { .usage }
    public var description: String { message }
}

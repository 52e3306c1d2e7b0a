import Crypto
import _CryptoExtras
import Foundation
import RedoubtCore

/// Wraps the read key under a key derived from a passphrase with scrypt: the embedded
/// default, and the way to make an escrow copy for when a KMS is lost.
///
/// Wrapping: KEK = scrypt(passphrase, salt, N, r, p) → AES-256-GCM(KEK, random 12-byte
/// nonce, seed, AAD = context ‖ provider parameters). N, r, p and the salt are stored
/// with the wrapped key (docs/FORMAT.md §7.1).
public struct PassphraseKeyProvider: KeyProvider {
    public let uri = "passphrase:"
    private let passphrase: SecretBytes
    /// scrypt cost; log2 of N. 17 (N = 131072, r = 8: 128 MiB, ~0.4 s) by default.
    public let logN: Int
    public let blockSize: Int
    public let parallelism: Int

    /// `passphrase` must not be empty. Lower `logN` only in tests.
    public init(passphrase: SecretBytes, logN: Int = 17, blockSize: Int = 8, parallelism: Int = 1) throws {
        guard passphrase.count > 0 else {
            throw KeyProviderError.secretMissing(provider: "passphrase:",
                how: "set REDOUBT_PASSPHRASE or pass --passphrase-file FILE")
        }
        self.passphrase = passphrase
        self.logN = logN
        self.blockSize = blockSize
        self.parallelism = parallelism
    }

    public func wrap(_ key: ReadPrivateKey, context: KeyContext) async throws -> WrappedReadKey {
        let salt = SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
        let params = ["kdf": "scrypt", "logN": String(logN), "r": String(blockSize), "p": String(parallelism),
                      "salt": Data(salt).base64EncodedString(), "aead": "AES-256-GCM"]
        let kek = try deriveKEK(salt: salt, logN: logN, r: blockSize, p: parallelism)
        let seed = key.exportSeed()
        let box = try seed.withUnsafeBytes {
            try AES.GCM.seal($0, using: kek, authenticating: Self.aad(context, params))
        }
        guard let combined = box.combined else { throw KeyProviderError.malformed("AES-GCM produced no combined form") }
        return WrappedReadKey(provider: uri, context: context, publicKey: key.publicKey, parameters: params,
            wrapped: Array(combined))
    }

    /// A passphrase is not a key the provider can destroy: copies wrapped under it stay
    /// readable by whoever knows it. Crypto-shredding needs a KMS or HSM provider.
    public func destroyKEK(of wrapped: WrappedReadKey) async throws {
        throw KeyProviderError.unsupported(provider: uri,
            detail: """
                a passphrase cannot be destroyed: every copy wrapped under it (bucket, media, escrow) stays readable \
                to whoever knows it. Rotate to a kmip://, awskms:// or pkcs11: provider first, then shred
                """)
    }

    public func checkKEKOwner(of wrapped: WrappedReadKey, tenant: String) async throws {
        try await destroyKEK(of: wrapped)
    }

    public func unwrap(_ wrapped: WrappedReadKey, context: KeyContext) async throws -> ReadPrivateKey {
        try checkContext(wrapped, context)
        let p = wrapped.parameters
        guard p["kdf"] == "scrypt", p["aead"] == "AES-256-GCM",
              let logN = p["logN"].flatMap(Int.init), let r = p["r"].flatMap(Int.init),
                  let par = p["p"].flatMap(Int.init),
              let salt = p["salt"].flatMap({ Data(base64Encoded: $0) }), salt.count >= 16 else {
            throw KeyProviderError.malformed("passphrase parameters are missing or invalid")
        }
        // Why: bound the work a tampered parameter set can demand (N up to 2^22, 4 GiB).
        guard (10...22).contains(logN), (1...32).contains(r), (1...16).contains(par) else {
            throw KeyProviderError.malformed("scrypt parameters out of range (logN \(logN), r \(r), p \(par))")
        }
        let kek = try deriveKEK(salt: Array(salt), logN: logN, r: r, p: par)
        var seedData: Data
        do {
            let box = try AES.GCM.SealedBox(combined: try wrapped.wrappedBytes())
            seedData = try AES.GCM.open(box, using: kek, authenticating: Self.aad(context, p))
        } catch {
            throw KeyProviderError.wrongSecret(provider: uri)
        }
        defer { seedData.resetBytes(in: 0..<seedData.count) }
        let key = try ReadPrivateKey(seed: SecretBytes(copying: seedData))
        return try checkUnwrapped(key, wrapped)
    }

    private func deriveKEK(salt: [UInt8], logN: Int, r: Int, p: Int) throws -> SymmetricKey {
        try passphrase.withUnsafeBytes { pw in
            try KDF.Scrypt.deriveKey(from: pw, salt: salt, outputByteCount: 32, rounds: 1 << logN, blockSize: r,
                parallelism: p,
                                     maxMemory: 129 * r * (1 << logN) * p + (1 << 20))
        }
    }

    static func aad(_ context: KeyContext, _ params: [String: String]) -> [UInt8] {
        var w = ByteWriter()
        w.raw(context.associatedData)
        for k in params.keys.sorted() {
            w.string(k)
            w.string(params[k]!)
        }
        return w.bytes
    }
}

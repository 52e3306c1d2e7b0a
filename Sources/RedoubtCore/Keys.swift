import Crypto
import Foundation

/// Domain-separation labels. Every HKDF, HPKE `info` and signature in Redoubt starts with
/// one of these, so no key or signature made for one purpose is valid for another.
enum Label {
    static let readKeyID = Array("redoubt/v1/read-key-id".utf8)
    static let gear = Array("redoubt/v1/chunker-gear".utf8)
    static let packHPKE = Array("redoubt/v1/pack-data-key".utf8)
    static let manifestHPKE = Array("redoubt/v1/manifest-sealed".utf8)
    static let manifestSignature = Array("redoubt/v1/manifest-signature".utf8)
    static let hostKeyID = Array("redoubt/v1/host-key-id".utf8)
    static let writeMaterialHPKE = Array("redoubt/v1/write-material".utf8)
    static let writeMaterialAAD = Array("redoubt/v1/write-material-aad".utf8)
    static let writeMaterialCheck = Array("redoubt/v1/write-material-check".utf8)
}

/// The HPKE ciphersuite every seal to a read key uses: X-Wing (ML-KEM-768 + X25519),
/// HKDF-SHA256, AES-256-GCM.
public let readKeyCiphersuite = HPKE.Ciphersuite.XWingMLKEM768X25519_SHA256_AES_GCM_256

/// The public half of a tenant's read key. Hosts encrypt to it; it decrypts nothing.
public struct ReadPublicKey: Sendable, Equatable, CustomStringConvertible {
    let key: XWingMLKEM768X25519.PublicKey
    /// The 1216-byte X-Wing public key.
    public let rawRepresentation: [UInt8]
    /// Identifies this key in packs and manifests.
    public let keyID: ReadKeyID

    /// Parses an X-Wing public key.
    public init(rawRepresentation raw: [UInt8]) throws(CoreError) {
        do {
            self.init(key: try XWingMLKEM768X25519.PublicKey(rawRepresentation: raw))
        } catch {
            throw CoreError(.badKey, object: "read public key", "not a valid X-Wing public key (\(raw.count) bytes)")
        }
    }

    init(key: XWingMLKEM768X25519.PublicKey) {
        self.key = key
        rawRepresentation = Array(key.rawRepresentation)
        var h = SHA256()
        h.update(data: Label.readKeyID)
        h.update(data: rawRepresentation)
        keyID = ReadKeyID(truncating: h.finalize())
    }

    public static func == (a: Self, b: Self) -> Bool { a.rawRepresentation == b.rawRepresentation }
    public var description: String { "ReadPublicKey(\(keyID))" }
}

/// The private half of a tenant's read key: the only key that decrypts backups.
///
/// It exists unwrapped only in memory, on a restore or deep-verify host, for the length
/// of that operation. At rest it is always wrapped by a key provider (RedoubtKMS).
/// Never prints.
public struct ReadPrivateKey: Sendable, CustomStringConvertible {
    let key: XWingMLKEM768X25519.PrivateKey
    public let publicKey: ReadPublicKey

    init(key: XWingMLKEM768X25519.PrivateKey) {
        self.key = key
        self.publicKey = ReadPublicKey(key: key.publicKey)
    }

    /// A fresh random read key.
    public static func generate() throws(CoreError) -> ReadPrivateKey {
        do { return ReadPrivateKey(key: try XWingMLKEM768X25519.PrivateKey.generate()) } catch {
            throw CoreError(.badKey, object: "read key", "X-Wing key generation failed: \(error)")
        }
    }

    /// Rebuilds the key from its 32-byte seed (the form that providers wrap).
    public init(seed: SecretBytes) throws(CoreError) {
        guard seed.count == 32 else {
            throw CoreError(.badKey, object: "read key", "unwrapped seed has \(seed.count) bytes, expected 32")
        }
        do {
            let k = try seed.withUnsafeBytes {
                try XWingMLKEM768X25519.PrivateKey(seedRepresentation: Data($0), publicKey: nil)
            }
            self.init(key: k)
        } catch {
            throw CoreError(.badKey, object: "read key", "unwrapped seed is not an X-Wing key")
        }
    }

    /// The 32-byte seed, for a key provider to wrap. Handle as a secret.
    public func exportSeed() -> SecretBytes {
        var d = key.seedRepresentation
        defer { d.resetBytes(in: 0..<d.count) }
        return SecretBytes(copying: d)
    }

    public var description: String { "ReadPrivateKey(\(publicKey.keyID), redacted)" }
}

/// The tenant's secret key for chunk IDs (HMAC-SHA256). Never prints.
public struct ChunkIDKey: Sendable, CustomStringConvertible {
    let key: SymmetricKey
    /// The keyed pads when ``SHA256Stream`` is accelerated; otherwise swift-crypto's HMAC.
    let pads: HMACSHA256Pads?
    public init(secret: SecretBytes) throws(CoreError) {
        guard secret.count == 32 else {
            throw CoreError(.badKey, object: "chunk-ID key", "expected 32 bytes, got \(secret.count)")
        }
        self.init(key: secret.withUnsafeBytes { SymmetricKey(data: $0) })
    }
    public static func generate() -> ChunkIDKey { ChunkIDKey(key: SymmetricKey(size: .bits256)) }
    init(key: SymmetricKey) {
        self.key = key
        pads = SHA256Stream.accelerated ? key.withUnsafeBytes { HMACSHA256Pads(key: $0) } : nil
    }

    /// The keyed ID of `plaintext`.
    public func chunkID(for plaintext: UnsafeRawBufferPointer) -> ChunkID {
        guard let pads else {
            return ChunkID(bytes: Array(HMAC<SHA256>.authenticationCode(for: plaintext, using: key)))!
        }
        var inner = pads.start()
        inner.update(plaintext)
        return ChunkID(bytes: pads.finish(inner))!
    }

    /// The keyed ID of `plaintext`, while `other` absorbs `otherBytes` in the same loop.
    func chunkID(for plaintext: UnsafeRawBufferPointer, alongside other: inout SHA256Stream,
        _ otherBytes: UnsafeRawBufferPointer) -> ChunkID {
        guard let pads else {
            other.update(otherBytes)
            return chunkID(for: plaintext)
        }
        var inner = pads.start()
        inner.update(plaintext, alongside: &other, otherBytes)
        return ChunkID(bytes: pads.finish(inner))!
    }

    /// The keyed IDs of two plaintexts, computed in one loop.
    public func chunkIDs(for a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> (ChunkID, ChunkID) {
        guard let pads else { return (chunkID(for: a), chunkID(for: b)) }
        var ia = pads.start(), ib = pads.start()
        ia.update(a, alongside: &ib, b)
        return (ChunkID(bytes: pads.finish(ia))!, ChunkID(bytes: pads.finish(ib))!)
    }

    public func chunkID(for plaintext: [UInt8]) -> ChunkID {
        plaintext.withUnsafeBytes { chunkID(for: $0) }
    }

    /// The raw key, for storing in a write key set. Handle as a secret.
    public func export() -> SecretBytes { key.withUnsafeBytes { SecretBytes(copying: $0) } }
    public var description: String { "ChunkIDKey(redacted)" }
}

/// The tenant's secret seed for the chunker's gear table. Never prints.
public struct ChunkerSeed: Sendable, CustomStringConvertible {
    public let secret: SecretBytes
    public init(secret: SecretBytes) throws(CoreError) {
        guard secret.count == 32 else {
            throw CoreError(.badKey, object: "chunker seed", "expected 32 bytes, got \(secret.count)")
        }
        self.secret = secret
    }
    private init(random: SymmetricKey) { secret = random.withUnsafeBytes { SecretBytes(copying: $0) } }
    public static func generate() -> ChunkerSeed { ChunkerSeed(random: SymmetricKey(size: .bits256)) }
    public var description: String { "ChunkerSeed(redacted)" }
}

/// A host's public signing key (Ed25519), registered with the server at enrollment.
public struct HostPublicKey: Sendable, Hashable, CustomStringConvertible {
    public let rawRepresentation: [UInt8]
    let key: Curve25519.Signing.PublicKey

    public init(rawRepresentation raw: [UInt8]) throws(CoreError) {
        do { self.init(key: try Curve25519.Signing.PublicKey(rawRepresentation: raw)) } catch {
            throw CoreError(.badKey, object: "host public key", "not an Ed25519 public key (\(raw.count) bytes)")
        }
    }

    init(key: Curve25519.Signing.PublicKey) {
        self.key = key
        rawRepresentation = Array(key.rawRepresentation)
    }

    /// Verifies an Ed25519 signature over `message`.
    public func isValidSignature(_ signature: [UInt8], for message: [UInt8]) -> Bool {
        key.isValidSignature(signature, for: message)
    }

    public static func == (a: Self, b: Self) -> Bool { a.rawRepresentation == b.rawRepresentation }
    public func hash(into h: inout Hasher) { h.combine(rawRepresentation) }
    public var description: String { "HostPublicKey(\(hexString(rawRepresentation.prefix(8))))" }
}

/// A host's private signing key (Ed25519). It signs the host's manifests; it is
/// generated on the host and never leaves it. Never prints.
public struct HostSigningKey: Sendable, CustomStringConvertible {
    let key: Curve25519.Signing.PrivateKey
    public let publicKey: HostPublicKey

    init(key: Curve25519.Signing.PrivateKey) {
        self.key = key
        publicKey = HostPublicKey(key: key.publicKey)
    }

    public static func generate() -> HostSigningKey { HostSigningKey(key: .init()) }

    public init(secret: SecretBytes) throws(CoreError) {
        do {
            self.init(key: try secret.withUnsafeBytes { try Curve25519.Signing.PrivateKey(rawRepresentation: $0) })
        } catch {
            throw CoreError(.badKey, object: "host signing key", "not an Ed25519 private key")
        }
    }

    public func export() -> SecretBytes { SecretBytes(copying: key.rawRepresentation) }

    func signature(for message: [UInt8]) throws(CoreError) -> [UInt8] {
        do { return Array(try key.signature(for: message)) } catch {
            throw CoreError(.badKey, object: "host signing key", "signing failed: \(error)")
        }
    }
    public var description: String { "HostSigningKey(\(publicKey), redacted)" }
}

/// Everything a tenant has: the read key pair, the chunk-ID key and the chunker seed.
///
/// Created once per tenant by the admin. The read private key is wrapped by a key
/// provider before it is stored anywhere; the rest goes to hosts as a ``WriteKeySet``.
public struct TenantKeys: Sendable {
    public let readKey: ReadPrivateKey
    public let chunkIDKey: ChunkIDKey
    public let chunkerSeed: ChunkerSeed

    public init(readKey: ReadPrivateKey, chunkIDKey: ChunkIDKey, chunkerSeed: ChunkerSeed) {
        self.readKey = readKey
        self.chunkIDKey = chunkIDKey
        self.chunkerSeed = chunkerSeed
    }

    public static func generate() throws(CoreError) -> TenantKeys {
        TenantKeys(readKey: try .generate(), chunkIDKey: .generate(), chunkerSeed: .generate())
    }

    /// The material a host needs to back up: nothing in it decrypts.
    public var sharedWriteMaterial: SharedWriteMaterial {
        SharedWriteMaterial(readPublicKey: readKey.publicKey, chunkIDKey: chunkIDKey, chunkerSeed: chunkerSeed)
    }
}

/// The tenant-wide part of a write key set: the read public key, the chunk-ID key and
/// the chunker seed. Enough to back up and deduplicate; never enough to decrypt.
public struct SharedWriteMaterial: Sendable {
    public let readPublicKey: ReadPublicKey
    public let chunkIDKey: ChunkIDKey
    public let chunkerSeed: ChunkerSeed

    public init(readPublicKey: ReadPublicKey, chunkIDKey: ChunkIDKey, chunkerSeed: ChunkerSeed) {
        self.readPublicKey = readPublicKey
        self.chunkIDKey = chunkIDKey
        self.chunkerSeed = chunkerSeed
    }

    static let magic = Array("RDBTWKS1".utf8)

    /// Serialises the material (secrets included) for transfer to an enrolling host.
    public func encode() -> SecretBytes {
        var w = ByteWriter(capacity: 1400)
        w.raw(Self.magic)
        w.lengthPrefixed(readPublicKey.rawRepresentation)
        chunkIDKey.export().withUnsafeBytes { w.lengthPrefixed($0) }
        chunkerSeed.secret.withUnsafeBytes { w.lengthPrefixed($0) }
        let out = SecretBytes(copying: w.bytes)
        return out
    }

    /// Parses ``encode()``'s output.
    public static func decode(_ bytes: SecretBytes) throws(CoreError) -> SharedWriteMaterial {
        let object = "write key set"
        do {
            var r = bytes.withUnsafeBytes { ByteReader(Array($0)) }
            guard try r.raw(8) == magic else {
                throw CoreError(.corrupt, object: object, "bad magic: not a Redoubt write key set")
            }
            let pub = try ReadPublicKey(rawRepresentation: try r.lengthPrefixed(limit: 4096))
            let cid = try ChunkIDKey(secret: SecretBytes(copying: try r.lengthPrefixed(limit: 64)))
            let seed = try ChunkerSeed(secret: SecretBytes(copying: try r.lengthPrefixed(limit: 64)))
            guard r.isAtEnd else { throw CoreError(.corrupt, object: object, "trailing bytes") }
            return SharedWriteMaterial(readPublicKey: pub, chunkIDKey: cid, chunkerSeed: seed)
        } catch let e as CoreError {
            throw e
        } catch let e as ByteReader.Failure {
            throw e.corrupt(object, "malformed")
        } catch {
            throw CoreError(.corrupt, object: object, "\(error)")
        }
    }
}

extension SharedWriteMaterial {
    static let sealedMagic = Array("RDBTSWM1".utf8)

    /// A public fingerprint of the material (hex SHA-256 of a label and the encoding), kept
    /// beside the sealed copy so that a server can tell the tenant's real material from
    /// other material naming the same read key, without being able to open the seal. It
    /// reveals nothing: the material holds two random 256-bit secrets.
    public var check: String {
        encode().withUnsafeBytes { m in
            var h = SHA256()
            h.update(data: Label.writeMaterialCheck)
            h.update(bufferPointer: m)
            return hexString(h.finalize())
        }
    }

    /// The material sealed to its own read public key (docs/FORMAT.md §7.3), as tenant
    /// descriptors in the store, bucket copies and media carry it: whoever holds only a copy
    /// learns nothing from it (the chunk-ID key would let them confirm guessed content),
    /// while whoever holds the read key can recover it.
    public func sealed(tenant: String) throws(CoreError) -> [UInt8] {
        var w = ByteWriter(capacity: 3000)
        w.raw(Self.sealedMagic)
        do {
            var sender = try HPKE.Sender(recipientKey: readPublicKey.key, ciphersuite: readKeyCiphersuite,
                                         info: Data(Label.writeMaterialHPKE + readPublicKey.keyID.bytes))
            let box = try encode().withUnsafeBytes { try sender.seal($0, authenticating: Self.sealedAAD(tenant)) }
            w.lengthPrefixed(Array(sender.encapsulatedKey))
            w.lengthPrefixed(Array(box))
        } catch {
            throw CoreError(.badKey, object: "write material of tenant \(tenant)",
                "cannot seal it to read key \(readPublicKey.keyID): \(error)")
        }
        return w.bytes
    }

    /// Opens ``sealed(tenant:)``'s output with the read key; the material inside must name
    /// that read key.
    public static func open(sealed bytes: [UInt8], tenant: String,
        readKey: ReadPrivateKey) throws(CoreError) -> SharedWriteMaterial {
        let object = "sealed write material of tenant \(tenant)"
        var r = ByteReader(bytes)
        let enc: [UInt8], box: [UInt8]
        do {
            guard try r.raw(8) == sealedMagic else { throw CoreError(.corrupt, object: object, "bad magic") }
            enc = try r.lengthPrefixed(limit: 4096)
            box = try r.lengthPrefixed(limit: 8192)
            guard r.isAtEnd else { throw CoreError(.corrupt, object: object, "trailing bytes") }
        } catch let e as CoreError { throw e } catch let e as ByteReader.Failure { throw e.corrupt(object,
            "malformed") } catch {
            throw CoreError(.corrupt, object: object, "\(error)")
        }
        var plain: Data
        do {
            var recipient = try HPKE.Recipient(privateKey: readKey.key, ciphersuite: readKeyCiphersuite,
                                               info: Data(Label.writeMaterialHPKE + readKey.publicKey.keyID.bytes),
                                                   encapsulatedKey: Data(enc))
            plain = try recipient.open(box, authenticating: sealedAAD(tenant))
        } catch {
            throw CoreError(.authenticationFailed, object: object,
                "does not open with read key \(readKey.publicKey.keyID): modified, or sealed for another tenant or key")
        }
        defer { plain.resetBytes(in: plain.startIndex..<plain.endIndex) }
        let material = try decode(SecretBytes(copying: Array(plain)))
        guard material.readPublicKey == readKey.publicKey else {
            throw CoreError(.wrongTenant, object: object,
                "names read key \(material.readPublicKey.keyID), not \(readKey.publicKey.keyID)")
        }
        return material
    }

    static func sealedAAD(_ tenant: String) -> Data {
        var w = ByteWriter(capacity: 64)
        w.raw(Label.writeMaterialAAD)
        w.lengthPrefixed(Array(tenant.utf8))
        return Data(w.bytes)
    }
}

/// What a host holds: the tenant's shared write material plus its own signing key and
/// names. Backs up, deduplicates and signs; decrypts nothing, not even its own backups.
public struct WriteKeySet: Sendable, CustomStringConvertible {
    public let tenant: String
    public let host: String
    public let shared: SharedWriteMaterial
    public let signingKey: HostSigningKey

    public init(tenant: String, host: String, shared: SharedWriteMaterial, signingKey: HostSigningKey) {
        self.tenant = tenant
        self.host = host
        self.shared = shared
        self.signingKey = signingKey
    }

    public var description: String {
        "WriteKeySet(tenant: \(tenant), host: \(host), read key \(shared.readPublicKey.keyID))"
    }
}

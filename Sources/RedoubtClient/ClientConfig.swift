import Crypto
import Foundation
import RedoubtCore
import RedoubtKMS

/// A client's configuration directory (default `~/.config/redoubt`, or `REDOUBT_CONFIG`):
///
/// ```
/// DIR/                     0700
///   credential.json        server URL, CA, client certificate and TLS key (0600)
///   write-material.bin     the tenant's write material: read public key, chunk-ID key, chunker seed (0600)
///   host-signing.key       a writer's Ed25519 manifest-signing key (0600)
///   read-key.json          a restorer's *wrapped* read key (0600); unwrapped only in memory
///   key-check.json         SHA-256 of write-material.bin and host-signing.key, to find a damaged
///                          copy before a backup uploads anything (hashes of random keys reveal nothing)
///   caches/                one metadata cache per job or set of paths (ClientConfig+Caches.swift)
/// ```
/// Nothing in it decrypts a backup: a writer's directory has no read key at all, and a
/// restorer's has it only wrapped by its key provider.
public struct ClientConfig: Sendable {
    public let directory: URL

    public init(path: String?) {
        if let path, !path.isEmpty {
            directory = URL(fileURLWithPath: path)
        } else if let env = ProcessInfo.processInfo.environment["REDOUBT_CONFIG"], !env.isEmpty {
            directory = URL(fileURLWithPath: env)
        } else {
            directory = FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".config/redoubt")
        }
    }

    var credentialURL: URL { directory.appendingPathComponent("credential.json") }
    var materialURL: URL { directory.appendingPathComponent("write-material.bin") }
    var signingKeyURL: URL { directory.appendingPathComponent("host-signing.key") }
    var readKeyURL: URL { directory.appendingPathComponent("read-key.json") }
    var keyCheckURL: URL { directory.appendingPathComponent("key-check.json") }
    public var cachePath: String { directory.appendingPathComponent("cache").path }

    public func credential() throws -> ClientCredential {
        guard let d = FileManager.default.contents(atPath: credentialURL.path) else {
            throw APIError(status: 0, code: "E_NOT_ENROLLED",
                message: """
                    no credential in \(directory.path): run `redoubt enroll TOKEN --config \(directory.path)` first
                    """)
        }
        do { return try JSONDecoder().decode(ClientCredential.self, from: d) } catch {
            throw APIError(status: 0, code: "E_CREDENTIAL",
                message: "\(credentialURL.path) is not a Redoubt credential (\(error)): "
                           + """
                               restore it from a copy of this directory, or re-enroll (`redoubt enroll TOKEN --config \
                               DIR`)
                               """)
        }
    }

    public func sharedMaterial() throws -> SharedWriteMaterial {
        guard let d = FileManager.default.contents(atPath: materialURL.path) else {
            throw APIError(status: 0, code: "E_NOT_ENROLLED",
                message: "no write material in \(directory.path): enroll this host first")
        }
        do { return try SharedWriteMaterial.decode(SecretBytes(copying: d)) } catch {
            throw damagedKeyFile(materialURL, "\(error)")
        }
    }

    /// A local key file that cannot be used: named with the fix, exit 2 (not 5, which
    /// means the repository's stored bytes are damaged).
    func damagedKeyFile(_ url: URL, _ why: String) -> APIError {
        APIError(status: 0, code: "E_CREDENTIAL",
            message: "\(url.path) is damaged (\(why)); nothing was uploaded: restore it from a copy "
                 + """
                     of \(directory.path), or re-enroll this host (a new token from `redoubt admin host add`, then \
                     `redoubt enroll`)
                     """)
    }

    /// The recorded SHA-256 of the two key files, if this directory has a record.
    struct KeyCheck: Codable {
        var writeMaterialSHA256: String
        var signingKeySHA256: String
    }

    /// Records the key files' hashes: at enrollment, or after a backup the server accepted
    /// (so the files were good) in a directory enrolled before the record existed.
    public func recordKeyCheck() throws {
        guard let m = FileManager.default.contents(atPath: materialURL.path),
              let k = FileManager.default.contents(atPath: signingKeyURL.path) else { return }
        let check = KeyCheck(writeMaterialSHA256: hexString(SHA256.hash(data: m)),
            signingKeySHA256: hexString(SHA256.hash(data: k)))
        try writePrivate(keyCheckURL, Array(try JSONEncoder().encode(check)))
    }

    /// Whether this directory records its key files' hashes yet.
    public var hasKeyCheck: Bool { FileManager.default.fileExists(atPath: keyCheckURL.path) }

    /// Compares a key file with its recorded hash; a flipped bit in a key still parses.
    private func checkKeyFile(_ url: URL, _ bytes: Data, _ recorded: KeyPath<KeyCheck, String>) throws {
        guard let d = FileManager.default.contents(atPath: keyCheckURL.path) else { return }
        guard let check = try? JSONDecoder().decode(KeyCheck.self, from: d) else {
            throw APIError(status: 0, code: "E_CREDENTIAL",
                message: "\(keyCheckURL.path) is damaged: delete it (the next good backup "
                           + "writes it again) or re-enroll this host")
        }
        guard hexString(SHA256.hash(data: bytes)) == check[keyPath: recorded] else {
            throw damagedKeyFile(url, "its SHA-256 differs from the one recorded in \(keyCheckURL.lastPathComponent)")
        }
    }

    /// A writer's keys: everything to back up, nothing to decrypt.
    public func writeKeySet() throws -> WriteKeySet {
        let cred = try credential()
        guard cred.role == "writer", let tenant = cred.tenant else {
            throw APIError(status: 0, code: "E_ROLE",
                message: "\(directory.path) holds a \(cred.role) credential; backups need a host (writer) enrollment")
        }
        guard let k = FileManager.default.contents(atPath: signingKeyURL.path) else {
            throw APIError(status: 0, code: "E_CREDENTIAL",
                message: "\(signingKeyURL.path) is missing: re-enroll this host")
        }
        guard let m = FileManager.default.contents(atPath: materialURL.path) else {
            throw APIError(status: 0, code: "E_NOT_ENROLLED",
                message: "no write material in \(directory.path): enroll this host first")
        }
        try checkKeyFile(materialURL, m, \.writeMaterialSHA256)
        try checkKeyFile(signingKeyURL, k, \.signingKeySHA256)
        let signing: HostSigningKey
        do { signing = try HostSigningKey(secret: SecretBytes(copying: k)) } catch {
            throw damagedKeyFile(signingKeyURL, "\(error)")
        }
        return WriteKeySet(tenant: tenant, host: cred.name, shared: try sharedMaterial(), signingKey: signing)
    }

    public func wrappedReadKey() throws -> WrappedReadKey {
        guard let d = FileManager.default.contents(atPath: readKeyURL.path) else {
            throw APIError(status: 0, code: "E_ROLE",
                message: """
                    no wrapped read key in \(directory.path): restores need a restorer enrollment (`redoubt admin \
                    restorer add`)
                    """)
        }
        return try WrappedReadKey.decode(d)
    }

    /// Replaces the restorer's copy of the wrapped read key (after a rotation the server
    /// hands out the new one). Checked to parse before it replaces anything.
    public func storeWrappedReadKey(_ json: String) throws {
        _ = try WrappedReadKey.decode(Data(json.utf8))
        try writePrivate(readKeyURL, Array(json.utf8))
    }

    /// Enrolls with a token: makes this host's TLS key (and, for a writer, its signing
    /// key) here, sends only the public halves, and stores what the server returns.
    public static func enroll(token: String, into config: ClientConfig, os: String?) async throws -> ClientCredential {
        let tok: Wire.EnrollmentToken
        do { tok = try Wire.EnrollmentToken.decode(token) } catch {
            throw APIError(status: 0, code: "E_TOKEN",
                message: "not a Redoubt enrollment token (expected rdbt1.…, whole): "
                           + "copy it again from `redoubt admin host add`")
        }
        guard let ca = Data(base64Encoded: tok.ca), hexString(SHA256.hash(data: ca)) == tok.pin else {
            throw APIError(status: 0, code: "E_TOKEN",
                message: "the token's CA does not match its pin: the token was altered; ask for a new one")
        }
        if Date().timeIntervalSince1970 > Double(tok.expires) {
            throw APIError(status: 0, code: "E_TOKEN",
                message: "the enrollment token expired; ask an admin for a new one")
        }
        let fm = FileManager.default
        try fm.createDirectory(at: config.directory, withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700])
        if fm.fileExists(atPath: config.credentialURL.path) {
            throw APIError(status: 0, code: "E_EXISTS",
                message: "\(config.directory.path) already holds a credential; use another --config directory")
        }
        let tlsKey = P256.Signing.PrivateKey()
        let signing = tok.role == "writer" ? HostSigningKey.generate() : nil
        let client = try APIClient(url: tok.url, caDER: Array(ca))
        let resp: Wire.EnrollResponse
        do {
            resp = try await client.enroll(Wire.EnrollRequest(secret: tok.secret,
                publicKeyPEM: tlsKey.publicKey.pemRepresentation,
                                                             hostKey: signing.map { Data($0.publicKey.rawRepresentation)
                                                                 .base64EncodedString() }, os: os))
        } catch {
            await client.shutdown()
            throw error
        }
        await client.shutdown()
        let caPEM = "-----BEGIN CERTIFICATE-----\n" + ca.base64EncodedString(options: [.lineLength64Characters,
            .endLineWithLineFeed]) + "\n-----END CERTIFICATE-----\n"
        let cred = ClientCredential(url: tok.url, caPEM: caPEM, pin: tok.pin, certificatePEM: resp.certificatePEM,
            keyPEM: tlsKey.pemRepresentation,
                                    principalID: resp.principalID, role: resp.role, tenant: resp.tenant,
                                        name: resp.name)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try writePrivate(config.credentialURL, Array(try enc.encode(cred)))
        if let m = resp.writeMaterial.flatMap({ Data(base64Encoded: $0) }) {
            try writePrivate(config.materialURL, Array(m))
        }
        if let signing { try signing.export().withUnsafeBytes { try writePrivate(config.signingKeyURL, Array($0)) } }
        if let w = resp.wrappedReadKey { try writePrivate(config.readKeyURL, Array(w.utf8)) }
        try config.recordKeyCheck()
        return cred
    }
}

/// Writes a file readable by its owner only, durably.
func writePrivate(_ url: URL, _ bytes: [UInt8]) throws {
    let tmp = url.path + ".tmp"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else {
        throw APIError(status: 0, code: "E_IO",
            message: "cannot write \(url.path): \(String(cString: strerror(errno)))")
    }
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n <= 0 {
            close(fd)
            throw APIError(status: 0, code: "E_IO",
                message: "cannot write \(url.path): \(String(cString: strerror(errno)))")
        }
        off += n
    }
    fchmod(fd, 0o600)
    fsync(fd)
    close(fd)
    guard rename(tmp, url.path) == 0 else {
        throw APIError(status: 0, code: "E_IO",
            message: "cannot write \(url.path): \(String(cString: strerror(errno)))")
    }
}

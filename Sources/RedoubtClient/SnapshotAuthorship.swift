import Crypto
import Foundation
import RedoubtCore
import X509

extension ClientConfig {
    /// The public key of the server CA this client pinned at enrollment (`credential.json`):
    /// the trust root of host key statements (docs/FORMAT.md §6.4). Whoever can write a
    /// bucket copy or a media set does not hold its private half.
    public func trustRoot() throws -> P256.Signing.PublicKey {
        let cred = try credential()
        let cert: Certificate
        do { cert = try Certificate(pemEncoded: cred.caPEM) } catch {
            throw APIError(status: 0, code: "E_CONFIG",
                           message: "\(directory.path)/credential.json holds no readable CA certificate (\(error)): "
                               + "re-enroll")
        }
        guard let key = P256.Signing.PublicKey(cert.publicKey) else {
            throw APIError(status: 0, code: "E_CONFIG",
                           message: "the CA pinned in \(directory.path)/credential.json has no P-256 key: re-enroll")
        }
        return key
    }

    /// Checks that `manifest` was written by a host the pinned CA registered for this
    /// tenant, with a key not revoked before it (`HostKeyRegistry.check`), given the host
    /// key statements of the copy it came from (`objects`, by name). Throws `E_SIGNATURE`
    /// naming the snapshot otherwise.
    public func checkAuthorship(_ manifest: Manifest, tenant: String,
                                statements objects: [(name: String, bytes: [UInt8])]) throws {
        let registry = HostKeyRegistry(tenant: tenant, trustRoot: try trustRoot(), objects: objects)
        try registry.check(manifest, readKeyID: try sharedMaterial().readPublicKey.keyID)
    }
}

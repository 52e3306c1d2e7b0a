import Crypto
import Foundation
import SwiftASN1
import X509

/// The server's private certificate authority: it signs the server's TLS certificate
/// and one client certificate per principal (host, restorer, auditor, admin). A client
/// certificate's subject CN is the principal's ID; the catalog maps its fingerprint to
/// a role and tenant.
public struct CertificateAuthority: Sendable {
    public let certificate: Certificate
    let key: P256.Signing.PrivateKey

    /// A fresh CA valid for 20 years.
    public static func create(name: String, now: Date) throws -> CertificateAuthority {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName { CommonName("Redoubt CA \(name)") }
        let cert = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(20 * 365 * 86400),
            issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: .init(key.publicKey))
            },
            issuerPrivateKey: .init(key))
        return CertificateAuthority(certificate: cert, key: key)
    }

    /// Loads a CA from PEM files' contents.
    public init(certificatePEM: String, keyPEM: String) throws {
        certificate = try Certificate(pemEncoded: certificatePEM)
        key = try P256.Signing.PrivateKey(pemRepresentation: keyPEM)
    }

    init(certificate: Certificate, key: P256.Signing.PrivateKey) {
        self.certificate = certificate
        self.key = key
    }

    public var certificatePEM: String { get throws { try certificate.serializeAsPEM().pemString } }
    public var keyPEM: String { key.pemRepresentation }

    /// SHA-256 of the CA certificate's DER, hex: the pin enrollment tokens carry.
    public var pin: String { get throws { try Self.pin(of: certificate) } }

    public static func pin(of cert: Certificate) throws -> String {
        var s = DER.Serializer()
        try s.serialize(cert)
        return SHA256.hash(data: s.serializedBytes).map { String(format: "%02x", $0) }.joined()
    }

    /// The server's TLS certificate for `hosts` (DNS names or IP literals).
    public func issueServer(publicKey: P256.Signing.PublicKey, hosts: [String], now: Date) throws -> Certificate {
        var names: [GeneralName] = []
        for h in hosts {
            if let ip = ipBytes(h) { names.append(.ipAddress(ASN1OctetString(contentBytes: ip[...]))) } else {
                names.append(.dnsName(h))
            }
        }
        return try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(publicKey),
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(5 * 365 * 86400),
            issuer: certificate.subject, subject: try DistinguishedName { CommonName("redoubt-server") },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(names)
            },
            issuerPrivateKey: .init(key))
    }

    /// A client certificate for a principal whose private key stays on its host.
    public func issueClient(publicKey: Certificate.PublicKey, principalID: String, now: Date,
        validDays: Int = 3650) throws -> Certificate {
        try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-300),
                notValidAfter: now.addingTimeInterval(Double(validDays) * 86400),
            issuer: certificate.subject, subject: try DistinguishedName { CommonName(principalID) },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.clientAuth])
            },
            issuerPrivateKey: .init(key))
    }
}

/// SHA-256 of a certificate's DER, hex: how the catalog names a client credential.
public func certificateFingerprint(der: [UInt8]) -> String {
    SHA256.hash(data: der).map { String(format: "%02x", $0) }.joined()
}

func ipBytes(_ s: String) -> [UInt8]? {
    var v4 = in_addr()
    if inet_pton(AF_INET, s, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, s, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
    return nil
}

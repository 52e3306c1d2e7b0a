import Foundation
import RedoubtCore
import Testing

@testable import RedoubtKMS

/// The one list of key providers: each scheme parses without I/O, an unknown one is refused
/// with the known ones named, and what is recorded of a URI never holds a secret.
@Suite struct KeyProviderRegistryTests {
    let kmip = "kmip://kms.example:5696/kek-1?ca=/etc/r/ca.pem&cert=/etc/r/c.pem&key=/etc/r/k.pem"
    let aws = "awskms://eu-west-1/1234abcd-12ab-34cd-56ef-1234567890ab?endpoint=https://kms.eu-west-1.amazonaws.com"
    let pkcs11 =
        "pkcs11:token=redoubt;object=kek-acme?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/etc/r/pin"

    @Test func everySchemeParsesToItsOwnKindWithoutIO() throws {
        #expect(try KeyProviderRegistry.scheme(of: "passphrase:").prefix == "passphrase:")
        #expect(try KeyProviderRegistry.scheme(of: "passphrase").prefix == "passphrase:")
        #expect(try KeyProviderRegistry.scheme(of: kmip).prefix == "kmip://")
        #expect(try KeyProviderRegistry.scheme(of: aws).prefix == "awskms://")
        #expect(try KeyProviderRegistry.scheme(of: pkcs11).prefix == "pkcs11:")
        #expect(KeyProviderRegistry.schemes.map(\.prefix) == ["passphrase:", "kmip://", "awskms://", "pkcs11:"])
        // Made without contacting anything: the hosts and module named do not exist here.
        let noPassphrase: () throws -> SecretBytes = {
            throw KeyProviderError.secretMissing(provider: "passphrase:", how: "test")
        }
        #expect(try KeyProviderRegistry.make(uri: kmip, passphrase: noPassphrase) is KMIPKeyProvider)
        #expect(try KeyProviderRegistry.make(uri: aws, passphrase: noPassphrase) is AWSKMSKeyProvider)
        #expect(try KeyProviderRegistry.make(uri: pkcs11, passphrase: noPassphrase) is PKCS11KeyProvider)
        #expect(throws: KeyProviderError.self) {
            _ = try KeyProviderRegistry.make(uri: "passphrase:", passphrase: noPassphrase)
        }
        #expect(try KeyProviderRegistry.secretFreeURI(kmip) == kmip)
        #expect(try KeyProviderRegistry.secretFreeURI(aws) == aws)
        #expect(try KeyProviderRegistry.secretFreeURI("passphrase") == "passphrase:")
    }

    @Test func anUnknownSchemeIsRefusedNamingTheKnownOnes() {
        for uri in [
            "vault://kv/redoubt", "file:///etc/key", "", "KMIP://kms.example:5696/k?ca=a&cert=b&key=c",
            "pkcs12:token=t",
        ] {
            do {
                _ = try KeyProviderRegistry.secretFreeURI(uri)
                Issue.record("\(uri.debugDescription) was accepted")
            } catch {
                let text = "\(error)"
                #expect(error.code == "E_KEY_PROVIDER", "\(text)")
                for known in ["passphrase:", "kmip://", "awskms://", "pkcs11:"] {
                    #expect(text.contains(known), "\(text)")
                }
            }
        }
    }

    @Test func theSecretFreeURINeverHoldsAPINPasswordOrKey() throws {
        // Secrets an admin might paste into a URI: refused, or dropped, never recorded or echoed.
        let attempts = [
            "passphrase:correct-horse-battery-staple",
            "kmip://kms.example:5696/kek-1?ca=/a&cert=/b&key=/c&password=correct-horse-battery-staple",
            "kmip://admin:correct-horse-battery-staple@kms.example:5696/kek-1?ca=/a&cert=/b&key=/c",
            "awskms://eu-west-1/k1?endpoint=https://AKIAEXAMPLE:correct-horse-battery-staple@kms.example",
            "awskms://eu-west-1/k1?endpoint=https://kms.example&aws_secret_access_key=correct-horse-battery-staple",
            "pkcs11:token=t;object=k?module-path=/m.so&pin-value=correct-horse-battery-staple",
            "pkcs11:token=t;object=k;pin-value=correct-horse-battery-staple?module-path=/m.so",
        ]
        for uri in attempts {
            do {
                let recorded = try KeyProviderRegistry.secretFreeURI(uri)
                #expect(
                    !recorded.contains("correct-horse") && !recorded.contains("AKIAEXAMPLE"),
                    "\(uri) recorded as \(recorded)")
            } catch {
                #expect(!"\(error)".contains("correct-horse"), "\(uri): \(error)")
            }
        }
        #expect(!(try KeyProviderRegistry.secretFreeURI(pkcs11)).contains("pin-value"))
    }
}

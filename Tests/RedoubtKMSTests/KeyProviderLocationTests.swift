import Testing
import RedoubtKMS

/// What a restorer compares before it sends credentials to a key provider the server names.
@Suite struct KeyProviderLocationTests {
    @Test func theKeyIDIsNotPartOfTheLocationButEverythingThatDecidesWhereItGoesIs() {
        let a = "kmip://kms.example:5696/abc?ca=/etc/r/ca.pem&cert=/etc/r/c.pem&key=/etc/r/k.pem"
        #expect(keyProviderLocation(a) == keyProviderLocation("""
            kmip://kms.example:5696/def?key=/etc/r/k.pem&ca=/etc/r/ca.pem&cert=/etc/r/c.pem
            """))
        #expect(keyProviderLocation(a) != keyProviderLocation("""
            kmip://evil.example:5696/abc?ca=/etc/r/ca.pem&cert=/etc/r/c.pem&key=/etc/r/k.pem
            """))
        #expect(keyProviderLocation(a) != keyProviderLocation("""
            kmip://kms.example:5697/abc?ca=/etc/r/ca.pem&cert=/etc/r/c.pem&key=/etc/r/k.pem
            """))
        #expect(keyProviderLocation(a) != keyProviderLocation("""
            kmip://kms.example:5696/abc?ca=/tmp/ca.pem&cert=/etc/r/c.pem&key=/etc/r/k.pem
            """))
        #expect(keyProviderLocation("awskms://eu-west-1/k1?endpoint=https://kms.eu-west-1.amazonaws.com")
            == keyProviderLocation("awskms://eu-west-1/k2?endpoint=https://kms.eu-west-1.amazonaws.com"))
        #expect(keyProviderLocation("awskms://eu-west-1/k1") != keyProviderLocation("""
            awskms://eu-west-1/k1?endpoint=http://127.0.0.1:9
            """))
        #expect(keyProviderLocation("awskms://eu-west-1/k1") != keyProviderLocation("awskms://us-east-1/k1"))
        #expect(keyProviderLocation("pkcs11:token=t;object=a?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/p")
            == keyProviderLocation("""
                pkcs11:token=t;object=b;id=%01?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/p
                """))
        // A PIN read from a file the server chose would lock the token after a few tries.
        #expect(keyProviderLocation("pkcs11:token=t;object=a?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/p")
            != keyProviderLocation("""
                pkcs11:token=t;object=a?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/etc/hostname
                """))
        #expect(keyProviderLocation("pkcs11:token=t;object=a?module-path=/usr/lib/softhsm/libsofthsm2.so")
            != keyProviderLocation("pkcs11:token=t;object=a?module-path=/tmp/evil.so"))
        #expect(keyProviderLocation("passphrase:") == "passphrase:")
    }

    /// A fragment is read one way by the location check and another by the provider's own
    /// parser: such a URI matches no enrolled location and no provider accepts it.
    @Test func aFragmentCannotSmuggleAnEndpointPastTheCheck() throws {
        let forged = "awskms://us-east-1/k#?endpoint=https://evil.example"
        #expect(keyProviderLocation(forged) != keyProviderLocation("awskms://us-east-1/k"))
        #expect(throws: KeyProviderError.self) { _ = try AWSKMSKeyProvider(uri: forged) }
        #expect(throws: KeyProviderError.self) {
            _ = try KMIPKeyProvider(uri: "kmip://kms.example:5696/k#?ca=/a&cert=/b&key=/c")
        }
        #expect(!isWellFormedProviderURI("awskms://us-east-1/k\u{1}"))
        #expect(isWellFormedProviderURI("awskms://eu-west-1/k1?endpoint=https://kms.eu-west-1.amazonaws.com"))
    }
}

import Testing
import RedoubtKMS

/// What a restorer compares before it sends credentials to a key provider the server names.
@Suite struct KeyProviderLocationTests {
    @Test func theKeyIDIsNotPartOfTheLocationButEverythingThatDecidesWhereItGoesIs() {
        let a = "kmip://kms.example:5696/abc?ca=/etc/r/ca.pem&cert=/etc/r/c.pem&key=/etc/r/k.pem"
        #expect(keyProviderLocation(a) == keyProviderLocation("kmip://kms.example:5696/def?key=/etc/r/k.pem&ca=/etc/r/ca.pem&cert=/etc/r/c.pem"))
        #expect(keyProviderLocation(a) != keyProviderLocation("kmip://evil.example:5696/abc?ca=/etc/r/ca.pem&cert=/etc/r/c.pem&key=/etc/r/k.pem"))
        #expect(keyProviderLocation(a) != keyProviderLocation("kmip://kms.example:5697/abc?ca=/etc/r/ca.pem&cert=/etc/r/c.pem&key=/etc/r/k.pem"))
        #expect(keyProviderLocation(a) != keyProviderLocation("kmip://kms.example:5696/abc?ca=/tmp/ca.pem&cert=/etc/r/c.pem&key=/etc/r/k.pem"))
        #expect(keyProviderLocation("awskms://eu-west-1/k1?endpoint=https://kms.eu-west-1.amazonaws.com")
            == keyProviderLocation("awskms://eu-west-1/k2?endpoint=https://kms.eu-west-1.amazonaws.com"))
        #expect(keyProviderLocation("awskms://eu-west-1/k1") != keyProviderLocation("awskms://eu-west-1/k1?endpoint=http://127.0.0.1:9"))
        #expect(keyProviderLocation("awskms://eu-west-1/k1") != keyProviderLocation("awskms://us-east-1/k1"))
        #expect(keyProviderLocation("pkcs11:token=t;object=a?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/p")
            == keyProviderLocation("pkcs11:token=t;object=b;id=%01?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/q"))
        #expect(keyProviderLocation("pkcs11:token=t;object=a?module-path=/usr/lib/softhsm/libsofthsm2.so")
            != keyProviderLocation("pkcs11:token=t;object=a?module-path=/tmp/evil.so"))
        #expect(keyProviderLocation("passphrase:") == "passphrase:")
    }
}

import Foundation
import RedoubtAWS
import RedoubtCore
import Testing

@testable import RedoubtKMS

/// Against LocalStack's KMS, which refuses disabled and pending-deletion keys as AWS does.
///
/// LocalStack checks no signatures, so a rejected credential (AccessDenied,
/// UnrecognizedClient, InvalidSignature) cannot be produced here; that mapping is covered
/// only by `classifiesKMSErrorTypes`, which feeds the error bodies AWS documents, and the
/// signature itself by `signsTheJSONRequestAsAWSExpects`. Nothing here fakes a KMS.
@Suite(.serialized) struct AWSKMSKeyProviderTests {
    /// Test credentials passed explicitly: suites run in parallel and must not setenv.
    static let secret = "redoubt-test-secret-\(UUID().uuidString)"
    static let credentials = AWSCredentials(accessKeyID: "AKIAREDOUBTTEST", secretAccessKey: secret)

    func provider(_ keyID: String = "new", region: String = "us-east-1") throws -> AWSKMSKeyProvider? {
        guard let address = peer("REDOUBT_TEST_LOCALSTACK") else { return nil }
        return try AWSKMSKeyProvider(uri: "awskms://\(region)/\(keyID)?endpoint=\(address)",
            credentials: Self.credentials)
    }

    /// A fresh KEK for `tenant`, as `awskms://…/new` makes at tenant creation.
    func newKEK(_ tenant: String = "acme") async throws -> AWSKMSKeyProvider? {
        guard let p = try provider() else { return nil }
        return try #require(try await p.preparingKEK(tenant: tenant) as? AWSKMSKeyProvider)
    }

    @Test func wrapsAndUnwrapsUnderANewKEKBoundToTheTenant() async throws {
        guard let kek = try await newKEK() else { return }
        #expect(kek.keyID != "new" && !kek.keyID.isEmpty)
        // The URI names the new key, round-trips, and carries no secret.
        #expect(!kek.uri.contains(Self.secret))
        let reparsed = try AWSKMSKeyProvider(uri: kek.uri, credentials: Self.credentials)
        #expect(reparsed.keyID == kek.keyID && reparsed.region == "us-east-1"
            && reparsed.endpointOverride == kek.endpointOverride)

        let readKey = try ReadPrivateKey.generate()
        let v1 = KeyContext(tenant: "acme", keyVersion: 1)
        let wrapped = try await kek.wrap(readKey, context: v1)
        #expect(wrapped.provider == kek.uri)
        #expect(wrapped.parameters["awskms-key-id"]?.hasSuffix(kek.keyID) == true)
        #expect(wrapped.parameters["awskms-region"] == "us-east-1")
        let seed = readKey.exportSeed().withUnsafeBytes { Array($0) }
        let sealed = try wrapped.wrappedBytes()
        #expect(sealed.count > 32)
        #expect(Data(sealed).range(of: Data(seed)) == nil)
        #expect(!String(decoding: try wrapped.encoded(), as: UTF8.self).contains(Self.secret))
        #expect(try await reparsed.unwrap(wrapped, context: v1).publicKey == readKey.publicKey)

        // Asking for another tenant's context is refused before the KMS is asked.
        let asked = await #expect(throws: KeyProviderError.self) {
            try await kek.unwrap(wrapped, context: KeyContext(tenant: "other", keyVersion: 1))
        }
        #expect(asked?.code == "E_KEY_WRONG_CONTEXT")
        // An attacker who also rewrites the context in the file: the KMS's encryption
        // context no longer matches, and the KMS itself refuses.
        var forged = wrapped
        forged.context = KeyContext(tenant: "other", keyVersion: 1)
        let refused = await #expect(throws: KeyProviderError.self) {
            try await kek.unwrap(forged, context: forged.context)
        }
        #expect(refused?.code == "E_KEY_WRONG_SECRET")
        forged.context = KeyContext(tenant: "acme", keyVersion: 2)
        let version = await #expect(throws: KeyProviderError.self) {
            try await kek.unwrap(forged, context: forged.context)
        }
        #expect(version?.code == "E_KEY_WRONG_SECRET")
    }

    @Test func tamperedWrappedBytesAreRefusedAndNamedAsAltered() async throws {
        guard let kek = try await newKEK() else { return }
        let readKey = try ReadPrivateKey.generate()
        let context = KeyContext(tenant: "acme", keyVersion: 1)
        let wrapped = try await kek.wrap(readKey, context: context)
        var bytes = try wrapped.wrappedBytes()
        bytes[bytes.count - 5] ^= 0x01
        var tampered = wrapped
        tampered.wrapped = Data(bytes).base64EncodedString()
        let error = await #expect(throws: KeyProviderError.self) { try await kek.unwrap(tampered, context: context) }
        #expect(error?.code == "E_KEY_WRONG_SECRET")
        #expect(error.map { "\($0)" }?.contains("awskms://") == true)
        #expect(error.map { "\($0)" }?.contains("altered") == true)
        #expect(error.map { "\($0)" }?.contains(Self.secret) == false)

        // Pointing the wrapped key at another KEK does not open it either.
        guard let other = try await newKEK() else { return }
        var moved = wrapped
        moved.parameters["awskms-key-id"] = other.keyID
        let movedError = await #expect(throws: KeyProviderError.self) { try await kek.unwrap(moved, context: context) }
        #expect(movedError?.code == "E_KEY_WRONG_SECRET")
    }

    @Test func aDisabledKEKStopsRestoresButNotBackupsUntilEnabled() async throws {
        guard let kek = try await newKEK() else { return }
        let readKey = try ReadPrivateKey.generate()
        let context = KeyContext(tenant: "acme", keyVersion: 1)
        let wrapped = try await kek.wrap(readKey, context: context)
        _ = try await kek.call("DisableKey", ["KeyId": kek.keyID], key: kek.keyID)

        let error = await #expect(throws: KeyProviderError.self) { try await kek.unwrap(wrapped, context: context) }
        #expect(error?.code == "E_KEY_DISABLED")
        #expect(error.map { "\($0)" }?.contains(kek.keyID) == true)
        // Backups need only the public half, which the wrapped key carries in the clear.
        #expect(try wrapped.readPublicKey() == readKey.publicKey)
        let wrapError = await #expect(throws: KeyProviderError.self) { try await kek.wrap(readKey, context: context) }
        #expect(wrapError?.code == "E_KEY_DISABLED")

        _ = try await kek.call("EnableKey", ["KeyId": kek.keyID], key: kek.keyID)
        #expect(try await kek.unwrap(wrapped, context: context).publicKey == readKey.publicKey)
    }

    @Test func destroyKEKSchedulesDeletionAndASecondDestroyIsDone() async throws {
        guard let kek = try await newKEK() else { return }
        let readKey = try ReadPrivateKey.generate()
        let context = KeyContext(tenant: "acme", keyVersion: 1)
        let wrapped = try await kek.wrap(readKey, context: context)
        try await kek.destroyKEK(of: wrapped)
        let error = await #expect(throws: KeyProviderError.self) { try await kek.unwrap(wrapped, context: context) }
        #expect(error?.code == "E_KEY_DESTROYED")
        #expect(error.map { "\($0)" }?.contains("pending deletion") == true)
        try await kek.destroyKEK(of: wrapped)
        let wrapError = await #expect(throws: KeyProviderError.self) { try await kek.wrap(readKey, context: context) }
        #expect(wrapError?.code == "E_KEY_DESTROYED")
    }

    /// Shred checks each KEK's `redoubt-tenant` tag at the KMS before destroying it.
    @Test func aKEKShowsItsTenantByTagAtTheKMS() async throws {
        guard let kek = try await newKEK("acme"), let other = try await newKEK("acme-b") else { return }
        let wrapped = try await kek.wrap(try ReadPrivateKey.generate(), context: KeyContext(tenant: "acme",
            keyVersion: 1))
        try await kek.checkKEKOwner(of: wrapped, tenant: "acme")
        let wrongTenant = await #expect(throws: KeyProviderError.self) {
            try await kek.checkKEKOwner(of: wrapped, tenant: "acme-b")
        }
        #expect(wrongTenant?.code == "E_KEY_FOREIGN_KEK")
        // The server names another tenant's KEK in this tenant's stub.
        var pointed = wrapped
        pointed.parameters["awskms-key-id"] = other.keyID
        let foreign = await #expect(throws: KeyProviderError.self) {
            try await kek.checkKEKOwner(of: pointed, tenant: "acme")
        }
        #expect(foreign?.code == "E_KEY_FOREIGN_KEK")
        #expect(foreign.map { "\($0)" }?.contains("redoubt-tenant=acme-b") == true)
        // A key made outside Redoubt carries no tag: not destroyed on the server's word.
        let created = try await kek.call("CreateKey", ["KeySpec": "SYMMETRIC_DEFAULT", "KeyUsage": "ENCRYPT_DECRYPT"],
            key: nil)
        let untagged = try #require((created["KeyMetadata"] as? [String: Any])?["KeyId"] as? String)
        pointed.parameters["awskms-key-id"] = untagged
        let bare = await #expect(throws: KeyProviderError.self) {
            try await kek.checkKEKOwner(of: pointed, tenant: "acme")
        }
        #expect(bare?.code == "E_KEY_FOREIGN_KEK")
        #expect(bare.map { "\($0)" }?.contains("aws kms tag-resource") == true)
        // Pending deletion: nothing left to destroy, so nothing to check.
        try await kek.destroyKEK(of: wrapped)
        try await kek.checkKEKOwner(of: wrapped, tenant: "acme")
        for id in [other.keyID, untagged] {
            _ = try await kek.call("ScheduleKeyDeletion", ["KeyId": id, "PendingWindowInDays": 7], key: id)
        }
    }

    @Test func aKeyTheKMSDoesNotKnowIsDestroyedAndCannotBeClaimedShredded() async throws {
        guard let kek = try await newKEK(), let ghost = try provider(UUID().uuidString.lowercased()) else { return }
        let context = KeyContext(tenant: "acme", keyVersion: 1)
        let wrapped = try await kek.wrap(try ReadPrivateKey.generate(), context: context)
        var elsewhere = wrapped
        elsewhere.parameters["awskms-key-id"] = ghost.keyID
        let error = await #expect(throws: KeyProviderError.self) { try await kek.unwrap(elsewhere, context: context) }
        #expect(error?.code == "E_KEY_DESTROYED")
        #expect(error.map { "\($0)" }?.contains("does not exist in this account and region") == true)
        // Why it is not "done": a wrong region or account must not pass for a shred.
        await #expect(throws: KeyProviderError.self) { try await kek.destroyKEK(of: elsewhere) }
        // The same key in another region is another key.
        var otherRegion = wrapped
        otherRegion.parameters["awskms-region"] = "eu-west-1"
        let regionError = await #expect(throws: KeyProviderError.self) {
            try await kek.unwrap(otherRegion, context: context)
        }
        #expect(regionError?.code == "E_KEY_DESTROYED")
    }

    @Test func aKMSThatIsNotListeningIsUnreachable() async throws {
        guard peer("REDOUBT_TEST_LOCALSTACK") != nil else { return }
        let down = try AWSKMSKeyProvider(uri: "awskms://us-east-1/new?endpoint=http://127.0.0.1:1",
            credentials: Self.credentials)
        let error = await #expect(throws: KeyProviderError.self) { try await down.preparingKEK(tenant: "acme") }
        #expect(error?.code == "E_KEY_UNREACHABLE")
        #expect(error.map { "\($0)" }?.contains("127.0.0.1:1") == true)
        #expect(error.map { "\($0)" }?.contains(Self.secret) == false)
    }

    @Test func rotationKeepsTheNewCopyWhenTheOldKEKIsDestroyed() async throws {
        guard let kek1 = try await newKEK(), let kek2 = try await newKEK() else { return }
        #expect(kek1.keyID != kek2.keyID)
        let readKey = try ReadPrivateKey.generate()
        let v1 = KeyContext(tenant: "acme", keyVersion: 1), v2 = KeyContext(tenant: "acme", keyVersion: 2)
        let old = try await kek1.wrap(readKey, context: v1)
        // The provider now names KEK2, but the old copy still names KEK1 and opens.
        let unwrapped = try await kek2.unwrap(old, context: v1)
        #expect(unwrapped.publicKey == readKey.publicKey)
        let new = try await kek2.wrap(unwrapped, context: v2)
        #expect(new.parameters["awskms-key-id"]?.hasSuffix(kek2.keyID) == true)
        try await kek2.destroyKEK(of: old)
        let gone = await #expect(throws: KeyProviderError.self) { try await kek2.unwrap(old, context: v1) }
        #expect(gone?.code == "E_KEY_DESTROYED")
        #expect(try await kek2.unwrap(new, context: v2).publicKey == readKey.publicKey)
        #expect(try await kek1.unwrap(new, context: v2).publicKey == readKey.publicKey)
    }

    @Test func refusesBadURIsAndPlainHTTPAwayFromLoopback() throws {
        let arn = "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        let byARN = try AWSKMSKeyProvider(uri: "awskms://eu-central-1/\(arn)")
        #expect(byARN.keyID == arn && byARN.region == "eu-central-1" && byARN.endpointOverride == nil)
        #expect(byARN.endpoint.absoluteString == "https://kms.eu-central-1.amazonaws.com/")
        #expect(try AWSKMSKeyProvider(uri: byARN.uri).keyID == arn)
        let byAlias =
            try AWSKMSKeyProvider(uri: "awskms://us-east-1/alias/redoubt-acme?endpoint=https://kms.example.com:8443")
        #expect(byAlias.keyID == "alias/redoubt-acme"
            && byAlias.endpoint.absoluteString == "https://kms.example.com:8443")
        #expect(try AWSKMSKeyProvider(uri: byAlias.uri).endpointOverride == byAlias.endpointOverride)
        _ = try AWSKMSKeyProvider(uri: "awskms://us-east-1/k?endpoint=http://localhost:4566")

        let plain = #expect(throws: KeyProviderError.self) {
            try AWSKMSKeyProvider(uri: "awskms://us-east-1/k?endpoint=http://kms.example.com")
        }
        #expect(plain.map { "\($0)" }?.contains("127.0.0.1 or localhost") == true)
        #expect(throws: KeyProviderError.self) { try AWSKMSKeyProvider(uri: "awskms://us-east-1") }
        #expect(throws: KeyProviderError.self) { try AWSKMSKeyProvider(uri: "awskms://us-east-1/") }
        #expect(throws: KeyProviderError.self) { try AWSKMSKeyProvider(uri: "awskms://US EAST/k") }
        #expect(throws: KeyProviderError.self) { try AWSKMSKeyProvider(uri: "awskms://evil.example.com%2F/k") }
        #expect(throws: KeyProviderError.self) { try AWSKMSKeyProvider(uri: "awskms://us-east-1/k?secret=x") }
        #expect(throws: KeyProviderError.self) {
            try AWSKMSKeyProvider(uri: "awskms://us-east-1/k?endpoint=ftp://127.0.0.1")
        }
    }

    /// LocalStack does not check signatures, so the request's signature is checked here
    /// against a vector computed independently with botocore 1.x's SigV4Auth (service
    /// `kms`, region eu-central-1, AWS's documented example key, 2026-11-27T00:00:00Z).
    @Test func signsTheJSONRequestAsAWSExpects() throws {
        let kms = try AWSKMSKeyProvider(uri: "awskms://eu-central-1/alias/redoubt")
        let credentials = AWSCredentials(accessKeyID: "AKIDEXAMPLE",
            secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
        let body = Array(#"{"KeyId":"alias/redoubt","Plaintext":"AAECAw=="}"#.utf8)
        let signed = kms.signedRequest("Encrypt", payload: body, credentials: credentials,
            at: Date(timeIntervalSince1970: 1_795_737_600))
        #expect(signed.url == "https://kms.eu-central-1.amazonaws.com/")
        let headers = Dictionary(signed.headers.map { ($0.name.lowercased(), $0.value) }, uniquingKeysWith: { $1 })
        #expect(headers["host"] == "kms.eu-central-1.amazonaws.com")
        #expect(headers["x-amz-target"] == "TrentService.Encrypt")
        #expect(headers["content-type"] == "application/x-amz-json-1.1")
        #expect(headers["x-amz-date"] == "20261127T000000Z")
        #expect(headers["x-amz-content-sha256"] == nil)
        #expect(headers["authorization"] == """
            AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/eu-central-1/kms/aws4_request, 
            """
            + """
                SignedHeaders=content-type;host;x-amz-date;x-amz-target, \
                Signature=fc2b789d896b3162f0a69d52612e6bfff18ab5aea7dbcdf5b6561152c441fe43
                """)
        #expect(!signed.headers.contains { $0.value.contains("wJalrXUtnFEMI") })
    }

    @Test func classifiesKMSErrorTypes() {
        let url = URL(string: "https://kms.us-east-1.amazonaws.com/")!
        func code(_ type: String, _ message: String = "") -> String {
            AWSKMSKeyProvider.classify(status: 400, body: ["__type": type, "message": message], operation: "Decrypt",
                key: "k", provider: "awskms://us-east-1/k", endpoint: url).code
        }
        #expect(code("DisabledException") == "E_KEY_DISABLED")
        #expect(code("com.amazonaws.kms#KMSInvalidStateException", "arn:… is pending deletion.") == "E_KEY_DESTROYED")
        #expect(code("KMSInvalidStateException", "arn:… is pending import.") == "E_KEY_DISABLED")
        #expect(code("NotFoundException") == "E_KEY_DESTROYED")
        for rejected in ["AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
            "IncompleteSignature"] {
            #expect(code(rejected) == "E_KEY_CREDENTIAL_REJECTED")
        }
        #expect(code("InvalidCiphertextException") == "E_KEY_WRONG_SECRET")
        #expect(code("KMSInternalException", "boom") == "E_KEY_KMS_PROTOCOL")
        #expect(code("") == "E_KEY_KMS_PROTOCOL")
    }
}

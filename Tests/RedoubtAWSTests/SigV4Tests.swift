import Foundation
import Testing

@testable import RedoubtAWS

/// Known answers: the S3 examples in AWS's "Signature Calculations for the Authorization
/// Header" page (bucket `examplebucket`, 2013-05-24).
@Suite struct SigV4Tests {
    let signer = SigV4Signer(
        credentials: AWSCredentials(accessKeyID: "AKIAIOSFODNN7EXAMPLE",
            secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        region: "us-east-1", service: "s3")
    let date = Date(timeIntervalSince1970: 1_369_353_600)  // 2013-05-24T00:00:00Z

    func authorization(_ headers: [(name: String, value: String)]) -> String? {
        headers.first { $0.name == "Authorization" }?.value
    }

    @Test func signsGetObjectWithRangeAsAWSDocuments() {
        let request = SigV4Request(
            method: "GET", encodedPath: "/test.txt",
            headers: [("Host", "examplebucket.s3.amazonaws.com"), ("Range", "bytes=0-9")],
            payloadHash: SigV4Signer.emptyPayloadHash)
        let auth = authorization(signer.sign(request, at: date))
        #expect(auth == """
            AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
            SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
            Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41
            """)
    }

    @Test func signsPutObjectWithEncodedKeyAsAWSDocuments() {
        let body = Data("Welcome to Amazon S3.".utf8)
        let request = SigV4Request(
            method: "PUT", encodedPath: "/" + SigV4Signer.encodePath("test$file.text"),
            headers: [
                ("Host", "examplebucket.s3.amazonaws.com"), ("Date", "Fri, 24 May 2013 00:00:00 GMT"),
                ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ],
            payloadHash: SigV4Signer.hexSHA256(body))
        #expect(request.encodedPath == "/test%24file.text")
        let auth = authorization(signer.sign(request, at: date))
        #expect(auth?.hasSuffix("""
            SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, \
            Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd
            """) == true)
    }

    @Test func signsListObjectsWithSortedQueryAsAWSDocuments() {
        let request = SigV4Request(
            method: "GET", encodedPath: "/", query: [("prefix", "J"), ("max-keys", "2")],
            headers: [("Host", "examplebucket.s3.amazonaws.com")], payloadHash: SigV4Signer.emptyPayloadHash)
        #expect(request.encodedQuery == "max-keys=2&prefix=J")
        let auth = authorization(signer.sign(request, at: date))
        #expect(auth?.hasSuffix("Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7") == true)
    }

    @Test func aChangedHeaderChangesTheSignature() {
        let base = SigV4Request(
            method: "GET", encodedPath: "/test.txt",
            headers: [("Host", "examplebucket.s3.amazonaws.com"), ("Range", "bytes=0-9")],
            payloadHash: SigV4Signer.emptyPayloadHash)
        var other = base
        other.headers[1].value = "bytes=0-10"
        #expect(authorization(signer.sign(base, at: date)) != authorization(signer.sign(other, at: date)))
    }

    @Test func encodesReservedCharactersUppercase() {
        #expect(SigV4Signer.encode("a b/c~d*é", keepSlash: false) == "a%20b%2Fc~d%2A%C3%A9")
        #expect(SigV4Signer.encodePath("t/a b") == "t/a%20b")
    }

    /// The signed `host` must be what AsyncHTTPClient sends: no default port, IPv6 in brackets.
    @Test(arguments: [
        ("https://kms.example.com:443", "kms.example.com"),
        ("https://kms.example.com", "kms.example.com"),
        ("http://127.0.0.1:80/", "127.0.0.1"),
        ("http://127.0.0.1:443/", "127.0.0.1:443"),
        ("https://s3.example:8443/x", "s3.example:8443"),
        ("HTTPS://s3.example:443", "s3.example"),
        ("https://[::1]:9000", "[::1]:9000"),
        ("https://[::1]:443", "[::1]"),
    ])
    func hostHeaderMatchesWhatTheClientSends(url: String, host: String) throws {
        #expect(SigV4Signer.hostHeader(for: try #require(URL(string: url))) == host)
    }

    @Test func credentialsNeverPrintTheSecret() {
        let credentials = AWSCredentials(accessKeyID: "AKID", secretAccessKey: "very-secret")
        #expect(!"\(credentials)".contains("very-secret"))
        #expect(!String(reflecting: credentials).contains("very-secret"))
    }

    @Test func readsSharedCredentialsFileProfiles() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("aws-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("credentials").path
        try """
            [default]\naws_access_key_id = A1\naws_secret_access_key = S1\n\n[profile \
            copy]\naws_access_key_id=A2\naws_secret_access_key=S2\naws_session_token=T2\n
            """
            .write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try AWSCredentials.file(path).accessKeyID == "A1")
        let copy = try AWSCredentials.file(path, profile: "copy")
        #expect(copy.accessKeyID == "A2" && copy.sessionToken == "T2")
        #expect(throws: AWSCredentialsError.self) { try AWSCredentials.file(path, profile: "missing") }
        let env = try AWSCredentials.standard(environment: ["AWS_ACCESS_KEY_ID": "E", "AWS_SECRET_ACCESS_KEY": "ES"])
        #expect(env.accessKeyID == "E")
        let viaFile = try AWSCredentials.standard(environment: ["AWS_SHARED_CREDENTIALS_FILE": path,
            "AWS_PROFILE": "copy"])
        #expect(viaFile.accessKeyID == "A2")
    }
}

import Foundation
import RedoubtAWS
import Testing

@testable import RedoubtStore

/// The one parser of `s3://` copy targets: what it accepts, what it refuses (before any
/// network use), and that its description never shows a secret.
@Suite struct S3TargetTests {
    let https = "https://s3.eu-west-1.amazonaws.com"

    func refusal(_ url: String, endpoint: String = "https://s3.example.com", region: String = "us-east-1")
        -> StoreError?
    {
        do {
            _ = try S3Target.parse(url: url, endpoint: endpoint, region: region)
            return nil
        } catch { return error }
    }

    @Test func aBucketAloneOrWithATrailingSlashHasAnEmptyPrefix() throws {
        for url in ["s3://backups", "s3://backups/", "s3://backups//"] {
            let t = try S3Target.parse(url: url, endpoint: https, region: "eu-west-1")
            #expect(t.location.bucket == "backups" && t.location.prefix == "", "\(url)")
            #expect(t.location.region == "eu-west-1" && t.location.endpoint.host == "s3.eu-west-1.amazonaws.com")
            #expect(t.credentials == .environment && t.location.pathStyle)
        }
    }

    @Test func nestedPrefixesKeepTheirFoldersWithoutOuterSlashes() throws {
        let t = try S3Target.parse(
            url: "s3://backups/site-a/redoubt/", endpoint: https, region: "us-east-1",
            credentialsFile: "/etc/redoubt/s3", pathStyle: false)
        #expect(t.location.bucket == "backups" && t.location.prefix == "site-a/redoubt")
        #expect(t.credentials == .file("/etc/redoubt/s3") && !t.location.pathStyle)
        let p = try S3Target.parsePath("S3://backups/a/b")
        #expect(p.bucket == "backups" && p.prefix == "a/b")
    }

    @Test func dotDotEmptyAndControlSegmentsAreRefused() {
        for url in [
            "s3://backups/..", "s3://backups/a/../b", "s3://backups/./a", "s3://backups/a//b", "s3://backups/a\u{0}b",
            "s3://backups/a\\..\\b",
        ] {
            let e = refusal(url)
            #expect(e?.code == .config, "\(url.debugDescription) was accepted")
        }
    }

    @Test func aMissingOrInvalidBucketIsRefusedAndNamed() {
        #expect(refusal("s3://")?.detail.contains("bucket is missing") == true)
        #expect(refusal("s3:///prefix")?.detail.contains("bucket is missing") == true)
        #expect(refusal("backups/prefix")?.detail.contains("must be s3://") == true)
        #expect(refusal("https://backups/prefix")?.detail.contains("must be s3://") == true)
        let upper = refusal("s3://MyBackups/x")
        #expect(upper?.detail.contains("lowercase") == true && upper?.detail.contains("s3://mybackups") == true)
        for bad in [
            "ab", String(repeating: "a", count: 64), "-backups", "backups-", "back ups", "back%2fups", "bäckups",
        ] {
            #expect(refusal("s3://\(bad)/x")?.code == .config, "\(bad) was accepted")
        }
        #expect(refusal("s3://my.backups_old-1/x") == nil)
    }

    @Test func plainHTTPIsAllowedOnlyToLoopback() throws {
        for endpoint in [
            "http://10.0.0.1:9000", "http://s3.example.com", "http://127.0.0.1.example.com",
            "http://localhost.evil.com:80",
            "http://[fe80::1]:9000", "HTTP://10.0.0.1", "http://192.168.1.10",
        ] {
            let e = refusal("s3://backups/x", endpoint: endpoint)
            #expect(e?.code == .config && e?.detail.contains("plain http") == true, "\(endpoint) was accepted")
        }
        for endpoint in [
            "http://127.0.0.1:9000", "http://localhost:4566", "http://LOCALHOST:4566", "http://[::1]:9000",
        ] {
            let t = try S3Target.parse(url: "s3://backups/x", endpoint: endpoint, region: "us-east-1")
            #expect(t.location.endpoint.absoluteString == endpoint)
        }
        for endpoint in ["https://10.0.0.1:9000", "https://s3.example.com", "https://[fe80::1]:9000", https] {
            #expect(refusal("s3://backups/x", endpoint: endpoint) == nil, "\(endpoint)")
        }
        for endpoint in ["ftp://s3.example.com", "s3.example.com", "", "https://", "file:///tmp/x"] {
            #expect(
                refusal("s3://backups/x", endpoint: endpoint)?.code == .config,
                "\(endpoint.debugDescription) was accepted")
        }
    }

    @Test func secretsInTheEndpointAreRefusedWithoutRepeatingThem() {
        for endpoint in [
            "https://AKIAEXAMPLE:wJalrXUtnFEMIsecret@s3.example.com", "https://AKIAEXAMPLE@s3.example.com",
            "https://s3.example.com/?X-Amz-Credential=AKIAEXAMPLE", "https://s3.example.com/#wJalrXUtnFEMIsecret",
        ] {
            let e = refusal("s3://backups/x", endpoint: endpoint)
            #expect(e?.code == .config, "\(endpoint) was accepted")
            #expect(
                e.map { !"\($0)".contains("AKIAEXAMPLE") && !"\($0)".contains("wJalrXUtnFEMIsecret") } == true,
                "\(String(describing: e))")
        }
        #expect(refusal("s3://backups/x", region: "")?.code == .config)
        #expect(refusal("s3://backups/x", region: "us-east-1/../x")?.code == .config)
    }

    @Test func theRedactedDescriptionNamesThePlaceButNeverTheSecret() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "s3target-\(UInt32.random(in: 0 ... .max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("credentials").path
        try "[default]\naws_access_key_id = AKIAEXAMPLEKEY\naws_secret_access_key = wJalrXUtnFEMIsecretKEY\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        let t = try S3Target.parse(
            url: "s3://backups/site-a", endpoint: "https://s3.example.com:8443", region: "eu-west-1",
            credentialsFile: file)
        let creds = try t.awsCredentials()
        #expect(creds.accessKeyID == "AKIAEXAMPLEKEY")
        let location = try t.store().client.location
        let shown = [t.redacted, "\(t)", String(reflecting: t), "\(location)"]
        for s in shown {
            #expect(!s.contains("AKIAEXAMPLEKEY") && !s.contains("wJalrXUtnFEMIsecretKEY"), "\(s)")
        }
        #expect(
            t.redacted
                == "s3://backups/site-a at https://s3.example.com:8443 (region eu-west-1, credentials file \(file))")
        let env = try S3Target.parse(url: "s3://backups", endpoint: "http://127.0.0.1:9000", region: "us-east-1")
        #expect(
            env.redacted
                == "s3://backups/ at http://127.0.0.1:9000 (region us-east-1, credentials from the AWS environment)")
        let fromEnv = try env.awsCredentials(environment: [
            "AWS_ACCESS_KEY_ID": "AKIAENVKEY", "AWS_SECRET_ACCESS_KEY": "envSECRET",
        ])
        #expect(
            fromEnv.accessKeyID == "AKIAENVKEY" && !env.redacted.contains("AKIAENVKEY")
                && !env.redacted.contains("envSECRET"))
    }
}

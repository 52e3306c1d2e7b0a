import Foundation
import NIOHTTP1
import RedoubtAWS
import RedoubtStore
import Testing

/// The real binary: a tenant copied to a real LocalStack bucket under COMPLIANCE locks,
/// then restored from the bucket alone after the server's data is gone; a bucket that
/// does not enforce locks (moto) is refused.
@Suite(.serialized) struct BucketCopyTests {
    func sh(_ cmd: String, _ out: String) -> (Int32, String) {
        let raw = system(cmd + " > '\(out)' 2>&1")
        return (Int32((raw >> 8) & 0xff), (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }

    func bucket(_ endpoint: URL) async throws -> String {
        let name = "redoubt-copy-\(UInt32.random(in: 0 ... .max))"
        let admin = S3Client(location: S3Location(endpoint: endpoint, region: "us-east-1", bucket: name),
                             credentials: AWSCredentials(accessKeyID: "test", secretAccessKey: "test"))
        let r = try await admin.send(.PUT, key: nil, headers: [("x-amz-bucket-object-lock-enabled", "true")])
        #expect(r.status == 200)
        return name
    }

    @Test func copyThenRestoreFromTheBucketAloneAndRefuseAnUnenforcingTarget() async throws {
        let env = ProcessInfo.processInfo.environment
        guard let ls = env["REDOUBT_TEST_LOCALSTACK"].flatMap(URL.init(string:)), let moto = env["REDOUBT_TEST_MOTO"].flatMap(URL.init(string:)) else {
            if env["REDOUBT_PEERS_REQUIRED"] == "1" { Issue.record("LocalStack/moto not configured: ./scripts/peers start") }
            return
        }
        let binary = CrashTests.binary.path
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the redoubt executable first")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-copy-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer {
            _ = system("chattr -R -i '\(dir)' 2>/dev/null")
            try? FileManager.default.removeItem(atPath: dir)
        }
        let out = "\(dir)/out.txt"
        let creds = "\(dir)/s3-credentials"
        try "[default]\naws_access_key_id = test\naws_secret_access_key = test\n".write(toFile: creds, atomically: true, encoding: .utf8)
        // Per command, not setenv: suites run in parallel in one process.
        let bin = "REDOUBT_PASSPHRASE=bucket-copy-test '\(binary)'"
        let (qs, qsOut) = sh("\(bin) quickstart --dir '\(dir)/qs'", out)
        try #require(qs == 0, "quickstart: \(qsOut)")
        let run = try #require(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/qs").first)
        let base = "\(dir)/qs/\(run)"

        let name = try await bucket(ls)
        let target = "--to s3://\(name)/redoubt --endpoint \(ls.absoluteString) --credentials '\(creds)'"
        let (sync, syncOut) = sh("\(bin) copy sync quickstart --data '\(base)/server' \(target)", out)
        #expect(sync == 0, "copy sync: \(syncOut)")
        #expect(syncOut.contains("0 already there"))
        // Resumable and idempotent: a second run finds everything in place.
        let (again, againOut) = sh("\(bin) copy sync quickstart --data '\(base)/server' \(target)", out)
        #expect(again == 0 && againOut.contains(" 0 new"), "second sync: \(againOut)")

        // Every object in the bucket is COMPLIANCE-locked.
        let store = S3Store(client: S3Client(location: S3Location(endpoint: ls, region: "us-east-1", bucket: name, prefix: "redoubt"),
                                             credentials: AWSCredentials(accessKeyID: "test", secretAccessKey: "test")))
        let objects = try await store.list(prefix: "t/quickstart/")
        #expect(objects.count >= 3)
        #expect(objects.allSatisfy { $0.enforced && ($0.retainUntil ?? .distantPast) > Date().addingTimeInterval(29 * 86400) })
        #expect(try await store.list(prefix: "audit-head/").count == 2)

        // The server is gone: data directory, catalog and store.
        _ = system("chattr -R -i '\(base)/server' 2>/dev/null")
        try FileManager.default.removeItem(atPath: "\(base)/server")
        let (list, listOut) = sh("\(bin) copy snapshots quickstart \(target) --json", out)
        #expect(list == 0, "copy snapshots: \(listOut)")
        let snapshot = try #require(listOut.split(separator: "\"").first { $0.count == 64 }.map(String.init))
        let (restore, restoreOut) = sh("\(bin) copy restore quickstart \(snapshot) \(target) --target '\(dir)/restored' --config '\(base)/restorer'", out)
        #expect(restore == 0, "copy restore: \(restoreOut)")
        let (diff, diffOut) = sh("diff -r '\(base)/sample' '\(dir)/restored\(base)/sample' || diff -r '\(base)/sample' '\(dir)/restored/sample'", out)
        #expect(diff == 0, "restored tree differs: \(diffOut)")

        // moto accepts COMPLIANCE but lets it be shortened: refused as a target.
        let motoBucket = try await bucket(moto)
        let bad = "--to s3://\(motoBucket)/redoubt --endpoint \(moto.absoluteString) --credentials '\(creds)'"
        let (prove, proveOut) = sh("\(bin) copy prove \(bad)", out)
        #expect(prove != 0 && proveOut.contains("does NOT enforce"), "prove on moto: \(proveOut)")
    }
}

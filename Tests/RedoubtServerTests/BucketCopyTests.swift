import Foundation
import NIOHTTP1
import RedoubtAWS
import RedoubtKMS
import RedoubtServer
@testable import RedoubtStore
import Testing

/// The real binary: a tenant copied to a real LocalStack bucket under COMPLIANCE locks,
/// then restored from the bucket alone after the server's data is gone; a bucket that
/// does not enforce locks (moto) is refused.
@Suite(.serialized) struct BucketCopyTests {
    func sh(_ cmd: String, _ out: String) async -> (Int32, String) {
        let raw = await runShell(cmd + " > '\(out)' 2>&1")
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
        guard let env = peerEnvironment("REDOUBT_TEST_LOCALSTACK", "REDOUBT_TEST_MOTO"),
              let ls = env["REDOUBT_TEST_LOCALSTACK"].flatMap(URL.init(string:)),
                  let moto = env["REDOUBT_TEST_MOTO"].flatMap(URL.init(string:)) else {
                  return
              }
        let binary = CrashTests.binary.path
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the redoubt executable first")
        let dir =
            FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-copy-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer {
            _ = system("chattr -R -i '\(dir)' 2>/dev/null")
            try? FileManager.default.removeItem(atPath: dir)
        }
        let out = "\(dir)/out.txt"
        let creds = "\(dir)/s3-credentials"
        try "[default]\naws_access_key_id = test\naws_secret_access_key = test\n".write(toFile: creds, atomically: true,
            encoding: .utf8)
        // Per command, not setenv: suites run in parallel in one process.
        let bin = "REDOUBT_PASSPHRASE=bucket-copy-test '\(binary)'"
        let (qs, qsOut) = await sh("\(bin) quickstart --dir '\(dir)/qs'", out)
        try #require(qs == 0, "quickstart: \(qsOut)")
        let run = try #require(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/qs").first)
        let base = "\(dir)/qs/\(run)"

        // The store holds its descriptor as servers before format 2 wrote it: the write
        // material in the clear. The copy must carry it sealed.
        let (local, dkey) = try await storeDescriptorInFormat1(quickstart: base)

        let name = try await bucket(ls)
        let target = "--to s3://\(name)/redoubt --endpoint \(ls.absoluteString) --credentials '\(creds)'"
        let (sync, syncOut) = await sh("\(bin) copy sync quickstart --data '\(base)/server' \(target)", out)
        #expect(sync == 0, "copy sync: \(syncOut)")
        #expect(syncOut.contains("0 already there"))
        // Resumable and idempotent: a second run finds everything in place.
        let (again, againOut) = await sh("\(bin) copy sync quickstart --data '\(base)/server' \(target)", out)
        #expect(again == 0 && againOut.contains(" 0 new"), "second sync: \(againOut)")
        // The rerun reads no pack or manifest: they are recognised by their recorded hash.
        let rerunLines = againOut.split(separator: "\n")
        #expect(rerunLines.contains { $0.contains("/packs/") && $0.hasSuffix("(already there)") }, "\(againOut)")
        #expect(!rerunLines.contains { ($0.contains("/packs/") || $0.contains("/snapshots/"))
            && $0.hasSuffix("bytes)") }, "\(againOut)")
        // The server rewrites its descriptor in place (a retention change, a fresh seal at
        // start): the bucket's original of that key version stands for it, copies go on.
        var rewritten =
            try #require(try JSONSerialization.jsonObject(with: Data(try await local.get(dkey))) as? [String: Any])
        rewritten["minRetentionSeconds"] = ((rewritten["minRetentionSeconds"] as? Double) ?? 0) + 86400
        try await local.delete(dkey, now: Date())
        _ = try await local.put(dkey, Array(try JSONSerialization.data(withJSONObject: rewritten)), retainUntil: nil)
        let (third, thirdOut) = await sh("\(bin) copy sync quickstart --data '\(base)/server' \(target)", out)
        #expect(third == 0 && thirdOut.contains("tenant-v1.json (already there, same key version)"),
            "sync after the descriptor was rewritten: \(thirdOut)")

        // Every object in the bucket is COMPLIANCE-locked.
        let store = S3Store(client: S3Client(location: S3Location(endpoint: ls, region: "us-east-1", bucket: name,
            prefix: "redoubt"),
                                             credentials: AWSCredentials(accessKeyID: "test", secretAccessKey: "test")))
        let objects = try await store.list(prefix: "t/quickstart/")
        #expect(objects.count >= 3)
        #expect(objects.allSatisfy {
            $0.enforced && ($0.retainUntil ?? .distantPast) > Date().addingTimeInterval(29 * 86400)
        })
        // The descriptor in the bucket holds the write material only sealed.
        let copied = try await store.get(try #require(ObjectKey("t/quickstart/tenant-v1.json")))
        #expect(Data(copied).range(of: Data("\"writeMaterial\"".utf8)) == nil
            && Data(copied).range(of: Data("sealedWriteMaterial".utf8)) != nil)
        #expect(try await store.list(prefix: "audit-head/").count == 3)  // one per sync
        // One catalog export (the rerun changed nothing, so wrote none), naming the snapshot.
        let exports = try await store.list(prefix: "t/quickstart/catalog/")
        #expect(exports.count == 1)
        if let e = exports.first {
            let d = JSONDecoder()
            d.dateDecodingStrategy = .iso8601
            let export = try d.decode(BucketCopy.CatalogExport.self, from: Data(try await store.get(e.key)))
            #expect(export.tenant == "quickstart" && export.snapshots.count == 1
                && !(export.snapshots.first?.packs.isEmpty ?? true))
        }

        // The server is gone: data directory, catalog and store.
        _ = system("chattr -R -i '\(base)/server' 2>/dev/null")
        try FileManager.default.removeItem(atPath: "\(base)/server")
        let (list, listOut) = await sh("\(bin) copy snapshots quickstart \(target) --json", out)
        #expect(list == 0, "copy snapshots: \(listOut)")
        let snapshot = try #require(listOut.split(separator: "\"").first { $0.count == 64 }.map(String.init))
        // Newer descriptors added by whoever can write the bucket: one that is not a
        // descriptor, one whose wrapped key was altered. Neither may stop the restore: it
        // says so and opens the real, older one.
        let realName = try #require(try await store.originalNames(prefix: "t/quickstart/").first {
            $0.hasSuffix("/tenant-v1.json")
        })
        let realKey = try #require(ObjectKey(realName))
        let realBytes = try await store.get(realKey)
        var descriptor = try #require(try JSONSerialization.jsonObject(with: Data(realBytes)) as? [String: Any])
        let realWrapping = try #require(descriptor["wrappedReadKey"] as? String)
        var tampered = try WrappedReadKey.decode(Data(realWrapping.utf8))
        var sealed = try #require(Data(base64Encoded: tampered.wrapped))
        sealed[sealed.count - 1] ^= 1
        tampered.wrapped = sealed.base64EncodedString()
        descriptor["wrappedReadKey"] = String(decoding: try tampered.encoded(), as: UTF8.self)
        let v91 = try #require(ObjectKey("t/quickstart/tenant-v91.json")),
            v90 = try #require(ObjectKey("t/quickstart/tenant-v90.json"))
        _ = try await store.put(v91, Array(try JSONSerialization.data(withJSONObject: descriptor)), retainUntil: nil)
        _ = try await store.put(v90, Array("not a descriptor".utf8), retainUntil: nil)
        let (restore,
            restoreOut) = await sh("""
                \(bin) copy restore quickstart \(snapshot) \(target) --target '\(dir)/restored' --config \
                '\(base)/restorer'
                """, out)
        #expect(restore == 0, "copy restore: \(restoreOut)")
        #expect(restoreOut.contains("tenant-v91.json did not open")
            && restoreOut.contains("skipping t/quickstart/tenant-v90.json"), "\(restoreOut)")
        let (diff,
            diffOut) = await sh("""
                diff -r '\(base)/sample' '\(dir)/restored\(base)/sample' || diff -r '\(base)/sample' \
                '\(dir)/restored/sample'
                """, out)
        #expect(diff == 0, "restored tree differs: \(diffOut)")

        // moto accepts COMPLIANCE but lets it be shortened: refused as a target.
        let motoBucket = try await bucket(moto)
        let bad = "--to s3://\(motoBucket)/redoubt --endpoint \(moto.absoluteString) --credentials '\(creds)'"
        let (prove, proveOut) = await sh("\(bin) copy prove \(bad)", out)
        #expect(prove != 0 && proveOut.contains("does NOT enforce"), "prove on moto: \(proveOut)")
    }

    /// An S3 peer for the attacker test: endpoint, the bucket admin, Redoubt's writer
    /// (on SeaweedFS an identity without bypass rights; LocalStack checks no signatures).
    func peer(_ name: String) -> (url: URL, admin: AWSCredentials, writer: (id: String, secret: String))? {
        let env = ProcessInfo.processInfo.environment
        func pair(_ v: String?) -> (id: String, secret: String)? {
            guard let p = v?.split(separator: ":", maxSplits: 1), p.count == 2 else { return nil }
            return (String(p[0]), String(p[1]))
        }
        switch name {
        case "localstack":
            guard let u = env["REDOUBT_TEST_LOCALSTACK"].flatMap(URL.init(string:)) else { break }
            return (u, AWSCredentials(accessKeyID: "test", secretAccessKey: "test"), ("test", "test"))
        case "seaweed":
            guard let u = env["REDOUBT_TEST_SEAWEED"].flatMap(URL.init(string:)),
                let a = pair(env["REDOUBT_TEST_SEAWEED_ADMIN"]),
                let w = pair(env["REDOUBT_TEST_SEAWEED_WRITER"]) else { break }
            return (u, AWSCredentials(accessKeyID: a.id, secretAccessKey: a.secret), w)
        default: break
        }
        if env["REDOUBT_PEERS_REQUIRED"] == "1" {
            Issue.record("S3 peer \(name) not configured: ./scripts/peers start")
        }
        return nil
    }

    /// After a copy, an attacker with Redoubt's own bucket credential puts ransom versions
    /// over the manifest and a pack and delete markers on top: the locked originals stay,
    /// and a resync, `copy snapshots` and `copy restore` all use them.
    @Test(arguments: ["localstack", "seaweed"])
    func restoreFromTheBucketIgnoresAnAttackersNewerVersionsAndDeleteMarkers(_ peerName: String) async throws {
        guard let peer = peer(peerName) else { return }
        let binary = CrashTests.binary.path
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the redoubt executable first")
        let dir =
            FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-copy-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer {
            _ = system("chattr -R -i '\(dir)' 2>/dev/null")
            try? FileManager.default.removeItem(atPath: dir)
        }
        let out = "\(dir)/out.txt"
        let creds = "\(dir)/s3-credentials"
        try """
            [default]\naws_access_key_id = \(peer.writer.id)\naws_secret_access_key = \(peer.writer.secret)\n
            """.write(toFile: creds, atomically: true, encoding: .utf8)
        let bin = "REDOUBT_PASSPHRASE=bucket-copy-test '\(binary)'"
        let (qs, qsOut) = await sh("\(bin) quickstart --dir '\(dir)/qs'", out)
        try #require(qs == 0, "quickstart: \(qsOut)")
        let run = try #require(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/qs").first)
        let base = "\(dir)/qs/\(run)"

        let name = "redoubt-copy-\(UInt32.random(in: 0 ... .max))"
        let admin = S3Client(location: S3Location(endpoint: peer.url, region: "us-east-1", bucket: name),
            credentials: peer.admin)
        #expect(try await admin.send(.PUT, key: nil, headers: [("x-amz-bucket-object-lock-enabled",
            "true")]).status == 200)
        let target = "--to s3://\(name)/redoubt --endpoint \(peer.url.absoluteString) --credentials '\(creds)'"
        let (sync, syncOut) = await sh("\(bin) copy sync quickstart --data '\(base)/server' \(target)", out)
        try #require(sync == 0, "copy sync: \(syncOut)")

        // The attacker holds the same writer credential Redoubt uses.
        let attacker = S3Client(location: S3Location(endpoint: peer.url, region: "us-east-1", bucket: name,
            prefix: "redoubt"),
                                credentials: AWSCredentials(accessKeyID: peer.writer.id,
                                    secretAccessKey: peer.writer.secret))
        let store = S3Store(client: attacker)
        let manifests = try await store.list(prefix: "t/quickstart/snapshots/")
        let packs = try await store.list(prefix: "t/quickstart/packs/")
        try #require(manifests.count == 1 && !packs.isEmpty)
        let ransom = Array("your backups are encrypted; pay to restore".utf8)
        for key in [manifests[0].key, packs[0].key] {
            let r = try await attacker.send(.PUT, key: attacker.objectName(key.path), headers: [("content-md5",
                contentMD5(ransom))], body: ransom)
            #expect(r.status == 200, "\(peerName): overwrite of \(key) as a new version (\(r.status))")
        }
        for key in [manifests[0].key, packs[packs.count - 1].key] {
            let r = try await attacker.send(.DELETE, key: attacker.objectName(key.path))
            #expect((200..<300).contains(r.status), "\(peerName): delete marker on \(key) (\(r.status))")
        }
        #expect(try await attacker.send(.GET, key: attacker.objectName(manifests[0].key.path)).status == 404,
            "the attack took")

        // A resync finds every original in place and writes nothing new.
        let (again, againOut) = await sh("\(bin) copy sync quickstart --data '\(base)/server' \(target)", out)
        #expect(again == 0 && againOut.contains(" 0 new"), "resync after the attack: \(againOut)")

        // The server is gone; the bucket alone restores the original tree.
        _ = system("chattr -R -i '\(base)/server' 2>/dev/null")
        try FileManager.default.removeItem(atPath: "\(base)/server")
        let (list, listOut) = await sh("\(bin) copy snapshots quickstart \(target) --json", out)
        #expect(list == 0, "copy snapshots: \(listOut)")
        let snapshot = try #require(listOut.split(separator: "\"").first { $0.count == 64 }.map(String.init),
            "\(listOut)")
        let (restore,
            restoreOut) = await sh("""
                \(bin) copy restore quickstart \(snapshot) \(target) --target '\(dir)/restored' --config \
                '\(base)/restorer'
                """, out)
        #expect(restore == 0, "copy restore: \(restoreOut)")
        let (diff,
            diffOut) = await sh("""
                diff -r '\(base)/sample' '\(dir)/restored\(base)/sample' || diff -r '\(base)/sample' \
                '\(dir)/restored/sample'
                """, out)
        #expect(diff == 0, "restored tree differs: \(diffOut)")
    }
}


import Foundation
import NIOHTTP1
import RedoubtAWS
import RedoubtCore
@testable import RedoubtServer
@testable import RedoubtStore
import Testing

/// The real binary against a real LocalStack bucket with Object Lock: `copy verify` (and
/// `verify --from`) passes a fresh copy, then finds what an attacker or a broken copy
/// leaves: unlocked or GOVERNANCE objects, an extra name, a pack a manifest needs that is
/// absent, and bytes under a pack or manifest key that are not what the key says.
/// `restore --from` and `snapshots --from` work with the server gone.
@Suite(.serialized) struct BucketVerifyTests {
    /// Runs `cmd`; stdout and stderr kept apart so `--json` output parses.
    func sh(_ cmd: String, _ dir: String) async -> (code: Int32, out: String, err: String) {
        let raw = await runShell(cmd + " > '\(dir)/out.txt' 2> '\(dir)/err.txt'")
        let read = { (f: String) in (try? String(contentsOfFile: "\(dir)/\(f)", encoding: .utf8)) ?? "" }
        return (Int32((raw >> 8) & 0xff), read("out.txt"), read("err.txt"))
    }

    struct Report: Decodable {
        struct Finding: Decodable { let key: String; let detail: String }
        let objects: Int
        let bytes: Int
        let missing: [Finding]
        let wrong: [Finding]
        let unlocked: [Finding]
        let expiring: [Finding]
        let extra: [Finding]
    }

    func report(_ json: String) throws -> Report { try JSONDecoder().decode(Report.self, from: Data(json.utf8)) }

    /// A quickstart tenant copied to a fresh Object Lock bucket under the prefix `redoubt`.
    struct Setup {
        let dir: String
        let base: String
        let bucket: String
        let endpoint: URL
        let creds: String
        let bin: String
        /// The bucket's admin (LocalStack accepts any credentials).
        var admin: S3Client { S3Client(location: S3Location(endpoint: endpoint, region: "us-east-1", bucket: bucket),
                                       credentials: AWSCredentials(accessKeyID: "test", secretAccessKey: "test")) }
        func store(_ prefix: String) -> S3Store {
            S3Store(client: S3Client(location: S3Location(endpoint: endpoint, region: "us-east-1", bucket: bucket,
                prefix: prefix),
                                     credentials: AWSCredentials(accessKeyID: "test", secretAccessKey: "test")))
        }
        func target(_ prefix: String) -> String {
            "--to s3://\(bucket)/\(prefix) --endpoint \(endpoint.absoluteString) --credentials '\(creds)'"
        }
        func from(_ prefix: String) -> String {
            "--from s3://\(bucket)/\(prefix) --endpoint \(endpoint.absoluteString) --credentials '\(creds)'"
        }
    }

    func setup() async throws -> Setup? {
        guard let env = peerEnvironment("REDOUBT_TEST_LOCALSTACK"),
              let ls = env["REDOUBT_TEST_LOCALSTACK"].flatMap(URL.init(string:)) else { return nil }
        let binary = CrashTests.binary.path
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the redoubt executable first")
        let dir =
            FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-bverify-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let creds = "\(dir)/s3-credentials"
        try "[default]\naws_access_key_id = test\naws_secret_access_key = test\n".write(toFile: creds, atomically: true,
            encoding: .utf8)
        // Per command, not setenv: suites run in parallel in one process.
        let bin = "REDOUBT_PASSPHRASE=bucket-verify-test '\(binary)'"
        let qs = await sh("\(bin) quickstart --dir '\(dir)/qs'", dir)
        try #require(qs.code == 0, "quickstart: \(qs.out)\(qs.err)")
        let run = try #require(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/qs").first)
        let name = "redoubt-verify-\(UInt32.random(in: 0 ... .max))"
        let s = Setup(dir: dir, base: "\(dir)/qs/\(run)", bucket: name, endpoint: ls, creds: creds, bin: bin)
        #expect(try await s.admin.send(.PUT, key: nil, headers: [("x-amz-bucket-object-lock-enabled",
            "true")]).status == 200)
        let sync = await sh("\(bin) copy sync quickstart --data '\(s.base)/server' \(s.target("redoubt"))", dir)
        try #require(sync.code == 0, "copy sync: \(sync.out)\(sync.err)")
        return s
    }

    func cleanup(_ s: Setup) {
        _ = system("chattr -R -i '\(s.dir)' 2>/dev/null")
        try? FileManager.default.removeItem(atPath: s.dir)
    }

    /// PUTs `body` under `key` (relative to `prefix`) as the bucket admin, with the given
    /// recorded hash and lock mode (nil: no lock).
    func put(_ s: Setup, prefix: String, key: String, body: [UInt8], sha256: String, lock: String?) async throws {
        var headers: [(name: String, value: String)] = [("content-md5", contentMD5(body)), ("x-amz-meta-sha256",
            sha256)]
        if let lock {
            headers += [("x-amz-object-lock-mode", lock), ("x-amz-object-lock-retain-until-date",
                S3Date.format(Date().addingTimeInterval(40 * 86400)))]
        }
        let r = try await s.admin.send(.PUT, key: "\(prefix)/\(key)", headers: headers, body: body)
        #expect(r.status == 200, "PUT \(prefix)/\(key): \(r.status) \(r.errorMessage ?? "")")
    }

    /// Copies `objects` from the `redoubt` prefix to `prefix`, locked, except those `skip`
    /// names, the way a broken or partial copy would look.
    func copyPrefix(_ s: Setup, _ objects: [ObjectInfo], to prefix: String, skip: Set<String>) async throws {
        let source = s.store("redoubt")
        let dest = s.store(prefix)
        for info in objects where !skip.contains(info.key.path) {
            _ = try await dest.put(info.key, try await source.get(info.key),
                retainUntil: Date().addingTimeInterval(40 * 86400))
        }
    }

    @Test func verifyPassesACopyThenNamesUnlockedMissingAndWrongObjects() async throws {
        guard let s = try await setup() else { return }
        defer { cleanup(s) }

        // A fresh copy is clean: exit 0, nothing listed, every object read.
        let clean = await sh("\(s.bin) copy verify quickstart \(s.target("redoubt")) --json", s.dir)
        #expect(clean.code == 0, "copy verify: \(clean.out)\(clean.err)")
        let r = try report(clean.out)
        let listed = try await s.store("redoubt").list(prefix: "t/quickstart/")
        #expect(r.objects == listed.count && r.objects >= 3)
        #expect(r.bytes == listed.map(\.size).reduce(0, +))
        #expect(r.missing.isEmpty && r.wrong.isEmpty && r.unlocked.isEmpty && r.expiring.isEmpty && r.extra.isEmpty,
            "\(clean.out)")
        #expect(clean.err.contains("verify:"), "progress on stderr: \(clean.err)")
        // The `verify --from` spelling, without --tenant (the bucket holds one), says the same.
        let alias = await sh("\(s.bin) verify \(s.from("redoubt"))", s.dir)
        #expect(alias.code == 0 && alias.out.contains("OK"), "verify --from: \(alias.out)\(alias.err)")
        // Locks shorter than asked for are reported, and only warned about (exit 8).
        let soon = await sh("\(s.bin) copy verify quickstart \(s.target("redoubt")) --min-retain 10y --json", s.dir)
        #expect(soon.code == 8, "--min-retain 10y: \(soon.out)\(soon.err)")
        #expect(try report(soon.out).expiring.count == r.objects)

        // The bucket admin adds objects Redoubt did not write: a pack-named object with no
        // lock, one under GOVERNANCE (which bypass rights lift), and a name that is no pack.
        let junk = Array("not a pack".utf8)
        let unlockedPack = SigV4Signer.hexSHA256(Array("unlocked".utf8))
        let governancePack = SigV4Signer.hexSHA256(Array("governance".utf8))
        try await put(s, prefix: "redoubt", key: "t/quickstart/packs/\(unlockedPack.prefix(2))/\(unlockedPack)",
            body: Array("unlocked".utf8),
                      sha256: unlockedPack, lock: nil)
        try await put(s, prefix: "redoubt", key: "t/quickstart/packs/\(governancePack.prefix(2))/\(governancePack)",
            body: Array("governance".utf8),
                      sha256: governancePack, lock: "GOVERNANCE")
        try await put(s, prefix: "redoubt", key: "t/quickstart/packs/notes.txt", body: junk,
            sha256: SigV4Signer.hexSHA256(junk), lock: nil)
        // A name no Redoubt key can have (upper case) is listed too, though never read.
        try await put(s, prefix: "redoubt", key: "t/quickstart/README.TXT", body: junk,
            sha256: SigV4Signer.hexSHA256(junk), lock: nil)
        let tampered = await sh("\(s.bin) copy verify quickstart \(s.target("redoubt")) --json", s.dir)
        #expect(tampered.code == 5, "after unlocked objects: \(tampered.out)\(tampered.err)")
        let t = try report(tampered.out)
        #expect(t.objects == r.objects + 3)
        #expect(t.unlocked.contains { $0.key.hasSuffix(unlockedPack) && $0.detail.contains("no Object Lock") },
            "\(tampered.out)")
        #expect(t.unlocked.contains { $0.key.hasSuffix(governancePack) && $0.detail.contains("GOVERNANCE") },
            "\(tampered.out)")
        #expect(t.unlocked.contains { $0.key == "t/quickstart/packs/notes.txt" })
        #expect(t.extra.map(\.key).sorted() == ["t/quickstart/README.TXT", "t/quickstart/packs/notes.txt"],
            "\(tampered.out)")
        #expect(t.missing.isEmpty && t.wrong.isEmpty)
        let text = await sh("\(s.bin) copy verify quickstart \(s.target("redoubt"))", s.dir)
        #expect(text.code == 5
            && text.out.contains("UNLOCKED: t/quickstart/packs/\(unlockedPack.prefix(2))/\(unlockedPack)")
            && text.out.contains("NOT INTACT"), "\(text.out)")

        // A partial copy: one pack a manifest needs is absent.
        let packs = listed.filter { $0.key.path.contains("/packs/") }
        let manifests = listed.filter { $0.key.path.contains("/snapshots/") }
        let gone = try #require(packs.first)
        try await copyPrefix(s, listed, to: "partial", skip: [gone.key.path])
        let partial = await sh("\(s.bin) copy verify quickstart \(s.target("partial")) --json", s.dir)
        #expect(partial.code == 5, "partial copy: \(partial.out)\(partial.err)")
        let p = try report(partial.out)
        let packID = String(gone.key.path.split(separator: "/").last ?? "")
        #expect(p.missing.map(\.key) == [gone.key.path], "\(partial.out)")
        #expect(p.missing.first?.detail.contains(packID) == true)
        #expect(p.wrong.isEmpty && p.unlocked.isEmpty && p.extra.isEmpty)

        // Forged bytes, locked: under a pack key other bytes whose recorded hash is their
        // own (so only the name catches them), and under the manifest key other bytes
        // whose recorded hash claims to be the manifest's.
        let manifest = try #require(manifests.first)
        try await copyPrefix(s, listed, to: "forged", skip: [gone.key.path, manifest.key.path])
        let forgedPack = Array("ransom note in place of a pack".utf8)
        try await put(s, prefix: "forged", key: gone.key.path, body: forgedPack,
            sha256: SigV4Signer.hexSHA256(forgedPack), lock: "COMPLIANCE")
        let manifestID = String(manifest.key.path.split(separator: "/").last ?? "")
        try await put(s, prefix: "forged", key: manifest.key.path, body: Array("not a manifest".utf8),
            sha256: manifestID, lock: "COMPLIANCE")
        let forged = await sh("\(s.bin) copy verify quickstart \(s.target("forged")) --json", s.dir)
        #expect(forged.code == 5, "forged objects: \(forged.out)\(forged.err)")
        let f = try report(forged.out)
        #expect(Set(f.wrong.map(\.key)) == [gone.key.path, manifest.key.path], "\(forged.out)")
        #expect(f.wrong.contains { $0.key == gone.key.path && $0.detail.contains("not the pack ID") })
        #expect(f.unlocked.isEmpty && f.extra.isEmpty)
    }

    @Test func restoreAndSnapshotsFromTheBucketWithTheServerGone() async throws {
        guard let s = try await setup() else { return }
        defer { cleanup(s) }
        _ = system("chattr -R -i '\(s.base)/server' 2>/dev/null")
        try FileManager.default.removeItem(atPath: "\(s.base)/server")

        let list = await sh("\(s.bin) snapshots \(s.from("redoubt")) --json", s.dir)
        #expect(list.code == 0, "snapshots --from: \(list.out)\(list.err)")
        struct Row: Decodable { let id: String; let host: String; let packs: Int }
        let rows = try JSONDecoder().decode([Row].self, from: Data(list.out.utf8))
        let row = try #require(rows.first)
        #expect(rows.count == 1 && row.id.count == 64 && row.packs > 0)
        // The same list through `copy snapshots`.
        let same = await sh("\(s.bin) copy snapshots quickstart \(s.target("redoubt")) --json", s.dir)
        #expect(same.out == list.out)
        // --host filters; another host has none.
        let other = await sh("\(s.bin) snapshots \(s.from("redoubt")) --tenant quickstart --host no-such-host --json",
            s.dir)
        let otherRows = try JSONDecoder().decode([Row].self, from: Data(other.out.utf8))
        #expect(other.code == 0 && otherRows.isEmpty, "\(other.out)")

        let restore =
            await sh("""
                \(s.bin) restore \(row.id.prefix(12)) \(s.from("redoubt")) --tenant quickstart --target \
                '\(s.dir)/restored' --config '\(s.base)/restorer'
                """, s.dir)
        #expect(restore.code == 0, "restore --from: \(restore.out)\(restore.err)")
        // The wrapped read key came from the copy's tenant descriptor, not the (gone) server.
        #expect(restore.err.contains("wrapped read key in t/quickstart/tenant-v1.json")
            && !restore.err.contains("saved at enrollment"), "\(restore.err)")
        let diff =
            await sh("""
                diff -r '\(s.base)/sample' '\(s.dir)/restored\(s.base)/sample' || diff -r '\(s.base)/sample' \
                '\(s.dir)/restored/sample'
                """, s.dir)
        #expect(diff.code == 0, "restored tree differs: \(diff.out)")

        // Someone with the writer credential adds a newer descriptor whose wrapped key names
        // their own KMS: it is not used, and the restore still works from the enrollment copy.
        let v1 = try await s.store("redoubt").get(try #require(ObjectKey("t/quickstart/tenant-v1.json")))
        var descriptor = try #require(try JSONSerialization.jsonObject(with: Data(v1)) as? [String: Any])
        let wrappedJSON = try #require(descriptor["wrappedReadKey"] as? String)
        var wrapped = try #require(try JSONSerialization.jsonObject(with: Data(wrappedJSON.utf8)) as? [String: Any])
        wrapped["provider"] = "kmip://203.0.113.7:5696/attacker-key"
        descriptor["wrappedReadKey"] = String(decoding: try JSONSerialization.data(withJSONObject: wrapped),
            as: UTF8.self)
        descriptor["keyVersion"] = 2
        let forged = Array(try JSONSerialization.data(withJSONObject: descriptor))
        try await put(s, prefix: "redoubt", key: "t/quickstart/tenant-v2.json", body: forged,
            sha256: SigV4Signer.hexSHA256(forged), lock: "COMPLIANCE")
        let again =
            await sh("""
                \(s.bin) restore \(row.id.prefix(12)) \(s.from("redoubt")) --target '\(s.dir)/restored2' --config \
                '\(s.base)/restorer' --json
                """, s.dir)
        #expect(again.code == 0, "restore --from after a forged descriptor: \(again.out)\(again.err)")
        let summary = try #require(try JSONSerialization.jsonObject(with: Data(again.out.utf8)) as? [String: Any],
            "\(again.out)")
        #expect((summary["files"] as? Int ?? 0) > 0 && summary["damaged"] as? [String] == [], "\(again.out)")
        #expect(again.err.contains("not using the wrapped read key in t/quickstart/tenant-v2.json"), "\(again.err)")

        // With a second tenant in the bucket, --tenant is needed, and the error lists both.
        let body = Array("{}".utf8)
        let r = try await s.admin.send(.PUT, key: "redoubt/t/other/tenant-v1.json",
                                       headers: [("content-md5", contentMD5(body)), ("x-amz-meta-sha256",
                                           SigV4Signer.hexSHA256(body))], body: body)
        #expect(r.status == 200)
        let two = await sh("\(s.bin) snapshots \(s.from("redoubt"))", s.dir)
        #expect(two.code != 0 && two.err.contains("other, quickstart") && two.err.contains("--tenant"),
            "\(two.out)\(two.err)")
        // --from options without --from are refused rather than silently going to the server.
        let stray = await sh("\(s.bin) snapshots --tenant quickstart --config '\(s.base)/restorer'", s.dir)
        #expect(stray.code != 0 && stray.err.contains("--from"), "\(stray.out)\(stray.err)")
    }

    /// How names under `t/<tenant>/` are classified: only the exact spellings Redoubt
    /// writes are packs, manifests or descriptors; everything else is extra.
    @Test func namesAreClassifiedOnlyByTheirExactSpelling() {
        let id = String(repeating: "ab", count: 32)
        #expect(BucketVerify.kind("t/q/packs/ab/\(id)", tenant: "q") == .pack(PackID(hex: id)!))
        #expect(BucketVerify.kind("t/q/snapshots/\(id)", tenant: "q") == .manifest(SnapshotID(hex: id)!))
        #expect(BucketVerify.kind("t/q/tenant-v12.json", tenant: "q") == .descriptor(12))
        for extra in ["t/q/packs/cd/\(id)",  // filed under the wrong two digits
                      "t/q/packs/AB/\(id.uppercased())", "t/q/packs/ab/\(id.dropLast(2))", "t/q/packs/ab/\(id)/x",
                      "t/q/snapshots/\(id).json", "t/q/tenant-v0.json", "t/q/tenant-v01.json", "t/q/tenant-v.json",
                      "t/q/tenant-v1.json.bak", "t/other/packs/ab/\(id)", "t/q/packs/ab"] {
            #expect(BucketVerify.kind(extra, tenant: "q") == .extra, "\(extra)")
        }
    }
}

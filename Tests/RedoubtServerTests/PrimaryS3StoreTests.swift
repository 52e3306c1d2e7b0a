import Foundation
import Testing
import RedoubtAWS
import RedoubtClient
import RedoubtCore
import RedoubtKMS
import RedoubtStore
@testable import RedoubtServer

/// The server's own store on an S3 Object Lock bucket (real SeaweedFS, LocalStack and moto):
/// accepted only after the lock proof, every object written under COMPLIANCE, and a backup
/// that restores bit for bit through it.
@Suite(.serialized) struct PrimaryS3StoreTests {
    struct Bucket {
        let endpoint: URL
        let name: String
        let admin: AWSCredentials
        let credentialsFile: String

        var settings: PrimaryStoreSettings {
            PrimaryStoreSettings(url: "s3://\(name)/node", endpoint: endpoint.absoluteString, region: "us-east-1",
                                 credentialsFile: credentialsFile)
        }

        func client(prefix: String = "node") -> S3Client {
            S3Client(location: S3Location(endpoint: endpoint, region: "us-east-1", bucket: name, prefix: prefix),
                     credentials: admin)
        }
    }

    /// A fresh bucket made by `admin`, and a credentials file for the server's own identity.
    func bucket(_ endpoint: URL, admin: AWSCredentials, server: (id: String, secret: String),
                objectLock: Bool = true, in dir: URL) async throws -> Bucket {
        let name = "redoubt-primary-\(UInt32.random(in: 0 ... .max))"
        let r = try await S3Client(location: S3Location(endpoint: endpoint, region: "us-east-1", bucket: name),
                                   credentials: admin)
            .send(.PUT, key: nil, headers: objectLock ? [("x-amz-bucket-object-lock-enabled", "true")] : [])
        #expect(r.status == 200)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let file = dir.appendingPathComponent("s3-credentials-\(name)").path
        try """
            [default]
            aws_access_key_id = \(server.id)
            aws_secret_access_key = \(server.secret)\n
            """.write(toFile: file, atomically: true, encoding: .utf8)
        return Bucket(endpoint: endpoint, name: name, admin: admin, credentialsFile: file)
    }

    static func pair(_ v: String?) -> (id: String, secret: String)? {
        guard let parts = v?.split(separator: ":"), parts.count == 2 else { return nil }
        return (String(parts[0]), String(parts[1]))
    }

    @Test(.sqliteCatalogOnly) func aBackupGoesToTheBucketUnderComplianceAndRestoresExactly() async throws {
        guard let env = peerEnvironment("REDOUBT_TEST_SEAWEED", "REDOUBT_TEST_SEAWEED_ADMIN",
                                        "REDOUBT_TEST_SEAWEED_WRITER"),
              let endpoint = env["REDOUBT_TEST_SEAWEED"].flatMap(URL.init(string:)),
              let admin = Self.pair(env["REDOUBT_TEST_SEAWEED_ADMIN"]),
              let writerS3 = Self.pair(env["REDOUBT_TEST_SEAWEED_WRITER"]) else { return }
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-s3p-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: scratch) }
        // The server signs as an identity without governance bypass, as in production.
        let b = try await bucket(endpoint, admin: AWSCredentials(accessKeyID: admin.id, secretAccessKey: admin.secret),
                                 server: writerS3, in: scratch)
        let server = try await TestServer.start(primaryStore: b.settings)
        #expect(try server.home.settings().store == b.settings)
        #expect(!FileManager.default.fileExists(atPath: server.home.storePath), "a local store was made too")
        try await server.createTenant("acme", keys: try TenantKeys.generate())
        let (wc, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let (rc, restorer) = try await server.enroll(tenant: "acme", role: "restorer", name: "vault")

        let src = scratch.appendingPathComponent("src")
        try FileManager.default.createDirectory(at: src.appendingPathComponent("d"), withIntermediateDirectories: true)
        var files: [String: Data] = [:]
        for (name, size) in [("big.bin", 20 << 20), ("d/small.txt", 1000), ("d/empty", 0), ("mid.bin", 3 << 20)] {
            let bytes = Data((0..<size).map { _ in UInt8.random(in: 0...255) })
            try bytes.write(to: src.appendingPathComponent(name))
            files[name] = bytes
        }
        let result = try await Archiver().run(options: BackupOptions(paths: [src.path], cachePath: wc.cachePath),
                                              keys: try wc.writeKeySet(), target: writer,
                                              now: Timestamp(seconds: testNow))
        #expect(result.warnings.isEmpty, "\(result.warnings)")
        let info = try #require(try await writer.snapshots().first)

        // Every object the server wrote is in the bucket, locked in COMPLIANCE at least as long
        // as the snapshot's retention.
        let objects = try await S3Store(client: b.client()).list(prefix: "")
        #expect(objects.contains { $0.key.path.contains("packs/") } && objects.contains {
            $0.key.path.hasSuffix(info.id) })
        for o in objects where o.key.path.contains("packs/") || o.key.path.hasSuffix(info.id) {
            let r = try await b.client().send(.GET, key: "node/" + o.key.path, query: [("retention", "")])
            let xml = String(decoding: r.body, as: UTF8.self)
            #expect(r.status == 200 && xml.contains("<Mode>COMPLIANCE</Mode>"), "\(o.key.path): \(r.status) \(xml)")
            let until = xml.components(separatedBy: "<RetainUntilDate>").dropFirst().first?
                .components(separatedBy: "<").first.flatMap { ISO8601DateFormatter.withFractions($0) }
            #expect((until ?? .distantPast) >= info.retainUntil.addingTimeInterval(-1), "\(o.key.path): \(xml)")
        }
        // A host's own credential deletes nothing, whatever the store.
        await #expect(throws: APIError.self) { _ = try await writer.send(.DELETE, "/v1/snapshots/\(info.id)") }

        let readKey = try await PassphraseKeyProvider(passphrase: SecretBytes(copying: Array("pw".utf8)), logN: 10)
            .unwrap(try rc.wrappedReadKey(), context: KeyContext(tenant: "acme", keyVersion: 1))
        let manifest = try Manifest.parse(try await restorer.manifestBytes(info.id),
                                          expectedID: result.manifest.id)
        let target = scratch.appendingPathComponent("restored")
        let restored = try await Restorer().restore(manifest: manifest, readKey: readKey,
                                                    chunkIDKey: try rc.sharedMaterial().chunkIDKey,
                                                    source: restorer, target: target.path)
        #expect(restored.damaged.isEmpty)
        for (name, bytes) in files {
            let back = FileManager.default.contents(atPath: target.path + src.path + "/" + name)
            #expect(back == bytes, "\(name) did not come back bit for bit")
        }
        await writer.shutdown()
        await restorer.shutdown()
        await server.admin.shutdown()
        await server.listener.stop()

        // The catalog lost with the node: the bucket alone rebuilds it.
        try FileManager.default.removeItem(atPath: server.home.catalogPath)
        let report = try await CatalogRebuilder.rebuild(home: server.home, logger: .init(label: "test"))
        #expect(report.rejected.isEmpty && report.tenants == 1 && report.snapshots == 1, "\(report)")
        #expect(try await Catalog(path: server.home.catalogPath).snapshots(tenant: "acme").map(\.id) == [info.id])
        await server.stop()
    }

    @Test func aBucketThatDoesNotProveItsLocksIsRefusedAndNothingIsCreated() async throws {
        guard let env = peerEnvironment("REDOUBT_TEST_LOCALSTACK", "REDOUBT_TEST_MOTO"),
              let localstack = env["REDOUBT_TEST_LOCALSTACK"].flatMap(URL.init(string:)),
              let moto = env["REDOUBT_TEST_MOTO"].flatMap(URL.init(string:)) else { return }
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-s3p-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let test = AWSCredentials(accessKeyID: "test", secretAccessKey: "test"), testPair = ("test", "test")
        // Without Object Lock at all; and moto, which takes COMPLIANCE and then lets it be shortened.
        let unlocked = try await bucket(localstack, admin: test, server: testPair, objectLock: false,
                                      in: scratch)
        let pretending = try await bucket(moto, admin: test, server: testPair, in: scratch)
        // moto fails whichever check its current version trips first; the point is the refusal.
        for (b, why) in [(unlocked, ["versioning-enabled", "object-lock-enabled"]), (pretending, [])] {
            let home = ServerHome(path: scratch.appendingPathComponent("data-\(b.name)").path)
            do {
                _ = try await home.initialize(listen: "127.0.0.1:0", minRetention: 86400, now: Date(),
                                              store: b.settings)
                Issue.record("\(b.endpoint) bucket \(b.name) was accepted as the primary store")
            } catch let e as ServerError {
                #expect(e.code == "E_UNENFORCED", "\(e.message)")
                #expect(why.isEmpty || why.contains { e.message.contains("(\($0):") }, "\(e.message)")
                #expect(e.message.contains(b.name) && !e.message.contains("test:test"))
            }
            #expect(!FileManager.default.fileExists(atPath: home.root.path), "a refused init left \(home.root.path)")
        }
        // With the good bucket's settings but its credentials unreadable: refused, naming the file.
        var missing = unlocked.settings
        missing.credentialsFile = scratch.appendingPathComponent("no-such-file").path
        await #expect(throws: ServerError.self) { try await missing.prove() }
    }
}

extension ISO8601DateFormatter {
    /// S3 writes retain-until dates with or without fractions of a second.
    static func withFractions(_ s: String) -> Date? {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = f.date(from: s) { return d }
        f.formatOptions = [.withInternetDateTime]
        return f.date(from: s)
    }
}

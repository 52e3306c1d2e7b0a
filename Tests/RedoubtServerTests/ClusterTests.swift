import Crypto
import Foundation
import Synchronization
import Testing
import RedoubtAWS
import RedoubtClient
import RedoubtCore
import RedoubtKMS
import RedoubtStore
@testable import RedoubtServer

/// Three `redoubt server run` processes sharing one PostgreSQL catalog (over verified TLS)
/// and one SeaweedFS Object Lock bucket: hosts spread over the nodes back up at once, one
/// node dies by SIGKILL in the middle, and everything reported committed restores bit for bit
/// through a survivor; a token redeemed at two nodes at once enrolls once; a host's own
/// credential is refused the same attacks at every node.
@Suite(.serialized, .timeLimit(.minutes(10)), .firstPassOnly) struct ClusterTests {
    /// One node: its data directory, its `server run` process, and an admin client to it.
    final class Node: @unchecked Sendable {
        let data: String
        let url: String
        let process: Process
        init(data: String, url: String, process: Process) {
            self.data = data
            self.url = url
            self.process = process
        }
    }

    struct Cluster {
        let dir: URL
        let catalog: CatalogSettings
        let bucket: PrimaryS3StoreTests.Bucket
        var nodes: [Node]
    }

    static let bin = CrashTests.binary.path

    /// Runs `redoubt ARGS` and returns its exit status and output (standard output only with
    /// `stdoutOnly`, for JSON).
    func redoubt(_ args: String, in dir: URL, stdoutOnly: Bool = false) async -> (Int32, String) {
        let out = dir.appendingPathComponent("out-\(UUID().uuidString).txt").path
        let rc = await runShell("'\(Self.bin)' \(args) > '\(out)' \(stdoutOnly ? "2>/dev/null" : "2>&1")")
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: out)
        return (rc >> 8, text)
    }

    /// Starts `server run` for `data` and waits until it answers on `url`.
    func start(_ data: String, url: String, log: String) async throws -> Node {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.bin)
        p.arguments = ["server", "run", "--data", data]
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        let ca = try ServerHome(path: data).tlsMaterial().caCertPEM
        let der = try pemBody(ca)
        let probe = try APIClient(url: url, caDER: der)
        defer { Task { await probe.shutdown() } }
        for _ in 0..<200 {
            if (try? await probe.health()) != nil { return Node(data: data, url: url, process: p) }
            if !p.isRunning { break }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        p.terminate()
        throw ClusterTestError("""
            node \(data) did not come up: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
            """)
    }

    func pemBody(_ pem: String) throws -> [UInt8] {
        let b64 = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        return Array(try #require(Data(base64Encoded: b64)))
    }

    /// The admin credential of the first node, pointed at `node`.
    func admin(_ c: Cluster, at node: Int) throws -> APIClient {
        var cred = try JSONDecoder().decode(ClientCredential.self, from: Data(contentsOf: URL(
            fileURLWithPath: c.nodes[0].data + "/admin.credential")))
        cred.url = c.nodes[node].url
        return try APIClient(credential: cred)
    }

    /// A credential `cred` pointed at another node.
    func client(_ cred: ClientCredential, at url: String) throws -> APIClient {
        var c = cred
        c.url = url
        return try APIClient(credential: c)
    }

    @Test func threeNodesShareOneCatalogAndBucketAndLoseNothingWhenOneDies() async throws {
        guard let env = peerEnvironment("REDOUBT_TEST_POSTGRES", "REDOUBT_TEST_SEAWEED", "REDOUBT_TEST_SEAWEED_ADMIN",
                                        "REDOUBT_TEST_SEAWEED_WRITER"),
              let endpoint = env["REDOUBT_TEST_SEAWEED"].flatMap(URL.init(string:)),
              let s3Admin = PrimaryS3StoreTests.pair(env["REDOUBT_TEST_SEAWEED_ADMIN"]),
              let s3Writer = PrimaryS3StoreTests.pair(env["REDOUBT_TEST_SEAWEED_WRITER"]),
              let peer = try PostgresPeer.fromEnvironment() else { return }
        try #require(FileManager.default.isExecutableFile(atPath: Self.bin), "build the redoubt executable first")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-cluster-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var catalog = try await peer.freshCatalogSettings()
        // Over verified TLS when the peer has its CA, as a node across a network connects.
        if let ca = env["REDOUBT_TEST_POSTGRES_CA"] {
            let tls = "sslmode=verify-full&sslrootcert=\(ca)"
            catalog = CatalogSettings(url: catalog.url.replacingOccurrences(of: "sslmode=disable", with: tls))
        }
        let bucket = try await PrimaryS3StoreTests().bucket(
            endpoint, admin: AWSCredentials(accessKeyID: s3Admin.id, secretAccessKey: s3Admin.secret),
            server: s3Writer, in: dir)
        var nodes: [Node] = []
        defer {
            for n in nodes where n.process.isRunning { kill(n.process.processIdentifier, SIGKILL) }
            try? FileManager.default.removeItem(at: dir)
        }

        // The first node makes the cluster; two more join it with the cluster file.
        let ports = try (0..<3).map { _ in try freeLoopbackPort() }
        let datas = (0..<3).map { dir.appendingPathComponent("node\($0)").path }
        let s = bucket.settings
        let (i, iOut) = await redoubt("""
            server init --data '\(datas[0])' --listen 127.0.0.1:\(ports[0]) --catalog '\(catalog.url)' \
            --store '\(s.url)' --endpoint '\(s.endpoint)' --credentials '\(bucket.credentialsFile)'
            """, in: dir)
        try #require(i == 0, "server init: \(iOut)")
        let clusterFile = dir.appendingPathComponent("cluster.json").path
        let (cf, cfOut) = await redoubt("server cluster-file --data '\(datas[0])' --out '\(clusterFile)'", in: dir)
        try #require(cf == 0, "cluster-file: \(cfOut)")
        #expect((try FileManager.default.attributesOfItem(atPath: clusterFile)[.posixPermissions] as? Int) == 0o600)
        for n in 1...2 {
            let (j, jOut) = await redoubt("""
                server join --data '\(datas[n])' --from '\(clusterFile)' --listen 127.0.0.1:\(ports[n])
                """, in: dir)
            try #require(j == 0, "join node \(n): \(jOut)")
        }
        // A second cluster cannot be made on a catalog that holds one.
        let (again, againOut) = await redoubt("""
            server init --data '\(dir.path)/intruder' --listen 127.0.0.1:1 --catalog '\(catalog.url)' \
            --store '\(s.url)' --endpoint '\(s.endpoint)' --credentials '\(bucket.credentialsFile)'
            """, in: dir)
        #expect(again != 0 && againOut.contains("already holds a Redoubt cluster"), "second init: \(againOut)")
        #expect(!FileManager.default.fileExists(atPath: "\(dir.path)/intruder"))
        for n in 0..<3 {
            nodes.append(try await start(datas[n], url: "https://127.0.0.1:\(ports[n])",
                                         log: dir.appendingPathComponent("node\(n).log").path))
        }
        let c = Cluster(dir: dir, catalog: catalog, bucket: bucket, nodes: nodes)

        // The tenant, made at node 0, is seen at node 2.
        let keys = try TenantKeys.generate()
        let admins = try (0..<3).map { try admin(c, at: $0) }
        defer { for a in admins { Task { await a.shutdown() } } }
        let provider = try PassphraseKeyProvider(passphrase: SecretBytes(copying: Array("pw".utf8)), logN: 10)
        let wrapped = try await provider.wrap(keys.readKey, context: KeyContext(tenant: "acme", keyVersion: 1))
        _ = try await admins[0].createTenant(Wire.CreateTenantRequest(
            name: "acme", readPublicKey: Data(keys.readKey.publicKey.rawRepresentation).base64EncodedString(),
            writeMaterial: keys.sharedWriteMaterial.encode().withUnsafeBytes { Data($0).base64EncodedString() },
            wrappedReadKey: String(decoding: try wrapped.encoded(), as: UTF8.self), minRetentionSeconds: nil))
        #expect(try await admins[2].tenants().map(\.name) == ["acme"])

        // One token redeemed at two nodes at the same instant enrolls once.
        let token = try await admins[0].createEnrollment(tenant: "acme", role: "writer", name: "twice",
                                                         ttlSeconds: 3600).token
        let tok = try Wire.EnrollmentToken.decode(token)
        let caDER = Array(try #require(Data(base64Encoded: tok.ca)))
        let racers = try [1, 2].map { try APIClient(url: nodes[$0].url, caDER: caDER) }
        let outcomes = await withTaskGroup(of: Bool.self) { group in
            for r in racers {
                group.addTask {
                    let key = P256.Signing.PrivateKey().publicKey.pemRepresentation
                    return (try? await r.enroll(Wire.EnrollRequest(secret: tok.secret, publicKeyPEM: key,
                        hostKey: Data(HostSigningKey.generate().publicKey.rawRepresentation).base64EncodedString(),
                        os: nil))) != nil
                }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        for r in racers { await r.shutdown() }
        #expect(outcomes.filter { $0 }.count == 1, "token redeemed at two nodes: \(outcomes)")
        #expect(try await admins[0].principals().filter { $0.name == "twice" }.count == 1)

        // Hosts enrolled at every node; the restorer at node 1.
        let hostCount = 21
        var hosts: [(ClientConfig, APIClient, Int)] = []
        for h in 0..<hostCount {
            let at = h % 3
            let t = try await admins[at].createEnrollment(tenant: "acme", role: "writer", name: "web\(h)",
                                                          ttlSeconds: 3600).token
            let cfg = ClientConfig(path: dir.appendingPathComponent("host\(h)").path)
            _ = try await ClientConfig.enroll(token: t, into: cfg, os: "Test OS 1")
            hosts.append((cfg, try APIClient(credential: cfg.credential()), at))
        }
        defer { for h in hosts { Task { await h.1.shutdown() } } }
        let rt = try await admins[1].createEnrollment(tenant: "acme", role: "restorer", name: "vault",
                                                      ttlSeconds: 3600).token
        let rc = ClientConfig(path: dir.appendingPathComponent("restorer").path)
        _ = try await ClientConfig.enroll(token: rt, into: rc, os: nil)

        // Each host's files: its own bytes and a block every host shares.
        let shared = (0..<300_000).map { _ in UInt8.random(in: 0...255) }
        var sources: [URL] = []
        for h in 0..<hostCount {
            let src = dir.appendingPathComponent("src\(h)")
            try FileManager.default.createDirectory(at: src.appendingPathComponent("d"),
                                                    withIntermediateDirectories: true)
            try Data(shared).write(to: src.appendingPathComponent("shared.bin"))
            try Data((0..<(50_000 + h * 997)).map { _ in UInt8.random(in: 0...255) })
                .write(to: src.appendingPathComponent("d/own.bin"))
            try Data("host \(h)\n".utf8).write(to: src.appendingPathComponent("d/name.txt"))
            sources.append(src)
        }

        // Round one: every host at once, with garbage collection running at node 0 meanwhile.
        // Round two: node 2 is killed while the hosts back up again.
        let committed = Committed()
        let hostList = hosts.map { ($0.0, $0.1) }
        let sourceList = sources
        func round(_ r: Int, during: @escaping @Sendable () async -> Void) async {
            await withTaskGroup(of: Void.self) { group in
                for h in 0..<hostCount {
                    let (cfg, api) = hostList[h]
                    let src = sourceList[h]
                    group.addTask {
                        if r == 2 {
                            try? Data("round two \(h)\n".utf8).write(to: src.appendingPathComponent("d/2.txt"))
                        }
                        do {
                            let result = try await Archiver().run(
                                options: BackupOptions(paths: [src.path], cachePath: cfg.cachePath),
                                keys: try cfg.writeKeySet(), target: api, now: Timestamp(seconds: testNow + Int64(r)))
                            committed.list.withLock { $0.append((h, result.manifest.id, r)) }
                        } catch {
                            // Only hosts of the killed node may fail, and only in round two.
                            #expect(r == 2 && h % 3 == 2, "host \(h) round \(r): \(error)")
                        }
                    }
                }
                group.addTask { await during() }
            }
        }
        await round(1) {
            for _ in 0..<3 {
                do { _ = try await admins[0].collectGarbage(tenant: "acme", dryRun: false) } catch {
                    Issue.record("gc at node 0 during the backups: \(error)")
                }
            }
        }
        #expect(committed.list.withLock { $0.count } == hostCount)
        let victim = nodes[2].process.processIdentifier
        await round(2) {
            try? await Task.sleep(nanoseconds: 300_000_000)
            kill(victim, SIGKILL)
        }
        nodes[2].process.waitUntilExit()
        let all = committed.list.withLock { $0 }
        #expect(all.filter { $0.round == 2 && $0.host % 3 != 2 }.count == hostCount * 2 / 3,
                "every host of a surviving node committed round two")

        let restorer = try client(try rc.credential(), at: nodes[1].url)
        defer { Task { await restorer.shutdown() } }
        // A host's own credential, at every node: no delete, no retention cut, no
        // garbage collection, no reading another host's snapshot, no overwrite of a pack.
        let someone = try #require(all.first { $0.host == 1 })
        let attacker = hosts[0]
        let cred = try attacker.0.credential()
        let victimManifest = try Manifest.parse(try await restorer.manifestBytes(someone.id.description),
                                                expectedID: someone.id)
        let victimPack = try #require(victimManifest.header.packs.first)
        func attack(_ n: Int, _ url: String) async throws {
            let a = try client(cred, at: url)
            defer { Task { await a.shutdown() } }
            await #expect(throws: APIError.self, "delete at node \(n)") {
                _ = try await a.send(.DELETE, "/v1/snapshots/\(someone.id)")
            }
            await #expect(throws: APIError.self, "retention at node \(n)") {
                _ = try await a.setMinRetention(tenant: "acme", seconds: 60, requestID: nil)
            }
            await #expect(throws: APIError.self, "gc at node \(n)") {
                _ = try await a.collectGarbage(tenant: "acme", dryRun: false)
            }
            await #expect(throws: APIError.self, "read at node \(n)") {
                _ = try await a.manifestBytes(someone.id.description)
            }
            // A pack's bytes never change: a re-upload under its ID is refused or a no-op.
            if let r = try? await a.uploadPack(id: victimPack, bytes: Array(repeating: 0x41, count: 4096)) {
                #expect(!r.created, "overwrite of \(victimPack) at node \(n)")
            }
        }
        for n in 0...1 { try await attack(n, nodes[n].url) }

        // Every snapshot reported committed restores bit for bit through node 1.
        let readKey = try await provider.unwrap(try rc.wrappedReadKey(), context: KeyContext(tenant: "acme",
                                                                                            keyVersion: 1))
        let listed = Set(try await restorer.snapshots().map(\.id))
        for s in all {
            #expect(listed.contains(s.id.description), "host \(s.host) round \(s.round) \(s.id) not listed")
            let manifest = try Manifest.parse(try await restorer.manifestBytes(s.id.description), expectedID: s.id)
            let target = dir.appendingPathComponent("restore-\(s.host)-\(s.round)")
            let result = try await Restorer().restore(manifest: manifest, readKey: readKey,
                                                      chunkIDKey: try rc.sharedMaterial().chunkIDKey,
                                                      source: restorer, target: target.path)
            #expect(result.damaged.isEmpty, "host \(s.host) round \(s.round): \(result.damaged)")
            let base = target.path + sources[s.host].path
            for f in ["shared.bin", "d/own.bin", "d/name.txt"] {
                #expect(FileManager.default.contents(atPath: base + "/" + f)
                    == FileManager.default.contents(atPath: sources[s.host].path + "/" + f),
                        "host \(s.host) round \(s.round) \(f)")
            }
        }

        // The audit chain, appended to by three nodes, verifies from a surviving node's host.
        let (v, vOut) = await redoubt("audit verify --data '\(datas[1])'", in: dir)
        #expect(v == 0 && vOut.contains("intact"), "audit verify: \(vOut)")
        // doctor on a node: the catalog over verified TLS, a fresh bucket proof, little skew.
        let (_, dOut) = await redoubt("doctor --data '\(datas[1])' --json", in: dir,
                                      stdoutOnly: true)
        for id in Doctor.clusterCheckIDs {
            let expected = id == "cluster.catalog" && env["REDOUBT_TEST_POSTGRES_CA"] == nil ? "warn" : "pass"
            #expect(dOut.contains("\"id\" : \"\(id)\"") && jsonStatus(dOut, id) == expected, "doctor \(id): \(dOut)")
        }

        // The killed node comes back and serves what the others committed.
        nodes[2] = try await start(datas[2], url: nodes[2].url, log: dir.appendingPathComponent("node2b.log").path)
        let r2 = try client(try rc.credential(), at: nodes[2].url)
        defer { Task { await r2.shutdown() } }
        #expect(Set(try await r2.snapshots().map(\.id)) == listed)
        // The same attacks at the restarted node, and the victim's snapshot still restores there.
        try await attack(2, nodes[2].url)
        let victimAgain = try Manifest.parse(try await r2.manifestBytes(someone.id.description), expectedID: someone.id)
        let target = dir.appendingPathComponent("restore-again")
        let result = try await Restorer().restore(manifest: victimAgain, readKey: readKey,
                                                  chunkIDKey: try rc.sharedMaterial().chunkIDKey,
                                                  source: r2, target: target.path)
        #expect(result.damaged.isEmpty)
        #expect(FileManager.default.contents(atPath: target.path + sources[1].path + "/d/own.bin")
            == FileManager.default.contents(atPath: sources[1].path + "/d/own.bin"))
        for n in nodes { kill(n.process.processIdentifier, SIGTERM) }
        for n in nodes { n.process.waitUntilExit() }

        // The database is lost: the bucket alone rebuilds the catalog into an empty schema,
        // with a new admin credential (the principals were in the lost database).
        await peer.dropSchema(of: catalog)
        let fresh = try await peer.freshCatalogSettings()
        let settingsFile = URL(fileURLWithPath: datas[0] + "/server.json")
        var settings = try JSONDecoder().decode(ServerHome.Settings.self, from: Data(contentsOf: settingsFile))
        settings.catalog = fresh
        try ServerHome(path: datas[0]).writeSettings(settings)
        let oldAdmin = try String(contentsOfFile: datas[0] + "/admin.credential", encoding: .utf8)
        let (rb, rbOut) = await redoubt("server rebuild-catalog --data '\(datas[0])' --json", in: dir,
                                        stdoutOnly: true)
        #expect(rb == 0, "rebuild-catalog: \(rbOut)")
        let report = try JSONDecoder().decode(RebuildReport.self, from: Data(rbOut.utf8))
        #expect(report.snapshots == listed.count && report.tenants == 1, "\(report)")
        #expect(report.toDo.contains { $0.contains("admin credential") }, "\(report.toDo)")
        #expect(try String(contentsOfFile: datas[0] + "/admin.credential", encoding: .utf8) != oldAdmin)
        let rebuilt = try await ServerHome(path: datas[0]).openCatalog()
        #expect(Set(try await rebuilt.snapshots(tenant: "acme").map(\.id)) == listed)
        // A second rebuild into the now full catalog is refused, and changes nothing.
        let (again2, again2Out) = await redoubt("server rebuild-catalog --data '\(datas[0])'", in: dir)
        #expect(again2 != 0 && again2Out.contains("empty database"), "second rebuild: \(again2Out)")
        await peer.dropSchema(of: fresh)
    }

    /// The `status` of check `id` in `doctor --json` output.
    func jsonStatus(_ json: String, _ id: String) -> String? {
        guard let data = json.data(using: .utf8),
              let checks = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]] else { return nil }
        return checks.first { $0["id"] as? String == id }?["status"] as? String
    }
}

/// Snapshots reported committed, by host and round.
final class Committed: Sendable {
    let list = Mutex<[(host: Int, id: SnapshotID, round: Int)]>([])
}

struct ClusterTestError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

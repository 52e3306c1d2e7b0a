import Foundation
import Testing
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer

/// What a cluster node accepts as its catalog's address, the cluster file it joins with, and
/// the refusal of backups while the primary bucket's proof has failed.
@Suite struct ClusterSettingsTests {
    @Test func theCatalogURLKeepsSecretsOutAndTLSOnOffLoopback() throws {
        let ok = try CatalogSettings(url: "postgres://redoubt@db.example.net:6432/backups?sslrootcert=/etc/ca.pem")
            .target()
        #expect(ok.host == "db.example.net" && ok.port == 6432 && ok.database == "backups" && ok.user == "redoubt")
        #expect(ok.tls == .verifyFull && ok.rootCertificate == "/etc/ca.pem" && ok.schema == nil)
        #expect(try CatalogSettings(url: "postgresql://u@127.0.0.1/db?sslmode=disable&search_path=node_a").target()
            .schema == "node_a")
        func refused(_ url: String, _ words: String) {
            do {
                _ = try CatalogSettings(url: url).target()
                Issue.record("\(url) was accepted")
            } catch let e as ServerError {
                #expect(e.message.contains(words), "\(url): \(e.message)")
                // A password never reaches a message.
                #expect(!e.message.contains("hunter2"), "\(e.message)")
            } catch { Issue.record("\(url): \(error)") }
        }
        refused("postgres://u:hunter2@db.example.net/db", "password does not belong in the URL")
        refused("postgres://u@db.example.net/db?sslmode=disable", "only to a loopback address")
        refused("postgres://u@db.example.net/db?sslmode=prefer", "sslmode must be")
        refused("postgres://db.example.net/db", "name the user")
        refused("postgres://u@db.example.net/", "name the database")
        refused("mysql://u@db.example.net/db", "postgres://USER@HOST")
        refused("postgres://u@127.0.0.1/db?search_path=x;drop", "search_path")
        refused("postgres://u@127.0.0.1/db?options=-c", "unknown parameter")
    }

    @Test func aPasswordComesFromItsFileAtEachOpen() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-pw-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("pw").path
        try "first\n".write(toFile: file, atomically: true, encoding: .utf8)
        let s = CatalogSettings(url: "postgres://u@127.0.0.1/db?sslmode=disable", passwordFile: file)
        #expect(try s.password() == "first")
        try "second".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try s.password() == "second")
        try FileManager.default.removeItem(atPath: file)
        #expect(throws: ServerError.self) { try s.password() }
    }

    @Test func aNodeWithALocalCatalogOrStoreHasNoClusterFileAndJoinChecksTheFile() async throws {
        let server = try await TestServer.start(inMemory: true)
        defer { Task { await server.stop() } }
        let out = server.dir.appendingPathComponent("cluster.json").path
        // A local store (and the embedded catalog) shares nothing: there is nothing to join.
        #expect(throws: ServerError.self) { try server.home.writeClusterFile(to: out) }
        #expect(!FileManager.default.fileExists(atPath: out))
        // Something that is not a cluster file is refused before anything is written.
        try Data("{\"version\": 1}".utf8).write(to: URL(fileURLWithPath: out))
        let node = ServerHome(path: server.dir.appendingPathComponent("node2").path)
        await #expect(throws: ServerError.self) {
            _ = try await node.join(from: out, listen: "127.0.0.1:1", now: Date())
        }
        #expect(!FileManager.default.fileExists(atPath: node.root.path))
        // The data directory of a running server is never overwritten by a join.
        await #expect(throws: ServerError.self) {
            _ = try await server.home.join(from: out, listen: "127.0.0.1:1", now: Date())
        }
    }

    @Test func whileTheBucketsDailyProofFailsNoBackupIsTaken() async throws {
        let server = try await TestServer.start(inMemory: true)
        defer { Task { await server.stop() } }
        let keys = try TenantKeys.generate()
        try await server.createTenant("acme", keys: keys)
        let (cfg, host) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        defer { Task { await host.shutdown() } }
        let (packs, manifest) = try makeSnapshot(keys: try cfg.writeKeySet(), files: [("a", Array("hello".utf8))])
        server.service.setStoreUnproved("a locked version was deleted")
        let e = await refused("E_UNENFORCED", "upload while the bucket is unproved") {
            for p in packs { try await host.upload(pack: p) }
        }
        #expect(e?.status == 503 && (e?.message.contains("daily Object Lock proof") ?? false))
        await refused("E_UNENFORCED", "commit while the bucket is unproved") {
            try await host.commit(manifest: manifest)
        }
        #expect(try await server.admin.snapshots().isEmpty)
        // A passing proof lifts it.
        server.service.setStoreUnproved(nil)
        for p in packs { try await host.upload(pack: p) }
        try await host.commit(manifest: manifest)
        #expect(try await server.admin.snapshots().map(\.id) == [manifest.id.description])
    }
}

import Crypto
import Foundation
import NIOHTTP1
import Testing
import RedoubtClient
import RedoubtCore
import RedoubtKMS
@testable import RedoubtServer

/// The threat model as the acceptance test (DESIGN.md §1): a host's own credentials, in
/// an attacker's hands, over real TLS against a real server.
@Suite(.serialized) struct ServerSecurityTests {
    func randomBytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255) } }

    struct World {
        let server: TestServer
        let keys: TenantKeys
        let writerConfig: ClientConfig
        let writer: APIClient
        let restorerConfig: ClientConfig
        let restorer: APIClient

        func stop() async {
            await writer.shutdown()
            await restorer.shutdown()
            await server.stop()
        }
    }

    func world() async throws -> World {
        let server = try await TestServer.start()
        let keys = try TenantKeys.generate()
        try await server.createTenant("acme", keys: keys)
        let (wc, w) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let (rc, r) = try await server.enroll(tenant: "acme", role: "restorer", name: "vault")
        return World(server: server, keys: keys, writerConfig: wc, writer: w, restorerConfig: rc, restorer: r)
    }

    /// Backs up one snapshot through the API and returns it.
    func backup(_ w: World, files: [(String, [UInt8])]) async throws -> ([FinishedPack], Manifest, Wire.SnapshotInfo) {
        let keys = try w.writerConfig.writeKeySet()
        let (packs, manifest) = try makeSnapshot(keys: keys, files: files)
        for p in packs { _ = try await w.writer.uploadPack(id: p.id, bytes: p.bytes) }
        let info = try await w.writer.commit(manifestBytes: manifest.bytes)
        return (packs, manifest, info)
    }

    @Test func aHostBacksUpAndARestorerReadsItBack() async throws {
        let w = try await world()
        let data = randomBytes(3 << 20)
        let (_, manifest, info) = try await backup(w, files: [("a.bin", data), ("empty", [])])
        #expect(info.id == manifest.id.description)
        #expect(info.retainUntil.timeIntervalSince(info.committedAt) >= 30 * 86400 - 1)

        // The restorer unwraps the read key (in memory) and reads the snapshot back.
        let wrapped = try w.restorerConfig.wrappedReadKey()
        let readKey = try await PassphraseKeyProvider(passphrase: SecretBytes(copying: Array("pw".utf8)),
            logN: 10).unwrap(wrapped, context: KeyContext(tenant: "acme", keyVersion: 1))
        let mbytes = try await w.restorer.manifestBytes(String(info.id.prefix(12)))
        let m = try Manifest.parse(mbytes, expectedID: manifest.id)
        var packs: [PackID: [UInt8]] = [:]
        for p in m.header.packs { packs[p] = try await w.restorer.packBytes(p) }
        let reader = try SnapshotReader(manifest: m, readKey: readKey,
            chunkIDKey: try w.restorerConfig.sharedMaterial().chunkIDKey) {
            packs[$0]!
        }
        let root = try reader.rootTree()
        #expect(try reader.contents(of: root[Array("a.bin".utf8)]!) == data)
        #expect(try reader.contents(of: root[Array("empty".utf8)]!) == [])
        let report = try await w.restorer.verify(info.id)
        #expect(report.damaged.isEmpty && report.missing.isEmpty && report.packsChecked == m.header.packs.count)
        await w.stop()
    }

    @Test func aHostsOwnCredentialCannotDeleteOverwriteOrReadItsBackups() async throws {
        let w = try await world()
        let (packs, manifest, info) = try await backup(w, files: [("secret.txt", Array("the crown jewels".utf8))])
        let pack = packs[0]

        var refusals: [String] = []
        func expectRefused(_ method: HTTPMethod, _ path: String, body: [UInt8]? = nil) async {
            do {
                _ = try await w.writer.send(method, path, body: body)
                Issue.record("\(method) \(path) was allowed for a writer")
            } catch let e as APIError {
                #expect(e.status == 403, "\(method) \(path): \(e)")
                refusals.append("\(method) \(path)")
            } catch { Issue.record("\(method) \(path): \(error)") }
        }
        // Delete, by every path an attacker might guess.
        await expectRefused(.DELETE, "/v1/packs/\(pack.id)")
        await expectRefused(.DELETE, "/v1/snapshots/\(manifest.id)")
        await expectRefused(.DELETE, "/v1/tenants/acme")
        await expectRefused(.POST, "/v1/snapshots/\(manifest.id)/delete")
        await expectRefused(.PATCH, "/v1/snapshots/\(manifest.id)",
            body: Array(#"{"retainUntil":"2000-01-01T00:00:00Z"}"#.utf8))
        await expectRefused(.PUT, "/v1/snapshots/\(manifest.id)", body: Array(manifest.bytes.reversed()))
        // Read back its own data.
        await expectRefused(.GET, "/v1/packs/\(pack.id)")
        await expectRefused(.GET, "/v1/snapshots/\(manifest.id)/manifest")
        // Admin actions.
        await expectRefused(.POST, "/v1/tenants", body: Array("{}".utf8))
        await expectRefused(.POST, "/v1/tenants/acme/enrollments",
            body: Array(#"{"role":"writer","name":"evil"}"#.utf8))
        await expectRefused(.GET, "/v1/audit")
        // The tenant's write material: neither read (sealed or not) nor replaced by a host.
        await expectRefused(.GET, "/v1/tenants/acme/write-material")
        await expectRefused(.PUT, "/v1/tenants/acme/write-material",
            body: Array(#"{"writeMaterial":"UkRCVFdLUzE="}"#.utf8))

        // Overwrite: a re-upload under the same ID with other bytes changes nothing.
        var tampered = pack.bytes
        tampered[tampered.count / 2] ^= 0xff
        let r = try await w.writer.uploadPack(id: pack.id, bytes: tampered)
        #expect(r.created == false)
        let truncated = try await w.writer.uploadPack(id: pack.id, bytes: [])
        #expect(truncated.created == false)
        // And a pack whose bytes do not hash to its name is refused.
        await #expect(throws: APIError.self) {
            try await w.writer.uploadPack(id: PackID(bytes: [UInt8](repeating: 7, count: 32))!, bytes: tampered)
        }

        // Everything is intact: the restorer gets the original bytes, verify passes.
        #expect(try await w.restorer.packBytes(pack.id) == pack.bytes)
        #expect(try await w.restorer.manifestBytes(info.id) == manifest.bytes)
        #expect(try await w.restorer.verify(info.id).damaged.isEmpty)

        // Every refusal is in the audit log, naming the writer.
        let audit = try await w.server.admin.audit()
        let denied = audit.filter { $0.outcome == "denied" && $0.actor == "writer:acme/web1" }
        #expect(denied.count >= refusals.count)
        #expect(try await w.server.service.catalog.verifyAudit().firstBad == nil)
        await w.stop()
    }

    @Test func aHostSeesOnlyItsOwnSnapshotsMetadata() async throws {
        let w = try await world()
        _ = try await backup(w, files: [("x", [1, 2, 3])])
        let (_, other) = try await w.server.enroll(tenant: "acme", role: "writer", name: "db1")
        let list = try await other.snapshots()
        #expect(list.isEmpty)
        await #expect(throws: APIError.self) { try await other.snapshots(host: "web1") }
        #expect(try await w.writer.snapshots().count == 1)
        await other.shutdown()
        await w.stop()
    }

    @Test func commitsThatLieAreRefusedAndChangeNothing() async throws {
        let w = try await world()
        let keys = try w.writerConfig.writeKeySet()
        // Signed by a key that is not the host's registered key.
        let impostor = WriteKeySet(tenant: "acme", host: "web1", shared: keys.shared, signingKey: .generate())
        let (p1, m1) = try makeSnapshot(keys: impostor, files: [("a", [1])])
        for p in p1 { _ = try await w.writer.uploadPack(id: p.id, bytes: p.bytes) }
        await #expect(throws: APIError.self) { try await w.writer.commit(manifestBytes: m1.bytes) }
        // Naming another host.
        let otherHost = WriteKeySet(tenant: "acme", host: "db1", shared: keys.shared, signingKey: keys.signingKey)
        let (p2, m2) = try makeSnapshot(keys: otherHost, files: [("b", [2])])
        for p in p2 { _ = try await w.writer.uploadPack(id: p.id, bytes: p.bytes) }
        await #expect(throws: APIError.self) { try await w.writer.commit(manifestBytes: m2.bytes) }
        // Naming packs that were never uploaded.
        let (_, m3) = try makeSnapshot(keys: keys, files: [("c", [3])])
        do {
            _ = try await w.writer.commit(manifestBytes: m3.bytes)
            Issue.record("commit without packs accepted")
        } catch let e as APIError { #expect(e.code == "E_PACKS_MISSING") }
        // Sealed to another tenant's read key.
        let foreign = try TenantKeys.generate()
        let foreignKeys = WriteKeySet(tenant: "acme", host: "web1", shared: foreign.sharedWriteMaterial,
            signingKey: keys.signingKey)
        let (p4, _) = try makeSnapshot(keys: foreignKeys, files: [("d", [4])])
        await #expect(throws: APIError.self) { try await w.writer.uploadPack(id: p4[0].id, bytes: p4[0].bytes) }
        #expect(try await w.writer.snapshots().isEmpty)
        await w.stop()
    }

    @Test func withoutAClientCertificateOnlyHealthAndEnrollAnswer() async throws {
        let server = try await TestServer.start()
        let caPEM = try server.home.tlsMaterial().caCertPEM
        let der = Array(Data(base64Encoded: caPEM.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined())!)
        let anon = try APIClient(url: server.url, caDER: der)
        #expect(try await anon.health()["status"] == "ok")
        for path in ["/v1/snapshots", "/v1/tenants", "/v1/audit"] {
            do {
                _ = try await anon.send(.GET, path)
                Issue.record("\(path) answered without a certificate")
            } catch let e as APIError { #expect(e.status == 401) }
        }
        // A used token cannot be used twice.
        let keys = try TenantKeys.generate()
        try await server.createTenant("t1", keys: keys)
        let token = try await server.admin.createEnrollment(tenant: "t1", role: "writer", name: "h",
            ttlSeconds: 3600).token
        _ = try await ClientConfig.enroll(token: token,
            into: ClientConfig(path: server.dir.appendingPathComponent("c1").path), os: nil)
        await #expect(throws: APIError.self) {
            try await ClientConfig.enroll(token: token,
                into: ClientConfig(path: server.dir.appendingPathComponent("c2").path), os: nil)
        }
        await anon.shutdown()
        await server.stop()
    }

    @Test func retentionOnlyMovesForwardEvenIfTheClockGoesBack() async throws {
        let w = try await world()
        let t0 = Date()
        w.server.clock.set(t0)
        let (packs, _, first) = try await backup(w, files: [("a", randomBytes(1000))])
        // The clock jumps back a year; a new snapshot must not get an earlier lock.
        w.server.clock.set(t0.addingTimeInterval(-365 * 86400))
        let (_, _, second) = try await backup(w, files: [("b", randomBytes(1000))])
        #expect(second.retainUntil >= first.retainUntil)
        #expect(second.committedAt >= first.committedAt)
        // Locks on the store are at least the snapshot's.
        let info = try await w.server.service.store.head(RepositoryService.packKey(tenant: "acme", id: packs[0].id))
        #expect(info?.retainUntil.map { $0 >= first.retainUntil } == true)
        // And the store refuses to delete a locked pack, whatever the caller.
        await #expect(throws: (any Error).self) {
            try await w.server.service.store.delete(RepositoryService.packKey(tenant: "acme", id: packs[0].id),
                now: Date())
        }
        await w.stop()
    }

    @Test func sealedPacksCarryTheImmutableFlag() async throws {
        let w = try await world()
        let (packs, manifest, _) = try await backup(w, files: [("a", randomBytes(5000))])
        let store = URL(fileURLWithPath: w.server.home.storePath)
        let packPath = store.appendingPathComponent(RepositoryService.packKey(tenant: "acme",
            id: packs[0].id).path).path
        let manifestPath = store.appendingPathComponent(RepositoryService.manifestKey(tenant: "acme",
            id: manifest.id).path).path
        let attrs = try FileManager.default.attributesOfItem(atPath: store.path)
        #expect((attrs[.posixPermissions] as? Int) == 0o700)
        guard getuid() == 0 else { return }
        for path in [packPath, manifestPath] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/lsattr")
            p.arguments = [path]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = Pipe()
            try p.run()
            p.waitUntilExit()
            let flags = String(decoding: out.fileHandleForReading.readDataToEndOfFile(),
                as: UTF8.self).split(separator: " ").first ?? ""
            if p.terminationStatus == 0 {
                #expect(flags.contains("i"), "lsattr \(path): \(flags)")
                // Root on the repository host, without clearing the flag, cannot change it either.
                #expect(unlink(path) != 0)
                #expect(open(path, O_WRONLY | O_TRUNC) < 0)
            } else {
                Issue.record("lsattr failed on \(path): the filesystem may not support the immutable flag")
            }
        }
        await w.stop()
    }

    @Test(.sqliteCatalogOnly) func theAuditChainNamesTheFirstEditedRecord() async throws {
        let w = try await world()
        _ = try await backup(w, files: [("a", [1])])
        let before = try await w.server.service.catalog.verifyAudit()
        #expect(before.firstBad == nil && before.count >= 4)
        try await w.server.service.sqlite.db.write { db in
            try db.execute(sql: "UPDATE audit SET detail = 'nothing to see' WHERE seq = 3")
        }
        #expect(try await w.server.service.catalog.verifyAudit().firstBad == 3)
        await w.stop()
    }

    @Test(.sqliteCatalogOnly) func theAuditChainNamesADeletedRecord() async throws {
        let w = try await world()
        _ = try await backup(w, files: [("a", [1])])
        try await w.server.service.sqlite.db.write { db in try db.execute(sql: "DELETE FROM audit WHERE seq = 2") }
        #expect(try await w.server.service.catalog.verifyAudit().firstBad == 3)
        await w.stop()
    }

    @Test(.sqliteCatalogOnly) func theAuditChainNamesReorderedRecords() async throws {
        let w = try await world()
        _ = try await backup(w, files: [("a", [1])])
        // Swap the contents of records 2 and 3 while keeping the sequence numbers.
        try await w.server.service.sqlite.db.write { db in
            try db.execute(sql: "UPDATE audit SET seq = -2 WHERE seq = 2")
            try db.execute(sql: "UPDATE audit SET seq = 2 WHERE seq = 3")
            try db.execute(sql: "UPDATE audit SET seq = 3 WHERE seq = -2")
        }
        #expect(try await w.server.service.catalog.verifyAudit().firstBad == 2)
        await w.stop()
    }

    @Test(.sqliteCatalogOnly) func aTruncatedAuditLogFailsAgainstItsAnchoredHead() async throws {
        let w = try await world()
        _ = try await backup(w, files: [("a", [1])])
        let head = try await w.server.service.catalog.auditChainHead()
        #expect(head.seq >= 4)
        #expect(try await w.server.service.catalog.verifyAudit(anchor: head).firstBad == nil)
        try await w.server.service.sqlite.db.write {
            db in try db.execute(sql: "DELETE FROM audit WHERE seq = ?", arguments: [head.seq])
        }
        // The shortened chain is self-consistent; only the anchor exposes it.
        #expect(try await w.server.service.catalog.verifyAudit().firstBad == nil)
        #expect(try await w.server.service.catalog.verifyAudit(anchor: head).firstBad == head.seq)
        await w.stop()
    }

    @Test(.sqliteCatalogOnly) func theCatalogIsRebuiltFromTheStoreAlone() async throws {
        let w = try await world()
        let (packs1, m1, _) = try await backup(w, files: [("a", randomBytes(2 << 20)), ("b", Array("hello".utf8))])
        let (_, m2, _) = try await backup(w, files: [("c", randomBytes(1000))])
        let catalog = w.server.service.catalog
        let before = try await catalog.snapshots(tenant: "acme").map(\.id).sorted()
        let chunkIDs = try PackReader.inspect(packs1[0].bytes, expectedID: packs1[0].id).chunkIDs
        let locations = try await catalog.chunkLocations(tenant: "acme", ids: chunkIDs)
        let principals = try await catalog.principals(tenant: "acme").count
        await w.writer.shutdown()
        await w.restorer.shutdown()
        await w.server.admin.shutdown()
        await w.server.listener.stop()

        // Lose the catalog entirely (as after a disk failure), keep the store.
        try FileManager.default.removeItem(atPath: w.server.home.catalogPath)
        let report = try await CatalogRebuilder.rebuild(home: w.server.home, logger: .init(label: "test"))
        #expect(report.rejected.isEmpty, "\(report.rejected)")
        #expect(report.tenants == 1 && report.snapshots == 2)
        let rebuilt = try Catalog(path: w.server.home.catalogPath)
        #expect(try await rebuilt.snapshots(tenant: "acme").map(\.id).sorted() == before)
        #expect(Set(before) == Set([m1.id.description, m2.id.description]))
        #expect(try await rebuilt.chunkLocations(tenant: "acme", ids: chunkIDs) == locations)
        #expect(try rebuilt.tenant("acme")?.readKeyID == w.keys.readKey.publicKey.keyID.description)
        // Principals are not in the store: lost with the catalog, so re-enrollment is needed.
        #expect(try rebuilt.principals(tenant: "acme").count <= principals)
        _ = system("chattr -R -i '\(w.server.dir.path)' 2>/dev/null")
        try? FileManager.default.removeItem(at: w.server.dir)
    }

    @Test func anOversizedBodyIsRefusedWith413() async throws {
        let w = try await world()
        do {
            _ = try await w.writer.send(.POST, "/v1/chunks/query", body: [UInt8](repeating: 1, count: 100_001 * 32))
            Issue.record("an oversized chunk query was accepted")
        } catch let e as APIError {
            #expect(e.status == 413 && e.code == "E_TOO_LARGE", "\(e)")
        }
        await w.stop()
    }
}

import Foundation
import Logging
import NIOHTTP1
import Testing
import RedoubtClient
import RedoubtCore
import RedoubtKMS
import RedoubtStore
@testable import RedoubtServer

/// Rotation and crypto-shredding on the server's side, over real TLS against a real
/// server: who may fetch or replace a tenant's wrapped read key, what the server checks
/// of a new wrapping, and what a shred removes and leaves.
@Suite(.serialized) struct KeyCustodyTests {

    func provider(_ s: String) throws -> PassphraseKeyProvider {
        try PassphraseKeyProvider(passphrase: SecretBytes(copying: Array(s.utf8)), logN: 10)
    }

    func json(_ w: WrappedReadKey) throws -> String { String(decoding: try w.encoded(), as: UTF8.self) }

    /// Runs `body`, records what it throws, and shuts every client down either way
    /// (an HTTP client dropped without a shutdown traps).
    func withClients(_ server: TestServer, _ clients: [APIClient], _ body: () async throws -> Void) async {
        do { try await body() } catch { Issue.record("\(error)") }
        for c in clients { await c.shutdown() }
        await server.stop()
    }

    @Test func rotationRewrapsTheSameKeyAndRefusesAnythingElse() async throws {
        let server = try await TestServer.start()
        let keys = try TenantKeys.generate(), other = try TenantKeys.generate()
        try await server.createTenant("acme", keys: keys)
        try await server.createTenant("beta", keys: other)
        let (writerCfg, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let (_, restorer) = try await server.enroll(tenant: "acme", role: "restorer", name: "vault")
        let (_, betaRestorer) = try await server.enroll(tenant: "beta", role: "restorer", name: "vault-b")
        await withClients(server, [writer, restorer, betaRestorer]) {

        // A host's own credential may neither fetch nor replace the wrapped key, nor shred;
        // another tenant's restorer may not fetch it.
        let good = try json(try await provider("new").wrap(keys.readKey, context: KeyContext(tenant: "acme",
            keyVersion: 2)))
        let body = Array(try JSONEncoder().encode(Wire.RotateReadKeyRequest(wrappedReadKey: good)))
        for (client, method, path, b) in [(writer, HTTPMethod.GET, "/v1/tenants/acme/read-key", nil), (writer, .PUT,
            "/v1/tenants/acme/read-key", body),
                                          (writer, .POST, "/v1/tenants/acme/shred",
                                              Array(#"{"confirm":"acme","destroyedVersions":[]}"#.utf8)),
                                          (writer, .POST, "/v1/tenants/acme/read-key/destroyed",
                                              Array(#"{"versions":[1]}"#.utf8)),
                                          (restorer, .PUT, "/v1/tenants/acme/read-key", body), (betaRestorer, .GET,
                                              "/v1/tenants/acme/read-key", nil)] {
            do {
                _ = try await client.send(method, path, body: b)
                Issue.record("\(method) \(path) was allowed")
            } catch let e as APIError { #expect(e.status == 403, "\(method) \(path): \(e)") }
        }
        #expect(try await server.service.catalog.tenant("acme")?.keyVersion == 1)

        // The server refuses wrappings it can tell are wrong.
        func refused(_ w: String, _ why: String) async {
            do {
                _ = try await server.admin.rotateReadKey(tenant: "acme", wrappedReadKey: w)
                Issue.record("accepted: \(why)")
            } catch let e as APIError { #expect(e.status == 400, "\(why): \(e)") } catch {
                Issue.record("\(why): \(error)")
            }
        }
        await refused(try json(try await provider("x").wrap(keys.readKey, context: KeyContext(tenant: "acme",
            keyVersion: 1))), "same version again")
        await refused(try json(try await provider("x").wrap(keys.readKey, context: KeyContext(tenant: "acme",
            keyVersion: 3))), "a version skipped")
        await refused(try json(try await provider("x").wrap(keys.readKey, context: KeyContext(tenant: "beta",
            keyVersion: 2))), "another tenant's context")
        await refused(try json(try await provider("x").wrap(other.readKey, context: KeyContext(tenant: "acme",
            keyVersion: 2))), "another read key")
        await refused("{\"format\":1}", "not a wrapped key")
        #expect(try await server.service.catalog.tenant("acme")?.keyVersion == 1)

        // A proper rotation: version 2, the old KEK recorded by name only, the store's
        // descriptor replaced, and the restorer gets the new wrapping.
        let after = try await server.admin.rotateReadKey(tenant: "acme", wrappedReadKey: good)
        #expect(after.keyVersion == 2 && after.wrappedReadKey == good)
        let retired = try #require(after.retired.first)
        #expect(after.retired.count == 1 && retired.version == 1 && retired.destroyedAt == nil)
        let stub = try WrappedReadKey.decode(Data(retired.stub.utf8))
        #expect(stub.wrapped.isEmpty && stub.provider == "passphrase:" && stub.context.keyVersion == 1)
        let seen = try await restorer.readKey(tenant: "acme")
        #expect(seen.wrappedReadKey == good && seen.retired.isEmpty)
        let unwrapped = try await provider("new").unwrap(try WrappedReadKey.decode(Data(good.utf8)),
            context: KeyContext(tenant: "acme", keyVersion: 2))
        #expect(unwrapped.publicKey == keys.readKey.publicKey)
        let store = try LocalStore(root: URL(fileURLWithPath: server.home.storePath))
        #expect(try await store.head(RepositoryService.tenantKey("acme", version: 1)) == nil)
        #expect(try await store.head(RepositoryService.tenantKey("acme", version: 2)) != nil)

        // Backups go on as before: hosts seal to the public key, which did not change.
        let (packs, manifest) = try makeSnapshot(keys: try writerCfg.writeKeySet(), files: [("a",
            Array("after rotation".utf8))])
        for p in packs { _ = try await writer.uploadPack(id: p.id, bytes: p.bytes) }
        _ = try await writer.commit(manifestBytes: manifest.bytes)

        let audit = try await server.admin.audit().map(\.action)
        #expect(audit.contains("rotate-read-key") && audit.contains("get-read-key"))
        }
    }

    @Test(.sqliteCatalogOnly) func aShredRemovesEveryWrappedCopyTheServerHoldsAndNothingElse() async throws {
        let server = try await TestServer.start()
        let keys = try TenantKeys.generate()
        try await server.createTenant("acme", keys: keys)
        let (writerCfg, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let (_, restorer) = try await server.enroll(tenant: "acme", role: "restorer", name: "vault")
        let (packs, manifest) = try makeSnapshot(keys: try writerCfg.writeKeySet(), files: [("a",
            Array("doomed".utf8))])
        for p in packs { _ = try await writer.uploadPack(id: p.id, bytes: p.bytes) }
        let snap = try await writer.commit(manifestBytes: manifest.bytes)
        _ = try await server.admin.rotateReadKey(tenant: "acme", wrappedReadKey: try json(
            try await provider("v2").wrap(keys.readKey, context: KeyContext(tenant: "acme", keyVersion: 2))))
        let store = try LocalStore(root: URL(fileURLWithPath: server.home.storePath))
        let before = try await store.list(prefix: "t/acme/").filter { !$0.key.path.contains("/tenant-v") }

        // The name must be repeated.
        await #expect(throws: APIError.self) {
            try await server.admin.shredTenant(tenant: "acme", confirm: "acm", destroyedVersions: [])
        }
        #expect(try await server.service.catalog.tenant("acme")?.shreddedAt == nil)

        let info = try await server.admin.shredTenant(tenant: "acme", confirm: "acme", destroyedVersions: [2])
        #expect(info.wrappedReadKey == nil && info.shreddedAt != nil && info.keyVersion == 3)
        // No wrapped copy in the catalog or the store.
        let rec = try #require(try await server.service.catalog.tenant("acme"))
        #expect(rec.wrappedReadKey.isEmpty)
        let descriptors = try await store.list(prefix: "t/acme/").filter { $0.key.path.contains("/tenant-v") }
        #expect(descriptors.map(\.key.path) == ["t/acme/tenant-v3.json"])
        let d = String(decoding: try await store.get(descriptors[0].key), as: UTF8.self)
        #expect(!d.contains("\"wrapped\"") && d.contains("shreddedAt"))
        // Nor the write material: its chunk-ID key would still let whoever reads this disk
        // confirm guessed content in the ciphertext that stays.
        #expect(rec.writeMaterial.isEmpty && !d.contains("riteMaterial"))
        // Packs and manifests are untouched, locks included.
        let after = try await store.list(prefix: "t/acme/").filter { !$0.key.path.contains("/tenant-v") }
        #expect(after.map(\.key.path) == before.map(\.key.path))
        #expect(zip(after, before).allSatisfy { $0.retainUntil == $1.retainUntil && $0.size == $1.size })
        #expect(try await restorer.verify(snap.id).damaged.isEmpty)

        // The restorer learns the key is gone; the host can add nothing more; no new enrollments.
        do {
            _ = try await restorer.readKey(tenant: "acme")
            Issue.record("read key served after a shred")
        } catch let e as APIError {
            #expect(e.status == 410 && e.code == "E_TENANT_SHREDDED")
        }
        let (more, more2) = try makeSnapshot(keys: try writerCfg.writeKeySet(), files: [("b", Array("more".utf8))])
        do { _ = try await writer.uploadPack(id: more[0].id,
            bytes: more[0].bytes); Issue.record("upload accepted after a shred") } catch let e as APIError {
            #expect(e.code == "E_TENANT_SHREDDED")
        }
        await #expect(throws: APIError.self) { try await writer.commit(manifestBytes: more2.bytes) }
        await #expect(throws: APIError.self) {
            try await server.admin.createEnrollment(tenant: "acme", role: "restorer", name: "late", ttlSeconds: nil)
        }
        await #expect(throws: APIError.self) {
            try await server.admin.shredTenant(tenant: "acme", confirm: "acme", destroyedVersions: [])
        }

        // A catalog rebuilt from the store alone knows the tenant is shredded.
        await writer.shutdown()
        await restorer.shutdown()
        let audit = try await server.admin.audit()
        let shred = try #require(audit.last { $0.action == "shred-tenant" && $0.outcome == "ok" })
        #expect(shred.detail.contains("destroyed KEK versions=2") && shred.detail.contains("NOT destroyed=1"))
        await server.admin.shutdown()
        await server.listener.stop()
        _ = try await CatalogRebuilder.rebuild(home: server.home, logger: Logger(label: "test"))
        let rebuilt = try Catalog(path: server.home.catalogPath)
        let r = try #require(try rebuilt.tenant("acme"))
        #expect(r.shreddedAt != nil && r.wrappedReadKey.isEmpty && r.keyVersion == 3)
        _ = system("chattr -R -i '\(server.dir.path)' 2>/dev/null")
        try? FileManager.default.removeItem(at: server.dir)
    }

    /// What exists only in the catalog survives a rebuild from the store: the retired KEKs
    /// (their descriptors were deleted at rotation; without them a later shred would leave
    /// the old KEKs, and every copy wrapped under them, alive), copy targets and requests.
    @Test(.sqliteCatalogOnly) func aRebuildKeepsRetiredKEKsCopyTargetsAndRequests() async throws {
        let server = try await TestServer.start()
        try await server.createTenant("acme", keys: try TenantKeys.generate())
        let catalog = try server.service.sqlite
        let now = Date()
        try await catalog.db.write { db in
            try db.execute(sql: """
                INSERT INTO retired_keks(tenant, version, stub, retired_at) VALUES ('acme', 1, '{\"stub\":1}', ?)
                """,
                           arguments: [now.timeIntervalSince1970])
        }
        try catalog.insertCopyTarget(CopyTarget(
            info: Wire.CopyTargetInfo(id: "t1", tenant: "acme", url: "s3://b/p", endpoint: "https://s3.example",
                region: "us-east-1", marginSeconds: 0,
                                      acceptUnenforced: false, createdAt: now, lastProofAt: nil, lastProofOK: nil,
                                          lastProofDetail: nil,
                                      lastSyncAt: nil, lastSyncOK: nil, lastSyncDetail: nil),
            credentialsFile: nil, virtualHosted: false))
        let admin = try #require(try catalog.principals(tenant: nil).first { $0.role == .admin })
        try catalog.insertRequest(id: "r1", action: "remove-admin", object: "admin x", parameters: [:],
            requester: admin, now: now,
                                  expiresAt: now.addingTimeInterval(3600), needed: 1)
        await server.admin.shutdown()
        await server.listener.stop()
        _ = try await CatalogRebuilder.rebuild(home: server.home, logger: Logger(label: "test"))
        let rebuilt = try Catalog(path: server.home.catalogPath)
        #expect(try rebuilt.retiredKEKs(tenant: "acme").map(\.version) == [1])
        #expect(try await rebuilt.copyTargets().map(\.id) == ["t1"])
        #expect(try rebuilt.request("r1", now: now) != nil)
        _ = system("chattr -R -i '\(server.dir.path)' 2>/dev/null")
        try? FileManager.default.removeItem(at: server.dir)
    }
}

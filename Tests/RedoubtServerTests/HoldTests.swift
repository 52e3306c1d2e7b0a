import Foundation
import Logging
import NIOHTTP1
import Testing
import RedoubtAWS
import RedoubtClient
import RedoubtCore
import RedoubtKMS
import RedoubtStore
@testable import RedoubtServer

/// Legal holds against a real server (real SQLite, real files with real immutable flags)
/// and real LocalStack: a held snapshot outlives its retention, locally and in the copy,
/// until the hold is released through an approved request.
@Suite(.serialized) struct HoldTests {
    /// A server with tenant "acme", a writer, and two admins (so a release needs approval).
    func world() async throws -> (TestServer, APIClient, ClientConfig, APIClient) {
        let server = try await TestServer.start()
        try await server.createTenant("acme", keys: try TenantKeys.generate())
        let token = try await server.admin.addAdmin(name: "bob", ttlSeconds: nil, requestID: nil).token
        let cfg = ClientConfig(path: server.dir.appendingPathComponent("cfg-admin-bob").path)
        _ = try await ClientConfig.enroll(token: token, into: cfg, os: nil)
        let bob = try APIClient(credential: cfg.credential())
        let (wc, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        return (server, bob, wc, writer)
    }

    /// Uploads and commits one snapshot of `data`.
    func backup(_ writer: APIClient, _ wc: ClientConfig, _ data: [UInt8]) async throws -> (Wire.SnapshotInfo,
        [PackID]) {
        let (packs, manifest) = try makeSnapshot(keys: try wc.writeKeySet(), files: [("f", data)])
        for p in packs { _ = try await writer.uploadPack(id: p.id, bytes: p.bytes) }
        return (try await writer.commit(manifestBytes: manifest.bytes), packs.map(\.id))
    }

    func code(_ body: () async throws -> Void) async -> String? {
        do { try await body(); return nil } catch let e as APIError { return e.code } catch { return "\(error)" }
    }

    @Test func aHeldSnapshotOutlivesItsRetentionUntilAnApprovedRelease() async throws {
        let (server, bob, wc, writer) = try await world()
        let alice = server.admin
        let store = server.service.store
        do {
            let (held, heldPacks) = try await backup(writer, wc, (0..<150_000).map {
                UInt8(truncatingIfNeeded: $0 &* 7)
            })
            let (free, freePacks) = try await backup(writer, wc, (0..<150_000).map {
                UInt8(truncatingIfNeeded: $0 &* 13 &+ 1)
            })
            #expect(Set(heldPacks).isDisjoint(with: freePacks))
            let heldPack = try #require(heldPacks.first)
            let packKey = RepositoryService.packKey(tenant: "acme", id: heldPack)
            let freeKey = RepositoryService.packKey(tenant: "acme", id: try #require(freePacks.first))
            let manifestKey = RepositoryService.manifestKey(tenant: "acme", id: try #require(SnapshotID(hex: held.id)))

            // Only an admin may hold; a hold names one snapshot or one tenant.
            #expect(await code { _ = try await writer.placeHold(Wire.PlaceHoldRequest(snapshot: held.id, tenant: nil,
                reason: nil)) } == "E_FORBIDDEN")
            #expect(await code { _ = try await alice.placeHold(Wire.PlaceHoldRequest(snapshot: held.id, tenant: "acme",
                reason: nil)) } == "E_BAD_REQUEST")
            #expect(await code { _ = try await alice.placeHold(Wire.PlaceHoldRequest(snapshot: "00000000", tenant: nil,
                reason: nil)) } == "E_NOT_FOUND")

            // Placing a hold is immediate (a prefix names the snapshot), even with two admins.
            let hold = try await alice.placeHold(Wire.PlaceHoldRequest(snapshot: String(held.id.prefix(12)),
                tenant: nil, reason: "case 2026-17"))
            #expect(hold.kind == "snapshot" && hold.target == held.id && hold.releasedAt == nil
                && hold.reason == "case 2026-17")
            #expect(try await server.service.catalog.isHeld(snapshot: held.id))
            #expect(try await server.service.catalog.isHeld(tenant: "acme", pack: heldPack.description))
            #expect(try await !server.service.catalog.isHeld(snapshot: free.id))
            #expect(try await !server.service.catalog.isHeld(key: freeKey))

            // The clock passes the retention of both snapshots; the hold check runs.
            let later = held.retainUntil.addingTimeInterval(3 * 86400)
            server.clock.set(later)
            try await server.service.enforceHolds()
            for key in [packKey, manifestKey] {
                let info = try #require(try await store.head(key))
                #expect((info.retainUntil ?? .distantPast) >= later.addingTimeInterval(RepositoryService.holdLead),
                    "\(key.path)")
                #expect(info.enforced, "\(key.path) lost its immutable flag")
                // An attacker on the server host (or a prune) tries to delete it: refused.
                await #expect(throws: StoreError.self) { try await store.delete(key, now: later) }
                #expect(try await store.head(key) != nil)
            }
            let catalogLock = try #require(try await server.service.catalog.pack(tenant: "acme",
                id: heldPack.description)).retainUntil
            #expect(catalogLock > later)
            // The unheld snapshot's retention really has passed: its pack can go.
            try await store.delete(freeKey, now: later)
            #expect(try await store.head(freeKey) == nil)

            // Releasing needs another admin's approval.
            #expect(await code { _ = try await alice.releaseHold(id: hold.id,
                requestID: nil) } == "E_APPROVAL_REQUIRED")
            let req = try #require(try await alice.requests().first { $0.action == "release-hold" })
            #expect(req.object == "hold \(hold.id)")
            #expect(await code { _ = try await alice.releaseHold(id: hold.id,
                requestID: req.id) } == "E_APPROVAL_PENDING")
            #expect(try await server.service.catalog.isHeld(snapshot: held.id))
            _ = try await bob.decide(request: req.id, approve: true)
            let released = try await alice.releaseHold(id: hold.id, requestID: req.id)
            #expect(released.releasedAt != nil && released.releaseRequest == req.id)
            #expect(await code { _ = try await alice.releaseHold(id: hold.id, requestID: req.id) } == "E_CONFLICT")
            #expect(try await !server.service.catalog.isHeld(snapshot: held.id))

            // Released: the hold no longer extends, and once its last lock passes the pack can go.
            let lockAfterRelease = try #require(try await store.head(packKey)?.retainUntil)
            let muchLater = lockAfterRelease.addingTimeInterval(86400)
            server.clock.set(muchLater)
            try await server.service.enforceHolds()
            #expect(try await store.head(packKey)?.retainUntil == lockAfterRelease)
            try await store.delete(packKey, now: muchLater)
            #expect(try await store.head(packKey) == nil)

            let list = try await alice.holds()
            #expect(list.map(\.id) == [hold.id])
            let actions = try await alice.audit(limit: 10_000).map(\.action)
            #expect(actions.contains("place-hold") && actions.contains("release-hold"))
        } catch { Issue.record("\(error)") }
        await writer.shutdown()
        await bob.shutdown()
        await server.stop()
    }

    @Test(.sqliteCatalogOnly) func aTenantHoldCoversFutureSnapshotsAndBlocksTheShred() async throws {
        let (server, bob, wc, writer) = try await world()
        let alice = server.admin
        do {
            let hold = try await alice.placeHold(Wire.PlaceHoldRequest(snapshot: nil, tenant: "acme", reason: nil))
            #expect(hold.kind == "tenant" && hold.target == "acme")
            // A snapshot committed after the hold is covered too.
            let (snap, packs) = try await backup(writer, wc, Array(repeating: 42, count: 70_000))
            #expect(try await server.service.catalog.isHeld(snapshot: snap.id))
            let pack = try #require(packs.first)
            #expect(try await server.service.catalog.isHeld(tenant: "acme", pack: pack.description))
            server.clock.set(snap.retainUntil.addingTimeInterval(86400))
            try await server.service.enforceHolds()
            let info = try #require(try await server.service.store.head(RepositoryService.packKey(tenant: "acme",
                id: pack)))
            #expect((info.retainUntil ?? .distantPast) > server.clock.now() && info.enforced)
            // A shred would make the held snapshots unreadable: refused while held.
            #expect(await code { _ = try await alice.shredTenant(tenant: "acme", confirm: "acme", destroyedVersions: [],
                check: true) } == "E_HELD")
            #expect(await code { _ = try await alice.placeHold(Wire.PlaceHoldRequest(snapshot: nil, tenant: "nobody",
                reason: nil)) } == "E_NOT_FOUND")
            // A catalog rebuild from the store keeps the hold (it is not in the store).
            var quiet = Logger(label: "test.rebuild")
            quiet.logLevel = .warning
            _ = try await CatalogRebuilder.rebuild(home: server.home, clock: server.clock, logger: quiet)
            let rebuilt = try Catalog(path: server.home.catalogPath)
            #expect(try rebuilt.holds(active: true).map(\.id) == [hold.id])
            #expect(try rebuilt.isHeld(snapshot: snap.id))
        } catch { Issue.record("\(error)") }
        await writer.shutdown()
        await bob.shutdown()
        await server.stop()
    }

    /// The copy: held objects' original versions carry an S3 legal hold in real LocalStack.
    @Test func heldObjectsGetAnS3LegalHoldInTheCopyLiftedAfterRelease() async throws {
        guard let env = peerEnvironment("REDOUBT_TEST_LOCALSTACK"),
              let ls = env["REDOUBT_TEST_LOCALSTACK"].flatMap(URL.init(string:)) else { return }
        let (server, bob, wc, writer) = try await world()
        let alice = server.admin
        let creds = server.dir.appendingPathComponent("s3-credentials").path
        try "[default]\naws_access_key_id = test\naws_secret_access_key = test\n".write(toFile: creds, atomically: true,
            encoding: .utf8)
        do {
            let name = "redoubt-hold-\(UInt32.random(in: 0 ... .max))"
            let s3 = AWSCredentials(accessKeyID: "test", secretAccessKey: "test")
            let bucketClient = S3Client(location: S3Location(endpoint: ls, region: "us-east-1", bucket: name),
                credentials: s3)
            #expect(try await bucketClient.send(.PUT, key: nil, headers: [("x-amz-bucket-object-lock-enabled",
                "true")]).status == 200)
            let t = try await alice.addCopyTarget(Wire.AddCopyTargetRequest(
                tenant: "acme", url: "s3://\(name)/redoubt", endpoint: ls.absoluteString, region: "us-east-1",
                    credentialsFile: creds,
                virtualHosted: false, marginSeconds: 0, acceptUnenforced: false, requestID: nil))
            let (snap, packs) = try await backup(writer, wc, (0..<90_000).map { UInt8(truncatingIfNeeded: $0 &* 3) })
            let hold = try await alice.placeHold(Wire.PlaceHoldRequest(snapshot: snap.id, tenant: nil,
                reason: "matter 9"))
            let synced = try await alice.syncCopyTarget(id: t.id, wait: true)
            #expect(synced.lastSyncOK == true, "\(synced.lastSyncDetail ?? "")")
            // Placing the hold queued a sync of its own; one of the two set the legal holds (pack + manifest at least).
            let syncs = try await alice.audit(limit: 10_000).filter { $0.action == "copy-sync" && $0.outcome == "ok" }
            #expect(syncs.contains { $0.detail.contains("legal hold(s)") && !$0.detail.contains(", 0 legal hold(s)") },
                "\(syncs.map(\.detail))")

            let bucket = S3Store(client: S3Client(location: S3Location(endpoint: ls, region: "us-east-1", bucket: name,
                prefix: "redoubt"), credentials: s3))
            let packKey = RepositoryService.packKey(tenant: "acme", id: try #require(packs.first))
            let manifestKey = RepositoryService.manifestKey(tenant: "acme", id: try #require(SnapshotID(hex: snap.id)))
            #expect(try await bucket.legalHold(packKey) == true)
            #expect(try await bucket.legalHold(manifestKey) == true)
            // An attacker with the bucket's credentials deletes the version itself: refused.
            let name_ = bucket.client.objectName(packKey.path)
            let listing = try await bucketClient.send(.GET, key: nil, query: [("prefix", name_), ("versions", "")])
            let version = try #require(S3XML.listObjectVersions(listing.body)?.versions.first {
                $0.key == name_ && !$0.isDeleteMarker
            })
            let del = try await bucketClient.send(.DELETE, key: name_, query: [("versionId", version.versionID)])
            #expect(del.status == 403 || del.status == 400, "DeleteObject of a held version answered \(del.status)")
            #expect(try await bucket.head(packKey) != nil)

            // Released through an approved request: the next sync lifts the S3 legal hold.
            #expect(await code { _ = try await alice.releaseHold(id: hold.id,
                requestID: nil) } == "E_APPROVAL_REQUIRED")
            let req = try #require(try await alice.requests().first { $0.action == "release-hold" })
            _ = try await bob.decide(request: req.id, approve: true)
            _ = try await alice.releaseHold(id: hold.id, requestID: req.id)
            let again = try await alice.syncCopyTarget(id: t.id, wait: true)
            #expect(again.lastSyncOK == true, "\(again.lastSyncDetail ?? "")")
            #expect(try await bucket.legalHold(packKey) == false)
            #expect(try await bucket.legalHold(manifestKey) == false)
            #expect(try await alice.audit(limit: 10_000).contains {
                $0.action == "copy-sync" && $0.detail.contains("lifted") && !$0.detail.contains(" 0 lifted")
            })
        } catch { Issue.record("\(error)") }
        await writer.shutdown()
        await bob.shutdown()
        await server.stop()
    }

    /// The store primitive alone: a legal hold, and nothing else, keeps a version from deletion.
    @Test func anS3LegalHoldAloneRefusesTheDeletionOfAVersion() async throws {
        guard let env = peerEnvironment("REDOUBT_TEST_LOCALSTACK"),
              let ls = env["REDOUBT_TEST_LOCALSTACK"].flatMap(URL.init(string:)) else { return }
        let name = "redoubt-lh-\(UInt32.random(in: 0 ... .max))"
        let s3 = AWSCredentials(accessKeyID: "test", secretAccessKey: "test")
        let bucketClient = S3Client(location: S3Location(endpoint: ls, region: "us-east-1", bucket: name),
            credentials: s3)
        #expect(try await bucketClient.send(.PUT, key: nil, headers: [("x-amz-bucket-object-lock-enabled",
            "true")]).status == 200)
        let store = S3Store(client: bucketClient)
        let key = try #require(ObjectKey("t/x/packs/ab/abcd"))
        // no retention: only the hold protects it
        _ = try await store.put(key, Array("held bytes".utf8), retainUntil: nil)
        try await store.setLegalHold(key, on: true)
        #expect(try await store.legalHold(key) == true)
        let listing = try await bucketClient.send(.GET, key: nil, query: [("prefix", key.path), ("versions", "")])
        let version = try #require(S3XML.listObjectVersions(listing.body)?.versions.first { $0.key == key.path })
        let refused = try await bucketClient.send(.DELETE, key: key.path, query: [("versionId", version.versionID)])
        #expect(refused.status == 403 || refused.status == 400,
            "DeleteObject of a held version answered \(refused.status)")
        #expect(try await store.get(key) == Array("held bytes".utf8))
        try await store.setLegalHold(key, on: false)
        #expect(try await store.legalHold(key) == false)
        let allowed = try await bucketClient.send(.DELETE, key: key.path, query: [("versionId", version.versionID)])
        #expect(allowed.status == 204, "DeleteObject after the hold was lifted answered \(allowed.status)")
    }
}

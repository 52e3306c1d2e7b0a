import Foundation
import Logging
import Testing
import RedoubtClient
import RedoubtCore
import RedoubtStore
@testable import RedoubtServer

/// Garbage collection (docs/PROTOCOL.md §4.5) against a real server and store: only what
/// no lock protects goes; a host's newest snapshot, held snapshots and every pack a
/// remaining snapshot names stay and still restore; a host cannot trigger it.
@Suite(.serialized, .timeLimit(.minutes(5))) struct GCTests {
    func randomBytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255) } }

    struct Committed {
        let manifest: Manifest
        let packs: [FinishedPack]
        let data: [UInt8]
    }

    func commit(_ cfg: ClientConfig, _ client: APIClient, alsoNaming: [PackID] = []) async throws -> Committed {
        let data = randomBytes(100 << 10)
        let (packs, manifest) = try makeSnapshot(keys: try cfg.writeKeySet(), files: [("f.bin", data)],
            alsoNaming: alsoNaming)
        for p in packs { _ = try await client.uploadPack(id: p.id, bytes: p.bytes) }
        _ = try await client.commit(manifestBytes: manifest.bytes)
        return Committed(manifest: manifest, packs: packs, data: data)
    }

    @Test func onlyWhatNoLockProtectsGoesAndWhatStaysRestores() async throws {
        let server = try await TestServer.start(minRetention: 86400)
        var clients: [APIClient] = []
        do {
            let keys = try TenantKeys.generate()
            try await server.createTenant("acme", keys: keys)
            let (c1, web1) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
            let (c2, web2) = try await server.enroll(tenant: "acme", role: "writer", name: "web2")
            let (_, restorer) = try await server.enroll(tenant: "acme", role: "restorer", name: "vault")
            clients += [web1, web2, restorer]
            let admin = server.admin
            let t0 = server.clock.now()

            // web1: s1, then s2 reusing s1's pack (held), then s4 (its newest).
            // web2: s5, then s3 (its newest). And a pack uploaded by a backup that never committed.
            let s1 = try await commit(c1, web1)
            let s5 = try await commit(c2, web2)
            server.clock.set(t0.addingTimeInterval(3600))
            let s2 = try await commit(c1, web1, alsoNaming: s1.packs.map(\.id))
            let s3 = try await commit(c2, web2)
            server.clock.set(t0.addingTimeInterval(7200))
            let s4 = try await commit(c1, web1)
            let (orphanPacks, _) = try makeSnapshot(keys: try c1.writeKeySet(), files: [("never-committed",
                randomBytes(50 << 10))])
            for p in orphanPacks { _ = try await web1.uploadPack(id: p.id, bytes: p.bytes) }
            _ = try await admin.placeHold(Wire.PlaceHoldRequest(snapshot: s2.manifest.id.description, tenant: nil,
                reason: "case 7"))

            // A host's or a restorer's credential cannot collect.
            await refused("E_FORBIDDEN", "a host running gc") {
                _ = try await web1.collectGarbage(tenant: "acme", dryRun: false)
            }
            await refused("E_FORBIDDEN", "a restorer running gc") {
                _ = try await restorer.collectGarbage(tenant: "acme", dryRun: true)
            }

            // While the locks hold, nothing goes.
            let early = try await admin.collectGarbage(tenant: "acme", dryRun: false)
            #expect(early.snapshotsRemoved.isEmpty && early.packsRemoved == 0, "\(early)")
            #expect(try await admin.snapshots().count == 5)

            // Nine days on: every snapshot and pack lock has expired, and the grace for packs no snapshot names has
            // passed.
            server.clock.set(t0.addingTimeInterval(9 * 86400))
            let dry = try await admin.collectGarbage(tenant: "acme", dryRun: true)
            let gone = Set([s1.manifest.id.description, s5.manifest.id.description])
            #expect(Set(dry.snapshotsRemoved) == gone, "\(dry)")
            #expect(dry.keptNewest == 2 && dry.keptHeld == 1 && dry.packsRemoved == s5.packs.count + orphanPacks.count,
                "\(dry)")
            #expect(try await admin.snapshots().count == 5, "a dry run changes nothing")

            let run = try await admin.collectGarbage(tenant: "acme", dryRun: false)
            #expect(Set(run.snapshotsRemoved) == gone && run.packsRemoved == dry.packsRemoved
                && run.pendingDeletes == 0, "\(run)")
            #expect(run.bytesRemoved == Int64((s5.packs + orphanPacks).reduce(0) { $0 + $1.bytes.count }))
            let left = Set(try await admin.snapshots().map(\.id))
            #expect(left == Set([s2, s3, s4].map { $0.manifest.id.description }))

            // The store: what went is gone, what stays is there.
            let store = try LocalStore(root: URL(fileURLWithPath: server.home.storePath))
            for p in s5.packs + orphanPacks {
                #expect(try await store.head(RepositoryService.packKey(tenant: "acme", id: p.id)) == nil,
                    "pack \(p.id) still stored")
            }
            #expect(try await store.head(RepositoryService.manifestKey(tenant: "acme", id: s1.manifest.id)) == nil)
            for p in s1.packs + s2.packs + s3.packs + s4.packs {
                #expect(try await store.head(RepositoryService.packKey(tenant: "acme", id: p.id)) != nil,
                    "pack \(p.id) was removed")
            }
            // The chunk index forgets removed packs: a backup of that data uploads it again.
            let removedChunks = try PackReader.inspect(s5.packs[0].bytes, expectedID: s5.packs[0].id).chunkIDs
            #expect(try await web2.chunkLocations(removedChunks).isEmpty)
            // A commit naming a removed pack is refused, not recorded; and should collection
            // remove a pack after a commit looked, the commit's own transaction still finds
            // it missing (the commit's record is what a restore relies on).
            await refused("E_PACKS_MISSING", "a commit naming a collected pack") {
                _ = try await commit(c2, web2, alsoNaming: s5.packs.map(\.id))
            }
            let late = SnapshotRecord(id: String(repeating: "ab", count: 32), tenant: "acme", host: "web2", time: t0,
                committedAt: server.clock.now(),
                                      retainUntil: server.clock.now().addingTimeInterval(86400), paths: [], tags: [],
                                          statistics: SnapshotStatistics(),
                                      packCount: 1, manifestSize: 0)
            await #expect {
                try await server.service.catalog.insertSnapshot(late, packs: s5.packs.map(\.id), requirePacks: true)
            } throws: { ($0 as? CatalogError)?.code == .packsMissing }
            #expect(try await server.service.catalog.snapshot(id: late.id) == nil)

            // What stays restores bit for bit: s2 (held; it reads s1's pack too) and s4.
            for c in [s2, s4] {
                let m = try Manifest.parse(try await restorer.manifestBytes(c.manifest.id.description),
                    expectedID: c.manifest.id)
                var packs: [PackID: [UInt8]] = [:]
                for p in m.header.packs { packs[p] = try await restorer.packBytes(p) }
                let reader = try SnapshotReader(manifest: m, readKey: keys.readKey, chunkIDKey: keys.chunkIDKey) {
                    packs[$0]!
                }
                #expect(try reader.contents(of: try reader.rootTree()[Array("f.bin".utf8)]!) == c.data)
            }
            let report = try await restorer.verify(s2.manifest.id.description)
            #expect(report.damaged.isEmpty && report.missing.isEmpty)

            // A pack whose lock has expired but that is younger than the grace period stays;
            // past it, with nothing naming it, it goes.
            let (slow, _) = try makeSnapshot(keys: try c1.writeKeySet(), files: [("slow-backup",
                randomBytes(20 << 10))])
            for p in slow { _ = try await web1.uploadPack(id: p.id, bytes: p.bytes) }
            server.clock.set(t0.addingTimeInterval(12 * 86400))
            #expect(try await admin.collectGarbage(tenant: "acme", dryRun: false).packsRemoved == 0,
                "a 3-day-old pack went")
            server.clock.set(t0.addingTimeInterval(17 * 86400))
            // (with the packs of the refused commit above, also named by nothing)
            #expect(try await admin.collectGarbage(tenant: "acme", dryRun: false).packsRemoved >= slow.count)
            for p in slow { #expect(try await store.head(RepositoryService.packKey(tenant: "acme", id: p.id)) == nil) }

            // The commit's first step refuses a pack the catalog lost, and moves no lock.
            let before = try await server.service.catalog.pack(tenant: "acme", id: s4.packs[0].id.description)
            await #expect {
                _ = try await server.service.catalog.extendPackLocks(tenant: "acme", packs: [s4.packs[0].id,
                        s5.packs[0].id],
                                                               until: t0.addingTimeInterval(100 * 86400),
                                                                   requireAll: true)
            } throws: { ($0 as? CatalogError)?.code == .packsMissing }
            #expect(try await server.service.catalog.pack(tenant: "acme",
                id: s4.packs[0].id.description)?.retainUntil == before?.retainUntil)

            let audit = try await admin.audit(limit: 10_000)
            #expect(audit.contains {
                $0.action == "gc" && $0.object == "tenant acme" && $0.detail.contains("snapshots=2")
            })
            #expect(audit.contains { $0.action == "gc" && $0.outcome == "denied" && $0.actor.contains("web1") })
        } catch { Issue.record("\(error)") }
        for c in clients { await c.shutdown() }
        await server.stop()
    }

    /// A server with a one-day retention, tenant "acme" and host web1; stops it after `body`.
    func withOneHost(_ body: (TestServer, ClientConfig, APIClient) async throws -> Void) async throws {
        let server = try await TestServer.start(minRetention: 86400)
        var clients: [APIClient] = []
        do {
            try await server.createTenant("acme", keys: try TenantKeys.generate())
            let (c1, web1) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
            clients.append(web1)
            try await body(server, c1, web1)
        } catch { Issue.record("\(error)") }
        for c in clients { await c.shutdown() }
        await server.stop()
    }

    @Test func aTenantHoldKeepsEverything() async throws {
        try await withOneHost { server, c1, web1 in
            let t0 = server.clock.now()
            _ = try await commit(c1, web1)
            server.clock.set(t0.addingTimeInterval(3600))
            _ = try await commit(c1, web1)
            _ = try await server.admin.placeHold(Wire.PlaceHoldRequest(snapshot: nil, tenant: "acme",
                reason: "litigation"))
            server.clock.set(t0.addingTimeInterval(9 * 86400))
            let r = try await server.admin.collectGarbage(tenant: "acme", dryRun: false)
            #expect(r.snapshotsRemoved.isEmpty && r.packsRemoved == 0, "\(r)")
            #expect(try await server.admin.snapshots().count == 2)
        }
    }

    /// What a run queued but the store would not delete yet (its own lock was later) is
    /// never lost: uploaded again it is recorded and locked again, and a tenant hold placed
    /// meanwhile keeps it; packs younger than the grace period stay.
    @Test(.sqliteCatalogOnly) func queuedObjectsAreNeverDeletedFromUnderARecordOrAHold() async throws {
        try await withOneHost { server, c1, web1 in
            let admin = server.admin
            let store = try LocalStore(root: URL(fileURLWithPath: server.home.storePath))
            let t0 = server.clock.now()
            let old1 = try await commit(c1, web1)
            let old2 = try await commit(c1, web1)
            server.clock.set(t0.addingTimeInterval(3600))
            _ = try await commit(c1, web1)
            // The store's locks of the old snapshots' objects outlast the catalog's (as after a released hold).
            let day = 86400.0
            let pack1 = RepositoryService.packKey(tenant: "acme", id: old1.packs[0].id)
            let manifest1 = RepositoryService.manifestKey(tenant: "acme", id: old1.manifest.id)
            let manifest2 = RepositoryService.manifestKey(tenant: "acme", id: old2.manifest.id)
            for p in old1.packs {
                try await store.extendRetention(RepositoryService.packKey(tenant: "acme", id: p.id),
                    until: t0.addingTimeInterval(9.5 * day))
            }
            try await store.extendRetention(manifest1, until: t0.addingTimeInterval(9.5 * day))
            try await store.extendRetention(manifest2, until: t0.addingTimeInterval(11 * day))

            server.clock.set(t0.addingTimeInterval(9 * day))
            let young = try makeSnapshot(keys: try c1.writeKeySet(), files: [("running", randomBytes(10 << 10))]).packs
            for p in young { _ = try await web1.uploadPack(id: p.id, bytes: p.bytes) }
            let first = try await admin.collectGarbage(tenant: "acme", dryRun: false)
            #expect(Set(first.snapshotsRemoved) == Set([old1, old2].map { $0.manifest.id.description }), "\(first)")
            #expect(first.pendingDeletes == 2 + old1.packs.count,
                "the store refused what its locks still held: \(first)")
            let stillPack = try await store.head(pack1), stillManifest = try await store.head(manifest1)
            #expect(stillPack != nil && stillManifest != nil)
            // A pack a backup uploaded within the grace period is not collected.
            #expect(try await admin.collectGarbage(tenant: "acme", dryRun: true).packsRemoved == 0)

            // old1's pack bytes uploaded again (a host that still has them): recorded and
            // locked again, so the queued deletion must not happen.
            _ = try await web1.uploadPack(id: old1.packs[0].id, bytes: old1.packs[0].bytes)
            let chunks = try PackReader.inspect(old1.packs[0].bytes, expectedID: old1.packs[0].id).chunkIDs
            #expect(try await web1.chunkLocations(chunks).count == chunks.count)
            let relocked = try #require(try await store.head(pack1)?.retainUntil)
            #expect(relocked >= t0.addingTimeInterval(10 * day))
            server.clock.set(t0.addingTimeInterval(9.75 * day))
            let second = try await admin.collectGarbage(tenant: "acme", dryRun: false)
            #expect(second.pendingDeletes == 1, "only old2's manifest is still locked: \(second)")
            #expect(try await store.head(pack1) != nil, "a pack recorded again must stay")
            #expect(try await store.head(manifest1) == nil, "old1's manifest went once its store lock expired")
            _ = try await commit(c1, web1, alsoNaming: [old1.packs[0].id])

            // A tenant hold placed now keeps old2's queued manifest, past its store lock too.
            _ = try await admin.placeHold(Wire.PlaceHoldRequest(snapshot: nil, tenant: "acme", reason: "audit"))
            server.clock.set(t0.addingTimeInterval(11.5 * day))
            let held = try await admin.collectGarbage(tenant: "acme", dryRun: false)
            #expect(held.snapshotsRemoved.isEmpty && held.packsRemoved == 0, "\(held)")
            #expect(try await store.head(manifest2) != nil, "a tenant hold must keep a queued manifest")

            // A queued object whose deletion is under way cannot be recorded again meanwhile.
            let claimed = "t/acme/packs/00/" + String(repeating: "0", count: 64)
            try await server.service.sqlite.db.write { db in
                try db.execute(sql: """
                    INSERT INTO gc_pending(key, tenant, queued_at, claimed_at) VALUES (?, 'acme', 0, 0)
                    """, arguments: [claimed])
            }
            await #expect {
                try await server.service.catalog.insertPack(tenant: "acme", id: String(repeating: "0", count: 64),
                    key: claimed, size: 1,
                                                      retainUntil: Date(), chunkIDs: [], now: Date())
            } throws: { ($0 as? CatalogError)?.code == .beingCollected }
        }
    }
}

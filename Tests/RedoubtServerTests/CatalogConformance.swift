import Foundation
import RedoubtCore
@testable import RedoubtServer
import Testing

/// The contract of the catalog's repository protocols (CatalogRepositories.swift), as
/// checks every backend must pass: SQLite and PostgreSQL (``CatalogConformanceTests``). It
/// uses only the protocols, and a fresh, empty catalog per check.
struct CatalogConformance: Sendable {
    let catalog: any CatalogRepositories

    /// One invariant each, so that a failure names it.
    enum Check: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case packAndItsChunksAreRecordedTogether
        case chunkQueriesStayInTheirScopeAndTenant
        case aCommitNeedsEveryPackStillHeld
        case packLocksNeverMoveEarlier
        case gcQueueReclaimRace
        case collectionSparesHeldNamedAndNewest
        case auditAppendsChainInOrderAndPage
        case concurrentAuditAppendsNeitherForkNorGap
        case approvalLifecycle
        case enrollmentTokenIsUsedOnceAndOnlyOnSuccess
        case readKeyChangesAreCompareAndSet
        case aHoldOnACollectedSnapshotIsRefused
        case clockNeverGoesBack
        case quotaUsageSplitsCommittedFromUncommitted
        case policiesAreCompareAndSetAndLocksOnlyMoveLater
        case snapshotPagesFollowListingOrderFromTheirCursor
        case hostKeyWritersIncludeRevokedOnesOldestFirst
        case deepVerifyLedgerPutsNeverVerifiedFirst
        case copyTargetsAreListedUntilRemovedOnce
        case findingsKeepTheirFirstTimeAndCountRepeats
        case verdictsRoundTripAndVolumesCountOnlyUnsharedPacks
        case jobLeaseIsExclusiveAndKeepsLaterRequests
        case alertsOpenOnceAndResolveOnce
        case monitoringFactsMatchWhatTheCatalogHolds
        case scrubSliceCoversEveryPackWithinThePeriod
        var testDescription: String { rawValue }
    }

    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    static let day: TimeInterval = 86400

    /// 32 bytes, distinct for every `n` and `kind`.
    static func id32(_ n: Int, _ kind: UInt8) -> [UInt8] {
        [kind] + (0..<8).map { UInt8(truncatingIfNeeded: UInt64(n) >> (8 * (7 - $0))) }
            + [UInt8](repeating: 0x5A, count: 23)
    }
    static func chunk(_ n: Int) -> ChunkID { ChunkID(bytes: id32(n, 0xC0))! }
    static func pack(_ n: Int) -> PackID { PackID(bytes: id32(n, 0x9A))! }
    static func snapshotID(_ n: Int) -> String { hexString(id32(n, 0x5E)) }
    static func packKey(_ tenant: String, _ p: PackID) -> String {
        RepositoryService.packKey(tenant: tenant, id: p).path
    }

    static func tenant(_ name: String) -> TenantRecord {
        TenantRecord(
            name: name, readKeyID: "rk-\(name)", readPublicKey: [1, 2], writeMaterial: [3, 4],
            wrappedReadKey: "{\"v\":1}",
            minRetention: day, createdAt: t0)
    }

    static func admin(_ name: String) async -> Principal {
        Principal(id: "id-\(name)", role: .admin, tenant: nil, name: name, fingerprint: "fp-\(name)", hostKey: nil)
    }

    static func snapshot(
        _ n: Int, tenant: String = "acme", host: String = "web1", committed: Date, retainUntil: Date, packs: Int
    ) -> SnapshotRecord {
        SnapshotRecord(
            id: snapshotID(n), tenant: tenant, host: host, time: committed, committedAt: committed,
            retainUntil: retainUntil,
            paths: ["/srv"], tags: [], statistics: SnapshotStatistics(), packCount: packs, manifestSize: 100)
    }

    /// Runs `body` and checks that it is refused with `code`; returns the refusal.
    @discardableResult
    static func refused(
        _ code: CatalogError.Code, _ what: String, sourceLocation: SourceLocation = #_sourceLocation,
        _ body: () async throws -> Void
    ) async -> CatalogError? {
        do {
            try await body()
            Issue.record("\(what) was not refused (expected \(code))", sourceLocation: sourceLocation)
        } catch let e as CatalogError {
            #expect(e.code == code, "\(what): \(e)", sourceLocation: sourceLocation)
            return e
        } catch {
            Issue.record("\(what) failed with \(error), not a CatalogError \(code)", sourceLocation: sourceLocation)
        }
        return nil
    }

    func run(_ check: Check) async throws {
        let c = catalog
        let t0 = Self.t0, day = Self.day
        switch check {
        case .packAndItsChunksAreRecordedTogether:
            // Every chunk is indexed, whatever the batch size, and answers with its pack.
            let chunks = (0..<7).map(Self.chunk)
            try await c.insertPack(
                tenant: "acme", id: Self.pack(1).description, key: Self.packKey("acme", Self.pack(1)), size: 700,
                retainUntil: t0.addingTimeInterval(day), chunkIDs: chunks, now: t0, uploader: "w1", batch: 3,
                    verified: false)
            #expect(try await c.pack(tenant: "acme", id: Self.pack(1).description)?.size == 700)
            #expect(
                try await c.chunkLocations(tenant: "acme", ids: chunks, scope: nil, orVerified: false)
                    == Dictionary(uniqueKeysWithValues: chunks.map { ($0, Self.pack(1)) }))
            // A pack of many chunks, written in transactions that do not divide evenly, with a
            // chunk named twice and one an earlier pack of the same scope already holds: every
            // chunk is indexed once, and the earlier pack keeps the one it had.
            let many = (100..<400).map(Self.chunk) + [Self.chunk(150), chunks[0]]
            try await c.insertPack(
                tenant: "acme", id: Self.pack(3).description, key: Self.packKey("acme", Self.pack(3)), size: 1,
                retainUntil: t0.addingTimeInterval(day), chunkIDs: many, now: t0, uploader: "w1", batch: 201,
                verified: true)
            var expected = Dictionary(uniqueKeysWithValues: (100..<400).map { (Self.chunk($0), Self.pack(3)) })
            expected[chunks[0]] = Self.pack(1)
            #expect(try await c.chunkLocations(tenant: "acme", ids: many, scope: "w1", orVerified: false) == expected)
            // Verified, the new chunks answer another scope too; the earlier pack's do not.
            expected[chunks[0]] = nil
            #expect(try await c.chunkLocations(tenant: "acme", ids: many, scope: "w9", orVerified: true) == expected)
            // A refused record leaves neither the pack nor any of its chunks.
            let claimed = Self.packKey("acme", Self.pack(2))
            try await c.insertPack(
                tenant: "acme", id: Self.pack(2).description, key: claimed, size: 1, retainUntil: t0, chunkIDs: [],
                now: t0, uploader: nil, batch: 10, verified: false)
            _ = try await c.collect(tenant: "acme", now: t0.addingTimeInterval(30 * day), grace: 7 * day, dryRun: false)
            #expect(try await c.claimPendingDelete(claimed, tenant: "acme", now: t0.addingTimeInterval(30 * day)))
            await Self.refused(.beingCollected, "recording a pack whose deletion is under way") {
                try await c.insertPack(
                    tenant: "acme", id: Self.pack(2).description, key: claimed, size: 1,
                    retainUntil: t0.addingTimeInterval(60 * day),
                    chunkIDs: [Self.chunk(50)], now: t0.addingTimeInterval(30 * day), uploader: "w1", batch: 10,
                        verified: false)
            }
            #expect(try await c.pack(tenant: "acme", id: Self.pack(2).description) == nil)
            #expect(try await c.chunkLocations(tenant: "acme", ids: [Self.chunk(50)], scope: nil,
                    orVerified: false).isEmpty)

        case .chunkQueriesStayInTheirScopeAndTenant:
            let shared = Self.chunk(1), own1 = Self.chunk(2), own2 = Self.chunk(3)
            try await c.insertPack(
                tenant: "acme", id: Self.pack(1).description, key: Self.packKey("acme", Self.pack(1)), size: 1,
                retainUntil: t0, chunkIDs: [shared, own1], now: t0, uploader: "w1", batch: 100, verified: false)
            try await c.insertPack(
                tenant: "acme", id: Self.pack(2).description, key: Self.packKey("acme", Self.pack(2)), size: 1,
                retainUntil: t0, chunkIDs: [shared, own2], now: t0, uploader: "w2", batch: 100, verified: false)
            // Within a scope, the first pack recorded for a chunk keeps it.
            try await c.insertPack(
                tenant: "acme", id: Self.pack(3).description, key: Self.packKey("acme", Self.pack(3)), size: 1,
                retainUntil: t0, chunkIDs: [shared], now: t0, uploader: "w1", batch: 100, verified: false)
            let ids = [shared, own1, own2]
            #expect(
                try await c.chunkLocations(tenant: "acme", ids: ids, scope: "w1", orVerified: false) == [
                    shared: Self.pack(1), own1: Self.pack(1),
                ])
            #expect(
                try await c.chunkLocations(tenant: "acme", ids: ids, scope: "w2", orVerified: false) == [
                    shared: Self.pack(2), own2: Self.pack(2),
                ])
            #expect(try await c.chunkLocations(tenant: "acme", ids: ids, scope: "w3", orVerified: false).isEmpty)
            // Chunks whose bytes the server checked answer every scope that asks for them
            // too; unchecked ones of other scopes never do.
            let checked = Self.chunk(4)
            try await c.insertPack(
                tenant: "acme", id: Self.pack(4).description, key: Self.packKey("acme", Self.pack(4)), size: 1,
                retainUntil: t0, chunkIDs: [checked], now: t0, uploader: "w4", batch: 100, verified: true)
            #expect(
                try await c.chunkLocations(tenant: "acme", ids: ids + [checked], scope: "w3", orVerified: true)
                    == [checked: Self.pack(4)])
            #expect(try await c.chunkLocations(tenant: "acme", ids: [checked], scope: "w3", orVerified: false).isEmpty)
            let tenantWide = try await c.chunkLocations(tenant: "acme", ids: ids, scope: nil, orVerified: false)
            #expect(Set(tenantWide.keys) == Set(ids) && [Self.pack(1), Self.pack(2)].contains(tenantWide[shared]))
            // Another tenant holding the same chunk never answers for this one.
            #expect(try await c.chunkLocations(tenant: "other", ids: ids, scope: nil, orVerified: false).isEmpty)
            // More IDs than one query may bind.
            let many = (0..<1200).map { Self.chunk(10_000 + $0) }
            #expect(try await c.chunkLocations(tenant: "acme", ids: many + [own1], scope: nil,
                orVerified: false) == [own1: Self.pack(1)])
            // A principal's own packs, and no other's, whatever their chunks; never another tenant's.
            let packs = (1...4).map { Self.pack($0) } + (0..<1200).map { Self.pack(10_000 + $0) }
            #expect(try await c.uploadedPacks(tenant: "acme", uploader: "w1", packs: packs)
                == [Self.pack(1), Self.pack(3)])
            #expect(try await c.uploadedPacks(tenant: "acme", uploader: "w2", packs: packs) == [Self.pack(2)])
            #expect(try await c.uploadedPacks(tenant: "acme", uploader: "w3", packs: packs).isEmpty)
            #expect(try await c.uploadedPacks(tenant: "other", uploader: "w1", packs: packs).isEmpty)

        case .aCommitNeedsEveryPackStillHeld:
            try await c.insertPack(
                tenant: "acme", id: Self.pack(1).description, key: Self.packKey("acme", Self.pack(1)), size: 1,
                retainUntil: t0, chunkIDs: [], now: t0, uploader: "w1", batch: 10, verified: false)
            #expect(try await c.missingPacks(tenant: "acme", packs: [Self.pack(1), Self.pack(2)]) == [Self.pack(2)])
            #expect(try await c.missingPacks(tenant: "other", packs: [Self.pack(1)]) == [Self.pack(1)])
            let s = Self.snapshot(1, committed: t0, retainUntil: t0.addingTimeInterval(day), packs: 2)
            let e = await Self.refused(.packsMissing, "a commit naming a pack the tenant does not hold") {
                try await c.insertSnapshot(s, packs: [Self.pack(1), Self.pack(2)], requirePacks: true, manifestKey: nil)
            }
            #expect(e?.packs == [Self.pack(2)])
            #expect(try await c.snapshot(id: s.id) == nil)
            #expect(try await c.snapshotPacks(id: s.id).isEmpty)
            // A rebuild records what the store holds, missing packs too.
            try await c.insertSnapshot(s, packs: [Self.pack(2), Self.pack(1)], requirePacks: false, manifestKey: nil)
            #expect(try await c.snapshot(id: s.id) == s)
            #expect(
                try await c.snapshotPacks(id: s.id)
                    == [Self.pack(1), Self.pack(2)].sorted { $0.description < $1.description })
            #expect(try await c.snapshots(tenant: "acme", host: nil).map(\.id) == [s.id])
            #expect(try await c.snapshots(tenant: "acme", host: "web2").isEmpty)

        case .packLocksNeverMoveEarlier:
            let later = t0.addingTimeInterval(10 * day)
            try await c.insertPack(
                tenant: "acme", id: Self.pack(1).description, key: Self.packKey("acme", Self.pack(1)), size: 1,
                retainUntil: later, chunkIDs: [], now: t0, uploader: nil, batch: 10, verified: false)
            try await c.insertPack(
                tenant: "acme", id: Self.pack(2).description, key: Self.packKey("acme", Self.pack(2)), size: 1,
                retainUntil: t0, chunkIDs: [], now: t0, uploader: nil, batch: 10, verified: false)
            let until = t0.addingTimeInterval(5 * day)
            let moved = try await c.extendPackLocks(
                tenant: "acme", packs: [Self.pack(1), Self.pack(2)], until: until, requireAll: true)
            #expect(moved.map(\.0) == [Self.pack(2)] && moved.map(\.1) == [until])
            #expect(try await c.pack(tenant: "acme", id: Self.pack(1).description)?.retainUntil == later)
            // With requireAll, one missing pack moves nothing.
            await Self.refused(.packsMissing, "extending the locks of a pack collected meanwhile") {
                _ = try await c.extendPackLocks(
                    tenant: "acme", packs: [Self.pack(2), Self.pack(3)], until: t0.addingTimeInterval(99 * day),
                    requireAll: true)
            }
            #expect(try await c.pack(tenant: "acme", id: Self.pack(2).description)?.retainUntil == until)

        case .gcQueueReclaimRace:
            let p = Self.pack(1), key = Self.packKey("acme", p)
            try await c.insertPack(
                tenant: "acme", id: p.description, key: key, size: 10, retainUntil: t0.addingTimeInterval(day),
                chunkIDs: [Self.chunk(1)],
                now: t0, uploader: "w1", batch: 10, verified: false)
            let now = t0.addingTimeInterval(30 * day)
            let dry = try await c.collect(tenant: "acme", now: now, grace: 7 * day, dryRun: true)
            #expect(dry.packs.map(\.id) == [p.description])
            #expect(try await c.pack(tenant: "acme", id: p.description) != nil, "a dry run changed the catalog")
            #expect(try await c.pendingDeletes(tenant: "acme").isEmpty, "a dry run changed the catalog")
            let plan = try await c.collect(tenant: "acme", now: now, grace: 7 * day, dryRun: false)
            #expect(plan.packs.map(\.id) == [p.description] && plan.packs.map(\.size) == [10])
            #expect(try await c.pack(tenant: "acme", id: p.description) == nil)
            #expect(
                try await c.chunkLocations(tenant: "acme", ids: [Self.chunk(1)], scope: nil, orVerified: false).isEmpty,
                "a collected pack's chunks still answer")
            #expect(try await c.pendingDeletes(tenant: "acme") == [key])
            // Queued but not claimed: recording it again takes it off the queue.
            try await c.reclaim(key: key)
            #expect(try await c.pendingDeletes(tenant: "acme").isEmpty)
            // Queued again, then claimed: it cannot be recorded until the claim ends.
            try await c.insertPack(
                tenant: "acme", id: p.description, key: key, size: 10, retainUntil: t0.addingTimeInterval(day),
                chunkIDs: [],
                now: t0, uploader: "w1", batch: 10, verified: false)
            _ = try await c.collect(tenant: "acme", now: now, grace: 7 * day, dryRun: false)
            #expect(try await c.claimPendingDelete(key, tenant: "acme", now: now))
            await Self.refused(.beingCollected, "reclaiming a claimed key") { try await c.reclaim(key: key) }
            let s = Self.snapshot(1, committed: now, retainUntil: now.addingTimeInterval(day), packs: 0)
            await Self.refused(.beingCollected, "recording a snapshot under a claimed manifest key") {
                try await c.insertSnapshot(s, packs: [], requirePacks: true, manifestKey: key)
            }
            #expect(try await c.snapshot(id: s.id) == nil)
            // A failed deletion releases the claim; the key waits for the next run.
            try await c.finishPendingDelete(key, done: false)
            #expect(try await c.pendingDeletes(tenant: "acme") == [key])
            // Recorded again meanwhile: the next claim drops the key instead of deleting.
            try await c.insertPack(
                tenant: "acme", id: p.description, key: key, size: 10, retainUntil: now.addingTimeInterval(day),
                chunkIDs: [],
                now: now, uploader: "w1", batch: 10, verified: false)
            #expect(try await c.pendingDeletes(tenant: "acme").isEmpty)
            // A key queued while its object is recorded (a crash between the two) is never claimed.
            _ = try await c.collect(tenant: "acme", now: now.addingTimeInterval(30 * day), grace: 7 * day,
                    dryRun: false)
            #expect(try await c.pendingDeletes(tenant: "acme") == [key])
            try await c.insertPack(
                tenant: "acme", id: p.description, key: Self.packKey("acme", Self.pack(9)), size: 10,
                retainUntil: now.addingTimeInterval(99 * day), chunkIDs: [], now: now, uploader: "w1", batch: 10,
                    verified: false)
            #expect(try await !c.claimPendingDelete(key, tenant: "acme", now: now.addingTimeInterval(30 * day)))
            #expect(try await c.pendingDeletes(tenant: "acme").isEmpty)
            // Done: off the queue for good.
            _ = try await c.collect(tenant: "acme", now: now.addingTimeInterval(200 * day), grace: 7 * day,
                    dryRun: false)
            #expect(try await c.claimPendingDelete(key, tenant: "acme", now: now.addingTimeInterval(200 * day)))
            try await c.finishPendingDelete(key, done: true)
            #expect(try await c.pendingDeletes(tenant: "acme").isEmpty)

        case .collectionSparesHeldNamedAndNewest:
            for n in 1...3 {
                try await c.insertPack(
                    tenant: "acme", id: Self.pack(n).description, key: Self.packKey("acme", Self.pack(n)), size: n,
                    retainUntil: t0.addingTimeInterval(day), chunkIDs: [], now: t0, uploader: nil, batch: 10,
                        verified: false)
            }
            // s1 expired and superseded (goes), s2 expired but held, s3 expired but its host's newest.
            try await c.insertSnapshot(
                Self.snapshot(1, committed: t0, retainUntil: t0.addingTimeInterval(day), packs: 1),
                packs: [Self.pack(1)],
                requirePacks: true, manifestKey: nil)
            try await c.insertSnapshot(
                Self.snapshot(
                    2, committed: t0.addingTimeInterval(1), retainUntil: t0.addingTimeInterval(day), packs: 1),
                packs: [Self.pack(2)], requirePacks: true, manifestKey: nil)
            try await c.insertSnapshot(
                Self.snapshot(
                    3, committed: t0.addingTimeInterval(2), retainUntil: t0.addingTimeInterval(day), packs: 1),
                packs: [Self.pack(3)], requirePacks: true, manifestKey: nil)
            try await c.insertHold(
                LegalHold(
                    id: "h1", kind: .snapshot, target: Self.snapshotID(2), tenant: "acme", reason: "case 1",
                    createdBy: "alice",
                    createdAt: t0, releasedAt: nil, releaseRequest: nil))
            #expect(try await c.isHeld(snapshot: Self.snapshotID(2)))
            #expect(try await c.isHeld(tenant: "acme", pack: Self.pack(2).description))
            #expect(try await !c.isHeld(snapshot: Self.snapshotID(1)))
            let plan = try await c.collect(
                tenant: "acme", now: t0.addingTimeInterval(30 * day), grace: 7 * day, dryRun: false)
            #expect(plan.snapshots == [Self.snapshotID(1)] && plan.keptHeld == 1 && plan.keptNewest == 1)
            #expect(plan.packs.map(\.id) == [Self.pack(1).description])
            #expect(try await c.snapshot(id: Self.snapshotID(2)) != nil)
            #expect(try await c.snapshot(id: Self.snapshotID(3)) != nil)
            // A tenant hold keeps everything.
            try await c.insertHold(
                LegalHold(
                    id: "h2", kind: .tenant, target: "acme", tenant: "acme", reason: "case 2", createdBy: "alice",
                    createdAt: t0, releasedAt: nil, releaseRequest: nil))
            #expect(try await c.isTenantHeld("acme"))
            #expect(try await c.releaseHold("h1", at: t0, request: nil))
            #expect(try await !c.releaseHold("h1", at: t0, request: nil))
            let held = try await c.collect(
                tenant: "acme", now: t0.addingTimeInterval(400 * day), grace: 7 * day, dryRun: false)
            #expect(held.snapshots.isEmpty && held.packs.isEmpty)
            #expect(try await c.holds(active: true).map(\.id) == ["h2"])
            #expect(try await c.holds(active: false).map(\.id) == ["h1", "h2"])

        case .auditAppendsChainInOrderAndPage:
            #expect(try await c.auditChainHead() == Catalog.AuditChainHead(seq: 0, hash: Catalog.auditGenesis))
            var last: Catalog.AuditRecord?
            for i in 1...25 {
                last = try await c.audit(
                    time: t0.addingTimeInterval(Double(i) + 0.123456), actor: "alice", role: "admin", credential: "fp",
                    source: "127.0.0.1", action: i % 5 == 0 ? "copy-sync" : "list", object: "tenant acme",
                    outcome: "ok",
                    detail: "n=\(i)\u{1B}[31m")
            }
            #expect(
                last?.seq == 25 && last?.detail == SafeText.auditField("n=25\u{1B}[31m")
                    && last?.detail.contains("\u{1B}") == false,
                "fields are stored as made safe: \(String(describing: last))")
            var pages: [[Int64]] = []
            var after: Int64 = 0
            while true {
                let page = try await c.auditRecords(after: after, limit: 10)
                if page.isEmpty { break }
                pages.append(page.map(\.seq))
                after = page[page.count - 1].seq
            }
            #expect(pages == [Array(1...10), Array(11...20), Array(21...25)])
            let all = try await c.auditRecords(after: 0, limit: 100)
            #expect(
                all.last?.hash == last?.hash && all.last?.detail == last?.detail
                    && all[0].prevHash == Catalog.auditGenesis)
            #expect(zip(all, all.dropFirst()).allSatisfy { $1.prevHash == $0.hash }, "records are not chained in order")
            #expect(
                all[3].time.timeIntervalSince1970 == t0.addingTimeInterval(Double(4) + 0.123456).timeIntervalSince1970,
                "a time did not read back exactly as hashed")
            #expect(try await c.auditChainHead() == Catalog.AuditChainHead(seq: 25, hash: last?.hash ?? ""))
            #expect(try await c.verifyAudit() == (nil, 25))
            #expect(try await c.verifyAudit(anchor: c.auditChainHead()) == (nil, 25))
            #expect(try await c.copyEvents().map(\.seq) == [5, 10, 15, 20, 25])

        case .concurrentAuditAppendsNeitherForkNorGap:
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<4 {
                    group.addTask {
                        for i in 0..<15 {
                            try await c.audit(
                                time: t0, actor: "task\(task)", role: "writer", credential: "fp", source: "-",
                                action: "upload-pack",
                                object: "pack \(i)", outcome: "ok", detail: "")
                        }
                    }
                }
                try await group.waitForAll()
            }
            let all = try await c.auditRecords(after: 0, limit: 1000)
            #expect(all.map(\.seq) == Array(1...60))
            #expect(try await c.verifyAudit() == (nil, 60))

        case .approvalLifecycle:
            for name in ["alice", "bob", "carol"] { try await c.insertPrincipal(Self.admin(name), os: nil, now: t0) }
            try await c.setSetting("quorum", "2")
            #expect(try await c.configuredQuorum() == 2)
            #expect(try await c.effectiveQuorum() == 2)
            #expect(try await c.adminCount() == 3)
            let expires = t0.addingTimeInterval(72 * 3600)
            try await c.insertRequest(
                id: "r1", action: "shred-tenant", object: "tenant acme", parameters: ["v": "2"],
                requester: Self.admin("alice"),
                now: t0, expiresAt: expires, needed: 1)
            #expect(try await c.request("r1", now: t0)?.state == .pending)
            await Self.refused(.forbidden, "the requester approving their own request") {
                _ = try await c.decide("r1", by: Self.admin("alice"), approve: true, now: t0)
            }
            await Self.refused(.notFound, "deciding an unknown request") {
                _ = try await c.decide("nope", by: Self.admin("bob"), approve: true, now: t0)
            }
            let approved = try await c.decide("r1", by: Self.admin("bob"), approve: true, now: t0)
            #expect(approved.state == .approved && approved.approvers == ["bob"] && approved.parameters == ["v": "2"])
            await Self.refused(.conflict, "deciding a request no longer pending") {
                _ = try await c.decide("r1", by: Self.admin("carol"), approve: false, now: t0)
            }
            // A quorum raised since applies to a request already made.
            try await c.setSetting("quorum", "3")
            #expect(try await c.request("r1", now: t0)?.state == .pending)
            #expect(try await c.request("r1", now: t0)?.needed == 2)
            try await c.setSetting("quorum", "2")
            // Executed exactly once.
            #expect(try await c.consumeRequest("r1", now: t0))
            #expect(try await !c.consumeRequest("r1", now: t0))
            #expect(try await c.request("r1", now: t0)?.state == .executed)
            // One rejection ends a request; an unanswered one expires.
            try await c.insertRequest(
                id: "r2", action: "add-admin", object: "admin dave", parameters: [:], requester: Self.admin("alice"),
                now: t0.addingTimeInterval(1), expiresAt: expires, needed: 1)
            #expect(try await c.decide("r2", by: Self.admin("carol"), approve: false, now: t0).state == .rejected)
            #expect(try await !c.consumeRequest("r2", now: t0))
            try await c.insertRequest(
                id: "r3", action: "set-quorum", object: "quorum", parameters: [:], requester: Self.admin("alice"),
                now: t0.addingTimeInterval(2), expiresAt: expires, needed: 1)
            #expect(try await c.request("r3", now: expires.addingTimeInterval(1))?.state == .expired)
            // Only admins still active count: a revoked approver's approval no longer does.
            _ = try await c.decide("r3", by: Self.admin("bob"), approve: true, now: t0)
            #expect(try await c.revokeAdmin(name: "bob", now: t0))
            #expect(try await c.request("r3", now: t0)?.approvers == [])
            #expect(try await c.request("r3", now: t0)?.state == .pending)
            #expect(try await c.requests(now: t0).map(\.id) == ["r1", "r2", "r3"])
            // The last active admin is never revoked, whatever was checked before the call.
            #expect(try await c.revokeAdmin(name: "carol", now: t0))
            await Self.refused(.conflict, "revoking the last admin") {
                _ = try await c.revokeAdmin(name: "alice", now: t0)
            }
            #expect(try await c.adminCount() == 1)
            #expect(try await !c.revokeAdmin(name: "nobody", now: t0))

        case .enrollmentTokenIsUsedOnceAndOnlyOnSuccess:
            try await c.insertTenant(Self.tenant("acme"))
            let expires = t0.addingTimeInterval(3600)
            try await c.insertEnrollment(
                tokenHash: "h1", role: .writer, tenant: "acme", name: "web1", expiresAt: expires, createdBy: "alice")
            try await c.insertEnrollment(
                tokenHash: "h2", role: .writer, tenant: "acme", name: "web1", expiresAt: expires, createdBy: "alice")
            func writer(_ id: String) -> (Catalog.Enrollment) throws -> Principal {
                { e in
                    Principal(
                        id: id, role: e.role, tenant: e.tenant, name: e.name, fingerprint: "fp-\(id)", hostKey: [9])
                }
            }
            // An error of the caller's leaves the token unused.
            struct Refused: Error {}
            await #expect(throws: Refused.self) {
                _ = try await c.redeemEnrollment(tokenHash: "h1", now: t0, os: nil) { _ in throw Refused() }
            }
            let p = try await c.redeemEnrollment(tokenHash: "h1", now: t0, os: "Linux", writer("p1"))
            #expect(try await c.principal(fingerprint: "fp-p1") == p)
            await Self.refused(.notFound, "a used token") {
                _ = try await c.redeemEnrollment(tokenHash: "h1", now: t0, os: nil, writer("p9"))
            }
            await Self.refused(.notFound, "an unknown token") {
                _ = try await c.redeemEnrollment(tokenHash: "zz", now: t0, os: nil, writer("p9"))
            }
            // The name is taken: refused, and the token stays usable.
            await Self.refused(.conflict, "a second active web1") {
                _ = try await c.redeemEnrollment(tokenHash: "h2", now: t0, os: nil, writer("p2"))
            }
            #expect(try await c.pendingEnrollments(now: t0).count == 1)
            // Revoking web1 cancels the pending token for its name too.
            #expect(try await c.revokePrincipal(id: "p1", now: t0) == 1)
            #expect(try await c.principal(fingerprint: "fp-p1") == nil)
            await Self.refused(.notFound, "a token cancelled by revocation") {
                _ = try await c.redeemEnrollment(tokenHash: "h2", now: t0, os: nil, writer("p2"))
            }
            // Expired tokens enroll no one.
            try await c.insertEnrollment(
                tokenHash: "h3", role: .writer, tenant: "acme", name: "web2", expiresAt: expires, createdBy: "alice")
            await Self.refused(.notFound, "an expired token") {
                _ = try await c.redeemEnrollment(tokenHash: "h3", now: expires.addingTimeInterval(1), os: nil,
                                                 writer("p3"))
            }
            // Without write material a writer is refused and the token is not used up.
            #expect(try await c.clearShreddedWriteMaterial() == 0)
            try await c.insertTenant(
                TenantRecord(
                    name: "bare", readKeyID: "rk", readPublicKey: [1], writeMaterial: [], wrappedReadKey: "{}",
                    minRetention: day, createdAt: t0))
            try await c.insertEnrollment(
                tokenHash: "h4", role: .writer, tenant: "bare", name: "web1", expiresAt: expires, createdBy: "alice")
            await Self.refused(.noWriteMaterial, "a writer of a tenant without write material") {
                _ = try await c.redeemEnrollment(tokenHash: "h4", now: t0, os: nil, writer("p4"))
            }
            #expect(try await c.setWriteMaterial(tenant: "bare", material: [5]))
            #expect(try await !c.setWriteMaterial(tenant: "bare", material: [6]))
            #expect(try await c.redeemEnrollment(tokenHash: "h4", now: t0, os: nil, writer("p4")).tenant == "bare")

        case .readKeyChangesAreCompareAndSet:
            try await c.insertTenant(Self.tenant("acme"))
            await Self.refused(.notFound, "rotating an unknown tenant") {
                try await c.replaceReadKey(
                    tenant: "nope", newVersion: 2, wrapped: "{}", retiredStub: "{}", now: t0, shredded: false)
            }
            await Self.refused(.conflict, "a rotation that skips a version") {
                try await c.replaceReadKey(
                    tenant: "acme", newVersion: 3, wrapped: "{}", retiredStub: "{}", now: t0, shredded: false)
            }
            try await c.replaceReadKey(
                tenant: "acme", newVersion: 2, wrapped: "{\"v\":2}", retiredStub: "{\"s\":1}", now: t0, shredded: false)
            await Self.refused(.conflict, "a second rotation to the same version") {
                try await c.replaceReadKey(
                    tenant: "acme", newVersion: 2, wrapped: "{}", retiredStub: "{}", now: t0, shredded: false)
            }
            #expect(try await c.tenant("acme")?.keyVersion == 2)
            #expect(try await c.tenant("acme")?.wrappedReadKey == "{\"v\":2}")
            #expect(try await c.retiredKEKs(tenant: "acme").map(\.version) == [1])
            try await c.insertHold(
                LegalHold(
                    id: "h", kind: .tenant, target: "acme", tenant: "acme", reason: "r", createdBy: "a", createdAt: t0,
                    releasedAt: nil, releaseRequest: nil))
            await Self.refused(.held, "shredding a held tenant") {
                try await c.replaceReadKey(
                    tenant: "acme", newVersion: 3, wrapped: "", retiredStub: "{}", now: t0, shredded: true)
            }
            #expect(try await c.releaseHold("h", at: t0, request: "r1"))
            try await c.replaceReadKey(
                tenant: "acme", newVersion: 3, wrapped: "", retiredStub: "{\"s\":2}", now: t0, shredded: true)
            let shredded = try await c.tenant("acme")
            #expect(shredded?.shreddedAt == t0 && shredded?.writeMaterial == [] && shredded?.wrappedReadKey == "")
            await Self.refused(.shredded, "rotating a shredded tenant") {
                try await c.replaceReadKey(
                    tenant: "acme", newVersion: 4, wrapped: "{}", retiredStub: "{}", now: t0, shredded: false)
            }
            try await c.markKEKsDestroyed(tenant: "acme", versions: [1, 2], now: t0)
            try await c.markKEKsDestroyed(tenant: "acme", versions: [1], now: t0.addingTimeInterval(5))
            #expect(try await c.retiredKEKs(tenant: "acme").map(\.destroyedAt) == [t0, t0])
            #expect(try await c.setMinRetention(tenant: "acme", seconds: 7 * day, from: day))
            #expect(try await !c.setMinRetention(tenant: "acme", seconds: 9 * day, from: day))
            #expect(try await c.dedupScope(tenant: "acme") == .host)
            #expect(try await c.dedupScope(tenant: "nope") == .host)
            #expect(try await c.setDedupScope(tenant: "acme", .tenant, from: .host))
            #expect(try await !c.setDedupScope(tenant: "acme", .host, from: .host))
            #expect(try await c.dedupScopes()["acme"] == .tenant)

        case .aHoldOnACollectedSnapshotIsRefused:
            await Self.refused(.notFound, "a hold on a snapshot the catalog no longer holds") {
                try await c.insertHold(
                    LegalHold(
                        id: "h", kind: .snapshot, target: Self.snapshotID(1), tenant: "acme", reason: "r",
                        createdBy: "a",
                        createdAt: t0, releasedAt: nil, releaseRequest: nil))
            }
            #expect(try await c.holds(active: false).isEmpty)

        case .clockNeverGoesBack:
            #expect(try await c.advanceClock(to: t0) == t0)
            #expect(try await c.advanceClock(to: t0.addingTimeInterval(-day)) == t0)
            #expect(try await c.advanceClock(to: t0.addingTimeInterval(1)) == t0.addingTimeInterval(1))
            #expect(try await c.setting("x") == nil)
            try await c.setSetting("x", "1")
            try await c.setSetting("x", "2")
            #expect(try await c.setting("x") == "2")

        case .quotaUsageSplitsCommittedFromUncommitted:
            // Pack 1 sent again by web2 keeps web1, its first uploader.
            for (n, host) in [(1, "web1"), (2, "web1"), (3, "web2"), (1, "web2")] {
                try await c.insertPack(
                    tenant: "acme", id: Self.pack(n).description, key: Self.packKey("acme", Self.pack(n)),
                    size: 100 * n,
                    retainUntil: t0, chunkIDs: [], now: t0, uploader: nil, batch: 10, verified: false,
                    uploadedBy: host)
            }
            try await c.insertSnapshot(
                Self.snapshot(1, committed: t0, retainUntil: t0, packs: 2), packs: [Self.pack(1), Self.pack(3)],
                requirePacks: true, manifestKey: nil)
            #expect(try await c.usage(tenant: "acme", host: nil) == (committed: 400, uncommitted: 200))
            #expect(try await c.usage(tenant: "acme", host: "web1") == (committed: 100, uncommitted: 200))
            #expect(try await c.usage(tenant: "acme", host: "web2") == (committed: 300, uncommitted: 0))
            try await c.setQuota(tenant: "acme", host: "", bytes: 1000)
            #expect(try await c.quota(tenant: "acme", host: "") == 1000)
            #expect(try await c.quota(tenant: "acme", host: "web1") == nil)
            try await c.setQuota(tenant: "acme", host: "", bytes: nil)
            #expect(try await c.quota(tenant: "acme", host: "") == nil)

        case .snapshotPagesFollowListingOrderFromTheirCursor, .hostKeyWritersIncludeRevokedOnesOldestFirst,
             .deepVerifyLedgerPutsNeverVerifiedFirst, .copyTargetsAreListedUntilRemovedOnce,
             .findingsKeepTheirFirstTimeAndCountRepeats:
            try await runReads(check, c)

        case .verdictsRoundTripAndVolumesCountOnlyUnsharedPacks, .jobLeaseIsExclusiveAndKeepsLaterRequests,
             .alertsOpenOnceAndResolveOnce, .monitoringFactsMatchWhatTheCatalogHolds,
             .scrubSliceCoversEveryPackWithinThePeriod:
            try await runOperations(check, c)

        case .policiesAreCompareAndSetAndLocksOnlyMoveLater:
            // Two admins changing one policy at once: only the one that saw the stored rules wins.
            let daily = RetentionRules(daily: 7), weekly = RetentionRules(daily: 7, weekly: 4)
            let p = { (r: RetentionRules, glob: String, tenant: String) in
                Wire.PolicyInfo(tenant: tenant, hostGlob: glob, tag: "", rules: r, updatedAt: t0) }
            #expect(try await c.setPolicy(p(daily, "*", "acme"), from: nil))
            #expect(try await !c.setPolicy(p(weekly, "*", "acme"), from: nil),
                    "a second create over an existing policy")
            #expect(try await c.setPolicy(p(weekly, "*", "acme"), from: daily))
            #expect(try await !c.setPolicy(p(daily, "*", "acme"), from: daily), "a change from stale rules")
            #expect(try await c.setPolicy(p(daily, "web*", "acme"), from: nil))
            #expect(try await c.setPolicy(p(daily, "*", "beta"), from: nil))
            #expect(try await c.policies(tenant: "acme").count == 2)
            #expect(try await c.policies(tenant: nil).count == 3)
            #expect(try await c.policies(tenant: "acme").first { $0.hostGlob == "*" }?.rules == weekly)
            #expect(try await !c.removePolicy(tenant: "acme", hostGlob: "*", tag: "", from: daily),
                "a removal from stale rules")
            #expect(try await c.removePolicy(tenant: "acme", hostGlob: "*", tag: "", from: weekly))
            #expect(try await c.policies(tenant: "acme").map(\.hostGlob) == ["web*"])
            // A snapshot's lock moves only later.
            try await c.insertSnapshot(Self.snapshot(1, committed: t0, retainUntil: t0.addingTimeInterval(day),
                    packs: 0),
                packs: [],
                                 requirePacks: false, manifestKey: nil)
            #expect(try await c.extendSnapshotLock(id: Self.snapshotID(1), until: t0) == nil)
            #expect(try await c.extendSnapshotLock(id: Self.snapshotID(1),
                until: t0.addingTimeInterval(30 * day))?.retainUntil
                    == t0.addingTimeInterval(30 * day))
            #expect(try await c.extendSnapshotLock(id: Self.snapshotID(1),
                    until: t0.addingTimeInterval(2 * day)) == nil)
            #expect(try await c.snapshot(id: Self.snapshotID(1))?.retainUntil == t0.addingTimeInterval(30 * day))
            #expect(try await c.extendSnapshotLock(id: Self.snapshotID(2),
                    until: t0.addingTimeInterval(30 * day)) == nil)
        }
    }
}

extension CatalogConformance {
    /// The checks of what the server reads besides the aggregates' writes: listing pages,
    /// host key writers, the deep-verify ledger.
    func runReads(_ check: Check, _ c: any CatalogRepositories) async throws {
        let t0 = Self.t0, day = Self.day
        switch check {
        case .snapshotPagesFollowListingOrderFromTheirCursor:
            try await c.insertTenant(Self.tenant("acme"))
            try await c.insertTenant(Self.tenant("beta"))
            // Commit order differs from ID order and from insertion order.
            let rows: [(n: Int, tenant: String, host: String, at: TimeInterval)] = [
                (5, "acme", "web1", 30), (1, "acme", "web2", 10), (3, "acme", "web1", 20), (2, "beta", "web1", 5),
                (4, "ghost", "web1", 1),
            ]
            for r in rows {
                try await c.insertSnapshot(
                    Self.snapshot(r.n, tenant: r.tenant, host: r.host, committed: t0.addingTimeInterval(r.at),
                                  retainUntil: t0.addingTimeInterval(day), packs: 0),
                    packs: [], requirePacks: false, manifestKey: nil)
            }
            func pages(tenant: String?, host: String?, limit: Int) async throws -> [String] {
                var out: [String] = [], after: String? = nil
                while true {
                    let page = try await c.snapshotPage(tenant: tenant, host: host, after: after, limit: limit)
                    #expect(page.count <= limit)
                    out += page.map(\.id)
                    guard page.count == limit, let last = page.last else { return out }
                    after = last.id
                }
            }
            // Every tenant the catalog holds (not the unknown one), by tenant, then commit time.
            let all = [1, 3, 5, 2].map(Self.snapshotID)
            #expect(try await c.snapshotPage(tenant: nil, host: nil, after: nil, limit: nil).map(\.id) == all)
            #expect(try await pages(tenant: nil, host: nil, limit: 1) == all)
            #expect(try await pages(tenant: "acme", host: nil, limit: 2) == [1, 3, 5].map(Self.snapshotID))
            #expect(try await pages(tenant: "acme", host: "web1", limit: 1) == [3, 5].map(Self.snapshotID))
            // A cursor not listed under the filters is refused, never read as "from the start".
            await Self.refused(.notFound, "a cursor of another tenant") {
                _ = try await c.snapshotPage(tenant: "acme", host: nil, after: Self.snapshotID(2), limit: 10)
            }
            await Self.refused(.notFound, "a cursor of another host") {
                _ = try await c.snapshotPage(tenant: "acme", host: "web1", after: Self.snapshotID(1), limit: 10)
            }
            await Self.refused(.notFound, "an unknown cursor") {
                _ = try await c.snapshotPage(tenant: nil, host: nil, after: Self.snapshotID(9), limit: 10)
            }

        case .hostKeyWritersIncludeRevokedOnesOldestFirst:
            func writer(_ id: String, _ tenant: String, _ name: String, key: [UInt8]?) -> Principal {
                Principal(id: id, role: .writer, tenant: tenant, name: name, fingerprint: "fp-\(id)", hostKey: key)
            }
            let keys = (0..<3).map { _ in HostSigningKey.generate().publicKey }
            try await c.insertPrincipal(writer("w2", "acme", "web2", key: keys[1].rawRepresentation), os: nil,
                                  now: t0.addingTimeInterval(10))
            try await c.insertPrincipal(writer("w1", "acme", "web1", key: keys[0].rawRepresentation), os: nil, now: t0)
            try await c.insertPrincipal(writer("w3", "beta", "web1", key: keys[2].rawRepresentation), os: nil,
                                  now: t0.addingTimeInterval(5))
            try await c.insertPrincipal(writer("w4", "acme", "old", key: nil), os: nil, now: t0)
            try await c.insertPrincipal(Self.admin("alice"), os: nil, now: t0)
            #expect(try await c.revokePrincipal(id: "w2", now: t0.addingTimeInterval(20)) != nil)
            let acme = try await c.hostKeyWriters(tenant: "acme")
            #expect(acme.map(\.id) == ["w1", "w2"])
            #expect(acme.map(\.hostKey) == [keys[0], keys[1]])
            #expect(acme.map(\.revokedAt) == [nil, t0.addingTimeInterval(20)])
            #expect(acme.map(\.createdAt) == [t0, t0.addingTimeInterval(10)])
            #expect(acme.map(\.name) == ["web1", "web2"] && acme.allSatisfy { $0.tenant == "acme" })
            #expect(try await c.hostKeyWriters(tenant: nil).map(\.id) == ["w1", "w3", "w2"])
            #expect(try await c.hostKeyWriters(tenant: "gamma").isEmpty)

        case .deepVerifyLedgerPutsNeverVerifiedFirst:
            for (n, tenant, uploader) in [(1, "acme", "w1"), (2, "acme", "w1"), (3, "acme", "w2"), (4, "beta", "w9")] {
                try await c.insertPack(
                    tenant: tenant, id: Self.pack(n).description, key: Self.packKey(tenant, Self.pack(n)),
                    size: 100 * n, retainUntil: t0.addingTimeInterval(day), chunkIDs: [], now: t0,
                    uploader: uploader, batch: 10, verified: false)
            }
            let p = (1...4).map { Self.pack($0).description }
            // Another tenant's pack is not recorded, and is named back.
            #expect(try await c.recordPackVerifications(tenant: "acme", packs: [p[1], p[3]], outcome: "ok",
                    reporter: "r1",
                                                  now: t0.addingTimeInterval(day)) == [p[3]])
            var s = try await c.deepVerifyState(tenant: "acme", budget: 1_000_000)
            #expect(s.packs == 3 && s.bytes == 600 && s.neverVerifiedPacks == 2 && s.neverVerifiedBytes == 400)
            #expect(s.due.map(\.id) == [p[0], p[2], p[1]])
            #expect(s.oldestVerifiedAt == t0.addingTimeInterval(day) && s.damagedPacks == 0)
            // A later report replaces the earlier one; the budget stops the list once reached.
            _ = try await c.recordPackVerifications(tenant: "acme", packs: [p[1]], outcome: "damaged", reporter: "r1",
                                              now: t0.addingTimeInterval(2 * day))
            s = try await c.deepVerifyState(tenant: "acme", budget: 100)
            #expect(s.due.map(\.id) == [p[0]] && s.damagedPacks == 1)
            #expect(s.newestVerifiedAt == t0.addingTimeInterval(2 * day))
            #expect(try await c.deepVerifyState(tenant: "acme", budget: 0).due.isEmpty)
            #expect(try await c.deepVerifyState(tenant: "beta", budget: 1000).neverVerifiedPacks == 1)
            let byUploader = try await c.deepVerifyByUploader()
            #expect(byUploader["w1"]?.never == 1 && byUploader["w1"]?.oldest == t0.addingTimeInterval(2 * day))
            #expect(byUploader["w2"]?.never == 1 && byUploader["w2"]?.oldest == nil)
            #expect(byUploader["w9"]?.never == 1)

        case .copyTargetsAreListedUntilRemovedOnce:
            func target(_ id: String, _ tenant: String, at: TimeInterval) -> CopyTarget {
                CopyTarget(info: Wire.CopyTargetInfo(
                    id: id, tenant: tenant, url: "s3://b-\(id)/r", endpoint: "https://s3.example", region: "eu-1",
                    marginSeconds: 86400, acceptUnenforced: id == "t2", createdAt: t0.addingTimeInterval(at),
                    lastProofAt: t0, lastProofOK: true, lastProofDetail: "ok", lastSyncAt: nil, lastSyncOK: nil,
                    lastSyncDetail: nil), credentialsFile: id == "t1" ? "/etc/redoubt/aws" : nil,
                    virtualHosted: id == "t2")
            }
            try await c.insertCopyTarget(target("t2", "acme", at: 20))
            try await c.insertCopyTarget(target("t1", "acme", at: 10))
            try await c.insertCopyTarget(target("t3", "beta", at: 30))
            #expect(try await c.copyTargets(tenant: nil).map(\.info.id) == ["t1", "t2", "t3"])
            let acme = try await c.copyTargets(tenant: "acme")
            #expect(acme.map(\.info.id) == ["t1", "t2"] && acme.map(\.info.url) == ["s3://b-t1/r", "s3://b-t2/r"])
            #expect(acme.allSatisfy { $0.info.endpoint == "https://s3.example" && $0.info.region == "eu-1" })
            #expect(acme.allSatisfy { $0.info.marginSeconds == 86400 && $0.info.lastProofAt == t0 })
            #expect(acme.map(\.info.createdAt) == [t0.addingTimeInterval(10), t0.addingTimeInterval(20)])
            #expect(acme.map(\.info.acceptUnenforced) == [false, true] && acme.map(\.virtualHosted) == [false, true])
            #expect(acme.map(\.credentialsFile) == ["/etc/redoubt/aws", nil])
            try await c.recordCopyProof("t1", at: t0.addingTimeInterval(day), ok: false, detail: "lock shortened")
            try await c.recordCopySync("t1", at: t0.addingTimeInterval(2 * day), ok: true, detail: "synced")
            let t1 = try await c.copyTargets(tenant: "acme").first
            #expect(t1?.info.lastProofAt == t0.addingTimeInterval(day) && t1?.info.lastProofOK == false)
            #expect(t1?.info.lastProofDetail == "lock shortened" && t1?.info.lastSyncOK == true)
            #expect(t1?.info.lastSyncAt == t0.addingTimeInterval(2 * day) && t1?.info.lastSyncDetail == "synced")
            // Removed once: a second removal (another admin's, at once) is told it came second.
            #expect(try await c.removeCopyTarget("t1", at: t0))
            #expect(try await !c.removeCopyTarget("t1", at: t0))
            #expect(try await !c.removeCopyTarget("nope", at: t0))
            #expect(try await c.copyTargets(tenant: nil).map(\.info.id) == ["t2", "t3"])

        case .findingsKeepTheirFirstTimeAndCountRepeats:
            #expect(try await c.recordFinding(tenant: "acme", object: "pack p1", code: "E_INTEGRITY", detail: "a",
                                              source: "scrub", at: t0))
            #expect(try await c.recordFinding(tenant: "beta", object: "pack p1", code: "E_INTEGRITY", detail: "b",
                                              source: "scrub", at: t0.addingTimeInterval(1)))
            #expect(try await !c.recordFinding(tenant: "acme", object: "pack p1", code: "E_INTEGRITY",
                                               detail: "again", source: "bucket-verify",
                                               at: t0.addingTimeInterval(day)))
            let acme = try await c.findings(tenant: "acme", since: nil)
            #expect(acme.count == 1 && acme.first?.count == 2 && acme.first?.detail == "again")
            #expect(acme.first?.firstSeen == t0 && acme.first?.lastSeen == t0.addingTimeInterval(day))
            #expect(acme.first?.source == "bucket-verify")
            #expect(try await c.findings(tenant: nil, since: nil).map(\.tenant) == ["acme", "beta"])
            #expect(try await c.findings(tenant: nil, since: t0.addingTimeInterval(2)).map(\.tenant) == ["acme"])
            // A host's expected interval, until it clears it.
            try await c.insertPrincipal(Principal(id: "w1", role: .writer, tenant: "acme", name: "web1",
                                                  fingerprint: "fp-w1", hostKey: nil), os: nil, now: t0)
            #expect(try await c.expectedIntervals().isEmpty)
            try await c.setExpectedInterval(principalID: "w1", seconds: day)
            #expect(try await c.expectedIntervals() == ["w1": day])
            try await c.setExpectedInterval(principalID: "w1", seconds: nil)
            #expect(try await c.expectedIntervals().isEmpty)

        default:
            Issue.record("\(check) is not a read check")
        }
    }
}

/// Every backend against the contract: one test over backend × check, each check on a fresh
/// catalog (a new SQLite file; a new schema in the PostgreSQL peer of scripts/peers).
@Suite(.firstPassOnly) struct CatalogConformanceTests {
    enum Backend: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case sqlite, postgres
        var testDescription: String { rawValue }
    }

    @Test(arguments: Backend.allCases, CatalogConformance.Check.allCases)
    func conformance(_ backend: Backend, _ check: CatalogConformance.Check) async throws {
        switch backend {
        case .sqlite:
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
                "redoubt-catalog-conf-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            let c = try Catalog(path: dir.appendingPathComponent("catalog.sqlite").path)
            try await CatalogConformance(catalog: c).run(check)
        case .postgres:
            guard let peer = try PostgresPeer.fromEnvironment() else { return }
            try await peer.withFreshSchema { c in try await CatalogConformance(catalog: c).run(check) }
        }
    }
}

import Foundation
import NIOHTTP1
import Testing
@testable import RedoubtClient
import RedoubtCore
import RedoubtKMS
@testable import RedoubtServer

/// The rolling deep verify (docs/PROTOCOL.md §4.6.1): the server records when a restorer
/// last opened each pack; each budgeted run opens the never-verified packs first, then the
/// longest ago; a writer can neither mark packs verified nor read the queue.
@Suite(.serialized, .timeLimit(.minutes(5))) struct RollingDeepVerifyTests {
    struct Tenant {
        let server: TestServer
        let host: (ClientConfig, APIClient)
        let attacker: (ClientConfig, APIClient)
        let restorer: (ClientConfig, APIClient)
        let readKey: ReadPrivateKey
        var chunkIDKey: ChunkIDKey { get throws { try restorer.0.sharedMaterial().chunkIDKey } }
    }

    func withTenant(_ body: (Tenant) async throws -> Void) async throws {
        let server = try await TestServer.start()
        var clients: [APIClient] = []
        do {
            try await server.createTenant("acme", keys: try TenantKeys.generate())
            let host = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
            let attacker = try await server.enroll(tenant: "acme", role: "writer", name: "web2")
            let restorer = try await server.enroll(tenant: "acme", role: "restorer", name: "vault")
            clients = [host.1, attacker.1, restorer.1]
            let readKey = try await PassphraseKeyProvider(passphrase: SecretBytes(copying: Array("pw".utf8)), logN: 10)
                .unwrap(try restorer.0.wrappedReadKey(), context: KeyContext(tenant: "acme", keyVersion: 1))
            try await body(Tenant(server: server, host: host, attacker: attacker, restorer: restorer, readKey: readKey))
        } catch {
            for c in clients { await c.shutdown() }
            await server.stop()
            throw error
        }
        for c in clients { await c.shutdown() }
        await server.stop()
    }

    /// Commits `count` one-pack snapshots as `host`; returns their pack IDs.
    func commit(_ count: Int, as host: (ClientConfig, APIClient), tag: String) async throws -> [PackID] {
        var packs: [PackID] = []
        for i in 0..<count {
            let file = ("f\(i)", Array("\(tag) \(i) \(UUID())\n".utf8))
            let s = try makeSnapshot(keys: try host.0.writeKeySet(), files: [file])
            for p in s.packs { _ = try await host.1.uploadPack(id: p.id, bytes: p.bytes) }
            _ = try await host.1.commit(manifestBytes: s.manifest.bytes)
            packs += s.packs.map(\.id)
        }
        return packs
    }

    @Test func eachRunOpensTheNeverVerifiedFirstThenTheLongestAgoWithinItsBudget() async throws {
        try await withTenant { t in
            let packs = try await commit(4, as: t.host, tag: "web1")
            var order: [String] = []
            // A budget of one byte opens exactly one pack a run (the pack that reaches it).
            for day in 0..<6 {
                t.server.clock.set(Date().addingTimeInterval(Double(day) * 86400))
                let r = try await RollingDeepVerifier().run(client: t.restorer.1, readKey: t.readKey,
                                                            chunkIDKey: try t.chunkIDKey, budget: .bytes(1))
                #expect(r.packsChecked == 1 && r.isClean && r.chunksChecked > 0, "\(r)")
                #expect(r.before?.neverVerifiedPacks == max(0, packs.count - day))
                let state = try await t.restorer.1.deepVerifyState(budget: Int64.max)
                order.append(try #require(state.due.last?.id))
            }
            // The first four runs opened each pack once; the next two the two verified longest ago.
            #expect(Set(order.prefix(4)) == Set(packs.map(\.description)))
            #expect(Array(order.suffix(2)) == Array(order.prefix(2)), "\(order)")
            let state = try await t.restorer.1.deepVerifyState(budget: 0)
            #expect(state.neverVerifiedPacks == 0 && state.packs == packs.count && state.due.isEmpty)
            #expect(state.damagedPacks == 0 && state.oldestVerifiedAt != nil)
            // The admin sees it per host.
            let web1 = try #require(try await t.server.admin.principals().first { $0.name == "web1" })
            #expect(web1.packsNotDeepVerified == nil && web1.oldestDeepVerifyAt != nil)
            let web2 = try #require(try await t.server.admin.principals().first { $0.name == "web2" })
            #expect(web2.oldestDeepVerifyAt == nil)
        }
    }

    @Test func theDefaultBudgetOpensEveryPackWithinThirtyDailyRuns() async throws {
        // The arithmetic: never-verified bytes, plus 1/(D−1) of the verified bytes, rounded up.
        let s = Wire.DeepVerifyState(tenant: "t", packs: 100, bytes: 2_900 + 50, neverVerifiedPacks: 1,
                                     neverVerifiedBytes: 50, oldestVerifiedAt: nil, newestVerifiedAt: nil,
                                         damagedPacks: 0, due: [])
        #expect(RollingBudget.default == .days(30))
        #expect(RollingBudget.days(30).bytes(for: s) == 50 + 100)
        #expect(RollingBudget.days(1).bytes(for: s) == 2_950)
        #expect(RollingBudget.days(2).bytes(for: s) == 2_950)
        #expect(RollingBudget.days(7).bytes(for: s) == 50 + 484)  // 2900 / 6 = 483.3, rounded up

        try await withTenant { t in
            _ = try await commit(30, as: t.host, tag: "web1")
            var firstOpened: [String: Int] = [:]
            var lastOpened: [String: Int] = [:]
            // Day 0 opens everything (never verified); then each pack again within 29 runs.
            for day in 0..<31 {
                t.server.clock.set(Date().addingTimeInterval(Double(day) * 86400))
                let before = try await t.restorer.1.deepVerifyState(budget: 0)
                let budget = RollingBudget.default.bytes(for: before)
                let due = try await t.restorer.1.deepVerifyState(budget: budget).due.map(\.id)
                let r = try await RollingDeepVerifier().run(client: t.restorer.1, readKey: t.readKey,
                                                            chunkIDKey: try t.chunkIDKey, budget: .default)
                #expect(r.budgetBytes == budget && r.packsChecked == due.count && r.isClean)
                for p in due {
                    if let last = lastOpened[p] { #expect(day - last <= 29, "pack \(p) waited \(day - last) days") }
                    firstOpened[p] = firstOpened[p] ?? day
                    lastOpened[p] = day
                }
            }
            #expect(firstOpened.count == 30 && firstOpened.values.allSatisfy { $0 == 0 })
            #expect(lastOpened.values.allSatisfy { $0 >= 2 }, "every pack was opened again within the period")
        }
    }

    @Test func aDamagedPackIsReportedWithItsUploaderAndEverySnapshotThatNeedsIt() async throws {
        try await withTenant { t in
            _ = try await t.server.admin.setDedupScope(tenant: "acme", scope: "tenant", requestID: nil)
            let content = (0..<150_000).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
            let keys = try t.attacker.0.writeKeySet()
            let target = content.withUnsafeBytes { keys.shared.chunkIDKey.chunkID(for: $0) }
            var writer = try PackWriter(recipient: keys.shared.readPublicKey, version: 1)
            let garbage = [UInt8](repeating: 0x42, count: content.count)
            try writer.append(id: target, kind: .none, rawLength: content.count, payload: garbage)
            let poisoned = try writer.finish()
            _ = try await t.attacker.1.uploadPack(id: poisoned.id, bytes: poisoned.bytes)
            // Format-1 chunks cannot be checked without keys: the victim's format-1 backup (as a
            // format-1 client made it under tenant-wide dedup) reused the poisoned chunk.
            let victimID = try await commitFormatOneSnapshot([("data.bin", content)], as: t.host,
                                                             isHeld: { $0 == target }, otherPacks: [poisoned.id],
                                                                 nonce: 5)
            let clean = try await commit(2, as: t.host, tag: "clean")

            let r = try await RollingDeepVerifier().run(client: t.restorer.1, readKey: t.readKey,
                                                        chunkIDKey: try t.chunkIDKey, budget: .default)
            #expect(r.damagedPacks.map(\.pack) == [poisoned.id.description], "\(r.damagedPacks)")
            #expect(r.uploaders[poisoned.id.description] == "web2")
            #expect(r.affectedSnapshots.map(\.snapshot) == [victimID], "\(r.affectedSnapshots)")
            #expect(r.affectedSnapshots.first?.problem.contains("data.bin") == true)
            #expect(r.after?.damagedPacks == 1 && r.after?.neverVerifiedPacks == 0)
            let flagged = try await t.server.admin.principals().filter { ($0.damagedPacks ?? 0) > 0 }.map(\.name)
            #expect(flagged == ["web2"])
            // The clean packs were reported verified; the damaged one counts as checked too.
            let state = try await t.restorer.1.deepVerifyState(budget: Int64.max)
            #expect(Set(clean.map(\.description)).isSubset(of: state.due.filter { $0.lastOutcome == "ok" }.map(\.id)))
            #expect(state.due.first { $0.id == poisoned.id.description }?.lastOutcome == "damaged")
        }
    }

    @Test func aWriterCanNeitherMarkPacksVerifiedNorReadTheQueue() async throws {
        try await withTenant { t in
            let own = try await commit(1, as: t.attacker, tag: "web2")
            let theirs = try await commit(1, as: t.host, tag: "web1")
            // The taken host tries to push its own (and its neighbour's) packs to the back of the queue.
            await refused("E_FORBIDDEN", "a writer marking its own pack verified") {
                _ = try await t.attacker.1.reportVerifiedPacks(own + theirs)
            }
            await refused("E_FORBIDDEN", "a writer reading the deep-verify queue") {
                _ = try await t.attacker.1.deepVerifyState(budget: 1 << 40)
            }
            let state = try await t.restorer.1.deepVerifyState(budget: 0)
            #expect(state.neverVerifiedPacks == 2, "a refused report changed the ledger")
            let audit = try await t.server.admin.audit()
            #expect(audit.contains {
                $0.action == "report-verified-packs" && $0.outcome == "denied" && $0.actor.contains("web2")
            })

            // A restorer of another tenant cannot touch this tenant's ledger: its IDs are unknown there.
            try await t.server.createTenant("other", keys: try TenantKeys.generate())
            let outsider = try await t.server.enroll(tenant: "other", role: "restorer", name: "vault-other")
            let answer = try await outsider.1.reportVerifiedPacks(own)
            #expect(answer.recorded == 0 && answer.unknown == own.map(\.description))
            #expect(try await t.restorer.1.deepVerifyState(budget: 0).neverVerifiedPacks == 2)
            await outsider.1.shutdown()

            // A report is bounded, and names only pack IDs.
            await refused("E_BAD_REQUEST", "a report of 1001 packs") {
                _ = try await t.restorer.1.json(Wire.PacksVerifiedInfo.self, .POST, "/v1/packs/verified",
                                                body: Wire.PacksVerifiedReport(packs: Array(repeating: own[0]
                                                    .description,
                                                                                            count: 1001)))
            }
            await refused("E_BAD_REQUEST", "a report naming no pack ID") {
                _ = try await t.restorer.1.json(Wire.PacksVerifiedInfo.self, .POST, "/v1/packs/verified",
                                                body: Wire.PacksVerifiedReport(packs: ["../../etc/passwd"]))
            }
            await refused("E_BAD_REQUEST", "a negative budget") {
                _ = try await t.restorer.1.deepVerifyState(budget: -1)
            }
            // The victim's snapshot still restores bit for bit.
            #expect(try await t.restorer.1.verify(try await t.restorer.1.snapshots(host: "web1")[0].id).damaged.isEmpty)
        }
    }
}

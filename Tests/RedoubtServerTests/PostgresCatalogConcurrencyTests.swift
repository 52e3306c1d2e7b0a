import Foundation
import RedoubtCore
@testable import RedoubtServer
import Testing

/// The PostgreSQL catalog's atomic operations under several servers at once: two catalogs,
/// each with its own connection pool (as two `server run` processes have), on one schema of
/// the real PostgreSQL peer. What SQLite gets from its single writer must hold here by the
/// techniques docs/PROTOCOL.md §7.1 names.
@Suite(.firstPassOnly) struct PostgresCatalogConcurrencyTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    /// A database that would answer commits before they are on disk is refused before the
    /// catalog is used, with the setting and its fix named; one that syncs them opens.
    @Test func aDatabaseWithoutDurableCommitsIsRefused() async throws {
        guard let peer = try PostgresPeer.fromEnvironment() else { return }
        // A schema that does not exist: a catalog that went on to migrate would fail there
        // rather than create tables outside the tests' own schemas.
        let schema = PostgresPeer.newSchemaName()
        var lax = peer.configuration(schema: schema)
        lax.options.additionalStartupParameters.append(("synchronous_commit", "off"))
        do {
            let catalog = try await PostgresCatalog(configuration: lax)
            await catalog.shutdown()
            Issue.record("a catalog opened on synchronous_commit = off")
        } catch let e as ServerError {
            #expect(e.code == "E_CONFIG" && e.message.contains("synchronous_commit = off")
                && e.message.contains("ALTER DATABASE"), "\(e)")
        }
        // `local` still flushes this server's WAL before answering: accepted.
        try await peer.admin("CREATE SCHEMA \(schema)")
        var local = peer.configuration(schema: schema)
        local.options.additionalStartupParameters.append(("synchronous_commit", "local"))
        do {
            let catalog = try await PostgresCatalog(configuration: local)
            await catalog.shutdown()
        } catch {
            Issue.record("a catalog on synchronous_commit = local did not open: \(error)")
        }
        try await peer.admin("DROP SCHEMA \(schema) CASCADE")
    }

    @Test func auditAppendsFromTwoServersFormOneChain() async throws {
        guard let peer = try PostgresPeer.fromEnvironment() else { return }
        try await peer.withFreshSchema(servers: 2) { servers in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<8 {
                    let c = servers[task % 2]
                    group.addTask {
                        for i in 0..<10 {
                            _ = try await c.audit(time: Self.t0, actor: "server\(task % 2)", role: "writer",
                                                  credential: "fp", source: "-", action: "upload-pack",
                                                  object: "pack \(task)-\(i)", outcome: "ok", detail: "")
                        }
                    }
                }
                try await group.waitForAll()
            }
            let all = try await servers[1].auditRecords(after: 0, limit: 1000)
            #expect(all.map(\.seq) == Array(1...80), "the chain forked or has a gap")
            #expect(try await servers[0].verifyAudit() == (nil, 80))
        }
    }

    @Test func aTokenRedeemedAtTwoServersAtOnceEnrollsOnce() async throws {
        guard let peer = try PostgresPeer.fromEnvironment() else { return }
        try await peer.withFreshSchema(servers: 2) { servers in
            try await servers[0].insertTenant(TenantRecord(
                name: "acme", readKeyID: "rk", readPublicKey: [1], writeMaterial: [2], wrappedReadKey: "{}",
                minRetention: 86400, createdAt: Self.t0))
            let tokens = (0..<6).map { "token-\($0)" }
            for (n, t) in tokens.enumerated() {
                try await servers[0].insertEnrollment(tokenHash: t, role: .writer, tenant: "acme", name: "web\(n)",
                                                      expiresAt: Self.t0.addingTimeInterval(3600), createdBy: "a")
            }
            // Each token at both servers at once (and twice at each): one enrollment per token.
            let outcomes = try await withThrowingTaskGroup(of: (String, Bool).self) { group in
                for t in tokens {
                    for attempt in 0..<4 {
                        let c = servers[attempt % 2]
                        group.addTask {
                            do {
                                _ = try await c.redeemEnrollment(tokenHash: t, now: Self.t0, os: nil) { e in
                                    Principal(id: "\(t)-\(attempt)", role: e.role, tenant: e.tenant, name: e.name,
                                              fingerprint: "fp-\(t)-\(attempt)", hostKey: [9])
                                }
                                return (t, true)
                            } catch let e as CatalogError where e.code == .notFound {
                                return (t, false)
                            }
                        }
                    }
                }
                var out: [(String, Bool)] = []
                for try await o in group { out.append(o) }
                return out
            }
            for t in tokens {
                #expect(outcomes.filter { $0.0 == t && $0.1 }.count == 1, "token \(t) enrolled other than once")
            }
            #expect(try await servers[1].principals(tenant: "acme").count == tokens.count)
            #expect(try await servers[1].pendingEnrollments(now: Self.t0).isEmpty)
        }
    }

    /// The last two admins, each removed at a different server at the same instant (each
    /// removal having checked there was another admin): one removal wins, never both.
    @Test func twoServersNeverRevokeTheLastTwoAdminsTogether() async throws {
        guard let peer = try PostgresPeer.fromEnvironment() else { return }
        try await peer.withFreshSchema(servers: 2) { servers in
            for round in 0..<5 {
                let names = ["alice\(round)", "bob\(round)"]
                for n in names {
                    try await servers[0].insertPrincipal(Principal(id: n, role: .admin, tenant: nil, name: n,
                                                                   fingerprint: "fp-\(n)", hostKey: nil),
                                                         os: nil, now: Self.t0)
                }
                // The previous round's survivor goes: this pair are the only admins.
                let others = try await servers[0].principals(tenant: nil).filter {
                    $0.role == .admin && !names.contains($0.name)
                }
                for p in others {
                    #expect(try await servers[0].revokeAdmin(name: p.name, now: Self.t0))
                }
                let revoked = try await withThrowingTaskGroup(of: Bool.self) { group in
                    for (i, n) in names.enumerated() {
                        group.addTask {
                            do { return try await servers[i].revokeAdmin(name: n, now: Self.t0) } catch let e
                                as CatalogError where e.code == .conflict { return false }
                        }
                    }
                    var out: [Bool] = []
                    for try await r in group { out.append(r) }
                    return out
                }
                #expect(revoked.filter { $0 }.count == 1, "round \(round): \(revoked)")
                #expect(try await servers[1].adminCount() == 1)
            }
        }
    }

    /// The reclaim race of GarbageCollection.swift across servers: one server claims a queued
    /// pack key for deletion while another records the pack again. Whatever the interleaving,
    /// never both: a key deleted from the store must not be recorded.
    @Test func aClaimAndARecordOfOneKeyNeverBothWin() async throws {
        guard let peer = try PostgresPeer.fromEnvironment() else { return }
        try await peer.withFreshSchema(servers: 2) { servers in
            let (gc, writer) = (servers[0], servers[1])
            let later = Self.t0.addingTimeInterval(30 * 86400)
            let packs = (0..<12).map { n in PackID(bytes: [0x9A, UInt8(n)] + [UInt8](repeating: 7, count: 30))! }
            for p in packs {
                try await writer.insertPack(tenant: "acme", id: p.description,
                                            key: RepositoryService.packKey(tenant: "acme", id: p).path, size: 1,
                                            retainUntil: Self.t0, chunkIDs: [], now: Self.t0, uploader: "w1",
                                            batch: 10, verified: false)
            }
            _ = try await gc.collect(tenant: "acme", now: later, grace: 7 * 86400, dryRun: false)
            #expect(try await gc.pendingDeletes(tenant: "acme").count == packs.count)
            let results = try await withThrowingTaskGroup(of: (Int, claimed: Bool?, recorded: Bool?).self) { group in
                for (n, p) in packs.enumerated() {
                    let key = RepositoryService.packKey(tenant: "acme", id: p).path
                    group.addTask { (n, try await gc.claimPendingDelete(key, tenant: "acme", now: later), nil) }
                    group.addTask {
                        do {
                            try await writer.insertPack(tenant: "acme", id: p.description, key: key, size: 1,
                                                        retainUntil: later.addingTimeInterval(86400), chunkIDs: [],
                                                        now: later, uploader: "w1", batch: 10, verified: false)
                            return (n, nil, true)
                        } catch let e as CatalogError where e.code == .beingCollected {
                            return (n, nil, false)
                        }
                    }
                }
                var out: [(Int, claimed: Bool?, recorded: Bool?)] = []
                for try await r in group { out.append(r) }
                return out
            }
            for n in packs.indices {
                let claimed = results.contains { $0.0 == n && $0.claimed == true }
                let recorded = results.contains { $0.0 == n && $0.recorded == true }
                #expect(claimed != recorded, "pack \(n): claimed \(claimed), recorded \(recorded)")
                let held = try await gc.pack(tenant: "acme", id: packs[n].description) != nil
                #expect(held == recorded, "pack \(n): the catalog holds it: \(held), recorded: \(recorded)")
            }
        }
    }
}

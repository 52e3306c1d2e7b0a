import Foundation
import GRDB
import Logging
import Testing
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer

/// Taking a credential back (docs/PROTOCOL.md §4.4), against a real server over TLS: a
/// revoked host is refused from its next request on, what it committed stays and still
/// verifies, a token issued for it no longer enrolls, and nobody but an admin can revoke.
@Suite(.serialized, .timeLimit(.minutes(5))) struct PrincipalRevocationTests {
    func randomBytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255) } }

    func commitOne(_ cfg: ClientConfig, _ client: APIClient, name: String) async throws -> Wire.SnapshotInfo {
        let (packs, manifest) = try makeSnapshot(keys: try cfg.writeKeySet(), files: [(name, randomBytes(64 << 10))])
        for p in packs { _ = try await client.uploadPack(id: p.id, bytes: p.bytes) }
        return try await client.commit(manifestBytes: manifest.bytes)
    }

    @Test(.sqliteCatalogOnly) func aRevokedHostIsRefusedWhatItCommittedStaysAndItsNameCanEnrollAnew() async throws {
        let server = try await TestServer.start()
        var clients: [APIClient] = []
        do {
            try await server.createTenant("acme", keys: try TenantKeys.generate())
            let (wc, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
            let (oc, other) = try await server.enroll(tenant: "acme", role: "writer", name: "web2")
            let (_, restorer) = try await server.enroll(tenant: "acme", role: "restorer", name: "vault")
            let (_, auditor) = try await server.enroll(tenant: "acme", role: "auditor", name: "soc")
            clients += [writer, other, restorer, auditor]
            let admin = server.admin

            let snap = try await commitOne(wc, writer, name: "before.bin")
            let listed = try await admin.principals()
            let web1 = try #require(listed.first { $0.role == "writer" && $0.name == "web1" })
            #expect(web1.tenant == "acme" && web1.revokedAt == nil && web1.os != nil)
            #expect(web1.lastSnapshotAt != nil, "a writer's newest snapshot is listed")
            #expect(listed.first { $0.name == "web2" }?.lastSnapshotAt == nil, "a host that never committed shows none")

            // Nobody but an admin revokes: not the host itself, another host, a restorer or an auditor.
            for (c, who) in [(writer, "the host itself"), (other, "another host"), (restorer, "a restorer"), (auditor,
                "an auditor")] {
                await refused("E_FORBIDDEN", "\(who) revoking web1") {
                    _ = try await c.revokePrincipal(id: web1.id, requestID: nil)
                }
                await refused("E_FORBIDDEN", "\(who) listing principals") { _ = try await c.principals() }
            }
            // Admins are removed through `admins remove` (with its approval), never here.
            let adminID = try #require(listed.first { $0.role == "admin" }?.id)
            await refused("E_BAD_REQUEST", "revoking an admin as a principal") {
                _ = try await admin.revokePrincipal(id: adminID, requestID: nil)
            }
            await refused("E_NOT_FOUND", "revoking an unknown ID") {
                _ = try await admin.revokePrincipal(id: "00112233", requestID: nil)
            }

            // A token for web1 issued before the revocation (say, on the compromised host's disk),
            // and one for another host, which the revocation must leave alone.
            let spare = try await admin.createEnrollment(tenant: "acme", role: "writer", name: "web1",
                ttlSeconds: 3600).token
            let web3Token = try await admin.createEnrollment(tenant: "acme", role: "writer", name: "web3",
                ttlSeconds: 3600).token
            // While web1 is active its token does not enroll a second web1, and is not used up by trying.
            await refused("E_CONFLICT", "a second web1 while the first is active") {
                _ = try await ClientConfig.enroll(token: spare,
                    into: ClientConfig(path: server.dir.appendingPathComponent("cfg-spare0").path), os: nil)
            }

            // One admin: immediate.
            let revoked = try await admin.revokePrincipal(id: web1.id, requestID: nil)
            #expect(revoked.revokedAt != nil && revoked.id == web1.id)
            await refused("E_CONFLICT", "revoking twice") {
                _ = try await admin.revokePrincipal(id: web1.id, requestID: nil)
            }

            // Its credential is refused from the next request on, and told why.
            let e = await refused("E_UNAUTHENTICATED", "a revoked host listing") { _ = try await writer.snapshots() }
            #expect(e?.message.contains("revoked") == true, "\(String(describing: e))")
            await refused("E_UNAUTHENTICATED", "a revoked host committing") {
                _ = try await commitOne(wc, writer, name: "after.bin")
            }
            await refused("E_UNAUTHENTICATED", "a revoked host asking for chunks") {
                _ = try await writer.send(.POST, "/v1/chunks/query", body: randomBytes(32))
            }
            // The other host goes on.
            _ = try await commitOne(oc, other, name: "web2.bin")

            // The token taken before the revocation enrolls nothing.
            await refused("E_FORBIDDEN", "the token issued before the revocation") {
                _ = try await ClientConfig.enroll(token: spare,
                    into: ClientConfig(path: server.dir.appendingPathComponent("cfg-spare").path), os: nil)
            }
            let web3Cfg = ClientConfig(path: server.dir.appendingPathComponent("cfg-web3").path)
            _ = try await ClientConfig.enroll(token: web3Token, into: web3Cfg, os: nil)
            clients.append(try APIClient(credential: web3Cfg.credential()))

            // What it committed stays, and its manifest still verifies against the host key,
            // which the catalog keeps.
            #expect(try await admin.snapshots().contains { $0.id == snap.id })
            let report = try await restorer.verify(snap.id)
            #expect(report.damaged.isEmpty && report.missing.isEmpty)
            let hostKey = try #require(try await server.service.sqlite.db.read { db in
                try Data.fetchOne(db, sql: "SELECT host_key FROM principals WHERE id = ?", arguments: [web1.id])
            })
            let manifest = try Manifest.parse(try await restorer.manifestBytes(snap.id),
                expectedID: SnapshotID(hex: snap.id))
            let kept = try HostPublicKey(rawRepresentation: Array(hostKey))
            #expect(kept == manifest.header.hostKey)
            try manifest.verify(tenant: "acme", host: "web1", hostKey: kept, readKeyID: manifest.header.readKeyID)

            // Listing: hidden by default, shown with all=1; the audit log names who did it.
            #expect(try await admin.principals().contains { $0.id == web1.id } == false)
            #expect(try await admin.principals(includeRevoked: true).first { $0.id == web1.id }?.revokedAt != nil)
            let audit = try await admin.audit()
            #expect(audit.contains {
                $0.action == "revoke" && $0.object == "writer acme/web1" && $0.outcome == "ok"
                    && $0.actor.hasPrefix("admin")
            })
            #expect(audit.contains { $0.action == "revoke" && $0.outcome == "denied" && $0.actor.contains("web1") })
            #expect(audit.contains { $0.action == "list-snapshots" && $0.outcome == "denied"
                && $0.credential == web1.fingerprint.prefix(16) },
                    "a revoked credential's attempts are audited with its certificate")
            #expect(audit.contains { $0.action == "revoke" && $0.detail.contains("tokens-cancelled=1") },
                "only web1's token was cancelled")

            // The name can enroll anew with a fresh token; the old credential stays refused.
            let fresh = try await admin.createEnrollment(tenant: "acme", role: "writer", name: "web1",
                ttlSeconds: 3600).token
            let newCfg = ClientConfig(path: server.dir.appendingPathComponent("cfg-web1-again").path)
            _ = try await ClientConfig.enroll(token: fresh, into: newCfg, os: nil)
            let again = try APIClient(credential: newCfg.credential())
            clients.append(again)
            _ = try await commitOne(newCfg, again, name: "again.bin")
            #expect(try await again.snapshots().count == 2,
                "the host sees its snapshots from before the revocation too")
            await refused("E_UNAUTHENTICATED", "the old credential after re-enrollment") {
                _ = try await writer.snapshots()
            }
        } catch { Issue.record("\(error)") }
        for c in clients { await c.shutdown() }
        await server.stop()
    }

    @Test func aRevokedRestorerCannotDownloadAndNeedsNoApproval() async throws {
        let server = try await TestServer.start()
        var clients: [APIClient] = []
        do {
            try await server.createTenant("acme", keys: try TenantKeys.generate())
            let (wc, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
            let (_, restorer) = try await server.enroll(tenant: "acme", role: "restorer", name: "vault")
            // A second admin: weakening changes now need approval, but this one narrows access.
            let bob = try await server.enrollAdmin("bob")
            clients += [writer, restorer, bob]

            let snap = try await commitOne(wc, writer, name: "a.bin")
            _ = try await restorer.manifestBytes(snap.id)
            let vault = try #require(try await bob.principals().first { $0.role == "restorer" && $0.name == "vault" })
            _ = try await bob.revokePrincipal(id: vault.id, requestID: nil)
            await refused("E_UNAUTHENTICATED", "a revoked restorer reading a manifest") {
                _ = try await restorer.manifestBytes(snap.id)
            }
            await refused("E_UNAUTHENTICATED", "a revoked restorer fetching the wrapped read key") {
                _ = try await restorer.send(.GET, "/v1/tenants/acme/read-key")
            }
            // An auditor likewise.
            let (_, auditor) = try await server.enroll(tenant: "acme", role: "auditor", name: "soc")
            clients.append(auditor)
            _ = try await auditor.audit()
            let soc = try #require(try await bob.principals().first { $0.role == "auditor" && $0.name == "soc" })
            _ = try await bob.revokePrincipal(id: soc.id, requestID: nil)
            await refused("E_UNAUTHENTICATED", "a revoked auditor reading the log") { _ = try await auditor.audit() }
        } catch { Issue.record("\(error)") }
        for c in clients { await c.shutdown() }
        await server.stop()
    }

    @Test func revokingAHostNeedsApprovalOnceThereAreTwoAdminsAndTheApprovalNamesThatCredential() async throws {
        let server = try await TestServer.start()
        var clients: [APIClient] = []
        do {
            try await server.createTenant("acme", keys: try TenantKeys.generate())
            let (wc, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
            let bob = try await server.enrollAdmin("bob")
            clients += [writer, bob]
            let alice = server.admin

            let web1 = try #require(try await alice.principals().first { $0.role == "writer" && $0.name == "web1" })
            // An admin alone (say, with a stolen admin credential) cannot stop a host's backups.
            await refused("E_APPROVAL_REQUIRED", "a lone revocation of a host") {
                _ = try await alice.revokePrincipal(id: web1.id, requestID: nil)
            }
            _ = try await commitOne(wc, writer, name: "still.bin")
            let req = try #require(try await alice.requests().first { $0.action == "revoke-writer" })
            #expect(req.object == "writer acme/web1" && req.parameters == ["principal": web1.id])
            await refused("E_APPROVAL_PENDING", "using the pending request") {
                _ = try await alice.revokePrincipal(id: web1.id, requestID: req.id)
            }
            _ = try await bob.decide(request: req.id, approve: true)
            // A second request for the same change, approved too but kept back.
            await refused("E_APPROVAL_REQUIRED", "a second lone revocation") {
                _ = try await alice.revokePrincipal(id: web1.id, requestID: nil)
            }
            let spare = try #require(try await alice.requests().first {
                $0.action == "revoke-writer" && $0.state == "pending"
            })
            _ = try await bob.decide(request: spare.id, approve: true)

            await refused("E_FORBIDDEN", "bob carrying out alice's request") {
                _ = try await bob.revokePrincipal(id: web1.id, requestID: req.id)
            }
            #expect(try await alice.revokePrincipal(id: web1.id, requestID: req.id).revokedAt != nil)
            await refused("E_UNAUTHENTICATED", "the revoked host") { _ = try await writer.snapshots() }

            // The approvals name that credential: a web1 enrolled anew is not covered by the one left.
            let fresh = try await alice.createEnrollment(tenant: "acme", role: "writer", name: "web1",
                ttlSeconds: 3600).token
            let cfg = ClientConfig(path: server.dir.appendingPathComponent("cfg-web1-again").path)
            _ = try await ClientConfig.enroll(token: fresh, into: cfg, os: nil)
            let newID = try #require(try await alice.principals().first {
                $0.role == "writer" && $0.name == "web1"
            }?.id)
            #expect(newID != web1.id)
            await refused("E_FORBIDDEN", "an approval for the old credential used on the new one") {
                _ = try await alice.revokePrincipal(id: newID, requestID: spare.id)
            }
            #expect(try await alice.principals().contains { $0.id == newID })
        } catch { Issue.record("\(error)") }
        for c in clients { await c.shutdown() }
        await server.stop()
    }

    /// The same through the built binary: `host list --json`, `host revoke`, and the host's
    /// next `backup` failing with exit 4 and a message that says what happened.
    @Test func theCLIListsAndRevokesAHostWhoseNextBackupIsRefused() async throws {
        let q = try await QuickstartServer.start("revoke", quickstartEnv: "REDOUBT_PASSPHRASE=revoke-pass")
        defer { q.stop() }
        let (l, lOut) = await q.sh("admin \(q.admin) host list quickstart --json")
        try #require(l == 0, "host list: \(lOut)")
        let hosts = try JSONDecoder().decode([Wire.PrincipalInfo].self, from: Data(lOut.utf8), dates: true)
        let host = try #require(hosts.first, "no host listed: \(lOut)")
        #expect(hosts.allSatisfy { $0.role == "writer" && $0.tenant == "quickstart" } && host.lastSnapshotAt != nil)
        // Monitoring: the host committed a moment ago, so it is stale after 1 s (once a
        // second has passed) but not after a day.
        let (fresh, freshOut) = await q.sh("admin \(q.admin) host list quickstart --stale-after 1d")
        #expect(fresh == 0 && !freshOut.contains(host.name), "stale after a day: \(fresh) \(freshOut)")
        try await Task.sleep(nanoseconds: 1_100_000_000)
        let (stale, staleOut) = await q.sh("admin \(q.admin) host list quickstart --stale-after 1s --json")
        #expect(stale == 8 && staleOut.contains(host.name), "stale after a second: \(stale) \(staleOut)")
        await #expect(q.sh("admin \(q.admin) restorer list --stale-after 1d").0 == 2, "--stale-after is for hosts only")

        let (r, rOut) = await q.sh("admin \(q.admin) host revoke quickstart \(host.name)")
        #expect(r == 0 && rOut.contains("revoked"), "host revoke: \(rOut)")
        let (b, bOut) = await q.sh("backup '\(q.base)/sample' --config '\(q.base)/host'")
        #expect(b == 4 && bOut.contains("revoked"), "backup after revocation: \(b) \(bOut)")
        let (again, againOut) = await q.sh("admin \(q.admin) host revoke quickstart \(host.name)")
        #expect(again == 3 && againOut.contains("--all"), "revoking twice: \(again) \(againOut)")
        await #expect(q.sh("admin \(q.admin) host list quickstart").1.contains(host.name) == false)
        await #expect(q.sh("admin \(q.admin) host list quickstart --all").1.contains("revoked"))
        // What it committed still restores bit for bit.
        let (rs, rsOut) = await q.restore(env: "REDOUBT_PASSPHRASE=revoke-pass")
        #expect(rs == 0, "restore after revocation: \(rsOut)")
    }

    /// Principals are not in the store: a rebuild carries them over from the previous
    /// catalog, revocations included, even when an older build last wrote that catalog
    /// (fewer columns than this build's tables: it is brought up to date first).
    @Test(.sqliteCatalogOnly) func aRebuildKeepsRevocationsEvenFromACatalogAnOlderBuildLeft() async throws {
        let server = try await TestServer.start()
        var clients: [APIClient] = []
        do {
            try await server.createTenant("acme", keys: try TenantKeys.generate())
            let (_, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
            let (_, restorer) = try await server.enroll(tenant: "acme", role: "restorer", name: "vault")
            clients += [writer, restorer]
            let vault = try #require(try await server.admin.principals().first { $0.name == "vault" })
            _ = try await server.admin.revokePrincipal(id: vault.id, requestID: nil)
            for c in clients { await c.shutdown() }
            clients = []
            await server.admin.shutdown()
            await server.listener.stop()

            // The catalog as the build before revocation times left it.
            let path = server.home.catalogPath
            let q = try DatabaseQueue(path: path)
            try await q.write { db in
                try db.execute(sql: "ALTER TABLE principals DROP COLUMN revoked_at")
                try db.execute(sql: "DELETE FROM grdb_migrations WHERE identifier = 'v6-principal-revocation'")
            }
            try q.close()

            let report = try await CatalogRebuilder.rebuild(home: server.home, logger: .init(label: "test"))
            #expect(report.rejected.isEmpty, "\(report.rejected)")
            // The previous catalog is only read: not migrated, not changed.
            let previous = try #require(report.previousCatalog)
            let oldColumns = try await DatabaseQueue(path: previous).read {
                db in try String.fetchAll(db, sql: "SELECT name FROM pragma_table_info('principals')")
            }
            #expect(!oldColumns.isEmpty && !oldColumns.contains("revoked_at"))
            let rebuilt = try Catalog(path: path)
            let all = try rebuilt.principalListing(includeRevoked: true)
            #expect(all.contains { $0.name == "web1" && $0.revokedAt == nil })
            #expect(all.contains { $0.name == "vault" && $0.revokedAt != nil }, "the revocation survived the rebuild")
            #expect(try rebuilt.principal(fingerprint: vault.fingerprint) == nil,
                "the revoked credential still authenticates nothing")
        } catch { Issue.record("\(error)") }
        for c in clients { await c.shutdown() }
        _ = system("chattr -R -i '\(server.dir.path)' 2>/dev/null")
        try? FileManager.default.removeItem(at: server.dir)
    }

    /// A token sent to the wrong place: listed without its secret, cancelled by its ID,
    /// then enrolls no one; only an admin sees or cancels tokens.
    @Test func anAdminListsAndCancelsPendingTokens() async throws {
        let server = try await TestServer.start()
        var clients: [APIClient] = []
        do {
            try await server.createTenant("acme", keys: try TenantKeys.generate())
            let (_, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
            clients.append(writer)
            let admin = server.admin
            let token = try await admin.createEnrollment(tenant: "acme", role: "writer", name: "web2",
                ttlSeconds: 3600).token
            let other = try await admin.createEnrollment(tenant: "acme", role: "restorer", name: "vault",
                ttlSeconds: 3600).token
            let pending = try await admin.enrollments()
            #expect(Set(pending.map(\.name)) == ["web2", "vault"], "the token web1 used is not pending")
            let web2 = try #require(pending.first { $0.name == "web2" })
            #expect(web2.role == "writer" && web2.tenant == "acme" && web2.createdBy == "admin" && web2.id.count == 16)
            #expect(!token.contains(web2.id), "the listing does not give the token away")

            await refused("E_FORBIDDEN", "a host listing tokens") { _ = try await writer.enrollments() }
            await refused("E_FORBIDDEN", "a host cancelling a token") {
                _ = try await writer.cancelEnrollment(id: web2.id)
            }
            await refused("E_BAD_REQUEST", "a short ID") {
                _ = try await admin.cancelEnrollment(id: String(web2.id.prefix(6)))
            }
            await refused("E_NOT_FOUND", "an unknown ID") { _ = try await admin.cancelEnrollment(id: "000000000000") }

            #expect(try await admin.cancelEnrollment(id: String(web2.id.prefix(12))).name == "web2")
            await refused("E_NOT_FOUND", "cancelling twice") { _ = try await admin.cancelEnrollment(id: web2.id) }
            #expect(try await admin.enrollments().map(\.name) == ["vault"])
            await refused("E_FORBIDDEN", "enrolling with the cancelled token") {
                _ = try await ClientConfig.enroll(token: token,
                    into: ClientConfig(path: server.dir.appendingPathComponent("cfg-web2").path), os: nil)
            }
            // The other token still works.
            _ = try await ClientConfig.enroll(token: other,
                into: ClientConfig(path: server.dir.appendingPathComponent("cfg-vault").path), os: nil)
            let audit = try await admin.audit()
            #expect(audit.contains {
                $0.action == "cancel-enrollment" && $0.object == "token \(web2.id)" && $0.outcome == "ok"
            })
        } catch { Issue.record("\(error)") }
        for c in clients { await c.shutdown() }
        await server.stop()
    }
}

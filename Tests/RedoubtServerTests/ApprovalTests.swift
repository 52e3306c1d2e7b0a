import Foundation
import Testing
import RedoubtClient
import RedoubtCore
import RedoubtKMS
@testable import RedoubtServer

/// M-of-N approvals against a real server: an admin alone cannot shred a tenant, lower a
/// retention, change the quorum or remove an admin once there are two; a second admin
/// can let it through, once, for exactly the change approved.
@Suite(.serialized) struct ApprovalTests {
    /// A server with tenant "acme", a writer, and two admins.
    func world() async throws -> (TestServer, APIClient, APIClient) {
        let server = try await TestServer.start()
        try await server.createTenant("acme", keys: try TenantKeys.generate())
        // A lone admin acts alone: adding the second needs nobody's approval.
        #expect(try await server.admin.quorum().effective == 1)
        let bob = try await server.enrollAdmin("bob")
        let (_, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        return (server, bob, writer)
    }

    func finish(_ server: TestServer, _ clients: [APIClient]) async {
        for c in clients { await c.shutdown() }
        await server.stop()
    }

    @Test func oneAdminCannotShredOrLowerRetentionTwoCan() async throws {
        let (server, bob, writer) = try await world()
        let alice = server.admin
        do {
            #expect(try await alice.quorum().effective == 2)
            // Alice asks to shred: nothing happens, a request is filed.
            await refused("E_APPROVAL_REQUIRED", "a lone shred") {
                _ = try await alice.shredTenant(tenant: "acme", confirm: "acme", destroyedVersions: [], check: true)
            }
            let req = try #require(try await alice.requests().first { $0.action == "shred-tenant" })
            #expect(req.state == "pending" && req.needed == 1 && req.requester == "admin")
            // Her own approval does not count; a host cannot approve; nor can the request be used yet.
            await refused("E_FORBIDDEN", "self-approval") { _ = try await alice.decide(request: req.id, approve: true) }
            await refused("E_FORBIDDEN", "a writer approving") {
                _ = try await writer.decide(request: req.id, approve: true)
            }
            await refused("E_APPROVAL_PENDING", "using a pending request") {
                _ = try await alice.shredTenant(tenant: "acme", confirm: "acme", destroyedVersions: [],
                    requestID: req.id)
            }
            #expect(try await server.service.catalog.tenant("acme")?.shreddedAt == nil)

            // Bob approves. The approval is for this shred only: not for lowering a retention.
            let approved = try await bob.decide(request: req.id, approve: true)
            #expect(approved.state == "approved" && approved.approvers == ["bob"])
            await refused("E_CONFLICT", "approving twice") { _ = try await bob.decide(request: req.id, approve: true) }
            // Only the requester may carry it out: another admin using it first is refused.
            await refused("E_FORBIDDEN", "bob carrying out alice's approved shred") {
                _ = try await bob.shredTenant(tenant: "acme", confirm: "acme", destroyedVersions: [], requestID: req.id)
            }
            #expect(try await server.service.catalog.tenant("acme")?.shreddedAt == nil)
            await refused("E_FORBIDDEN", "the shred approval used for a retention change") {
                _ = try await alice.setMinRetention(tenant: "acme", seconds: 86400, requestID: req.id)
            }
            // The check does not use it up; the shred does, once.
            _ = try await alice.shredTenant(tenant: "acme", confirm: "acme", destroyedVersions: [], requestID: req.id,
                check: true)
            let done = try await alice.shredTenant(tenant: "acme", confirm: "acme", destroyedVersions: [],
                requestID: req.id)
            #expect(done.shreddedAt != nil)
            #expect(try await alice.requests().first { $0.id == req.id }?.state == "executed")

            // Lowering a retention: raising is immediate, lowering is a request; a rejection ends it.
            try await server.createTenant("beta", keys: try TenantKeys.generate())
            #expect(try await alice.setMinRetention(tenant: "beta", seconds: 90 * 86400,
                requestID: nil).minRetentionSeconds == 90 * 86400)
            await refused("E_APPROVAL_REQUIRED", "lowering alone") {
                _ = try await alice.setMinRetention(tenant: "beta", seconds: 7 * 86400, requestID: nil)
            }
            let lower = try #require(try await alice.requests().first { $0.action == "lower-retention" })
            #expect(lower.parameters == ["from": "7776000", "minRetentionSeconds": "604800"])
            let rejected = try await bob.decide(request: lower.id, approve: false)
            #expect(rejected.state == "rejected" && rejected.rejectedBy == "bob")
            await refused("E_CONFLICT", "approving a rejected request") {
                _ = try await bob.decide(request: lower.id, approve: true)
            }
            await refused("E_APPROVAL_PENDING", "using a rejected request") {
                _ = try await alice.setMinRetention(tenant: "beta", seconds: 7 * 86400, requestID: lower.id)
            }
            #expect(try await server.service.catalog.tenant("beta")?.minRetention == 90 * 86400)
            // A request approves exactly its parameters: 7 days approved is not 1 day.
            await refused("E_APPROVAL_REQUIRED", "lowering again") {
                _ = try await alice.setMinRetention(tenant: "beta", seconds: 7 * 86400, requestID: nil)
            }
            let again = try #require(try await alice.requests().last {
                $0.action == "lower-retention" && $0.state == "pending"
            })
            _ = try await bob.decide(request: again.id, approve: true)
            await refused("E_FORBIDDEN", "an approval for 7 days used for 1 day") {
                _ = try await alice.setMinRetention(tenant: "beta", seconds: 86400, requestID: again.id)
            }
            #expect(try await alice.setMinRetention(tenant: "beta", seconds: 7 * 86400,
                requestID: again.id).minRetentionSeconds == 7 * 86400)

            // Requests expire after 72 hours.
            await refused("E_APPROVAL_REQUIRED", "quorum change alone") {
                _ = try await alice.setQuorum(1, requestID: nil)
            }
            let q = try #require(try await alice.requests().first { $0.action == "set-quorum" })
            server.clock.set(Date().addingTimeInterval(73 * 3600))
            await refused("E_CONFLICT", "approving an expired request") {
                _ = try await bob.decide(request: q.id, approve: true)
            }
            #expect(try await alice.quorum().effective == 2)

            // Removing an admin is a request too; the last admin can never be removed.
            await refused("E_APPROVAL_REQUIRED", "removing bob alone") {
                _ = try await alice.removeAdmin(name: "bob", requestID: nil)
            }
            let rm = try #require(try await alice.requests().first { $0.action == "remove-admin" })
            _ = try await bob.decide(request: rm.id, approve: true)
            // Bob also approves another change before he goes.
            await refused("E_APPROVAL_REQUIRED", "lowering beta alone") {
                _ = try await alice.setMinRetention(tenant: "beta", seconds: 86400, requestID: nil)
            }
            let pendingLower = try #require(try await alice.requests().last {
                $0.action == "lower-retention" && $0.state == "pending"
            })
            #expect(try await bob.decide(request: pendingLower.id, approve: true).state == "approved")
            let afterRemoval = try await alice.removeAdmin(name: "bob", requestID: rm.id)
            // The configured quorum stays; only the effective one follows the admins left.
            #expect(afterRemoval.admins == 1 && afterRemoval.configured == 2 && afterRemoval.effective == 1)
            // A removed admin's approval no longer counts.
            let lowerNow = try #require(try await alice.requests().first { $0.id == pendingLower.id })
            #expect(lowerNow.state == "pending" && lowerNow.approvers.isEmpty)
            await refused("E_UNAUTHENTICATED", "the removed admin") { _ = try await bob.quorum() }
            await refused("E_CONFLICT", "removing the last admin") {
                _ = try await alice.removeAdmin(name: "admin", requestID: nil)
            }

            // Failed attempts to change things are audited too, with their error code; a
            // filed approval request is recorded once, as the request.
            let log = try await alice.audit(limit: 10_000)
            #expect(log.contains { $0.action == "remove-admin" && $0.outcome == "error"
                && $0.detail.contains("E_CONFLICT") && $0.role == "admin" },
                    "\(log.suffix(5).map { "\($0.action) \($0.outcome) \($0.detail)" })")
            #expect(!log.contains { $0.outcome == "error" && $0.detail.contains("E_APPROVAL_REQUIRED") })

            // Every step is in the audit chain.
            let actions = Set(log.map(\.action))
            #expect(actions.isSuperset(of: ["request", "approve", "reject", "execute-request", "shred-tenant",
                "set-retention", "remove-admin"]))
            #expect(try await server.service.catalog.verifyAudit().firstBad == nil)
        } catch { Issue.record("\(error)") }
        await finish(server, [bob, writer])
    }

    /// A rotation replaces the only wrapping the server hands out and deletes the old
    /// descriptors: with two admins it is a request that holds the exact new wrapping, and
    /// carrying it out applies that wrapping, not another.
    @Test func rotatingTheReadKeyNeedsApprovalAndAppliesTheApprovedWrapping() async throws {
        let server = try await TestServer.start()
        let keys = try TenantKeys.generate()
        try await server.createTenant("acme", keys: keys)
        let bob = try await server.enrollAdmin("bob")
        let alice = server.admin
        do {
            let provider = try PassphraseKeyProvider(passphrase: SecretBytes(copying: Array("new-pw".utf8)), logN: 10)
            let approved = String(decoding: try await provider.wrap(keys.readKey, context: KeyContext(tenant: "acme",
                keyVersion: 2)).encoded(), as: UTF8.self)
            await refused("E_APPROVAL_REQUIRED", "a lone rotation") {
                _ = try await alice.rotateReadKey(tenant: "acme", wrappedReadKey: approved)
            }
            #expect(try await server.service.catalog.tenant("acme")?.keyVersion == 1)
            let req = try #require(try await alice.requests().first { $0.action == "rotate-read-key" })
            #expect(req.parameters["version"] == "2" && req.parameters["wrappedReadKey"] == approved
                && req.parameters["provider"] == "passphrase:")
            _ = try await bob.decide(request: req.id, approve: true)
            // Bob may not carry it out; nor may Alice swap in another wrapping under it.
            await refused("E_FORBIDDEN", "bob carrying out alice's rotation") {
                _ = try await bob.rotateReadKey(tenant: "acme", wrappedReadKey: "", requestID: req.id)
            }
            let other = String(decoding: try await provider.wrap(keys.readKey, context: KeyContext(tenant: "acme",
                keyVersion: 2)).encoded(), as: UTF8.self)
            await refused("E_FORBIDDEN", "another wrapping under the approval") {
                _ = try await alice.rotateReadKey(tenant: "acme", wrappedReadKey: other, requestID: req.id)
            }
            let after = try await alice.rotateReadKey(tenant: "acme", wrappedReadKey: "", requestID: req.id)
            #expect(after.keyVersion == 2 && after.wrappedReadKey == approved)
            await refused("E_APPROVAL_PENDING", "the same request twice") {
                _ = try await alice.rotateReadKey(tenant: "acme", wrappedReadKey: "", requestID: req.id)
            }
        } catch { Issue.record("\(error)") }
        await finish(server, [bob])
    }
}

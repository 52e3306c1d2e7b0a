import Foundation
import Testing
import RedoubtClient
import RedoubtCore
@testable import RedoubtKMS
@testable import RedoubtServer

/// `KeyCustody`, the library behind `admin tenant rotate-key | escrow | shred`, against a
/// real server and the real PyKMIP peer: the order of its steps (nothing destroyed before
/// the server agrees, nothing changed when a step is refused) and what each leaves behind.
@Suite(.serialized) struct KeyCustodyLibraryTests {
    /// Providers as the CLI makes them, with fixed secrets: the tenant's passphrase `pw`
    /// (TestServer's), the escrow passphrase `escrow`.
    static let makeProvider: KeyCustody.MakeProvider = { uri, secret in
        try KeyProviderRegistry.make(uri: uri) {
            SecretBytes(copying: Array((secret == .escrow ? "escrow" : "pw").utf8))
        }
    }

    /// Whether unwrapping `wrapped` as `tenant` fails, and with which code.
    func unwrapFailure(_ wrapped: WrappedReadKey, tenant: String = "acme") async -> String? {
        do {
            _ = try await Self.makeProvider(wrapped.provider, .current)
                .unwrap(wrapped, context: KeyContext(tenant: tenant, keyVersion: wrapped.context.keyVersion))
            return nil
        } catch let e as KeyProviderError { return e.code } catch { return "\(error)" }
    }

    @Test func rotateToKMIPDestroyTheOldKEKEscrowAndShredInThatOrder() async throws {
        guard let env = peerEnvironment("REDOUBT_TEST_KMIP", "REDOUBT_TEST_KMIP_PKI"),
              let address = env["REDOUBT_TEST_KMIP"], let pki = env["REDOUBT_TEST_KMIP_PKI"] else { return }
        let kmip = "kmip://\(address)/new?ca=\(pki)/ca.crt&cert=\(pki)/tenant-a.crt&key=\(pki)/tenant-a.key"
        let server = try await TestServer.start()
        do { try await custodySteps(server, kmip: kmip) } catch { Issue.record("\(error)") }
        await server.stop()
    }

    func custodySteps(_ server: TestServer, kmip: String) async throws {
        let keys = try TenantKeys.generate()
        try await server.createTenant("acme", keys: keys)
        try await server.createTenant("beta", keys: try TenantKeys.generate())
        let custody = KeyCustody(client: server.admin, tenant: "acme", makeProvider: Self.makeProvider)

        // Refused before anything changes: a passphrase has no KEK to destroy; no provider given.
        let d = await #expect(throws: KeyCustodyError.self) {
            try await custody.rotate(to: kmip, requestID: nil, destroyOld: true)
        }
        #expect(d?.exitCategory == .usage && d?.message.contains("nothing was changed") == true)
        await #expect(throws: KeyCustodyError.self) {
            try await custody.rotate(to: nil, requestID: nil, destroyOld: false)
        }
        #expect(try await server.service.catalog.tenant("acme")?.keyVersion == 1)

        // Passphrase → a new KEK at the KMS: the same read key, version 2, checked to open.
        let r1 = try await custody.rotate(to: kmip, requestID: nil, destroyOld: false)
        #expect(r1.keyVersion == 2 && r1.previousKeyVersion == 1 && !r1.previousKEKDestroyed)
        #expect(r1.wrapped.provider.hasPrefix("kmip://")
            && r1.wrapped.readKeyID == keys.readKey.publicKey.keyID.description)
        #expect(try await custody.unwrapCurrent(r1.wrapped).publicKey == keys.readKey.publicKey)

        // KEK → another KEK, the old one destroyed at the KMS: the old wrapping is dead.
        let r2 = try await custody.rotate(to: kmip, requestID: nil, destroyOld: true)
        #expect(r2.keyVersion == 3 && r2.previousKEKDestroyed && r2.previous == r1.wrapped)
        #expect(await unwrapFailure(r1.wrapped) != nil, "the destroyed KEK still unwraps")
        #expect(await unwrapFailure(r2.wrapped) == nil)
        let info = try await server.admin.readKey(tenant: "acme")
        #expect(Set(info.retired.map(\.version)) == [1, 2])
        #expect(info.retired.first { $0.version == 2 }?.destroyedAt != nil)

        // An escrow copy under its own passphrase, 0600, never overwritten.
        let escrowPath = server.dir.appendingPathComponent("escrow.json").path
        let escrow = try await custody.escrow(to: escrowPath)
        #expect((try FileManager.default.attributesOfItem(atPath: escrowPath)[.posixPermissions] as? Int) == 0o600)
        #expect(try await Self.makeProvider("passphrase:", .escrow)
            .unwrap(escrow, context: escrow.context).publicKey == keys.readKey.publicKey)
        await #expect(throws: KeyCustodyError.self) { try await custody.escrow(to: escrowPath) }

        // A shred not confirmed changes nothing, at the KMS or on the server.
        struct NotConfirmed: Error {}
        await #expect(throws: NotConfirmed.self) {
            try await custody.shred(requestID: nil, confirm: { throw NotConfirmed() })
        }
        #expect(try await server.service.catalog.tenant("acme")?.shreddedAt == nil)
        #expect(await unwrapFailure(r2.wrapped) == nil)

        // The shred: every KEK not yet destroyed goes (version 3); version 1 was a
        // passphrase, which is named as readable by whoever knows it.
        var progress: [String] = []
        let s = try await custody.shred(requestID: nil, confirm: {}, progress: { progress.append($0) })
        #expect(s.destroyedKeyVersions == [3])
        #expect(s.notDestroyable.count == 1 && s.notDestroyable[0].hasPrefix("key version 1 (passphrase:)"))
        #expect(progress.count == 1 && progress[0].contains("key version 3"))
        #expect(await unwrapFailure(r2.wrapped) != nil, "the shredded tenant's KEK still unwraps")
        #expect(try await server.service.catalog.tenant("acme")?.shreddedAt != nil)
        let gone = await #expect(throws: KeyProviderError.self) { try await custody.current() }
        #expect(gone?.code == "E_KEY_DESTROYED")
        // The escrow copy still opens the key: a shred cannot reach it.
        #expect(try await Self.makeProvider("passphrase:", .escrow)
            .unwrap(escrow, context: escrow.context).publicKey == keys.readKey.publicKey)

        // A tenant whose read key only a passphrase wraps: refused before the confirmation.
        let beta = KeyCustody(client: server.admin, tenant: "beta", makeProvider: Self.makeProvider)
        let p = await #expect(throws: KeyProviderError.self) {
            try await beta.shred(requestID: nil, confirm: {
                Issue.record("asked to confirm a shred that cannot be done")
            })
        }
        #expect(p?.code == "E_KEY_UNSUPPORTED")
        #expect(try await server.service.catalog.tenant("beta")?.shreddedAt == nil)
    }
}

import Foundation
import Testing
import RedoubtAWS
import RedoubtClient
@testable import RedoubtKMS

/// The real binary, a running server, the real PyKMIP and LocalStack's KMS: a passphrase
/// tenant is rotated to a KEK in the KMIP server, then to another with the old one
/// destroyed, then to AWS KMS (another provider); every snapshot still restores, while a
/// copy wrapped under a destroyed KEK no longer opens. With the KEK disabled, backups go on
/// and restores say why they cannot. An escrow copy is made; the shred destroys every KEK
/// and the server's wrapped copies: restores and backups are refused by name, and the
/// ciphertext is intact (the escrow still opens it).
@Suite(.serialized) struct KeyCustodyEndToEndTests {
    @Test func rotateToKMIPDestroyTheOldKEKEscrowThenShred() async throws {
        guard let env = peerEnvironment("REDOUBT_TEST_KMIP", "REDOUBT_TEST_KMIP_PKI", "REDOUBT_TEST_LOCALSTACK"),
              let address = env["REDOUBT_TEST_KMIP"], let pki = env["REDOUBT_TEST_KMIP_PKI"],
                  let localstack = env["REDOUBT_TEST_LOCALSTACK"] else {
                  return
              }
        let q = try await QuickstartServer.start("custody", quickstartEnv: "REDOUBT_PASSPHRASE=custody-pass")
        defer { q.stop() }
        let (bin, base, admin, out) = (q.bin, q.base, q.admin, "")
        func sh(_ cmd: String, _: String) async -> (Int32, String) { await q.shell(cmd) }
        func restore(_ extra: String = "", env: String = "") async -> (Int32, String) {
            await q.restore(extra, env: env)
        }
        let dir = q.dir
        let kmip = "kmip://\(address)/new?ca=\(pki)/ca.crt&cert=\(pki)/tenant-a.crt&key=\(pki)/tenant-a.key"

        // Passphrase → KEK 1 in the KMS. A passphrase cannot be "destroyed": refused up front.
        let (refusedDestroy,
            rdOut) = await sh("""
                REDOUBT_PASSPHRASE=custody-pass \(bin) admin \(admin) tenant rotate-key quickstart --key-provider \
                '\(kmip)' --destroy-old
                """, out)
        #expect(refusedDestroy == 2 && rdOut.contains("cannot be destroyed"),
            "rotate --destroy-old from a passphrase: \(rdOut)")
        let (r1,
            r1Out) = await sh("""
                REDOUBT_PASSPHRASE=custody-pass \(bin) admin \(admin) tenant rotate-key quickstart --key-provider \
                '\(kmip)'
                """, out)
        #expect(r1 == 0 && r1Out.contains("key version 2"), "rotate to KMIP: \(r1Out)")
        // The restorer fetches the new wrapping, but a new KMS is a new place to send its
        // credentials: it takes the restorer's own word. Then no passphrase is needed.
        let (untrusted, untrustedOut) = await restore()
        #expect(untrusted == 6 && untrustedOut.contains("E_KEY_UNTRUSTED_PROVIDER"),
            "restore from a provider not yet trusted: \(untrustedOut)")
        let (a,
            aOut) = await restore("""
                --trust-key-provider \
                'kmip://\(address)?ca=\(pki)/ca.crt&cert=\(pki)/tenant-a.crt&key=\(pki)/tenant-a.key'
                """)
        #expect(a == 0, "restore after the first rotation: \(aOut)")
        let keyV2 = "\(dir)/read-key-v2.json"
        try FileManager.default.copyItem(atPath: "\(base)/restorer/read-key.json", toPath: keyV2)
        #expect(try String(contentsOfFile: keyV2, encoding: .utf8).contains("\"provider\" : \"kmip:"))

        // KEK 1 → KEK 2 on the same KMS (trusted now), KEK 1 destroyed: the snapshot
        // restores; the version-2 copy is dead.
        let (r2,
            r2Out) = await sh("""
                \(bin) admin \(admin) tenant rotate-key quickstart --key-provider '\(kmip)' --destroy-old --json
                """, out)
        #expect(r2 == 0 && r2Out.contains("\"previousKEKDestroyed\" : \"true\""), "rotate with --destroy-old: \(r2Out)")
        let (b, bOut) = await restore()
        #expect(b == 0, "restore after the second rotation: \(bOut)")
        let (c, cOut) = await restore("--read-key '\(keyV2)'")
        #expect(c == 11 && cOut.contains("E_KEY_DESTROYED"),
            "restore with the copy wrapped under the destroyed KEK: \(cOut)")

        // An escrow copy, on purpose, under its own passphrase.
        let escrow = "\(dir)/escrow.json"
        let (e,
            eOut) = await sh("""
                REDOUBT_ESCROW_PASSPHRASE=escrow-pass \(bin) admin \(admin) tenant escrow quickstart --out '\(escrow)'
                """, out)
        #expect(e == 0, "escrow: \(eOut)")
        #expect((try FileManager.default.attributesOfItem(atPath: escrow)[.posixPermissions] as? Int) == 0o600)

        // KMIP → AWS KMS (another provider), the KMIP KEK destroyed. The restorer trusts the
        // new KMS on its own word, and needs AWS credentials (per command) from now on.
        let aws = "AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test"
        let awsURI = "awskms://us-east-1/new?endpoint=\(localstack)"
        let (r3,
            r3Out) = await sh("""
                \(aws) \(bin) admin \(admin) tenant rotate-key quickstart --key-provider '\(awsURI)' --destroy-old
                """, out)
        #expect(r3 == 0 && r3Out.contains("key version 4") && r3Out.contains("is destroyed"),
            "rotate to AWS KMS: \(r3Out)")
        let (i, iOut) = await restore("--trust-key-provider '\(awsURI)'", env: aws)
        #expect(i == 0, "restore through AWS KMS: \(iOut)")

        // The KEK disabled at the KMS: backups go on (hosts seal to the public key), restores
        // stop with exit code 10; enabled again, restores work.
        let current = try ClientConfig(path: "\(base)/restorer").wrappedReadKey()
        let kek = try AWSKMSKeyProvider(uri: current.provider, credentials: AWSCredentials(accessKeyID: "test",
            secretAccessKey: "test"))
        let kekID = try #require(current.parameters["awskms-key-id"])
        _ = try await kek.call("DisableKey", ["KeyId": kekID], key: kekID)
        let (bk, bkOut) = await sh("\(bin) backup '\(base)/sample' --config '\(base)/host'", out)
        #expect(bk == 0, "backup while the KEK is disabled: \(bkOut)")
        let (j, jOut) = await restore(env: aws)
        #expect(j == 10 && jOut.contains("E_KEY_DISABLED"), "restore while the KEK is disabled: \(jOut)")
        _ = try await kek.call("EnableKey", ["KeyId": kekID], key: kekID)
        let (k, kOut) = await restore(env: aws)
        #expect(k == 0, "restore with the KEK enabled again: \(kOut)")

        // Shred: a wrong confirmation changes nothing; the right one destroys the AWS KEK and
        // the server's copies, and warns that version 1 was a passphrase nobody can destroy.
        let (wrong, wrongOut) = await sh("\(bin) admin \(admin) tenant shred quickstart --confirm quickstart2", out)
        #expect(wrong == 2, "shred with a wrong confirmation: \(wrongOut)")
        let (d, dOut) = await restore(env: aws)
        #expect(d == 0, "restore after a refused shred: \(dOut)")
        let (s, sOut) = await sh("\(aws) \(bin) admin \(admin) tenant shred quickstart --confirm quickstart", out)
        #expect(s == 8 && sOut.contains("crypto-shredded") && sOut.contains("key version 1 (passphrase:)"),
            "shred: \(sOut)")
        // The AWS KEK is scheduled for deletion: even the copy saved at enrollment is dead.
        let dead = await #expect(throws: KeyProviderError.self) {
            try await kek.unwrap(current, context: current.context)
        }
        #expect(dead?.code == "E_KEY_DESTROYED")
        let (f, fOut) = await restore(env: aws)
        #expect(f == 11 && fOut.contains("shredded"), "restore after the shred: \(fOut)")
        let (g, gOut) = await sh("\(bin) backup '\(base)/sample' --config '\(base)/host'", out)
        #expect(g != 0 && gOut.contains("E_TENANT_SHREDDED"), "backup after the shred: \(gOut)")
        let (audit, auditOut) = await sh("\(bin) audit verify --data '\(base)/server'", out)
        #expect(audit == 0, "audit chain after rotation and shred: \(auditOut)")

        // The ciphertext and its locks are as they were: the escrow copy still opens them.
        let (h, hOut) = await restore("--read-key '\(escrow)'", env: "REDOUBT_PASSPHRASE=escrow-pass")
        #expect(h == 0, "restore from the escrow copy after the shred: \(hOut)")
    }
}

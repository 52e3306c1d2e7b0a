import Foundation
import RedoubtAWS
import RedoubtClient
import Testing

@testable import RedoubtKMS

/// The real binary, a running server and LocalStack's KMS: a tenant created under an AWS
/// KMS KEK is rotated to a second KEK with the first scheduled for deletion, still
/// restores, and a copy wrapped under the first no longer opens; the shred schedules the
/// second for deletion and restores are refused. AWS credentials reach each command
/// through its own environment only.
@Suite(.serialized) struct AWSKMSKeyCustodyEndToEndTests {
    @Test func rotateBetweenAWSKMSKeysDestroyTheOldThenShred() async throws {
        guard let env = peerEnvironment("REDOUBT_TEST_LOCALSTACK"),
              let endpoint = env["REDOUBT_TEST_LOCALSTACK"] else { return }
        let secret = "custody-secret-\(UUID().uuidString)"
        let aws = "AWS_ACCESS_KEY_ID=AKIAREDOUBTCUSTODY AWS_SECRET_ACCESS_KEY='\(secret)'"
        let kms = "awskms://us-east-1/new?endpoint=\(endpoint)"
        let q = try await QuickstartServer.start("awscustody", env: aws, quickstartArgs: "--key-provider '\(kms)'")
        defer { q.stop() }
        let (bin, base, admin, dir, out) = (q.bin, q.base, q.admin, q.dir, "")
        func sh(_ cmd: String, _: String) async -> (Int32, String) { await q.shell(cmd) }
        func restore(_ extra: String = "") async -> (Int32, String) { await q.restore(extra) }
        let keyV1 = "\(dir)/read-key-v1.json"
        try FileManager.default.copyItem(atPath: "\(base)/restorer/read-key.json", toPath: keyV1)
        let v1 = try WrappedReadKey.decode(try Data(contentsOf: URL(fileURLWithPath: keyV1)))

        // KEK 1 → KEK 2, KEK 1 scheduled for deletion: the snapshot restores under KEK 2,
        // while the version-1 copy is dead.
        let (r2,
            r2Out) = await sh("""
                \(bin) admin \(admin) tenant rotate-key quickstart --key-provider '\(kms)' --destroy-old --json
                """, out)
        #expect(r2 == 0 && r2Out.contains("\"previousKEKDestroyed\" : \"true\""), "rotate with --destroy-old: \(r2Out)")
        let (b, bOut) = await restore()
        #expect(b == 0, "restore after the rotation: \(bOut)")
        let (c, cOut) = await restore("--read-key '\(keyV1)'")
        #expect(c == 11 && cOut.contains("E_KEY_DESTROYED") && cOut.contains("pending deletion"),
            "restore with the copy wrapped under KEK 1: \(cOut)")
        let v2 = try WrappedReadKey.decode(try Data(contentsOf: URL(fileURLWithPath: "\(base)/restorer/read-key.json")))
        #expect(v2.context.keyVersion == 2 && v2.parameters["awskms-key-id"] != v1.parameters["awskms-key-id"])

        // A compromised server lies to the admin's shred: it lists a "retired" KEK of this
        // tenant that is really tenant victim's, its context forged to match. The KMS shows
        // the key's tag: the shred destroys nothing (this tenant's KEK 2 included) and
        // changes nothing on the server.
        let (vc, vcOut) = await sh("\(bin) admin \(admin) tenant create victim --key-provider '\(kms)'", out)
        let victimKEK =
            try #require(vcOut.components(separatedBy: "awskms://us-east-1/").dropFirst().first?.split(separator: "?")
            .first.map(String.init),
                                     "tenant create: \(vc) \(vcOut)")
        var forged = v2
        forged.parameters["awskms-key-id"] = victimKEK
        forged.context = KeyContext(tenant: "quickstart", keyVersion: 3)
        forged.wrapped = ""
        let sql = "\(dir)/forge.sql"
        let stub = String(decoding: try forged.encoded(), as: UTF8.self).replacingOccurrences(of: "'", with: "''")
        try """
            INSERT INTO retired_keks(tenant, version, stub, retired_at) VALUES ('quickstart', 3, '\(stub)', 0);
            """.write(toFile: sql, atomically: true, encoding: .utf8)
        #expect(system("sqlite3 '\(base)/server/catalog.sqlite' < '\(sql)'") == 0)
        let (lied, liedOut) = await sh("\(bin) admin \(admin) tenant shred quickstart --confirm quickstart", out)
        #expect(lied == 6 && liedOut.contains("E_KEY_FOREIGN_KEK") && liedOut.contains("redoubt-tenant=victim")
            && liedOut.contains("Nothing was destroyed"),
                "shred with a forged KEK: \(liedOut)")
        let credentials = AWSCredentials(accessKeyID: "AKIAREDOUBTCUSTODY", secretAccessKey: secret)
        let kmsAPI = try AWSKMSKeyProvider(uri: v2.provider, credentials: credentials)
        for kek in [victimKEK, try #require(v2.parameters["awskms-key-id"])] {
            let state = (try await kmsAPI.call("DescribeKey", ["KeyId": kek],
                key: kek)["KeyMetadata"] as? [String: Any])?["KeyState"] as? String
            #expect(state == "Enabled", "\(kek) after the refused shred")
        }
        let (stillThere, stillOut) = await restore()
        #expect(stillThere == 0, "restore after the refused shred: \(stillOut)")
        #expect(system("sqlite3 '\(base)/server/catalog.sqlite' \"DELETE FROM retired_keks WHERE version = 3\"") == 0)

        // Shred: KEK 2 is scheduled for deletion too, and nothing opens any more.
        let (s, sOut) = await sh("\(bin) admin \(admin) tenant shred quickstart --confirm quickstart", out)
        #expect(s == 0 && sOut.contains("crypto-shredded"), "shred: \(sOut)")
        let (f, fOut) = await restore()
        #expect(f == 11 && fOut.contains("shredded"), "restore after the shred: \(fOut)")
        let gone = await #expect(throws: KeyProviderError.self) { try await kmsAPI.unwrap(v2, context: v2.context) }
        #expect(gone?.code == "E_KEY_DESTROYED")
        // The secret access key is in no file the server or the clients wrote.
        #expect(system("grep -rqF '\(secret)' '\(base)'") != 0)
    }
}

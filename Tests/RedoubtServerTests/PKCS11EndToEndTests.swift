import Foundation
import Testing
import RedoubtClient
import RedoubtKMS

/// The real binary with a tenant whose read key is wrapped by a non-extractable AES key on
/// the real SoftHSM2 token: quickstart backs up and restores an identical tree, as does an
/// offline media restore; a wrong PIN (12), a missing token (9) and a destroyed KEK (11)
/// stop it with their own exit codes, and the PIN is never printed or stored.
/// `SOFTHSM2_CONF` goes to each command only (SoftHSM reads it in C_Initialize).
@Suite(.serialized) struct PKCS11EndToEndTests {
    @Test func quickstartWithAKEKOnTheTokenRestoresAndPINAndTokenFailuresHaveTheirExitCodes() async throws {
        guard let env = peerEnvironment("REDOUBT_TEST_SOFTHSM_CONF", "REDOUBT_TEST_SOFTHSM_MODULE",
            "REDOUBT_TEST_SOFTHSM_TOKEN", "REDOUBT_TEST_SOFTHSM_PIN_FILE"),
              let conf = env["REDOUBT_TEST_SOFTHSM_CONF"], let module = env["REDOUBT_TEST_SOFTHSM_MODULE"],
              let token = env["REDOUBT_TEST_SOFTHSM_TOKEN"], let pinFile = env["REDOUBT_TEST_SOFTHSM_PIN_FILE"]
        else { return }
        try #require(FileManager.default.isExecutableFile(atPath: CrashTests.binary.path),
            "build the redoubt executable first")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-pkcs11-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer {
            _ = system("chattr -R -i '\(dir.path)' 2>/dev/null")
            try? FileManager.default.removeItem(at: dir)
        }
        let pin = try String(contentsOfFile: pinFile, encoding: .utf8)
        let label = "redoubt-kek-e2e-\(UUID().uuidString.lowercased())"
        func uri(token: String = token, pinSource: String = pinFile) -> String {
            "pkcs11:token=\(token);object=\(label)?module-path=\(module)&pin-source=\(pinSource)"
        }
        /// Runs quickstart with SOFTHSM2_CONF (and `env`) for that command only; returns (exit code, output).
        func quickstart(_ name: String, _ uri: String, env: String = "") async -> (Int32, String) {
            let out = dir.appendingPathComponent("\(name).txt").path
            let status =
                await runShell("""
                    \(env) SOFTHSM2_CONF='\(conf)' '\(CrashTests.binary.path)' quickstart --dir '\(dir.path)/\(name)' \
                    --key-provider '\(uri)' > '\(out)' 2>&1
                    """)
            let output = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
            return ((status >> 8) & 0xff, output)
        }

        let (status, output) = await quickstart("qs", uri())
        #expect(status == 0, "quickstart failed: \(output)")
        #expect(output.contains("identical to the source"))
        #expect(output.contains("a KEK held by pkcs11"))
        #expect(!output.contains(pin))

        // The restorer's wrapped key names the token, the key's label and its CKA_ID, and
        // holds no PIN; the KEK it names is the one quickstart created.
        let runs = try FileManager.default.contentsOfDirectory(atPath: "\(dir.path)/qs")
        let run = try #require(runs.first)
        // Nowhere in the server's data or the clients' configuration is the PIN.
        #expect(system("grep -rqaF -- \"$(cat '\(pinFile)')\" '\(dir.path)/qs'") != 0,
            "the PIN appears in the quickstart directory")
        let wrapped = try ClientConfig(path: "\(dir.path)/qs/\(run)/restorer").wrappedReadKey()
        #expect(wrapped.provider.hasPrefix("pkcs11:token=\(token);object=\(label);id=%"))
        #expect(wrapped.parameters["pkcs11-object"] == label)
        #expect(wrapped.parameters["pkcs11-id"]?.count == 32)

        // Offline restore from a media set: the restorer's wrapped key goes to the token.
        let snapshot =
            try #require(output.split(separator: "\n").drop { !$0.contains("snapshots (as the host)") }.dropFirst()
            .first?
            .split(separator: " ").first.map(String.init))
        let bin = "'\(CrashTests.binary.path)'"
        let log = dir.appendingPathComponent("media.txt").path
        #expect(await runShell("""
            \(bin) media write quickstart --data '\(dir.path)/qs/\(run)/server' --device 'dir:\(dir.path)/media' > \
            '\(log)' 2>&1
            """) == 0)
        func mediaRestore(_ name: String, conf: String) async -> (Int32, String) {
            let out = dir.appendingPathComponent("\(name).txt").path
            let status =
                await runShell("""
                    SOFTHSM2_CONF='\(conf)' \(bin) media restore \(snapshot) --device 'dir:\(dir.path)/media' 
                    """
                    + "--target '\(dir.path)/\(name)' --config '\(dir.path)/qs/\(run)/restorer' > '\(out)' 2>&1")
            return ((status >> 8) & 0xff, (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
        }
        let (restored, restoredOutput) = await mediaRestore("restored", conf: conf)
        #expect(restored == 0, "\(restoredOutput)")
        let sample = "\(dir.path)/qs/\(run)/sample"
        #expect(system("diff -r '\(sample)' '\(dir.path)/restored\(sample)' > /dev/null") == 0)

        // The HSM is not there (a SoftHSM configuration with no tokens): exit 9, naming the token.
        try FileManager.default.createDirectory(atPath: "\(dir.path)/empty-tokens", withIntermediateDirectories: true)
        let emptyConf = dir.appendingPathComponent("empty.conf").path
        try "directories.tokendir = \(dir.path)/empty-tokens\nobjectstore.backend = file\n".write(toFile: emptyConf,
            atomically: true, encoding: .utf8)
        let (unplugged, unpluggedOutput) = await mediaRestore("restored-unplugged", conf: emptyConf)
        #expect(unplugged == 9, "\(unpluggedOutput)")
        #expect(unpluggedOutput.contains("no token labelled \"\(token)\""))

        // Wrong PIN: exit 12, naming the PIN file, never the PIN.
        let wrongPIN = dir.appendingPathComponent("wrong-pin").path
        _ = FileManager.default.createFile(atPath: wrongPIN, contents: Data("wrong-pin-0815".utf8),
            attributes: [.posixPermissions: 0o600])
        let (rejected, rejectedOutput) = await quickstart("qs-wrong-pin", uri(pinSource: wrongPIN))
        #expect(rejected == 12, "\(rejectedOutput)")
        #expect(rejectedOutput.contains("E_KEY_CREDENTIAL_REJECTED") && rejectedOutput.contains(wrongPIN))
        #expect(!rejectedOutput.contains("wrong-pin-0815"))

        // A token that is not there: exit 9, naming the label.
        let (missing, missingOutput) = await quickstart("qs-no-token", uri(token: "absent-token"))
        #expect(missing == 9, "\(missingOutput)")
        #expect(missingOutput.contains("no token labelled \"absent-token\""))

        // The PIN from REDOUBT_PKCS11_PIN when the URI names no pin-source.
        let envLabel = "redoubt-kek-e2e-env-\(UUID().uuidString.lowercased())"
        let (fromEnv, envOutput) = await quickstart("qs-env-pin",
            "pkcs11:token=\(token);object=\(envLabel)?module-path=\(module)",
                                              env: "REDOUBT_PKCS11_PIN=\"$(cat '\(pinFile)')\"")
        #expect(fromEnv == 0, "\(envOutput)")
        #expect(envOutput.contains("identical to the source"))

        // An independent tool sees the KEK on the token as sensitive and never extractable;
        // then it removes it. (pkcs11-tool takes the PIN only in argv: the test token's PIN.)
        let tool =
            """
                SOFTHSM2_CONF='\(conf)' pkcs11-tool --module '\(module)' --token-label '\(token)' --login --pin \
                \"$(cat '\(pinFile)')\"
                """
        let listing = dir.appendingPathComponent("objects.txt").path
        _ = system("\(tool) --list-objects --type secrkey --label '\(label)' > '\(listing)' 2>&1")
        let objects = (try? String(contentsOfFile: listing, encoding: .utf8)) ?? ""
        #expect(objects.contains(label), "\(objects)")
        #expect(objects.contains("never extractable"), "\(objects)")
        #expect(system("\(tool) --delete-object --type secrkey --label '\(label)' >/dev/null 2>&1") == 0)
        // Crypto-shredded: the same restore now fails with exit 11, "key destroyed".
        let (shredded, shreddedOutput) = await mediaRestore("restored-shredded", conf: conf)
        #expect(shredded == 11, "\(shreddedOutput)")
        #expect(shreddedOutput.contains("key destroyed") && shreddedOutput.contains("E_KEY_DESTROYED"))
        #expect(!FileManager.default.fileExists(atPath: "\(dir.path)/restored-shredded\(dir.path)/qs/\(run)/sample"))
        #expect(system("\(tool) --delete-object --type secrkey --label '\(envLabel)' >/dev/null 2>&1") == 0)
    }

    /// Rotation and shred with the KEKs on the token: KEK 1 → KEK 2 with the old one
    /// destroyed (its copy then exits 11), every snapshot still restores, and a shred
    /// destroys KEK 2 on the token: restores are refused, and neither key is left.
    @Test func rotateBetweenTokenKEKsDestroyTheOldOneThenShred() async throws {
        guard let env = peerEnvironment("REDOUBT_TEST_SOFTHSM_CONF", "REDOUBT_TEST_SOFTHSM_MODULE",
            "REDOUBT_TEST_SOFTHSM_TOKEN", "REDOUBT_TEST_SOFTHSM_PIN_FILE"),
              let conf = env["REDOUBT_TEST_SOFTHSM_CONF"], let module = env["REDOUBT_TEST_SOFTHSM_MODULE"],
              let token = env["REDOUBT_TEST_SOFTHSM_TOKEN"], let pinFile = env["REDOUBT_TEST_SOFTHSM_PIN_FILE"]
        else { return }
        let kek1 = "redoubt-kek-custody1-\(UUID().uuidString.lowercased())",
            kek2 = "redoubt-kek-custody2-\(UUID().uuidString.lowercased())"
        func uri(_ label: String) -> String {
            "pkcs11:token=\(token);object=\(label)?module-path=\(module)&pin-source=\(pinFile)"
        }
        // SOFTHSM2_CONF goes to each command that touches the token, never to this process.
        let q = try await QuickstartServer.start("pkcs11-custody", env: "SOFTHSM2_CONF='\(conf)'",
            quickstartArgs: "--key-provider '\(uri(kek1))'")
        defer { q.stop() }
        let (bin, base, admin, dir) = (q.bin, q.base, q.admin, q.dir)
        func sh(_ cmd: String) async -> (Int32, String) { await q.shell(cmd) }
        func restore(_ extra: String = "") async -> (Int32, String) { await q.restore(extra) }
        let (a, aOut) = await restore()
        #expect(a == 0, "restore under KEK 1: \(aOut)")
        let keyV1 = "\(dir)/read-key-v1.json"
        try FileManager.default.copyItem(atPath: "\(base)/restorer/read-key.json", toPath: keyV1)

        let (r2,
            r2Out) = await sh("""
                \(bin) admin \(admin) tenant rotate-key quickstart --key-provider '\(uri(kek2))' --destroy-old --json
                """)
        #expect(r2 == 0 && r2Out.contains("\"previousKEKDestroyed\" : \"true\""), "rotate with --destroy-old: \(r2Out)")
        let (b, bOut) = await restore()
        #expect(b == 0, "restore under KEK 2: \(bOut)")
        let (c, cOut) = await restore("--read-key '\(keyV1)'")
        #expect(c == 11 && cOut.contains("E_KEY_DESTROYED") && cOut.contains(kek1),
            "restore with the copy under the destroyed KEK 1: \(cOut)")

        let (s, sOut) = await sh("\(bin) admin \(admin) tenant shred quickstart --confirm quickstart")
        #expect(s == 0 && sOut.contains("crypto-shredded"), "shred: \(sOut)")
        let (f, fOut) = await restore()
        #expect(f == 11, "restore after the shred: \(fOut)")

        // Neither KEK is left on the token (an independent tool looks; test token's PIN).
        let (listed,
            listing) = await sh("""
                SOFTHSM2_CONF='\(conf)' pkcs11-tool --module '\(module)' --token-label '\(token)' --login --pin \
                \"$(cat '\(pinFile)')\" --list-objects --type secrkey
                """)
        #expect(listed == 0, "\(listing)")
        #expect(!listing.contains(kek1) && !listing.contains(kek2), "\(listing)")
    }
}

import Foundation
import RedoubtAWS
import RedoubtClient
@testable import RedoubtKMS
import Testing

/// The real binary with a tenant whose read key is wrapped by a KEK in LocalStack's KMS:
/// quickstart backs up and restores; later restores stop with the exit code the KEK's
/// fate calls for (no credentials 6, disabled 10, pending deletion 11), and the secret
/// access key shows up in no output and no file.
@Suite(.serialized) struct AWSKMSEndToEndTests {
    @Test func quickstartWithAnAWSKMSWrappedKeyRestoresAndTheKEKsStateDecidesLaterRestores() async throws {
        guard let env = peerEnvironment("REDOUBT_TEST_LOCALSTACK"),
              let endpoint = env["REDOUBT_TEST_LOCALSTACK"] else { return }
        try #require(FileManager.default.isExecutableFile(atPath: CrashTests.binary.path),
            "build the redoubt executable first")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-awskms-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer {
            _ = system("chattr -R -i '\(dir.path)' 2>/dev/null")
            try? FileManager.default.removeItem(at: dir)
        }
        let secret = "e2e-secret-\(UUID().uuidString)"
        // Credentials go to each command's environment only (never setenv: suites run in
        // parallel), and never into argv.
        let withCredentials = "AWS_ACCESS_KEY_ID=AKIAREDOUBTE2E AWS_SECRET_ACCESS_KEY='\(secret)'"
        let withoutCredentials =
            """
                env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -u AWS_PROFILE \
                AWS_SHARED_CREDENTIALS_FILE='\(dir.path)/none'
                """
        let out = dir.appendingPathComponent("out.txt").path
        func run(_ prefix: String, _ args: String) async -> (code: Int32, output: String) {
            let status = await runShell("\(prefix) '\(CrashTests.binary.path)' \(args) > '\(out)' 2>&1")
            return ((status >> 8) & 0xff, (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
        }

        let uri = "awskms://us-east-1/new?endpoint=\(endpoint)"
        let quickstart = await run(withCredentials, "quickstart --dir '\(dir.path)/qs' --key-provider '\(uri)'")
        #expect(quickstart.code == 0, "quickstart failed: \(quickstart.output)")
        #expect(quickstart.output.contains("identical to the source"))
        #expect(quickstart.output.contains("a KEK held by awskms"))
        #expect(!quickstart.output.contains(secret))

        // The restorer's wrapped key names the KEK created for the tenant, not `new`.
        let run0 = try #require(try FileManager.default.contentsOfDirectory(atPath: "\(dir.path)/qs").first)
        let restorerPath = "\(dir.path)/qs/\(run0)/restorer"
        let wrapped = try ClientConfig(path: restorerPath).wrappedReadKey()
        #expect(wrapped.provider.hasPrefix("awskms://us-east-1/"))
        #expect(!wrapped.provider.contains("/new"))
        // No file quickstart wrote holds the secret access key.
        #expect(system("grep -rqF '\(secret)' '\(dir.path)/qs'") != 0)

        let provider = try AWSKMSKeyProvider(uri: wrapped.provider,
            credentials: AWSCredentials(accessKeyID: "AKIAREDOUBTE2E", secretAccessKey: secret))
        let restore = "restore 0000000000000000 --target '\(dir.path)/restored' --config '\(restorerPath)'"

        // Without credentials: a clear error naming where they come from.
        let missing = await run(withoutCredentials, restore)
        #expect(missing.code == 6, "\(missing.output)")
        #expect(missing.output.contains("E_KEY_SECRET_MISSING") && missing.output.contains("AWS_ACCESS_KEY_ID"))
        #expect(missing.output.contains("awskms://"))

        // Disabled KEK: exit 10.
        _ = try await provider.call("DisableKey", ["KeyId": provider.keyID], key: provider.keyID)
        let disabled = await run(withCredentials, restore)
        #expect(disabled.code == 10, "\(disabled.output)")
        #expect(disabled.output.contains("E_KEY_DISABLED"))
        #expect(!disabled.output.contains(secret))

        // Enabled again: the key unwraps, and the restore goes on to the (stopped) server.
        _ = try await provider.call("EnableKey", ["KeyId": provider.keyID], key: provider.keyID)
        let enabled = await run(withCredentials, restore)
        #expect(![0, 6, 9, 10, 11, 12].contains(enabled.code), "\(enabled.output)")
        #expect(!enabled.output.contains("E_KEY_"), "\(enabled.output)")

        // Crypto-shredded: exit 11.
        try await provider.destroyKEK(of: wrapped)
        // Shredding again finds the key pending deletion, which counts as done.
        try await provider.destroyKEK(of: wrapped)
        let destroyed = await run(withCredentials, restore)
        #expect(destroyed.code == 11, "\(destroyed.output)")
        #expect(destroyed.output.contains("E_KEY_DESTROYED") && destroyed.output.contains("pending deletion"))
        #expect(!destroyed.output.contains(secret))
    }
}

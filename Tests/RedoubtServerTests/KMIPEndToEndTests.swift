import Foundation
import Testing
import RedoubtClient
import RedoubtKMS

/// The real binary with a tenant whose read key is wrapped by a KEK in the real PyKMIP
/// server: backup and restore work; once the KEK is revoked or destroyed, the restorer's
/// wrapped key no longer opens, with an error that says which.
@Suite(.serialized) struct KMIPEndToEndTests {
    @Test func quickstartWithAKMIPWrappedKeyRestoresAndTheKEKsFateDecidesLaterRestores() async throws {
        guard let env = peerEnvironment("REDOUBT_TEST_KMIP", "REDOUBT_TEST_KMIP_PKI"),
              let address = env["REDOUBT_TEST_KMIP"], let pki = env["REDOUBT_TEST_KMIP_PKI"] else { return }
        try #require(FileManager.default.isExecutableFile(atPath: CrashTests.binary.path),
            "build the redoubt executable first")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-kmip-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer {
            _ = system("chattr -R -i '\(dir.path)' 2>/dev/null")
            try? FileManager.default.removeItem(at: dir)
        }
        let uri = "kmip://\(address)/new?ca=\(pki)/ca.crt&cert=\(pki)/tenant-a.crt&key=\(pki)/tenant-a.key"
        let out = dir.appendingPathComponent("out.txt").path
        let status =
            await runShell("""
                '\(CrashTests.binary.path)' quickstart --dir '\(dir.path)/qs' --key-provider '\(uri)' > '\(out)' 2>&1
                """)
        let output = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        #expect(status == 0, "quickstart failed: \(output)")
        #expect(output.contains("identical to the source"))
        #expect(output.contains("wrapped by a KEK held by kmip"))

        // The restorer's wrapped key names the KEK that was created for the tenant.
        let runs = try FileManager.default.contentsOfDirectory(atPath: "\(dir.path)/qs")
        let run = try #require(runs.first)
        let restorer = ClientConfig(path: "\(dir.path)/qs/\(run)/restorer")
        let wrapped = try restorer.wrappedReadKey()
        #expect(wrapped.provider.hasPrefix("kmip://"))
        #expect(!wrapped.provider.contains("/new?"))
        let provider = try KMIPKeyProvider(uri: wrapped.provider)
        _ = try await provider.unwrap(wrapped, context: wrapped.context)

        try await provider.client.revoke(keyID: provider.keyID)
        let disabled = await #expect(throws: KeyProviderError.self) {
            try await provider.unwrap(wrapped, context: wrapped.context)
        }
        #expect(disabled?.code == "E_KEY_DISABLED")
        try await provider.destroyKEK()
        let destroyed = await #expect(throws: KeyProviderError.self) {
            try await provider.unwrap(wrapped, context: wrapped.context)
        }
        #expect(destroyed?.code == "E_KEY_DESTROYED")
    }
}

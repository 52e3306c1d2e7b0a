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
    func sh(_ cmd: String, _ out: String) -> (Int32, String) {
        let raw = system(cmd + " > '\(out)' 2>&1")
        return (Int32((raw >> 8) & 0xff), (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }

    @Test func rotateBetweenAWSKMSKeysDestroyTheOldThenShred() async throws {
        let env = ProcessInfo.processInfo.environment
        guard let endpoint = env["REDOUBT_TEST_LOCALSTACK"] else {
            if env["REDOUBT_PEERS_REQUIRED"] == "1" { Issue.record("REDOUBT_TEST_LOCALSTACK is not set: ./scripts/peers start") }
            return
        }
        let binary = CrashTests.binary.path
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the redoubt executable first")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-awscustody-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let out = "\(dir)/out.txt"
        let pidFile = "\(dir)/server.pid"
        defer {
            if let pid = (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap({ Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) {
                kill(pid, SIGTERM)
            }
            _ = system("chattr -R -i '\(dir)' 2>/dev/null")
            try? FileManager.default.removeItem(atPath: dir)
        }
        let secret = "custody-secret-\(UUID().uuidString)"
        let aws = "AWS_ACCESS_KEY_ID=AKIAREDOUBTCUSTODY AWS_SECRET_ACCESS_KEY='\(secret)'"
        let bin = "\(aws) '\(binary)'"
        let kms = "awskms://us-east-1/new?endpoint=\(endpoint)"

        let (qs, qsOut) = sh("\(bin) quickstart --dir '\(dir)/qs' --key-provider '\(kms)'", out)
        try #require(qs == 0, "quickstart: \(qsOut)")
        let run = try #require(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/qs").first)
        let base = "\(dir)/qs/\(run)"
        let admin = "--credential '\(base)/server/admin.credential'"
        let restorer = "--config '\(base)/restorer'"
        let keyV1 = "\(dir)/read-key-v1.json"
        try FileManager.default.copyItem(atPath: "\(base)/restorer/read-key.json", toPath: keyV1)
        let v1 = try WrappedReadKey.decode(try Data(contentsOf: URL(fileURLWithPath: keyV1)))

        _ = system("'\(binary)' server run --data '\(base)/server' > '\(dir)/server.log' 2>&1 & echo $! > '\(pidFile)'")
        var up = false
        for _ in 0..<100 where !up {
            up = sh("\(bin) admin \(admin) tenant list", out).0 == 0
            if !up { try await Task.sleep(nanoseconds: 200_000_000) }
        }
        try #require(up, "server did not come up: \((try? String(contentsOfFile: "\(dir)/server.log", encoding: .utf8)) ?? "")")
        let (ls, lsOut) = sh("\(bin) snapshots \(restorer) --json", out)
        try #require(ls == 0, "snapshots: \(lsOut)")
        let snapshot = try #require(lsOut.split(separator: "\"").first { $0.count == 64 }.map(String.init))
        var restores = 0
        func restore(_ extra: String = "") -> (Int32, String) {
            restores += 1
            let target = "\(dir)/restored-\(restores)"
            let r = sh("\(bin) restore \(snapshot) --target '\(target)' \(restorer) \(extra)", out)
            guard r.0 == 0 else { return r }
            let diff = sh("diff -r '\(base)/sample' '\(target)/sample'", "\(dir)/diff.txt")
            return diff.0 == 0 ? r : (99, "restored tree differs: \(diff.1)")
        }

        // KEK 1 → KEK 2, KEK 1 scheduled for deletion: the snapshot restores under KEK 2,
        // while the version-1 copy is dead.
        let (r2, r2Out) = sh("\(bin) admin \(admin) tenant rotate-key quickstart --key-provider '\(kms)' --destroy-old --json", out)
        #expect(r2 == 0 && r2Out.contains("\"previousKEKDestroyed\" : \"true\""), "rotate with --destroy-old: \(r2Out)")
        let (b, bOut) = restore()
        #expect(b == 0, "restore after the rotation: \(bOut)")
        let (c, cOut) = restore("--read-key '\(keyV1)'")
        #expect(c == 11 && cOut.contains("E_KEY_DESTROYED") && cOut.contains("pending deletion"), "restore with the copy wrapped under KEK 1: \(cOut)")
        let v2 = try WrappedReadKey.decode(try Data(contentsOf: URL(fileURLWithPath: "\(base)/restorer/read-key.json")))
        #expect(v2.context.keyVersion == 2 && v2.parameters["awskms-key-id"] != v1.parameters["awskms-key-id"])

        // Shred: KEK 2 is scheduled for deletion too, and nothing opens any more.
        let (s, sOut) = sh("\(bin) admin \(admin) tenant shred quickstart --confirm quickstart", out)
        #expect(s == 0 && sOut.contains("crypto-shredded"), "shred: \(sOut)")
        let (f, fOut) = restore()
        #expect(f == 11 && fOut.contains("shredded"), "restore after the shred: \(fOut)")
        let provider = try AWSKMSKeyProvider(uri: v2.provider, credentials: AWSCredentials(accessKeyID: "AKIAREDOUBTCUSTODY", secretAccessKey: secret))
        let gone = await #expect(throws: KeyProviderError.self) { try await provider.unwrap(v2, context: v2.context) }
        #expect(gone?.code == "E_KEY_DESTROYED")
        // The secret access key is in no file the server or the clients wrote.
        #expect(system("grep -rqF '\(secret)' '\(base)'") != 0)
    }
}

import Foundation
import Testing

/// One ransomware attack end to end through the built binary: ordinary backups, 30 % of
/// the files encrypted in place with AES (openssl) keeping their names, the backup after it
/// judged suspect with its reasons, and `restore latest-clean` giving back the tree as it
/// was before the attack, bit for bit.
@Suite(.serialized) struct DetectCLITests {
    @Test func anEncryptedTreeIsJudgedSuspectAndLatestCleanRestoresTheTreeBeforeIt() async throws {
        let q = try await QuickstartServer.start("detect", quickstartEnv: "REDOUBT_PASSPHRASE=detect-pass")
        defer { q.stop() }
        let tree = "\(q.dir)/tree"
        let words = ["backup", "tenant", "snapshot", "restore", "the", "of", "and", "lock", "host", "chunk"]
        for i in 0..<120 {
            let dir = "\(tree)/d\(i % 6)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let line = (0..<12).map { words[($0 * 7 + i) % words.count] }.joined(separator: " ") + "\n"
            try String(repeating: line, count: 40 + i).write(toFile: "\(dir)/note\(i).txt", atomically: false,
                                                               encoding: .utf8)
        }
        let host = "--config '\(q.base)/host'"
        for k in 0..<4 {
            try "day \(k)\n".write(toFile: "\(tree)/d0/diary\(k).txt", atomically: false, encoding: .utf8)
            let (b, out) = await q.sh("backup '\(tree)' \(host)")
            #expect(b == 0, "\(out)")
        }
        await #expect(q.shell("cp -a '\(tree)' '\(q.dir)/before'").0 == 0)

        // The attack: every third file encrypted in place (same inode, same length), names kept.
        let key = String(repeating: "ab", count: 32), iv = String(repeating: "cd", count: 16)
        let (e, eOut) = await q.shell("""
            cd '\(tree)' && ls d*/note*.txt | awk 'NR % 3 == 0' | while read f; do \
            openssl enc -aes-256-ctr -K \(key) -iv \(iv) -in "$f" -out '\(q.dir)/ct' && cat '\(q.dir)/ct' > "$f" \
            || exit 1; done
            """)
        #expect(e == 0, "\(eOut)")
        let (b, bOut) = await q.sh("backup '\(tree)' \(host)")
        #expect(b == 0, "\(bOut)")

        let (l, lOut) = await q.sh("snapshots \(q.restorer) --host this-host --json")
        #expect(l == 0, "\(lOut)")
        let list = try #require(try JSONSerialization.jsonObject(with: Data(lOut.utf8)) as? [[String: Any]])
        // The listing is in commit order: the newest is last.
        let newest = try #require(list.last)
        #expect(newest["verdict"] as? String == "suspect", "\(newest)")
        let reasons = newest["verdictReasons"] as? [String] ?? []
        #expect(reasons.contains { $0.contains("40 changed files look encrypted") }, "\(reasons)")
        let (t, tOut) = await q.sh("snapshots \(q.restorer) --host this-host")
        #expect(t == 0 && tOut.contains("VERDICT") && tOut.contains("suspect: 40 changed files look encrypted"),
                "\(tOut)")
        // The host's own credential sees no verdicts.
        let (w, wOut) = await q.sh("snapshots \(host) --json")
        #expect(w == 0 && !wOut.contains("verdict"), "\(wOut)")

        let target = "\(q.dir)/restored"
        let (r, rOut) = await q.sh("restore latest-clean --host this-host --target '\(target)' \(q.restorer)",
                             env: "REDOUBT_PASSPHRASE=detect-pass")
        #expect(r == 0, "\(rOut)")
        #expect(rOut.contains("latest-clean is snapshot"), "\(rOut)")
        let (d, dOut) = await q.shell("diff -r '\(q.dir)/before' '\(target)\(q.dir)/tree'")
        #expect(d == 0, "latest-clean did not restore the tree before the attack: \(dOut)")

        let (s, sOut) = await q.sh("admin \(q.admin) detection quickstart --json")
        #expect(s == 0 && sOut.contains("baselineSnapshots") && sOut.contains("holdSnapshots"), "\(sOut)")
    }
}

import Foundation
import Testing

/// `redoubt verify --deep --rolling` and `verify --status` through the built binary,
/// against the quickstart's server: real numbers in --json, the state an admin sees in
/// `host list`, and a host's own credential refused.
@Suite struct RollingVerifyCLITests {
    func object(_ text: String) throws -> [String: Any] {
        // Progress lines go to stderr, which the harness merges: the JSON starts at its first brace.
        let json = String(text[try #require(text.firstIndex(of: "{"), "no JSON in: \(text)")...])
        return try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
    }

    @Test func aRollingRunReportsRealNumbersAndTheAdminSeesTheState() async throws {
        let q = try await QuickstartServer.start("rolling", quickstartEnv: "REDOUBT_PASSPHRASE=rolling-pass")
        defer { q.stop() }
        let pass = "REDOUBT_PASSPHRASE=rolling-pass"
        let (s0, status0) = await q.sh("verify --status --json \(q.restorer)")
        try #require(s0 == 0, "verify --status: \(status0)")
        let before = try object(status0)
        let packs = try #require(before["packs"] as? Int), bytes = try #require(before["bytes"] as? Int)
        #expect(packs > 0 && bytes > 0 && before["neverVerifiedPacks"] as? Int == packs, "\(before)")

        // The first run opens every pack never verified (all of them), whatever --days says.
        let (r1, out1) = await q.sh("verify --deep --rolling --json \(q.restorer)", env: pass)
        try #require(r1 == 0, "verify --deep --rolling: \(out1)")
        let run1 = try object(out1)
        #expect(run1["packsChecked"] as? Int == packs && run1["bytesChecked"] as? Int == bytes, "\(run1)")
        #expect(run1["budgetBytes"] as? Int == bytes && (run1["chunksChecked"] as? Int ?? 0) > 0)
        #expect((run1["after"] as? [String: Any])?["neverVerifiedPacks"] as? Int == 0, "\(run1)")

        // A budget of one byte opens exactly one pack.
        let (r2, out2) = await q.sh("verify --deep --rolling --budget 1 --json \(q.restorer)", env: pass)
        try #require(r2 == 0, "verify --deep --rolling --budget 1: \(out2)")
        #expect(try object(out2)["packsChecked"] as? Int == 1, "\(out2)")
        let (r3, out3) = await q.sh("verify --deep --rolling --budget 1 \(q.restorer)", env: pass)
        #expect(r3 == 0 && out3.contains("rolling deep verify: 1 packs") && out3.contains("OK"), "\(out3)")

        // The admin sees, per host, the oldest deep verify of its packs.
        let (h, hosts) = await q.sh("admin host list \(q.admin)")
        #expect(h == 0 && hosts.contains("DEEP VERIFIED") && !hosts.contains("pack(s) never"), "\(hosts)")
        // The host's own credential can read neither the state nor mark anything (exit 4).
        let (w, wOut) = await q.sh("verify --status --config '\(q.base)/host'")
        #expect(w == 4 && wOut.contains("E_FORBIDDEN"), "a host asking for the deep-verify state: \(w) \(wOut)")
        let (u, uOut) = await q.sh("verify --deep --rolling --budget 1 --days 3 \(q.restorer)", env: pass)
        #expect(u == 2, "--budget with --days: \(u) \(uOut)")
    }
}

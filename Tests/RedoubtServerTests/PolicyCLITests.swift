import Foundation
import Testing

/// `redoubt admin policy set|show|list|simulate` through the built binary, against the
/// quickstart's server: real numbers and arrays in --json, --host and --tag scoping, and
/// lowering with two admins stopped at exit 13 naming the approval to ask for.
@Suite struct PolicyCLITests {
    func json(_ text: String) throws -> Any {
        // Progress or notices go to stderr, which the harness merges: JSON starts at the first bracket.
        let start = try #require(text.firstIndex { $0 == "[" || $0 == "{" }, "no JSON in: \(text)")
        return try JSONSerialization.jsonObject(with: Data(text[start...].utf8))
    }

    @Test func anAdminSetsShowsSimulatesAndLoweringNeedsASecondAdmin() async throws {
        let q = try await QuickstartServer.start("policy", quickstartEnv: "REDOUBT_PASSPHRASE=policy-pass")
        defer { q.stop() }
        let (l, snaps) = await q.sh("snapshots --json \(q.restorer)")
        let listed = try #require(try json(snaps) as? [[String: Any]], "snapshots: \(l) \(snaps)")
        let host = try #require(listed.first?["host"] as? String, "\(listed)")

        let (s, set) = await q.sh("admin policy set quickstart --keep-daily 14 --keep-weekly 8 --keep-monthly 24 "
                            + "--keep-yearly 7 --keep-within 2d \(q.admin)")
        #expect(s == 0 && set.contains("daily 14, weekly 8, monthly 24, yearly 7, within 2d (UTC)"), "set: \(s) \(set)")
        // --host and --tag: a second policy, for hosts matching a glob and a tag only.
        let (h,
            hOut) = await q.sh("""
                admin policy set quickstart --host '\(host.prefix(1))*' --tag db --keep-last 3 --json \(q.admin)
                """)
        let afterSet = try #require(try json(hOut) as? [[String: Any]], "set --host --tag: \(h) \(hOut)")
        #expect(h == 0 && afterSet.count == 2, "\(afterSet)")

        let (sh, shown) = await q.sh("admin policy show quickstart --json \(q.admin)")
        let policies = try #require(try json(shown) as? [[String: Any]], "show: \(sh) \(shown)")
        let all = try #require(policies.first { $0["hostGlob"] as? String == "*" }, "\(policies)")
        let rules = try #require(all["rules"] as? [String: Any])
        #expect(rules["daily"] as? Int == 14 && rules["weekly"] as? Int == 8 && rules["monthly"] as? Int == 24
                && rules["yearly"] as? Int == 7 && rules["withinSeconds"] as? Int == 2 * 86400
                && rules["timeZone"] as? String == "UTC", "\(rules)")
        let scoped = try #require(policies.first { $0["hostGlob"] as? String == "\(host.prefix(1))*" }, "\(policies)")
        #expect(scoped["tag"] as? String == "db" && (scoped["rules"] as? [String: Any])?["last"] as? Int == 3,
            "\(scoped)")
        let (li, listOut) = await q.sh("admin policy list --json \(q.admin)")
        let listCount = (try json(listOut) as? [[String: Any]])?.count
        #expect(li == 0 && listCount == 2, "list: \(listOut)")
        let (lt, listText) = await q.sh("admin policy list \(q.admin)")
        #expect(lt == 0 && listText.contains("host \(host.prefix(1))*  tag db  last 3 (UTC)"), "list: \(listText)")

        // Simulate: the quickstart's one snapshot is kept by the daily (period running), weekly,
        // monthly, yearly and within rules; not by the tagged policy (it carries no tag db).
        let (si, simOut) = await q.sh("admin policy simulate quickstart --json \(q.admin)")
        let sim = try #require(try json(simOut) as? [String: Any], "simulate: \(si) \(simOut)")
        let rows = try #require(sim["snapshots"] as? [[String: Any]])
        #expect(sim["kept"] as? Int == 1 && sim["extended"] as? Int == 0 && rows.count == listed.count, "\(sim)")
        let row = try #require(rows.first { $0["id"] as? String == q.snapshot }, "\(rows)")
        let keeps = try #require(row["keeps"] as? [[String: Any]])
        #expect(Set(keeps.compactMap { $0["rule"] as? String }) == ["daily", "weekly", "monthly", "yearly", "within"],
                "\(keeps)")
        #expect(keeps.first { $0["rule"] as? String == "daily" }?["final"] as? Bool == false, "\(keeps)")
        // The within rule's lock is final at once: committed + 2 days.
        #expect(row["lockUntil"] is String, "\(row)")
        let (st, simText) = await q.sh("admin policy simulate quickstart \(q.admin)")
        #expect(st == 0 && simText.contains("1 of \(listed.count) snapshot(s) kept by a rule")
                && simText.contains("within until"), "simulate: \(simText)")

        // `snapshots` shows the rules keeping each snapshot, and its lock end (RETAIN UNTIL / retainUntil).
        let (ls, lsJSON) = await q.sh("snapshots --json \(q.restorer)")
        let withKeeps = try #require(try json(lsJSON) as? [[String: Any]], "snapshots: \(ls) \(lsJSON)")
        let mine = try #require(withKeeps.first { $0["id"] as? String == q.snapshot }, "\(withKeeps)")
        let keptBy = try #require(mine["keptBy"] as? [[String: Any]], "no keptBy: \(mine)")
        #expect(Set(keptBy.compactMap { $0["rule"] as? String }) == ["daily", "weekly", "monthly", "yearly", "within"]
                && mine["retainUntil"] is String && keptBy.allSatisfy { $0["until"] is String }, "\(mine)")
        let (lt2, lsText) = await q.sh("snapshots \(q.restorer)")
        #expect(lt2 == 0 && lsText.contains("KEPT BY") && lsText.contains("daily*,weekly*,monthly*,yearly*,within"),
                "snapshots: \(lsText)")

        // A second admin: lowering now needs approval (exit 13), naming the request and how to finish.
        let (a, token) = await q.shell("\(q.bin) admin admins add bob \(q.admin) 2>/dev/null")
        try #require(a == 0, "admins add: \(token)")
        let tokenLine = try #require(token.split(separator: "\n").last { $0.hasPrefix("rdbt1.") }, "no token: \(token)")
        let (e, eOut) = await q.sh("enroll '\(tokenLine)' --config '\(q.dir)/bob'")
        try #require(e == 0, "enroll bob: \(eOut)")
        let bob = "--credential '\(q.dir)/bob/credential.json'"
        let (low, lowOut) = await q.sh("admin policy set quickstart --keep-daily 7 --keep-weekly 8 --keep-monthly 24 "
                                 + "--keep-yearly 7 --keep-within 2d \(q.admin)")
        #expect(low == 13 && lowOut.contains("lower-policy") && lowOut.contains("--request"),
            "lowering: \(low) \(lowOut)")
        let (_, reqs) = await q.sh("admin request list --json \(q.admin)")
        let reqList = try #require(try json(reqs) as? [[String: Any]], "request list: \(reqs)")
        let req = try #require(reqList.first { $0["action"] as? String == "lower-policy" }, "\(reqList)")
        let id = try #require(req["id"] as? String)
        #expect(lowOut.contains(id), "the exit-13 message names the request \(id): \(lowOut)")
        let (_, still) = await q.sh("admin policy show quickstart --json \(q.admin)")
        let stillDaily = ((try json(still) as? [[String: Any]])?.first { $0["hostGlob"] as? String == "*" }?["rules"]
                          as? [String: Any])?["daily"] as? Int
        #expect(stillDaily == 14, "unchanged before approval: \(still)")
        // The other admin approves; the same command with --request makes the change.
        let lower =
            """
                admin policy set quickstart --keep-daily 7 --keep-weekly 8 --keep-monthly 24 --keep-yearly 7 \
                --keep-within 2d
                """
        let (own, ownOut) = await q.sh("admin request approve \(id) \(q.admin)")
        #expect(own != 0, "approving one's own request: \(ownOut)")
        let (ap, apOut) = await q.sh("admin request approve \(id) \(bob)")
        #expect(ap == 0 && apOut.contains("approved"), "bob approving: \(ap) \(apOut)")
        let (done, doneOut) = await q.sh("\(lower) --request \(id) --json \(q.admin)")
        let lowered = (try? json(doneOut) as? [[String: Any]])?.first { $0["hostGlob"] as? String == "*" }
        let loweredDaily = (lowered?["rules"] as? [String: Any])?["daily"] as? Int
        #expect(done == 0 && loweredDaily == 7, "lowered: \(done) \(doneOut)")
        // Raising stays immediate with two admins.
        let (up, upOut) = await q.sh("admin policy set quickstart --keep-daily 14 --keep-weekly 8 --keep-monthly 24 "
                               + "--keep-yearly 10 --keep-within 2d \(q.admin)")
        #expect(up == 0 && upOut.contains("yearly 10"), "raising: \(up) \(upOut)")
        // Removing needs approval too.
        let (rm,
            rmOut) = await q.sh("admin policy set quickstart --host '\(host.prefix(1))*' --tag db --remove \(q.admin)")
        #expect(rm == 13, "removing: \(rm) \(rmOut)")
    }
}

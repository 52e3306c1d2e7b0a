import Foundation
@testable import RedoubtServer
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The shared Prometheus peer (scripts/peers): a test names its server in a file_sd file of
/// its own and labels it with a run ID, so parallel tests never read each other's series.
struct PrometheusPeer {
    let url: String
    let dir: URL
    let run = UUID().uuidString.lowercased()

    init?() {
        guard let env = peerEnvironment("REDOUBT_TEST_PROMETHEUS", "REDOUBT_TEST_PROMETHEUS_DIR"),
              let url = env["REDOUBT_TEST_PROMETHEUS"], let dir = env["REDOUBT_TEST_PROMETHEUS_DIR"] else { return nil }
        self.url = url
        self.dir = URL(fileURLWithPath: dir)
    }

    var targetFile: URL { dir.appendingPathComponent("targets/\(run).json") }
    var rulesFile: URL { dir.appendingPathComponent("rules/\(run).yml") }

    /// Has Prometheus scrape `address` (host:port), every series labelled `redoubt_test=<run>`.
    func scrape(_ address: String) throws {
        let group: [[String: Any]] = [["targets": [address], "labels": ["redoubt_test": run]]]
        let tmp = targetFile.appendingPathExtension("tmp")
        try JSONSerialization.data(withJSONObject: group).write(to: tmp)
        // Renamed into place: file_sd must never read a half-written file.
        guard rename(tmp.path, targetFile.path) == 0 else { throw CocoaError(.fileWriteUnknown) }
    }

    /// Loads `rules` (a rule file's text) and has Prometheus reload its configuration.
    func load(rules: String) async throws {
        try Data(rules.utf8).write(to: rulesFile)
        var req = URLRequest(url: URL(string: url + "/-/reload")!)
        req.httpMethod = "POST"
        let (_, response) = try await URLSession.shared.data(for: req)
        #expect((response as? HTTPURLResponse)?.statusCode == 200)
    }

    func get(_ path: String, _ query: [String: String] = [:]) async throws -> [String: Any] {
        var c = URLComponents(string: url + path)!
        c.queryItems = query.map { URLQueryItem(name: $0.key, value: $0.value) }
        let (data, _) = try await URLSession.shared.data(from: c.url!)
        return (try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
    }

    /// The instant vector `query` evaluates to, as (labels, value) pairs.
    func query(_ query: String) async throws -> [([String: String], Double)] {
        let body = try await get("/api/v1/query", ["query": query])
        let result = ((body["data"] as? [String: Any])?["result"] as? [[String: Any]]) ?? []
        return result.compactMap { r in
            guard let labels = r["metric"] as? [String: String], let v = r["value"] as? [Any],
                  let s = v.last as? String, let d = Double(s) else { return nil }
            return (labels, d)
        }
    }

    /// Firing alerts of this run.
    func firingAlerts() async throws -> [[String: String]] {
        let body = try await get("/api/v1/alerts")
        let alerts = ((body["data"] as? [String: Any])?["alerts"] as? [[String: Any]]) ?? []
        return alerts.compactMap { a in
            guard a["state"] as? String == "firing", let l = a["labels"] as? [String: String],
                  l["redoubt_test"] == run else { return nil }
            return l
        }
    }

    /// Polls `body` until it returns a value or `seconds` pass: the wait is for an external
    /// scrape and rule evaluation (1 s intervals), never a measure of the server.
    func eventually<T>(_ what: String, seconds: Int = 90, _ body: () async throws -> T?) async throws -> T? {
        for _ in 0..<(seconds * 4) {
            if let v = try await body() { return v }
            try await Task.sleep(nanoseconds: 250_000_000)
        }
        Issue.record("Prometheus: \(what) not seen within \(seconds) s (log: \(dir.path)/../prometheus.log)")
        return nil
    }

    func cleanUp() {
        try? FileManager.default.removeItem(at: targetFile)
        try? FileManager.default.removeItem(at: rulesFile)
    }
}

/// The shipped alert rules with every `for:` shortened to none, so a rule fires at its first
/// evaluation; the expressions are exactly contrib's.
func contribAlertRules(scopedTo run: String) throws -> String {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../contrib/prometheus/redoubt-alerts.yml").standardizedFileURL
    let text = try String(contentsOf: path, encoding: .utf8)
    return text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
        line.trimmingCharacters(in: .whitespaces).hasPrefix("for:")
            ? String(line.prefix { $0 == " " }) + "for: 0s" : String(line)
    }.joined(separator: "\n").replacingOccurrences(of: "- name: redoubt\n", with: "- name: redoubt-\(run)\n")
}

@Suite(.serialized) struct PrometheusPeerTests {
    @Test func aRealPrometheusScrapesABackupAndTheStaleHostRuleFires() async throws {
        guard let prom = PrometheusPeer() else { return }
        defer { prom.cleanUp() }
        let w = try await MetricsWorld.start()
        let address = try #require(URL(string: w.metricsURL)).port.map { "127.0.0.1:\($0)" } ?? ""
        try prom.scrape(address)
        try await prom.load(rules: try contribAlertRules(scopedTo: prom.run))

        // The backup, as Prometheus stored it.
        let scoped = "{redoubt_test=\"\(prom.run)\",tenant=\"acme\",host=\"web1\"}"
        let snapshots = try await prom.eventually("redoubt_host_snapshots") {
            try await prom.query("redoubt_host_snapshots\(scoped)").first
        }
        #expect(snapshots?.1 == 1)
        #expect(snapshots?.0["instance"] == address)
        // Each read waits for a scrape that succeeded: on a loaded machine a scrape can pass its
        // 1 s timeout, and Prometheus then marks the target's series stale until the next one.
        let stored = try await prom.eventually("redoubt_tenant_stored_bytes") {
            try await prom.query("redoubt_tenant_stored_bytes{redoubt_test=\"\(prom.run)\"}").first
        }
        #expect((stored?.1 ?? 0) > 0)
        let commits = try await prom.eventually("the commit's request counter") {
            try await prom.query(
                "redoubt_http_requests_total{redoubt_test=\"\(prom.run)\",route=\"/v1/snapshots\",method=\"POST\"}")
                .first { $0.0["status"] == "201" }
        }
        #expect(commits?.1 == 1, "\(String(describing: commits))")

        // The host is expected hourly; by the server's clock two hours pass without a commit.
        try await w.server.service.catalog.setHostExpectation(tenant: "acme", host: "web1", interval: 3600)
        w.server.clock.set(w.server.clock.now().addingTimeInterval(7200))
        let alert = try await prom.eventually("RedoubtHostStale firing") {
            try await prom.firingAlerts().first { $0["alertname"] == "RedoubtHostStale" }
        }
        #expect(alert?["tenant"] == "acme" && alert?["host"] == "web1")
        #expect(alert?["severity"] == "warning")
        await w.stop()
    }

    @Test func everyDashboardQueryIsValidPromQL() async throws {
        guard let prom = PrometheusPeer() else { return }
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../contrib/grafana/redoubt-fleet.json").standardizedFileURL
        let dashboard = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: path)) as? [String: Any])
        let panels = try #require(dashboard["panels"] as? [[String: Any]])
        var checked = 0
        for p in panels {
            for t in (p["targets"] as? [[String: Any]]) ?? [] {
                let expr = try #require(t["expr"] as? String)
                let answer = try await prom.get("/api/v1/query", ["query": expr])
                #expect(answer["status"] as? String == "success", "\(p["title"] ?? ""): \(expr): \(answer)")
                checked += 1
            }
        }
        #expect(checked >= 10)
    }
}

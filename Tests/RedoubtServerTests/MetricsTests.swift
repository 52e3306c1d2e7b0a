import Foundation
import NIOHTTP1
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A parsed Prometheus text exposition: value by `name{labels}` as the server printed it.
struct Exposition {
    let text: String

    /// The value of the sample `name` whose labels include every pair of `labels`.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " ") else { continue }
            let series = line[..<space], value = line[line.index(after: space)...]
            let metric = series.prefix { $0 != "{" }
            guard metric == name else { continue }
            let body = series.drop { $0 != "{" }.dropFirst().dropLast()
            let have = Dictionary(body.split(separator: ",").compactMap { pair -> (String, String)? in
                guard let eq = pair.firstIndex(of: "=") else { return nil }
                return (String(pair[..<eq]), String(pair[pair.index(after: eq)...]).trimmingCharacters(
                    in: CharacterSet(charactersIn: "\"")))
            }, uniquingKeysWith: { a, _ in a })
            if labels.allSatisfy({ have[$0.key] == $0.value }) { return Double(value) }
        }
        return nil
    }
}

/// Fetches `url` over plain HTTP (the loopback metrics listener).
func httpGet(_ url: String) async throws -> (Int, String) {
    guard let u = URL(string: url) else { throw URLError(.badURL) }
    let (data, response) = try await URLSession.shared.data(from: u)
    return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
}

/// A server with one tenant, one host that committed one snapshot, and a metrics listener
/// on a loopback port of its own.
struct MetricsWorld {
    let server: TestServer
    let writerConfig: ClientConfig
    let writer: APIClient
    let metricsURL: String
    let metrics: BackgroundListener
    let snapshot: Wire.SnapshotInfo

    static func start() async throws -> MetricsWorld {
        let server = try await TestServer.start(inMemory: true)
        let keys = try TenantKeys.generate()
        try await server.createTenant("acme", keys: keys)
        let (cfg, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        var stats = SnapshotStatistics()
        stats.bytesTotal = 50_000
        stats.bytesUploaded = 1_234
        let (packs, manifest) = try makeSnapshot(keys: try cfg.writeKeySet(),
                                                 files: [("a.bin", Array(repeating: 7, count: 50_000))],
                                                 statistics: stats)
        for p in packs { _ = try await writer.uploadPack(id: p.id, bytes: p.bytes) }
        let info = try await writer.commit(manifestBytes: manifest.bytes)
        let (stream, cont) = AsyncStream<Int>.makeStream()
        let app = MetricsListener.application(service: server.service, host: "127.0.0.1", port: 0,
                                              logger: server.service.logger) { cont.yield($0) }
        let listener = BackgroundListener(app, logger: server.service.logger)
        var port = 0
        for await p in stream { port = p; break }
        return MetricsWorld(server: server, writerConfig: cfg, writer: writer,
                            metricsURL: "http://127.0.0.1:\(port)/metrics",
                            metrics: listener, snapshot: info)
    }

    func scrape() async throws -> Exposition {
        let (status, text) = try await httpGet(metricsURL)
        #expect(status == 200)
        return Exposition(text: text)
    }

    func stop() async {
        await writer.shutdown()
        await metrics.stop()
        await server.stop()
    }
}

@Suite(.serialized) struct MetricsTests {
    @Test func metricsShowACommitTheHostsAgeAndTheTenantsBytes() async throws {
        let w = try await MetricsWorld.start()
        let host = ["tenant": "acme", "host": "web1"]
        var m = try await w.scrape()
        #expect(m.value("redoubt_host_snapshots", host) == 1)
        // The wire rounds times to whole seconds; the catalog keeps fractions.
        #expect(abs((m.value("redoubt_host_last_commit_timestamp_seconds", host) ?? 0)
                - w.snapshot.committedAt.timeIntervalSince1970) < 1)
        #expect(m.value("redoubt_host_last_commit_age_seconds", host) == 0)
        #expect(m.value("redoubt_host_expected_interval_seconds", host) == nil)
        #expect(m.value("redoubt_tenant_snapshots", ["tenant": "acme"]) == 1)
        #expect(m.value("redoubt_tenant_logical_bytes", ["tenant": "acme"]) == 50_000)
        #expect((m.value("redoubt_tenant_stored_bytes", ["tenant": "acme"]) ?? 0) > 0)
        #expect(abs((m.value("redoubt_tenant_earliest_lock_end_timestamp_seconds", ["tenant": "acme"]) ?? 0)
                - w.snapshot.retainUntil.timeIntervalSince1970) < 1)
        #expect(m.value("redoubt_tenant_new_bytes", ["tenant": "acme"]) == 1_234)
        #expect((m.value("redoubt_audit_records") ?? 0) > 3)
        #expect(m.value("redoubt_http_requests_total",
                        ["route": "/v1/snapshots", "method": "POST", "status": "201"]) == 1)

        // The age is the server's clock's: a day later by that clock, a day old.
        w.server.clock.set(w.server.clock.now().addingTimeInterval(86400))
        try await w.server.service.catalog.setHostExpectation(tenant: "acme", host: "web1", interval: 3600)
        m = try await w.scrape()
        #expect(m.value("redoubt_host_last_commit_age_seconds", host) == 86400)
        #expect(m.value("redoubt_host_expected_interval_seconds", host) == 3600)
        await w.stop()
    }

    @Test func refusalsAreCountedByPrincipalAndActionAndNoLabelCarriesARawPath() async throws {
        let w = try await MetricsWorld.start()
        let secretName = "very-secret-file-name.txt"
        for _ in 0..<3 {
            _ = try? await w.writer.send(.DELETE, "/v1/snapshots/\(w.snapshot.id)")
        }
        _ = try? await w.writer.send(.GET, "/v1/tenants/acme/read-key")
        _ = try? await w.writer.send(.GET, "/v1/\(secretName)")
        let m = try await w.scrape()
        #expect(m.value("redoubt_refused_requests_total", ["tenant": "acme", "role": "writer", "principal": "web1",
                                                           "action": "unknown-route"]) == 4)
        #expect(m.value("redoubt_refused_requests_total", ["principal": "web1", "action": "get-read-key"]) == 1)
        #expect(m.value("redoubt_http_requests_total", ["route": "unmatched", "method": "DELETE", "status": "403"])
                == 3)
        #expect(m.value("redoubt_http_requests_total", ["route": "/v1/tenants/{tenant}/read-key", "status": "403"])
                == 1)
        // Labels name route templates and principals, never what a caller put in a path.
        #expect(!m.text.contains(secretName))
        #expect(!m.text.contains(w.snapshot.id))
        await w.stop()
    }

    @Test func theAPIServesTheSameMetricsToAuditorsOnlyOverTLS() async throws {
        let w = try await MetricsWorld.start()
        let (_, auditor) = try await w.server.enroll(tenant: "acme", role: "auditor", name: "prom")
        let (status, body) = try await auditor.send(.GET, "/v1/metrics")
        #expect(status == 200)
        #expect(Exposition(text: String(decoding: body, as: UTF8.self))
                    .value("redoubt_host_snapshots", ["host": "web1"]) == 1)
        // A host's credential may not read the fleet's metrics.
        await refused("E_FORBIDDEN", "a writer reading metrics") { _ = try await w.writer.send(.GET, "/v1/metrics") }
        await auditor.shutdown()
        await w.stop()
    }

    /// Connections that are open but have sent nothing, and a request cut halfway, are what a
    /// scraper leaves behind; stopping the listener under them must neither trap in NIO (which
    /// ends the whole server process) nor wait for them.
    @Test func theListenerStopsCleanlyUnderIdleAndHalfSentConnections() async throws {
        let w = try await MetricsWorld.start()
        let port = try #require(URL(string: w.metricsURL)?.port)
        var fds: [Int32] = []
        for i in 0..<40 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
            #expect(connected)
            if i % 2 == 0 { _ = "GET /metrics HTTP/1.1\r\nHost: x\r\n".withCString { send(fd, $0, strlen($0), 0) } }
            fds.append(fd)
        }
        defer { for fd in fds { close(fd) } }
        // A full scrape still works beside them.
        #expect(try await w.scrape().value("redoubt_host_snapshots", ["tenant": "acme", "host": "web1"]) == 1)
        let started = Date()
        await w.writer.shutdown()
        #expect(await w.metrics.stop(within: 5))
        #expect(Date().timeIntervalSince(started) < 12)
        await w.server.stop()
    }

    @Test func theMetricsListenerRefusesAnAddressBeyondLoopback() throws {
        #expect(try MetricsListener.parse("127.0.0.1:9464") == ("127.0.0.1", 9464))
        #expect(try MetricsListener.parse("[::1]:9464").port == 9464)
        for bad in ["0.0.0.0:9464", "192.168.1.5:9464", "[::]:9464", "example.org:9464", "127.0.0.1"] {
            #expect(throws: ServerError.self, "\(bad)") { try MetricsListener.parse(bad) }
        }
        do { _ = try MetricsListener.parse("0.0.0.0:9464") } catch let e as ServerError {
            #expect(e.message.contains("loopback") && e.message.contains("/v1/metrics"))
        } catch { Issue.record("\(error)") }
    }
}

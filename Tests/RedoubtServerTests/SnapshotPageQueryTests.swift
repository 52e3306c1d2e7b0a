import Foundation
import Testing
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer

/// `GET /v1/snapshots` pages read by the catalog with the cursor and the bound in the
/// query: over many snapshots (with commit-time ties), every view's pages are complete,
/// disjoint and in listing order, and the query walks the listing index.
@Suite(.serialized, .timeLimit(.minutes(10))) struct SnapshotPageQueryTests {
    static func hex() -> String { (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined() }

    /// Pages of `limit` through `client` with `query`, until a short page.
    func pages(_ client: APIClient, _ query: String, limit: Int) async throws -> [[String]] {
        var out: [[String]] = []
        while true {
            let after = out.last?.last.map { "&after=\($0)" } ?? ""
            let (status, body) = try await client.send(.GET, "/v1/snapshots?limit=\(limit)\(query)\(after)")
            try #require(status == 200, "page \(out.count + 1) of \(query): \(String(decoding: body, as: UTF8.self))")
            let page = try WireDate.decoder().decode([Wire.SnapshotInfo].self, from: Data(body)).map(\.id)
            #expect(page.count <= limit)
            out.append(page)
            if page.count < limit { return out }
        }
    }

    @Test func pagesOfManySnapshotsAreCompleteDisjointAndOrdered() async throws {
        let server = try await TestServer.start()
        try await server.createTenant("acme", keys: try TenantKeys.generate())
        try await server.createTenant("beta", keys: try TenantKeys.generate())
        let (_, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let (_, restorer) = try await server.enroll(tenant: "acme", role: "restorer", name: "vault")
        let base = Date(timeIntervalSince1970: 1_800_000_000)
        var records: [SnapshotRecord] = []
        // Commit times tie in fours (the ID orders them), across two tenants and three hosts.
        // 600 rows: pages of 97 still break inside tie groups and across tenants and hosts,
        // and each row is its own catalog transaction.
        for i in 0..<600 {
            let r = SnapshotRecord(id: Self.hex(), tenant: i % 3 == 0 ? "beta" : "acme",
                                   host: ["web1", "web2", "web3"][i % 5 % 3],
                                   time: base, committedAt: base.addingTimeInterval(Double(i / 4)),
                                   retainUntil: base.addingTimeInterval(86400), paths: ["/data"], tags: [],
                                   statistics: SnapshotStatistics(), packCount: 0, manifestSize: 1)
            try await server.service.catalog.insertSnapshot(r, packs: [])
            records.append(r)
        }
        let ordered = records.sorted { ($0.tenant, $0.committedAt, $0.id) < ($1.tenant, $1.committedAt, $1.id) }
            .map(\.id)
        func expected(_ keep: (SnapshotRecord) -> Bool) -> [String] {
            let ids = Set(records.filter(keep).map(\.id))
            return ordered.filter(ids.contains)
        }
        let views: [(String, APIClient, String, [String])] = [
            ("admin, every tenant", server.admin, "", ordered),
            ("admin, tenant acme, host web2", server.admin, "&tenant=acme&host=web2",
             expected { $0.tenant == "acme" && $0.host == "web2" }),
            ("restorer of acme", restorer, "", expected { $0.tenant == "acme" }),
            ("writer web1 of acme", writer, "", expected { $0.tenant == "acme" && $0.host == "web1" }),
        ]
        for (name, client, query, want) in views {
            let got = try await pages(client, query, limit: 97)
            let flat = got.flatMap { $0 }
            #expect(flat == want, "\(name): \(flat.count) listed, \(want.count) expected, in order")
            #expect(Set(flat).count == flat.count, "\(name): a snapshot is on two pages")
            #expect(got.dropLast().allSatisfy { $0.count == 97 }, "\(name): a short page before the last")
        }
        // The old whole-tenant reader and the pages agree.
        #expect(try await server.service.catalog.snapshots(tenant: "acme").map(\.id)
            == expected { $0.tenant == "acme" })
        // A cursor the caller cannot see is refused, never answered with everything.
        let betaSnapshot = try #require(records.first { $0.tenant == "beta" }?.id)
        await refused("E_NOT_FOUND", "a restorer paging after another tenant's snapshot") {
            _ = try await restorer.send(.GET, "/v1/snapshots?limit=5&after=\(betaSnapshot)")
        }

        // What a page costs: the first and the last page of 100 take the same time.
        var timings: [Double] = []
        for after in [nil, ordered[ordered.count - 101]] {
            let t0 = Date()
            for _ in 0..<20 {
                _ = try await server.admin.send(.GET, "/v1/snapshots?limit=100" + (after.map { "&after=\($0)" } ?? ""))
            }
            timings.append(Date().timeIntervalSince(t0) / 20 * 1000)
        }
        print("snapshot page of 100 out of \(records.count): first \(String(format: "%.2f", timings[0])) ms, "
              + "last \(String(format: "%.2f", timings[1])) ms (mean of 20, over TLS)")
        await writer.shutdown()
        await restorer.shutdown()
        await server.stop()
    }

    @Test(.sqliteCatalogOnly) func aPageIsReadThroughTheListingIndexFromItsCursor() async throws {
        let server = try await TestServer.start()
        let catalog = try server.service.sqlite
        let cursor = ("acme", 1_800_000_000.0, String(repeating: "a", count: 64))
        for (tenant, host) in [("acme", nil), ("acme", "web1"), (nil, nil), (nil, "web1")] as [(String?, String?)] {
            let (sql, args) = Catalog.snapshotPageSQL(tenant: tenant, host: host, after: cursor, limit: 100)
            let plan = try catalog.queryPlan(sql, args)
            // No sort of the whole listing: the order comes from the index, and the scan
            // starts at the cursor.
            #expect(!plan.contains { $0.contains("TEMP B-TREE") }, "\(tenant ?? "*")/\(host ?? "*"): \(plan)")
            #expect(plan.contains {
                        ($0.contains("snapshots_listing") || $0.contains("snapshots_host_listing"))
                            && $0.contains(")>(?,?")
                    },
                    "\(tenant ?? "*")/\(host ?? "*"): the scan does not start at the cursor: \(plan)")
        }
        await server.stop()
    }
}

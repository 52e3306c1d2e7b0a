import Foundation
import NIOHTTP1
import Testing
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer

/// docs/openapi.yaml against what the server serves: the route table is the list of
/// served routes, and the document must describe each, with every status the middleware
/// and the handler wrapper can answer and every enum value the server sends. Reads the
/// JSON twin docs/openapi.json (kept in sync by ./scripts/openapi-json, checked by ./scripts/test).
@Suite struct OpenAPIDocumentTests {
    static let docURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../docs/openapi.json").standardizedFileURL

    func document() throws -> [String: Any] {
        let data = try Data(contentsOf: Self.docURL)
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any], "\(Self.docURL.path)")
    }

    /// `/v1/packs/{packID}` and `/v1/packs/{id}` name one route.
    func shape(_ path: String) -> String {
        path.split(separator: "/").map { $0.first == "{" ? "{}" : String($0) }.joined(separator: "/")
    }

    /// Operations by "METHOD shape".
    func operations(_ doc: [String: Any]) throws -> [String: [String: Any]] {
        let paths = try #require(doc["paths"] as? [String: [String: Any]])
        var ops: [String: [String: Any]] = [:]
        for (path, item) in paths {
            let methods = ["get", "put", "post", "delete", "patch", "head", "options"]
            for (method, op) in item where methods.contains(method) {
                ops["\(method.uppercased()) \(shape(path))"] = op as? [String: Any]
            }
        }
        return ops
    }

    func schema(_ doc: [String: Any], _ name: String) throws -> [String: Any] {
        let comps = try #require(doc["components"] as? [String: Any])
        let schemas = try #require(comps["schemas"] as? [String: Any])
        return try #require(schemas[name] as? [String: Any], "no schema \(name)")
    }

    func enumValues(_ doc: [String: Any], _ name: String, _ property: String) throws -> Set<String> {
        let props = try #require(try schema(doc, name)["properties"] as? [String: Any])
        let p = try #require(props[property] as? [String: Any], "\(name).\(property)")
        return Set(try #require(p["enum"] as? [String], "\(name).\(property) has no enum"))
    }

    /// Routes that never read their body: no request body, no 413.
    static let bodiless: Set<Action> = [
        .approveRequest, .rejectRequest, .syncCopyTarget, .verifySnapshot, .cancelEnrollment, .applyPolicy,
        .removeNotifyChannel, .testNotifyChannel,
    ]

    @Test func theDocumentDescribesEveryServedRouteAndNoOther() throws {
        let ops = try operations(try document())
        let served = Set(RedoubtHTTP.routes.map { "\($0.method) \(shape($0.path))" })
        #expect(served.subtracting(ops.keys).sorted() == [], "served routes the document lacks")
        #expect(Set(ops.keys).subtracting(served).sorted() == [], "documented routes the server does not serve")
    }

    @Test func everyOperationListsTheStatusesItsRouteCanAnswer() throws {
        let ops = try operations(try document())
        for route in RedoubtHTTP.routes {
            let name = "\(route.method) \(route.path)"
            guard let op = ops["\(route.method) \(shape(route.path))"] else { continue }  // reported above
            let statuses = Set((op["responses"] as? [String: Any] ?? [:]).keys)
            var need: Set<String> = ["500"]  // the handler wrapper's E_INTERNAL, any route
            // The middleware's refusals: no or a revoked credential, and a role the route refuses.
            if route.access != .anyone { need.insert("401") }
            if Role.allCases.contains(where: { !route.access.allows($0) }) { need.insert("403") }
            if route.action == .enroll { need.formUnion(["400", "403", "409"]) }
            let readsBody = (route.method == .post || route.method == .put) && !Self.bodiless.contains(route.action)
            if readsBody { need.insert("413") }  // every body is read with a limit
            let content = ((op["requestBody"] as? [String: Any])?["content"] as? [String: Any]) ?? [:]
            if content["application/json"] != nil { need.insert("400") }  // `Request.json` refuses what does not decode
            let lacking = need.subtracting(statuses).sorted()
            #expect(lacking == [], "\(name) lacks statuses \(lacking)")
            let documentsBody = op["requestBody"] != nil
            #expect(documentsBody == readsBody, "\(name): requestBody documented \(documentsBody)")
            let roles = Set(op["x-roles"] as? [String] ?? [])
            let declared: Set<String> = switch route.access {
            case .anyone: ["anyone"]
            case .roles(let r): Set(r.map(\.rawValue))
            }
            #expect(roles == declared, "\(name): x-roles \(roles.sorted()), the route table \(declared.sorted())")
        }
    }

    @Test func enumsHoldEveryValueTheServerSends() throws {
        let doc = try document()
        let roles = Set(Role.allCases.map(\.rawValue))
        for schemaName in ["PrincipalInfo", "EnrollmentInfo", "EnrollResponse", "EnrollmentTokenPayload"] {
            let documented = try enumValues(doc, schemaName, "role")
            #expect(roles.subtracting(documented).sorted() == [], "\(schemaName).role")
        }
        // Every outcome a source file writes into the audit log.
        let outcomes = try enumValues(doc, "AuditEntry", "outcome")
        #expect(auditOutcomes().subtracting(outcomes).sorted() == [], "documented: \(outcomes.sorted())")
        // Every action a request for approval can name.
        let gated: [Action] = [.addAdmin, .removeAdmin, .setQuorum, .lowerRetention, .rotateReadKey, .shredTenant,
                               .releaseHold, .revokeWriter, .removeCopyTarget, .acceptUnenforced, .lowerPolicy,
                               .weakenSchedule]
        #expect(Set(gated.map(\.rawValue)).subtracting(try enumValues(doc, "RequestInfo", "action")).sorted() == [])
        let states = Set(ApprovalRequest.State.allCases.map(\.rawValue))
        #expect(states.subtracting(try enumValues(doc, "RequestInfo", "state")).sorted() == [])
    }

    /// The outcome literals of every `outcome:` argument in Sources/RedoubtServer.
    func auditOutcomes() -> Set<String> {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Sources/RedoubtServer").standardizedFileURL
        var found: Set<String> = []
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        for f in files where f.hasSuffix(".swift") {
            let text = (try? String(contentsOf: dir.appendingPathComponent(f), encoding: .utf8)) ?? ""
            for line in text.split(separator: "\n") {
                guard let r = line.range(of: "outcome: ") else { continue }
                let rest = line[r.upperBound...].prefix { $0 != "," }
                if rest.hasPrefix("r[") { continue }  // reading a stored record, not writing one
                let head = rest.components(separatedBy: "detail:")[0]
                let parts = head.split(separator: "\"", omittingEmptySubsequences: false)
                for (i, p) in parts.enumerated() where i % 2 == 1 && p.allSatisfy(\.isLowercase) && !p.isEmpty {
                    found.insert(String(p))
                }
            }
        }
        #expect(found.isSuperset(of: ["ok", "denied", "error", "pending"]), "the source scan found \(found.sorted())")
        return found
    }

    /// The schema a `$ref` names, or the schema itself.
    func resolve(_ doc: [String: Any], _ schema: [String: Any]) throws -> [String: Any] {
        guard let ref = schema["$ref"] as? String else { return schema }
        return try self.schema(doc, String(ref.split(separator: "/").last ?? ""))
    }

    /// Every key of `value` (an object, or the objects of an array) must be a documented
    /// property of `schema`, recursively.
    func checkFields(_ doc: [String: Any], _ value: Any, _ schema: [String: Any], _ at: String) throws {
        let s = try resolve(doc, schema)
        if let array = value as? [Any], let items = s["items"] as? [String: Any] {
            for v in array { try checkFields(doc, v, items, at + "[]") }
        } else if let object = value as? [String: Any] {
            let props = s["properties"] as? [String: Any] ?? [:]
            if props.isEmpty, s["additionalProperties"] is [String: Any] { return }  // a map, e.g. parameters
            for (k, v) in object {
                guard let p = props[k] as? [String: Any] else {
                    Issue.record("\(at).\(k) is sent but not documented")
                    continue
                }
                try checkFields(doc, v, p, at + "." + k)
            }
        }
    }

    /// The admin's and the auditor's JSON answers, from a real server with a tenant, its
    /// principals, a pending token and a hold: every field sent is documented.
    @Test func everyFieldTheServerSendsIsDocumented() async throws {
        let doc = try document()
        let ops = try operations(doc)
        let server = try await TestServer.start()
        try await server.createTenant("acme", keys: try TenantKeys.generate())
        let (_, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let (_, auditor) = try await server.enroll(tenant: "acme", role: "auditor", name: "eve")
        let (_, restorer) = try await server.enroll(tenant: "acme", role: "restorer", name: "vault")
        _ = try await server.admin.createEnrollment(tenant: "acme", role: "restorer", name: "later", ttlSeconds: 600)
        _ = try await server.admin.placeHold(Wire.PlaceHoldRequest(snapshot: nil, tenant: "acme", reason: "audit"))
        _ = try? await writer.send(.DELETE, "/v1/packs/00")  // a denied record in the log
        var checked = 0
        for route in RedoubtHTTP.routes where route.method == .get && !route.path.contains("/packs/")
            && !route.path.contains("/snapshots/") {
            let path = route.path.replacingOccurrences(of: "{tenant}", with: "acme")
            let client = route.access.allows(.admin) ? server.admin : route.access.allows(.auditor) ? auditor : restorer
            let (status, body) = try await client.send(.GET, path)
            #expect(status == 200, "GET \(path)")
            let op = try #require(ops["GET \(shape(route.path))"])
            let ok = try #require((op["responses"] as? [String: Any])?["200"] as? [String: Any])
            // The metrics exposition is Prometheus text, not JSON (MetricsTests parse it).
            if (ok["content"] as? [String: Any])?["text/plain"] != nil { continue }
            let media = try #require((ok["content"] as? [String: Any])?["application/json"] as? [String: Any])
            let schema = try #require(media["schema"] as? [String: Any])
            try checkFields(doc, try JSONSerialization.jsonObject(with: Data(body)), schema, "GET \(route.path)")
            checked += 1
        }
        #expect(checked >= 12)
        await writer.shutdown()
        await auditor.shutdown()
        await restorer.shutdown()
        await server.stop()
    }
}

import Foundation
import HTTPTypes
import NIOHTTP1
import Testing
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer

/// Who may call what, written out here by hand, independently of the route table: a route
/// added to the table, or a role added to a route, fails these tests until this list
/// (the security review of the change) says so too.
private let expectedAccess: [String: Set<String>] = {
    let anyone: Set<String> = ["-", "writer", "restorer", "auditor", "admin"]
    let admin: Set<String> = ["admin"]
    return [
        "GET /v1/health": anyone,
        "POST /v1/enroll": anyone,  // authorised by its one-time token
        "POST /v1/chunks/query": ["writer", "restorer"],
        "PUT /v1/packs/{id}": ["writer"],
        // A writer learns only which of its own uploads the tenant still holds.
        "POST /v1/packs/query": ["writer"],
        // Reading packs or manifests is restorer-only: a host's own credential cannot
        // download even its own backups (DESIGN.md §1.2).
        "GET /v1/packs/{id}": ["restorer"],
        "POST /v1/packs/{id}/damaged": ["restorer"],
        // Only a restorer deep-verifies: a writer must not push its own uploads to the
        // back of the rolling queue, nor learn which of them are checked.
        "POST /v1/packs/verified": ["restorer"],
        "GET /v1/deep-verify": ["restorer"],
        "POST /v1/packs/chunk-lists": ["restorer"],
        "POST /v1/snapshots": ["writer"],
        "GET /v1/snapshots": ["writer", "restorer", "auditor", "admin"],
        "GET /v1/snapshots/{id}": ["writer", "restorer", "auditor", "admin"],
        "GET /v1/snapshots/{id}/manifest": ["restorer"],
        "POST /v1/snapshots/{id}/verify": ["restorer", "auditor", "admin"],
        "POST /v1/tenants": admin,
        "GET /v1/tenants": admin,
        "POST /v1/tenants/{tenant}/enrollments": admin,
        "GET /v1/tenants/{tenant}/read-key": ["admin", "restorer"],
        "PUT /v1/tenants/{tenant}/read-key": admin,
        "POST /v1/tenants/{tenant}/read-key/destroyed": admin,
        "GET /v1/tenants/{tenant}/write-material": admin,
        "PUT /v1/tenants/{tenant}/write-material": admin,
        "POST /v1/tenants/{tenant}/shred": admin,
        "PUT /v1/tenants/{tenant}/retention": admin,
        "PUT /v1/tenants/{tenant}/dedup-scope": admin,
        "PUT /v1/tenants/{tenant}/quota": admin,
        // Detection thresholds: an admin's; a host must not tune what judges it.
        "PUT /v1/tenants/{tenant}/detection": admin,
        // Clearing a suspect verdict: an admin's, approved by the quorum (it changes what latest-clean restores).
        "POST /v1/snapshots/{id}/verdict": admin,
        "POST /v1/tenants/{tenant}/gc": admin,
        "POST /v1/admins": admin,
        "POST /v1/admins/{name}/remove": admin,
        "GET /v1/quorum": admin,
        "PUT /v1/quorum": admin,
        "GET /v1/requests": admin,
        "POST /v1/requests/{id}/approve": admin,
        "POST /v1/requests/{id}/reject": admin,
        "POST /v1/copy-targets": admin,
        "GET /v1/copy-targets": admin,
        "POST /v1/copy-targets/{id}/remove": admin,
        "POST /v1/copy-targets/{id}/sync": admin,
        "POST /v1/holds": admin,
        "GET /v1/holds": admin,
        "PUT /v1/tenants/{tenant}/policy": admin,
        "GET /v1/policies": admin,
        "GET /v1/tenants/{tenant}/policy/simulate": admin,
        "POST /v1/tenants/{tenant}/policy/apply": admin,
        // The server's own jobs: a host must not turn off the scrub that would find its tampering.
        "GET /v1/schedule": admin,
        "PUT /v1/schedule": admin,
        "GET /v1/jobs": admin,
        "POST /v1/holds/{id}/release": admin,
        "GET /v1/enrollments": admin,
        "POST /v1/enrollments/{id}/cancel": admin,
        "GET /v1/principals": admin,
        "POST /v1/principals/{id}/revoke": admin,
        "GET /v1/audit": ["admin", "auditor"],
        "GET /v1/audit/verify": ["admin", "auditor"],
        "GET /v1/metrics": ["admin", "auditor"],
        "GET /v1/status": ["admin", "auditor"],
        "PUT /v1/notify/expectations": admin,
        "POST /v1/notify/channels": admin,
        "GET /v1/notify/channels": admin,
        "POST /v1/notify/channels/{id}/remove": admin,
        "POST /v1/notify/channels/{id}/test": admin,
    ]
}()

/// Every caller: no credential ("-") and each role.
private let callers: [(String, Role?)] = [("-", nil)] + Role.allCases.map { ($0.rawValue, $0) }

/// A concrete path for a route's pattern: every `{name}` becomes a plausible value.
private func concretePath(_ pattern: String) -> String {
    pattern.split(separator: "/").map { $0.first == "{" ? "acme0123456789ab" : String($0) }
        .reduce("") { $0 + "/" + $1 }
}

private func key(_ r: Route) -> String { "\(r.method) \(r.path)" }

/// The route table against the hand-written list above, pure: no socket, no catalog.
@Suite struct PolicyTests {
    @Test func theRouteTableIsExactlyTheReviewedList() {
        let served = Set(RedoubtHTTP.routes.map(key))
        #expect(served.subtracting(expectedAccess.keys).isEmpty, "routes not reviewed here")
        #expect(Set(expectedAccess.keys).subtracting(served).isEmpty, "reviewed routes the server does not serve")
        #expect(served.count == RedoubtHTTP.routes.count, "a method and path declared twice")
    }

    @Test func everyRouteAllowsExactlyTheRolesReviewedForIt() {
        for route in RedoubtHTTP.routes {
            let path = concretePath(route.path)
            for (name, role) in callers {
                let want = expectedAccess[key(route)]?.contains(name) ?? false
                // Resolve as a request would: method and concrete path, not the row itself.
                guard let (resolved, parameters) = Policy.route(method: route.method, path: path + "?x=1") else {
                    Issue.record("\(route.method) \(path) resolves to no route")
                    continue
                }
                #expect(resolved.action == route.action && !parameters.isEmpty == route.path.contains("{"))
                #expect(Policy.allows(role, resolved.action) == want, "\(key(route)) as \(name)")
                #expect(resolved.access.allows(role) == want, "\(key(route)) as \(name)")
            }
            #expect(Policy.needsCredential(route.action) == !(expectedAccess[key(route)]?.contains("-") ?? false))
        }
    }

    @Test func eachActionNamesOneRouteAndActionsNoRouteOffersAreAllowedToNoOne() {
        var seen: [Action: String] = [:]
        for route in RedoubtHTTP.routes {
            #expect(seen[route.action] == nil, "\(route.action) names \(seen[route.action] ?? "") and \(key(route))")
            seen[route.action] = key(route)
        }
        for action in Action.allCases where seen[action] == nil {
            for (name, role) in callers {
                #expect(!Policy.allows(role, action), "\(action) has no route, yet \(name) may do it")
            }
        }
    }

    @Test func methodsAndPathsTheTableDoesNotDeclareResolveToNothing() {
        let methods: [HTTPRequest.Method] = [.get, .put, .post, .delete, .patch, .head, .options]
        for route in RedoubtHTTP.routes {
            let path = concretePath(route.path)
            for m in methods where !RedoubtHTTP.routes.contains(where: { $0.method == m && $0.match(path) != nil }) {
                #expect(Policy.route(method: m, path: path) == nil, "\(m) \(path)")
            }
            #expect(Policy.route(method: route.method, path: path + "/x/delete") == nil)
        }
        #expect(Policy.route(method: .get, path: "/v2/health") == nil)
        #expect(Policy.route(method: .get, path: "/health") == nil)
    }

    @Test func auditNamesAreKebabCaseAndStoredApprovalNamesAreKept() {
        for action in Action.allCases {
            #expect(action.rawValue.allSatisfy { $0.isLowercase || $0 == "-" }, "\(action.rawValue)")
            #expect("\(action)" == action.rawValue)
        }
        // Names filed approval requests carry in the catalog (§4.2): renaming one would
        // orphan requests already filed.
        for stored in ["shred-tenant", "lower-retention", "set-quorum", "remove-admin", "add-admin", "rotate-read-key",
                       "release-hold", "revoke-writer", "remove-copy-target", "accept-unenforced"] {
            #expect(Action(rawValue: stored) != nil, "\(stored)")
        }
    }
}

/// The same table over a real TLS server: refusals really are 403 (401 without a
/// credential), audited under the route's action name.
@Suite(.serialized) struct PolicySocketTests {
    @Test func everyRoleIsRefusedEveryRouteItMayNotCall() async throws {
        let server = try await TestServer.start()
        try await server.createTenant("acme", keys: try TenantKeys.generate())
        var clients: [String: APIClient] = ["admin": server.admin]
        for role in ["writer", "restorer", "auditor"] {
            clients[role] = try await server.enroll(tenant: "acme", role: role, name: "\(role)1").1
        }
        for client in clients.values { #expect(try await client.send(.GET, "/v1/health").status == 200) }
        var refusals = 0
        for route in RedoubtHTTP.routes {
            let refusedCallers = clients.sorted { $0.key < $1.key }
                .filter { !(expectedAccess[key(route)]?.contains($0.key) ?? false) }
            for (name, client) in refusedCallers {
                let path = concretePath(route.path)
                do {
                    let method = HTTPMethod(rawValue: route.method.rawValue)
                    let r = try await client.send(method, path, body: Array("{}".utf8))
                    Issue.record("\(route.method) \(path) answered \(r.status) to a \(name)")
                } catch let e as APIError {
                    #expect(e.status == 403 && e.code == "E_FORBIDDEN", "\(route.method) \(path) as \(name): \(e)")
                    refusals += 1
                }
            }
        }
        #expect(refusals > 100)
        let denied = try await server.service.catalog.auditRecords().filter { $0.outcome == "denied" }
        for route in RedoubtHTTP.routes where !(expectedAccess[key(route)]?.contains("writer") ?? false) {
            #expect(denied.contains { $0.action == route.action.rawValue && $0.actor.hasPrefix("writer:") },
                    "no denied record named \(route.action.rawValue) for the writer")
        }
        // A method the API does not offer on a path it does: refused alike, with a JSON
        // error body (which `APIError` decoded) and an audit record.
        let offPaths = [("DELETE", "/v1/health"), ("PATCH", "/v1/packs/00"), ("TRACE", "/v1/enroll"),
                        ("OPTIONS", "/v1/audit")]
        for (m, path) in offPaths {
            do {
                let r = try await clients["writer"]!.send(HTTPMethod(rawValue: m), path)
                Issue.record("\(m) \(path) answered \(r.status)")
            } catch let e as APIError {
                #expect(e.status == 403 && e.code == "E_FORBIDDEN", "\(m) \(path): \(e)")
            }
        }
        let head = try? await clients["writer"]!.send(.HEAD, "/v1/audit")
        #expect(head == nil, "HEAD /v1/audit was answered")
        #expect(try await server.service.catalog.auditRecords().contains {
            $0.action == "unknown-route" && $0.object == "DELETE /v1/health" && $0.outcome == "denied"
        })
        for client in clients.values where client !== server.admin { await client.shutdown() }
        await server.stop()
    }
}

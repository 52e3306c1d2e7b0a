import Foundation
import NIOHTTP1
import RedoubtCore

// Retention policies (docs/PROTOCOL.md §4.7), admin only.
extension APIClient {
    public func setPolicy(tenant: String, _ req: Wire.SetPolicyRequest) async throws -> [Wire.PolicyInfo] {
        try await json([Wire.PolicyInfo].self, .PUT, "/v1/tenants/\(tenant)/policy", body: req)
    }

    public func policies(tenant: String? = nil) async throws -> [Wire.PolicyInfo] {
        try await json([Wire.PolicyInfo].self, .GET, "/v1/policies" + (tenant.map { "?tenant=\($0)" } ?? ""))
    }

    public func simulatePolicy(tenant: String) async throws -> Wire.PolicySimulation {
        try await json(Wire.PolicySimulation.self, .GET, "/v1/tenants/\(tenant)/policy/simulate")
    }

    public func applyPolicy(tenant: String) async throws -> Wire.PolicySimulation {
        try await json(Wire.PolicySimulation.self, .POST, "/v1/tenants/\(tenant)/policy/apply")
    }
}

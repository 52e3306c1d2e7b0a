import Hummingbird
import Logging

/// Who may call a route.
public enum Access: Sendable, Equatable {
    /// No credential needed: the route authorises otherwise (enrollment by its one-time
    /// token) or tells nothing (health).
    case anyone
    /// An enrolled, unrevoked principal with one of these roles.
    case roles(Set<Role>)

    /// Whether a caller with `role` (nil: no credential) passes.
    public func allows(_ role: Role?) -> Bool {
        switch self {
        case .anyone: return true
        case .roles(let allowed): return role.map(allowed.contains) ?? false
        }
    }
}

/// One endpoint of the v1 API, declared once: the router registers `handler` at
/// `method path`, the middleware authorises it by `access`, and `action` names it in the
/// audit log and in approvals. `path` is an OpenAPI-style pattern (`/v1/packs/{id}`),
/// which is also how docs/openapi.yaml names it.
public struct Route: Sendable {
    public typealias Handler = @Sendable (RepositoryService, Logger, Request, RedoubtRequestContext) async -> Response

    public let method: HTTPRequest.Method
    public let path: String
    public let action: Action
    public let access: Access
    let handler: Handler

    init(_ method: HTTPRequest.Method, _ path: String, _ action: Action, _ access: Access, handler: @escaping Handler) {
        self.method = method
        self.path = path
        self.action = action
        self.access = access
        self.handler = handler
    }

    /// The path's parameters when `path` (without query) fits this route's pattern, else nil.
    /// Segments are compared as the router compares them: exact text, `{name}` any one segment.
    public func match(_ path: String) -> [String: String]? {
        let want = self.path.split(separator: "/")
        let raw = path.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        let got = raw.split(separator: "/")
        guard want.count == got.count else { return nil }
        var parameters: [String: String] = [:]
        for (w, g) in zip(want, got) {
            if w.first == "{" && w.last == "}" {
                parameters[String(w.dropFirst().dropLast())] = String(g)
            } else if w != g {
                return nil
            }
        }
        return parameters
    }
}

/// Shorthands for the route table.
extension Access {
    static let admin = Access.roles([.admin])
    static let writer = Access.roles([.writer])
    static let restorer = Access.roles([.restorer])
    static let anyRole = Access.roles(Set(Role.allCases))
}

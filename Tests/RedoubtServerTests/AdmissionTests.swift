import Testing
import RedoubtCore
@testable import RedoubtServer

/// The edge's decision before any handler runs, without a socket: who is refused with
/// which status, and which action the audit log names.
@Suite struct AdmissionTests {
    func status(_ a: AuthMiddleware.Admission) -> Int? {
        if case .refuse(_, let e) = a { return e.status }
        return nil
    }

    @Test func unknownRoutesAnonymousCallersAndWrongRolesAreRefused() throws {
        let route = try #require(RedoubtHTTP.routes.first { if case .roles = $0.access { true } else { false } })
        guard case .roles(let allowed) = route.access else { return }
        let allowedRole = try #require(allowed.first)
        let other = Role.allCases.first { !allowed.contains($0) }

        // No route: 401 without a principal, 403 with one; audited as an unknown route.
        guard case .refuse(let a1, let e1) = AuthMiddleware.admission(route: nil, role: nil, certificate: nil,
            what: "DELETE /x")
        else { Issue.record("an unknown route was admitted"); return }
        #expect(a1 == .unknownRoute && e1.status == 401)
        let e2 = AuthMiddleware.admission(route: nil, role: allowedRole, certificate: "ab", what: "DELETE /x")
        #expect(status(e2) == 403)

        // A role-only route: no principal is 401, and a revoked certificate is told so.
        let anon = AuthMiddleware.admission(route: route, role: nil, certificate: nil, what: "w")
        #expect(status(anon) == 401)
        if case .refuse(let action, let e) = AuthMiddleware.admission(route: route, role: nil,
            certificate: "0123456789abcdef99", what: "w") {
            #expect(action == route.action && e.message.contains("0123456789abcdef") && e.message.contains("revoked"))
        } else { Issue.record("a revoked certificate was admitted") }
        if let other {
            #expect(status(AuthMiddleware.admission(route: route, role: other, certificate: "c", what: "w")) == 403)
        }
        guard case .admit(let action) = AuthMiddleware.admission(route: route, role: allowedRole, certificate: "c",
            what: "w") else {
            Issue.record("an allowed role was refused"); return
        }
        #expect(action == route.action)

        // A route open to anyone admits a caller without a certificate.
        if let open = RedoubtHTTP.routes.first(where: { $0.access == .anyone }) {
            guard case .admit = AuthMiddleware.admission(route: open, role: nil, certificate: nil, what: "w") else {
                Issue.record("an open route refused an anonymous caller"); return
            }
        }
    }
}

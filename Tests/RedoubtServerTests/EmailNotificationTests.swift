import Foundation
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer
import Testing

/// A real SMTP server (aiosmtpd, from scripts/peers) in a process of the test's own:
/// STARTTLS required, AUTH required inside TLS, each message written to a file.
final class SMTPReceiver: @unchecked Sendable {
    let process: Process
    let port: Int
    let dir: URL

    static let script = """
        import os, ssl, sys, json
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword
        port, cert, key, out, user, pw = sys.argv[1:7]
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        class Handler:
            async def handle_DATA(self, server, session, envelope):
                n = len([f for f in os.listdir(out) if f.endswith('.json')])
                meta = {'from': envelope.mail_from, 'to': envelope.rcpt_tos, 'tls': session.ssl is not None,
                        'login': session.auth_data.login.decode() if session.auth_data else ''}
                open(os.path.join(out, '%04d.eml' % n), 'wb').write(envelope.original_content)
                open(os.path.join(out, '.tmp'), 'w').write(json.dumps(meta))
                os.rename(os.path.join(out, '.tmp'), os.path.join(out, '%04d.json' % n))
                return '250 OK'
        def auth(server, session, envelope, mechanism, data):
            ok = isinstance(data, LoginPassword) and data.login == user.encode() and data.password == pw.encode()
            return AuthResult(success=ok, auth_data=data)
        c = Controller(Handler(), hostname='127.0.0.1', port=int(port), tls_context=ctx, require_starttls=True,
                       authenticator=auth, auth_required=True, auth_require_tls=True)
        c.start()
        print('ready', flush=True)
        sys.stdin.read()
        c.stop()
        """

    static func start(home: ServerHome, dir: URL, user: String, password: String) async throws -> SMTPReceiver? {
        guard let env = peerEnvironment("REDOUBT_TEST_AIOSMTPD_PYTHON"),
              let python = env["REDOUBT_TEST_AIOSMTPD_PYTHON"] else { return nil }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let script = dir.appendingPathComponent("smtpd.py")
        try Data(Self.script.utf8).write(to: script)
        let port = try freeLoopbackPort()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        let tls = home.tlsDir
        p.arguments = [script.path, String(port), tls.appendingPathComponent("server.pem").path,
                       tls.appendingPathComponent("server.key").path, dir.path, user, password]
        let out = Pipe(), input = Pipe()
        p.standardOutput = out
        p.standardInput = input
        try p.run()
        // Ready when it says so (bounded: a server that never starts fails the test).
        let ready = await finishes(within: 60) { _ = out.fileHandleForReading.availableData }
        #expect(ready, "aiosmtpd did not start")
        return SMTPReceiver(process: p, port: port, dir: dir)
    }

    private init(process: Process, port: Int, dir: URL) {
        self.process = process
        self.port = port
        self.dir = dir
    }

    /// Message `n` and its envelope, waiting for the delivery (bounded).
    func message(_ n: Int) async throws -> (mail: String, meta: [String: Any])? {
        let meta = dir.appendingPathComponent(String(format: "%04d.json", n))
        for _ in 0..<1200 {
            if let m = FileManager.default.contents(atPath: meta.path) {
                let mail = try String(contentsOf: dir.appendingPathComponent(String(format: "%04d.eml", n)),
                                      encoding: .utf8)
                return (mail, (try JSONSerialization.jsonObject(with: m) as? [String: Any]) ?? [:])
            }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        Issue.record("no mail \(n) within 60 s")
        return nil
    }

    func stop() { process.terminate() }
}

@Suite(.serialized) struct EmailNotificationTests {
    @Test func aHoldPlacedArrivesAsOneMailOverSTARTTLSWithAuthNamingTenantAndCommand() async throws {
        let w = try await MetricsWorld.start()
        guard let smtp = try await SMTPReceiver.start(home: w.server.home, dir: w.server.dir.appendingPathComponent(
            "smtp"), user: "redoubt", password: "mail secret") else { await w.stop(); return }
        let creds = w.server.dir.appendingPathComponent("smtp.credentials")
        try Data("redoubt\nmail secret\n".utf8).write(to: creds)
        _ = try await w.server.admin.addNotifyChannel(.init(
            kind: "email", caFile: w.server.home.tlsDir.appendingPathComponent("ca.pem").path,
            smtp: "127.0.0.1:\(smtp.port)", from: "redoubt@example.org", to: ["ops@example.org", "sec@example.org"],
            starttls: true, credentialsFile: creds.path, events: ["hold-placed"]))
        let delivery = Task { await w.server.service.notifier.run() }
        let hold = try await w.server.admin.placeHold(.init(snapshot: nil, tenant: "acme", reason: "case 7"))
        for _ in 0..<3 { try await w.server.service.evaluateNotifications() }

        let got = try await smtp.message(0)
        let mail = got?.mail ?? ""
        #expect(got?.meta["tls"] as? Bool == true)
        #expect(got?.meta["login"] as? String == "redoubt")
        #expect(got?.meta["from"] as? String == "redoubt@example.org")
        #expect(got?.meta["to"] as? [String] == ["ops@example.org", "sec@example.org"])
        let split = mail.range(of: "\r\n\r\n")
        let head = split.map { String(mail[..<$0.lowerBound]) } ?? ""
        let body = split.map { String(mail[$0.upperBound...]) } ?? ""
        #expect(head.contains("Subject: [Redoubt] EVENT hold-placed acme/acme"))
        #expect(head.contains("From: <redoubt@example.org>"))
        #expect(body.contains("legal hold \(hold.id) placed on tenant acme"))
        #expect(body.contains("Tenant:   acme"))
        #expect(body.contains("Show more: redoubt admin hold list"))
        // One event, one mail: evaluating again sends nothing more.
        for _ in 0..<3 { try await w.server.service.evaluateNotifications() }
        try await w.server.admin.testNotifyChannel(id: try await w.server.admin.notifyChannels()[0].id)
        let next = try await smtp.message(1)
        #expect(next?.mail.contains("Subject: [Redoubt] EVENT test -/-") == true)
        delivery.cancel()
        smtp.stop()
        await w.stop()
    }

    @Test func mailToAnotherMachineNeedsSTARTTLSAndAPasswordIsNeverSentInTheClear() async throws {
        let server = try await TestServer.start(inMemory: true)
        await refused("E_BAD_REQUEST", "plain SMTP to another machine") {
            _ = try await server.admin.addNotifyChannel(.init(kind: "email", smtp: "mail.example.org:25",
                                                              from: "a@example.org", to: ["b@example.org"]))
        }
        await refused("E_BAD_REQUEST", "credentials without STARTTLS") {
            _ = try await server.admin.addNotifyChannel(.init(kind: "email", smtp: "127.0.0.1:25",
                                                              from: "a@example.org", to: ["b@example.org"],
                                                              credentialsFile: "/etc/redoubt/smtp"))
        }
        await refused("E_BAD_REQUEST", "a header injection in an address") {
            _ = try await server.admin.addNotifyChannel(.init(kind: "email", smtp: "127.0.0.1:25",
                                                              from: "a@example.org\r\nBcc: x@evil.example",
                                                              to: ["b@example.org"]))
        }
        await server.stop()
    }
}

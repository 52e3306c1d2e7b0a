import Foundation
import Testing

/// contrib/redoubt-server.service must parse with systemd's own checker and keep its
/// least-privilege settings (README "Hardened deployment").
@Suite struct ServiceUnitTests {
    static let unit: URL = {
        var dir = URL(fileURLWithPath: #filePath)
        while dir.path != "/"
            && !FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) {
            dir.deleteLastPathComponent()
        }
        return dir.appendingPathComponent("contrib/redoubt-server.service")
    }()

    @Test func theUnitKeepsOnlyTheImmutableCapabilityAndTheSandbox() throws {
        let text = try String(contentsOf: Self.unit, encoding: .utf8)
        let lines = Set(text.split(separator: "\n").map(String.init))
        for required in ["CapabilityBoundingSet=CAP_LINUX_IMMUTABLE", "AmbientCapabilities=CAP_LINUX_IMMUTABLE",
            "NoNewPrivileges=yes",
                         "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "ReadWritePaths=/var/lib/redoubt",
                             "User=redoubt"] {
            #expect(lines.contains(required), "missing \(required)")
        }
        #expect(!text.contains("User=root"))
        #expect(text.split(separator: "\n").filter { $0.hasPrefix("ReadWritePaths=") }.count == 1)
    }

    @Test func systemdAnalyzeVerifyAcceptsTheUnit() throws {
        let tool = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
        guard let tool else { print("skipping: systemd-analyze is not installed"); return }
        // The binary is not installed here, so point ExecStart at an executable that exists.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-unit-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let text = try String(contentsOf: Self.unit, encoding: .utf8)
            .replacingOccurrences(of: "ExecStart=/usr/local/bin/redoubt", with: "ExecStart=/bin/true")
        let copy = dir.appendingPathComponent("redoubt-server.service")
        try text.write(to: copy, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("out")
        let rc = system("'\(tool)' verify '\(copy.path)' >'\(out.path)' 2>&1")
        let said = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
        #expect(rc == 0, "systemd-analyze verify failed: \(said)")
        #expect(said.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "systemd-analyze verify warned: \(said)")
    }
}

/// contrib/redoubt-verify.service and .timer: the daily rolling deep verify, sandboxed,
/// with no capability, a run missed while the host was off made up at boot.
@Suite struct VerifyTimerUnitTests {
    static func contrib(_ name: String) -> URL {
        ServiceUnitTests.unit.deletingLastPathComponent().appendingPathComponent(name)
    }

    @Test func theVerifyUnitsAreSandboxedAndPersistent() throws {
        let service = Set(try String(contentsOf: Self.contrib("redoubt-verify.service"), encoding: .utf8)
            .split(separator: "\n").map(String.init))
        for required in ["Type=oneshot", "User=redoubt-verify", "CapabilityBoundingSet=", "NoNewPrivileges=yes",
                         "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes"] {
            #expect(service.contains(required), "redoubt-verify.service is missing \(required)")
        }
        #expect(service.contains { $0.hasPrefix("ExecStart=") && $0.contains("verify --deep --rolling") })
        #expect(!service.contains { $0.hasPrefix("ReadWritePaths=") }, "a verify writes nothing locally")
        let timer = Set(try String(contentsOf: Self.contrib("redoubt-verify.timer"), encoding: .utf8)
            .split(separator: "\n").map(String.init))
        #expect(timer.contains("Persistent=true") && timer.contains("OnCalendar=daily"))
        #expect(timer.contains("Unit=redoubt-verify.service"))
    }

    @Test func systemdAnalyzeVerifyAcceptsTheVerifyUnits() throws {
        let tool = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
        guard let tool else { print("skipping: systemd-analyze is not installed"); return }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-units-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        // The binary is not installed here, so point ExecStart at an executable that exists.
        let service = try String(contentsOf: Self.contrib("redoubt-verify.service"), encoding: .utf8)
            .replacingOccurrences(of: "ExecStart=/usr/local/bin/redoubt", with: "ExecStart=/bin/true")
        try service.write(to: dir.appendingPathComponent("redoubt-verify.service"), atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(at: Self.contrib("redoubt-verify.timer"),
                                         to: dir.appendingPathComponent("redoubt-verify.timer"))
        let out = dir.appendingPathComponent("out")
        let units = "redoubt-verify.service redoubt-verify.timer"
        let rc = system("cd '\(dir.path)' && '\(tool)' verify \(units) >'\(out.path)' 2>&1")
        let said = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
        #expect(rc == 0, "systemd-analyze verify failed: \(said)")
        #expect(said.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "systemd-analyze verify warned: \(said)")
    }
}

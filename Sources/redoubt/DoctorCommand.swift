import ArgumentParser
import Foundation
import RedoubtServer

/// `redoubt doctor`: the repository host's hardening checklist (README "Doctor").
struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
            abstract: "Check that this repository host is hardened: pass, warn or fail, with the fix for each.",
        discussion: "Exit status: 0 all checks pass, 8 warnings only, 1 any check failed. Run it as the service runs "
            + "(same user and capabilities).")

    @Option(name: .long, help: "The server data directory.") var data = "/var/lib/redoubt"
    @Flag(name: .long, help: "Print JSON: an array of {id, status, summary, fix}.") var json = false
    @Option(name: .long,
        help: """
            How old a tenant's newest snapshot may get without a copy off this host (e.g. 1d).
            """) var maxCopyAge = "1d"
    @Option(name: .long, help: .hidden) var root = "/"

    func run() async throws {
        try await RedoubtCLI.run {
            let files = HostFiles(root: root)
            // timedatectl reads the live host, so never under a fixture root.
            let doctor = Doctor(dataDir: data, files: files, maxCopyAge: try parseDuration(maxCopyAge), now: Date(),
                                timedatectl: files.isHostRoot ? Self.timedatectlShow() : nil)
            let checks = await doctor.run()
            if json { try printJSON(checks) } else {
                let width = checks.map(\.id.count).max() ?? 0
                for c in checks {
                    let tag = c.status == .pass ? "pass" : c.status == .warn ? "WARN" : "FAIL"
                    // The summaries quote what hosts reported (their OS names): shown escaped.
                    print("\(tag)  \(c.id.padding(toLength: width, withPad: " ", startingAt: 0))  \(shown(c.summary))")
                    if !c.fix.isEmpty { print("      \(String(repeating: " ", count: width))  fix: \(shown(c.fix))") }
                }
            }
            let worst = checks.map(\.status).max() ?? .pass
            return worst == .fail ? .failure : worst == .warn ? .partial : .ok
        }
    }

    /// `timedatectl show`, or nil where it is not installed or cannot reach systemd.
    static func timedatectlShow() -> String? {
        guard let bin = ["/usr/bin/timedatectl",
            "/bin/timedatectl"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }),
              let f = popen("\(bin) show 2>/dev/null", "r") else { return nil }
        var out = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&buf, 1, buf.count, f)
            if n <= 0 { break }
            out += buf[0..<n]
        }
        let status = pclose(f)
        return status == 0 && !out.isEmpty ? String(decoding: out, as: UTF8.self) : nil
    }
}

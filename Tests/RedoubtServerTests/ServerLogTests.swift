import Foundation
import Glibc
import Testing

/// `server run --log-format json|logfmt`: the operator's log on stderr names the start,
/// low disk space, a failed request with its request ID (a pack that does not fit on the
/// disk), and the stop.
@Suite(.serialized) struct ServerLogTests {
    /// Starts `server run` with `args`, stderr into `log`: its pid.
    static func start(_ e: CrashTests.Env, _ args: [String], log: String) throws -> pid_t {
        let pidFile = e.dir.appendingPathComponent("log-server.pid").path
        let cmd = ([CrashTests.binary.path, "server", "run", "--data", e.dir.appendingPathComponent("server").path]
                   + args).map { "'\($0)'" }.joined(separator: " ")
            + " > /dev/null 2> '\(log)' & echo $! > '\(pidFile)'"
        _ = system(cmd)
        let pid = pid_t((try String(contentsOfFile: pidFile, encoding: .utf8))
            .trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        // Ready when the start line is there (no clock decides: the loop ends on the line).
        for _ in 0..<600 where !((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
            .contains("server started") {
            usleep(50_000)
        }
        return pid
    }

    /// Sends SIGTERM and waits until the process is gone (it is not our child: polled).
    static func stop(_ pid: pid_t) {
        guard pid > 0 else { return }
        kill(pid, SIGTERM)
        for _ in 0..<600 where kill(pid, 0) == 0 { usleep(50_000) }
    }

    static func lines(_ log: String) -> [[String: Any]] {
        ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    @Test func jsonLogNamesStartDiskSpaceFailedRequestsAndStop() async throws {
        let s = try await HostCLITests.Setup()
        let e = s.e
        // The Setup's own server: stopped, and started again with the log on.
        Self.stop(e.serverPID)
        let log = e.dir.appendingPathComponent("server-log.json").path
        let pid = try Self.start(e, ["--log-format", "json", "--disk-warning-free", "1000T"], log: log)
        e.serverPID = pid
        // The warning follows the start line: read until it is there (or a minute passes).
        var entries = Self.lines(log)
        for _ in 0..<1200 where !entries.contains(where: { $0["msg"] as? String == "low disk space" }) {
            usleep(50_000)
            entries = Self.lines(log)
        }
        let started = try #require(entries.first { $0["msg"] as? String == "server started" }, "\(entries)")
        #expect(started["level"] as? String == "info" && (started["listen"] as? String)?.contains(":") == true)
        let low = entries.first { $0["msg"] as? String == "low disk space" }
        #expect(low?["level"] as? String == "warning" && low?["threshold_bytes"] as? String == "\(1000 << 40)",
                "\(entries)")

        // The tenant's packs on a 64 KiB filesystem: a pack upload fails on the server.
        let packs = e.dir.appendingPathComponent("server/store/t/crash/packs").path
        try FileManager.default.createDirectory(atPath: packs, withIntermediateDirectories: true)
        if geteuid() == 0, system("mount -t tmpfs -o size=64k tmpfs '\(packs)' 2>/dev/null") == 0 {
            defer { _ = system("umount '\(packs)'") }
            let corpus = e.dir.appendingPathComponent("corpus")
            try FileManager.default.createDirectory(at: corpus, withIntermediateDirectories: true)
            var bytes = [UInt8](repeating: 0, count: 1 << 20)
            for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) }
            try Data(bytes).write(to: corpus.appendingPathComponent("big.bin"))
            let r = try await e.run(["backup", corpus.path, "--config", s.host], check: false)
            #expect(r.status != 0, "a backup onto a full disk succeeded")
            entries = Self.lines(log)
            let failed = entries.first { $0["msg"] as? String == "request failed" }
            #expect(failed?["level"] as? String == "error"
                    && (failed?["status"] as? String)?.hasPrefix("5") == true
                    && (failed?["hb.request.id"] as? String)?.isEmpty == false, "\(entries)")
        } else {
            Issue.record("cannot mount a small tmpfs (needs root in a private mount namespace); not tested")
        }

        Self.stop(pid)
        e.serverPID = 0
        entries = Self.lines(log)
        #expect(entries.last?["msg"] as? String == "server stopped", "\(entries)")
        // Every line is one JSON object.
        let raw = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        #expect(raw.count == entries.count, "\(raw)")
    }
}

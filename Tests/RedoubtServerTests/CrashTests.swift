import Foundation
import Testing
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer

/// The real binary, killed with SIGKILL mid-backup (client and server), must lose no
/// committed snapshot, leave the repository consistent, and let the next backup finish
/// and reuse what was uploaded.
@Suite(.serialized) struct CrashTests {
    static let binary: URL = {
        var dir = URL(fileURLWithPath: #filePath)
        while dir.path != "/"
            && !FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) {
            dir.deleteLastPathComponent()
        }
        for config in ["debug", "release"] {
            let b = dir.appendingPathComponent(".build/\(config)/redoubt")
            if FileManager.default.isExecutableFile(atPath: b.path) { return b }
        }
        return dir.appendingPathComponent(".build/debug/redoubt")
    }()

    /// Runs the binary through /bin/sh (Foundation's Process can hang waiting on
    /// children here); output goes to files in the test directory.
    final class Env {
        let dir: URL
        let port: Int
        var serverPID: pid_t = 0

        init() throws {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-crash-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            port = try freeLoopbackPort()
            setenv("REDOUBT_PASSPHRASE", "crash-test", 1)
        }

        func q(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

        @discardableResult
        func run(_ args: [String], check: Bool = true) async throws -> (status: Int32, out: String, err: String) {
            let out = dir.appendingPathComponent("out.txt").path, err = dir.appendingPathComponent("err.txt").path
            let cmd = ([CrashTests.binary.path] + args).map(q).joined(separator: " ") + " > \(q(out)) 2> \(q(err))"
            let raw = await runShell(cmd)
            let status = (raw >> 8) & 0xff
            let r = (Int32(status), (try? String(contentsOfFile: out, encoding: .utf8)) ?? "",
                (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
            if check && r.0 != 0 {
                throw APIError(status: 0, code: "E_TEST",
                    message: "redoubt \(args.joined(separator: " ")) exited \(r.0): \(r.2)")
            }
            return r
        }

        /// Starts a command in the background and returns its PID; its output goes to `log`.
        func background(_ args: [String], log: String = "/dev/null") -> pid_t {
            let pidFile = dir.appendingPathComponent("pid.txt").path
            let cmd = ([CrashTests.binary.path] + args).map(q).joined(separator: " ")
                + " > \(q(log)) 2>&1 & echo $! > \(q(pidFile))"
            _ = system(cmd)
            return pid_t((try? String(contentsOfFile: pidFile,
                encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
        }

        func startServer() throws {
            let log = dir.appendingPathComponent("server.log").path
            serverPID = background(["server", "run", "--data", dir.appendingPathComponent("server").path], log: log)
            func failed(_ why: String) -> APIError {
                let said = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                return APIError(status: 0, code: "E_TEST", message: "server \(why): \(said.suffix(2000))")
            }
            // Ready when the port accepts connections.
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline {
                if serverPID > 0 && kill(serverPID, 0) != 0 { throw failed("exited before accepting on port \(port)") }
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                var addr = sockaddr_in()
                addr.sin_family = sa_family_t(AF_INET)
                addr.sin_port = in_port_t(UInt16(port).bigEndian)
                addr.sin_addr.s_addr = inet_addr("127.0.0.1")
                let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self,
                    capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
                close(fd)
                if ok { return }
                usleep(100_000)
            }
            throw failed("did not accept on port \(port) within 30 s")
        }

        func killServer() {
            if serverPID > 0 { kill(serverPID, SIGKILL) }
            // Wait until the port is free again.
            usleep(300_000)
            serverPID = 0
        }

        /// Starts a backup and SIGKILLs it after `delay` seconds (if still running).
        func killedBackup(_ path: String, after delay: Double, alsoKillServer: Bool = false) {
            let pid = background(["backup", path, "--config", dir.appendingPathComponent("host").path])
            usleep(useconds_t(delay * 1_000_000))
            if alsoKillServer { killServer() }
            kill(pid, SIGKILL)
            usleep(100_000)
        }

        /// Packs in the server's store now.
        func storedPacks() -> Int {
            let packs = dir.appendingPathComponent("server/store/t/crash/packs").path
            return (FileManager.default.enumerator(atPath: packs)?.allObjects as? [String])?.filter {
                $0.split(separator: "/").last?.count == 64
            }.count ?? 0
        }

        /// Kills a backup as soon as it has stored a pack (at most 60 s): however slow the
        /// machine, the next backup then has something to reuse.
        func killedBackupAfterAPackLands(_ path: String) {
            let before = storedPacks()
            let pid = background(["backup", path, "--config", dir.appendingPathComponent("host").path])
            for _ in 0..<1200 where storedPacks() <= before { usleep(50_000) }
            kill(pid, SIGKILL)
            usleep(100_000)
        }

        func cleanup() {
            killServer()
            _ = system("chattr -R -i \(q(dir.path)) 2>/dev/null")
            try? FileManager.default.removeItem(at: dir)
        }
    }

    @Test func killingClientOrServerMidBackupLosesNothingCommitted() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary.path),
            "build the redoubt executable first (swift build)")
        let e = try Env()
        defer { e.cleanup() }
        let data = e.dir.appendingPathComponent("server").path
        try await e.run(["server", "init", "--data", data, "--listen", "127.0.0.1:\(e.port)"])
        try e.startServer()
        let admin = e.dir.appendingPathComponent("server/admin.credential").path
        try await e.run(["admin", "--credential", admin, "tenant", "create", "crash"])
        let hostToken = try await e.run(["admin", "--credential", admin, "host", "add", "crash",
            "h1"]).out.trimmingCharacters(in: .whitespacesAndNewlines)
        try await e.run(["enroll", hostToken, "--config", e.dir.appendingPathComponent("host").path])
        let restorerToken = try await e.run(["admin", "--credential", admin, "restorer", "add", "crash",
            "r1"]).out.trimmingCharacters(in: .whitespacesAndNewlines)
        try await e.run(["enroll", restorerToken, "--config", e.dir.appendingPathComponent("restorer").path])

        // A corpus of several random files, so a backup spans many packs and seconds.
        let corpus = e.dir.appendingPathComponent("corpus")
        try FileManager.default.createDirectory(at: corpus, withIntermediateDirectories: true)
        var rng = SystemRandomNumberGenerator()
        for i in 0..<12 {
            try randomData(6 << 20, &rng).write(to: corpus.appendingPathComponent("f\(i).bin"))
        }
        // One committed snapshot first: it must survive everything below.
        try await e.run(["backup", corpus.path, "--config", e.dir.appendingPathComponent("host").path])
        let committed = try await e.run(["snapshots", "--json", "--config",
            e.dir.appendingPathComponent("host").path]).out
        #expect(committed.contains("\"id\""))
        // Change the corpus so the next backups have work to do, then kill them.
        for i in 0..<12 {
            try randomData(6 << 20, &rng).write(to: corpus.appendingPathComponent("g\(i).bin"))
        }
        for delay in [0.3, 0.8, 1.5] { e.killedBackup(corpus.path, after: delay) }
        e.killedBackupAfterAPackLands(corpus.path)
        e.killedBackup(corpus.path, after: 1.0, alsoKillServer: true)
        try e.startServer()

        // The next backup succeeds and reuses what the killed ones uploaded.
        let summary = try await e.run(["backup", corpus.path, "--json", "--config",
            e.dir.appendingPathComponent("host").path]).out
        let s = try JSONDecoder().decode([String: AnyCodable].self, from: Data(summary.utf8))
        let uploaded = s["bytesUploaded"]?.int ?? -1
        #expect(uploaded >= 0 && uploaded < 72 << 20,
            "uploaded \(uploaded) bytes: nothing of the killed runs was reused")

        // Every snapshot verifies and the first one is still there.
        let list = try await e.run(["snapshots", "--json", "--config",
            e.dir.appendingPathComponent("restorer").path]).out
        let snaps = try JSONDecoder().decode([Wire.SnapshotInfo].self, from: Data(list.utf8), dates: true)
        #expect(snaps.count >= 2)
        for snap in snaps {
            let v = try await e.run(["verify", snap.id, "--config", e.dir.appendingPathComponent("restorer").path],
                check: false)
            #expect(v.status == 0, "verify \(snap.id): \(v.out) \(v.err)")
        }
        // And the newest restores bit for bit.
        let target = e.dir.appendingPathComponent("restored")
        try await e.run(["restore", snaps.last!.id, "--target", target.path, "--config",
            e.dir.appendingPathComponent("restorer").path])
        for name in try FileManager.default.contentsOfDirectory(atPath: corpus.path) {
            #expect(FileManager.default.contents(atPath: corpus.appendingPathComponent(name).path)
                    == FileManager.default.contents(atPath: target.path + corpus.path + "/" + name),
                        "\(name) differs")
        }
    }
}

/// Just enough JSON to read numbers out of a summary.
struct AnyCodable: Decodable {
    let int: Int?
    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        int = try? c.decode(Int.self)
    }
}

extension JSONDecoder {
    func decode<T: Decodable>(_ t: T.Type, from data: Data, dates: Bool) throws -> T {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return try d.decode(t, from: data)
    }
}

/// Random bytes, 8 at a time (fast enough in debug builds).
func randomData(_ n: Int, _ rng: inout SystemRandomNumberGenerator) -> Data {
    var d = Data(count: n)
    d.withUnsafeMutableBytes { b in
        let words = b.bindMemory(to: UInt64.self)
        for i in 0..<words.count { words[i] = rng.next() }
    }
    return d
}

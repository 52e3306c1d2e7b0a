import Foundation
import Testing
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer

/// Backup jobs and the options sysadmins bring from restic, through the real binary against
/// a real server (README "Jobs").
@Suite(.serialized) struct JobsCLITests {
    typealias Setup = HostCLITests.Setup

    /// A backup's `--json` summary, as numbers.
    struct Summary: Decodable {
        let snapshot: String
        let filesNew: Int
        let filesChanged: Int
        let filesUnchanged: Int
        let bytesRead: Int
        let warnings: [String]
    }

    static func backup(_ s: Setup, _ args: [String]) async throws -> Summary {
        let r = try await s.e.run(["backup", "--json", "--config", s.host] + args, check: false)
        try #require(r.status == 0, "backup \(args): \(r.status) \(r.err) \(r.out)")
        return try JSONDecoder().decode(Summary.self, from: Data(r.out.utf8))
    }

    static func write(_ path: String, _ text: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true)
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    /// Two jobs on one host (`/etc`-like hourly, `/srv`-like nightly), and the same two sets
    /// of paths without a jobs file: each run after the first reads only what changed in
    /// its own paths, because each keeps its own metadata cache.
    @Test func eachJobAndEachSetOfPathsKeepsItsOwnCacheSoReRunsReadOnlyChanges() async throws {
        let s = try await Setup()
        let etc = s.e.dir.appendingPathComponent("etc").path, srv = s.e.dir.appendingPathComponent("srv").path
        try s.tree(etc, ["hosts": String(repeating: "127.0.0.1 localhost\n", count: 100), "app/app.conf": "a=1"])
        try s.tree(srv, ["www/index.html": String(repeating: "<p>hi</p>", count: 500), "data/a.bin": "aaaa",
                         "data/b.bin": "bbbb"])
        try Self.write(s.host + "/jobs.toml", """
            [jobs.etc]
            paths = ["\(etc)"]
            [jobs.srv]
            paths = ["\(srv)"]
            """)
        // Without a jobs file, keyed by the set of paths.
        await #expect(try Self.backup(s, [etc]).filesNew == 2)
        await #expect(try Self.backup(s, [srv]).filesNew == 3)
        let etcAgain = try await Self.backup(s, [etc])
        #expect(etcAgain.filesUnchanged == 2 && etcAgain.filesNew == 0 && etcAgain.bytesRead == 0,
            "the second backup of the same paths read again: \(etcAgain)")
        try Self.write(srv + "/data/a.bin", "changed!")
        let srvAgain = try await Self.backup(s, [srv])
        #expect(srvAgain.filesChanged == 1 && srvAgain.filesUnchanged == 2 && srvAgain.bytesRead == 8, "\(srvAgain)")

        // Jobs: their own caches, named after the job.
        await #expect(try Self.backup(s, ["--job", "etc"]).filesNew == 2)
        await #expect(try Self.backup(s, ["--job", "srv"]).filesNew == 3)
        let job = try await Self.backup(s, ["--job", "etc"])
        #expect(job.filesUnchanged == 2 && job.bytesRead == 0, "\(job)")
        let caches = try FileManager.default.contentsOfDirectory(atPath: s.host + "/caches").sorted()
        #expect(caches.filter { $0.hasPrefix("job-") } == ["job-etc.cache", "job-srv.cache"], "\(caches)")
        #expect(caches.filter { $0.hasPrefix("paths-") }.count == 2, "\(caches)")
        // A job run ends with one summary line (what the journal shows).
        let line = try await s.e.run(["backup", "--job", "srv", "--config", s.host]).out
        #expect(line.hasPrefix("job srv: snapshot ") && line.contains("0 new, 0 changed, 3 unchanged files")
            && line.contains("exit 0") && line.split(separator: "\n").count == 1, "\(line)")
    }

    /// --exclude-file, --exclude-caches, --files-from and --dry-run on the command line alone.
    @Test func selectionOptionsWorkWithoutAJobsFile() async throws {
        let s = try await Setup()
        let root = s.e.dir.appendingPathComponent("data").path
        try s.tree(root, ["keep/a.txt": "a", "keep/b.log": "b", "cache/CACHEDIR.TAG":
            "Signature: 8a477f597d28d172789f06886806bc55\n# a cache", "cache/blob": "x", "fake/CACHEDIR.TAG": "not it",
            "fake/kept": "k", "other/c.txt": "c", "unlisted/d.txt": "d"])
        let excludes = s.e.dir.appendingPathComponent("excludes").path
        try Self.write(excludes, "# logs are rotated anyway\n\n  *.log  \n")
        let list = s.e.dir.appendingPathComponent("paths").path
        try Self.write(list, "# what to keep\n\(root)/keep\n\(root)/cache\n\n\(root)/fake\n")

        let dry = try await s.e.run(["backup", "--dry-run", "--json", "--files-from", list, "--exclude-file", excludes,
                               "--exclude-caches", root + "/other", "--config", s.host])
        let preview = try #require(try JSONSerialization.jsonObject(with: Data(dry.out.utf8)) as? [String: Any])
        #expect(preview["dryRun"] as? Bool == true && preview["filesNew"] as? Int == 5
            && preview["filesUnchanged"] as? Int == 0 && preview["bytesToRead"] is Int, "\(dry.out)")
        await #expect(try s.snapshots().isEmpty, "a dry run committed a snapshot")

        let done = try await Self.backup(s, ["--files-from", list, "--exclude-file", excludes, "--exclude-caches",
                                       root + "/other"])
        #expect(done.filesNew == 5, "\(done)")
        let target = s.e.dir.appendingPathComponent("restored").path
        try await s.e.run(["restore", done.snapshot, "--target", target, "--config", s.restorer])
        let restored = s.files(target)
        for expected in ["keep/a.txt", "cache/CACHEDIR.TAG", "fake/CACHEDIR.TAG", "fake/kept", "other/c.txt"] {
            #expect(restored.contains { $0.hasSuffix(expected) }, "\(expected) missing from \(restored)")
        }
        for excluded in ["b.log", "cache/blob", "unlisted/d.txt"] {
            #expect(!restored.contains { $0.hasSuffix(excluded) }, "\(excluded) was backed up: \(restored)")
        }
        // The same run with no cache change reads nothing the second time.
        let again = try await s.e.run(["backup", "--dry-run", "--json", "--files-from", list, "--exclude-file",
            excludes,
                                 "--exclude-caches", root + "/other", "--config", s.host])
        #expect(again.out.contains("\"filesUnchanged\" : 5"), "\(again.out)")
        // A missing list is named, exit 2.
        let missing = try await s.e.run(["backup", "--files-from", list + ".nope", "--config", s.host], check: false)
        #expect(missing.status == 2 && missing.err.contains(list + ".nope"), "\(missing.status) \(missing.err)")
    }

    /// --one-file-system keeps a mount point below a backed-up path empty (here /dev/shm,
    /// a tmpfs below /dev's devtmpfs), counted with --dry-run so nothing of /dev is stored.
    @Test func oneFileSystemDoesNotDescendIntoOtherMounts() async throws {
        var a = stat(), b = stat()
        guard stat("/dev", &a) == 0, stat("/dev/shm", &b) == 0, a.st_dev != b.st_dev else {
            print("skipping: /dev/shm is not a separate filesystem here"); return
        }
        let s = try await Setup()
        let marker = "/dev/shm/redoubt-ofs-\(UUID().uuidString)"
        try Self.write(marker, "on tmpfs")
        defer { unlink(marker) }
        func files(_ extra: [String]) async throws -> Int {
            let r = try await s.e.run(["backup", "/dev", "--dry-run", "--json", "--config", s.host] + extra,
                check: false)
            try #require(r.status == 0 || r.status == 8, "\(r.status) \(r.err)")
            let j = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
            return (j["filesNew"] as? Int ?? -1) + (j["filesChanged"] as? Int ?? 0)
        }
        let all = try await files([]), one = try await files(["--one-file-system"])
        #expect(all >= 1 && one < all, "with /dev/shm: \(all), without: \(one)")
    }

    /// --stdin-from-command backs up the command's output as one file; a command that fails
    /// commits nothing and says why; --limit-upload paces the upload and still completes.
    @Test func aCommandsOutputIsBackedUpAndAFailingCommandCommitsNothing() async throws {
        let s = try await Setup()
        let payload = (0..<20000).map { "row \($0)\n" }.joined()
        let dumped = s.e.dir.path + "/payload"
        try Self.write(dumped, payload)
        // The command is a program already on disk: a script this test process had just
        // written could not be run while a child forked by another test still held it open
        // for writing (exec fails with "Text file busy").
        let done = try await Self.backup(s, ["--stdin-from-command", "--stdin-filename", "app.dump", "--limit-upload",
            "50M", "--", "/bin/cat", dumped])
        #expect(done.bytesRead == payload.utf8.count, "\(done)")
        let target = s.e.dir.appendingPathComponent("restored").path
        try await s.e.run(["restore", done.snapshot, "--target", target, "--config", s.restorer])
        let dump = try #require(s.files(target).first { $0.hasSuffix("app.dump") }, "\(s.files(target))")
        #expect(try String(contentsOfFile: target + "/" + dump, encoding: .utf8) == payload)

        let failing = try await s.e.run(["backup", "--stdin-from-command", "--config", s.host, "--", "/bin/sh", "-c",
                                   "echo partial; exit 3"], check: false)
        #expect(failing.status == 1 && failing.err.contains("exited with status 3")
            && failing.err.contains("no snapshot was committed"), "\(failing.status) \(failing.err)")
        await #expect(try s.snapshots().count == 1, "a failed command's output was committed")
        let none = try await s.e.run(["backup", "--stdin-from-command", "--config", s.host], check: false)
        #expect(none.status == 2, "\(none.status) \(none.err)")
        let bad = try await s.e.run(["backup", s.e.dir.path, "--limit-upload", "fast", "--config", s.host],
            check: false)
        #expect(bad.status == 2 && bad.err.contains("not a rate"), "\(bad.status) \(bad.err)")
    }

    /// Mistakes in the jobs file are named with the file, the line, the key and the fix.
    @Test func jobsFileErrorsNameTheFileLineKeyAndFix() async throws {
        let s = try await Setup()
        let file = s.host + "/jobs.toml"
        let cases: [(String, Int32, [String])] = [
            ("[jobs.etc]\npaths = [\"/etc\"\n", 2, [file + ":", "not valid TOML"]),
            ("[jobs.etc]\npaths = [\"/etc\"]\npathz = [\"/srv\"]\n", 2, [file + ":3", "jobs.etc.pathz", "unknown key",
                                                                        "paths"]),
            ("[jobs.etc]\npaths = \"/etc\"\none-file-system = \"yes\"\n", 2, [file + ":3", "true or false"]),
            ("[jobs.etc]\npaths = [\"etc\"]\n", 2, [file + ":2", "absolute"]),
            ("[jobs.etc]\npaths = [\"/etc\"]\ncommand = \"pg_dump\"\n", 2, ["not both"]),
            ("[jobs.etc]\npaths = [\"/etc\"]\nlimit-upload = \"lots\"\n", 2, [file + ":3", "2M"]),
            ("[jobs.etc]\npaths = [\"/etc\"]\npre-timeout = \"5m\"\n", 2, ["has no pre command"]),
            ("[jobs.other]\npaths = [\"/etc\"]\n", 3, ["no job named 'etc'", "other"]),
        ]
        for (text, status, needles) in cases {
            try Self.write(file, text)
            let r = try await s.e.run(["backup", "--job", "etc", "--config", s.host], check: false)
            #expect(r.status == status, "\(text): \(r.status) \(r.err)")
            for n in needles { #expect(r.err.contains(n), "\(text): \(n) not in \(r.err)") }
        }
        try FileManager.default.removeItem(atPath: file)
        let r = try await s.e.run(["backup", "--job", "etc", "--config", s.host], check: false)
        #expect(r.status == 3 && r.err.contains(file), "\(r.status) \(r.err)")
        await #expect(try s.snapshots().isEmpty)
    }

    /// Hooks run around the job with its outcome; a failing pre hook backs up nothing but
    /// the post hook still runs; a hook past its timeout is killed with its children.
    @Test func hooksRunAroundTheJobAndAHookPastItsTimeoutIsKilled() async throws {
        let s = try await Setup()
        let data = s.e.dir.appendingPathComponent("data").path
        try s.tree(data, ["a.txt": "a"])
        let log = s.e.dir.appendingPathComponent("hooks.log").path
        let file = s.host + "/jobs.toml"
        func jobs(pre: String, preTimeout: String = "1m") async throws {
            try Self.write(file, """
                [jobs.data]
                paths = ["\(data)"]
                tag = ["nightly"]
                pre = "\(pre)"
                pre-timeout = "\(preTimeout)"
                post = "echo post $REDOUBT_JOB $REDOUBT_EXIT_CODE $REDOUBT_SNAPSHOT >> \(log)"
                """)
        }
        try await jobs(pre: "echo pre $REDOUBT_JOB >> \(log)")
        let ok = try await s.e.run(["backup", "--job", "data", "--config", s.host])
        let snaps = try await s.snapshots()
        try #require(snaps.count == 1)
        #expect(snaps[0].tags == ["nightly"])
        var lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(lines == ["pre data", "post data 0 \(snaps[0].id)"], "\(lines) \(ok.out)")

        try await jobs(pre: "exit 4")
        let failed = try await s.e.run(["backup", "--job", "data", "--config", s.host], check: false)
        #expect(failed.status == 1 && failed.err.contains("pre hook") && failed.err.contains("status 4"),
            "\(failed.status) \(failed.err)")
        #expect(failed.out.hasPrefix("job data: failed, exit 1"), "\(failed.out)")
        await #expect(try s.snapshots().count == 1)
        lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(lines.last == "post data 1", "\(lines)")

        // The hook's child (sleep) is in the hook's process group: killed with it.
        let pidFile = s.e.dir.appendingPathComponent("sleep.pid").path
        try await jobs(pre: "sleep 600 & echo $! > \(pidFile); wait", preTimeout: "1s")
        let slow = try await s.e.run(["backup", "--job", "data", "--config", s.host], check: false)
        #expect(slow.status == 1 && slow.err.contains("did not finish within 1 s"), "\(slow.status) \(slow.err)")
        let sleeper = pid_t((try? String(contentsOfFile: pidFile, encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
        // A zombie (killed, not yet reaped by whoever adopted it) counts as gone.
        let state = (try? String(contentsOfFile: "/proc/\(sleeper)/stat", encoding: .utf8))?
            .split(separator: ")").last?.split(separator: " ").first
        #expect(sleeper > 0 && (state == nil || state == "Z"), "the hook's child \(sleeper) outlived the timeout")
        await #expect(try s.snapshots().count == 1)
    }
}

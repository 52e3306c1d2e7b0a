import Foundation
import Glibc
import Testing
import RedoubtCore
@testable import RedoubtServer

/// Getting data out through the real binary against a real server: paths kept whole,
/// `latest`, restore's selection and overwrite policy, and that an interrupted restore
/// leaves no truncated file under a real name. Every restore is compared byte for byte,
/// with modes and nanosecond modification times.
@Suite(.serialized) struct RestoreCLITests {
    typealias Setup = HostCLITests.Setup

    /// What a restore must reproduce of one entry: type, mode, mtime (ns), size, bytes.
    struct Entry: Equatable, CustomStringConvertible {
        let type: UInt32, mode: UInt32, mtime: Int, mtimeNS: Int, size: Int
        let bytes: [UInt8]?
        var description: String { "type \(type) mode \(String(mode, radix: 8)) mtime \(mtime).\(mtimeNS) size \(size)" }
    }

    /// Every entry below `root` (relative path → entry); directories' times included.
    static func scan(_ root: String) -> [String: Entry] {
        var out: [String: Entry] = [:]
        func visit(_ rel: String) {
            let full = rel.isEmpty ? root : root + "/" + rel
            var st = stat()
            guard lstat(full, &st) == 0 else { return }
            let type = UInt32(st.st_mode) & 0o170000
            let bytes = type == 0o100000 ? FileManager.default.contents(atPath: full).map(Array.init) : nil
            if !rel.isEmpty {
                out[rel] = Entry(type: type, mode: UInt32(st.st_mode) & 0o7777, mtime: st.st_mtim.tv_sec,
                                 mtimeNS: st.st_mtim.tv_nsec, size: Int(st.st_size), bytes: bytes)
            }
            if type == 0o040000 {
                for name in (try? FileManager.default.contentsOfDirectory(atPath: full)) ?? [] {
                    visit(rel.isEmpty ? name : rel + "/" + name)
                }
            }
        }
        visit("")
        return out
    }

    /// `restored` holds exactly what `source` holds, entry for entry.
    static func expectSame(_ source: String, _ restored: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let a = scan(source), b = scan(restored)
        #expect(Set(a.keys) == Set(b.keys), "entries differ: \(Set(a.keys).symmetricDifference(b.keys).sorted())",
                sourceLocation: sourceLocation)
        for (k, e) in a where b[k] != e {
            Issue.record("\(k): source \(e), restored \(b[k].map(\.description) ?? "missing")",
                         sourceLocation: sourceLocation)
        }
    }

    /// Sets a path's mode and modification time (nanoseconds) so restores can be told apart.
    static func stamp(_ path: String, mode: mode_t, seconds: Int, nanoseconds: Int) throws {
        try #require(chmod(path, mode) == 0)
        var times = [timespec(tv_sec: seconds, tv_nsec: nanoseconds), timespec(tv_sec: seconds, tv_nsec: nanoseconds)]
        try #require(utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW) == 0)
    }

    /// `/a/x` and `/b/x` stay apart and restore at the same layout under the target, the
    /// directories on the way with their modes and times; `--path` takes the path as backed
    /// up, repeatable; `latest` is the server's newest commit, also per host.
    @Test func pathsKeptWholeAndLatest() async throws {
        let s = try await Setup()
        let corpus = s.e.dir.appendingPathComponent("corpus").path
        try s.tree(corpus, ["a/x/one.txt": "one", "a/x/deep/two.txt": "two", "b/x/three.txt": "three"])
        try Self.stamp(corpus + "/a/x/one.txt", mode: 0o640, seconds: 1_700_000_000, nanoseconds: 123_456_789)
        try Self.stamp(corpus + "/b", mode: 0o711, seconds: 1_600_000_000, nanoseconds: 5)
        let r = try await s.e.run(["backup", corpus + "/a/x", corpus + "/b/x", "--config", s.host], check: false)
        #expect(r.status == 0, "backup: \(r.status) \(r.err)")

        // Before: both became top-level `x` and `x~2`, and `--path /b/x` exited 3.
        let target = s.e.dir.appendingPathComponent("whole").path
        let whole = try await s.e.run(["restore", "latest", "--target", target, "--config", s.restorer], check: false)
        #expect(whole.status == 0, "\(whole.status) \(whole.err)")
        Self.expectSame(corpus + "/a/x", target + corpus + "/a/x")
        Self.expectSame(corpus + "/b/x", target + corpus + "/b/x")
        #expect(Self.scan(target + corpus)["b"] == Self.scan(corpus)["b"],
                "the directory on the way keeps its metadata")
        #expect(!FileManager.default.fileExists(atPath: target + "/x"))

        let one = s.e.dir.appendingPathComponent("one").path
        let byPath = try await s.e.run(["restore", "latest", "--path", corpus + "/b/x", "--target", one,
                                  "--config", s.restorer], check: false)
        #expect(byPath.status == 0, "\(byPath.status) \(byPath.err)")
        Self.expectSame(corpus + "/b/x", one + corpus + "/b/x")
        #expect(!FileManager.default.fileExists(atPath: one + corpus + "/a"))

        let two = s.e.dir.appendingPathComponent("two").path
        let both = try await s.e.run(["restore", "latest", "--path", corpus + "/b/x", "--path",
                                String(corpus.dropFirst()) + "/a/x/deep", "--target", two, "--config", s.restorer],
                               check: false)
        #expect(both.status == 0, "\(both.status) \(both.err)")
        #expect(s.files(two + corpus) == ["a/x/deep/two.txt", "b/x/three.txt"])
        let missing = try await s.e.run(["restore", "latest", "--path", corpus + "/c", "--target",
                                   s.e.dir.appendingPathComponent("none").path, "--config", s.restorer], check: false)
        #expect(missing.status == 3 && missing.err.contains(corpus + "/c"), "\(missing.status) \(missing.err)")

        // A second snapshot: latest moves to it; ls and verify take latest too.
        try s.tree(corpus, ["a/x/one.txt": "one, changed"])
        try await s.e.run(["backup", corpus + "/a/x", "--config", s.host])
        let snaps = try await s.snapshots()
        try #require(snaps.count == 2)
        let newest = snaps.max { $0.committedAt < $1.committedAt }!
        let ls = try await s.e.run(["ls", "latest", corpus + "/a/x", "--json", "--config", s.restorer], check: false)
        #expect(ls.status == 0 && ls.out.contains("one.txt") && !ls.out.contains("three"), "\(ls.out) \(ls.err)")
        let verify = try await s.e.run(["verify", "latest", "--host", "h1", "--json", "--config", s.restorer],
            check: false)
        #expect(verify.status == 0 && verify.out.contains(newest.id), "\(verify.out) \(verify.err)")
        let latest = s.e.dir.appendingPathComponent("latest").path
        try await s.e.run(["restore", "latest", "--host", "h1", "--target", latest, "--config", s.restorer])
        #expect(FileManager.default.contents(atPath: latest + corpus + "/a/x/one.txt") == Data("one, changed".utf8))
        #expect(!FileManager.default.fileExists(atPath: latest + corpus + "/b"))
        let nobody = try await s.e.run(["restore", "latest", "--host", "nobody", "--target",
                                  s.e.dir.appendingPathComponent("nobody").path, "--config", s.restorer], check: false)
        #expect(nobody.status == 3 && nobody.err.contains("nobody"), "\(nobody.status) \(nobody.err)")
        let hostWithID = try await s.e.run(["ls", newest.id, "--host", "h1", "--config", s.restorer], check: false)
        #expect(hostWithID.status == 2, "\(hostWithID.status) \(hostWithID.err)")
    }

    /// A non-empty target is refused unless --overwrite says what to do, naming the fix;
    /// never keeps everything, if-changed keeps a file of the same size and time (and
    /// replaces the rest), always replaces; include and exclude globs select entries.
    @Test func overwritePolicyAndSelection() async throws {
        let s = try await Setup()
        let corpus = s.e.dir.appendingPathComponent("corpus").path
        try s.tree(corpus, ["keep.txt": "original", "same.txt": "same bytes", "notes.md": "md", "sub/c.txt": "c",
                            "sub/d.log": "d"])
        try Self.stamp(corpus + "/same.txt", mode: 0o600, seconds: 1_650_000_000, nanoseconds: 42)
        try await s.e.run(["backup", corpus, "--config", s.host])
        let target = s.e.dir.appendingPathComponent("t").path
        try await s.e.run(["restore", "latest", "--target", target, "--config", s.restorer])
        Self.expectSame(corpus, target + corpus)

        // The restored tree is changed: one file rewritten, one with the same size and time.
        try Data("rewritten, longer".utf8).write(to: URL(fileURLWithPath: target + corpus + "/keep.txt"))
        try Data("SAME BYTES".utf8).write(to: URL(fileURLWithPath: target + corpus + "/same.txt"))
        try Self.stamp(target + corpus + "/same.txt", mode: 0o600, seconds: 1_650_000_000, nanoseconds: 42)

        let refused = try await s.e.run(["restore", "latest", "--target", target, "--config", s.restorer], check: false)
        #expect(refused.status == 2 && refused.err.contains("--overwrite") && refused.err.contains(target),
                "\(refused.status) \(refused.err)")
        #expect(FileManager.default.contents(atPath: target + corpus + "/keep.txt") == Data("rewritten, longer".utf8))

        let never = try await s.e.run(["restore", "latest", "--target", target, "--overwrite", "never", "--config",
                                 s.restorer], check: false)
        #expect(never.status == 0, "\(never.err)")
        #expect(FileManager.default.contents(atPath: target + corpus + "/keep.txt") == Data("rewritten, longer".utf8))

        let changed = try await s.e.run(["restore", "latest", "--target", target, "--overwrite", "if-changed",
            "--config",
                                   s.restorer], check: false)
        #expect(changed.status == 0, "\(changed.err)")
        #expect(FileManager.default.contents(atPath: target + corpus + "/keep.txt") == Data("original".utf8))
        #expect(FileManager.default.contents(atPath: target + corpus + "/same.txt") == Data("SAME BYTES".utf8),
                "if-changed judges by size and time, as restic does")

        try await s.e.run(["restore", "latest", "--target", target, "--overwrite", "always", "--config", s.restorer])
        Self.expectSame(corpus, target + corpus)
        let leftovers = Self.scan(target).keys.filter { $0.contains(".redoubt-") }
        #expect(leftovers.isEmpty, "temporary files left: \(leftovers)")

        let picked = s.e.dir.appendingPathComponent("picked").path
        try await s.e.run(["restore", "latest", "--target", picked, "--include", "*.txt", "--exclude", corpus
            + "/sub/c.txt",
                     "--config", s.restorer])
        #expect(s.files(picked + corpus) == ["keep.txt", "same.txt"])
        let subOnly = s.e.dir.appendingPathComponent("sub-only").path
        try await s.e.run(["restore", "latest", "--target", subOnly, "--include", corpus + "/sub", "--config",
            s.restorer])
        #expect(s.files(subOnly + corpus) == ["sub/c.txt", "sub/d.log"])
    }

    /// A restore onto a filesystem that fills up fails, and leaves no file under its real
    /// name holding part of its data, nor any temporary file. Needs root to mount a small
    /// tmpfs (run in a private mount namespace, as scripts/test and the wt wrapper do).
    @Test func aFullDiskLeavesNoTruncatedFile() async throws {
        let s = try await Setup()
        let corpus = s.e.dir.appendingPathComponent("corpus").path
        try s.tree(corpus, ["small.txt": "small"])
        var big = [UInt8](repeating: 0, count: 3 << 20)
        var rng = SystemRandomNumberGenerator()
        for i in stride(from: 0, to: big.count, by: 8) {
            withUnsafeBytes(of: rng.next()) { big.replaceSubrange(i..<(i + 8), with: $0) }
        }
        try Data(big).write(to: URL(fileURLWithPath: corpus + "/big.bin"))
        try await s.e.run(["backup", corpus, "--config", s.host])

        let mount = s.e.dir.appendingPathComponent("small-disk").path
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: true)
        guard geteuid() == 0, system("mount -t tmpfs -o size=1m tmpfs '\(mount)' 2>/dev/null") == 0 else {
            Issue.record("cannot mount a 1 MiB tmpfs here (needs root in a private mount namespace); not tested")
            return
        }
        defer { _ = system("umount '\(mount)'") }
        let r = try await s.e.run(["restore", "latest", "--target", mount + "/t", "--config", s.restorer], check: false)
        #expect(r.status != 0, "a restore into a full disk succeeded: \(r.out)")
        #expect(r.err.contains("big.bin") || r.err.contains("space"), "\(r.err)")
        let left = Self.scan(mount)
        #expect(left[String((mount + "/t" + corpus + "/big.bin").dropFirst(mount.count + 1))] == nil,
                "a truncated big.bin under its real name: \(left.keys.sorted())")
        #expect(left.keys.allSatisfy { !$0.contains(".redoubt-") }, "temporary files left: \(left.keys.sorted())")
        for (k, e) in left where e.type == 0o100000 {
            // Whatever file is there is whole.
            #expect(k.hasSuffix("small.txt") && e.bytes == Array("small".utf8), "\(k) \(e)")
        }
    }

    /// A restore killed while it writes leaves its unfinished files under their own names,
    /// each with a modification time not the snapshot's: run again with `if-changed`, it
    /// rewrites them and the target is the snapshot, byte for byte, with no temporary file.
    @Test func aKilledRestoreIsFinishedByIfChanged() async throws {
        let s = try await Setup()
        let corpus = s.e.dir.appendingPathComponent("corpus").path
        var rng = SystemRandomNumberGenerator()
        for d in 0..<6 {
            try FileManager.default.createDirectory(atPath: corpus + "/d\(d)", withIntermediateDirectories: true)
            for f in 0..<60 {
                var bytes = [UInt8](repeating: 0, count: 64 << 10 + Int(rng.next() % (192 << 10)))
                for i in stride(from: 0, to: bytes.count - 7, by: 8) {
                    withUnsafeBytes(of: rng.next()) { bytes.replaceSubrange(i..<(i + 8), with: $0) }
                }
                try Data(bytes).write(to: URL(fileURLWithPath: corpus + "/d\(d)/f\(f).bin"))
                try Self.stamp(corpus + "/d\(d)/f\(f).bin", mode: 0o640, seconds: 1_600_000_000 + f,
                    nanoseconds: 7 * d)
            }
        }
        try await s.e.run(["backup", corpus, "--config", s.host])

        let target = s.e.dir.appendingPathComponent("killed").path
        let pid = s.e.background(["restore", "latest", "--target", target, "--config", s.restorer])
        // Killed as soon as the first file has data: the others are still to be written.
        var runningWhenKilled = false
        for _ in 0..<6000 {
            if Self.scan(target).values.contains(where: { $0.type == 0o100000 && $0.size > 0 }) {
                runningWhenKilled = kill(pid, 0) == 0
                break
            }
            usleep(10_000)
        }
        kill(pid, SIGKILL)
        usleep(200_000)
        let left = Self.scan(target + corpus)
        let whole = Self.scan(corpus).filter { left[$0.key] == $0.value }.count
        print("restore killed \(runningWhenKilled ? "while running" : "after it ended"): \(whole) of "
            + "\(Self.scan(corpus).count) entries already as in the snapshot")
        #expect(!runningWhenKilled || whole < Self.scan(corpus).count, "the kill came after everything was written")

        let again = try await s.e.run(["restore", "latest", "--target", target, "--overwrite", "if-changed",
            "--config", s.restorer], check: false)
        #expect(again.status == 0, "\(again.err)")
        Self.expectSame(corpus, target + corpus)
        let leftovers = Self.scan(target).keys.filter { $0.contains(".redoubt-") }
        #expect(leftovers.isEmpty, "temporary files left: \(leftovers)")
    }

    /// Runs the binary with stdout into `file` (bytes, not text) and `shell` appended (more
    /// redirections): its exit status.
    static func raw(_ s: Setup, _ args: [String], to file: String, shell: String = "") async -> Int32 {
        func q(_ a: String) -> String { "'" + a.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let err = s.e.dir.appendingPathComponent("raw-err.txt").path
        let status = await runShell(([CrashTests.binary.path] + args).map(q).joined(separator: " ")
                            + " > \(q(file)) 2> \(q(err)) \(shell)")
        return Int32((status >> 8) & 0xff)
    }

    /// Without a terminal (cron, systemd) progress is whole lines, one per interval, on
    /// stderr or on --progress-fd; never the terminal's carriage returns. The interval is
    /// a microsecond here so that every report prints: nothing waits on a clock.
    @Test func progressLinesWithoutATerminal() async throws {
        let s = try await Setup()
        let corpus = s.e.dir.appendingPathComponent("corpus").path
        try s.tree(corpus, ["a.txt": "a", "b/c.txt": "c"])
        let fd3 = s.e.dir.appendingPathComponent("progress.txt").path
        let out = s.e.dir.appendingPathComponent("out.bin").path
        await #expect(Self.raw(s, ["backup", corpus, "--progress-interval", "0.000001", "--progress-fd", "3",
                             "--config", s.host], to: out, shell: "3> '\(fd3)'") == 0)
        let lines = try String(contentsOfFile: fd3, encoding: .utf8)
        #expect(lines.hasPrefix("progress: ") && lines.hasSuffix("\n") && !lines.contains("\r"), "\(lines)")
        #expect(lines.split(separator: "\n").allSatisfy { $0.hasPrefix("progress: ") && $0.contains(" files ") })

        let restored = try await s.e.run(["restore", "latest", "--target", s.e.dir.appendingPathComponent("r").path,
                                    "--progress-interval", "0.000001", "--config", s.restorer])
        #expect(restored.err.contains("progress: ") && !restored.err.contains("\r"), "\(restored.err)")
        let quiet = try await s.e.run(["restore", "latest", "--target", s.e.dir.appendingPathComponent("q").path,
                                 "--progress-interval", "0", "--config", s.restorer])
        #expect(!quiet.err.contains("progress"), "\(quiet.err)")
        let closed = try await s.e.run(["restore", "latest", "--target", s.e.dir.appendingPathComponent("c").path,
                                  "--progress-fd", "987", "--config", s.restorer], check: false)
        #expect(closed.status == 2 && closed.err.contains("--progress-fd 987"), "\(closed.status) \(closed.err)")
    }

    /// `dump` gives a file byte for byte (a sparse one with its holes as zeros) and a
    /// directory as a tar stream that `tar -x` turns into the same tree; `diff` names what
    /// was added, removed and changed; `find` finds names across snapshots and hosts.
    @Test func dumpDiffAndFind() async throws {
        let s = try await Setup()
        let corpus = s.e.dir.appendingPathComponent("corpus").path
        try s.tree(corpus, ["a.txt": "first", "sub/keep.txt": "kept", "sub/d/deeper.txt": "deep"])
        var random = [UInt8](repeating: 0, count: 300_000)
        var rng = SystemRandomNumberGenerator()
        for i in random.indices { random[i] = UInt8.random(in: 0...255, using: &rng) }
        try Data(random).write(to: URL(fileURLWithPath: corpus + "/sub/b.bin"))
        // A sparse file: data, a 5 MB hole, data.
        let sparse = corpus + "/sparse.img"
        let fd = open(sparse, O_CREAT | O_WRONLY, 0o644)
        try #require(fd >= 0)
        _ = "head".withCString { write(fd, $0, 4) }
        _ = "tail".withCString { pwrite(fd, $0, 4, 5_000_000) }
        close(fd)
        try #require(link(corpus + "/sub/keep.txt", corpus + "/hard.txt") == 0)
        try Self.stamp(corpus + "/sub/d", mode: 0o700, seconds: 1_500_000_000, nanoseconds: 999_999_999)
        try Self.stamp(corpus + "/a.txt", mode: 0o604, seconds: 1_500_000_001, nanoseconds: 1)
        try await s.e.run(["backup", corpus, "--config", s.host])
        let first = try await #require(try s.snapshots().first?.id)

        let out = s.e.dir.appendingPathComponent("dumped.bin").path
        await #expect(Self.raw(s, ["dump", first, corpus + "/sub/b.bin", "--config", s.restorer], to: out) == 0)
        #expect(FileManager.default.contents(atPath: out).map(Array.init) == random)
        await #expect(Self.raw(s, ["dump", "latest", corpus + "/sparse.img", "--config", s.restorer], to: out) == 0)
        #expect(FileManager.default.contents(atPath: out) == FileManager.default.contents(atPath: sparse))
        await #expect(Self.raw(s, ["dump", "latest", corpus + "/nope", "--config", s.restorer], to: out) == 3)

        let tarFile = s.e.dir.appendingPathComponent("corpus.tar").path
        await #expect(Self.raw(s, ["dump", "latest", corpus, "--config", s.restorer], to: tarFile) == 0)
        let untarred = s.e.dir.appendingPathComponent("untarred").path
        try FileManager.default.createDirectory(atPath: untarred, withIntermediateDirectories: true)
        #expect(system("tar -x -f '\(tarFile)' -C '\(untarred)'") == 0)
        Self.expectSame(corpus, untarred + corpus)
        var a = stat(), b = stat()
        #expect(lstat(untarred + corpus + "/hard.txt", &a) == 0 && lstat(untarred + corpus + "/sub/keep.txt", &b) == 0
                && a.st_ino == b.st_ino, "the hard link is a hard link again")

        // A second snapshot: one file changed, one added, one removed, one only chmod'ed.
        try s.tree(corpus, ["a.txt": "second", "new.txt": "new"])
        try FileManager.default.removeItem(atPath: corpus + "/sub/b.bin")
        try #require(chmod(corpus + "/sub/keep.txt", 0o600) == 0)
        try await s.e.run(["backup", corpus, "--config", s.host])
        let diff = try await s.e.run(["diff", first, "latest", "--json", "--config", s.restorer], check: false)
        try #require(diff.status == 0, "\(diff.err)")
        let d = try #require(try JSONSerialization.jsonObject(with: Data(diff.out.utf8)) as? [String: Any])
        let changes = try #require(d["changes"] as? [[String: Any]])
        func kind(_ suffix: String) -> String? {
            changes.first { ($0["path"] as? String)?.hasSuffix(suffix) == true }?["change"] as? String
        }
        #expect(kind("/new.txt") == "added" && kind("/sub/b.bin") == "removed" && kind("/a.txt") == "changed")
        let keep = changes.first { ($0["path"] as? String)?.hasSuffix("/sub/keep.txt") == true }
        #expect((keep?["what"] as? [String])?.contains("mode") == true, "\(changes)")
        await #expect(kind("/sub/d/deeper.txt") == nil, "an unchanged entry is not listed")
        #expect(d["added"] as? Int == 1 && d["removed"] as? Int == 1, "\(d)")
        let text = try await s.e.run(["diff", first, "latest", "--config", s.restorer])
        #expect(text.out.contains("+    \(corpus)/new.txt") && text.out.contains("-    \(corpus)/sub/b.bin")
                && text.out.contains("M    \(corpus)/a.txt") && text.out.contains("U    \(corpus)/sub/keep.txt"),
                "\(text.out)")

        let found = try await s.e.run(["find", "b.bin", "--host", "h1", "--json", "--config", s.restorer], check: false)
        try #require(found.status == 0, "\(found.err)")
        let matches = try #require(try JSONSerialization.jsonObject(with: Data(found.out.utf8)) as? [[String: Any]])
        #expect(matches.count == 1 && matches.first?["snapshot"] as? String == first
                && matches.first?["path"] as? String == corpus + "/sub/b.bin"
                && matches.first?["size"] as? Int == 300_000, "\(matches)")
        let txt = try await s.e.run(["find", "\(corpus)/*.txt", "--json", "--config", s.restorer])
        let both = try #require(try JSONSerialization.jsonObject(with: Data(txt.out.utf8)) as? [[String: Any]])
        #expect(Set(both.compactMap { $0["path"] as? String }) == [corpus + "/a.txt", corpus + "/hard.txt",
                                                                  corpus + "/new.txt"], "\(both)")
    }
}

import Foundation
import Testing
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer

/// The protected host's side through the real binary against a real server: what a
/// sysadmin types, the exit codes README documents, and what lands in the snapshot.
@Suite(.serialized) struct HostCLITests {
    /// A running server with one tenant, an enrolled host and an enrolled restorer.
    final class Setup {
        let e: CrashTests.Env
        var host: String { e.dir.appendingPathComponent("host").path }
        var restorer: String { e.dir.appendingPathComponent("restorer").path }
        var admin: String { e.dir.appendingPathComponent("server/admin.credential").path }

        init() async throws {
            try #require(FileManager.default.isExecutableFile(atPath: CrashTests.binary.path),
                "build the redoubt executable first")
            e = try CrashTests.Env()
            try await e.run(["server", "init", "--data", e.dir.appendingPathComponent("server").path, "--listen",
                "127.0.0.1:\(e.port)"])
            try e.startServer()
            try await e.run(["admin", "--credential", admin, "tenant", "create", "crash"])
            let hostToken = try await e.run(["admin", "--credential", admin, "host", "add", "crash", "h1"]).out
                .trimmingCharacters(in: .whitespacesAndNewlines)
            try await e.run(["enroll", hostToken, "--config", host])
            let restorerToken = try await e.run(["admin", "--credential", admin, "restorer", "add", "crash", "r1"]).out
                .trimmingCharacters(in: .whitespacesAndNewlines)
            try await e.run(["enroll", restorerToken, "--config", restorer])
        }

        func snapshots() async throws -> [Wire.SnapshotInfo] {
            let list = try await e.run(["snapshots", "--json", "--config", restorer]).out
            return try JSONDecoder().decode([Wire.SnapshotInfo].self, from: Data(list.utf8), dates: true)
        }

        /// Writes `files` (relative path → content) under `root`.
        func tree(_ root: String, _ files: [String: String]) throws {
            for (rel, content) in files {
                let url = URL(fileURLWithPath: root).appendingPathComponent(rel)
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(),
                    withIntermediateDirectories: true)
                try Data(content.utf8).write(to: url)
            }
        }

        /// Every regular file below `root`, relative, sorted.
        func files(_ root: String) -> [String] {
            let en = FileManager.default.enumerator(atPath: root)
            var out: [String] = []
            while let p = en?.nextObject() as? String {
                var isDir: ObjCBool = false
                if FileManager.default.fileExists(atPath: root + "/" + p, isDirectory: &isDir), !isDir.boolValue {
                    out.append(p)
                }
            }
            return out.sorted()
        }

        deinit { e.cleanup() }
    }

    /// `--exclude 'PARENT/*'` names PARENT's entries: it must not swallow everything below
    /// the backed-up directory, which lies under PARENT; and `DIR/sub/*` leaves DIR/sub
    /// (empty) and the rest of DIR.
    @Test func excludeGlobsDoNotCrossSlash() async throws {
        let s = try await Setup()
        let corpus = s.e.dir.appendingPathComponent("corpus").path
        try s.tree(corpus, ["keep.txt": "k", "a/b/deep.txt": "d", "sub/x.txt": "x", "sub/deeper/y.txt": "y"])
        // Before: `*` crossed `/`, so this excluded every entry and made an empty snapshot.
        let r = try await s.e.run(["backup", corpus, "--exclude", s.e.dir.path + "/*", "--exclude", corpus + "/sub/*",
                             "--config", s.host], check: false)
        #expect(r.status == 0, "backup: \(r.status) \(r.err)")
        let snaps = try await s.snapshots()
        try #require(snaps.count == 1)
        let target = s.e.dir.appendingPathComponent("restored").path
        try await s.e.run(["restore", snaps[0].id, "--target", target, "--config", s.restorer])
        #expect(s.files(target + corpus) == ["a/b/deep.txt", "keep.txt"])
        var isDir: ObjCBool = false
        #expect(FileManager.default.fileExists(atPath: target + corpus + "/sub", isDirectory: &isDir)
                && isDir.boolValue)
        #expect(s.files(target + corpus + "/sub").isEmpty)
    }

    /// A backup whose every entry is excluded is refused (no snapshot becomes the host's
    /// newest); one missing path among others is a warning naming it, exit 8, and the others
    /// are backed up; only missing paths exit 3 with no snapshot.
    @Test func emptyOrMissingBackupIsNeverASilentSuccess() async throws {
        let s = try await Setup()
        let corpus = s.e.dir.appendingPathComponent("corpus").path
        try s.tree(corpus, ["a.txt": "a", "d/b.txt": "b"])
        let empty = try await s.e.run(["backup", corpus, "--exclude", "*", "--config", s.host], check: false)
        #expect(empty.status == 1 && empty.err.contains("nothing to back up"), "\(empty.status) \(empty.err)")
        await #expect(try s.snapshots().isEmpty, "an empty snapshot was committed")

        let missing = s.e.dir.appendingPathComponent("not-mounted").path
        let partial = try await s.e.run(["backup", missing, corpus, "--config", s.host], check: false)
        #expect(partial.status == 8, "\(partial.status) \(partial.err)")
        #expect(partial.out.contains("warning: \(missing): does not exist"), "\(partial.out)")
        let snaps = try await s.snapshots()
        try #require(snaps.count == 1)
        let target = s.e.dir.appendingPathComponent("restored").path
        try await s.e.run(["restore", snaps[0].id, "--target", target, "--config", s.restorer])
        #expect(s.files(target + corpus) == ["a.txt", "d/b.txt"])

        let none = try await s.e.run(["backup", missing, "--config", s.host], check: false)
        #expect(none.status == 3 && none.err.contains(missing), "\(none.status) \(none.err)")
        await #expect(try s.snapshots().count == 1)
    }

    /// Usage errors exit 2 as README's table says (ArgumentParser's own default is 64).
    @Test func usageErrorsExitTwo() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: CrashTests.binary.path),
            "build the redoubt executable first")
        let e = try CrashTests.Env()
        defer { e.cleanup() }
        for args in [["backup"], ["restore", "3fa1c2d4"], ["snapshots", "--no-such-option"], ["no-such-command"],
                     ["admin", "tenant", "create"]] {
            let r = try await e.run(args, check: false)
            #expect(r.status == 2, "redoubt \(args.joined(separator: " ")): \(r.status) \(r.err)")
        }
        await #expect(try e.run(["--help"], check: false).status == 0)
    }

    /// A garbled token or credential file exits 2 naming it, never 5 (which says stored
    /// bytes are damaged).
    @Test func garbledTokenOrCredentialExitsTwo() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: CrashTests.binary.path),
            "build the redoubt executable first")
        let e = try CrashTests.Env()
        defer { e.cleanup() }
        let config = e.dir.appendingPathComponent("host").path
        for token in ["rdbt1.eyJ1cmwiOiJodHRwczovL3gifQ", "garbage", "rdbt1.!!!"] {
            let r = try await e.run(["enroll", token, "--config", config], check: false)
            #expect(r.status == 2 && r.err.contains("not a Redoubt enrollment token"), "\(token): \(r.status) \(r.err)")
        }
        try FileManager.default.createDirectory(atPath: config, withIntermediateDirectories: true)
        try Data("{\"url\": 3".utf8).write(to: URL(fileURLWithPath: config + "/credential.json"))
        let r = try await e.run(["snapshots", "--config", config], check: false)
        #expect(r.status == 2 && r.err.contains(config + "/credential.json"), "\(r.status) \(r.err)")
        let admin = try await e.run(["admin", "--credential", config + "/credential.json", "tenant", "list"],
            check: false)
        #expect(admin.status == 2, "\(admin.status) \(admin.err)")
    }

    /// A damaged write-material.bin or host-signing.key (one flipped bit still parses) is
    /// named with the fix before anything is uploaded, exit 2; restored, the backup works.
    @Test func damagedLocalKeyFilesAreNamedBeforeAnyUpload() async throws {
        let s = try await Setup()
        let corpus = s.e.dir.appendingPathComponent("corpus").path
        try s.tree(corpus, ["a.bin": String(repeating: "payload ", count: 20000)])
        for (file, offset) in [("host-signing.key", 5), ("write-material.bin", 200), ("write-material.bin", 3)] {
            let url = URL(fileURLWithPath: s.host + "/" + file)
            let good = try Data(contentsOf: url)
            var bad = good
            bad[offset] ^= 0x04
            try bad.write(to: url)
            let before = s.e.storedPacks()
            let r = try await s.e.run(["backup", corpus, "--config", s.host], check: false)
            #expect(r.status == 2, "\(file)@\(offset): \(r.status) \(r.err)")
            #expect(r.err.contains(url.path) && r.err.contains("re-enroll"), "\(file): \(r.err)")
            #expect(s.e.storedPacks() == before, "\(file): packs were uploaded before the damage was found")
            try good.write(to: url)
        }
        // Without the recorded hashes (a directory enrolled earlier) an unparsable file is still named.
        try FileManager.default.removeItem(atPath: s.host + "/key-check.json")
        let material = URL(fileURLWithPath: s.host + "/write-material.bin")
        let good = try Data(contentsOf: material)
        try good.prefix(20).write(to: material)
        let r = try await s.e.run(["backup", corpus, "--config", s.host], check: false)
        #expect(r.status == 2 && r.err.contains(material.path), "\(r.status) \(r.err)")
        try good.write(to: material)
        try await s.e.run(["backup", corpus, "--config", s.host])
        #expect(FileManager.default.fileExists(atPath: s.host + "/key-check.json"),
            "a good backup records the key files' hashes")
        await #expect(try s.snapshots().count == 1)
    }

    /// `redoubt admin X … --help` prints X's own help for every admin subcommand, found by
    /// walking the SUBCOMMANDS sections of the help itself.
    @Test func everyAdminSubcommandHelpIsItsOwn() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: CrashTests.binary.path),
            "build the redoubt executable first")
        let e = try CrashTests.Env()
        defer { e.cleanup() }
        func flat(_ s: String) -> String { s.split(whereSeparator: { $0 == " " || $0 == "\n" }).joined(separator: " ") }
        func subcommands(_ help: String) async -> [String] {
            guard let r = help.range(of: "SUBCOMMANDS:\n") else { return [] }
            return help[r.upperBound...].split(separator: "\n").prefix { !$0.isEmpty
                && $0.hasPrefix(" ") }.compactMap { line in
                // Entries start at a 2-space indent; wrapped abstracts are indented further.
                guard line.hasPrefix("  "), !line.hasPrefix("   ") else { return nil }
                return line.split(separator: " ").first.map(String.init)
            }.filter { name in name != "help" && name.allSatisfy { $0.isLowercase || $0.isNumber || $0 == "-" } }
        }
        var queue = [["admin"]]
        var seen = 0
        while let path = queue.popLast(), path.count < 6 {
            let r = try await e.run(path + ["--help"], check: false)
            #expect(r.status == 0, "\(path): \(r.status) \(r.err)")
            let usage = "USAGE: redoubt " + path.joined(separator: " ")
            #expect(flat(r.out).contains(usage),
                "redoubt \(path.joined(separator: " ")) --help printed another command's help: \(r.out)")
            for sub in await subcommands(r.out) {
                queue.append(path + [sub.replacingOccurrences(of: "(default)", with: "")])
            }
            seen += 1
        }
        #expect(seen > 30, "only \(seen) admin commands found")
    }

    /// `restore --json` and `verify --json` give numbers as numbers and lists as arrays.
    @Test func restoreAndVerifyJSONHaveNumbersAndArrays() async throws {
        let s = try await Setup()
        let corpus = s.e.dir.appendingPathComponent("corpus").path
        try s.tree(corpus, ["a.txt": "a", "d/b.txt": "bb"])
        try await s.e.run(["backup", corpus, "--config", s.host])
        let id = try await #require(try s.snapshots().first?.id)
        let target = s.e.dir.appendingPathComponent("restored").path
        let r = try await s.e.run(["restore", id, "--target", target, "--json", "--config", s.restorer]).out
        let restore = try #require(try JSONSerialization.jsonObject(with: Data(r.utf8)) as? [String: Any], "\(r)")
        #expect(restore["files"] as? Int == 2 && restore["bytes"] as? Int == 3, "\(r)")
        #expect(restore["directories"] is Int && restore["packs"] is Int && restore["seconds"] is Double, "\(r)")
        #expect(restore["warnings"] as? [String] == [] && restore["damaged"] as? [String] == [], "\(r)")
        let v = try await s.e.run(["verify", id, "--deep", "--json", "--config", s.restorer]).out
        let verify = try #require(try JSONSerialization.jsonObject(with: Data(v.utf8)) as? [String: Any], "\(v)")
        #expect(verify["snapshot"] as? String == id && verify["problems"] as? [String] == [], "\(v)")
        #expect((verify["packsChecked"] as? Int ?? 0) > 0 && verify["bytesChecked"] is Int
            && (verify["chunksDecrypted"] as? Int ?? 0) > 0, "\(v)")
    }
}

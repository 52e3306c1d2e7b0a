import Foundation
import Testing

/// `redoubt ls` through the built binary, against the quickstart's server: a restorer
/// finds what to restore without restoring it; a host cannot.
@Suite struct LsCLITests {
    @Test func aRestorerListsASnapshotAtAnyPathAndAHostCannot() async throws {
        let q = try await QuickstartServer.start("ls", quickstartEnv: "REDOUBT_PASSPHRASE=ls-pass")
        defer { q.stop() }
        let pass = "REDOUBT_PASSPHRASE=ls-pass"
        // The snapshot keeps the path whole: the top level is its first component, and
        // the directory that holds the sample lists it by its whole path.
        let (t0, top0) = await q.sh("ls \(q.snapshot.prefix(12)) \(q.restorer)", env: pass)
        let first = String(q.base.split(separator: "/")[0])
        #expect(t0 == 0 && top0.split(separator: "\n").count == 1 && top0.hasSuffix(" \(first)\n"), "ls: \(top0)")
        let (t, top) = await q.sh("ls \(q.snapshot.prefix(12)) '\(q.base)' \(q.restorer)", env: pass)
        let rel = String(q.base.dropFirst())
        let line = try #require(top.split(separator: "\n").first { $0.hasSuffix(" \(rel)/sample") }, "ls: \(top)")
        // The mode column as `ls -l` shows it, from the sample directory's own mode.
        let attributes = try FileManager.default.attributesOfItem(atPath: "\(q.base)/sample")
        let mode = try #require(attributes[.posixPermissions] as? Int)
        let rwx = (0..<9).map { i in mode & (0o400 >> i) != 0 ? Array("rwxrwxrwx")[i] : "-" }
        #expect(t == 0 && line.hasPrefix("d" + String(rwx)), "ls: \(line) (mode \(String(mode, radix: 8)))")

        let (r, json) = await q.sh("ls \(q.snapshot.prefix(12)) '\(q.base)/sample' --recursive --json \(q.restorer)",
                             env: pass)
        try #require(r == 0, "ls --recursive --json: \(json)")
        let entries = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]])
        let listed = Set(entries.compactMap { $0["path"] as? String })
        // Everything the sample holds, by the same relative paths.
        let walker = try #require(FileManager.default.enumerator(atPath: "\(q.base)/sample"))
        var onDisk: Set<String> = []
        while let p = walker.nextObject() as? String { onDisk.insert(rel + "/sample/" + p) }
        #expect(listed == onDisk, "listed \(listed.sorted()) vs on disk \(onDisk.sorted())")

        let (w, wOut) = await q.sh("ls \(q.snapshot.prefix(12)) \(q.restorer)", env: "REDOUBT_PASSPHRASE=wrong")
        #expect(w == 6, "a wrong passphrase: \(w) \(wOut)")
        let (m, mOut) = await q.sh("ls \(q.snapshot.prefix(12)) sample/no-such-file \(q.restorer)", env: pass)
        #expect(m == 3 && mOut.contains("no-such-file"), "a missing path: \(m) \(mOut)")
        // The protected host's own credential cannot read what it backed up.
        let (h, hOut) = await q.sh("ls \(q.snapshot.prefix(12)) --config '\(q.base)/host'", env: pass)
        #expect(h == 4 && !hOut.contains(" sample"), "a host listing its snapshot: \(h) \(hOut)")
        // restore --path of a path the snapshot does not hold: not found, nothing written.
        let (rp,
            rpOut) = await q.sh("""
                restore \(q.snapshot.prefix(12)) --target '\(q.dir)/nothing' --path sample/no-such-file \(q.restorer)
                """, env: pass)
        #expect(rp == 3 && rpOut.contains("no-such-file"), "restore --path missing: \(rp) \(rpOut)")
    }
}

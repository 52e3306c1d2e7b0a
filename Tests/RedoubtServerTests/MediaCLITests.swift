import Foundation
import Testing
import RedoubtMedia

/// `redoubt media write|list|restore` through the built binary: a multi-volume set written
/// on the repository host restores with the server gone, taking the read key's wrapping
/// from the set's own tenant descriptor, and a set whose descriptor an attacker rewrote to
/// point at their key service does not send the restorer there.
@Suite struct MediaCLITests {
    /// Stops the quickstart's server (it is gone for everything after) and writes its
    /// snapshot to a media set from the data directory; returns the set's path.
    func writeSet(_ q: QuickstartServer, _ args: String = "") async throws -> String {
        let set = "\(q.dir)/vol"
        _ = await q.shell("kill $(cat '\(q.dir)/server.pid'); sleep 1")
        let (w, wOut) = await q.sh("media write quickstart --data '\(q.base)/server' --device 'file:\(set)' \(args)")
        try #require(w == 0, "media write: \(wOut)")
        return set
    }

    @Test func mediaSetRestoresWithTheServerGoneAndIgnoresAForeignKeyService() async throws {
        let q = try await QuickstartServer.start("mediacli", quickstartEnv: "REDOUBT_PASSPHRASE=media-pass")
        defer { q.stop() }
        let set = try await writeSet(q, "--capacity 256K --block-size 16K")
        #expect(FileManager.default.fileExists(atPath: "\(set).2"), "wanted a multi-volume set")
        let (l, lOut) = await q.sh("media list --device 'file:\(set)' --json")
        #expect(l == 0 && lOut.contains(q.snapshot), "media list: \(lOut)")

        let target = "\(q.dir)/restored"
        let (r,
            rOut) = await q.sh("""
                media restore \(q.snapshot.prefix(12)) --device 'file:\(set)' --target '\(target)' \(q.restorer)
                """,
                             env: "REDOUBT_PASSPHRASE=media-pass")
        #expect(r == 0, "media restore: \(rOut)")
        #expect(rOut.contains("using the wrapped read key in tenant-v1.json on the media"), "\(rOut)")
        await #expect(q.shell("diff -r '\(q.base)/sample' '\(target)\(q.base)/sample'").0 == 0,
            "restored tree differs from the sample")
        // One directory of the snapshot only.
        let part = "\(q.dir)/part"
        let (p,
            pOut) = await q.sh("""
                media restore \(q.snapshot.prefix(12)) --device 'file:\(set)' --target '\(part)' \
                --path '\(q.base)/sample/docs' \
                \(q.restorer)
                """,
                             env: "REDOUBT_PASSPHRASE=media-pass")
        #expect(p == 0, "media restore --path: \(pOut)")
        await #expect(q.shell("diff -r '\(q.base)/sample/docs' '\(part)\(q.base)/sample/docs'").0 == 0)
        #expect(!FileManager.default.fileExists(atPath: "\(part)\(q.base)/sample/README.txt"))

        // An attacker who can write media rewrites the descriptor to name their KMS.
        var records: [MediaRecord] = []
        _ = try MediaReader(source: FileSequentialDevice(path: set), skipDamaged: false).read { records.append($0) }
        let i = try #require(records.firstIndex { $0.type == .object && $0.id == "tenant-v1.json" })
        var desc = try #require(JSONSerialization.jsonObject(with: Data(records[i].body)) as? [String: Any])
        let wrapped = try #require(desc["wrappedReadKey"] as? String)
        var key = try #require(JSONSerialization.jsonObject(with: Data(wrapped.utf8)) as? [String: Any])
        key["provider"] = "kmip://evil.example:5696/k1?ca=/tmp/ca.pem"
        desc["wrappedReadKey"] = String(decoding: try JSONSerialization.data(withJSONObject: key), as: UTF8.self)
        records[i].body = Array(try JSONSerialization.data(withJSONObject: desc))
        let forged = "\(q.dir)/forged"
        let mw = try MediaWriter(device: FileSequentialDevice(path: forged), setID: Array(repeating: 3, count: 16),
            pool: "p",
                                 tenant: "quickstart", blockSize: 16 << 10, created: "2026-11-27T00:00:00Z",
                                     retainUntil: nil, writer: "attacker")
        for rec in records { try mw.append(rec) }
        _ = try mw.finish()
        let target2 = "\(q.dir)/restored2"
        let (r2,
            r2Out) = await q.sh("""
                media restore \(q.snapshot.prefix(12)) --device 'file:\(forged)' --target '\(target2)' \(q.restorer)
                """,
                               env: "REDOUBT_PASSPHRASE=media-pass")
        #expect(r2Out.contains("not using the wrapped read key in tenant-v1.json on the media"), "\(r2Out)")
        #expect(!r2Out.contains("evil.example"), "the restorer must not contact the forged key service: \(r2Out)")
        // Without the server, the enrollment copy still opens the packs.
        #expect(r2 == 0, "\(r2Out)")
        await #expect(q.shell("diff -r '\(q.base)/sample' '\(target2)\(q.base)/sample'").0 == 0)
    }

    /// Disaster recovery through the binary: the repository host is lost; a fresh one
    /// imports the media set, whose descriptor holds the write material only sealed to the
    /// read key. Nobody can enroll until an admin gives it back with the read key; then a
    /// new restorer enrolls and restores bit for bit.
    @Test func aFreshServerFromMediaEnrollsOnlyAfterTheWriteMaterialIsGivenBack() async throws {
        let q = try await QuickstartServer.start("mediadr", quickstartEnv: "REDOUBT_PASSPHRASE=dr-pass")
        defer { q.stop() }
        // The store holds its descriptor as servers before format 2 wrote it (the material
        // in the clear): the media must carry it sealed all the same.
        _ = try await storeDescriptorInFormat1(quickstart: q.base)
        let set = try await writeSet(q)
        let written = try Data(contentsOf: URL(fileURLWithPath: set))
        #expect(written.range(of: Data("\"writeMaterial\"".utf8)) == nil
            && written.range(of: Data("sealedWriteMaterial".utf8)) != nil)

        let fresh = "\(q.dir)/fresh"
        let port = try freeLoopbackPort()
        let (i, iOut) = await q.sh("server init --data '\(fresh)' --listen 127.0.0.1:\(port)")
        try #require(i == 0, "server init: \(iOut)")
        // Without a trust root the import refuses to start: the new CA cannot check the set.
        let (n, nOut) = await q.sh("media import --device 'file:\(set)' --data '\(fresh)'")
        #expect(n == 2 && nOut.contains("--trusted-config"), "media import without a trust root: \(nOut)")
        let (m, mOut) = await q.sh(
            "media import --device 'file:\(set)' --data '\(fresh)' --trusted-config '\(q.base)/restorer'")
        #expect(m == 0 && mOut.contains("TO DO: tenant quickstart") && mOut.contains("restore-material"),
            "media import: \(mOut)")
        // In a subshell: `shell` sends the command's output to a file, which would otherwise
        // take the pid's place.
        _ =
            await q.shell("""
                (\(q.bin) server run --data '\(fresh)' > '\(q.dir)/fresh.log' 2>&1 & echo $! > '\(q.dir)/fresh.pid')
                """)
        // A defer cannot await: kill is instant, blocking is harmless.
        defer { _ = system("kill $(cat '\(q.dir)/fresh.pid')") }
        let admin = "--credential '\(fresh)/admin.credential'"
        var up = false
        for _ in 0..<150 where !up {
            up = await q.sh("admin \(admin) tenant list").0 == 0
            if !up { try await Task.sleep(nanoseconds: 200_000_000) }
        }
        try #require(up, "the fresh server did not come up")

        let (early, earlyOut) = await q.sh("admin \(admin) restorer add quickstart dr")
        #expect(early != 0 && earlyOut.contains("E_NO_WRITE_MATERIAL") && earlyOut.contains("restore-material"),
            "enrollment before: \(earlyOut)")
        let (wrong, wrongOut) = await q.sh("admin \(admin) tenant restore-material quickstart",
            env: "REDOUBT_PASSPHRASE=not-it")
        #expect(wrong == 6, "restore-material with a wrong passphrase: \(wrongOut)")
        let (g, gOut) = await q.sh("admin \(admin) tenant restore-material quickstart",
            env: "REDOUBT_PASSPHRASE=dr-pass")
        #expect(g == 0 && gOut.contains("back on the server"), "restore-material: \(gOut)")
        // From a host's file: the same material is accepted again, anything else refused.
        let (h,
            hOut) = await q.sh("""
                admin \(admin) tenant restore-material quickstart --from '\(q.base)/host/write-material.bin'
                """)
        #expect(h == 0, "restore-material --from the host's file: \(hOut)")
        let (x,
            xOut) = await q.sh("""
                admin \(admin) tenant restore-material quickstart --from '\(q.base)/host/host-signing.key'
                """)
        #expect(x != 0 && xOut.contains("E_BAD_REQUEST"), "restore-material --from another file: \(xOut)")
        let (t, token) = await q.shell("\(q.bin) admin \(admin) restorer add quickstart dr 2>/dev/null")
        try #require(t == 0, "restorer add: \(token)")
        let cfg = "\(q.dir)/dr-restorer"
        let tokenLine = try #require(token.split(separator: "\n").last { $0.hasPrefix("rdbt1.") },
            "restorer add printed no token: \(token)")
        let (e, eOut) = await q.sh("enroll '\(tokenLine)' --config '\(cfg)'")
        try #require(e == 0, "enroll: \(eOut)")
        // The material given back is the one the hosts hold.
        await #expect(q.shell("cmp '\(q.base)/host/write-material.bin' '\(cfg)/write-material.bin'").0 == 0)
        let target = "\(q.dir)/dr-restored"
        let (r, rOut) = await q.sh("restore \(q.snapshot.prefix(12)) --target '\(target)' --config '\(cfg)'",
            env: "REDOUBT_PASSPHRASE=dr-pass")
        #expect(r == 0, "restore through the fresh server: \(rOut)")
        await #expect(q.shell("diff -r '\(q.base)/sample' '\(target)\(q.base)/sample'").0 == 0,
            "restored tree differs from the sample")
    }
}

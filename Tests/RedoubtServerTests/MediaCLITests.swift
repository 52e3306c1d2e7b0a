import Foundation
import Testing
import RedoubtMedia

/// `redoubt media write|list|restore` through the built binary: a multi-volume set written
/// on the repository host restores with the server gone, taking the read key's wrapping
/// from the set's own tenant descriptor, and a set whose descriptor an attacker rewrote to
/// point at their key service does not send the restorer there.
@Suite struct MediaCLITests {
    @Test func mediaSetRestoresWithTheServerGoneAndIgnoresAForeignKeyService() async throws {
        let q = try await QuickstartServer.start("mediacli", quickstartEnv: "REDOUBT_PASSPHRASE=media-pass")
        defer { q.stop() }
        let set = "\(q.dir)/vol"
        // The server is gone for everything below; the media write reads its data directory.
        _ = q.shell("kill $(cat '\(q.dir)/server.pid'); sleep 1")
        let (w, wOut) = q.sh("media write quickstart --data '\(q.base)/server' --device 'file:\(set)' --capacity 256K --block-size 16K")
        try #require(w == 0, "media write: \(wOut)")
        #expect(FileManager.default.fileExists(atPath: "\(set).2"), "wanted a multi-volume set: \(wOut)")
        let (l, lOut) = q.sh("media list --device 'file:\(set)' --json")
        #expect(l == 0 && lOut.contains(q.snapshot), "media list: \(lOut)")

        let target = "\(q.dir)/restored"
        let (r, rOut) = q.sh("media restore \(q.snapshot.prefix(12)) --device 'file:\(set)' --target '\(target)' \(q.restorer)",
                             env: "REDOUBT_PASSPHRASE=media-pass")
        #expect(r == 0, "media restore: \(rOut)")
        #expect(rOut.contains("using the wrapped read key in tenant-v1.json on the media"), "\(rOut)")
        #expect(q.shell("diff -r '\(q.base)/sample' '\(target)/sample'").0 == 0, "restored tree differs from the sample")
        // One directory of the snapshot only.
        let part = "\(q.dir)/part"
        let (p, pOut) = q.sh("media restore \(q.snapshot.prefix(12)) --device 'file:\(set)' --target '\(part)' --path sample/docs \(q.restorer)",
                             env: "REDOUBT_PASSPHRASE=media-pass")
        #expect(p == 0, "media restore --path: \(pOut)")
        #expect(q.shell("diff -r '\(q.base)/sample/docs' '\(part)/docs'").0 == 0)
        #expect(!FileManager.default.fileExists(atPath: "\(part)/README.txt") && !FileManager.default.fileExists(atPath: "\(part)/sample"))

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
        let mw = try MediaWriter(device: FileSequentialDevice(path: forged), setID: Array(repeating: 3, count: 16), pool: "p",
                                 tenant: "quickstart", blockSize: 16 << 10, created: "2026-11-27T00:00:00Z", retainUntil: nil, writer: "attacker")
        for rec in records { try mw.append(rec) }
        _ = try mw.finish()
        let target2 = "\(q.dir)/restored2"
        let (r2, r2Out) = q.sh("media restore \(q.snapshot.prefix(12)) --device 'file:\(forged)' --target '\(target2)' \(q.restorer)",
                               env: "REDOUBT_PASSPHRASE=media-pass")
        #expect(r2Out.contains("not using the wrapped read key in tenant-v1.json on the media"), "\(r2Out)")
        #expect(!r2Out.contains("evil.example"), "the restorer must not contact the forged key service: \(r2Out)")
        // Without the server, the enrollment copy still opens the packs.
        #expect(r2 == 0, "\(r2Out)")
        #expect(q.shell("diff -r '\(q.base)/sample' '\(target2)/sample'").0 == 0)
    }
}

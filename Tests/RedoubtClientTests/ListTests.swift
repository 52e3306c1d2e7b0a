import Foundation
import Glibc
@testable import RedoubtClient
import RedoubtCore
import Testing

/// `Restorer.list` (`redoubt ls`): what a snapshot holds, read from its trees alone.
@Suite struct ListTests {
    @Test func listsWhatTheTreesRecordAtAnyPathAndRecursively() async throws {
        let keys = try TestKeys()
        let work = try Fixture.tempDirectory("list")
        defer { Fixture.remove(work) }
        let src = work + "/src"
        try Fixture.check(mkdir(src, 0o755), "mkdir")
        _ = try Fixture.everyKind(at: src, bigFile: 1 << 20)
        let repo = MemoryRepository(keys: keys.write)
        let m = try await Archiver().run(options: BackupOptions(paths: [src]), keys: keys.write, target: repo,
                                         now: Timestamp(seconds: 1_800_000_000)).manifest
        func list(_ path: String?, recursive: Bool = false) async throws -> [ListedEntry] {
            var out: [ListedEntry] = []
            try await Restorer().list(manifest: m, readKey: keys.tenant.readKey, chunkIDKey: keys.tenant.chunkIDKey,
                source: repo,
                                      subpath: path.map { Array($0.utf8) }, recursive: recursive) { out.append($0) }
            return out
        }

        // The top level holds the first component of each backed-up path (kept whole).
        let rel = String(src.dropFirst())
        #expect(try await list(nil).map(\.path) == ["tmp"])
        #expect(try await list(nil).first?.type == "directory")
        let bySlash = try await list(src).map(\.path), byRelative = try await list(rel).map(\.path)
        #expect(bySlash == byRelative && bySlash.count > 5)

        // A directory's entries: every name the directory holds, with what lstat says.
        let entries = try await list("\(rel)/")
        var names: [[UInt8]] = []
        let dir = try #require(opendir(src))
        while let d = readdir(dir) {
            let name = withUnsafeBytes(of: d.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            if name != [0x2e] && name != [0x2e, 0x2e] { names.append(name) }
        }
        closedir(dir)
        #expect(Set(entries.map(\.pathHex)) == Set(names.map { hexString(Array("\(rel)/".utf8) + $0) }))
        for e in entries where e.type != "hardlink" {
            var st = stat()
            var cpath = (Array("/".utf8) + (try #require(fromHex(e.pathHex)))).map { CChar(bitPattern: $0) }
                + [0]
            try Fixture.check(lstat(&cpath, &st), "lstat \(e.path)")
            #expect(e.mode == UInt32(st.st_mode) & 0o7777, "\(e.path)")
            #expect(e.uid == st.st_uid && e.gid == st.st_gid, "\(e.path)")
            #expect(e.mtime == Int64(st.st_mtim.tv_sec) && e.mtimeNanoseconds == UInt32(st.st_mtim.tv_nsec),
                "\(e.path)")
            if e.type == "file" { #expect(e.size == UInt64(st.st_size), "\(e.path)") }
        }
        #expect(entries.first { $0.path == "\(rel)/link-relative" }?.linkTarget == "regular.txt")
        #expect(entries.first { $0.path == "\(rel)/setuid" }?.mode == 0o4755)
        #expect(entries.first { $0.pathHex == hexString(Array("\(rel)/".utf8) + Fixture.nonUTF8Name) }?.type
            == "file")

        // One file by its path; a directory's subtree, depth first in tree order.
        let deep = try await list("\(rel)/a/b/c/deep.txt")
        #expect(deep.count == 1 && deep[0].type == "file" && deep[0].size == 5000)
        #expect(try await list("\(rel)/a", recursive: true).map(\.path)
            == ["\(rel)/a/b", "\(rel)/a/b/c", "\(rel)/a/b/c/deep.txt", "\(rel)/a/hard2"])
        #expect(try await list("\(rel)/a").map(\.path) == ["\(rel)/a/b", "\(rel)/a/hard2"])
        #expect(try await list("\(rel)/emptydir", recursive: true).isEmpty)
        // Recursively: every path under src, as a directory walk finds them.
        var walked: Set<String> = []
        let walker = try #require(FileManager.default.enumerator(atPath: src))
        while let p = walker.nextObject() as? String { walked.insert(p) }
        let all = try await list(rel, recursive: true)
        #expect(Set(all.filter { $0.pathHex == hexString(Array($0.path.utf8)) }.map {
            String($0.path.dropFirst(rel.count + 1))
        })
                == walked.filter { !$0.unicodeScalars.contains("\u{FFFD}") })
        #expect(all.count == walked.count + (walked.contains { $0.unicodeScalars.contains("\u{FFFD}") } ? 0 : 1))
        // A hard link names the file it links to; a device its numbers (when the fixture could make one).
        let hard = try #require(all.first { $0.path == "\(rel)/a/hard2" })
        #expect(hard.kind == .hardlink && hard.linkTarget == "\(rel)/hard1"
            && hard.linkTargetHex == hexString(Array("\(rel)/hard1".utf8)))
        if let dev = all.first(where: { $0.path == "\(rel)/chardev" }) {
            #expect(dev.kind == .charDevice && dev.deviceMajor == 1 && dev.deviceMinor == 3)
        }

        // A path the snapshot does not hold, or that goes through a file.
        for missing in ["\(rel)/nope", "\(rel)/regular.txt/x", "\(rel)/../etc"] {
            do {
                _ = try await list(missing)
                Issue.record("\(missing) was listed")
            } catch let e as ArchiveError {
                #expect(e.code == .notFound, "\(missing): \(e)")
            }
        }
    }
}

private func fromHex(_ s: String) -> [UInt8]? {
    var out: [UInt8] = []
    var it = s.utf8.makeIterator()
    while let a = it.next(), let b = it.next() {
        guard let v = UInt8(String(decoding: [a, b], as: UTF8.self), radix: 16) else { return nil }
        out.append(v)
    }
    return out
}

import Foundation
import Testing
import CRedoubtSys
import RedoubtClient
import RedoubtCore
import RedoubtKMS
@testable import RedoubtServer

/// Backup through the real server with the real archiver, restore with the real
/// restorer, over TLS, and compare every attribute the tree format records.
@Suite(.serialized) struct EndToEndRestoreTests {
    /// Builds a tree with every kind of entry; returns the notes of what was skipped.
    func makeTree(_ root: URL) throws -> [String] {
        var skipped: [String] = []
        let fm = FileManager.default
        try fm.createDirectory(at: root.appendingPathComponent("dir/sub/empty"), withIntermediateDirectories: true)
        try Data("hello\n".utf8).write(to: root.appendingPathComponent("dir/hello.txt"))
        fm.createFile(atPath: root.appendingPathComponent("empty").path, contents: Data())
        var rng = SystemRandomNumberGenerator()
        try Data((0..<(9 << 20)).map { _ in UInt8.random(in: 0...255,
            using: &rng) }).write(to: root.appendingPathComponent("big.bin"))
        try fm.createSymbolicLink(atPath: root.appendingPathComponent("link").path,
            withDestinationPath: "dir/hello.txt")
        try fm.createSymbolicLink(atPath: root.appendingPathComponent("dangling").path,
            withDestinationPath: "/nonexistent/target")
        #expect(link(root.appendingPathComponent("dir/hello.txt").path,
            root.appendingPathComponent("hardlink").path) == 0)
        #expect(mkfifo(root.appendingPathComponent("fifo").path, 0o640) == 0)
        if mknod(root.appendingPathComponent("null").path, S_IFCHR | 0o666, dev_t(0x103)) != 0 {
            skipped.append("char device (not root)")
        }
        // A name that is not UTF-8.
        var raw = Array(root.path.utf8) + [0x2f, 0x6e, 0xff, 0xfe, 0]
        let fd2 = raw.withUnsafeMutableBufferPointer {
            b in b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) {
                open($0, O_CREAT | O_WRONLY, 0o644)
            }
        }
        if fd2 >= 0 { _ = write(fd2, "latin1", 6); close(fd2) }
        // Setuid bit, nanosecond mtime, an xattr.
        let su = root.appendingPathComponent("setuid").path
        fm.createFile(atPath: su, contents: Data("x".utf8))
        chmod(su, 0o4755)
        var times = [timespec(tv_sec: 1_600_000_000, tv_nsec: 123_456_789), timespec(tv_sec: 1_600_000_000,
            tv_nsec: 987_654_321)]
        utimensat(AT_FDCWD, su, &times, AT_SYMLINK_NOFOLLOW)
        if lsetxattr(root.appendingPathComponent("dir/hello.txt").path, "user.redoubt-test", "v1", 2, 0) != 0 {
            skipped.append("user xattrs")
        }
        // A sparse file: 64 MiB with two small data regions.
        let sp = open(root.appendingPathComponent("sparse.img").path, O_CREAT | O_WRONLY, 0o644)
        ftruncate(sp, 64 << 20)
        _ = pwrite(sp, "begin", 5, 0)
        _ = pwrite(sp, "middle", 6, 32 << 20)
        close(sp)
        return skipped
    }

    struct Entry: Equatable, CustomStringConvertible {
        var type: mode_t, mode: mode_t, uid: uid_t, gid: gid_t, size: off_t, mtimeSec: Int, mtimeNsec: Int,
            link: String, digest: String, xattr: String, nlinkGroup: Bool, sparse: Bool
        var description: String {
            """
                type \(type) mode \(String(mode, radix: 8)) size \(size) mtime \(mtimeSec).\(mtimeNsec) link \(link) \
                xattr \(xattr)
                """
        }
    }

    func scan(_ root: URL) -> [String: Entry] {
        var out: [String: Entry] = [:]
        func walk(_ rel: [UInt8]) {
            let full = Array(root.path.utf8) + (rel.isEmpty ? [] : [0x2f] + rel)
            var st = stat()
            let r = (full + [0]).withUnsafeBufferPointer {
                b in b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) { lstat($0, &st) }
            }
            guard r == 0 else { return }
            let path = String(decoding: full, as: UTF8.self)
            var link = "", digest = "", xattr = ""
            if st.st_mode & S_IFMT == S_IFLNK {
                link = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? "?"
            }
            if st.st_mode & S_IFMT == S_IFREG {
                let fd = (full + [0]).withUnsafeBufferPointer {
                    b in b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) { open($0, O_RDONLY) }
                }
                var data = [UInt8](repeating: 0, count: Int(st.st_size))
                if st.st_size > 0 { _ = data.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) } }
                close(fd)
                digest = hexString(Array(data.reduce(into: UInt64(1469598103934665603)) {
                    $0 = ($0 ^ UInt64($1)) &* 1099511628211
                }.littleEndianBytes))
                var buf = [CChar](repeating: 0, count: 64)
                let n = lgetxattr(path, "user.redoubt-test", &buf, 64)
                if n > 0 { xattr = String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) }
            }
            let isDir = st.st_mode & S_IFMT == S_IFDIR
            out[String(decoding: rel, as: UTF8.self) + (rel.contains(0xff) ? "#raw" : "")] = Entry(
                type: st.st_mode & S_IFMT, mode: st.st_mode & 0o7777, uid: st.st_uid, gid: st.st_gid,
                    size: isDir ? 0 : st.st_size,
                mtimeSec: isDir ? 0 : st.st_mtim.tv_sec, mtimeNsec: isDir ? 0 : st.st_mtim.tv_nsec, link: link,
                    digest: digest, xattr: xattr,
                nlinkGroup: st.st_mode & S_IFMT == S_IFREG && st.st_nlink > 1,
                    sparse: st.st_blocks * 512 < st.st_size / 2)
            if isDir {
                guard let d = (full
                    + [0]).withUnsafeBufferPointer({ b in b.baseAddress!.withMemoryRebound(to: CChar.self,
                    capacity: b.count) { opendir($0) } }) else {
                    return
                }
                var names: [[UInt8]] = []
                while let e = readdir(d) {
                    let name = withUnsafeBytes(of: e.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
                    if name != [0x2e] && name != [0x2e, 0x2e] { names.append(name) }
                }
                closedir(d)
                for n in names { walk(rel.isEmpty ? n : rel + [0x2f] + n) }
            }
        }
        walk([])
        return out
    }

    @Test func everyKindOfEntryComesBackThroughTheServer() async throws {
        let server = try await TestServer.start()
        let keys = try TenantKeys.generate()
        try await server.createTenant("acme", keys: keys)
        let (wc, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let (rc, restorer) = try await server.enroll(tenant: "acme", role: "restorer", name: "vault")
        let src = server.dir.appendingPathComponent("src")
        let skipped = try makeTree(src)
        let result = try await Archiver().run(options: BackupOptions(paths: [src.path], cachePath: wc.cachePath),
            keys: try wc.writeKeySet(),
                                              target: writer, now: Timestamp(seconds: testNow))
        #expect(result.warnings.isEmpty, "\(result.warnings)")

        let readKey = try await PassphraseKeyProvider(passphrase: SecretBytes(copying: Array("pw".utf8)), logN: 10)
            .unwrap(try rc.wrappedReadKey(), context: KeyContext(tenant: "acme", keyVersion: 1))
        let manifest = try Manifest.parse(try await restorer.manifestBytes(result.manifest.id.description),
            expectedID: result.manifest.id)
        try manifest.verify(tenant: "acme", host: "web1", hostKey: try wc.writeKeySet().signingKey.publicKey,
            readKeyID: readKey.publicKey.keyID)
        let target = server.dir.appendingPathComponent("restored")
        let restored = try await Restorer().restore(manifest: manifest, readKey: readKey,
            chunkIDKey: try rc.sharedMaterial().chunkIDKey,
                                                    source: restorer, target: target.path)
        #expect(restored.damaged.isEmpty)

        let a = scan(src), b = scan(URL(fileURLWithPath: target.path + src.path))
        #expect(Set(a.keys) == Set(b.keys), "entries differ: \(Set(a.keys).symmetricDifference(Set(b.keys)))")
        for (k, ea) in a where k != "" {
            #expect(b[k] == ea, "\(k): source \(ea), restored \(String(describing: b[k]))")
        }
        #expect(b["sparse.img"]?.sparse == true, "holes were filled in on restore")
        #expect(b["hardlink"]?.nlinkGroup == true, "the hard link was restored as a copy")

        // Second run with the cache reads nothing and uploads nothing new.
        let again = try await Archiver().run(options: BackupOptions(paths: [src.path], cachePath: wc.cachePath),
            keys: try wc.writeKeySet(),
                                             target: writer, now: Timestamp(seconds: testNow + 100))
        // Only trees may change (reading files moved their atimes); no file data is re-sent.
        #expect(again.bytesRead == 0 && again.bytesUploaded < 64 << 10,
            "read \(again.bytesRead), uploaded \(again.bytesUploaded)")
        if !skipped.isEmpty { print("skipped: \(skipped)") }
        await writer.shutdown()
        await restorer.shutdown()
        await server.stop()
    }
}

extension UInt64 {
    var littleEndianBytes: [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: self >> (8 * $0)) } }
}

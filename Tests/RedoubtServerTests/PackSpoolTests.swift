import Crypto
import Foundation
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer
import RedoubtStore
import Testing

/// Pack bodies are spooled to files under the server's home (docs/PROTOCOL.md §3.2.1): every
/// way an upload can end leaves no spool file, and a refused pack leaves nothing stored.
extension RequestLimitsTests {
    func spoolFiles(_ w: World) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: w.server.home.root.appendingPathComponent("uploads").path)
    }

    @Test func aRefusedPackLeavesNoSpoolFileAndNothingStored() async throws {
        // The default idle timeout: this test sends whole packs, and under a loaded machine a
        // few seconds without a byte (the suite's short timeout) cut uploads it means to succeed.
        let w = try await world(ServerLimits())
        let keys = try w.writerConfig.writeKeySet()
        // A pack whose bytes are not what its ID names.
        let random = (0..<(2 << 20)).map { _ in UInt8.random(in: 0...255) }
        let wrongID = PackID(bytes: Array(SHA256.hash(data: random + [0])))!
        _ = await refused("E_INTEGRITY", "a pack whose bytes do not hash to its ID") {
            _ = try await w.writer.uploadPack(id: wrongID, bytes: random)
        }
        // A format-2 pack, hashed right, whose list names a chunk its bytes are not.
        var scratch: [UInt8] = []
        func seal(_ content: [UInt8]) throws -> SealedChunk {
            try content.withUnsafeBytes {
                try ConvergentSealing.seal($0, compressor: try ChunkCompressor(), chunkIDKey: keys.shared.chunkIDKey,
                                           scratch: &scratch)
            }
        }
        let claimed = try seal((0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
        let garbage = try seal([UInt8](repeating: 0x41, count: 200_000))
        var writer = try PackWriter(recipient: keys.shared.readPublicKey)
        try writer.append(SealedChunk(id: claimed.id, seal: claimed.seal, bytes: garbage.bytes))
        let forged = try writer.finish()
        let e = await refused("E_INTEGRITY", "a pack whose chunk bytes do not hash to their ID") {
            _ = try await w.writer.uploadPack(id: forged.id, bytes: forged.bytes)
        }
        #expect(e?.message.contains("do not hash to the ID") == true, "\(String(describing: e))")
        for id in [wrongID, forged.id] {
            #expect(try await w.server.service.catalog.pack(tenant: "acme", id: id.description) == nil)
            #expect(try await w.server.service.store.head(RepositoryService.packKey(tenant: "acme", id: id)) == nil)
        }
        #expect(try spoolFiles(w) == [])
        // A good pack goes through the spool into the store, and its file is gone too.
        let (packs, _) = try makeSnapshot(keys: keys, files: [("good.bin", (0..<(3 << 20)).map {
            _ in UInt8.random(in: 0...255)
        })])
        for p in packs {
            #expect(try await w.writer.uploadPack(id: p.id, bytes: p.bytes).created)
            #expect(try await w.server.service.store.get(RepositoryService.packKey(tenant: "acme",
                id: p.id)) == p.bytes)
        }
        #expect(try spoolFiles(w) == [])
        try await w.victimRestores()
        await w.stop()
    }

    @Test func aBodyCutMidwayLeavesNoSpoolFile() async throws {
        // The client cuts the body itself: the suite's short idle timeout would only race it.
        let w = try await world(ServerLimits())
        let c = try await RawConnection.open(port: w.port, tls: try tls(w, asWriter: true))
        let id = String(repeating: "ab", count: 32)
        try await c.send(Array("""
            PUT /v1/packs/\(id) HTTP/1.1\r\nhost: localhost\r\ncontent-length: \(8 << 20)\r\n\r\n
            """.utf8))
        try await c.send([UInt8](repeating: 7, count: 512 << 10))
        // The body is being spooled: its file exists while the upload is open.
        var spooling = false
        for _ in 0..<100 where !spooling {
            spooling = try spoolFiles(w).count == 1
            if !spooling { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(spooling, "no spool file while the body arrived")
        await c.close()
        var left = try spoolFiles(w)
        for _ in 0..<100 where !left.isEmpty {
            try await Task.sleep(for: .milliseconds(100))
            left = try spoolFiles(w)
        }
        #expect(left == [], "a body cut midway left its spool file")
        #expect(try await w.server.service.catalog.pack(tenant: "acme", id: id) == nil)
        try await w.victimRestores()
        await w.stop()
    }

    @Test func spoolFilesLeftByACrashAreClearedAtStart() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-spool-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Data([1, 2, 3]).write(to: dir.appendingPathComponent("upload-left-by-a-crash"))
        _ = try UploadSpool.open(dir)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == [])
    }
}

import Foundation
import Synchronization
import Testing
import RedoubtMedia
import RedoubtClient
import RedoubtCore
import RedoubtKMS
import RedoubtStore
@testable import RedoubtServer

/// A host that is taken, with its own credential and write key set, attacks its
/// neighbours in the same tenant: it must not learn of their chunks nor make them reuse
/// bytes it uploaded (DESIGN.md §2, "Hosts are not trusted by each other"). Nothing here
/// needs real immutable flags: objects live in a `MemoryStore`.
@Suite(.serialized, .timeLimit(.minutes(5))) struct HostileHostTests {
    struct Neighbours {
        let server: TestServer
        let victim: (ClientConfig, APIClient)
        let attacker: (ClientConfig, APIClient)
        let restorer: (ClientConfig, APIClient)

        func stop() async {
            await victim.1.shutdown()
            await attacker.1.shutdown()
            await restorer.1.shutdown()
            await server.stop()
        }
    }

    /// Runs `body` against a server with a victim host, an attacker host and a restorer in
    /// one tenant, and stops everything whether or not it throws.
    func withNeighbours(_ body: (Neighbours) async throws -> Void) async throws {
        let server = try await TestServer.start(inMemory: true)
        #expect(server.service.store is MemoryStore)
        let n: Neighbours
        do {
            try await server.createTenant("acme", keys: try TenantKeys.generate())
            n = Neighbours(server: server, victim: try await server.enroll(tenant: "acme", role: "writer",
                name: "web1"),
                           attacker: try await server.enroll(tenant: "acme", role: "writer", name: "web2"),
                           restorer: try await server.enroll(tenant: "acme", role: "restorer", name: "vault"))
        } catch {
            await server.stop()
            throw error
        }
        do { try await body(n) } catch {
            await n.stop()
            throw error
        }
        await n.stop()
    }

    /// Backs up `dir` as the victim would, through the real archiver and the API.
    func backUp(_ dir: URL, as host: (ClientConfig, APIClient), at seconds: Int64) async throws -> BackupResult {
        try await Archiver().run(options: BackupOptions(paths: [dir.path], cachePath: host.0.cachePath),
            keys: try host.0.writeKeySet(),
                                 target: host.1, now: Timestamp(seconds: seconds))
    }

    /// Restores a snapshot with the restorer's credential and returns the restored file's bytes.
    func restoredFile(_ n: Neighbours, _ snapshot: SnapshotID, dir: String, file: String) async throws -> [UInt8] {
        let (rc, restorer) = n.restorer
        let readKey = try await PassphraseKeyProvider(passphrase: SecretBytes(copying: Array("pw".utf8)), logN: 10)
            .unwrap(try rc.wrappedReadKey(), context: KeyContext(tenant: "acme", keyVersion: 1))
        let manifest = try Manifest.parse(try await restorer.manifestBytes(snapshot.description), expectedID: snapshot)
        let target = n.server.dir.appendingPathComponent("restore-\(UUID().uuidString)")
        let result = try await Restorer().restore(manifest: manifest, readKey: readKey,
            chunkIDKey: try rc.sharedMaterial().chunkIDKey,
                                                  source: restorer, target: target.path)
        #expect(result.damaged.isEmpty, "restore reported damage: \(result.damaged)")
        // The snapshot keeps the backed-up path whole below the target.
        let path = target.path + n.server.dir.appendingPathComponent(dir).path + "/" + file
        return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// The attacker's guesses at a small secret in the victim's file: one file content per
    /// PIN, chunk IDs computed (sealed, format 2) with the write key set every host holds.
    func guesses(_ key: ChunkIDKey, pins: Range<Int>) throws -> [ChunkID] {
        let compressor = try ChunkCompressor()
        var scratch: [UInt8] = []
        return try pins.map { pin in
            try Array("backup-pin=\(String(format: "%04d", pin))\n".utf8).withUnsafeBytes {
                try ConvergentSealing.seal($0, compressor: compressor, chunkIDKey: key, scratch: &scratch).id
            }
        }
    }

    /// The chunk a host would store for `content` (one chunk: smaller than the chunker's minimum).
    func sealedChunk(_ content: [UInt8], _ keys: WriteKeySet) throws -> SealedChunk {
        var scratch: [UInt8] = []
        return try content.withUnsafeBytes {
            try ConvergentSealing.seal($0, compressor: try ChunkCompressor(), chunkIDKey: keys.shared.chunkIDKey,
                                       scratch: &scratch)
        }
    }

    @Test func aHostCannotConfirmGuessesAboutAnotherHostsFiles() async throws {
        try await withNeighbours { n in
            let src = n.server.dir.appendingPathComponent("etc")
            try FileManager.default.createDirectory(at: src, withIntermediateDirectories: true)
            try Data("backup-pin=4711\n".utf8).write(to: src.appendingPathComponent("pin.conf"))
            _ = try await backUp(src, as: n.victim, at: testNow)

            let ids = try guesses(try n.attacker.0.writeKeySet().shared.chunkIDKey, pins: 0..<10_000)
            let found = try await n.attacker.1.chunkLocations(ids)
            #expect(found.isEmpty, "the attacker confirmed \(found.count) guess(es) about another host's file")
            // The victim itself still deduplicates against its own chunks.
            #expect(try await n.victim.1.chunkLocations(ids).count == 1)

            // Tenant-wide dedup, once an admin opts in, answers exactly that question: the
            // risk the option's help names, shown here so this test can tell the scopes apart.
            let info = try await n.server.admin.setDedupScope(tenant: "acme", scope: "tenant", requestID: nil)
            #expect(info.dedupScope == "tenant")
            #expect(try await n.attacker.1.chunkLocations(ids).count == 1)
        }
    }

    @Test func aPoisonedChunkIsNeverReusedByAnotherHost() async throws {
        try await withNeighbours { n in
            let content = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            let keys = try n.attacker.0.writeKeySet()
            let target = content.withUnsafeBytes { keys.shared.chunkIDKey.chunkID(for: $0) }

            // The attacker uploads a well-formed pack whose public list claims the victim's
            // future chunk, with garbage inside: the server, which has no key, accepts it.
            var writer = try PackWriter(recipient: keys.shared.readPublicKey, version: 1)
            let garbage = [UInt8](repeating: 0x41, count: content.count)
            try writer.append(id: target, kind: .none, rawLength: garbage.count, payload: garbage)
            let poisoned = try writer.finish()
            _ = try await n.attacker.1.uploadPack(id: poisoned.id, bytes: poisoned.bytes)

            // The victim then backs up a file with exactly that content.
            let src = n.server.dir.appendingPathComponent("srv")
            try FileManager.default.createDirectory(at: src, withIntermediateDirectories: true)
            try Data(content).write(to: src.appendingPathComponent("data.bin"))
            let result = try await backUp(src, as: n.victim, at: testNow)
            #expect(!result.manifest.header.packs.contains(poisoned.id),
                "the victim's snapshot names the attacker's pack")
            #expect(try await restoredFile(n, result.manifest.id, dir: "srv", file: "data.bin") == content)
        }
    }

    @Test func deepVerifyNamesEverySnapshotThatReusedAPoisonedChunkAndTheHostThatUploadedIt() async throws {
        try await withNeighbours { n in
            // Format-1 chunks cannot be checked without keys: a format-1 snapshot that reused a
            // poisoned chunk (under tenant-wide dedup, before format 2) is what deep verify finds.
            _ = try await n.server.admin.setDedupScope(tenant: "acme", scope: "tenant", requestID: nil)
            let content = (0..<150_000).map { UInt8(truncatingIfNeeded: $0 &* 17 &+ 3) }
            let keys = try n.attacker.0.writeKeySet()
            let target = content.withUnsafeBytes { keys.shared.chunkIDKey.chunkID(for: $0) }
            var writer = try PackWriter(recipient: keys.shared.readPublicKey, version: 1)
            try writer.append(id: target, kind: .none, rawLength: content.count, payload: [UInt8](repeating: 0x42,
                count: content.count))
            let poisoned = try writer.finish()
            _ = try await n.attacker.1.uploadPack(id: poisoned.id, bytes: poisoned.bytes)

            // The victim's format-1 backup, as a format-1 client made it: it reused the chunk.
            let victimID = try await commitFormatOneSnapshot(
                [("data.bin", content), ("clean.txt", Array("clean\n".utf8))], as: n.victim,
                isHeld: { $0 == target }, otherPacks: [poisoned.id], nonce: 3)
            // A format-2 backup alongside is clean, and deep verify reads both formats.
            let clean = try await backUp(n.server.dir.appendingPathComponent("cfg-writer-web1"), as: n.victim,
                                         at: testNow + 10)

            let (rc, restorer) = n.restorer
            let readKey = try await PassphraseKeyProvider(passphrase: SecretBytes(copying: Array("pw".utf8)), logN: 10)
                .unwrap(try rc.wrappedReadKey(), context: KeyContext(tenant: "acme", keyVersion: 1))
            var manifests: [Manifest] = []
            for s in try await restorer.snapshots() {
                manifests.append(try Manifest.parse(try await restorer.manifestBytes(s.id),
                    expectedID: SnapshotID(hex: s.id)))
            }
            let report = try await DeepVerifier().verify(manifests, readKey: readKey,
                chunkIDKey: try rc.sharedMaterial().chunkIDKey,
                                                         source: restorer)
            #expect(report.damagedPacks.map(\.pack) == [poisoned.id.description])
            #expect(report.affectedSnapshots.map(\.snapshot) == [victimID])
            #expect(report.packsChecked == Set(manifests.flatMap(\.header.packs)).count)
            #expect(report.affectedSnapshots.first?.problem.contains("data.bin") == true, "\(report.affectedSnapshots)")
            #expect(!report.affectedSnapshots.contains { $0.snapshot == clean.manifest.id.description })

            // Reported, the server names the host whose credential uploaded the pack.
            let info = try await restorer.reportDamagedPack(poisoned.id, problem: report.damagedPacks[0].problem)
            #expect(info.uploader == "web2")
            let flagged = try await n.server.admin.principals().filter { ($0.damagedPacks ?? 0) > 0 }.map(\.name)
            #expect(flagged == ["web2"])
            // A host can neither report a pack nor clear anything.
            await refused("E_FORBIDDEN", "a host reporting a pack") {
                _ = try await n.attacker.1.reportDamagedPack(poisoned.id, problem: "x")
            }
        }
    }

    /// Tenant-wide dedup with format 2: a taken host (its own credential and write key
    /// set) that knows the victim's future file cannot make the victim reuse anything but
    /// the exact bytes the victim would have stored, and the victim restores bit for bit.
    @Test func underTenantScopeAForgedChunkIsRefusedAndTheVictimRestoresBitForBit() async throws {
        try await withNeighbours { n in
            _ = try await n.server.admin.setDedupScope(tenant: "acme", scope: "tenant", requestID: nil)
            let keys = try n.attacker.0.writeKeySet()
            let content = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            let future = try sealedChunk(content, keys)

            // 1. A format-2 pack whose list claims the victim's future chunk with garbage
            //    inside: the server re-hashes every chunk and refuses it, naming both.
            let garbage = try sealedChunk([UInt8](repeating: 0x41, count: content.count), keys)
            var forged = try PackWriter(recipient: keys.shared.readPublicKey)
            try forged.append(SealedChunk(id: future.id, seal: future.seal, bytes: garbage.bytes))
            let refusedPack = try forged.finish()
            let e = await refused("E_INTEGRITY", "a pack whose chunk bytes do not hash to their ID") {
                _ = try await n.attacker.1.uploadPack(id: refusedPack.id, bytes: refusedPack.bytes)
            }
            #expect(e?.message.contains(future.id.description) == true, "\(String(describing: e))")
            #expect(e?.message.contains(refusedPack.id.description) == true, "\(String(describing: e))")

            // 2. A format-1 pack claiming it is accepted (nothing to check without keys) but
            //    is never offered to another host.
            var v1 = try PackWriter(recipient: keys.shared.readPublicKey, version: 1)
            try v1.append(id: future.id, kind: .none, rawLength: content.count,
                          payload: [UInt8](repeating: 0x42, count: content.count))
            let unverified = try v1.finish()
            _ = try await n.attacker.1.uploadPack(id: unverified.id, bytes: unverified.bytes)
            #expect(try await n.victim.1.chunkLocations([future.id]).isEmpty)
            #expect(try await n.attacker.1.chunkLocations([future.id]) == [future.id: unverified.id])

            let src = n.server.dir.appendingPathComponent("srv")
            try FileManager.default.createDirectory(at: src, withIntermediateDirectories: true)
            try Data(content).write(to: src.appendingPathComponent("data.bin"))
            let first = try await backUp(src, as: n.victim, at: testNow)
            #expect(!first.manifest.header.packs.contains(unverified.id),
                    "the victim's snapshot names the attacker's unverified pack")
            #expect(try await restoredFile(n, first.manifest.id, dir: "srv", file: "data.bin") == content)

            // 3. The right bytes for the victim's next file, under an index that lies about
            //    the key and length: accepted (the bytes are right), reused by the victim,
            //    whose restore takes key and length from its own trees, so it is exact.
            let next = (0..<300_000).map { UInt8(truncatingIfNeeded: ($0 / 3) &* 13 &+ 1) }
            let honest = try sealedChunk(next, keys)
            let lie = try #require(ChunkSeal(key: [UInt8](repeating: 9, count: 32), rawLength: 17))
            var right = try PackWriter(recipient: keys.shared.readPublicKey)
            try right.append(SealedChunk(id: honest.id, seal: lie, bytes: honest.bytes))
            let rightBytes = try right.finish()
            _ = try await n.attacker.1.uploadPack(id: rightBytes.id, bytes: rightBytes.bytes)
            #expect(try await n.victim.1.chunkLocations([honest.id]) == [honest.id: rightBytes.id])
            try Data(next).write(to: src.appendingPathComponent("next.bin"))
            let second = try await backUp(src, as: n.victim, at: testNow + 100)
            #expect(second.manifest.header.packs.contains(rightBytes.id), "the victim did not reuse the verified chunk")
            #expect(try await restoredFile(n, second.manifest.id, dir: "srv", file: "next.bin") == next)
            #expect(try await restoredFile(n, second.manifest.id, dir: "srv", file: "data.bin") == content)
        }
    }

    /// The server's own API seen by a backup, counting the chunk IDs it is asked about.
    final class CountingTarget: PackLocatingBackupTarget, SpooledPackTarget, Sendable {
        let base: APIClient
        let asked = Mutex(Set<ChunkID>())
        init(_ base: APIClient) { self.base = base }
        func existingChunks(_ ids: [ChunkID]) async throws -> Set<ChunkID> { try await base.existingChunks(ids) }
        func existingChunkLocations(_ ids: [ChunkID]) async throws -> [ChunkID: PackID] {
            asked.withLock { $0.formUnion(ids) }
            return try await base.existingChunkLocations(ids)
        }
        func uploadedPacks(_ packs: [PackID]) async throws -> Set<PackID> { try await base.uploadedPacks(packs) }
        func upload(pack: FinishedPack) async throws { try await base.upload(pack: pack) }
        func upload(spooled pack: SpooledPack) async throws { try await base.upload(spooled: pack) }
        func commit(manifest: Manifest) async throws { try await base.commit(manifest: manifest) }
    }

    /// A host confirms its cached chunks by asking which of its packs the server holds; the
    /// server answers only about packs the asking credential uploaded. A taken host that
    /// copies its neighbour's metadata cache (pack IDs and all) learns nothing and reuses
    /// nothing: it reads and uploads every file itself, under either dedup scope.
    @Test func packsConfirmOnlyTheirUploadersChunksEvenWithAStolenCache() async throws {
        try await withNeighbours { n in
            let src = n.server.dir.appendingPathComponent("var")
            try FileManager.default.createDirectory(at: src, withIntermediateDirectories: true)
            var contents: [String: [UInt8]] = [:]
            for i in 0..<12 {
                contents["f\(i)"] = (0..<(40_000 * (i + 1))).map {
                    UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 13 &+ i)
                }
                try Data(contents["f\(i)"]!).write(to: src.appendingPathComponent("f\(i)"))
            }
            let first = try await backUp(src, as: n.victim, at: testNow)
            let packs = first.manifest.header.packs
            #expect(try await n.victim.1.uploadedPacks(packs) == Set(packs))
            #expect(try await n.attacker.1.uploadedPacks(packs).isEmpty)

            // The victim's next backup asks about none of its files' chunks.
            let (cached, problem) = MetadataCache.load(path: n.victim.0.cachePath,
                chunkIDKey: try n.victim.0.writeKeySet().shared.chunkIDKey)
            #expect(problem == nil && !cached.packs.isEmpty && Set(cached.packs).isSubset(of: packs))
            let fileChunks = Set(cached.entries.values.flatMap(\.content))
            let treeChunks = Set(cached.trees.map(\.id))
            #expect(!treeChunks.isEmpty && cached.trees.allSatisfy { $0.pack.map(packs.contains) ?? false })
            let counting = CountingTarget(n.victim.1)
            let second = try await Archiver().run(options: BackupOptions(paths: [src.path],
                cachePath: n.victim.0.cachePath), keys: try n.victim.0.writeKeySet(), target: counting,
                now: Timestamp(seconds: testNow + 10))
            #expect(second.filesUnchanged == 12 && second.bytesRead == 0)
            #expect(counting.asked.withLock { $0.isDisjoint(with: fileChunks.union(treeChunks)) })

            // The attacker takes the victim's cache as its own: the same files, the same
            // stat, packs named for every chunk. None is its to reuse.
            for scope in ["host", "tenant"] {
                if scope == "tenant" { _ = try await n.server.admin.setDedupScope(tenant: "acme", scope: scope,
                    requestID: nil) }
                #expect(try await n.attacker.1.uploadedPacks(packs).isEmpty, "\(scope) scope")
                try? FileManager.default.removeItem(atPath: n.attacker.0.cachePath)
                try FileManager.default.copyItem(atPath: n.victim.0.cachePath, toPath: n.attacker.0.cachePath)
                let stolen = try await backUp(src, as: n.attacker, at: testNow + 20)
                // Under tenant scope the attacker may reuse verified chunks, asked one by one
                // as the scope allows; under host scope nothing of the victim's.
                if scope == "host" {
                    #expect(stolen.filesUnchanged == 0)
                    #expect(Set(stolen.manifest.header.packs).isDisjoint(with: packs))
                    #expect(stolen.bytesRead == UInt64(contents.values.map(\.count).reduce(0, +)))
                }
                for (name, bytes) in contents {
                    #expect(try await restoredFile(n, stolen.manifest.id, dir: "var", file: name) == bytes)
                }
            }
        }
    }

    @Test func aReEnrolledHostStartsAFreshScope() async throws {
        try await withNeighbours { n in
            let src = n.server.dir.appendingPathComponent("home")
            try FileManager.default.createDirectory(at: src, withIntermediateDirectories: true)
            let content = Array("a re-imaged host must not reuse what its earlier credential uploaded\n".utf8)
            try Data(content).write(to: src.appendingPathComponent("notes.txt"))
            let first = try await backUp(src, as: n.victim, at: testNow)
            let chunk = try sealedChunk(content, try n.victim.0.writeKeySet()).id
            #expect(try await n.victim.1.chunkLocations([chunk]).count == 1)

            let principal = try #require(try await n.server.admin.principals().first {
                $0.name == "web1" && $0.role == "writer"
            })
            _ = try await n.server.admin.revokePrincipal(id: principal.id, requestID: nil)
            // Re-imaged: a new configuration directory, a new key, a new credential.
            let token = try await n.server.admin.createEnrollment(tenant: "acme", role: "writer", name: "web1",
                ttlSeconds: 3600).token
            let cfg = ClientConfig(path: n.server.dir.appendingPathComponent("cfg-writer-web1-reimaged").path)
            _ = try await ClientConfig.enroll(token: token, into: cfg, os: nil)
            let again = (cfg, try APIClient(credential: cfg.credential()))
            #expect(try await again.1.chunkLocations([chunk]).isEmpty,
                "a new credential inherited the old one's chunks")
            // Its first backup uploads the file anew, and both snapshots restore.
            let second = try await backUp(src, as: again, at: testNow + 100)
            #expect(Set(second.manifest.header.packs).isDisjoint(with: first.manifest.header.packs))
            #expect(try await restoredFile(n, first.manifest.id, dir: "home", file: "notes.txt") == content)
            #expect(try await restoredFile(n, second.manifest.id, dir: "home", file: "notes.txt") == content)
            await again.1.shutdown()
        }
    }

    @Test func wideningTheDedupScopeNeedsTheQuorumAndNarrowingDoesNot() async throws {
        try await withNeighbours { n in
            let bob = try await n.server.enrollAdmin("bob")
            await refused("E_APPROVAL_REQUIRED", "widening alone") {
                _ = try await n.server.admin.setDedupScope(tenant: "acme", scope: "tenant", requestID: nil)
            }
            let request = try #require(try await bob.requests().first { $0.action == "widen-dedup-scope" })
            _ = try await bob.decide(request: request.id, approve: true)
            let wide = try await n.server.admin.setDedupScope(tenant: "acme", scope: "tenant", requestID: request.id)
            #expect(wide.dedupScope == "tenant")
            // A host cannot change it at all; narrowing back is immediate.
            await refused("E_FORBIDDEN", "a host narrowing or widening") {
                _ = try await n.attacker.1.setDedupScope(tenant: "acme", scope: "tenant", requestID: nil)
            }
            let narrow = try await bob.setDedupScope(tenant: "acme", scope: "host", requestID: nil)
            #expect(narrow.dedupScope == "host")
            #expect(try await n.server.admin.tenants().first?.dedupScope == "host")
            await bob.shutdown()
        }
    }
}

/// A host's clock decides nothing: the server bounds the time a manifest claims, and
/// orders snapshots (and picks "latest") by its own commit time.
@Suite(.serialized, .timeLimit(.minutes(5))) struct HostClockTests {
    @Test func aSnapshotDatedAYearAheadOrCenturiesBackIsRefusedAndListingsStayReadable() async throws {
        let server = try await TestServer.start(inMemory: true)
        try await server.createTenant("acme", keys: try TenantKeys.generate())
        let (wc, host) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let keys = try wc.writeKeySet()
        let (goodPacks, good) = try makeSnapshot(keys: keys, files: [("real", [1, 2, 3])])
        for p in goodPacks { _ = try await host.uploadPack(id: p.id, bytes: p.bytes) }
        let committed = try await host.commit(manifestBytes: good.bytes)

        for (what, time) in [("a year ahead", testNow + 365 * 86400), ("year -1199", Int64(-99_999_999_999)),
                             ("before the host's newest snapshot", testNow - 3 * 86400)] {
            let (packs, decoy) = try makeSnapshot(keys: keys, files: [("decoy", [9])], time: time)
            for p in packs { _ = try await host.uploadPack(id: p.id, bytes: p.bytes) }
            await refused("E_CLOCK", "a snapshot dated \(what)") {
                _ = try await host.commit(manifestBytes: decoy.bytes)
            }
        }
        // Every role still lists, and what it lists is the real snapshot only.
        let (_, restorer) = try await server.enroll(tenant: "acme", role: "restorer", name: "vault")
        #expect(try await host.snapshots().map(\.id) == [committed.id])
        #expect(try await restorer.snapshots().map(\.id) == [committed.id])
        #expect(try await server.admin.snapshots().map(\.id) == [committed.id])
        let refusals = try await server.admin.audit().filter { $0.action == "commit" && $0.outcome == "denied" }
        #expect(refusals.count == 3)
        await host.shutdown()
        await restorer.shutdown()
        await server.stop()
    }

    @Test func latestIsTheLastCommittedWhateverTheHostClaims() async throws {
        let server = try await TestServer.start(inMemory: true)
        try await server.createTenant("acme", keys: try TenantKeys.generate())
        let (wc, host) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let keys = try wc.writeKeySet()
        // Claimed times run backwards (within the margin); the server's clock forwards.
        var ids: [String] = []
        for (i, claimed) in [testNow + 80_000, testNow + 40_000, testNow].enumerated() {
            server.clock.set(Date().addingTimeInterval(Double(i) * 3600))
            let (packs, m) = try makeSnapshot(keys: keys, files: [("f\(i)", [UInt8(i)])], time: claimed)
            for p in packs { _ = try await host.uploadPack(id: p.id, bytes: p.bytes) }
            ids.append(try await host.commit(manifestBytes: m.bytes).id)
        }
        #expect(try await server.admin.snapshots().map(\.id) == ids)
        let media = server.dir.appendingPathComponent("set.media")
        let writer = try MediaWriter(device: FileSequentialDevice(path: media.path, capacity: 64 << 20),
            setID: Array(repeating: 7, count: 16),
                                     pool: "offsite", tenant: "acme", blockSize: 64 << 10,
                                         created: "2026-12-05T00:00:00Z",
                                     retainUntil: nil, writer: "test")
        let summary = try await MediaExport.run(catalog: server.service.catalog, store: server.service.store,
            tenant: "acme",
                                                selection: .latest, writer: writer, actor: "test", now: Date()) { _ in }
        #expect(summary.snapshots == [ids[2]])
        await host.shutdown()
        await server.stop()
    }

    @Test func datesOutsideFourDigitYearsAreWrittenAtTheNearestEndAndReadBack() {
        #expect(WireDate.string(Date(timeIntervalSince1970: -99_999_999_999)) == "0001-01-01T00:00:00Z")
        #expect(WireDate.string(Date(timeIntervalSince1970: 1e15)) == "9999-12-31T23:59:59Z")
        #expect(WireDate.string(Date(timeIntervalSince1970: 0)) == "1970-01-01T00:00:00Z")
        #expect(WireDate.string(Date(timeIntervalSince1970: 951_782_400)) == "2000-02-29T00:00:00Z")
        for t in [-62_135_596_800.0, -1, 0, 951_782_399, 1_800_000_000, 253_402_300_799] {
            #expect(WireDate.parse(WireDate.string(Date(timeIntervalSince1970: t)))?.timeIntervalSince1970 == t)
        }
        #expect(WireDate.parse("2026-12-05T04:10:00.25+01:00")?.timeIntervalSince1970 == 1_796_440_200.25)
        for bad in ["", "2026-02-30T00:00:00Z", "2026-12-05 04:10:00Z", "2026-12-05T04:10:00", "-1199-01-01T00:00:00Z",
            "2026-12-05T04:10:00Zx"] {
            #expect(WireDate.parse(bad) == nil, "\(bad) was accepted")
        }
    }
}

/// A listing's answer is bounded by its page, not by how many snapshots a host committed.
@Suite(.serialized, .timeLimit(.minutes(5))) struct SnapshotPagingTests {
    @Test func aDecoyFloodIsListedAPageAtATimeAndTheClientStillSeesEverything() async throws {
        let server = try await TestServer.start(inMemory: true)
        try await server.createTenant("acme", keys: try TenantKeys.generate())
        let (wc, host) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let keys = try wc.writeKeySet()
        var committed: [String] = []
        let start = Date()
        for i in 0..<12 {
            server.clock.set(start.addingTimeInterval(Double(i)))
            let (packs, m) = try makeSnapshot(keys: keys, files: [("decoy", [UInt8(i)])])
            for p in packs { _ = try await host.uploadPack(id: p.id, bytes: p.bytes) }
            committed.append(try await host.commit(manifestBytes: m.bytes).id)
        }
        // Pages of 5: 5, 5, 2 — and the client's loop reads them all, in commit order.
        let first = try await server.admin.send(.GET, "/v1/snapshots?limit=5")
        let page = try WireDate.decoder().decode([Wire.SnapshotInfo].self, from: Data(first.body))
        #expect(page.map(\.id) == Array(committed.prefix(5)))
        let rest = try await server.admin.send(.GET, "/v1/snapshots?limit=5&after=\(committed[9])")
        #expect(try WireDate.decoder().decode([Wire.SnapshotInfo].self,
            from: Data(rest.body)).map(\.id) == Array(committed.suffix(2)))
        #expect(try await server.admin.snapshots(pageSize: 5).map(\.id) == committed)
        #expect(try await host.snapshots(pageSize: 5).map(\.id) == committed)
        // Out-of-range pages and cursors are refused, never answered with everything.
        for bad in ["limit=0", "limit=5001", "limit=x", "after=zz"] {
            await refused("E_BAD_REQUEST", bad) { _ = try await server.admin.send(.GET, "/v1/snapshots?\(bad)") }
        }
        await host.shutdown()
        await server.stop()
    }
}

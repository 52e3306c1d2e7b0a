import Crypto
import Synchronization
import Testing
@testable import RedoubtCore

/// Deterministic keys for tenant `n`.
private func tenantKeys(_ n: UInt8) throws -> TenantKeys {
    func secret(_ purpose: Int) -> SecretBytes {
        SecretBytes(copying: (0..<32).map { UInt8(truncatingIfNeeded: $0 * 7 + purpose * 59 + Int(n) * 31) })
    }
    return TenantKeys(readKey: try ReadPrivateKey(seed: secret(1)), chunkIDKey: try ChunkIDKey(secret: secret(2)),
                      chunkerSeed: try ChunkerSeed(secret: secret(3)))
}

/// Compresses (or not) and seals `chunks` into one pack, in order.
private func makePack(_ chunks: [[UInt8]], _ keys: TenantKeys) throws -> FinishedPack {
    var writer = try PackWriter(recipient: keys.readKey.publicKey, capacity: 1 << 16, version: 1)
    let compressor = try ChunkCompressor()
    for c in chunks {
        let id = keys.chunkIDKey.chunkID(for: c)
        try c.withUnsafeBytes { raw in
            try compressor.compress(raw) { kind, payload in
                try writer.append(id: id, kind: kind, rawLength: c.count, payload: payload)
            }
        }
    }
    return try writer.finish()
}

/// The ID an attacker who rewrote a pack would give it.
private func packID(of bytes: [UInt8]) -> PackID { PackID(bytes: Array(SHA256.hash(data: bytes)))! }

private func readAll(_ bytes: [UInt8], id: PackID, _ keys: TenantKeys) throws(CoreError) -> [(ChunkID, [UInt8])] {
    try PackReader.open(bytes, expectedID: id, readKey: keys.readKey)
        .allChunks(chunkIDKey: keys.chunkIDKey, decompressor: try ChunkDecompressor())
}

/// Where things are in a finished pack.
private struct Layout {
    let headerLength: Int
    let indexOffset: Int
    let indexLength: Int
    let size: Int
    var listStart: Int { indexOffset + indexLength }
    var footerStart: Int { size - PackFormat.footerSize }

    init(_ pack: FinishedPack) throws {
        let h = try PackHeader.parse(pack.bytes, object: "layout")
        let f = try PackFooter.parse(Array(pack.bytes.suffix(PackFormat.footerSize)), packSize: pack.bytes.count,
                                     headerLength: h.length, object: "layout")
        headerLength = h.length
        indexOffset = Int(f.indexOffset)
        indexLength = Int(f.indexLength)
        size = pack.bytes.count
    }

    /// The codes `open` may give when byte `i` was changed and the pack renamed to its new
    /// hash; nil where `open` succeeds and only reading the chunk fails.
    func codesWhenChanged(_ i: Int) -> Set<CoreError.Code>? {
        switch i {
        case 0..<8: [.corrupt]  // magic
        case 8..<12: [.unsupportedVersion]  // version, suite
        case 12..<28: [.wrongTenant]  // read key ID
        case 28..<30: [.corrupt, .authenticationFailed]  // encapsulated key length
        case 30..<headerLength: [.authenticationFailed]  // encapsulated key, sealed data key
        case headerLength..<indexOffset: nil  // chunk bodies
        case indexOffset..<footerStart: [.authenticationFailed]  // sealed index, public chunk list
        default: [.corrupt]  // footer
        }
    }
}

private let tinyChunks: [[UInt8]] = [Array("alpha".utf8), Array("bravo!".utf8), Array("c".utf8)]

@Suite struct PackTests {
    // MARK: Round trips

    @Test func chunksOfEveryKindRoundTrip() throws {
        let keys = try tenantKeys(1)
        var rng = SplitMix64(seed: 0x9ac)
        let text = Array(String(repeating: "the quick brown fox jumps over the lazy dog\n", count: 20_000).utf8)
        let chunks: [[UInt8]] = [
            text,  // compressible, probe path
            rng.bytes(1 << 20),  // random, probe path
            [],  // empty
            [0x42],
            Array(text.prefix(3000)),  // compressible, full trial
            rng.bytes(3000),  // random, full trial
            text,  // a duplicate is stored again: deduplication is the caller's job
        ]
        let pack = try makePack(chunks, keys)
        #expect(pack.entries.map(\.kind) == [.zstd, .none, .none, .none, .zstd, .none, .zstd])
        #expect(pack.chunkIDs == chunks.map { keys.chunkIDKey.chunkID(for: $0) })
        let opened = try PackReader.open(pack.bytes, expectedID: pack.id, readKey: keys.readKey)
        #expect(opened.entries == pack.entries)
        let read = try opened.allChunks(chunkIDKey: keys.chunkIDKey, decompressor: try ChunkDecompressor())
        #expect(read.map(\.0) == pack.chunkIDs)
        #expect(read.map(\.1) == chunks)
        #expect(pack.bytes.count < chunks.map(\.count).reduce(0, +))
    }

    @Test func packWithNoChunksRoundTrips() throws {
        let keys = try tenantKeys(1)
        let pack = try makePack([], keys)
        #expect(try readAll(pack.bytes, id: pack.id, keys).isEmpty)
        #expect(try PackReader.inspect(pack.bytes, expectedID: pack.id).chunkIDs.isEmpty)
    }

    @Test func packIDIsTheSHA256OfItsBytes() throws {
        let pack = try makePack(tinyChunks, try tenantKeys(1))
        #expect(pack.id == packID(of: pack.bytes))
    }

    @Test func twoPacksOfTheSameChunksDiffer() throws {
        // Each pack draws a fresh data key and HPKE encapsulation.
        let keys = try tenantKeys(1)
        let a = try makePack(tinyChunks, keys), b = try makePack(tinyChunks, keys)
        #expect(a.id != b.id)
        #expect(a.bytes.count == b.bytes.count)
    }

    @Test func inspectReturnsChunkIDsAndKeyIDWithoutAKey() throws {
        let keys = try tenantKeys(2)
        let pack = try makePack(tinyChunks, keys)
        let summary = try PackReader.inspect(pack.bytes, expectedID: pack.id)
        #expect(summary.id == pack.id)
        #expect(summary.keyID == keys.readKey.publicKey.keyID)
        #expect(summary.chunkIDs == tinyChunks.map { keys.chunkIDKey.chunkID(for: $0) })
        #expect(summary.size == pack.bytes.count)
    }

    @Test func oversizeChunkIsRefused() throws {
        let keys = try tenantKeys(1)
        var writer = try PackWriter(recipient: keys.readKey.publicKey, capacity: 1024, version: 1)
        let e = #expect(throws: CoreError.self) {
            try writer.append(id: keys.chunkIDKey.chunkID(for: [1]), kind: .none, rawLength: PackFormat.maxRawChunk + 1,
                payload: [1])
        }
        #expect(e?.code == .limitExceeded)
        #expect(writer.chunkCount == 0)
    }

    // MARK: Tampering

    @Test func everyFlippedBitIsDetected() throws {
        let keys = try tenantKeys(1)
        let pack = try makePack(tinyChunks, keys)
        let layout = try Layout(pack)
        let decompressor = try ChunkDecompressor()
        var problems: [String] = []
        // Every bit of the fixed fields, the chunk bodies and the footer; one bit of each
        // other byte (the key material, index and chunk list), where each try costs an
        // X-Wing decapsulation.
        func bits(_ i: Int) -> [Int] {
            i < 30 || (layout.headerLength..<layout.indexOffset).contains(i)
                || i >= layout.footerStart ? Array(0..<8) : [i % 8]
        }
        for i in 0..<pack.bytes.count {
            for bit in bits(i) {
                var b = pack.bytes
                b[i] ^= 1 << bit
                let at = "byte \(i) bit \(bit)"
                // Under its old name, the hash gives it away.
                do {
                    _ = try PackReader.open(b, expectedID: pack.id, readKey: keys.readKey)
                    problems.append("\(at): opened under the original ID")
                } catch {
                    if error.code != .authenticationFailed { problems.append("\(at), original ID: \(error.code)") }
                }
                // Renamed to its new hash (the attacker controls the name too).
                let expected = layout.codesWhenChanged(i)
                do {
                    let opened = try PackReader.open(b, expectedID: packID(of: b), readKey: keys.readKey)
                    if expected != nil { problems.append("\(at): opened after renaming") }
                    do {
                        let read = try opened.allChunks(chunkIDKey: keys.chunkIDKey, decompressor: decompressor)
                        problems.append("""
                            \(at): read back \(read.map(\.1) == tinyChunks ? "the same" : "other") plaintext
                            """)
                    } catch {
                        if error.code != .authenticationFailed {
                            problems.append("\(at), reading chunks: \(error.code)")
                        }
                    }
                } catch {
                    if expected?.contains(error.code) != true {
                        problems.append("\(at), renamed: \(error.code) (\(error.detail))")
                    }
                }
            }
        }
        #expect(problems.isEmpty, "\(problems.count) problems, first: \(problems.prefix(10))")
    }

    @Test func everyTruncationIsRejected() throws {
        let keys = try tenantKeys(1)
        let pack = try makePack(tinyChunks, keys)
        var problems: [String] = []
        for n in 0..<pack.bytes.count {
            for b in [Array(pack.bytes.prefix(n)), Array(pack.bytes.suffix(n))] {
                do {
                    _ = try PackReader.open(b, expectedID: pack.id, readKey: keys.readKey)
                    problems.append("\(n) bytes opened")
                } catch {
                    if error.code != .authenticationFailed { problems.append("\(n) bytes, original ID: \(error.code)") }
                }
                do {
                    _ = try PackReader.open(b, expectedID: packID(of: b), readKey: keys.readKey)
                    problems.append("\(n) bytes opened after renaming")
                } catch {
                    if error.code != .corrupt {
                        problems.append("\(n) bytes, renamed: \(error.code) (\(error.detail))")
                    }
                }
            }
        }
        #expect(problems.isEmpty, "\(problems.count) problems, first: \(problems.prefix(10))")
    }

    @Test func appendedBytesAreRejected() throws {
        let keys = try tenantKeys(1)
        let pack = try makePack(tinyChunks, keys)
        var rng = SplitMix64(seed: 0xadd)
        for extra in [[0], [UInt8](repeating: 0, count: 24), Array(pack.bytes.suffix(PackFormat.footerSize)),
            rng.bytes(1000), pack.bytes] {
            let b = pack.bytes + extra
            let e1 = #expect(throws: CoreError.self) {
                try PackReader.open(b, expectedID: pack.id, readKey: keys.readKey)
            }
            #expect(e1?.code == .authenticationFailed)
            let e2 = #expect(throws: CoreError.self) {
                try PackReader.open(b, expectedID: packID(of: b), readKey: keys.readKey)
            }
            #expect(e2?.code == .corrupt)
            let e3 = #expect(throws: CoreError.self) { try PackReader.inspect(b, expectedID: packID(of: b)) }
            #expect(e3?.code == .corrupt)
        }
    }

    @Test func swappedChunksFailToAuthenticate() throws {
        let keys = try tenantKeys(1)
        var rng = SplitMix64(seed: 0x5a9)
        let chunks = [rng.bytes(64), rng.bytes(64), rng.bytes(64)]
        let pack = try makePack(chunks, keys)
        let (e0, e1) = (pack.entries[0], pack.entries[1])
        #expect(e0.kind == .none && e0.sealedLength == e1.sealedLength)
        var b = pack.bytes
        let r0 = Int(e0.offset)..<Int(e0.offset + UInt64(e0.sealedLength))
        let r1 = Int(e1.offset)..<Int(e1.offset + UInt64(e1.sealedLength))
        b.replaceSubrange(r0, with: pack.bytes[r1])
        b.replaceSubrange(r1, with: pack.bytes[r0])

        // The header and index are untouched, so the pack opens; the swapped chunks do not.
        let opened = try PackReader.open(b, expectedID: packID(of: b), readKey: keys.readKey)
        let d = try ChunkDecompressor()
        for entry in opened.entries.prefix(2) {
            let e = #expect(throws: CoreError.self) {
                try opened.chunk(entry, chunkIDKey: keys.chunkIDKey, decompressor: d)
            }
            #expect(e?.code == .authenticationFailed)
        }
        #expect(try opened.chunk(opened.entries[2], chunkIDKey: keys.chunkIDKey, decompressor: d) == chunks[2])
    }

    @Test func chunkMovedFromAnotherPackFailsToAuthenticate() throws {
        let keys = try tenantKeys(1)
        // The same chunk, sealed in two packs: same ID, same length, different data keys.
        let a = try makePack(tinyChunks, keys), b = try makePack(tinyChunks, keys)
        let entry = a.entries[1]
        #expect(b.entries[1] == entry)
        let range = Int(entry.offset)..<Int(entry.offset + UInt64(entry.sealedLength))
        var forged = a.bytes
        forged.replaceSubrange(range, with: b.bytes[range])

        let opened = try PackReader.open(forged, expectedID: packID(of: forged), readKey: keys.readKey)
        let d = try ChunkDecompressor()
        let e = #expect(throws: CoreError.self) {
            try opened.chunk(entry, chunkIDKey: keys.chunkIDKey, decompressor: d)
        }
        #expect(e?.code == .authenticationFailed)
        #expect(try opened.chunk(opened.entries[0], chunkIDKey: keys.chunkIDKey, decompressor: d) == tinyChunks[0])
    }

    @Test func indexMovedFromAnotherPackFailsToAuthenticate() throws {
        let keys = try tenantKeys(1)
        let a = try makePack(tinyChunks, keys), b = try makePack(tinyChunks, keys)
        let layout = try Layout(a)
        var forged = a.bytes
        let range = layout.indexOffset..<layout.listStart
        forged.replaceSubrange(range, with: b.bytes[range])
        let e = #expect(throws: CoreError.self) {
            try PackReader.open(forged, expectedID: packID(of: forged), readKey: keys.readKey)
        }
        #expect(e?.code == .authenticationFailed)
    }

    @Test func headerMovedFromAnotherPackFailsToAuthenticate() throws {
        let keys = try tenantKeys(1)
        let a = try makePack(tinyChunks, keys), b = try makePack(tinyChunks, keys)
        let layout = try Layout(a)
        var forged = a.bytes
        forged.replaceSubrange(0..<layout.headerLength, with: b.bytes[0..<layout.headerLength])
        // b's data key opens nothing of a's.
        let e = #expect(throws: CoreError.self) {
            try PackReader.open(forged, expectedID: packID(of: forged), readKey: keys.readKey)
        }
        #expect(e?.code == .authenticationFailed)
    }

    @Test func packOfAnotherTenantIsWrongTenant() throws {
        let mine = try tenantKeys(1), theirs = try tenantKeys(2)
        let pack = try makePack(tinyChunks, theirs)
        let e = #expect(throws: CoreError.self) {
            try PackReader.open(pack.bytes, expectedID: pack.id, readKey: mine.readKey)
        }
        #expect(e?.code == .wrongTenant)
        #expect(e?.isIntegrityFailure == true)
        #expect(try PackReader.inspect(pack.bytes, expectedID: pack.id).keyID == theirs.readKey.publicKey.keyID)
    }

    @Test func relabelledKeyIDFailsToAuthenticate() throws {
        // Another tenant's pack, relabelled with my key ID: the HPKE seal does not open.
        let mine = try tenantKeys(1), theirs = try tenantKeys(2)
        let pack = try makePack(tinyChunks, theirs)
        var forged = pack.bytes
        forged.replaceSubrange(12..<28, with: mine.readKey.publicKey.keyID.bytes)
        let e = #expect(throws: CoreError.self) {
            try PackReader.open(forged, expectedID: packID(of: forged), readKey: mine.readKey)
        }
        #expect(e?.code == .authenticationFailed)
    }

    @Test func wrongChunkIDKeyFailsToAuthenticate() throws {
        let keys = try tenantKeys(1)
        let pack = try makePack(tinyChunks, keys)
        let opened = try PackReader.open(pack.bytes, expectedID: pack.id, readKey: keys.readKey)
        let other = try tenantKeys(2).chunkIDKey
        let e = #expect(throws: CoreError.self) {
            try opened.allChunks(chunkIDKey: other, decompressor: try ChunkDecompressor())
        }
        #expect(e?.code == .authenticationFailed)
    }

    /// An entry from another pack's index must be refused, not used to slice this
    /// pack's bytes out of bounds.
    @Test func entryOfAnotherPackIsRefusedWithoutTrapping() throws {
        let keys = try tenantKeys(1)
        var rng = SplitMix64(seed: 1)
        let small = try makePack([[1, 2, 3]], keys)
        let large = try makePack([rng.bytes(10_000)], keys)
        let opened = try PackReader.open(small.bytes, expectedID: small.id, readKey: keys.readKey)
        let e = #expect(throws: CoreError.self) {
            try opened.chunk(large.entries[0], chunkIDKey: keys.chunkIDKey, decompressor: try ChunkDecompressor())
        }
        #expect(e?.isIntegrityFailure == true)
    }

    @Test(arguments: [0, 1, 32, 1119, 1121, 2048, 2049, 0xffff])
    func alteredEncapsulatedKeyLengthIsRejected(length: Int) throws {
        let keys = try tenantKeys(1)
        let pack = try makePack(tinyChunks, keys)
        var b = pack.bytes
        #expect(Int(b[28]) | Int(b[29]) << 8 == 1120)
        b[28] = UInt8(length & 0xff)
        b[29] = UInt8(length >> 8)
        let e = #expect(throws: CoreError.self) {
            try PackReader.open(b, expectedID: packID(of: b), readKey: keys.readKey)
        }
        #expect(e.map { [.corrupt, .authenticationFailed].contains($0.code) } == true, "\(String(describing: e))")
    }

    @Test func unknownVersionAndSuiteAreUnsupported() throws {
        let keys = try tenantKeys(1)
        let pack = try makePack(tinyChunks, keys)
        for at in [8, 10] {
            var b = pack.bytes
            b[at] = 3
            let e = #expect(throws: CoreError.self) { try PackReader.inspect(b, expectedID: packID(of: b)) }
            #expect(e?.code == .unsupportedVersion)
        }
    }

    // MARK: Fuzz

    /// Random byte strings, some shaped like packs, through every parser.
    @Test func randomBytesNeverCrashTheParsers() throws {
        let keys = try tenantKeys(1)
        var rng = SplitMix64(seed: 0xf00d)
        var opened = 0
        for round in 0..<2000 {
            var b = rng.bytes(rng.int(3000))
            switch round % 3 {
            case 0: break
            case 1:
                // A plausible header, random after it.
                var w = ByteWriter()
                w.raw(PackFormat.magic)
                w.u16(1)
                w.u16(1)
                w.raw(rng.bytes(16))
                w.u16(UInt16(rng.int(2100)))
                b = w.bytes + b
            default:
                // A plausible header and a footer whose regions fit the bytes.
                var w = ByteWriter()
                w.raw(PackFormat.magic)
                w.u16(1)
                w.u16(1)
                w.raw(rng.int(2) == 0 ? keys.readKey.publicKey.keyID.bytes : rng.bytes(16))
                w.u16(1120)
                w.raw(rng.bytes(1120 + 48 + rng.int(300)))
                let chunkArea = w.count
                let count = rng.int(4)
                let indexLength = 4 + count * PackFormat.entrySize + PackFormat.tagSize
                w.raw(rng.bytes(indexLength + 32 * count))
                w.u64(UInt64(chunkArea + rng.int(2)))
                w.u32(UInt32(indexLength))
                w.u32(UInt32(count))
                w.raw(PackFormat.footerMagic)
                b = w.bytes
            }
            if let h = try? PackHeader.parse(Array(b.prefix(PackHeader.maxLength)), object: "fuzz") {
                #expect(h.length <= b.count)
            }
            if b.count != PackFormat.footerSize {
                let e = #expect(throws: CoreError.self) {
                    try PackFooter.parse(b, packSize: b.count, headerLength: 0, object: "fuzz")
                }
                #expect(e?.code == .corrupt)
            }
            if b.count >= PackFormat.footerSize {
                let headerLength = rng.int(b.count + 1)
                if let f = try? PackFooter.parse(Array(b.suffix(PackFormat.footerSize)), packSize: b.count,
                    headerLength: headerLength, object: "fuzz") {
                    #expect(Int(f.indexOffset) >= headerLength)
                    #expect(Int(f.indexOffset) + Int(f.indexLength) + 32 * Int(f.chunkCount)
                        + PackFormat.footerSize == b.count)
                }
            }
            if round % 3 == 0 {
                #expect(throws: CoreError.self) { try PackReader.inspect(b, expectedID: packID(of: b)) }
            }
            do {
                _ = try PackReader.open(b, expectedID: packID(of: b), readKey: keys.readKey)
                Issue.record("random bytes opened as a pack (round \(round))")
            } catch {
                #expect(error.isIntegrityFailure || error.code == .unsupportedVersion, "\(error)")
                if error.code == .authenticationFailed || error.code == .wrongTenant { opened += 1 }
            }
        }
        // The shaped inputs reach the key checks, not just the parsers.
        #expect(opened > 200)
    }

    /// Random edits of a valid pack, renamed to their new hash.
    @Test func mutatedPacksNeverOpenToOtherPlaintext() throws {
        let keys = try tenantKeys(1)
        let pack = try makePack(tinyChunks + [Array(repeating: 7, count: 5000)], keys)
        let decompressor = try ChunkDecompressor()
        var rng = SplitMix64(seed: 0xbad)
        var authenticationFailures = 0
        for round in 0..<2000 {
            var b = pack.bytes
            for _ in 0..<(1 + rng.int(4)) {
                let at = rng.int(b.count + 1)
                switch rng.int(7) {
                case 0: if at < b.count { b[at] ^= 1 << UInt8(rng.int(8)) }
                case 1: if at < b.count { b[at] = UInt8(truncatingIfNeeded: rng.next()) }
                case 2: b.insert(contentsOf: rng.bytes(1 + rng.int(40)), at: at)
                case 3: b.removeSubrange(at..<min(b.count, at + 1 + rng.int(40)))
                case 4: b.removeSubrange(at...)
                case 5:
                    let from = rng.int(b.count + 1)
                    b.insert(contentsOf: b[from..<min(b.count, from + 1 + rng.int(64))], at: at)
                default: if b.count > 30 { b[28 + rng.int(2)] = UInt8(truncatingIfNeeded: rng.next()) }
                }
            }
            _ = try? PackHeader.parse(Array(b.prefix(PackHeader.maxLength)), object: "fuzz")
            if b.count >= PackFormat.footerSize {
                _ = try? PackFooter.parse(Array(b.suffix(PackFormat.footerSize)), packSize: b.count, headerLength: 1198,
                    object: "fuzz")
            }
            do {
                let opened = try PackReader.open(b, expectedID: packID(of: b), readKey: keys.readKey)
                let read = try opened.allChunks(chunkIDKey: keys.chunkIDKey, decompressor: decompressor)
                #expect(b == pack.bytes, "round \(round): an edited pack read back")
                #expect(read.map(\.1) == tinyChunks + [Array(repeating: 7, count: 5000)])
            } catch {
                #expect(error.isIntegrityFailure || error.code == .unsupportedVersion, "round \(round): \(error)")
                if error.code == .authenticationFailed { authenticationFailures += 1 }
            }
        }
        #expect(authenticationFailures > 100)
    }

    // MARK: spill

    @Test func aSpilledPackIsThePackItsSpillHolds() throws {
        let keys = try tenantKeys(1)
        var rng = SplitMix64(seed: 0x5e11)
        let text = Array(String(repeating: "spilled, not held\n", count: 40_000).utf8)
        // Below, across and well past the slice, so every path of the writer is taken.
        let chunks: [[UInt8]] = [text, rng.bytes(300_000), [1, 2, 3], [], rng.bytes(20_000), rng.bytes(70_000)]
        let spill = CollectingSpill()
        var writer = try PackWriter(recipient: keys.readKey.publicKey, capacity: 1 << 16, spill: spill,
                                    spillAt: 64 << 10)
        let compressor = try ChunkCompressor()
        var scratch: [UInt8] = []
        var seals: [ChunkSeal] = []
        for c in chunks {
            let sealed = try c.withUnsafeBytes {
                try ConvergentSealing.seal($0, compressor: compressor, chunkIDKey: keys.chunkIDKey, scratch: &scratch)
            }
            seals.append(sealed.seal)
            try writer.append(sealed)
        }
        #expect(spill.appends > 3, "the pack was written out as it grew, not at the end")
        let pack = try writer.finish()
        let bytes = spill.bytes
        #expect(pack.bytes.isEmpty)
        #expect(pack.size == bytes.count)
        #expect(pack.id == packID(of: bytes))
        let opened = try PackReader.open(bytes, expectedID: pack.id, readKey: keys.readKey)
        #expect(opened.entries.map(\.offset) == pack.entries.map(\.offset))
        let decompressor = try ChunkDecompressor()
        for (k, e) in opened.entries.enumerated() {
            #expect(try opened.chunk(e, seal: seals[k], chunkIDKey: keys.chunkIDKey, decompressor: decompressor)
                == chunks[k])
        }
    }

    @Test func aFormatOneSpilledPackHashesEveryByteOnce() throws {
        // Format 1 hashes the pack alongside each chunk ID; a spill must neither skip nor repeat bytes.
        let keys = try tenantKeys(2)
        var rng = SplitMix64(seed: 0xf1)
        let chunks: [[UInt8]] = (0..<12).map { _ in rng.bytes(1000 + rng.int(30_000)) }
        let spill = CollectingSpill()
        var writer = try PackWriter(recipient: keys.readKey.publicKey, capacity: 1 << 16, version: 1, spill: spill,
                                    spillAt: 16 << 10)
        for c in chunks {
            try c.withUnsafeBytes { raw in
                let id = writer.chunkID(for: raw, key: keys.chunkIDKey)
                try writer.append(id: id, kind: .none, rawLength: raw.count, payload: raw)
            }
        }
        let pack = try writer.finish()
        #expect(spill.appends > 3)
        #expect(pack.id == packID(of: spill.bytes))
        #expect(try readAll(spill.bytes, id: pack.id, keys).map(\.1) == chunks)
    }

    @Test func aPipelineFinishesAPackAtItsChunkLimit() throws {
        // Many small chunks make packs of few bytes: the chunk count, not the size, ends them.
        let keys = try tenantKeys(3)
        let p = try PackPipeline(material: keys.sharedWriteMaterial, maxChunksPerPack: 3)
        let blobs = (0..<10).map { n in Array("small file \(n)".utf8) }
        let ids = try blobs.flatMap { try p.add(blob: $0) }
        let packs = try p.flush()
        #expect(packs.map(\.entries.count) == [3, 3, 3, 1])
        #expect(packs.flatMap(\.chunkIDs) == ids)
        for pack in packs {
            #expect(try PackReader.inspect(pack.bytes, expectedID: pack.id).chunksVerified)
        }
    }

    @Test func aSpillThatFailsEndsThePackWithItsError() throws {
        let keys = try tenantKeys(1)
        var rng = SplitMix64(seed: 0xdead)
        let spill = CollectingSpill(failingAt: 2)
        var writer = try PackWriter(recipient: keys.readKey.publicKey, capacity: 1 << 16, spill: spill,
                                    spillAt: 4096)
        let compressor = try ChunkCompressor()
        var scratch: [UInt8] = []
        let error = #expect(throws: CoreError.self) {
            for _ in 0..<4 {
                let data = rng.bytes(10_000)
                try writer.append(try data.withUnsafeBytes {
                    try ConvergentSealing.seal($0, compressor: compressor, chunkIDKey: keys.chunkIDKey,
                                               scratch: &scratch)
                })
            }
        }
        #expect(error?.code == .io)
        #expect(error?.object == "test spill")
    }
}

/// Keeps what a writer spills, as a spool file would; the append numbered `failingAt`
/// fails as a full disk would.
private final class CollectingSpill: PackSpill {
    private let state = Mutex<(bytes: [UInt8], appends: Int)>(([], 0))
    private let failingAt: Int?

    init(failingAt: Int? = nil) { self.failingAt = failingAt }

    var bytes: [UInt8] { state.withLock { $0.bytes } }
    var appends: Int { state.withLock { $0.appends } }

    func append(_ data: UnsafeRawBufferPointer) throws(CoreError) {
        let failed = state.withLock { s in
            s.appends += 1
            if s.appends == failingAt { return true }
            s.bytes.append(contentsOf: data)
            return false
        }
        if failed { throw CoreError(.io, object: "test spill", "no space left on device") }
    }
}

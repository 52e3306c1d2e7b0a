import Crypto
import Foundation
import Testing
@testable import RedoubtCore

/// One checker serves a pack in memory (restore, client) and a pack read by range (the
/// server's spooled upload): both must answer every pack, sound or damaged, alike, and the
/// range reader must never hold more than one piece.
@Suite struct PackCheckTests {
    struct Answer: Equatable {
        var chunkIDs: [ChunkID] = []
        var keyID: ReadKeyID? = nil
        var version: UInt16 = 0
        var error: CoreError? = nil
    }

    static func answer(_ body: () throws(CoreError) -> PackSummary) -> Answer {
        do throws(CoreError) {
            let s = try body()
            return Answer(chunkIDs: s.chunkIDs, keyID: s.keyID, version: s.version)
        } catch {
            return Answer(error: error)
        }
    }

    /// The pack's bytes and the damaged variants worth checking: a bit flipped in every
    /// region, cut short, extended.
    static func variants(_ bytes: [UInt8]) -> [(what: String, bytes: [UInt8])] {
        var out: [(String, [UInt8])] = [("sound", bytes)]
        let n = bytes.count
        for i in [0, 8, 9, 10, 12, 30, 40, 200, n / 3, n / 2, n - 200, n - 40, n - 24, n - 9, n - 1] {
            var b = bytes
            b[i] ^= 0x04
            out.append(("bit flipped at \(i)", b))
        }
        for cut in [n - 1, n - 24, n / 2, 100, 9, 0] { out.append(("cut to \(cut)", Array(bytes.prefix(cut)))) }
        out.append(("one byte appended", bytes + [0]))
        return out
    }

    @Test(arguments: [1, 2]) func inMemoryAndByRangeAnswerEveryPackAlike(version: Int) throws {
        let dir = GoldenFixtureTests.fixtureDir(version).appendingPathComponent("packs")
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        #expect(names.count >= 2)
        // The fixtures hold a pack of more than one piece, so the range reader splits reads.
        var largest = 0
        for name in names {
            let original = Array(try Data(contentsOf: dir.appendingPathComponent(name)))
            largest = max(largest, original.count)
            for (what, bytes) in Self.variants(original) {
                // Named as stored (a changed pack fails its hash) and renamed to its new hash
                // (what an attacker uploads: the structure checks must catch it).
                for id in [PackID(hex: name)!, PackID(bytes: Array(SHA256.hash(data: bytes)))!] {
                    let memory = Self.answer { () throws(CoreError) in try PackReader.inspect(bytes, expectedID: id) }
                    var widest = 0
                    let byRange = Self.answer { () throws(CoreError) in
                        try PackReader.inspect(size: bytes.count, expectedID: id) { r throws(CoreError) in
                            guard r.lowerBound >= 0, r.upperBound <= bytes.count else {
                                throw CoreError(.corrupt, object: "test", "read \(r) outside \(bytes.count) bytes")
                            }
                            widest = max(widest, r.count)
                            return Array(bytes[r])
                        }
                    }
                    #expect(memory == byRange, "format \(version) pack \(name), \(what)")
                    #expect(widest <= PackReader.inspectPieceSize, "format \(version) pack \(name), \(what)")
                    if what == "sound" {
                        #expect(memory.error == nil && memory.version == UInt16(version))
                    } else if id.description == name {
                        // Under its stored name, any change is refused.
                        #expect(memory.error != nil, "format \(version) pack \(name), \(what)")
                    }
                }
            }
        }
        #expect(largest > PackReader.inspectPieceSize)
    }

    /// A format-2 pack of many small chunks, read by range in pieces that end inside chunks:
    /// a sound pack passes, and a chunk changed at its first or last byte (the pack renamed
    /// to its new hash, as an uploader would) is refused by its own ID, in memory and by
    /// range alike, wherever it lies against the pieces.
    @Test func aChangedChunkIsNamedWhereverItLiesAgainstThePieces() throws {
        let keys = try TenantKeys.generate()
        let p = try PackPipeline(material: keys.sharedWriteMaterial)
        var rng = SplitMix64(seed: 7)
        var total = 0
        while total < 3 * PackReader.inspectPieceSize {
            // Random bytes do not compress, so sealed chunks are about as long as these.
            let blob = (0..<(3_000 + rng.int(40_000))).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            total += blob.count
            _ = try p.add(blob: blob)
        }
        let packs = try p.flush()
        #expect(packs.count == 1)
        let pack = packs[0]
        func inspect(_ bytes: [UInt8], _ id: PackID) -> (memory: Answer, byRange: Answer) {
            (Self.answer { () throws(CoreError) in try PackReader.inspect(bytes, expectedID: id) },
             Self.answer { () throws(CoreError) in
                 try PackReader.inspect(size: bytes.count, expectedID: id) { r throws(CoreError) in Array(bytes[r]) }
             })
        }
        let sound = inspect(pack.bytes, pack.id)
        #expect(sound.memory.error == nil && sound.memory == sound.byRange)
        #expect(sound.memory.chunkIDs == pack.entries.map(\.chunkID))
        let piece = PackReader.inspectPieceSize
        let straddling = pack.entries.filter {
            Int($0.offset) / piece != (Int($0.offset) + Int($0.sealedLength) - 1) / piece
        }
        #expect(straddling.count >= 2)
        for entry in [pack.entries.first!, pack.entries.last!] + straddling {
            let start = Int(entry.offset)
            for at in [start, start + Int(entry.sealedLength) - 1] {
                var bytes = pack.bytes
                bytes[at] ^= 0x10
                let renamed = PackID(bytes: Array(SHA256.hash(data: bytes)))!
                let (memory, byRange) = inspect(bytes, renamed)
                #expect(memory == byRange, "byte \(at) of chunk \(entry.chunkID)")
                #expect(memory.error?.code == .authenticationFailed, "byte \(at) of chunk \(entry.chunkID)")
                #expect(memory.error?.object == "chunk \(entry.chunkID) in pack \(renamed)")
            }
        }
    }
}

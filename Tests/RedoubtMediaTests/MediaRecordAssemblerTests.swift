import Foundation
import Testing
@testable import RedoubtMedia

/// The reader's state machine fed block events directly: records assembled across
/// blocks and volumes, and damage attributed to exactly the records it cost.
@Suite struct MediaRecordAssemblerTests {
    static let setID = [UInt8](repeating: 7, count: 16)

    static func header(_ kind: MediaBlockKind, seq: UInt64, off: UInt64, last: Bool, count: Int) -> MediaBlockHeader {
        MediaBlockHeader(setID: setID, volumeSeq: 1, blockSeq: 0, kind: kind, lastOfRecord: last,
            payloadLen: UInt32(count),
                         recordSeq: seq, recordOff: off)
    }

    /// The data-block events of `record` as record `seq`, cut into `parts` payloads.
    static func blocks(_ record: MediaRecord, seq: UInt64, parts: Int,
        firstBlock: UInt64) -> [MediaRecordAssembler.Event] {
        let bytes = record.encoded()
        let size = (bytes.count + parts - 1) / parts
        return stride(from: 0, to: bytes.count, by: size).enumerated().map { i, off in
            let p = Array(bytes[off..<min(off + size, bytes.count)])
            return .block(header(.data, seq: seq, off: UInt64(off), last: off + size >= bytes.count, count: p.count),
                          payload: p, block: firstBlock + UInt64(i))
        }
    }

    static func record(_ n: Int) -> MediaRecord {
        MediaRecord(type: .object, id: "r\(n)", body: (0..<(300 + n)).map { UInt8(truncatingIfNeeded: $0 &* n) })
    }

    /// Feeds `events` and returns every action, in order.
    static func run(_ m: inout MediaRecordAssembler,
        _ events: [MediaRecordAssembler.Event]) throws -> [MediaRecordAssembler.Action] {
        var out: [MediaRecordAssembler.Action] = []
        for e in events { out += try m.feed(e) }
        return out
    }

    static func records(_ actions: [MediaRecordAssembler.Action]) -> [MediaRecord] {
        actions.compactMap { if case .record(let r) = $0 { r } else { nil } }
    }

    static func damage(_ actions: [MediaRecordAssembler.Action]) -> [MediaDamage] {
        actions.compactMap { if case .damage(let d) = $0 { d } else { nil } }
    }

    @Test func assemblesRecordsAcrossBlocksAndAcrossAVolumeBoundary() throws {
        var m = MediaRecordAssembler()
        m.startVolume(1)
        let a = Self.blocks(Self.record(1), seq: 1, parts: 3, firstBlock: 1)
        var actions = try Self.run(&m, a)
        #expect(Self.records(actions) == [Self.record(1)])
        // Record 2 starts on volume 1 and ends on volume 2.
        let b = Self.blocks(Self.record(2), seq: 2, parts: 2, firstBlock: 4)
        actions = try Self.run(&m, [b[0], .block(Self.header(.end, seq: 0, off: 0, last: true, count: 0), payload: [],
            block: 5)])
        #expect(Self.records(actions).isEmpty)
        guard case .volumeEnded = try #require(actions.last) else { Issue.record("no volume end: \(actions)"); return }
        m.startVolume(2)
        actions = try Self.run(&m, [b[1]])
        #expect(Self.records(actions) == [Self.record(2)])
    }

    @Test func anUnreadableBlockCostsExactlyTheRecordsItTouched() throws {
        var m = MediaRecordAssembler()
        m.startVolume(1)
        _ = try Self.run(&m, Self.blocks(Self.record(1), seq: 1, parts: 1, firstBlock: 1))
        // Record 2's first block is unreadable; its second block then arrives.
        let r2 = Self.blocks(Self.record(2), seq: 2, parts: 2, firstBlock: 2)
        var actions = try Self.run(&m, [.unreadable(block: 2, detail: "checksum"), r2[1]])
        let d = Self.damage(actions)
        #expect(d.count == 1 && d.first?.recordSeqs == [2] && d.first?.block == 2 && d.first?.volume == 1)
        #expect(Self.records(actions).isEmpty)
        // Record 3 is untouched and read whole.
        actions = try Self.run(&m, Self.blocks(Self.record(3), seq: 3, parts: 2, firstBlock: 4))
        #expect(Self.records(actions) == [Self.record(3)] && Self.damage(actions).isEmpty)
        // An unreadable stretch that swallowed records 4 and 5 whole and the start of 6.
        let r6 = Self.blocks(Self.record(6), seq: 6, parts: 2, firstBlock: 9)
        actions = try Self.run(&m, [.unreadable(block: 6, detail: "x"), .unreadable(block: 7, detail: "y"), r6[1]])
        #expect(Self.damage(actions).map(\.recordSeqs) == [[4, 5, 6]])
        #expect(Self.damage(actions).first?.block == 6)
    }

    @Test func aTamperedRecordOrALostStartIsDamageNotARecord() throws {
        var m = MediaRecordAssembler()
        m.startVolume(1)
        var bytes = Self.record(1).encoded()
        bytes[bytes.count - 1] ^= 1
        var actions = try m.feed(.block(Self.header(.data, seq: 1, off: 0, last: true, count: bytes.count),
            payload: bytes, block: 1))
        #expect(Self.damage(actions).first?.detail == "record hash or framing does not check")
        #expect(Self.records(actions).isEmpty)
        // A block continuing record 2 at an offset no block started: its start was never read.
        let r2 = Self.blocks(Self.record(2), seq: 2, parts: 3, firstBlock: 2)
        actions = try Self.run(&m, [r2[1]])
        #expect(Self.damage(actions).first?.detail == "record continues from bytes that were not read")
        #expect(Self.damage(actions).first?.recordSeqs == [2])
        // The rest of record 2 is skipped quietly; record 3 reads.
        actions = try Self.run(&m, [r2[2]] + Self.blocks(Self.record(3), seq: 3, parts: 1, firstBlock: 5))
        #expect(Self.damage(actions).isEmpty && Self.records(actions) == [Self.record(3)])
        // A label block inside a volume is refused.
        #expect(throws: MediaError.self) {
            _ = try m.feed(.block(Self.header(.label, seq: 0, off: 0, last: true, count: 0), payload: [], block: 6))
        }
    }
}

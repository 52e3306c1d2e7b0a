import Foundation
import Testing
@testable import RedoubtMedia

/// A temporary directory removed by the caller.
func mediaTempDir() -> String {
    let p = NSTemporaryDirectory() + "redoubt-media-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
    return p
}

/// Deterministic records: a few packs of varied sizes, a manifest and an anchor.
func sampleRecords() -> [MediaRecord] {
    var rs: [MediaRecord] = []
    for i in 0..<5 {
        let body = (0..<(300 + i * 700)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) }
        rs.append(MediaRecord(type: .pack, id: String(repeating: String(i), count: 64), body: body))
    }
    rs.append(MediaRecord(type: .manifest, id: String(repeating: "m", count: 64), body: Array("manifest-bytes".utf8)))
    rs.append(MediaRecord(type: .auditAnchor, id: "", body: Array(#"{"seq":7,"hash":"00"}"#.utf8)))
    return rs
}

/// Writes `records` to `file:path` with 512-byte blocks and the given capacity.
func writeSet(_ path: String, _ records: [MediaRecord], capacity: UInt64?,
    setID: [UInt8] = Array(0..<16)) throws -> MediaWriteSummary {
    let w = try MediaWriter(device: FileSequentialDevice(path: path, capacity: capacity), setID: setID, pool: "offsite",
                            tenant: "acme", blockSize: 512, created: "2026-11-26T00:00:00Z", retainUntil: nil,
                                writer: "test")
    for r in records { try w.append(r) }
    return try w.finish()
}

func readAll(_ src: SequentialSource, skip: Bool = false) throws -> ([MediaRecord], MediaReadReport) {
    var got: [MediaRecord] = []
    let rep = try MediaReader(source: src, skipDamaged: skip).read { got.append($0) }
    return (got, rep)
}

func flip(_ path: String, at: Int) throws {
    var d = try Data(contentsOf: URL(fileURLWithPath: path))
    d[at] ^= 0x10
    try d.write(to: URL(fileURLWithPath: path))
}

@Suite struct MediaSetTests {
    @Test func anyOneVolumeSaysWhatItHoldsAndWhichVolumesARestoreNeeds() throws {
        let dir = mediaTempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let recs = sampleRecords()
        let s = try writeSet("\(dir)/set", recs, capacity: 16 * 512)
        try #require(s.volumes >= 3)
        let (_, whole) = try readAll(FileSequentialDevice(path: "\(dir)/set"))
        let all = try #require(whole.setCatalog?.records)
        for v in 1...s.volumes {
            let path = v == 1 ? "\(dir)/set" : "\(dir)/set.\(v)"
            let l = try MediaReader(source: FileSequentialDevice(paths: [path]), skipDamaged: false).listVolume()
            #expect(l.label.volumeSeq == v && l.damage.isEmpty)
            // The volume's catalog lists exactly the records the set catalog places on it.
            let listed = try #require(l.volumeCatalog).records
            #expect(Set(listed.map(\.recordSeq)).isSuperset(of: Set(all.filter { $0.volume == v }.map(\.recordSeq))),
                "volume \(v): \(listed)")
            // Spanning records name their neighbours; the last volume knows the whole set.
            if listed.contains(where: \.endsAfter) { #expect(l.needsVolumes.contains(v + 1)) }
            if listed.contains(where: \.startsBefore) { #expect(l.needsVolumes.contains(v - 1)) }
            if v == s.volumes {
                #expect(l.setCatalog?.volumeCount == s.volumes && l.needsVolumes == Array(1..<s.volumes))
            } else {
                #expect(l.setCatalog == nil)
            }
        }
        // A flipped bit in volume 2 is named with its record, alone or skipped past.
        let size = try #require(try FileManager.default.attributesOfItem(atPath: "\(dir)/set.2")[.size] as? Int)
        try flip("\(dir)/set.2", at: 512 * 2 + 100)
        #expect(throws: MediaError.self) {
            try MediaReader(source: FileSequentialDevice(paths: ["\(dir)/set.2"]), skipDamaged: false).listVolume()
        }
        let damaged = try MediaReader(source: FileSequentialDevice(paths: ["\(dir)/set.2"]),
            skipDamaged: true).listVolume()
        #expect(damaged.damage.map(\.block) == [2] && size > 512 * 3)
        #expect(damaged.damage.first?.records.isEmpty == false)
    }

    @Test func multiVolumeRoundTrip() throws {
        let dir = mediaTempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let recs = sampleRecords()
        let s = try writeSet("\(dir)/set", recs, capacity: 16 * 512)
        #expect(s.volumes >= 3)
        #expect(FileManager.default.fileExists(atPath: "\(dir)/set.\(s.volumes)"))
        for v in 1...s.volumes {
            let p = v == 1 ? "\(dir)/set" : "\(dir)/set.\(v)"
            let size = try FileManager.default.attributesOfItem(atPath: p)[.size] as? Int
            #expect(size.map { $0 <= 16 * 512 } == true, "volume \(v) exceeds capacity")
        }
        let (got, rep) = try readAll(FileSequentialDevice(path: "\(dir)/set"))
        #expect(got == recs)
        #expect(rep.damage.isEmpty)
        #expect(rep.labels.map(\.volumeSeq) == Array(1...s.volumes))
        #expect(rep.setCatalog?.volumeCount == s.volumes)
        #expect(Set(rep.setCatalog?.records.map(\.recordSeq) ?? []) == Set(1...UInt64(recs.count)))
        #expect(rep.setCatalog?.records.contains { $0.endsAfter } == true, "some record should span volumes")
    }

    @Test func directoryDeviceMakesVolumesReadOnly() throws {
        let dir = mediaTempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let dev = try DirectorySequentialDevice(path: "\(dir)/d", capacity: 16 * 512)
        let w = try MediaWriter(device: dev, setID: Array(0..<16), pool: "p", tenant: "t", blockSize: 512,
                                created: "2026-11-26T00:00:00Z", retainUntil: nil, writer: "test")
        for r in sampleRecords() { try w.append(r) }
        let s = try w.finish()
        let names = try FileManager.default.contentsOfDirectory(atPath: "\(dir)/d").sorted()
        #expect(names.count == Int(s.volumes))
        for n in names {
            let perm = try FileManager.default.attributesOfItem(atPath: "\(dir)/d/\(n)")[.posixPermissions] as? Int
            #expect(perm == 0o444)
        }
        let (got, _) = try readAll(try DirectorySequentialDevice(path: "\(dir)/d"))
        #expect(got == sampleRecords())
        // A second set into the same directory is refused rather than overwriting.
        let w2 = try MediaWriter(device: try DirectorySequentialDevice(path: "\(dir)/d"), setID: Array(0..<16),
            pool: "p",
                                 tenant: "t", blockSize: 512, created: "x", retainUntil: nil, writer: "test")
        let e = #expect(throws: MediaError.self) { try w2.append(sampleRecords()[0]) }
        #expect(e?.code == "E_MEDIA_EXISTS")
    }

    @Test func fifoWorks() throws {
        let dir = mediaTempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let fifo = "\(dir)/pipe"
        #expect(mkfifo(fifo, 0o600) == 0)
        let recs = sampleRecords()
        let writer = Thread {
            _ = try? writeSet(fifo, recs, capacity: nil)
        }
        writer.start()
        let (got, rep) = try readAll(FileSequentialDevice(paths: [fifo]))
        #expect(got == recs)
        #expect(rep.setCatalog?.volumeCount == 1)
    }

    @Test func flippedBitIsNamedAndSkipDamagedReadsTheRest() throws {
        let dir = mediaTempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let recs = sampleRecords()
        _ = try writeSet("\(dir)/set", recs, capacity: nil)
        // Block 3 of volume 1 lies inside record 2 (record 1 takes blocks 1; record 2 blocks 2-3).
        try flip("\(dir)/set", at: 3 * 512 + 100)
        let e = #expect(throws: MediaError.self) { try readAll(FileSequentialDevice(path: "\(dir)/set")) }
        #expect(e?.code == "E_MEDIA_DAMAGED" && e?.volume == 1 && e?.block == 3)
        #expect(e?.detail.contains("checksum") == true)
        let (got, rep) = try readAll(FileSequentialDevice(path: "\(dir)/set"), skip: true)
        #expect(rep.damage.count == 1)
        #expect(rep.damage.first?.block == 3)
        #expect(rep.damage.first?.recordSeqs == [2])
        #expect(rep.damage.first?.records == ["pack " + String(repeating: "1", count: 64)])
        var expected = recs
        expected.remove(at: 1)
        #expect(got == expected)
    }

    @Test func truncatedVolumeIsNamed() throws {
        let dir = mediaTempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try writeSet("\(dir)/set", sampleRecords(), capacity: nil)
        let h = FileHandle(forUpdatingAtPath: "\(dir)/set")
        try h?.truncate(atOffset: 5 * 512 + 17)
        try h?.close()
        let e = #expect(throws: MediaError.self) { try readAll(FileSequentialDevice(path: "\(dir)/set"), skip: true) }
        #expect(e?.code == "E_MEDIA_TRUNCATED" && e?.volume == 1 && e?.block == 5)
    }

    @Test func missingOutOfOrderForeignAndUnlabelledVolumes() throws {
        let dir = mediaTempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let s = try writeSet("\(dir)/set", sampleRecords(), capacity: 16 * 512)
        #expect(s.volumes >= 3)
        // Missing last volume.
        let e1 = #expect(throws: MediaError.self) {
            try readAll(FileSequentialDevice(paths: ["\(dir)/set", "\(dir)/set.2"]))
        }
        #expect(e1?.code == "E_MEDIA_MISSING" && e1?.volume == 3)
        // Missing middle volume / out of order.
        let e2 = #expect(throws: MediaError.self) {
            try readAll(FileSequentialDevice(paths: ["\(dir)/set", "\(dir)/set.3"]))
        }
        #expect(e2?.code == "E_MEDIA_ORDER" && e2?.volume == 2 && e2?.block == 0)
        #expect(e2?.detail.contains("volume 3") == true)
        // Foreign set.
        _ = try writeSet("\(dir)/other", sampleRecords(), capacity: 16 * 512, setID: Array(repeating: 9, count: 16))
        let e3 = #expect(throws: MediaError.self) {
            try readAll(FileSequentialDevice(paths: ["\(dir)/set", "\(dir)/other.2"]))
        }
        #expect(e3?.code == "E_MEDIA_FOREIGN" && e3?.volume == 2)
        // Unlabelled medium.
        try Data(repeating: 0x41, count: 4096).write(to: URL(fileURLWithPath: "\(dir)/blank"))
        let e4 = #expect(throws: MediaError.self) { try readAll(FileSequentialDevice(paths: ["\(dir)/blank"])) }
        #expect(e4?.code == "E_MEDIA_LABEL" && e4?.volume == 1 && e4?.block == 0)
        // Damaged label.
        try FileManager.default.copyItem(atPath: "\(dir)/set", toPath: "\(dir)/badlabel")
        try flip("\(dir)/badlabel", at: 200)
        let e5 = #expect(throws: MediaError.self) { try readAll(FileSequentialDevice(paths: ["\(dir)/badlabel"])) }
        #expect(e5?.code == "E_MEDIA_LABEL" && e5?.detail.contains("checksum") == true)
    }

    @Test func retainedVolumeIsNotOverwritten() throws {
        let dir = mediaTempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let w = try MediaWriter(device: FileSequentialDevice(path: "\(dir)/set"), setID: Array(0..<16), pool: "vault",
            tenant: "t",
                                blockSize: 512, created: "2026-11-26T00:00:00Z", retainUntil: "2027-01-01T00:00:00Z",
                                    writer: "test")
        try w.append(sampleRecords()[0]); _ = try w.finish()
        let before = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/set"))
        // Before the retention date: refused, naming pool, set and date; the volume is untouched.
        let e = #expect(throws: MediaError.self) { try writeSet("\(dir)/set", sampleRecords(), capacity: nil) }
        #expect(e?.code == "E_MEDIA_RETAINED" && e?.volume == 1)
        #expect(e?.detail.contains("vault") == true && e?.detail.contains("2027-01-01") == true)
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(dir)/set")) == before)
        // After it: the medium may be reused.
        let w2 = try MediaWriter(device: FileSequentialDevice(path: "\(dir)/set"), setID: Array(repeating: 1,
            count: 16), pool: "vault",
                                 tenant: "t", blockSize: 512, created: "2027-02-01T00:00:00Z", retainUntil: nil,
                                     writer: "test")
        try w2.append(sampleRecords()[1]); _ = try w2.finish()
        let (got, _) = try readAll(FileSequentialDevice(path: "\(dir)/set"))
        #expect(got == [sampleRecords()[1]])
    }

    @Test func tooSmallCapacityIsRefused() throws {
        let dir = mediaTempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let e = #expect(throws: MediaError.self) { try writeSet("\(dir)/set", sampleRecords(), capacity: 3 * 512) }
        #expect(e?.code == "E_MEDIA_LIMIT")
    }

    @Test func tamperedRecordFailsItsHashEvenWithGoodCRC() throws {
        let r = MediaRecord(type: .pack, id: "ab", body: [1, 2, 3])
        var b = r.encoded()
        #expect(MediaRecord.decode(b) == r)
        b[b.count - 1] ^= 1
        #expect(MediaRecord.decode(b) == nil)
    }
}

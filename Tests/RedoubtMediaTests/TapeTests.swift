import Foundation
import Testing
@testable import RedoubtMedia

/// A tape library with the Linux st driver's semantics (Documentation/scsi/st.rst), so
/// that ``TapeDevice`` is tested without a drive: one record per write, filemarks, a write
/// erases everything after it, the end-of-medium early warning (the write that crosses it
/// completes, then every other write is refused with ENOSPC) and the physical end, reads
/// of whole records (ENOMEM when the buffer is smaller), write protection, unloading.
/// Only ``STTapeDrive``'s ioctls are outside it; `notATapeIsRefused` runs those for real.
final class SimulatedTapeLibrary: TapeDrive {
    enum Entry: Equatable {
        case record([UInt8])
        case filemark
    }

    struct Cartridge {
        var entries: [Entry] = []
        var writeProtected = false
        /// Records (and filemarks) after which the early warning is signalled.
        var earlyWarningAt: Int
        /// No write succeeds once the cartridge holds this many entries.
        var physicalEnd: Int
        /// The first read fails with an I/O error (a damaged label).
        var unreadable = false
    }

    let path = "/dev/nst-simulated"
    var cartridges: [Cartridge]
    var loaded: Int?
    var position = 0
    var blockSize = 0
    var blockSizesSet: [Int] = []
    var isOpen = false
    var refuseNext = false
    var unloads = 0

    init(_ cartridges: [Cartridge], loaded: Int? = 0) {
        self.cartridges = cartridges
        self.loaded = loaded
    }

    func load(_ i: Int) {
        loaded = i
        position = 0
        refuseNext = false
    }

    private func fail(_ detail: String) -> MediaError {
        MediaError(code: "E_MEDIA_DEVICE", volume: 0, block: 0, detail: detail)
    }

    func open(forWriting: Bool) throws(MediaError) { isOpen = true }
    func close() { isOpen = false }

    func status() throws(MediaError) -> TapeStatus {
        guard let i = loaded else {
            return TapeStatus(online: false, writeProtected: false, atEndOfData: false)
        }
        let c = cartridges[i]
        return TapeStatus(online: true, writeProtected: c.writeProtected, atEndOfData: position >= c.entries.count)
    }

    func rewind() throws(MediaError) {
        guard loaded != nil else { throw fail("rewind: no tape") }
        position = 0
    }

    func setBlockSize(_ size: Int) throws(MediaError) {
        blockSize = size
        blockSizesSet.append(size)
    }

    func writeRecord(_ bytes: UnsafeRawBufferPointer) throws(MediaError) -> TapeWrite {
        guard isOpen, let i = loaded else { throw fail("write: no tape") }
        guard !cartridges[i].writeProtected else { throw fail("write: write-protected (EROFS)") }
        if blockSize != 0 && bytes.count % blockSize != 0 {
            throw fail("write: \(bytes.count) bytes is not a multiple of the block size (EINVAL)")
        }
        if position >= cartridges[i].physicalEnd { return .noSpace }
        if refuseNext {
            refuseNext = false
            return .noSpace
        }
        cartridges[i].entries.removeSubrange(position...)
        cartridges[i].entries.append(.record(Array(bytes)))
        position += 1
        if cartridges[i].entries.count >= cartridges[i].earlyWarningAt { refuseNext = true }
        return .written
    }

    func readRecord(into buffer: UnsafeMutableRawBufferPointer) throws(MediaError) -> Int {
        guard isOpen, let i = loaded else { throw fail("read: no tape") }
        if cartridges[i].unreadable { throw fail("read failed: Input/output error") }
        guard position < cartridges[i].entries.count else {
            throw fail("read failed: Input/output error (end of data)")
        }
        let e = cartridges[i].entries[position]
        position += 1
        guard case .record(let r) = e else { return 0 }
        guard r.count <= buffer.count else { throw fail("a tape record is larger than \(buffer.count) bytes") }
        buffer.copyBytes(from: r)
        return r.count
    }

    func writeFilemark() throws(MediaError) {
        guard let i = loaded else { throw fail("filemark: no tape") }
        cartridges[i].entries.removeSubrange(position...)
        cartridges[i].entries.append(.filemark)
        position += 1
    }

    func unload() throws(MediaError) {
        loaded = nil
        unloads += 1
    }
}

/// Records large enough to span several small cartridges.
private func tapeRecords() -> [MediaRecord] {
    var rs: [MediaRecord] = []
    for i in 0..<8 {
        var body = [UInt8](repeating: 0, count: 2000 + i * 900)
        for j in body.indices { body[j] = UInt8(truncatingIfNeeded: j &* 131 &+ i &* 7) }
        rs.append(MediaRecord(type: .pack, id: String(repeating: String(i), count: 64), body: body))
    }
    rs.append(MediaRecord(type: .manifest, id: String(repeating: "a", count: 64), body: Array("manifest".utf8)))
    return rs
}

private func blank(_ n: Int, earlyWarningAt: Int = 40, physicalEnd: Int = 70) -> [SimulatedTapeLibrary.Cartridge] {
    Array(repeating: .init(earlyWarningAt: earlyWarningAt, physicalEnd: physicalEnd), count: n)
}

/// Writes `records` to the library's cartridges, loading cartridge n-1 for volume n.
@discardableResult
private func writeTapes(_ lib: SimulatedTapeLibrary, _ records: [MediaRecord], fixed: Bool = false,
    retainUntil: String? = nil,
                        created: String = "2026-11-26T00:00:00Z", setID: [UInt8] = Array(0..<16),
                        asked: inout [UInt32]) throws -> MediaWriteSummary {
    var calls: [UInt32] = []
    defer { asked = calls }
    let dev = TapeDevice(drive: lib, blockSize: 512, fixedBlocks: fixed) { (n: UInt32) throws(MediaError) in
        calls.append(n)
        lib.load(Int(n) - 1)
    }
    let w = try MediaWriter(device: dev, setID: setID, pool: "vault", tenant: "acme", blockSize: 512, created: created,
                            retainUntil: retainUntil, writer: "test")
    for r in records { try w.append(r) }
    return try w.finish()
}

private func readTapes(_ lib: SimulatedTapeLibrary, asked: inout [UInt32]) throws -> ([MediaRecord], MediaReadReport) {
    var calls: [UInt32] = []
    defer { asked = calls }
    lib.load(0)
    let src = TapeDevice(drive: lib) { (n: UInt32) throws(MediaError) in
        calls.append(n)
        guard Int(n) - 1 < lib.cartridges.count else {
            throw MediaError(code: "E_MEDIA_DEVICE", volume: n, block: 0, detail: "no cartridge \(n)")
        }
        lib.load(Int(n) - 1)
    }
    return try readAll(src)
}

@Suite struct TapeTests {
    @Test(arguments: [false,
        true]) func setSpansCartridgesAtTheEarlyWarningAndReadsBackFromThemAlone(fixed: Bool) throws {
        let lib = SimulatedTapeLibrary(blank(6))
        var asked: [UInt32] = []
        let records = tapeRecords()
        let summary = try writeTapes(lib, records, fixed: fixed, asked: &asked)
        #expect(summary.volumes >= 2)
        #expect(asked == Array(2...summary.volumes))
        #expect(lib.unloads == Int(summary.volumes))
        #expect(lib.blockSizesSet.contains(fixed ? 512 : 0))
        for c in lib.cartridges.prefix(Int(summary.volumes)) {
            // One 512-byte record per media block, a filemark to close the volume, nothing
            // past the physical end, and the volume closed soon after the early warning.
            #expect(c.entries.last == .filemark)
            #expect(c.entries.dropLast().allSatisfy { if case .record(let r) = $0 { r.count == 512 } else { false } })
            #expect(c.entries.count <= c.physicalEnd)
        }
        #expect(lib.cartridges.dropLast(lib.cartridges.count - Int(summary.volumes) + 1).allSatisfy {
            $0.entries.count >= $0.earlyWarningAt
        })
        #expect(lib.cartridges[Int(summary.volumes)...].allSatisfy { $0.entries.isEmpty })

        var readAsked: [UInt32] = []
        let (got, rep) = try readTapes(lib, asked: &readAsked)
        #expect(got == records)
        #expect(rep.damage.isEmpty && rep.setCatalog != nil)
        // The reader stops at the set's last volume: it never asks for one more cartridge.
        #expect(readAsked == Array(2...summary.volumes))
    }

    @Test func writeProtectedOrMissingCartridgeIsRefused() throws {
        var asked: [UInt32] = []
        var protected = blank(1)
        protected[0].writeProtected = true
        let lib = SimulatedTapeLibrary(protected)
        let e = #expect(throws: MediaError.self) { try writeTapes(lib, tapeRecords(), asked: &asked) }
        #expect(e?.code == "E_MEDIA_DEVICE" && e?.volume == 1 && e?.detail.contains("write-protected") == true)
        #expect(lib.cartridges[0].entries.isEmpty)

        let empty = SimulatedTapeLibrary(blank(1), loaded: nil)
        let e2 = #expect(throws: MediaError.self) { try writeTapes(empty, tapeRecords(), asked: &asked) }
        #expect(e2?.code == "E_MEDIA_DEVICE" && e2?.detail.contains("no cartridge") == true)
    }

    @Test func retainedCartridgeIsNotOverwritten() throws {
        var asked: [UInt32] = []
        let lib = SimulatedTapeLibrary(blank(6))
        try writeTapes(lib, [tapeRecords()[0]], retainUntil: "2027-01-01T00:00:00Z", asked: &asked)
        let before = lib.cartridges
        lib.load(0)
        let e = #expect(throws: MediaError.self) {
            try writeTapes(lib, tapeRecords(), created: "2026-12-01T00:00:00Z", setID: Array(repeating: 9, count: 16),
                asked: &asked)
        }
        #expect(e?.code == "E_MEDIA_RETAINED" && e?.detail.contains("vault") == true
            && e?.detail.contains("2027-01-01") == true)
        #expect(lib.cartridges[0].entries == before[0].entries)
    }

    @Test func unreadableFirstRecordIsNotTakenForABlankCartridge() throws {
        var asked: [UInt32] = []
        var c = blank(1)
        c[0].entries = [.record(Array(repeating: 1, count: 512)), .filemark]
        c[0].unreadable = true
        let lib = SimulatedTapeLibrary(c)
        let e = #expect(throws: MediaError.self) { try writeTapes(lib, tapeRecords(), asked: &asked) }
        #expect(e?.code == "E_MEDIA_DEVICE" && e?.detail.contains("cannot read the cartridge's first record") == true)
        #expect(lib.cartridges[0].entries == c[0].entries)
    }

    @Test func physicalEndBeforeTheVolumeIsClosedIsNamed() throws {
        var asked: [UInt32] = []
        let lib = SimulatedTapeLibrary(blank(3, earlyWarningAt: 10, physicalEnd: 11))
        let e = #expect(throws: MediaError.self) { try writeTapes(lib, tapeRecords(), asked: &asked) }
        #expect(e?.code == "E_MEDIA_FULL" && e?.volume == 1 && e?.detail.contains("--capacity") == true)
    }

    @Test func aTruncatedCartridgeIsNamed() throws {
        var asked: [UInt32] = []
        let lib = SimulatedTapeLibrary(blank(6))
        let summary = try writeTapes(lib, tapeRecords(), asked: &asked)
        // The first cartridge loses its last blocks (the catalog and end block) and filemark.
        lib.cartridges[0].entries.removeLast(4)
        lib.cartridges[0].entries.append(.filemark)
        #expect(summary.volumes >= 2)
        let e = #expect(throws: MediaError.self) { _ = try readTapes(lib, asked: &asked) }
        #expect(e?.code == "E_MEDIA_TRUNCATED" && e?.volume == 1)
    }

    /// The real st code path: a file that is not a tape is refused by MTIOCGET before anything is written.
    @Test func notATapeIsRefused() throws {
        let dir = mediaTempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = "\(dir)/disk.img"
        try Data(repeating: 7, count: 4096).write(to: URL(fileURLWithPath: path))
        let dev = try MediaDeviceSpec.writer("tape:\(path)", capacity: nil, blockSize: 512)
        let w = try MediaWriter(device: dev, setID: Array(0..<16), pool: "p", tenant: "t", blockSize: 512,
                                created: "2026-11-26T00:00:00Z", retainUntil: nil, writer: "test")
        let e = #expect(throws: MediaError.self) { try w.append(tapeRecords()[0]) }
        #expect(e?.code == "E_MEDIA_DEVICE" && e?.detail.contains("not a tape device") == true)
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data(repeating: 7, count: 4096))
        let r = #expect(throws: MediaError.self) { _ = try readAll(try MediaDeviceSpec.source(["tape:\(path)"])) }
        #expect(r?.detail.contains("not a tape device") == true)
        #expect(throws: MediaError.self) { _ = try MediaDeviceSpec.source(["tape:relative/nst0"]) }
    }
}

/// Removable disks (RDX) through `dir:` with a changer: one volume per disk, all mounted in
/// turn at the same path.
@Suite struct RemovableDiskTests {
    /// Moves what is "mounted" at `mnt` onto disk `from` and mounts disk `to` there.
    private func swapDisks(_ base: String, unmount from: Int, mount to: Int) throws {
        let fm = FileManager.default
        let mnt = "\(base)/mnt", disk = { (n: Int) in "\(base)/disk-\(n)" }
        try fm.moveItem(atPath: mnt, toPath: disk(from))
        if fm.fileExists(atPath: disk(to)) { try fm.moveItem(atPath: disk(to), toPath: mnt) } else {
            try fm.createDirectory(atPath: mnt, withIntermediateDirectories: false)
        }
    }

    @Test func eachVolumeGoesOnTheNextDiskAndReadsBackDiskByDisk() throws {
        let base = mediaTempDir(); defer { try? FileManager.default.removeItem(atPath: base) }
        var mounted = 1
        var asked: [UInt32] = []
        let change = { (n: UInt32) throws(MediaError) in
            asked.append(n)
            do { try self.swapDisks(base, unmount: mounted, mount: Int(n)) } catch {
                throw MediaError(code: "E_MEDIA_DEVICE", volume: n, block: 0, detail: "\(error)")
            }
            mounted = Int(n)
        }
        let dev = try DirectorySequentialDevice(path: "\(base)/mnt", capacity: 8 << 10, nextMedium: change)
        let w = try MediaWriter(device: dev, setID: Array(0..<16), pool: "rdx", tenant: "acme", blockSize: 512,
                                created: "2026-11-27T00:00:00Z", retainUntil: nil, writer: "test")
        let records = sampleRecords()
        for r in records { try w.append(r) }
        let summary = try w.finish()
        #expect(summary.volumes >= 3)
        #expect(asked == Array(2...summary.volumes))
        // Each disk holds exactly its own volume.
        for n in 1..<Int(summary.volumes) {
            #expect(try FileManager.default.contentsOfDirectory(atPath: "\(base)/disk-\(n)")
                == [DirectorySequentialDevice.name(UInt32(n))])
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(base)/mnt")
            == [DirectorySequentialDevice.name(summary.volumes)])

        // Read back: disk 1 mounted first, the others on request; nothing asked past the last.
        try swapDisks(base, unmount: mounted, mount: 1)
        mounted = 1
        asked = []
        let (got, rep) = try readAll(try DirectorySequentialDevice(path: "\(base)/mnt", nextMedium: change))
        #expect(got == records && rep.damage.isEmpty)
        #expect(asked == Array(2...summary.volumes))

        // The wrong disk mounted for a volume is named, not read.
        try swapDisks(base, unmount: mounted, mount: 1)
        mounted = 1
        let wrong = { (n: UInt32) throws(MediaError) in asked.append(n) }  // the operator does not swap
        let e = #expect(throws: MediaError.self) {
            _ = try readAll(try DirectorySequentialDevice(path: "\(base)/mnt", nextMedium: wrong))
        }
        #expect(e?.code == "E_MEDIA_MISSING" && e?.volume == 2)
    }
}

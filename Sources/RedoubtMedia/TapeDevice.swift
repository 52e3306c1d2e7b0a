// Tape volumes through the Linux st driver (`tape:/dev/nst0`), one media block per tape
// record, a filemark after each volume, spanning at the end-of-medium early warning.
#if canImport(Glibc)
import Glibc
#endif
import CRedoubtSys

/// What a tape drive reports (MTIOCGET), as far as Redoubt uses it.
public struct TapeStatus: Sendable, Equatable {
    public var online: Bool
    public var writeProtected: Bool
    /// At the end of recorded data (a blank tape reads as this at the beginning).
    public var atEndOfData: Bool

    public init(online: Bool, writeProtected: Bool, atEndOfData: Bool) {
        self.online = online; self.writeProtected = writeProtected; self.atEndOfData = atEndOfData
    }
}

/// The outcome of writing one tape record.
public enum TapeWrite: Sendable, Equatable {
    case written
    /// ENOSPC: nothing was written. Past the early warning the st driver answers every
    /// other write this way so that a program can still write its trailer.
    case noSpace
}

/// The calls Redoubt makes on a tape drive: the st driver's semantics. ``STTapeDrive`` is
/// the real one; tests drive ``TapeDevice`` with a simulated drive.
public protocol TapeDrive: AnyObject {
    /// The device path, for messages.
    var path: String { get }
    func open(forWriting: Bool) throws(MediaError)
    func close()
    func status() throws(MediaError) -> TapeStatus
    func rewind() throws(MediaError)
    /// 0: variable block mode (each write is one record of its own size).
    func setBlockSize(_ size: Int) throws(MediaError)
    func writeRecord(_ bytes: UnsafeRawBufferPointer) throws(MediaError) -> TapeWrite
    /// Reads the next record into `buffer`; 0 at a filemark or the end of data.
    func readRecord(into buffer: UnsafeMutableRawBufferPointer) throws(MediaError) -> Int
    /// Writes a filemark; the drive flushes its buffer first, so write errors surface here.
    func writeFilemark() throws(MediaError)
    /// Rewinds and ejects.
    func unload() throws(MediaError)
}

/// The Linux st driver. Use the non-rewinding node (`/dev/nst0`): Redoubt positions the
/// tape itself.
public final class STTapeDrive: TapeDrive {
    public let path: String
    private var fd: Int32 = -1

    public init(path: String) { self.path = path }
    deinit { close() }

    private func fail(_ what: String, _ code: String = "E_MEDIA_DEVICE") -> MediaError {
        MediaError(code: code, volume: 0, block: 0, detail: "\(what) on \(path): \(String(cString: strerror(errno)))")
    }

    public func open(forWriting: Bool) throws(MediaError) {
        close()
        let f = Glibc.open(path, (forWriting ? O_RDWR : O_RDONLY) | O_CLOEXEC)
        guard f >= 0 else { throw fail("cannot open the tape drive") }
        fd = f
        // Why check here: a path that is not a tape (a disk, a file) must not be written as one.
        var s = redoubt_mt_status()
        guard redoubt_mt_get_status(fd, &s) == 0 else {
            let e = errno
            close()
            errno = e
            throw fail(e == ENOTTY ? "not a tape device (MTIOCGET)" : "cannot read the drive's status (MTIOCGET)")
        }
    }

    public func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    public func status() throws(MediaError) -> TapeStatus {
        var s = redoubt_mt_status()
        guard redoubt_mt_get_status(fd, &s) == 0 else { throw fail("MTIOCGET failed") }
        return TapeStatus(online: s.online != 0, writeProtected: s.write_protected != 0, atEndOfData: s.at_eod != 0)
    }

    private func op(_ o: redoubt_mt_operation, _ count: Int32, _ what: String) throws(MediaError) {
        guard redoubt_mt_op(fd, o, count) == 0 else { throw fail(what) }
    }

    public func rewind() throws(MediaError) { try op(REDOUBT_MT_REWIND, 1, "rewind (MTREW) failed") }
    public func setBlockSize(_ size: Int) throws(MediaError) {
        try op(REDOUBT_MT_SET_BLOCK, Int32(size), "setting the block size to \(size) (MTSETBLK) failed")
    }
    public func writeFilemark() throws(MediaError) {
        try op(REDOUBT_MT_WRITE_EOF, 1, "writing the filemark (MTWEOF) failed")
    }
    public func unload() throws(MediaError) { try op(REDOUBT_MT_UNLOAD, 1, "unloading (MTOFFL) failed") }

    public func writeRecord(_ bytes: UnsafeRawBufferPointer) throws(MediaError) -> TapeWrite {
        while true {
            let n = Glibc.write(fd, bytes.baseAddress, bytes.count)
            if n == bytes.count { return .written }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == ENOSPC { return .noSpace }
            // A short write cannot happen for one record in either block mode; treat it as an error.
            if n >= 0 { errno = EIO }
            throw fail("write of a \(bytes.count)-byte record failed")
        }
    }

    public func readRecord(into buffer: UnsafeMutableRawBufferPointer) throws(MediaError) -> Int {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            // ENOMEM: the record is larger than the buffer (st's variable-mode rule).
            throw fail(errno == ENOMEM ? "a tape record is larger than \(buffer.count) bytes" : "read failed")
        }
    }
}

/// `tape:PATH[?fixed]`: a media set on tape, one volume per cartridge. Each media block is
/// one tape record (variable block mode; with `?fixed` the drive is set to fixed blocks of
/// the media block size). A volume ends with a filemark and the cartridge is unloaded.
/// Volumes after the first are asked for through `nextMedium` (a changer hook or the
/// operator). Writing goes on past the end-of-medium early warning only to close the
/// volume (its catalogs and end block), then continues on the next cartridge.
public final class TapeDevice: SequentialDevice, SequentialSource {
    /// Bytes to write per volume at most (nil: up to the early warning).
    public let capacity: UInt64?
    public let drive: TapeDrive
    let fixedBlocks: Bool
    let blockSize: Int
    /// Called for every volume after the first, before it is opened: load cartridge `n`.
    let nextMedium: (UInt32) throws(MediaError) -> Void
    var volume: UInt32 = 0
    var loaded: UInt32 = 0
    var open = false
    public private(set) var pastEarlyWarning = false
    /// Reading: records read but not yet handed out.
    var pending: [UInt8] = []
    var pendingAt = 0
    var scratch: [UInt8] = []
    var atFilemark = false
    /// The outcome of existingLabelBlock for the volume about to begin.
    var checked: (seq: UInt32, result: Result<[UInt8]?, MediaError>)?

    /// Largest tape record a reader accepts (the largest media block size is far smaller).
    static let maxRecord = 16 << 20

    public init(drive: TapeDrive, blockSize: Int = 1 << 20, fixedBlocks: Bool = false, capacity: UInt64? = nil,
                nextMedium: @escaping (UInt32) throws(MediaError) -> Void) {
        self.drive = drive; self.blockSize = blockSize; self.fixedBlocks = fixedBlocks; self.capacity = capacity
        self.nextMedium = nextMedium
    }

    public var promptsForVolumes: Bool { true }

    private func mediaError(_ code: String, _ seq: UInt32, _ detail: String) -> MediaError {
        MediaError(code: code, volume: seq, block: 0, detail: "\(detail) (\(drive.path))")
    }

    private func tagged(_ e: MediaError, _ seq: UInt32) -> MediaError {
        MediaError(code: e.code, volume: seq, block: e.block, detail: e.detail)
    }

    /// Makes cartridge `seq` the one in the drive, open and rewound.
    private func load(_ seq: UInt32, forWriting: Bool) throws(MediaError) {
        guard loaded != seq || !open else { return }
        if seq > 1 { try nextMedium(seq) }
        do throws(MediaError) {
            try drive.open(forWriting: forWriting)
            let s = try drive.status()
            guard s.online else {
                throw mediaError("E_MEDIA_DEVICE", seq,
                    "no cartridge in the drive (or the drive is not ready) for volume \(seq)")
            }
            if forWriting && s.writeProtected {
                throw mediaError("E_MEDIA_DEVICE", seq,
                    "the cartridge for volume \(seq) is write-protected; use a writable one")
            }
            try drive.rewind()
        } catch {
            drive.close()
            throw tagged(error, seq)
        }
        loaded = seq
        open = true
    }

    // Array pointer scopes rethrow untyped errors; these keep MediaError.
    private func writeRecord(_ block: [UInt8]) throws(MediaError) -> TapeWrite {
        try block.withUnsafeBytes { b in Result { () throws(MediaError) in try drive.writeRecord(b) } }.get()
    }

    private func readRecord() throws(MediaError) -> Int {
        if scratch.count < Self.maxRecord { scratch = [UInt8](repeating: 0, count: Self.maxRecord) }
        return try scratch.withUnsafeMutableBytes { b in
            Result { () throws(MediaError) in try drive.readRecord(into: b) }
        }.get()
    }

    // MARK: writing

    public func existingLabelBlock(_ seq: UInt32) -> [UInt8]? {
        // An error surfaces from beginVolume (this call cannot throw), without loading
        // or reading the cartridge a second time.
        let r = Result { () throws(MediaError) in try labelOnCartridge(seq) }
        checked = (seq, r)
        return (try? r.get()) ?? nil
    }

    /// The first record of the cartridge for `seq`, nil when it is blank.
    private func labelOnCartridge(_ seq: UInt32) throws(MediaError) -> [UInt8]? {
        try load(seq, forWriting: true)
        try drive.setBlockSize(0)
        let n: Int
        do throws(MediaError) {
            n = try readRecord()
        } catch {
            // A blank cartridge reads as the end of data; anything else could be a label
            // we failed to read, and writing over it could destroy a retained set.
            guard (try? drive.status())?.atEndOfData == true else {
                throw mediaError("E_MEDIA_DEVICE", seq,
                    """
                        cannot read the cartridge's first record to check its retention: \(error.detail); use a blank \
                        cartridge or one whose set has expired
                        """)
            }
            n = 0
        }
        try drive.rewind()
        return n == 0 ? nil : Array(scratch[0..<n])
    }

    public func beginVolume(_ seq: UInt32) throws(MediaError) {
        volume = seq
        // Refuse what cannot be checked: an unreadable first record is not treated as blank.
        if let c = checked, c.seq == seq {
            checked = nil
            _ = try c.result.get()
        } else {
            _ = try labelOnCartridge(seq)
        }
        do throws(MediaError) {
            try drive.setBlockSize(fixedBlocks ? blockSize : 0)
        } catch { throw tagged(error, seq) }
        pastEarlyWarning = false
    }

    public func write(_ block: [UInt8]) throws(MediaError) {
        guard open else { throw mediaError("E_MEDIA_DEVICE", volume, "no volume open") }
        let r = try writeRecord(block)
        if r == .written { return }
        // The early warning: the driver refused this write; the next one proceeds (st.rst
        // "EOM Behaviour When Writing"). The writer closes the volume as soon as it can.
        pastEarlyWarning = true
        let again = try writeRecord(block)
        guard again == .written else {
            throw mediaError("E_MEDIA_FULL", volume,
                """
                    physical end of the cartridge for volume \(volume): a block could not be written even past the \
                    early warning; write the set again with a smaller --capacity
                    """)
        }
    }

    public func endVolume() throws(MediaError) {
        guard open else { return }
        do throws(MediaError) {
            try drive.writeFilemark()
            try drive.unload()
        } catch { throw tagged(error, volume) }
        drive.close()
        open = false
    }

    // MARK: reading

    public func nextVolume() throws(MediaError) -> Bool {
        volume += 1
        try load(volume, forWriting: false)
        do throws(MediaError) { try drive.setBlockSize(0) } catch { throw tagged(error, volume) }
        pending = []
        pendingAt = 0
        atFilemark = false
        return true
    }

    public func read(_ n: Int) throws(MediaError) -> [UInt8] {
        while pending.count - pendingAt < n && !atFilemark {
            let got: Int
            do throws(MediaError) {
                got = try readRecord()
            } catch { throw tagged(error, volume) }
            if got == 0 {
                atFilemark = true
                break
            }
            if pendingAt > 0 {
                pending.removeFirst(pendingAt)
                pendingAt = 0
            }
            pending.append(contentsOf: scratch[0..<got])
        }
        let take = min(n, pending.count - pendingAt)
        defer { pendingAt += take }
        return Array(pending[pendingAt..<(pendingAt + take)])
    }
}

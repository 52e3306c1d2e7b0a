// Sequential devices for media sets: plain files or FIFOs (`file:`) and directories (`dir:`).
#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Opens, writes and reads a file descriptor with whole-buffer loops (pipes return short reads).
struct FD {
    let fd: Int32
    let path: String

    static func open(_ path: String, write: Bool, volume: UInt32) throws(MediaError) -> FD {
        let fd = write ? Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600) : Glibc.open(path,
            O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw MediaError(code: "E_MEDIA_DEVICE", volume: volume, block: 0,
                             detail: "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        return FD(fd: fd, path: path)
    }

    func write(_ b: [UInt8], volume: UInt32) throws(MediaError) {
        var off = 0
        while off < b.count {
            let n = b.withUnsafeBytes { p -> Int in
                guard let base = p.baseAddress else { return -1 }
                return Glibc.write(fd, base + off, b.count - off)
            }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw MediaError(code: "E_MEDIA_DEVICE", volume: volume, block: 0,
                                 detail: "write to \(path) failed: \(String(cString: strerror(errno)))")
            }
            off += n
        }
    }

    func read(_ count: Int, volume: UInt32) throws(MediaError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var off = 0
        while off < count {
            let n = out.withUnsafeMutableBytes { p -> Int in
                guard let base = p.baseAddress else { return -1 }
                return Glibc.read(fd, base + off, count - off)
            }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else {
                throw MediaError(code: "E_MEDIA_DEVICE", volume: volume, block: 0,
                                 detail: "read from \(path) failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            off += n
        }
        return Array(out[0..<off])
    }
}

/// `file:PATH`: volume 1 is PATH, volume n is PATH.n; a FIFO works (nothing seeks).
/// For reading, `paths` lists the volume files in order (default: PATH, PATH.2, … while they exist).
public final class FileSequentialDevice: SequentialDevice, SequentialSource {
    public let capacity: UInt64?
    let path: String
    var paths: [String]
    var current: FD?
    var volume: UInt32 = 0

    /// A device writing PATH, PATH.2, …; `capacity` bytes per volume (nil: one unlimited volume).
    public init(path: String, capacity: UInt64? = nil) {
        self.path = path; self.capacity = capacity
        var ps = [path]
        var n = 2
        while FileManager.default.fileExists(atPath: "\(path).\(n)") { ps.append("\(path).\(n)"); n += 1 }
        paths = ps
    }

    /// A device reading exactly these volume files (or FIFOs), in this order.
    public init(paths: [String]) {
        self.path = paths.first ?? ""; self.paths = paths; capacity = nil
    }

    func volumePath(_ seq: UInt32) -> String { seq == 1 ? path : "\(path).\(seq)" }

    public func beginVolume(_ seq: UInt32) throws(MediaError) {
        volume = seq
        current = try FD.open(volumePath(seq), write: true, volume: seq)
    }

    public func existingLabelBlock(_ seq: UInt32) -> [UInt8]? {
        Self.labelOfRegularFile(volumePath(seq))
    }

    /// The first block of a regular file (never a FIFO: reading would consume the stream).
    static func labelOfRegularFile(_ p: String) -> [UInt8]? {
        var st = stat()
        guard stat(p, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, let f = try? FD.open(p, write: false,
            volume: 0) else {
            return nil
        }
        defer { close(f.fd) }
        guard let head = try? f.read(MediaBlockHeader.size, volume: 0), let bs = MediaBlock.announcedSize(head),
              let rest = try? f.read(bs - MediaBlockHeader.size, volume: 0) else { return nil }
        return head + rest
    }

    public func write(_ block: [UInt8]) throws(MediaError) {
        guard let c = current else {
            throw MediaError(code: "E_MEDIA_DEVICE", volume: volume, block: 0, detail: "no volume open")
        }
        try c.write(block, volume: volume)
    }

    public func endVolume() throws(MediaError) {
        if let c = current { _ = fsync(c.fd); close(c.fd) }
        current = nil
    }

    public func nextVolume() throws(MediaError) -> Bool {
        if let c = current { close(c.fd); current = nil }
        guard Int(volume) < paths.count else { return false }
        volume += 1
        current = try FD.open(paths[Int(volume) - 1], write: false, volume: volume)
        return true
    }

    public func read(_ n: Int) throws(MediaError) -> [UInt8] {
        guard let c = current else { return [] }
        return try c.read(n, volume: volume)
    }

    deinit { if let c = current { close(c.fd) } }
}

/// `dir:PATH`: one file per volume (`vol-000001.rdm`, …); each is fsynced and made read-only
/// (0444) when closed so a finished volume is not rewritten by accident.
///
/// With `nextMedium` (removable disks, RDX): each volume after the first goes on another
/// disk mounted at PATH; `nextMedium(n)` swaps it in before volume n is written or read,
/// and PATH must then exist (it is never created on whatever lies under the mount point).
/// Without it, all volumes go in PATH.
public final class DirectorySequentialDevice: SequentialDevice, SequentialSource {
    public let capacity: UInt64?
    let dir: String
    let file: FileSequentialDevice
    let nextMedium: MediaDeviceSpec.NextMedium?

    /// A directory device; it is created if missing.
    public init(path: String, capacity: UInt64? = nil,
        nextMedium: MediaDeviceSpec.NextMedium? = nil) throws(MediaError) {
        dir = path; self.capacity = capacity; self.nextMedium = nextMedium
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw MediaError(code: "E_MEDIA_DEVICE", volume: 0, block: 0, detail: "cannot create directory \(path)")
        }
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [])
            .filter { $0.hasPrefix("vol-") && $0.hasSuffix(".rdm") }.sorted()
        file = FileSequentialDevice(paths: names.map { "\(path)/\($0)" })
    }

    public var promptsForVolumes: Bool { nextMedium != nil }

    /// Runs the changer for volume `seq` (> 1) and checks the mount point is there.
    private func change(to seq: UInt32) throws(MediaError) {
        guard let nextMedium, seq > 1 else { return }
        try nextMedium(seq)
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw MediaError(code: "E_MEDIA_DEVICE", volume: seq, block: 0,
                detail: "\(dir) is missing after loading the disk for volume \(seq): is it mounted?")
        }
    }

    static func name(_ seq: UInt32) -> String {
        let s = String(seq)
        return "vol-" + String(repeating: "0", count: max(0, 6 - s.count)) + s + ".rdm"
    }

    public func beginVolume(_ seq: UInt32) throws(MediaError) {
        try change(to: seq)
        file.volume = seq
        let p = "\(dir)/\(Self.name(seq))"
        if FileManager.default.fileExists(atPath: p) {
            // Why: a closed volume is 0444; refusing here keeps a finished set from being overwritten.
            throw MediaError(code: "E_MEDIA_EXISTS", volume: seq, block: 0,
                detail: "\(p) already exists; use an empty directory")
        }
        file.current = try FD.open(p, write: true, volume: seq)
    }

    public func write(_ block: [UInt8]) throws(MediaError) { try file.write(block) }

    public func endVolume() throws(MediaError) {
        guard let c = file.current else { return }
        file.current = nil
        let ok = fsync(c.fd) == 0 && fchmod(c.fd, 0o444) == 0
        close(c.fd)
        guard ok else {
            throw MediaError(code: "E_MEDIA_DEVICE", volume: file.volume, block: 0,
                             detail: "cannot fsync or make \(c.path) read-only: \(String(cString: strerror(errno)))")
        }
        let d = Glibc.open(dir, O_RDONLY | O_DIRECTORY)
        if d >= 0 { _ = fsync(d); close(d) }
    }

    public func nextVolume() throws(MediaError) -> Bool {
        guard nextMedium != nil else { return try file.nextVolume() }
        // One disk at a time: volume n is PATH/vol-n on whatever disk is mounted.
        let seq = file.volume + 1
        try change(to: seq)
        let p = "\(dir)/\(Self.name(seq))"
        guard FileManager.default.fileExists(atPath: p) else {
            throw MediaError(code: "E_MEDIA_MISSING", volume: seq, block: 0,
                detail: "\(p) not found: the disk for volume \(seq) is not the one mounted at \(dir)")
        }
        if let c = file.current { close(c.fd) }
        file.current = try FD.open(p, write: false, volume: seq)
        file.volume = seq
        return true
    }
    public func read(_ n: Int) throws(MediaError) -> [UInt8] { try file.read(n) }
}

/// Parses `file:PATH`, `dir:PATH` or `tape:PATH[?fixed]` into a device (for writing) or a
/// source (for reading).
public enum MediaDeviceSpec {
    /// Loads the cartridge for a volume after the first (a changer hook or the operator).
    public typealias NextMedium = (UInt32) throws(MediaError) -> Void

    static let usage = "use file:PATH, dir:PATH or tape:/dev/nstN"

    /// Opens a device for writing.
    /// `nextMedium`: how the next tape or removable disk is loaded (a tape without one
    /// cannot span; a directory without one keeps every volume).
    public static func writer(_ spec: String, capacity: UInt64?, blockSize: Int = 1 << 20,
                              nextMedium: NextMedium? = nil) throws(MediaError) -> SequentialDevice {
        if spec.hasPrefix("file:") { return FileSequentialDevice(path: String(spec.dropFirst(5)), capacity: capacity) }
        if spec.hasPrefix("dir:") {
            return try DirectorySequentialDevice(path: String(spec.dropFirst(4)), capacity: capacity,
                nextMedium: nextMedium)
        }
        if let (path, fixed) = try tape(spec) {
            return TapeDevice(drive: STTapeDrive(path: path), blockSize: blockSize, fixedBlocks: fixed,
                capacity: capacity, nextMedium: orNoChanger(nextMedium))
        }
        throw MediaError(code: "E_MEDIA_DEVICE", volume: 0, block: 0, detail: "unknown device \(spec); \(usage)")
    }

    /// Opens the volumes named by `--device` options for reading: one `file:PATH` (PATH,
    /// PATH.2, … while they exist), several `file:` volumes in order (e.g. FIFOs), one
    /// `dir:PATH`, or one `tape:PATH` (later cartridges through `nextMedium`).
    public static func source(_ specs: [String], nextMedium: NextMedium? = nil) throws(MediaError) -> SequentialSource {
        if specs.count == 1, specs[0].hasPrefix("dir:") {
            return try DirectorySequentialDevice(path: String(specs[0].dropFirst(4)), nextMedium: nextMedium)
        }
        if specs.count == 1, let (path, fixed) = try tape(specs[0]) {
            return TapeDevice(drive: STTapeDrive(path: path), fixedBlocks: fixed, nextMedium: orNoChanger(nextMedium))
        }
        guard !specs.isEmpty, specs.allSatisfy({ $0.hasPrefix("file:") }) else {
            throw MediaError(code: "E_MEDIA_DEVICE", volume: 0, block: 0,
                             detail: "--device must be file:PATH (repeatable, one per volume in order), one dir:PATH "
                                 + "or one tape:/dev/nstN")
        }
        let paths = specs.map { String($0.dropFirst(5)) }
        return paths.count == 1 ? FileSequentialDevice(path: paths[0]) : FileSequentialDevice(paths: paths)
    }

    /// `tape:PATH` or `tape:PATH?fixed`: the path and whether to use fixed-size blocks.
    static func tape(_ spec: String) throws(MediaError) -> (String, Bool)? {
        guard spec.hasPrefix("tape:") else { return nil }
        var path = String(spec.dropFirst(5))
        var fixed = false
        if path.hasSuffix("?fixed") {
            path.removeLast(6)
            fixed = true
        }
        guard path.hasPrefix("/"), !path.contains("?") else {
            throw MediaError(code: "E_MEDIA_DEVICE", volume: 0, block: 0,
                detail: "\(spec): expected tape:/dev/nstN or tape:/dev/nstN?fixed")
        }
        return (path, fixed)
    }

    // Why not `?? noChanger`: swift-frontend 6.3.1 crashes converting the typed-throws
    // function reference there.
    static func orNoChanger(_ n: NextMedium?) -> NextMedium {
        if let n { return n }
        return { (v: UInt32) throws(MediaError) in try noChanger(v) }
    }

    /// Without a changer: any volume after the first cannot be loaded.
    public static func noChanger(_ n: UInt32) throws(MediaError) {
        throw MediaError(code: "E_MEDIA_DEVICE", volume: n, block: 0,
                         detail: """
                             volume \(n) is needed on another medium: give --changer CMD, or --changer ask on a \
                             terminal
                             """)
    }
}

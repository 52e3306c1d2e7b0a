import Glibc
import NIOCore
import RedoubtCore
import Synchronization

/// A finished pack's bytes in an unnamed file (``PackSpoolFile``), sent from there.
///
/// Why: a worker used to hold two packs (one filling, one uploading); written to the file
/// as it is built, a pack costs its writer a 1 MiB slice, and its upload a
/// ``BodySlices/sliceSize`` slice at a time, and the page cache, not the process, holds the rest. The bytes are the
/// pack's, unchanged (sealed to the tenant's read key, like what goes to the server). The
/// file is closed, and so gone, when the last reference (the worker's task or an HTTP body
/// still being read) is released: a descriptor is never closed while a body might still
/// read it, so its number cannot be reused under a request.
public final class SpooledPack: Sendable {
    public let id: PackID
    /// Bytes in the file (the pack's length).
    public let count: Int
    private let file: PackSpoolFile

    init(id: PackID, count: Int, file: PackSpoolFile) {
        self.id = id
        self.count = count
        self.file = file
    }

    /// Writes `bytes` to a new unnamed file in `directory`; nil if no file can be made or
    /// written there (the caller then uploads from memory, as without a spool).
    static func write(id: PackID, bytes: [UInt8], in directory: String) -> SpooledPack? {
        guard let file = PackSpoolFile(in: directory) else { return nil }
        do { try bytes.withUnsafeBytes { try file.append($0) } } catch { return nil }
        return SpooledPack(id: id, count: bytes.count, file: file)
    }

    /// The bytes at `offset`, at most `limit` of them, read from the file.
    func read(at offset: Int, limit: Int) throws(ArchiveError) -> ByteBuffer {
        let n = Swift.min(limit, count - offset)
        var buffer = ByteBufferAllocator().buffer(capacity: n)
        let r = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: n) { raw in
            switch ArchiveSys.preadFull(file.fd, into: raw.baseAddress!, count: n, at: UInt64(offset)) {
            case .success(let k): return k
            case .failure: return -1
            }
        }
        guard r == n else {
            throw ArchiveError(.io, object: "pack \(id)",
                "its spooled copy could not be read back (\(r < 0 ? "read error" : "short file")); run the backup "
                    + "again, and check the disk holding the metadata caches")
        }
        return buffer
    }

    /// The whole pack in memory (for targets that take arrays, such as tests' repositories).
    public func bytes() throws(ArchiveError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var offset = 0
        while offset < count {
            let part = try read(at: offset, limit: BodySlices.sliceSize)
            out.append(contentsOf: part.readableBytesView)
            offset += part.readableBytes
        }
        return out
    }
}

/// A backup target that can send a pack from its spooled copy instead of an array.
public protocol SpooledPackTarget: BackupTarget {
    /// False if this target cannot take spooled packs after all (a wrapper around one that
    /// cannot): the archiver then uploads from memory.
    var acceptsSpooledPacks: Bool { get }
    /// Stores the pack whose bytes `pack` holds, as ``BackupTarget/upload(pack:)`` does.
    func upload(spooled pack: SpooledPack) async throws
}

extension SpooledPackTarget {
    public var acceptsSpooledPacks: Bool { true }
}

/// An unnamed file (O_TMPFILE, or a private name unlinked at once) that a pack is written
/// into as it is built (``PackSpill``), then sent from as a ``SpooledPack``. Closed, and so
/// gone, when the last reference is released.
final class PackSpoolFile: PackSpill {
    let fd: Int32
    private let directory: String
    /// Bytes appended so far: where the next append goes.
    private let end = Mutex(0)

    /// Nil if no file can be made in `directory`.
    init?(in directory: String) {
        guard let fd = Self.openUnnamed(in: directory) else { return nil }
        self.fd = fd
        self.directory = directory
    }

    deinit { close(fd) }

    func append(_ bytes: UnsafeRawBufferPointer) throws(CoreError) {
        let e = end.withLock { end in
            let e = ArchiveSys.pwriteAll(fd, bytes, at: UInt64(end))
            if e == 0 { end += bytes.count }
            return e
        }
        guard e == 0 else {
            throw CoreError(.io, object: "pack spool file in \(directory)",
                "writing a pack being built failed: \(ArchiveSys.describe(errno: e)); packs are built there "
                    + "(the caches directory of the host's configuration) while they upload: free space there")
        }
    }

    private static func openUnnamed(in directory: String) -> Int32? {
        let fd = open(directory, O_RDWR | ArchiveSys.oTmpFile | O_CLOEXEC, 0o600)
        if fd >= 0 { return fd }
        // Filesystems without O_TMPFILE: a private name, unlinked before anything is written.
        var template = Array((directory.hasSuffix("/") ? directory : directory + "/").utf8CString.dropLast())
            + Array(".redoubt-pack-XXXXXX".utf8CString)
        let named = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard named >= 0 else { return nil }
        _ = fcntl(named, F_SETFD, FD_CLOEXEC)
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        return named
    }
}

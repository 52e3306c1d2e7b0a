import Glibc
import NIOCore
import RedoubtCore

/// A finished pack's bytes in an unnamed file (O_TMPFILE, or a name unlinked at once),
/// sent from there while the worker builds the next pack in the same memory.
///
/// Why: a worker used to hold two packs (one filling, one uploading); from the file, the
/// upload costs a 256 KiB slice at a time and the page cache, not the process. The bytes
/// are the finished pack's, unchanged (sealed to the tenant's read key, like what goes to
/// the server). The file is closed, and so gone, when the last reference (the worker's
/// task or an HTTP body still being read) is released: a descriptor is never closed while
/// a body might still read it, so its number cannot be reused under a request.
public final class SpooledPack: Sendable {
    public let id: PackID
    /// Bytes in the file (the pack's length).
    public let count: Int
    private let fd: Int32

    private init(id: PackID, count: Int, fd: Int32) {
        self.id = id
        self.count = count
        self.fd = fd
    }

    deinit { close(fd) }

    /// Writes `bytes` to a new unnamed file in `directory`; nil if no file can be made or
    /// written there (the caller then uploads from memory, as without a spool).
    static func write(id: PackID, bytes: [UInt8], in directory: String) -> SpooledPack? {
        guard let fd = openUnnamed(in: directory) else { return nil }
        let e = bytes.withUnsafeBytes { ArchiveSys.pwriteAll(fd, $0, at: 0) }
        guard e == 0 else {
            close(fd)
            return nil
        }
        return SpooledPack(id: id, count: bytes.count, fd: fd)
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

    /// The bytes at `offset`, at most `limit` of them, read from the file.
    func read(at offset: Int, limit: Int) throws(ArchiveError) -> ByteBuffer {
        let n = Swift.min(limit, count - offset)
        var buffer = ByteBufferAllocator().buffer(capacity: n)
        let r = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: n) { raw in
            switch ArchiveSys.preadFull(fd, into: raw.baseAddress!, count: n, at: UInt64(offset)) {
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

    /// The pack as a request body in slices of ``BodySlices/sliceSize`` (see there for why small).
    var body: SpooledBody { SpooledBody(pack: self) }
}

/// A spooled pack read slice by slice; a value type, so a request sent again starts over.
struct SpooledBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let pack: SpooledPack

    struct AsyncIterator: AsyncIteratorProtocol {
        let pack: SpooledPack
        var offset = 0

        mutating func next() async throws -> ByteBuffer? {
            guard offset < pack.count else { return nil }
            let part = try pack.read(at: offset, limit: BodySlices.sliceSize)
            offset += part.readableBytes
            return part
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(pack: pack) }
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

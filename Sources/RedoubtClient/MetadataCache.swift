import Crypto
import Glibc
import RedoubtCore

/// The host's local record of the files in its last successful snapshot, so the next
/// backup need not read files that have not changed (DESIGN.md §2, "incremental backups
/// without read access").
///
/// It holds only what the host already knows: paths, sizes, times, inode and device
/// numbers, and keyed chunk IDs. Never plaintext, never a key. A file whose size, mtime,
/// ctime, inode and device all match its entry is not read again; its chunks are still
/// checked against the repository before they are reused.
///
/// File format, version 1 (all integers little-endian, `uvarint` and `bytes*` as in
/// docs/FORMAT.md §8):
/// ```
/// magic "RDBTMDC1" ‖ version u16 (=1) ‖ keyCheck[32] ‖ count uvarint ‖ count × entry ‖ sha256[32]
/// entry = path bytes* ‖ size uvarint ‖ mtime ts ‖ ctime ts ‖ inode uvarint ‖ device uvarint
///       ‖ chunkCount uvarint ‖ chunkCount × chunkID[32]
///       ‖ sparse u8 ‖ (if 1: regionCount uvarint ‖ regionCount × (offset uvarint ‖ length uvarint))
/// ts = seconds i64 ‖ nanoseconds u32
/// ```
/// `keyCheck` is the chunk ID of the label "redoubt/v1/metadata-cache" under the
/// tenant's chunk-ID key: a cache written for another tenant (whose chunk IDs would mean
/// nothing here) is ignored. `sha256` covers every byte before it and catches a torn or
/// damaged file. Entries are sorted by path. The file is written to a temporary name,
/// fsynced and renamed over the old one, then the directory is fsynced, so a crash
/// leaves either the old or the new cache. A cache that fails any check is ignored
/// with a warning (the backup then reads every file), never trusted in part.
///
/// The cache is not a security boundary: an attacker with root on the host could edit
/// it, but could equally change the files being backed up.
public struct MetadataCache: Sendable {
    /// What the cache knows about one file.
    public struct Entry: Sendable, Hashable {
        public var size: UInt64
        public var mtime: Timestamp
        public var ctime: Timestamp
        public var inode: UInt64
        public var device: UInt64
        public var content: [ChunkID]
        public var dataRegions: [Extent]?
        /// The seal of each chunk of `content` (format-2 chunks: a tree needs them).
        public var contentSeals: [ChunkSeal] = []
        /// The keyed hash (HMAC, chunk-ID key) of each chunk's plaintext: lets a changed file's
        /// unchanged chunks be named without compressing and sealing them again.
        public var contentMACs: [ChunkID] = []

        public init(size: UInt64, mtime: Timestamp, ctime: Timestamp, inode: UInt64, device: UInt64, content: [ChunkID],
            dataRegions: [Extent]?) {
            self.size = size
            self.mtime = mtime
            self.ctime = ctime
            self.inode = inode
            self.device = device
            self.content = content
            self.dataRegions = dataRegions
        }

        /// True if a file with this stat is, by every cheap sign, unchanged.
        func matches(_ st: ArchiveSys.FileStat) -> Bool {
            size == st.size && mtime == st.mtime && ctime == st.ctime && inode == st.inode && device == st.device
        }
    }

    public static let magic = Array("RDBTMDC1".utf8)
    /// Version 2 keeps each chunk's seal and its plaintext's keyed hash beside its ID. It
    /// holds the keys of the last snapshot's file chunks: see docs/FORMAT.md §3.4 on what
    /// that means on a taken host.
    public static let version: UInt16 = 2
    static let keyCheckLabel = Array("redoubt/v1/metadata-cache".utf8)
    /// A cache larger than this is not read (a sanity bound, ~10 million files).
    public static let maxSize = 4 << 30

    /// Entries by absolute path bytes (`ByteKey`: a hundred thousand lookups per backup).
    private var byPath: [ByteKey: Entry]

    public init(entries: [[UInt8]: Entry] = [:]) {
        byPath = Dictionary(uniqueKeysWithValues: entries.map { (ByteKey($0.key), $0.value) })
    }

    private init(byPath: [ByteKey: Entry]) { self.byPath = byPath }

    /// `transform` of every entry, without copying the cache into a dictionary first.
    public func map<T>(_ transform: (_ path: [UInt8], _ entry: Entry) -> T) -> [T] {
        byPath.map { transform($0.key.bytes, $0.value) }
    }

    /// Every entry by path (a copy: for tests and tools, not the backup's lookups).
    public var entries: [[UInt8]: Entry] { Dictionary(uniqueKeysWithValues: byPath.map { ($0.key.bytes, $0.value) }) }

    public subscript(path: [UInt8]) -> Entry? {
        get { byPath[ByteKey(path)] }
        set { byPath[ByteKey(path)] = newValue }
    }

    public var count: Int { byPath.count }

    static func keyCheck(_ key: ChunkIDKey) -> [UInt8] { key.chunkID(for: keyCheckLabel).bytes }

    /// The encoding described above.
    public func encode(chunkIDKey: ChunkIDKey) -> [UInt8] {
        // Sized to the most that can be written, so that the buffer is never copied to grow (at
        // the end of an unchanged backup of a large tree it is part of the client's peak).
        // Per entry: six varints of at most 10 bytes, two timestamps of 12, the sparse flag;
        // 100 bytes per chunk, two varints per data region. The header takes under 64.
        var capacity = 64 + SHA256.byteCount
        for (key, e) in byPath {
            capacity += key.bytes.count + 6 * 10 + 2 * 12 + 1 + e.content.count * 100
                + (e.dataRegions?.count ?? 0) * 20
        }
        var w = ByteWriter(capacity: capacity)
        w.raw(Self.magic)
        w.u16(Self.version)
        w.raw(Self.keyCheck(chunkIDKey))
        w.uvarint(UInt64(byPath.count))
        // Keys alone are sorted: a sorted copy of the entries would double the cache in memory.
        for key in byPath.keys.sorted(by: { bytesPrecede($0.bytes, $1.bytes) }) {
            let e = byPath[key]!
            w.lengthPrefixed(key.bytes)
            w.uvarint(e.size)
            for t in [e.mtime, e.ctime] {
                w.i64(t.seconds)
                w.u32(t.nanoseconds)
            }
            w.uvarint(e.inode)
            w.uvarint(e.device)
            w.uvarint(UInt64(e.content.count))
            for (k, c) in e.content.enumerated() {
                w.raw(c.bytes)
                let seal = k < e.contentSeals.count ? e.contentSeals[k] : nil
                w.raw(seal?.key ?? [UInt8](repeating: 0, count: 32))
                w.u32(seal?.rawLength ?? UInt32.max)
                w.raw(k < e.contentMACs.count ? e.contentMACs[k].bytes : [UInt8](repeating: 0, count: 32))
            }
            if let regions = e.dataRegions {
                w.u8(1)
                w.uvarint(UInt64(regions.count))
                for r in regions {
                    w.uvarint(r.offset)
                    w.uvarint(r.length)
                }
            } else {
                w.u8(0)
            }
        }
        let digest = SHA256.hash(data: w.bytes)
        w.raw(Array(digest))
        return w.bytes
    }

    /// Why a cache file was not used.
    public struct Unusable: Error, Sendable, CustomStringConvertible {
        public let reason: String
        public var description: String { reason }
    }

    /// Decodes ``encode(chunkIDKey:)``'s output; throws ``Unusable`` for anything else.
    public static func decode(_ bytes: [UInt8], chunkIDKey: ChunkIDKey) throws(Unusable) -> MetadataCache {
        guard bytes.count >= 8 + 2 + 32 + 1 + 32 else { throw Unusable(reason: "too short (\(bytes.count) bytes)") }
        let body = bytes[0..<(bytes.count - 32)]
        guard Array(SHA256.hash(data: body)) == Array(bytes[(bytes.count - 32)...]) else {
            throw Unusable(reason: "checksum does not match: the file is damaged or was cut short")
        }
        var r = ByteReader(body)
        do {
            guard try r.raw(8) == magic else { throw Unusable(reason: "not a Redoubt metadata cache") }
            let v = try r.u16()
            guard v == version else { throw Unusable(reason: "cache version \(v); this build reads \(version)") }
            guard try r.raw(32) == keyCheck(chunkIDKey) else {
                throw Unusable(reason: "written for another tenant's keys")
            }
            let count = try r.count(limit: r.remaining / 32)
            var entries: [ByteKey: Entry] = [:]
            entries.reserveCapacity(count)
            for _ in 0..<count {
                let path = try r.lengthPrefixed(limit: 1 << 16)
                let size = try r.uvarint()
                var times: [Timestamp] = []
                for _ in 0..<2 {
                    let s = try r.i64(), ns = try r.u32()
                    guard ns < 1_000_000_000 else { throw Unusable(reason: "bad timestamp") }
                    times.append(Timestamp(seconds: s, nanoseconds: ns))
                }
                let inode = try r.uvarint(), device = try r.uvarint()
                let n = try r.count(limit: r.remaining / 100)
                var content: [ChunkID] = []
                var seals: [ChunkSeal] = []
                var macs: [ChunkID] = []
                content.reserveCapacity(n)
                for _ in 0..<n {
                    content.append(ChunkID(bytes: try r.raw(32))!)
                    let key = try r.raw(32), raw = try r.u32()
                    if let s = ChunkSeal(key: key, rawLength: raw) { seals.append(s) }
                    let mac = try r.raw(32)
                    if mac != [UInt8](repeating: 0, count: 32) { macs.append(ChunkID(bytes: mac)!) }
                }
                // A chunk without a seal (a format-1 chunk) leaves the file to be read again.
                if seals.count != content.count { seals = [] }
                if macs.count != content.count || seals.isEmpty { macs = [] }
                var regions: [Extent]? = nil
                switch try r.u8() {
                case 0: break
                case 1:
                    let nr = try r.count(limit: r.remaining / 2)
                    var list: [Extent] = []
                    var end: UInt64 = 0
                    for _ in 0..<nr {
                        let e = Extent(offset: try r.uvarint(), length: try r.uvarint())
                        let (stop, overflow) = e.offset.addingReportingOverflow(e.length)
                        guard !overflow, e.offset >= end, e.length > 0, stop <= size else {
                            throw Unusable(reason: "bad sparse map")
                        }
                        end = stop
                        list.append(e)
                    }
                    regions = list
                default: throw Unusable(reason: "bad sparse flag")
                }
                var entry = Entry(size: size, mtime: times[0], ctime: times[1], inode: inode, device: device,
                    content: content,
                                  dataRegions: regions)
                entry.contentSeals = seals
                entry.contentMACs = macs
                entries[ByteKey(path)] = entry
            }
            guard r.isAtEnd else { throw Unusable(reason: "trailing bytes") }
            return MetadataCache(byPath: entries)
        } catch let e as Unusable {
            throw e
        } catch {
            throw Unusable(reason: "malformed: \(error)")
        }
    }

    /// Loads the cache at `path`. A missing file is an empty cache; an unreadable or
    /// invalid one is an empty cache plus the reason, for the caller to warn about.
    public static func load(path: String, chunkIDKey: ChunkIDKey) -> (cache: MetadataCache, problem: String?) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let e = Glibc.errno
            return (MetadataCache(), e == ENOENT ? nil : "cannot open: \(ArchiveSys.describe(errno: e))")
        }
        defer { close(fd) }
        guard case .success(let st) = ArchiveSys.fstat(fd), st.isRegular else {
            return (MetadataCache(), "not a regular file")
        }
        guard st.size <= UInt64(maxSize) else { return (MetadataCache(), "too large (\(st.size) bytes)") }
        var bytes = [UInt8](repeating: 0, count: Int(st.size))
        let read = bytes.withUnsafeMutableBytes { b in
            b.count == 0 ? .success(0) : ArchiveSys.preadFull(fd, into: b.baseAddress!, count: b.count, at: 0)
        }
        switch read {
        case .failure(let e): return (MetadataCache(), "cannot read: \(ArchiveSys.describe(errno: e))")
        case .success(let n) where n != bytes.count: return (MetadataCache(), "changed while being read")
        case .success: break
        }
        do {
            return (try decode(bytes, chunkIDKey: chunkIDKey), nil)
        } catch {
            return (MetadataCache(), error.reason)
        }
    }

    /// Writes the cache atomically (temporary file, fsync, rename, fsync of the directory),
    /// readable only by its owner.
    public func write(to path: String, chunkIDKey: ChunkIDKey) throws(ArchiveError) {
        let bytes = encode(chunkIDKey: chunkIDKey)
        var random = SystemRandomNumberGenerator()
        let temp = path + ".tmp-\(getpid())-\(String(random.next() as UInt64, radix: 16))"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            throw ArchiveError.system("creating the metadata cache", object: temp, errno: Glibc.errno)
        }
        var failure: ArchiveError? = nil
        let e = bytes.withUnsafeBytes { ArchiveSys.pwriteAll(fd, $0, at: 0) }
        if e != 0 {
            failure = .system("writing the metadata cache", object: temp, errno: e)
        } else if fsync(fd) != 0 {
            failure = .system("fsync of the metadata cache", object: temp, errno: Glibc.errno)
        }
        close(fd)
        if failure == nil, rename(temp, path) != 0 {
            failure = .system("renaming the metadata cache into place", object: path, errno: Glibc.errno)
        }
        if let failure {
            unlink(temp)
            throw failure
        }
        ArchiveSys.fsyncDirectory(of: Array(path.utf8))
    }
}

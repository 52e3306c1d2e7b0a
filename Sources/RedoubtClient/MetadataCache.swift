import Crypto
import Dispatch
import Glibc
import RedoubtCore
import Synchronization

/// The host's local record of the files in its last successful snapshot, so the next
/// backup need not read files that have not changed (DESIGN.md §2, "incremental backups
/// without read access").
///
/// It holds only what the host already knows: paths, sizes, times, inode and device
/// numbers, keyed chunk IDs and extended attributes. Never plaintext, never a key. A file
/// whose size, mtime, ctime, inode and device all match its entry is not read again, and
/// its extended attributes are taken from the entry (changing them moves the ctime); its
/// chunks are still checked against the repository before they are reused.
///
/// File format, version 4 (all integers little-endian, `uvarint` and `bytes*` as in
/// docs/FORMAT.md §8):
/// ```
/// magic "RDBTMDC1" ‖ version u16 (=4) ‖ keyCheck[32] ‖ entry* ‖ 0x00 ‖ count uvarint
///       ‖ treeCount uvarint ‖ treeCount × (mac[32] ‖ chunkID[32] ‖ sealKey[32] ‖ rawLength u32) ‖ sha256[32]
/// entry = path bytes* ‖ size uvarint ‖ mtime ts ‖ ctime ts ‖ inode uvarint ‖ device uvarint
///       ‖ chunkCount uvarint ‖ chunkCount × (chunkID[32] ‖ sealKey[32] ‖ rawLength u32 ‖ mac[32])
///       ‖ sparse u8 ‖ (if 1: regionCount uvarint ‖ regionCount × (offset uvarint ‖ length uvarint))
///       ‖ xattrsKnown u8 ‖ (if 1: xattrCount uvarint ‖ xattrCount × (name bytes* ‖ value bytes*))
/// ts = seconds i64 ‖ nanoseconds u32
/// ```
/// A path is never empty, so the byte 0x00 where the next entry's length would be ends
/// the list; `count` then says how many entries came before it. The tree chunks of the
/// snapshot follow (each with its plaintext's keyed hash), so that a directory whose tree
/// is unchanged is named without compressing and sealing its tree again. Entries are in the order
/// the backup finished their files, each path once: the cache is written while the backup
/// runs, never held whole. Version 3 (still read) had no extended attributes: its entries
/// load with them unknown, so their files are read once more. Version 2 (still read) also
/// had `count` after `keyCheck` and its entries sorted by path, and no end byte.
///
/// `keyCheck` is the chunk ID of the label "redoubt/v1/metadata-cache" under the
/// tenant's chunk-ID key: a cache written for another tenant (whose chunk IDs would mean
/// nothing here) is ignored. `sha256` covers every byte before it and catches a torn or
/// damaged file. The file is written to a temporary name, fsynced and renamed over the
/// old one only after the snapshot is committed, then the directory is fsynced, so a crash
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
        /// The file's extended attributes when it was read; nil if unknown (a version-3
        /// entry, or a listing that failed), which leaves the file to be read again.
        public var xattrs: [ExtendedAttribute]?

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
    /// Since version 2 each chunk's seal and its plaintext's keyed hash are kept beside its
    /// ID. The cache holds the keys of the last snapshot's file chunks: see docs/FORMAT.md
    /// §3.4 on what that means on a taken host. Version 3 is written as a stream. Version 4
    /// keeps each file's extended attributes, so an unchanged file's need not be listed.
    public static let version: UInt16 = 4
    static let keyCheckLabel = Array("redoubt/v1/metadata-cache".utf8)
    /// A cache larger than this is not read (a sanity bound, ~10 million files).
    public static let maxSize = 4 << 30

    /// A chunk of one of the last snapshot's trees: its plaintext's keyed hash, ID and seal.
    public struct TreeChunk: Sendable, Hashable {
        public let mac: ChunkID
        public let id: ChunkID
        public let seal: ChunkSeal
        public init(mac: ChunkID, id: ChunkID, seal: ChunkSeal) {
            self.mac = mac
            self.id = id
            self.seal = seal
        }
    }

    /// The tree chunks of the snapshot the cache was written for.
    public var trees: [TreeChunk] = []

    /// The entries, encoded as in the file (a loaded cache keeps the file's bytes as they
    /// are): an entry is decoded only when it is looked up, so a cache of a large tree
    /// takes little more memory than its file.
    private var bytes: [UInt8] = []
    /// The version `bytes` are encoded in: a loaded cache keeps its file's.
    private var bytesVersion = version
    /// Where each entry starts in `bytes`; -1 once replaced or removed.
    private var starts: [Int] = []
    /// Open addressing by the path's hash: an index into `starts` plus one, 0 for an empty
    /// slot; at most half full.
    private var table: [Int32] = []
    public private(set) var count = 0

    public init(entries: [[UInt8]: Entry] = [:]) {
        for (path, entry) in entries { self[path] = entry }
    }

    /// `transform` of every entry, without copying the cache into a dictionary first.
    public func map<T>(_ transform: (_ path: [UInt8], _ entry: Entry) -> T) -> [T] {
        var out: [T] = []
        out.reserveCapacity(count)
        forEach { _, path, entry in out.append(transform(path, entry)) }
        return out
    }

    /// Every entry with its index (see ``find(_:)``).
    func forEach(_ body: (_ index: Int, _ path: [UInt8], _ entry: Entry) -> Void) {
        for (i, start) in starts.enumerated() where start >= 0 {
            guard let (path, entry) = decoded(at: start) else { continue }
            body(i, path, entry)
        }
    }

    /// Every entry's index, path, device and inode: what the activity section compares,
    /// without decoding chunk lists.
    func forEachFile(_ body: (_ index: Int, _ path: [UInt8], _ device: UInt64, _ inode: UInt64) -> Void) {
        for (i, start) in starts.enumerated() where start >= 0 {
            var r = ByteReader(bytes, range: start..<bytes.count)
            guard let head = try? Self.skipHead(&r) else { continue }
            body(i, Array(bytes[head.path]), head.device, head.inode)
        }
    }

    /// Every entry by path (a copy: for tests and tools, not the backup's lookups).
    public var entries: [[UInt8]: Entry] {
        var out: [[UInt8]: Entry] = [:]
        forEach { _, path, entry in out[path] = entry }
        return out
    }

    /// The entry for `path` and its index: a number below `indexLimit`, the same for a path
    /// as long as the cache is not changed.
    func find(_ path: [UInt8]) -> (index: Int, entry: Entry)? {
        let (_, index) = slot(of: path[...])
        guard let index, starts[index] >= 0, let (_, entry) = decoded(at: starts[index]) else { return nil }
        return (index, entry)
    }

    /// The encoded entry `index` (as ``find(_:)`` returns it), if it is encoded as this
    /// build writes entries: an unchanged file's entry goes into the next cache as it is.
    func encodedEntry(_ index: Int) -> ArraySlice<UInt8>? {
        guard bytesVersion == Self.version, starts.indices.contains(index), starts[index] >= 0 else { return nil }
        var r = ByteReader(bytes, range: starts[index]..<bytes.count)
        guard (try? Self.skipEntry(&r, version: bytesVersion)) != nil else { return nil }
        return bytes[starts[index]..<r.offset]
    }

    /// Above every index ``find(_:)`` returns.
    var indexLimit: Int { starts.count }

    public subscript(path: [UInt8]) -> Entry? {
        get { find(path)?.entry }
        set {
            if bytesVersion != Self.version { self = MetadataCache(entries: entries) }
            if table.isEmpty || 2 * (starts.count + 1) > table.count { rehash(minimum: 2 * (starts.count + 1)) }
            let (slot, old) = slot(of: path[...])
            if let old {
                if starts[old] >= 0 {
                    starts[old] = -1
                    count -= 1
                }
                stalePaths[old] = nil
            }
            guard let newValue else {
                // The slot stays taken (later paths may have probed past it), so its path is kept.
                if let old { stalePaths[old] = path }
                return
            }
            var w = ByteWriter()
            Self.writeEntry(&w, path: path, newValue)
            starts.append(bytes.count)
            bytes += w.bytes
            table[slot] = Int32(starts.count)
            count += 1
        }
    }

    /// The slot of `path` in `table`, and the entry it holds (nil if the slot is empty).
    private func slot(of path: ArraySlice<UInt8>) -> (slot: Int, index: Int?) {
        guard !table.isEmpty else { return (0, nil) }
        let mask = table.count - 1
        var h = Self.hash(path) & mask
        while true {
            let t = Int(table[h])
            if t == 0 { return (h, nil) }
            if pathEquals(at: starts[t - 1] >= 0 ? starts[t - 1] : nil, index: t - 1, path) { return (h, t - 1) }
            h = (h + 1) & mask
        }
    }

    /// Whether the entry `index` (starting at `start`, or removed) has this path. A removed
    /// entry keeps its slot until a rehash; its path is then in `stalePaths`.
    private func pathEquals(at start: Int?, index: Int, _ path: ArraySlice<UInt8>) -> Bool {
        guard let start else { return stalePaths[index].map { $0[...] == path } ?? false }
        let range = Self.pathRange(bytes, at: start)
        guard range.count == path.count else { return false }
        if path.isEmpty { return true }
        return bytes.withUnsafeBufferPointer { b in
            path.withUnsafeBufferPointer { p in
                memcmp(b.baseAddress! + range.lowerBound, p.baseAddress!, p.count) == 0
            }
        }
    }

    /// The paths of removed entries that still hold a slot, by index.
    private var stalePaths: [Int: [UInt8]] = [:]

    private mutating func rehash(minimum: Int) {
        var size = 16
        while size < minimum { size *= 2 }
        table = [Int32](repeating: 0, count: size)
        stalePaths = [:]
        let mask = size - 1
        for (i, start) in starts.enumerated() where start >= 0 {
            let range = Self.pathRange(bytes, at: start)
            var h = Self.hash(bytes[range]) & mask
            while table[h] != 0 { h = (h + 1) & mask }
            table[h] = Int32(i + 1)
        }
    }

    /// One call per file looked up: the bytes go to the hasher at once, not one by one.
    private static func hash(_ path: ArraySlice<UInt8>) -> Int {
        var hasher = Hasher()
        hasher.combine(path.count)
        path.withUnsafeBytes { hasher.combine(bytes: $0) }
        return hasher.finalize()
    }

    /// Where the path of the entry that starts at `start` is (its length prefix read).
    private static func pathRange(_ bytes: [UInt8], at start: Int) -> Range<Int> {
        var length = 0, shift = 0, i = start
        while true {
            let b = bytes[i]
            length |= Int(b & 0x7f) << shift
            i += 1
            if b < 0x80 { break }
            shift += 7
        }
        return i..<(i + length)
    }

    /// The entry that starts at `start`; nil if its values are out of range (a file the
    /// checksum vouches for, but not written by this code: its file is then read again).
    private func decoded(at start: Int) -> (path: [UInt8], entry: Entry)? {
        var r = ByteReader(bytes, range: start..<bytes.count)
        return try? Self.parseEntry(&r, version: bytesVersion)
    }

    static func keyCheck(_ key: ChunkIDKey) -> [UInt8] { key.chunkID(for: keyCheckLabel).bytes }

    /// The encoding described above, entries sorted by path (one input, one encoding).
    public func encode(chunkIDKey: ChunkIDKey) -> [UInt8] {
        var w = ByteWriter(capacity: 64 + SHA256.byteCount)
        Self.writeHeader(&w, chunkIDKey: chunkIDKey)
        for (path, entry) in sortedEntries() { Self.writeEntry(&w, path: path, entry) }
        Self.writeTrailer(&w, count: count, trees: trees)
        let digest = SHA256.hash(data: w.bytes)
        w.raw(Array(digest))
        return w.bytes
    }

    private func sortedEntries() -> [(path: [UInt8], entry: Entry)] {
        map { ($0, $1) }.sorted { bytesPrecede($0.path, $1.path) }
    }

    static func writeHeader(_ w: inout ByteWriter, chunkIDKey: ChunkIDKey) {
        w.raw(magic)
        w.u16(version)
        w.raw(keyCheck(chunkIDKey))
    }

    /// The end byte, the count and the tree chunks; the caller appends the digest.
    static func writeTrailer(_ w: inout ByteWriter, count: Int, trees: [TreeChunk]) {
        w.u8(0)
        w.uvarint(UInt64(count))
        w.uvarint(UInt64(trees.count))
        for t in trees {
            w.raw(t.mac.bytes)
            w.raw(t.id.bytes)
            w.raw(t.seal.key)
            w.u32(t.seal.rawLength)
        }
    }

    static func writeEntry(_ w: inout ByteWriter, path: [UInt8], _ e: Entry) {
        w.lengthPrefixed(path)
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
        w.dataRegions(e.dataRegions)
        guard let xattrs = e.xattrs else { return w.u8(0) }
        w.u8(1)
        w.uvarint(UInt64(xattrs.count))
        for x in xattrs {
            w.lengthPrefixed(x.name)
            w.lengthPrefixed(x.value)
        }
    }

    /// Why a cache file was not used.
    public struct Unusable: Error, Sendable, CustomStringConvertible {
        public let reason: String
        public var description: String { reason }
    }

    /// Decodes ``encode(chunkIDKey:)``'s output (or a version-2 or -3 cache); throws
    /// ``Unusable`` for anything else. The checksum and every entry's framing are checked
    /// here, without copying anything out; the cache keeps `bytes` as they are and decodes
    /// an entry only when it is looked up (one whose values do not parse then counts as
    /// not cached).
    public static func decode(_ bytes: [UInt8], chunkIDKey: ChunkIDKey) throws(Unusable) -> MetadataCache {
        guard bytes.count >= 8 + 2 + 32 + 1 + 32 else { throw Unusable(reason: "too short (\(bytes.count) bytes)") }
        let bodyEnd = bytes.count - 32
        // The checksum is computed on a second thread while the entries are indexed (the
        // index is dropped if it does not match): loading is on every backup's critical path.
        let matches = Mutex(false), indexed = Mutex<Result<MetadataCache, Unusable>?>(nil)
        DispatchQueue.concurrentPerform(iterations: 2) { part in
            if part == 0 {
                let digest = bytes.withUnsafeBytes {
                    SHA256.hash(data: UnsafeRawBufferPointer(rebasing: $0[0..<bodyEnd]))
                }
                let ok = Array(digest) == Array(bytes[bodyEnd...])
                matches.withLock { $0 = ok }
            } else {
                let result = Result { () throws(Unusable) in
                    try index(bytes, bodyEnd: bodyEnd, chunkIDKey: chunkIDKey)
                }
                indexed.withLock { $0 = result }
            }
        }
        guard matches.withLock({ $0 }) else {
            throw Unusable(reason: "checksum does not match: the file is damaged or was cut short")
        }
        guard let result = indexed.withLock({ $0 }) else { throw Unusable(reason: "not indexed (internal error)") }
        return try result.get()
    }

    /// Indexes the entries of a cache whose checksum is checked by the caller.
    private static func index(_ bytes: [UInt8], bodyEnd: Int, chunkIDKey: ChunkIDKey) throws(Unusable)
        -> MetadataCache {
        var r = ByteReader(bytes, range: 0..<bodyEnd)
        var cache = MetadataCache()
        cache.bytes = bytes
        do {
            guard try r.raw(8) == magic else { throw Unusable(reason: "not a Redoubt metadata cache") }
            let v = try r.u16()
            guard (2...version).contains(v) else {
                throw Unusable(reason: "cache version \(v); this build reads 2 to \(version)")
            }
            cache.bytesVersion = v
            guard try r.raw(32) == keyCheck(chunkIDKey) else {
                throw Unusable(reason: "written for another tenant's keys")
            }
            // Version 2 counts first; version 3 ends its list with an empty path, then counts.
            let stated = v == 2 ? try r.count(limit: r.remaining / 32) : nil
            if let stated { cache.rehash(minimum: 2 * stated) }
            while stated.map({ cache.count < $0 }) ?? true {
                let start = r.offset
                var peek = r
                if try peek.uvarint() == 0 {
                    guard stated == nil else { throw Unusable(reason: "empty path") }
                    r = peek
                    let count = try r.uvarint()
                    guard count == UInt64(cache.count) else {
                        throw Unusable(reason: "says \(count) entries, holds \(cache.count)")
                    }
                    if v >= 4 { cache.trees = try parseTrees(&r) }
                    break
                }
                try cache.adopt(path: try skipEntry(&r, version: v), start: start)
            }
            guard r.isAtEnd else { throw Unusable(reason: "trailing bytes") }
            return cache
        } catch let e as Unusable {
            throw e
        } catch {
            throw Unusable(reason: "malformed: \(error)")
        }
    }

    private static func parseTrees(_ r: inout ByteReader) throws -> [TreeChunk] {
        let n = try r.count(limit: r.remaining / 100)
        var out: [TreeChunk] = []
        out.reserveCapacity(n)
        for _ in 0..<n {
            let mac = ChunkID(bytes: try r.raw(32))!, id = ChunkID(bytes: try r.raw(32))!
            guard let seal = ChunkSeal(key: try r.raw(32), rawLength: try r.u32()) else {
                throw Unusable(reason: "bad tree chunk seal")
            }
            out.append(TreeChunk(mac: mac, id: id, seal: seal))
        }
        return out
    }

    /// Indexes the entry already in `bytes` at `start`, whose path is `bytes[path]`.
    private mutating func adopt(path: Range<Int>, start: Int) throws(Unusable) {
        if table.isEmpty || 2 * (starts.count + 1) > table.count { rehash(minimum: 2 * (starts.count + 1)) }
        let (slot, old) = slot(of: bytes[path])
        guard old == nil else { throw Unusable(reason: "a path is listed twice") }
        starts.append(start)
        table[slot] = Int32(starts.count)
        count += 1
    }

    /// Passes over one entry as encoded by ``writeEntry(_:path:_:)``, checking its framing
    /// (lengths, counts, flags) but not its values; returns where its path is.
    static func skipEntry(_ r: inout ByteReader, version: UInt16) throws -> Range<Int> {
        let path = try skipHead(&r).path
        let n = try r.count(limit: r.remaining / 100)
        try r.skip(n * 100)
        switch try r.u8() {
        case 0: break
        case 1: for _ in 0..<(2 * (try r.count(limit: r.remaining / 2))) { _ = try r.uvarint() }
        default: throw Unusable(reason: "bad sparse flag")
        }
        guard version >= 4 else { return path }
        switch try r.u8() {
        case 0: break
        case 1:
            for _ in 0..<(try r.count(limit: min(r.remaining / 2, TreeCodec.maxXattrs))) {
                try r.skip(try r.lengthPrefixedRange(limit: 255).count)
                try r.skip(try r.lengthPrefixedRange(limit: TreeCodec.maxXattrValue).count)
            }
        default: throw Unusable(reason: "bad attribute flag")
        }
        return path
    }

    /// Passes over an entry's path, size and times; returns where its path is, and its
    /// inode and device (what the activity section compares). The reader is left at the
    /// chunk count.
    private static func skipHead(_ r: inout ByteReader) throws -> (path: Range<Int>, inode: UInt64, device: UInt64) {
        let path = try r.lengthPrefixedRange(limit: 1 << 16)
        guard !path.isEmpty else { throw Unusable(reason: "empty path") }
        try r.skip(path.count)
        _ = try r.uvarint()
        try r.skip(2 * (8 + 4))
        let inode = try r.uvarint()
        return (path, inode, try r.uvarint())
    }

    /// One entry as encoded by ``writeEntry(_:path:_:)``, checked.
    static func parseEntry(_ r: inout ByteReader, version: UInt16) throws -> (path: [UInt8], entry: Entry) {
        let path = try r.lengthPrefixed(limit: 1 << 16)
        guard !path.isEmpty else { throw Unusable(reason: "empty path") }
        let size = try r.uvarint()
        func timestamp() throws -> Timestamp {
            let s = try r.i64(), ns = try r.u32()
            guard ns < 1_000_000_000 else { throw Unusable(reason: "bad timestamp") }
            return Timestamp(seconds: s, nanoseconds: ns)
        }
        let mtime = try timestamp(), ctime = try timestamp()
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
        var entry = Entry(size: size, mtime: mtime, ctime: ctime, inode: inode, device: device, content: content,
                          dataRegions: regions)
        entry.contentSeals = seals
        entry.contentMACs = macs
        if version >= 4 { entry.xattrs = try parseXattrs(&r) }
        return (path, entry)
    }

    /// An entry's extended attributes, within the limits a tree allows.
    private static func parseXattrs(_ r: inout ByteReader) throws -> [ExtendedAttribute]? {
        switch try r.u8() {
        case 0: return nil
        case 1:
            let n = try r.count(limit: min(r.remaining / 2, TreeCodec.maxXattrs))
            var out: [ExtendedAttribute] = []
            out.reserveCapacity(n)
            for _ in 0..<n {
                let name = try r.lengthPrefixed(limit: 255)
                guard !name.isEmpty, !name.contains(0) else { throw Unusable(reason: "bad attribute name") }
                out.append(ExtendedAttribute(name: name, value: try r.lengthPrefixed(limit: TreeCodec.maxXattrValue)))
            }
            return out
        default: throw Unusable(reason: "bad attribute flag")
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
        // Not zeroed first: every byte is read into, or the cache is not used.
        var read: SysResult<Int> = .success(0)
        let bytes = [UInt8](unsafeUninitializedCapacity: Int(st.size)) { b, initialized in
            read = b.count == 0 ? .success(0) : ArchiveSys.preadFull(fd, into: b.baseAddress!, count: b.count, at: 0)
            if case .success(let n) = read { initialized = n }
        }
        switch read {
        case .failure(let e): return (MetadataCache(), "cannot read: \(ArchiveSys.describe(errno: e))")
        case .success(let n) where n != Int(st.size): return (MetadataCache(), "changed while being read")
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
        let writer = try MetadataCacheWriter(path: path, chunkIDKey: chunkIDKey)
        for (path, entry) in sortedEntries() { try writer.append(path: path, entry) }
        try writer.commit(trees: trees)
    }
}

/// Writes a metadata cache entry by entry while a backup runs, so that the next cache is
/// never held whole: to a temporary file beside `path`, readable only by its owner, that
/// replaces the old cache only on ``commit()`` (fsync, rename, fsync of the directory).
/// Dropped without a commit, it removes its temporary file and the old cache stays.
final class MetadataCacheWriter {
    let path: String
    private let temp: String
    private var fd: Int32
    private var buffer = ByteWriter(capacity: 1 << 20)
    private var digest = SHA256()
    private var offset: UInt64 = 0
    private(set) var count = 0

    init(path: String, chunkIDKey: ChunkIDKey) throws(ArchiveError) {
        self.path = path
        var random = SystemRandomNumberGenerator()
        temp = path + ".tmp-\(getpid())-\(String(random.next() as UInt64, radix: 16))"
        fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            throw ArchiveError.system("creating the metadata cache", object: temp, errno: Glibc.errno)
        }
        MetadataCache.writeHeader(&buffer, chunkIDKey: chunkIDKey)
    }

    deinit { discard() }

    func append(path: [UInt8], _ entry: MetadataCache.Entry) throws(ArchiveError) {
        MetadataCache.writeEntry(&buffer, path: path, entry)
        count += 1
        if buffer.count >= 1 << 20 { try flush() }
    }

    /// Appends an entry already encoded (``MetadataCache/encodedEntry(_:)``).
    func append(encoded: ArraySlice<UInt8>) throws(ArchiveError) {
        buffer.raw(encoded)
        count += 1
        if buffer.count >= 1 << 20 { try flush() }
    }

    private func flush() throws(ArchiveError) {
        guard fd >= 0 else { throw ArchiveError(.io, object: temp, "the metadata cache was already closed") }
        digest.update(data: buffer.bytes)
        let e = buffer.bytes.withUnsafeBytes { ArchiveSys.pwriteAll(fd, $0, at: offset) }
        guard e == 0 else { throw .system("writing the metadata cache", object: temp, errno: e) }
        offset += UInt64(buffer.count)
        buffer.reset()
    }

    /// Ends the file with the snapshot's tree chunks and puts it in place of the old cache.
    func commit(trees: [MetadataCache.TreeChunk] = []) throws(ArchiveError) {
        MetadataCache.writeTrailer(&buffer, count: count, trees: trees)
        try flush()
        buffer.raw(Array(digest.finalize()))
        let e = buffer.bytes.withUnsafeBytes { ArchiveSys.pwriteAll(fd, $0, at: offset) }
        guard e == 0 else { throw .system("writing the metadata cache", object: temp, errno: e) }
        guard fsync(fd) == 0 else { throw .system("fsync of the metadata cache", object: temp, errno: Glibc.errno) }
        close(fd)
        fd = -1
        guard rename(temp, path) == 0 else {
            let e = Glibc.errno
            unlink(temp)
            throw .system("renaming the metadata cache into place", object: path, errno: e)
        }
        ArchiveSys.fsyncDirectory(of: Array(path.utf8))
    }

    /// Removes the temporary file; the old cache stays.
    func discard() {
        guard fd >= 0 else { return }
        close(fd)
        fd = -1
        unlink(temp)
    }
}

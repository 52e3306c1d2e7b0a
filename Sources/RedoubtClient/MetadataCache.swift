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
/// chunks are still checked against the repository before they are reused: by their
/// packs where the entry names them (one query for every pack of the cache), else one by one.
///
/// File format, version 5 (all integers little-endian, `uvarint` and `bytes*` as in
/// docs/FORMAT.md §8):
/// ```
/// magic "RDBTMDC1" ‖ version u16 (=5) ‖ keyCheck[32] ‖ entry* ‖ 0x00 ‖ count uvarint
///       ‖ treeCount uvarint ‖ treeCount × (mac[32] ‖ chunkID[32] ‖ sealKey[32] ‖ rawLength u32)
///       ‖ packCount uvarint ‖ packCount × packID[32] ‖ treeCount × packIndex uvarint ‖ sha256[32]
/// entry = path bytes* ‖ size uvarint ‖ mtime ts ‖ ctime ts ‖ inode uvarint ‖ device uvarint
///       ‖ chunkCount uvarint ‖ chunkCount × (chunkID[32] ‖ sealKey[32] ‖ rawLength u32 ‖ mac[32])
///       ‖ sparse u8 ‖ (if 1: regionCount uvarint ‖ regionCount × (offset uvarint ‖ length uvarint))
///       ‖ xattrsKnown u8 ‖ (if 1: xattrCount uvarint ‖ xattrCount × (name bytes* ‖ value bytes*))
///       ‖ entryPackCount uvarint ‖ entryPackCount × packID[32]
///       ‖ (if entryPackCount > 0: chunkCount × packIndex uvarint)
/// ts = seconds i64 ‖ nanoseconds u32
/// ```
/// A path is never empty, so the byte 0x00 where the next entry's length would be ends
/// the list; `count` then says how many entries came before it. The tree chunks of the
/// snapshot follow (each with its plaintext's keyed hash), so that a directory whose tree
/// is unchanged is named without compressing and sealing its tree again. Entries are in the order
/// the backup finished their files, each path once: the cache is written while the backup
/// runs, never held whole. An entry names the packs its chunks were in when the snapshot
/// was made, and for each chunk its pack's place in that list plus one (0: not known);
/// the trailer lists every pack the entries and tree chunks name, once, then each tree
/// chunk's pack's place in that list plus one. Version 4 (still read) had no
/// packs: its entries' chunks are confirmed one by one, as before. Version 3 (still read)
/// had no extended attributes either: its entries load with them unknown, so their files
/// are read once more. Version 2 (still read) also had `count` after `keyCheck` and its
/// entries sorted by path, and no end byte.
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
        /// The pack each chunk of `content` was in when the snapshot was made (nil: not
        /// known then); empty if none is known (an entry from before version 5).
        public var contentPacks: [PackID?] = []

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
    /// Version 5 names each chunk's pack, so that a backup confirms packs, not chunks.
    public static let version: UInt16 = 5
    static let keyCheckLabel = Array("redoubt/v1/metadata-cache".utf8)
    /// A cache larger than this is not read (a sanity bound, ~10 million files).
    public static let maxSize = 4 << 30

    /// A chunk of one of the last snapshot's trees: its plaintext's keyed hash, ID and seal.
    public struct TreeChunk: Sendable, Hashable {
        public let mac: ChunkID
        public let id: ChunkID
        public let seal: ChunkSeal
        /// The pack that held it when the snapshot was made; nil if not known.
        public var pack: PackID?
        public init(mac: ChunkID, id: ChunkID, seal: ChunkSeal, pack: PackID? = nil) {
            self.mac = mac
            self.id = id
            self.seal = seal
            self.pack = pack
        }
    }

    /// The tree chunks of the snapshot the cache was written for.
    public var trees: [TreeChunk] = []
    /// Every pack the entries and tree chunks name, once (what a backup asks the repository about).
    public var packs: [PackID] = []

    /// Where the encoded entries are: in memory for a cache built or decoded here, in its
    /// file for a loaded one. A loaded cache keeps only its index in memory (16 bytes an
    /// entry and the table) and reads entries as they are looked up, through a few windows
    /// of the file (``CacheFile``, at most 1 MiB), not the whole file.
    private enum Storage: Sendable {
        case memory([UInt8])
        case file(CacheFile)
    }
    private var storage = Storage.memory([])
    /// The version the entries are encoded in: a loaded cache keeps its file's.
    private var bytesVersion = version
    /// Where each entry starts in the storage; `-2 - start` once replaced or removed.
    private var starts: [Int] = []
    /// Where the last entry ends: each other one ends where the next starts (entries are
    /// stored one after the other, removed ones included), so no end is kept per entry.
    private var entriesEnd = 0
    /// Each entry's path hash (``hash(_:)``): probing compares it before reading the entry.
    private var hashes: [Int] = []
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
        for i in starts.indices where starts[i] >= 0 {
            guard let (base, range) = encoded(i, sequential: true),
                  let (path, entry) = Self.parse(base, range, version: bytesVersion) else { continue }
            body(i, path, entry)
        }
    }

    /// Every entry's index, path, device and inode: what the activity section compares,
    /// without decoding chunk lists.
    func forEachFile(_ body: (_ index: Int, _ path: [UInt8], _ device: UInt64, _ inode: UInt64) -> Void) {
        for i in starts.indices where starts[i] >= 0 {
            guard let (base, range) = encoded(i, sequential: true) else { continue }
            var r = ByteReader(base, range: range)
            guard let head = try? Self.skipHead(&r) else { continue }
            body(i, Array(base[head.path]), head.device, head.inode)
        }
    }

    /// Every entry by path (a copy: for tests and tools, not the backup's lookups).
    public var entries: [[UInt8]: Entry] {
        var out: [[UInt8]: Entry] = [:]
        forEach { _, path, entry in out[path] = entry }
        return out
    }

    /// The entry for `path`, its index (a number below `indexLimit`, the same for a path as
    /// long as the cache is not changed) and its bytes if they are encoded as this build
    /// writes entries: an unchanged file's entry goes into the next cache as it is.
    func find(_ path: [UInt8]) -> (index: Int, entry: Entry, encoded: ArraySlice<UInt8>?)? {
        let (_, found) = slot(of: path[...], hash: Self.hash(path[...]))
        guard let (index, base, range) = found, starts[index] >= 0,
              let (_, entry) = Self.parse(base, range, version: bytesVersion) else { return nil }
        return (index, entry, bytesVersion == Self.version ? base[range] : nil)
    }

    /// Above every index ``find(_:)`` returns.
    var indexLimit: Int { starts.count }

    public subscript(path: [UInt8]) -> Entry? {
        get { find(path)?.entry }
        set {
            guard case .memory(var bytes) = storage, bytesVersion == Self.version else {
                let trees = self.trees
                self = MetadataCache(entries: entries)
                self.trees = trees
                self[path] = newValue
                return
            }
            if table.isEmpty || 2 * (starts.count + 1) > table.count { rehash(minimum: 2 * (starts.count + 1)) }
            let h = Self.hash(path[...])
            let (slot, found) = slot(of: path[...], hash: h)
            if let old = found?.index, starts[old] >= 0 {
                starts[old] = -2 - starts[old]
                count -= 1
            }
            guard let newValue else { return }
            // The slot of a replaced entry is reused; a removed one's keeps its bytes (later
            // paths may have probed past it), which stay readable in `bytes`. The storage lets
            // go of `bytes` meanwhile, so that the append does not copy them.
            storage = .memory([])
            var w = ByteWriter()
            Self.writeEntry(&w, path: path, newValue)
            starts.append(bytes.count)
            bytes += w.bytes
            entriesEnd = bytes.count
            hashes.append(h)
            storage = .memory(bytes)
            table[slot] = Int32(starts.count)
            count += 1
        }
    }

    /// The bytes of entry `index` (also of a removed one), as an array and the range in it;
    /// nil if its file can no longer be read.
    /// `sequential`: one of a pass over the entries in order.
    private func encoded(_ index: Int, sequential: Bool = false) -> (base: [UInt8], range: Range<Int>)? {
        func at(_ i: Int) -> Int { starts[i] >= 0 ? starts[i] : -2 - starts[i] }
        let range = at(index)..<(index + 1 < starts.count ? at(index + 1) : entriesEnd)
        switch storage {
        case .memory(let bytes): return (bytes, range)
        case .file(let file): return file.read(range, sequential: sequential)
        }
    }

    /// The slot of `path` in `table`, and the entry it holds with its bytes (nil if the slot
    /// is empty). A slot whose entry cannot be read is passed over.
    private func slot(of path: ArraySlice<UInt8>, hash h: Int)
        -> (slot: Int, found: (index: Int, base: [UInt8], range: Range<Int>)?) {
        guard !table.isEmpty else { return (0, nil) }
        let mask = table.count - 1
        var s = h & mask
        while true {
            let t = Int(table[s])
            if t == 0 { return (s, nil) }
            if hashes[t - 1] == h, let (base, range) = encoded(t - 1),
               let p = Self.pathRange(base, range), Self.equal(base[p], path) {
                return (s, (t - 1, base, range))
            }
            s = (s + 1) & mask
        }
    }

    private mutating func rehash(minimum: Int) {
        var size = 16
        while size < minimum { size *= 2 }
        table = [Int32](repeating: 0, count: size)
        let mask = size - 1
        for i in starts.indices {
            var s = hashes[i] & mask
            while table[s] != 0 { s = (s + 1) & mask }
            table[s] = Int32(i + 1)
        }
    }

    private static func equal(_ a: ArraySlice<UInt8>, _ b: ArraySlice<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        return a.withUnsafeBytes { x in
            b.withUnsafeBytes { y in x.count == 0 || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 }
        }
    }

    /// One call per file looked up: the bytes go to the hasher at once, not one by one.
    private static func hash(_ path: ArraySlice<UInt8>) -> Int {
        var hasher = Hasher()
        hasher.combine(path.count)
        path.withUnsafeBytes { hasher.combine(bytes: $0) }
        return hasher.finalize()
    }

    /// Where the path of the entry in `bytes[range]` is (its length prefix read); nil if
    /// the entry is cut short.
    private static func pathRange(_ bytes: [UInt8], _ range: Range<Int>) -> Range<Int>? {
        var r = ByteReader(bytes, range: range)
        guard let path = try? r.lengthPrefixedRange(limit: 1 << 16), path.upperBound <= range.upperBound else {
            return nil
        }
        return path
    }

    /// The entry in `base[range]`; nil if its values are out of range (a file the checksum
    /// vouches for, but not written by this code: its file is then read again).
    private static func parse(_ base: [UInt8], _ range: Range<Int>, version: UInt16) -> (path: [UInt8], entry: Entry)? {
        var r = ByteReader(base, range: range)
        return try? parseEntry(&r, version: version)
    }
    static func keyCheck(_ key: ChunkIDKey) -> [UInt8] { key.chunkID(for: keyCheckLabel).bytes }

    /// The encoding described above, entries sorted by path (one input, one encoding).
    public func encode(chunkIDKey: ChunkIDKey) -> [UInt8] {
        var w = ByteWriter(capacity: 64 + SHA256.byteCount)
        Self.writeHeader(&w, chunkIDKey: chunkIDKey)
        var named = NamedPacks()
        for (path, entry) in sortedEntries() {
            Self.writeEntry(&w, path: path, entry)
            named.add(entry.contentPacks)
        }
        Self.writeTrailer(&w, count: count, trees: trees, packs: named)
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

    /// The end byte, the count, the tree chunks and the packs; the caller appends the digest.
    static func writeTrailer(_ w: inout ByteWriter, count: Int, trees: [TreeChunk], packs entryPacks: NamedPacks) {
        var packs = entryPacks
        packs.add(trees.map(\.pack))
        w.u8(0)
        w.uvarint(UInt64(count))
        w.uvarint(UInt64(trees.count))
        for t in trees {
            w.raw(t.mac.bytes)
            w.raw(t.id.bytes)
            w.raw(t.seal.key)
            w.u32(t.seal.rawLength)
        }
        w.uvarint(UInt64(packs.list.count))
        for p in packs.list { w.raw(p.bytes) }
        for t in trees { w.uvarint(packs.number(t.pack)) }
    }

    /// The distinct packs of the entries written, in the order first named.
    struct NamedPacks {
        private(set) var list: [PackID] = []
        private var places: [PackID: Int] = [:]
        mutating func add(_ packs: [PackID?]) {
            for case let p? in packs where places[p] == nil {
                places[p] = list.count
                list.append(p)
            }
        }
        /// How an entry or tree chunk names `p`: its place in ``list`` plus one, 0 for none.
        func number(_ p: PackID?) -> UInt64 { p.flatMap { places[$0] }.map { UInt64($0 + 1) } ?? 0 }

        /// The pack ``number(_:)`` gave, read back from `list`.
        static func pack(_ k: UInt64, in list: [PackID]) throws -> PackID? {
            guard k <= UInt64(list.count) else { throw Unusable(reason: "bad pack index") }
            return k == 0 ? nil : list[Int(k - 1)]
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
        if let xattrs = e.xattrs {
            w.u8(1)
            w.uvarint(UInt64(xattrs.count))
            for x in xattrs {
                w.lengthPrefixed(x.name)
                w.lengthPrefixed(x.value)
            }
        } else {
            w.u8(0)
        }
        guard e.contentPacks.count == e.content.count, e.contentPacks.contains(where: { $0 != nil }) else {
            return w.uvarint(0)
        }
        var named = NamedPacks()
        named.add(e.contentPacks)
        w.uvarint(UInt64(named.list.count))
        for p in named.list { w.raw(p.bytes) }
        for p in e.contentPacks { w.uvarint(named.number(p)) }
    }

    /// Why a cache file was not used.
    public struct Unusable: Error, Sendable, CustomStringConvertible {
        public let reason: String
        public var description: String { reason }
    }

    /// Decodes ``encode(chunkIDKey:)``'s output (or a version-2 or -3 cache) held in memory;
    /// throws ``Unusable`` for anything else. The checksum and every entry's framing are
    /// checked here, without copying anything out; the cache keeps `bytes` as they are and
    /// decodes an entry only when it is looked up (one whose values do not parse then counts
    /// as not cached).
    public static func decode(_ bytes: [UInt8], chunkIDKey: ChunkIDKey) throws(Unusable) -> MetadataCache {
        guard bytes.count >= minimumSize else { throw Unusable(reason: "too short (\(bytes.count) bytes)") }
        var given = false
        return try index(.memory(bytes), size: bytes.count, chunkIDKey: chunkIDKey) { () throws(Unusable) in
            defer { given = true }
            return given ? nil : bytes
        }
    }

    /// Magic, version, key check, end byte, count and checksum.
    static let minimumSize = 8 + 2 + 32 + 1 + 32

    /// Indexes a cache of `size` bytes whose bytes `next` gives in order, piece by piece,
    /// and whose entries are then read from `storage`. The checksum is computed on a second
    /// thread while the entries are indexed, and checked before anything is returned: loading
    /// is on every backup's critical path. Only the piece being indexed is held.
    private static func index(_ storage: Storage, size: Int, chunkIDKey: ChunkIDKey,
                              next: @escaping () throws(Unusable) -> [UInt8]?) throws(Unusable) -> MetadataCache {
        let bodyEnd = size - 32
        var stream = PieceStream(bodyEnd: bodyEnd, size: size, next: next)
        var cache = MetadataCache()
        cache.storage = storage
        let indexed = Result { () throws(Unusable) in try cache.indexEntries(&stream, chunkIDKey: chunkIDKey) }
        // The checksum's verdict comes first: a file cut short or damaged is said to be so,
        // whatever its entries looked like.
        let sum = try stream.finish()
        guard sum.digest == sum.stated else {
            throw Unusable(reason: "checksum does not match: the file is damaged or was cut short")
        }
        try indexed.get()
        return cache
    }

    /// Reads the header, the entries and the trailer from `stream` into this (empty) cache.
    private mutating func indexEntries(_ stream: inout PieceStream, chunkIDKey: ChunkIDKey) throws(Unusable) {
        let v = try stream.parse { r throws in
            guard try r.raw(8) == Self.magic else { throw Unusable(reason: "not a Redoubt metadata cache") }
            let v = try r.u16()
            guard (2...Self.version).contains(v) else {
                throw Unusable(reason: "cache version \(v); this build reads 2 to \(Self.version)")
            }
            guard try r.raw(32) == Self.keyCheck(chunkIDKey) else {
                throw Unusable(reason: "written for another tenant's keys")
            }
            return v
        }
        bytesVersion = v
        // Version 2 counts first; version 3 ends its list with an empty path, then counts.
        var stated: Int? = nil
        if v == 2 {
            let n = try stream.parse { r throws in try r.uvarint() }
            guard n <= UInt64(stream.bodyEnd / 32) else { throw Unusable(reason: "malformed: count \(n) too large") }
            stated = Int(n)
            rehash(minimum: 2 * Int(n))
        }
        while stated.map({ count < $0 }) ?? true {
            let start = stream.offset
            if stated == nil, try stream.parse({ r throws in
                var peek = r
                guard try peek.uvarint() == 0 else { return false }
                r = peek
                return true
            }) {
                let n = try stream.parse { r throws in try r.uvarint() }
                guard n == UInt64(count) else { throw Unusable(reason: "says \(n) entries, holds \(count)") }
                if v >= 4 { trees = try stream.parse { r throws in try Self.parseTrees(&r) } }
                if v >= 5 {
                    packs = try stream.parse { r throws in try Self.parsePacks(&r) }
                    trees = try stream.parse { [trees, packs] r throws in try Self.placeTrees(trees, in: packs, &r) }
                }
                break
            }
            let path = try stream.parse { r throws in try Self.skipEntry(&r, version: v) }
            try adopt(path: stream.buffer[path], start: start, end: stream.offset)
        }
        guard stream.offset == stream.bodyEnd else { throw Unusable(reason: "trailing bytes") }
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

    /// A count and that many pack IDs (the trailer's list, or an entry's of at most `limit`).
    private static func parsePacks(_ r: inout ByteReader, limit: Int = .max) throws -> [PackID] {
        let n = try r.count(limit: min(r.remaining / 32, limit))
        return try (0..<n).map { _ in PackID(bytes: try r.raw(32))! }
    }

    /// The tree chunks, each given its pack from the trailer's list.
    private static func placeTrees(_ trees: [TreeChunk], in packs: [PackID], _ r: inout ByteReader) throws
        -> [TreeChunk] {
        try trees.map { t in
            var placed = t
            placed.pack = try NamedPacks.pack(try r.uvarint(), in: packs)
            return placed
        }
    }

    /// Indexes the entry at `start..<end` of the storage, whose path is `path`.
    private mutating func adopt(path: ArraySlice<UInt8>, start: Int, end: Int) throws(Unusable) {
        if table.isEmpty || 2 * (starts.count + 1) > table.count { rehash(minimum: 2 * (starts.count + 1)) }
        let h = Self.hash(path)
        let (slot, old) = slot(of: path, hash: h)
        guard old == nil else { throw Unusable(reason: "a path is listed twice") }
        starts.append(start)
        entriesEnd = end
        hashes.append(h)
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
        guard version >= 5 else { return path }
        let packs = try r.count(limit: min(r.remaining / 32, n))
        try r.skip(packs * 32)
        if packs > 0 { for _ in 0..<n { _ = try r.uvarint() } }
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
        if version >= 5 { entry.contentPacks = try parseContentPacks(&r, chunks: n) }
        return (path, entry)
    }

    /// An entry's packs, one per chunk; empty if it names none.
    private static func parseContentPacks(_ r: inout ByteReader, chunks: Int) throws -> [PackID?] {
        let list = try parsePacks(&r, limit: chunks)
        guard !list.isEmpty else { return [] }
        return try (0..<chunks).map { _ in try NamedPacks.pack(try r.uvarint(), in: list) }
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
    /// invalid one is an empty cache plus the reason, for the caller to warn about. The file
    /// is read once to index and check it, a piece at a time; its entries are read again
    /// from it as they are looked up.
    public static func load(path: String, chunkIDKey: ChunkIDKey) -> (cache: MetadataCache, problem: String?) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let e = Glibc.errno
            return (MetadataCache(), e == ENOENT ? nil : "cannot open: \(ArchiveSys.describe(errno: e))")
        }
        func refused(_ why: String) -> (cache: MetadataCache, problem: String?) {
            close(fd)
            return (MetadataCache(), why)
        }
        guard case .success(let st) = ArchiveSys.fstat(fd), st.isRegular else { return refused("not a regular file") }
        guard st.size <= UInt64(maxSize) else { return refused("too large (\(st.size) bytes)") }
        let size = Int(st.size)
        guard size >= minimumSize else { return refused("too short (\(size) bytes)") }
        let file = CacheFile(fd: fd, identity: st, end: size - 32)
        var offset = 0
        do {
            let cache = try index(.file(file), size: size, chunkIDKey: chunkIDKey) { () throws(Unusable) in
                guard offset < size else { return nil }
                let n = min(CacheFile.pieceSize, size - offset)
                switch file.bytes(at: offset, count: n) {
                case .failure(let e): throw Unusable(reason: "cannot read: \(ArchiveSys.describe(errno: e))")
                case .success(let piece) where piece.count != n: throw Unusable(reason: "changed while being read")
                case .success(let piece):
                    offset += n
                    return piece
                }
            }
            guard file.isUnchanged else { return (MetadataCache(), "changed while being read") }
            return (cache, nil)
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
    private var packs = MetadataCache.NamedPacks()

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
        packs.add(entry.contentPacks)
        count += 1
        if buffer.count >= 1 << 20 { try flush() }
    }

    /// Appends an entry already encoded (as ``MetadataCache/find(_:)`` returns it), whose
    /// chunks' packs are `packs`.
    func append(encoded: ArraySlice<UInt8>, packs named: [PackID?]) throws(ArchiveError) {
        buffer.raw(encoded)
        packs.add(named)
        count += 1
        if buffer.count >= 1 << 20 { try flush() }
    }

    private func flush() throws(ArchiveError) {
        guard fd >= 0 else { throw ArchiveError(.io, object: temp, "the metadata cache was already closed") }
        digest.update(data: buffer.bytes)
        let e = buffer.bytes.withUnsafeBytes { ArchiveSys.pwriteAll(fd, $0, at: offset) }
        guard e == 0 else { throw .system("writing the metadata cache", object: temp, errno: e) }
        // Why: this file's fsync comes after the snapshot's commit, on the backup's last
        // stretch; it is written a megabyte at a time during the walk, and each megabyte
        // sent to disk now leaves that fsync only the end of the file to wait for.
        ArchiveSys.startWriteback(fd, at: offset, count: buffer.count)
        offset += UInt64(buffer.count)
        buffer.reset()
    }

    /// Ends the file with the snapshot's tree chunks and puts it in place of the old cache.
    func commit(trees: [MetadataCache.TreeChunk] = []) throws(ArchiveError) {
        MetadataCache.writeTrailer(&buffer, count: count, trees: trees, packs: packs)
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

/// A loaded cache's file, from which entries are read as they are looked up. A backup
/// looks them up in about the order the last one wrote them, but not quite: that order
/// interleaves runs of entries from several places in the file, and an entry whose file
/// the last backup read sits up to a window of files later than the walk reaches it. So
/// entries are read through a few windows, each following one run: a lookup just past a
/// window's end moves it on; any other lookup outside them starts a small window in place
/// of the one least recently used.
final class CacheFile: Sendable {
    /// What the indexer reads at a time.
    static let pieceSize = 1 << 20
    /// What a window reads when it moves on along a run of lookups.
    static let runRead = 128 << 10
    /// What a window reads where a lookup fell outside every window: often a single entry.
    static let strayRead = 16 << 10
    /// How far past a window's end a lookup continues it (the entries between were looked
    /// up before, out of order).
    static let continuation = 64 << 10
    /// Windows held at once.
    static let windowCount = 8

    private let fd: Int32
    /// The file as it was indexed: if it changed since (in place, which no backup does),
    /// its entries count as not cached and their files are read again.
    private let identity: ArchiveSys.FileStat
    /// Where the entries and trailer end (the checksum follows).
    private let end: Int
    private struct Window {
        var start: Int
        var bytes: [UInt8]
        var used: UInt64
        var end: Int { start + bytes.count }
    }
    private struct Windows {
        var all: [Window] = []
        var tick: UInt64 = 0
        var failed = false
    }
    private let windows = Mutex(Windows())

    init(fd: Int32, identity: ArchiveSys.FileStat, end: Int) {
        self.fd = fd
        self.identity = identity
        self.end = end
    }

    deinit { close(fd) }

    var isUnchanged: Bool {
        guard case .success(let st) = ArchiveSys.fstat(fd) else { return false }
        return st.size == identity.size && st.mtime == identity.mtime && st.ctime == identity.ctime
            && st.inode == identity.inode && st.device == identity.device
    }

    /// Up to `count` bytes at `offset` (fewer only at the end of the file), in a new array
    /// not zeroed first: every byte is read into.
    func bytes(at offset: Int, count: Int) -> SysResult<[UInt8]> {
        var read: SysResult<Int> = .success(0)
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { b, initialized in
            read = ArchiveSys.preadFull(fd, into: b.baseAddress!, count: count, at: UInt64(offset))
            if case .success(let n) = read { initialized = n }
        }
        switch read {
        case .success: return .success(bytes)
        case .failure(let e): return .failure(e)
        }
    }

    /// `range` of the file, as an array and the range in it; nil if it cannot be read or the
    /// file changed. `sequential`: one of a pass over every entry in order.
    func read(_ range: Range<Int>, sequential: Bool = false) -> (base: [UInt8], range: Range<Int>)? {
        guard range.lowerBound >= 0, range.upperBound <= end else { return nil }
        return windows.withLock { w -> (base: [UInt8], range: Range<Int>)? in
            guard !w.failed else { return nil }
            w.tick += 1
            if let i = w.all.firstIndex(where: { range.lowerBound >= $0.start && range.upperBound <= $0.end }) {
                w.all[i].used = w.tick
                let s = w.all[i].start
                return (w.all[i].bytes, (range.lowerBound - s)..<(range.upperBound - s))
            }
            let run = w.all.firstIndex {
                range.lowerBound >= $0.end - range.count && range.lowerBound <= $0.end + Self.continuation
            }
            let want = run != nil || sequential ? Self.runRead : Self.strayRead
            let count = min(max(range.count, want), end - range.lowerBound)
            guard case .success(let bytes) = bytes(at: range.lowerBound, count: count), bytes.count == count,
                  isUnchanged else {
                w.failed = true
                w.all = []
                return nil
            }
            let window = Window(start: range.lowerBound, bytes: bytes, used: w.tick)
            if let run {
                w.all[run] = window
            } else if w.all.count < Self.windowCount {
                w.all.append(window)
            } else if let oldest = w.all.indices.min(by: { w.all[$0].used < w.all[$1].used }) {
                w.all[oldest] = window
            }
            return (bytes, 0..<range.count)
        }
    }
}

/// A cache's bytes as they arrive, for the indexer: what is not yet parsed past, and the
/// checksum of every byte before the stated one, computed on a second thread.
private struct PieceStream {
    let bodyEnd: Int
    let size: Int
    let next: () throws(MetadataCache.Unusable) -> [UInt8]?
    /// The bytes received and not yet dropped, from `bufferStart` in the file.
    private(set) var buffer: [UInt8] = []
    private var bufferStart = 0
    /// Where parsing is, in `buffer`.
    private var position = 0
    private var received = 0
    /// The checksum the file ends with, as it arrives.
    private var statedDigest: [UInt8] = []
    private let hasher = PieceHasher()

    init(bodyEnd: Int, size: Int, next: @escaping () throws(MetadataCache.Unusable) -> [UInt8]?) {
        self.bodyEnd = bodyEnd
        self.size = size
        self.next = next
    }

    /// Where parsing is, in the file.
    var offset: Int { bufferStart + position }

    /// `body` on a reader of the bytes from `offset` to the end of the entries; if it fails
    /// before every byte has arrived, again with more of them (it may have hit the end of a
    /// piece, not of the data).
    mutating func parse<T>(_ body: (inout ByteReader) throws -> T) throws(MetadataCache.Unusable) -> T {
        while true {
            var r = ByteReader(buffer, range: position..<min(buffer.count, bodyEnd - bufferStart))
            do {
                let value = try body(&r)
                position = r.offset
                return value
            } catch let e as MetadataCache.Unusable {
                throw e
            } catch {
                guard bufferStart + buffer.count < bodyEnd else {
                    throw MetadataCache.Unusable(reason: "malformed: \(error)")
                }
                try more(keep: true)
            }
        }
    }

    /// Takes the next piece into the checksum and, if `keep`, into `buffer`, dropping what
    /// is parsed past.
    private mutating func more(keep: Bool) throws(MetadataCache.Unusable) {
        guard let piece = try next(), !piece.isEmpty else {
            throw MetadataCache.Unusable(reason: "changed while being read")
        }
        let body = max(0, min(piece.count, bodyEnd - received))
        hasher.add(piece, count: body)
        if body < piece.count { statedDigest += piece[body...] }
        received += piece.count
        guard keep else { return }
        if position == buffer.count {
            bufferStart += buffer.count
            buffer = piece
        } else {
            buffer.removeFirst(position)
            bufferStart += position
            buffer += piece
        }
        position = 0
    }

    /// Takes the rest of the file into the checksum; the checksum computed and the one the
    /// file states.
    mutating func finish() throws(MetadataCache.Unusable) -> (digest: [UInt8], stated: [UInt8]) {
        buffer = []
        while received < size { try more(keep: false) }
        return (hasher.finalize(), statedDigest)
    }
}

/// SHA-256 of pieces handed over in order, computed on another thread.
private final class PieceHasher: Sendable {
    private let digest = Mutex(SHA256())
    private let queue = DispatchQueue(label: "redoubt.metadata-cache.checksum")

    func add(_ piece: [UInt8], count: Int) {
        guard count > 0 else { return }
        queue.async {
            piece.withUnsafeBytes { b in
                self.digest.withLock { $0.update(bufferPointer: UnsafeRawBufferPointer(rebasing: b[..<count])) }
            }
        }
    }

    func finalize() -> [UInt8] { queue.sync { digest.withLock { Array($0.finalize()) } } }
}

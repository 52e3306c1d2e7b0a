import Crypto

// The one key-less check of a pack (docs/FORMAT.md §4.5 steps 1–2, and 2a for format 2):
// its hash, header, footer and public list, and for format 2 every chunk's hash. It runs
// on bytes in memory (a restorer's download, a client's own pack: the checker reads views
// of them, never a copy) and on a pack read by range (the server's spooled upload: at most
// one piece of ``PackReader/inspectPieceSize`` bytes at a time besides the public list),
// with the same checks in the same order and the same errors.

/// A pack's bytes as the checker reads them.
protocol PackBytes {
    var size: Int { get }
    /// The bytes of `range`, as a new array: only for the small parts (header, footer,
    /// public list).
    func copy(_ range: Range<Int>) throws(CoreError) -> [UInt8]
    /// Hands the bytes of `range` to `body` in order, in one or more pieces.
    func pieces(_ range: Range<Int>, _ body: (UnsafeRawBufferPointer) -> Void) throws(CoreError)
}

/// A pack in memory: every piece is a view of its bytes, in one piece per range.
struct PackInMemory: PackBytes {
    let bytes: [UInt8]
    var size: Int { bytes.count }
    func copy(_ range: Range<Int>) -> [UInt8] { Array(bytes[range]) }
    func pieces(_ range: Range<Int>, _ body: (UnsafeRawBufferPointer) -> Void) {
        bytes.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[range])) }
    }
}

/// A pack read by range (a file, a store object): `read` returns exactly the bytes asked.
struct PackByRange: PackBytes {
    let size: Int
    let read: (Range<Int>) throws(CoreError) -> [UInt8]
    func copy(_ range: Range<Int>) throws(CoreError) -> [UInt8] { try read(range) }
    func pieces(_ range: Range<Int>, _ body: (UnsafeRawBufferPointer) -> Void) throws(CoreError) {
        var at = range.lowerBound
        while at < range.upperBound {
            let end = min(range.upperBound, at + PackReader.inspectPieceSize)
            let piece = try read(at..<end)
            piece.withUnsafeBytes { body($0) }
            at = end
        }
    }
}

extension PackReader {
    /// Bytes hashed per read when a pack is inspected by range: what inspecting a pack of
    /// any size holds at once, besides its public list.
    public static let inspectPieceSize = 1 << 20

    /// Verifies a pack's hash and structure without any key and returns its public chunk
    /// list: what a server does before it accepts an upload. For a format-2 pack this also
    /// checks that every chunk's sealed bytes hash to the ID the list gives (§4.5).
    public static func inspect(_ bytes: [UInt8], expectedID: PackID) throws(CoreError) -> PackSummary {
        try check(PackInMemory(bytes: bytes), expectedID: expectedID).summary
    }

    /// ``inspect(_:expectedID:)`` for a pack of `size` bytes that is not in memory: `read`
    /// returns exactly the bytes of the range asked (a file, a store object). The same checks
    /// in the same order with the same errors; the header, the footer and the public list are
    /// read by range, and the hash pass reads the pack once, front to back, in pieces of at
    /// most ``inspectPieceSize`` bytes, so memory is the public list plus one piece.
    public static func inspect(size: Int, expectedID: PackID,
                               read: (Range<Int>) throws(CoreError) -> [UInt8]) throws(CoreError) -> PackSummary {
        try withoutActuallyEscaping(read) { (read) throws(CoreError) -> PackSummary in
            try check(PackByRange(size: size, read: read), expectedID: expectedID).summary
        }
    }

    /// Hash check, header, footer and public list: steps 1–2 of docs/FORMAT.md §4.5 (and
    /// for format 2 the per-chunk hashes of step 2a). `places`: format 2's public list.
    typealias Parsed = (summary: PackSummary, header: PackHeader, footer: PackFooter, places: [PackIndexEntry])

    /// The check of a pack in memory, with what opening it needs.
    static func parse(_ bytes: [UInt8], expectedID: PackID) throws(CoreError) -> Parsed {
        try check(PackInMemory(bytes: bytes), expectedID: expectedID)
    }

    static func check(_ pack: some PackBytes, expectedID: PackID) throws(CoreError) -> Parsed {
        let object = "pack \(expectedID)"
        guard pack.size <= PackFormat.maxPackSize else {
            throw CoreError(.limitExceeded, object: object, "pack of \(pack.size) bytes exceeds the format's limit")
        }
        let prefix = try pack.copy(0..<min(pack.size, PackHeader.maxLength))
        if prefix.count >= 10, prefix[8] == 2, prefix[9] == 0 {
            return try check2(pack, prefix: prefix, expectedID: expectedID)
        }
        try checkHash(pack, expectedID)
        let (header, footer) = try structure(pack, prefix: prefix, object: object)
        guard header.version == footer.version else {
            throw CoreError(.corrupt, object: object, "header and footer disagree on the version")
        }
        let listStart = Int(footer.indexOffset) + Int(footer.indexLength)
        let list = try pack.copy(listStart..<(listStart + 32 * Int(footer.chunkCount)))
        var ids: [ChunkID] = []
        ids.reserveCapacity(Int(footer.chunkCount))
        for i in 0..<Int(footer.chunkCount) {
            ids.append(ChunkID(bytes: Array(list[(32 * i)..<(32 * i + 32)]))!)
        }
        return (PackSummary(id: expectedID, keyID: header.keyID, chunkIDs: ids, size: pack.size), header, footer, [])
    }

    private static func checkHash(_ pack: some PackBytes, _ expectedID: PackID) throws(CoreError) {
        var hash = SHA256Stream()
        try pack.pieces(0..<pack.size) { hash.update($0) }
        let actual = PackID(bytes: hash.finalize())!
        guard actual == expectedID else {
            throw CoreError(.authenticationFailed, object: "pack \(expectedID)",
                            "bytes hash to \(actual): the pack was modified, truncated or is another pack")
        }
    }

    private static func structure(_ pack: some PackBytes, prefix: [UInt8],
                                  object: String) throws(CoreError) -> (PackHeader, PackFooter) {
        let header = try PackHeader.parse(prefix, object: object)
        guard pack.size >= header.length + PackFormat.footerSize else {
            throw CoreError(.corrupt, object: object, "truncated: no footer")
        }
        let tail = try pack.copy((pack.size - PackFormat.footerSize)..<pack.size)
        let footer = try PackFooter.parse(tail, packSize: pack.size, headerLength: header.length, object: object)
        return (header, footer)
    }

    /// Format 2: the structure first (a pack that does not parse is still reported by its
    /// hash if that is wrong), then one pass that hashes the pack and each chunk together.
    private static func check2(_ pack: some PackBytes, prefix: [UInt8],
                               expectedID: PackID) throws(CoreError) -> Parsed {
        let object = "pack \(expectedID)"
        let header: PackHeader, footer: PackFooter
        var places: [PackIndexEntry] = []
        do {
            (header, footer) = try structure(pack, prefix: prefix, object: object)
            guard footer.version == 2 else {
                throw CoreError(.corrupt, object: object, "header and footer disagree on the version")
            }
            let listStart = Int(footer.indexOffset) + Int(footer.indexLength)
            places.reserveCapacity(Int(footer.chunkCount))
            var r = ByteReader(try pack.copy(listStart..<(pack.size - PackFormat.footerSize)))
            var expected = UInt64(header.length)
            for seq in 0..<Int(footer.chunkCount) {
                let id = ChunkID(bytes: try r.raw(32))!
                let off = try r.u64(), len = try r.u32()
                // Why: chunks must tile the chunk area in order, so no region is hidden or shared.
                let maxSealed = UInt32(PackFormat.maxRawChunk + 1024 + 64)
                guard off == expected, len >= UInt32(PackFormat.tagSize), len <= maxSealed else {
                    throw CoreError(.corrupt, object: object, "chunk \(id.short): public list entry out of place")
                }
                expected = off + UInt64(len)
                places.append(PackIndexEntry(chunkID: id, offset: off, sealedLength: len, rawLength: 0, kind: .none,
                                             sequence: UInt32(seq)))
            }
            guard expected == footer.indexOffset, r.isAtEnd else {
                throw CoreError(.corrupt, object: object, "public list does not cover the chunk area exactly")
            }
        } catch let e as CoreError {
            try checkHash(pack, expectedID)
            throw e
        } catch let e as ByteReader.Failure {
            try checkHash(pack, expectedID)
            throw e.corrupt(object, "public list")
        } catch {
            throw CoreError(.corrupt, object: object, "\(error)")
        }
        var hash = SHA256Stream()
        var firstBad: ChunkID? = nil
        try pack.pieces(0..<header.length) { hash.update($0) }
        // One pass over the whole chunk area, cut where the list says each chunk ends (the
        // chunks tile it, checked above). Why not a read per chunk: a pack read by range
        // holds thousands of small chunks, and each read was a system call and a zeroed array.
        var next = 0
        var left = places.first.map { Int($0.sealedLength) } ?? 0
        var chunk = SHA256Stream()
        try pack.pieces(header.length..<Int(footer.indexOffset)) { piece in
            var rest = piece
            while !rest.isEmpty, left > 0 {
                let part = UnsafeRawBufferPointer(rebasing: rest.prefix(left))
                chunk.update(part, alongside: &hash, part)
                rest = UnsafeRawBufferPointer(rebasing: rest.dropFirst(part.count))
                left -= part.count
                guard left == 0 else { continue }
                let done = chunk
                chunk = SHA256Stream()
                if firstBad == nil, done.finalize() != places[next].chunkID.bytes { firstBad = places[next].chunkID }
                next += 1
                left = next < places.count ? Int(places[next].sealedLength) : 0
            }
        }
        try pack.pieces(Int(footer.indexOffset)..<pack.size) { hash.update($0) }
        let actual = PackID(bytes: hash.finalize())!
        guard actual == expectedID else {
            throw CoreError(.authenticationFailed, object: object,
                            "bytes hash to \(actual): the pack was modified, truncated or is another pack")
        }
        if let firstBad {
            // Why: a chunk whose bytes are not what its ID names would be reused by any host
            // computing that ID, and its restore would fail: refuse the whole pack.
            throw CoreError(.authenticationFailed, object: "chunk \(firstBad) in pack \(expectedID)",
                            "chunk \(firstBad): its sealed bytes do not hash to the ID the pack's public list gives, "
                            + "so the pack is refused")
        }
        let summary = PackSummary(id: actual, keyID: header.keyID, chunkIDs: places.map(\.chunkID), size: pack.size,
                                  version: 2)
        return (summary, header, footer, places)
    }
}

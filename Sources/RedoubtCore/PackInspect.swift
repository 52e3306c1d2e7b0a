import Crypto

extension PackReader {
    /// Bytes hashed per read when a pack is inspected by range: what inspecting a pack of
    /// any size holds at once, besides its public list.
    public static let inspectPieceSize = 1 << 20

    /// ``inspect(_:expectedID:)`` for a pack of `size` bytes that is not in memory: `read`
    /// returns exactly the bytes of the range asked (a file, a store object). The same checks
    /// in the same order with the same errors; the header, the footer and the public list are
    /// read by range, and the hash pass reads the pack once, front to back, in pieces of at
    /// most ``inspectPieceSize`` bytes, so memory is the public list plus one piece.
    public static func inspect(size: Int, expectedID: PackID,
                               read: (Range<Int>) throws(CoreError) -> [UInt8]) throws(CoreError) -> PackSummary {
        let object = "pack \(expectedID)"
        guard size <= PackFormat.maxPackSize else {
            throw CoreError(.limitExceeded, object: object, "pack of \(size) bytes exceeds the format's limit")
        }
        let prefix = try read(0..<min(size, PackHeader.maxLength))
        if prefix.count >= 10, prefix[8] == 2, prefix[9] == 0 {
            return try inspect2(size: size, prefix: prefix, expectedID: expectedID, read: read)
        }
        try checkHash(size: size, expectedID, read: read)
        let (header, footer) = try structure(size: size, prefix: prefix, object: object, read: read)
        guard header.version == footer.version else {
            throw CoreError(.corrupt, object: object, "header and footer disagree on the version")
        }
        let listStart = Int(footer.indexOffset) + Int(footer.indexLength)
        let list = try read(listStart..<(listStart + 32 * Int(footer.chunkCount)))
        var ids: [ChunkID] = []
        ids.reserveCapacity(Int(footer.chunkCount))
        for i in 0..<Int(footer.chunkCount) {
            ids.append(ChunkID(bytes: Array(list[(32 * i)..<(32 * i + 32)]))!)
        }
        return PackSummary(id: expectedID, keyID: header.keyID, chunkIDs: ids, size: size)
    }

    /// Feeds `range` of the pack to `body` in pieces, in order.
    private static func pieces(_ range: Range<Int>, read: (Range<Int>) throws(CoreError) -> [UInt8],
                               _ body: (UnsafeRawBufferPointer) -> Void) throws(CoreError) {
        var at = range.lowerBound
        while at < range.upperBound {
            let end = min(range.upperBound, at + inspectPieceSize)
            let piece = try read(at..<end)
            piece.withUnsafeBytes { body($0) }
            at = end
        }
    }

    private static func checkHash(size: Int, _ expectedID: PackID,
                                  read: (Range<Int>) throws(CoreError) -> [UInt8]) throws(CoreError) {
        var hash = SHA256Stream()
        try pieces(0..<size, read: read) { hash.update($0) }
        let actual = PackID(bytes: hash.finalize())!
        guard actual == expectedID else {
            throw CoreError(.authenticationFailed, object: "pack \(expectedID)",
                            "bytes hash to \(actual): the pack was modified, truncated or is another pack")
        }
    }

    private static func structure(size: Int, prefix: [UInt8], object: String,
                                  read: (Range<Int>) throws(CoreError) -> [UInt8]) throws(CoreError) -> (PackHeader,
                                      PackFooter) {
        let header = try PackHeader.parse(prefix, object: object)
        guard size >= header.length + PackFormat.footerSize else {
            throw CoreError(.corrupt, object: object, "truncated: no footer")
        }
        let tail = try read((size - PackFormat.footerSize)..<size)
        let footer = try PackFooter.parse(tail, packSize: size, headerLength: header.length, object: object)
        return (header, footer)
    }

    /// Format 2, as `parse2`: the structure first (a pack that does not parse is still
    /// reported by its hash if that is wrong), then one pass hashing the pack and each chunk.
    private static func inspect2(size: Int, prefix: [UInt8], expectedID: PackID,
                                 read: (Range<Int>) throws(CoreError) -> [UInt8]) throws(CoreError) -> PackSummary {
        let object = "pack \(expectedID)"
        let header: PackHeader, footer: PackFooter
        var places: [(id: ChunkID, offset: Int, length: Int)] = []
        do {
            (header, footer) = try structure(size: size, prefix: prefix, object: object, read: read)
            guard footer.version == 2 else {
                throw CoreError(.corrupt, object: object, "header and footer disagree on the version")
            }
            let listStart = Int(footer.indexOffset) + Int(footer.indexLength)
            places.reserveCapacity(Int(footer.chunkCount))
            var r = ByteReader(try read(listStart..<(size - PackFormat.footerSize)))
            var expected = UInt64(header.length)
            for _ in 0..<Int(footer.chunkCount) {
                let id = ChunkID(bytes: try r.raw(32))!
                let off = try r.u64(), len = try r.u32()
                // Why: chunks must tile the chunk area in order, so no region is hidden or shared.
                let maxSealed = UInt32(PackFormat.maxRawChunk + 1024 + 64)
                guard off == expected, len >= UInt32(PackFormat.tagSize), len <= maxSealed else {
                    throw CoreError(.corrupt, object: object, "chunk \(id.short): public list entry out of place")
                }
                expected = off + UInt64(len)
                places.append((id, Int(off), Int(len)))
            }
            guard expected == footer.indexOffset, r.isAtEnd else {
                throw CoreError(.corrupt, object: object, "public list does not cover the chunk area exactly")
            }
        } catch let e as CoreError {
            try checkHash(size: size, expectedID, read: read)
            throw e
        } catch let e as ByteReader.Failure {
            try checkHash(size: size, expectedID, read: read)
            throw e.corrupt(object, "public list")
        } catch {
            throw CoreError(.corrupt, object: object, "\(error)")
        }
        var pack = SHA256Stream()
        var firstBad: ChunkID? = nil
        try pieces(0..<header.length, read: read) { pack.update($0) }
        for p in places {
            var chunk = SHA256Stream()
            try pieces(p.offset..<(p.offset + p.length), read: read) { chunk.update($0, alongside: &pack, $0) }
            if firstBad == nil, chunk.finalize() != p.id.bytes { firstBad = p.id }
        }
        try pieces(Int(footer.indexOffset)..<size, read: read) { pack.update($0) }
        let actual = PackID(bytes: pack.finalize())!
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
        return PackSummary(id: actual, keyID: header.keyID, chunkIDs: places.map(\.id), size: size, version: 2)
    }
}

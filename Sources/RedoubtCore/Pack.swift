import Crypto
import Foundation

/// Pack formats 1 and 2 (docs/FORMAT.md §4): a header with a fresh data key sealed to the
/// tenant's read key (HPKE), the sealed chunks, the sealed index, the public chunk list and
/// a fixed footer. The pack ID is the SHA-256 of all of it. In format 1 chunks are sealed
/// under the data key; in format 2 each is sealed convergently (§3.4) and the public list
/// gives each chunk's place, so anyone can check every chunk's bytes against its ID.
public enum PackFormat {
    public static let magic = Array("RDBTPACK".utf8)
    public static let footerMagic = Array("RDBTEND1".utf8)
    /// Format 2's footer magic: the footer alone tells a reader the list's entry size.
    public static let footerMagic2 = Array("RDBTEND2".utf8)
    /// The version writers write.
    public static let version: UInt16 = 2
    /// Versions this build reads.
    public static let readableVersions: ClosedRange<UInt16> = 1...2
    /// Suite 1: X-Wing HPKE for the data key, AES-256-GCM for chunks, zstd.
    public static let suite: UInt16 = 1
    /// Bytes in the footer: index offset u64, index length u32, chunk count u32, magic.
    public static let footerSize = 24
    /// Bytes in one plaintext index entry of format 1.
    static let entrySize = 32 + 8 + 4 + 4 + 1
    /// Format 2: chunk ID ‖ chunk key ‖ raw length.
    static let entrySize2 = 32 + 32 + 4
    /// Bytes in one public-list entry: format 1 the ID; format 2 ID ‖ offset u64 ‖ sealed length u32.
    static func listEntrySize(_ version: UInt16) -> Int { version == 1 ? 32 : 44 }
    static func indexEntrySize(_ version: UInt16) -> Int { version == 1 ? entrySize : entrySize2 }
    /// At most this many chunks per pack: bounds the index and the AEAD invocations per
    /// data key (2^20, far inside AES-GCM's limits; docs/FORMAT.md §4.4).
    public static let maxChunks = 1 << 20
    /// Largest plaintext chunk a pack accepts (the chunker's max is 8 MiB).
    public static let maxRawChunk = 16 << 20
    /// Largest pack a reader will accept.
    public static let maxPackSize = 4 << 30
    static let tagSize = 16
    static let chunkAADLabel = Array("redoubt/v1/chunk".utf8)
    static let indexAADLabel = Array("redoubt/v1/pack-index".utf8)

    static func nonce(domain: UInt8, counter: UInt64) throws(CoreError) -> AES.GCM.Nonce {
        var b = [UInt8](repeating: 0, count: 12)
        b[0] = domain
        for i in 0..<8 { b[4 + i] = UInt8(truncatingIfNeeded: counter >> UInt64(8 * i)) }
        do { return try AES.GCM.Nonce(data: b) } catch {
            throw CoreError(.badKey, object: "nonce", "AES-GCM refused a 12-byte nonce: \(error)")
        }
    }

    static func chunkAAD(_ id: ChunkID, kind: CompressionKind, rawLength: Int) -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        w.raw(chunkAADLabel)
        w.raw(id.bytes)
        w.u8(kind.rawValue)
        w.u32(UInt32(rawLength))
        return w.bytes
    }

    static func indexAAD(count: Int) -> [UInt8] {
        var w = ByteWriter(capacity: 32)
        w.raw(indexAADLabel)
        w.u32(UInt32(count))
        return w.bytes
    }

    static func hpkeInfo(_ keyID: ReadKeyID) -> Data { Data(Label.packHPKE + keyID.bytes) }
}

/// One chunk's entry in a pack index.
public struct PackIndexEntry: Sendable, Equatable {
    public let chunkID: ChunkID
    /// Offset of the sealed chunk from the start of the pack.
    public let offset: UInt64
    /// Ciphertext plus tag.
    public let sealedLength: UInt32
    /// Length of the plaintext chunk.
    public let rawLength: UInt32
    public let kind: CompressionKind
    /// Position in the pack; the chunk's nonce counter (format 1).
    public let sequence: UInt32
    /// Format 2: the key and length the pack's own index gives, if it was opened. A
    /// reader reusing the chunk takes them from its own tree instead (§4.5).
    public var seal: ChunkSeal? = nil
}

/// A pack once written: its ID, bytes and the chunk IDs it holds, in order.
public struct FinishedPack: Sendable {
    public let id: PackID
    /// The pack's bytes, or none if they went to ``spill`` as they were written.
    public internal(set) var bytes: [UInt8]
    public let entries: [PackIndexEntry]
    /// The pack's length in bytes.
    public let size: Int
    /// Where the writer put the pack's bytes instead of ``bytes``, if it was given one.
    public let spill: (any PackSpill)?
    public var chunkIDs: [ChunkID] { entries.map(\.chunkID) }
}

/// Where a pack's bytes go while it is written, so that the writer holds a slice of the
/// pack rather than all of it: a backup's workers each build a pack of 16 MiB or more,
/// which would otherwise sit in memory until it is finished and sent.
public protocol PackSpill: AnyObject, Sendable {
    /// Appends `bytes` after everything appended before. A failure ends the pack (the
    /// caller's backup fails with it): `.io`, naming where the bytes were going.
    func append(_ bytes: UnsafeRawBufferPointer) throws(CoreError)
}

/// Builds one pack in memory. Not thread-safe; one per pipeline.
///
/// Each writer draws a fresh random data key, so nonces are counters (chunk sequence
/// numbers) and never repeat under a key.
public struct PackWriter {
    /// The pack's bytes from offset `spilled` on (all of them without a spill).
    private var bytes: [UInt8]
    /// Where bytes go once `spillAt` of them wait; nil: the whole pack stays in `bytes`.
    private let spill: (any PackSpill)?
    private let spillAt: Int
    /// Bytes already appended to `spill`, and hashed.
    private var spilled = 0
    /// The pack ID's hash; `bytes[..<hashed]` are in it. Appends leave the rest for
    /// ``chunkID(for:key:)`` to hash alongside the next chunk's ID, or for ``finish()``.
    private var hasher = SHA256Stream()
    private var hashed = 0
    private let dataKey: SymmetricKey
    private var entries: [PackIndexEntry] = []
    /// 1 or 2 (``PackFormat/version``): which `append` the pack takes.
    public let version: UInt16

    /// Starts a pack sealed to `recipient`. `capacity` is a hint for the final size;
    /// `buffer`, an earlier pack's memory, is reused if nobody else holds it. `version` 1
    /// is for tests and fixtures of the older format. With `spill`, bytes are appended to it
    /// whenever `spillAt` of them wait (a chunk that large goes there without a copy), and
    /// the finished pack's ``FinishedPack/bytes`` are empty.
    public init(recipient: ReadPublicKey, capacity: Int = 40 << 20, reusing buffer: consuming [UInt8] = [],
                version: UInt16 = PackFormat.version, spill: (any PackSpill)? = nil,
                spillAt: Int = PackPipeline.spillSlice) throws(CoreError) {
        self.spill = spill
        self.spillAt = spillAt
        guard PackFormat.readableVersions.contains(version) else {
            throw CoreError(.unsupportedVersion, object: "new pack", "cannot write pack format version \(version)")
        }
        self.version = version
        dataKey = SymmetricKey(size: .bits256)
        var w = ByteWriter(capacity: 2048)
        w.raw(PackFormat.magic)
        w.u16(version)
        w.u16(PackFormat.suite)
        w.raw(recipient.keyID.bytes)
        do {
            var sender = try HPKE.Sender(recipientKey: recipient.key, ciphersuite: readKeyCiphersuite,
                info: PackFormat.hpkeInfo(recipient.keyID))
            w.u16(UInt16(sender.encapsulatedKey.count))
            w.raw(sender.encapsulatedKey)
            let aad = w.bytes
            let sealed = try dataKey.withUnsafeBytes { try sender.seal($0, authenticating: aad) }
            w.raw(sealed)
        } catch {
            throw CoreError(.badKey, object: "new pack",
                "cannot seal the data key to read key \(recipient.keyID): \(error)")
        }
        bytes = consume buffer  // `consume`: a second reference would make the removeAll below allocate anew
        bytes.removeAll(keepingCapacity: true)
        bytes.reserveCapacity(capacity)
        bytes.append(contentsOf: w.bytes)
    }

    /// Bytes written so far (header and chunks; the index and footer come at finish).
    public var size: Int { spilled + bytes.count }
    public var chunkCount: Int { entries.count }

    /// Appends a chunk sealed by ``ConvergentSealing`` (format 2).
    public mutating func append(_ chunk: SealedChunk) throws(CoreError) {
        let object = "chunk \(chunk.id.short)"
        guard version == 2 else {
            throw CoreError(.unsupportedVersion, object: object, "a format-1 pack seals its own chunks")
        }
        guard entries.count < PackFormat.maxChunks else {
            throw CoreError(.limitExceeded, object: object,
                "pack already holds \(PackFormat.maxChunks) chunks; finish it first")
        }
        let offset = size
        try narrow { try chunk.bytes.withUnsafeBytes { try put($0) } }
        entries.append(PackIndexEntry(chunkID: chunk.id, offset: UInt64(offset),
            sealedLength: UInt32(chunk.bytes.count),
                                      rawLength: chunk.seal.rawLength, kind: .none, sequence: UInt32(entries.count),
                                      seal: chunk.seal))
    }

    /// Seals one chunk's payload (already compressed or not) and appends it (format 1).
    public mutating func append(id: ChunkID, kind: CompressionKind, rawLength: Int,
        payload: UnsafeRawBufferPointer) throws(CoreError) {
        guard version == 1 else {
            throw CoreError(.unsupportedVersion, object: "chunk \(id.short)", "a format-2 pack takes sealed chunks")
        }
        guard entries.count < PackFormat.maxChunks else {
            throw CoreError(.limitExceeded, object: "chunk \(id.short)",
                "pack already holds \(PackFormat.maxChunks) chunks; finish it first")
        }
        guard rawLength <= PackFormat.maxRawChunk, payload.count <= PackFormat.maxRawChunk + 1024 else {
            throw CoreError(.limitExceeded, object: "chunk \(id.short)",
                "chunk of \(rawLength) bytes exceeds the \(PackFormat.maxRawChunk)-byte limit")
        }
        let seq = UInt32(entries.count)
        let nonce = try PackFormat.nonce(domain: 0, counter: UInt64(seq))
        let aad = PackFormat.chunkAAD(id, kind: kind, rawLength: rawLength)
        let box: AES.GCM.SealedBox
        do { box = try AES.GCM.seal(payload, using: dataKey, nonce: nonce, authenticating: aad) } catch {
            throw CoreError(.badKey, object: "chunk \(id.short)", "AES-GCM seal failed: \(error)")
        }
        let offset = size
        bytes.append(contentsOf: box.ciphertext)
        bytes.append(contentsOf: box.tag)
        entries.append(PackIndexEntry(chunkID: id, offset: UInt64(offset), sealedLength: UInt32(size - offset),
                                      rawLength: UInt32(rawLength), kind: kind, sequence: seq))
        if let spill, bytes.count >= spillAt { try drain(into: spill) }
    }

    public mutating func append(id: ChunkID, kind: CompressionKind, rawLength: Int,
        payload: [UInt8]) throws(CoreError) {
        try narrow { try payload.withUnsafeBytes { try append(id: id, kind: kind, rawLength: rawLength, payload: $0) } }
    }

    private mutating func hashPending() {
        let from = hashed
        bytes.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[from...])) }
        hashed = bytes.count
    }

    /// Appends pack bytes: to memory, or past `spillAt` to the spill, a run that large
    /// straight from where it is.
    private mutating func put(_ data: UnsafeRawBufferPointer) throws(CoreError) {
        if let spill, bytes.count + data.count > spillAt {
            try drain(into: spill)
            if data.count >= spillAt {
                hasher.update(data)
                try spill.append(data)
                spilled += data.count
                return
            }
        }
        bytes.append(contentsOf: data)
    }

    /// Hashes what waits in memory and moves it to the spill.
    private mutating func drain(into spill: any PackSpill) throws(CoreError) {
        guard !bytes.isEmpty else { return }
        hashPending()
        try narrow { try bytes.withUnsafeBytes { try spill.append($0) } }
        spilled += bytes.count
        bytes.removeAll(keepingCapacity: true)
        hashed = 0
    }

    /// The keyed ID of `chunk` (the next one to seal, usually), computed in one loop with
    /// the pack ID's hash of as many appended bytes as the chunk has; the rest wait for
    /// the next chunk (or ``finish()``), so that as little as possible is hashed alone.
    public mutating func chunkID(for chunk: UnsafeRawBufferPointer, key: ChunkIDKey) -> ChunkID {
        let from = hashed
        let to = from + Swift.min(bytes.count - from, chunk.count)
        hashed = to
        return bytes.withUnsafeBytes { all in
            key.chunkID(for: chunk, alongside: &hasher, UnsafeRawBufferPointer(rebasing: all[from..<to]))
        }
    }

    /// Seals the index, writes the public chunk list and footer, and returns the pack.
    public consuming func finish() throws(CoreError) -> FinishedPack {
        var index = ByteWriter(capacity: 4 + entries.count * PackFormat.indexEntrySize(version))
        index.u32(UInt32(entries.count))
        for e in entries {
            index.raw(e.chunkID.bytes)
            if version == 1 {
                index.u64(e.offset)
                index.u32(e.sealedLength)
                index.u32(e.rawLength)
                index.u8(e.kind.rawValue)
            } else {
                index.raw(e.seal?.key ?? [UInt8](repeating: 0, count: 32))
                index.u32(e.rawLength)
            }
        }
        let box: AES.GCM.SealedBox
        do {
            box = try AES.GCM.seal(index.bytes, using: dataKey, nonce: try PackFormat.nonce(domain: 1, counter: 0),
                                   authenticating: PackFormat.indexAAD(count: entries.count))
        } catch { throw CoreError(.badKey, object: "pack index", "AES-GCM seal failed: \(error)") }
        let indexOffset = size
        bytes.append(contentsOf: box.ciphertext)
        bytes.append(contentsOf: box.tag)
        let indexLength = size - indexOffset
        var list = ByteWriter(capacity: entries.count * PackFormat.listEntrySize(version))
        for e in entries {
            list.raw(e.chunkID.bytes)
            if version == 2 {
                list.u64(e.offset)
                list.u32(e.sealedLength)
            }
        }
        bytes.append(contentsOf: list.bytes)
        var f = ByteWriter(capacity: PackFormat.footerSize)
        f.u64(UInt64(indexOffset))
        f.u32(UInt32(indexLength))
        f.u32(UInt32(entries.count))
        f.raw(version == 1 ? PackFormat.footerMagic : PackFormat.footerMagic2)
        bytes.append(contentsOf: f.bytes)
        let total = size
        if let spill {
            try drain(into: spill)
            bytes = []  // its capacity, grown for the index and list, goes now, not with the pack
        } else {
            hashPending()
        }
        let id = PackID(bytes: hasher.finalize())!
        return FinishedPack(id: id, bytes: bytes, entries: entries, size: total, spill: spill)
    }
}

/// The parsed, unauthenticated header of a pack.
public struct PackHeader: Sendable {
    public let version: UInt16
    public let keyID: ReadKeyID
    let encapsulatedKey: [UInt8]
    let sealedDataKey: [UInt8]
    /// The header's length in bytes; chunks start here.
    public let length: Int
    /// The bytes the HPKE seal authenticates.
    let authenticated: [UInt8]

    /// Bytes a reader should fetch from the start of a pack to be sure of the header.
    public static let maxLength = 30 + 2048 + 48

    /// Parses a header from the first bytes of a pack (at least the header's length).
    public static func parse(_ prefix: [UInt8], object: String) throws(CoreError) -> PackHeader {
        var r = ByteReader(prefix)
        do {
            guard try r.raw(8) == PackFormat.magic else {
                throw CoreError(.corrupt, object: object, "bad magic: not a Redoubt pack")
            }
            let version = try r.u16()
            guard PackFormat.readableVersions.contains(version) else {
                let readable = PackFormat.readableVersions
                throw CoreError(.unsupportedVersion, object: object,
                    "pack format version \(version); this build reads versions "
                                + "\(readable.lowerBound)–\(readable.upperBound): upgrade redoubt")
            }
            let suite = try r.u16()
            guard suite == PackFormat.suite else {
                throw CoreError(.unsupportedVersion, object: object, "unknown cipher suite \(suite)")
            }
            let keyID = ReadKeyID(bytes: try r.raw(16))!
            let encLen = Int(try r.u16())
            guard encLen > 0 && encLen <= 2048 else {
                throw CoreError(.corrupt, object: object, "encapsulated key length \(encLen) out of range")
            }
            let enc = try r.raw(encLen)
            let authenticated = Array(prefix[0..<r.offset])
            let sealed = try r.raw(32 + PackFormat.tagSize)
            return PackHeader(version: version, keyID: keyID, encapsulatedKey: enc, sealedDataKey: sealed,
                length: r.offset, authenticated: authenticated)
        } catch let e as CoreError { throw e } catch let e as ByteReader.Failure { throw e.corrupt(object,
            "header") } catch {
            throw CoreError(.corrupt, object: object, "\(error)")
        }
    }
}

/// The parsed footer of a pack.
public struct PackFooter: Sendable, Equatable {
    public let indexOffset: UInt64
    public let indexLength: UInt32
    public let chunkCount: UInt32
    /// 1 or 2, from the footer's magic.
    public var version: UInt16 = 1

    /// Bytes of one public-list entry (32 in format 1, 44 in format 2).
    public var listEntrySize: Int { PackFormat.listEntrySize(version) }

    /// Parses the last ``PackFormat/footerSize`` bytes of a pack of `packSize` bytes and
    /// checks that the regions it names fit the pack exactly.
    public static func parse(_ tail: [UInt8], packSize: Int, headerLength: Int,
        object: String) throws(CoreError) -> PackFooter {
        guard tail.count == PackFormat.footerSize else {
            throw CoreError(.corrupt, object: object,
                "footer is \(tail.count) bytes, expected \(PackFormat.footerSize)")
        }
        var r = ByteReader(tail)
        do {
            let off = try r.u64(), len = try r.u32(), count = try r.u32()
            let magic = try r.raw(8)
            let version: UInt16
            switch magic {
            case PackFormat.footerMagic: version = 1
            case PackFormat.footerMagic2: version = 2
            default: throw CoreError(.corrupt, object: object, "bad footer magic: pack truncated or not a Redoubt pack")
            }
            guard count <= PackFormat.maxChunks else {
                throw CoreError(.corrupt, object: object, "footer claims \(count) chunks, more than the format allows")
            }
            let expectedIndexLength = UInt64(4 + Int(count) * PackFormat.indexEntrySize(version) + PackFormat.tagSize)
            let listBytes = UInt64(count) * UInt64(PackFormat.listEntrySize(version))
            let listEnd = off &+ UInt64(len) &+ listBytes &+ UInt64(PackFormat.footerSize)
            guard off >= UInt64(headerLength), UInt64(len) == expectedIndexLength, off <= UInt64(packSize),
                listEnd == UInt64(packSize) else {
                throw CoreError(.corrupt, object: object,
                    "footer regions do not match the pack's size (\(packSize) bytes): truncated or extended")
            }
            return PackFooter(indexOffset: off, indexLength: len, chunkCount: count, version: version)
        } catch let e as CoreError { throw e } catch let e as ByteReader.Failure { throw e.corrupt(object,
            "footer") } catch {
            throw CoreError(.corrupt, object: object, "\(error)")
        }
    }
}

/// What anyone can check about a pack without a key.
public struct PackSummary: Sendable {
    public let id: PackID
    public let keyID: ReadKeyID
    public let chunkIDs: [ChunkID]
    public let size: Int
    /// Pack format version (1 or 2).
    public var version: UInt16 = 1
    /// Whether every chunk's sealed bytes were checked to hash to its ID (format 2): then
    /// the chunks are exactly what any host computing those IDs would have stored.
    public var chunksVerified: Bool { version >= 2 }
}

/// Reads packs. The one place that turns pack bytes into authenticated values; the
/// key-less check every reader starts with is in PackInspect.swift.
public enum PackReader {
    /// Opens a whole pack with the read key: checks its hash, unseals the data key and
    /// the index, and checks the index against the public chunk list and the footer.
    ///
    /// A format-2 pack is opened from its public list alone (every chunk's hash checked):
    /// its chunks open with the seals of the reader's own trees, so nothing in the
    /// uploader's sealed index is needed; ``OpenedPack/indexSeals(readKey:)`` reads that.
    public static func open(_ bytes: [UInt8], expectedID: PackID,
        readKey: ReadPrivateKey) throws(CoreError) -> OpenedPack {
        let (summary, header, footer, places) = try parse(bytes, expectedID: expectedID)
        let object = "pack \(expectedID)"
        guard header.keyID == readKey.publicKey.keyID else {
            throw CoreError(.wrongTenant, object: object,
                """
                    sealed to read key \(header.keyID), not this tenant's \(readKey.publicKey.keyID): it belongs to \
                    another tenant
                    """)
        }
        if header.version == 2 {
            return OpenedPack(id: expectedID, dataKey: nil, entries: places, bytes: bytes, version: 2)
        }
        let dataKey = try unsealDataKey(header, readKey: readKey, object: object)
        let start = Int(footer.indexOffset)
        let sealedIndex = Array(bytes[start..<(start + Int(footer.indexLength))])
        let entries = try openIndex(sealedIndex, footer: footer, headerLength: header.length, dataKey: dataKey,
            object: object)
        guard entries.map(\.chunkID) == summary.chunkIDs else {
            throw CoreError(.authenticationFailed, object: object, "public chunk list differs from the sealed index")
        }
        return OpenedPack(id: expectedID, dataKey: dataKey, entries: entries, bytes: bytes, version: 1)
    }

    /// Unseals the pack's data key with the read key.
    static func unsealDataKey(_ header: PackHeader, readKey: ReadPrivateKey,
        object: String) throws(CoreError) -> SymmetricKey {
        guard header.keyID == readKey.publicKey.keyID else {
            throw CoreError(.wrongTenant, object: object,
                """
                    sealed to read key \(header.keyID), not this tenant's \(readKey.publicKey.keyID): it belongs to \
                    another tenant
                    """)
        }
        do {
            var recipient = try HPKE.Recipient(privateKey: readKey.key, ciphersuite: readKeyCiphersuite,
                                               info: PackFormat.hpkeInfo(header.keyID),
                                                   encapsulatedKey: Data(header.encapsulatedKey))
            var keyBytes = try recipient.open(header.sealedDataKey, authenticating: header.authenticated)
            defer { keyBytes.resetBytes(in: 0..<keyBytes.count) }
            guard keyBytes.count == 32 else {
                throw CoreError(.corrupt, object: object, "data key has \(keyBytes.count) bytes")
            }
            return SymmetricKey(data: keyBytes)
        } catch let e as CoreError { throw e } catch {
            throw CoreError(.authenticationFailed, object: object, "data key does not unseal: the header was modified")
        }
    }

    static func unsealIndex(_ sealed: [UInt8], count: Int, dataKey: SymmetricKey,
                            object: String) throws(CoreError) -> Data {
        do {
            let box = try AES.GCM.SealedBox(nonce: try PackFormat.nonce(domain: 1, counter: 0),
                                            ciphertext: sealed.dropLast(PackFormat.tagSize),
                                                tag: sealed.suffix(PackFormat.tagSize))
            return try AES.GCM.open(box, using: dataKey, authenticating: PackFormat.indexAAD(count: count))
        } catch {
            throw CoreError(.authenticationFailed, object: object,
                "index does not authenticate: modified, or from another pack")
        }
    }

    /// Decrypts and parses a sealed index.
    static func openIndex(_ sealed: [UInt8], footer: PackFooter, headerLength: Int, dataKey: SymmetricKey,
        object: String) throws(CoreError) -> [PackIndexEntry] {
        let count = Int(footer.chunkCount)
        let plain = try unsealIndex(sealed, count: count, dataKey: dataKey, object: object)
        var r = ByteReader(plain)
        var entries: [PackIndexEntry] = []
        entries.reserveCapacity(count)
        do {
            guard Int(try r.u32()) == count else {
                throw CoreError(.corrupt, object: object, "index count differs from footer")
            }
            var expectedOffset = UInt64(headerLength)
            for seq in 0..<count {
                let id = ChunkID(bytes: try r.raw(32))!
                let off = try r.u64(), sealedLen = try r.u32(), rawLen = try r.u32()
                guard let kind = CompressionKind(rawValue: try r.u8()) else {
                    throw CoreError(.corrupt, object: object, "chunk \(id.short): unknown compression")
                }
                // Why: chunks must tile the chunk area in order, so no region is hidden or shared.
                guard off == expectedOffset, sealedLen >= UInt32(PackFormat.tagSize),
                    rawLen <= UInt32(PackFormat.maxRawChunk) else {
                    throw CoreError(.corrupt, object: object, "chunk \(id.short): index entry out of place")
                }
                expectedOffset = off + UInt64(sealedLen)
                entries.append(PackIndexEntry(chunkID: id, offset: off, sealedLength: sealedLen, rawLength: rawLen,
                    kind: kind, sequence: UInt32(seq)))
            }
            guard expectedOffset == footer.indexOffset, r.isAtEnd else {
                throw CoreError(.corrupt, object: object, "index does not cover the chunk area exactly")
            }
        } catch let e as CoreError { throw e } catch let e as ByteReader.Failure { throw e.corrupt(object,
            "index") } catch {
            throw CoreError(.corrupt, object: object, "\(error)")
        }
        return entries
    }

    /// Format 2: opens the uploader's sealed index and returns each chunk's seal, after
    /// checking that it names the public list's chunks in order.
    static func openIndex2(_ bytes: [UInt8], header: PackHeader, footer: PackFooter, places: [PackIndexEntry],
                           readKey: ReadPrivateKey, object: String) throws(CoreError) -> [ChunkSeal] {
        let dataKey = try unsealDataKey(header, readKey: readKey, object: object)
        let start = Int(footer.indexOffset)
        let count = Int(footer.chunkCount)
        let sealed = Array(bytes[start..<(start + Int(footer.indexLength))])
        let plain = try unsealIndex(sealed, count: count, dataKey: dataKey, object: object)
        var r = ByteReader(plain)
        var seals: [ChunkSeal] = []
        seals.reserveCapacity(count)
        do {
            guard Int(try r.u32()) == count else {
                throw CoreError(.corrupt, object: object, "index count differs from footer")
            }
            for p in places {
                let id = ChunkID(bytes: try r.raw(32))!
                let key = try r.raw(32), rawLen = try r.u32()
                guard id == p.chunkID, let seal = ChunkSeal(key: key, rawLength: rawLen) else {
                    throw CoreError(.authenticationFailed, object: object,
                                    "sealed index differs from the public chunk list at chunk \(p.chunkID.short)")
                }
                seals.append(seal)
            }
            guard r.isAtEnd else { throw CoreError(.corrupt, object: object, "trailing bytes in the index") }
        } catch let e as CoreError { throw e } catch let e as ByteReader.Failure { throw e.corrupt(object,
            "index") } catch {
            throw CoreError(.corrupt, object: object, "\(error)")
        }
        return seals
    }
}

/// A pack whose structure (format 2: and every chunk's hash) or data key and index
/// (format 1) have been authenticated.
public struct OpenedPack: Sendable {
    public let id: PackID
    /// Format 1 only.
    let dataKey: SymmetricKey?
    /// Format 1: the sealed index. Format 2: the public list (no seals; see ``indexSeals(readKey:)``).
    public let entries: [PackIndexEntry]
    let bytes: [UInt8]
    public let version: UInt16

    /// Format 2: the seal of every chunk as the pack's own sealed index gives it, by chunk.
    /// For checking a pack on its own (deep verify, media); a restore takes seals from its
    /// trees instead, since the index is the uploader's word.
    public func indexSeals(readKey: ReadPrivateKey) throws(CoreError) -> [ChunkID: ChunkSeal] {
        guard version == 2 else { return [:] }
        let object = "pack \(id)"
        let (_, header, footer, places) = try PackReader.parse(bytes, expectedID: id)
        let seals = try PackReader.openIndex2(bytes, header: header, footer: footer, places: places, readKey: readKey,
                                              object: object)
        var out: [ChunkID: ChunkSeal] = [:]
        for (p, s) in zip(places, seals) where out[p.chunkID] == nil { out[p.chunkID] = s }
        return out
    }

    /// Decrypts, decompresses and checks the chunk at `entry`.
    ///
    /// Format 1: its tag (so it was sealed here, at this position, with this ID) and its
    /// keyed ID (so the plaintext is what the ID names); `seal` is ignored. Format 2: its
    /// hash is its ID and it opens with `seal`, which must come from the reader's own tree
    /// or root (a missing seal is `E_MISSING`).
    public func chunk(_ entry: PackIndexEntry, seal: ChunkSeal? = nil, chunkIDKey: ChunkIDKey,
                      decompressor: ChunkDecompressor) throws(CoreError) -> [UInt8] {
        // Why: only entries of this pack's own authenticated index are in bounds.
        let n = Int(entry.sequence)
        guard n < entries.count, entries[n].chunkID == entry.chunkID, entries[n].offset == entry.offset,
              entries[n].sealedLength == entry.sealedLength else {
            throw CoreError(.missing, object: "chunk \(entry.chunkID) in pack \(id)",
                "entry is not from this pack's index")
        }
        let s = Int(entry.offset), e = s + Int(entry.sealedLength)
        if version == 2 {
            let object = "chunk \(entry.chunkID) in pack \(id)"
            guard let seal else {
                throw CoreError(.missing, object: object,
                                "no key for it: a format-2 chunk opens only with the seal its tree gives")
            }
            return try narrow { try bytes.withUnsafeBytes { b in
                // Why `hashChecked`: a format-2 pack is opened only after every chunk's sealed
                // bytes hashed to its ID (the pack check's step 2a), and `bytes` cannot change.
                try ConvergentSealing.open(UnsafeRawBufferPointer(rebasing: b[s..<e]), id: entry.chunkID, seal: seal,
                                           decompressor: decompressor, object: object, hashChecked: true)
            } }
        }
        guard let dataKey else { throw CoreError(.missing, object: "pack \(id)", "opened without its data key") }
        return try narrow { try bytes.withUnsafeBytes { b in
            try ChunkOpener.open(UnsafeRawBufferPointer(rebasing: b[s..<e]), entry: entry, dataKey: dataKey, packID: id,
                                 chunkIDKey: chunkIDKey, decompressor: decompressor)
        } }
    }

    /// Every chunk, in pack order. Format 2 chunks open with `seals` (by default the
    /// pack's own index, opened with `readKey`).
    public func allChunks(chunkIDKey: ChunkIDKey, decompressor: ChunkDecompressor, readKey: ReadPrivateKey? = nil,
                          seals: [ChunkID: ChunkSeal]? = nil) throws(CoreError) -> [(ChunkID, [UInt8])] {
        var known = seals ?? [:]
        if version == 2, seals == nil, let readKey { known = try indexSeals(readKey: readKey) }
        var out: [(ChunkID, [UInt8])] = []
        for e in entries {
            let plain = try chunk(e, seal: known[e.chunkID], chunkIDKey: chunkIDKey, decompressor: decompressor)
            out.append((e.chunkID, plain))
        }
        return out
    }
}

enum ChunkOpener {
    static func open(_ sealed: UnsafeRawBufferPointer, entry: PackIndexEntry, dataKey: SymmetricKey, packID: PackID,
                     chunkIDKey: ChunkIDKey, decompressor: ChunkDecompressor) throws(CoreError) -> [UInt8] {
        let object = "chunk \(entry.chunkID) in pack \(packID)"
        guard sealed.count == Int(entry.sealedLength), sealed.count >= PackFormat.tagSize else {
            throw CoreError(.corrupt, object: object, "sealed length \(sealed.count) differs from the index")
        }
        let payload: Data
        do {
            let box = try AES.GCM.SealedBox(
                nonce: try PackFormat.nonce(domain: 0, counter: UInt64(entry.sequence)),
                ciphertext: UnsafeRawBufferPointer(rebasing: sealed.dropLast(PackFormat.tagSize)),
                tag: UnsafeRawBufferPointer(rebasing: sealed.suffix(PackFormat.tagSize)))
            payload = try AES.GCM.open(box, using: dataKey, authenticating: PackFormat.chunkAAD(entry.chunkID,
                kind: entry.kind, rawLength: Int(entry.rawLength)))
        } catch {
            throw CoreError(.authenticationFailed, object: object,
                "does not authenticate: modified, reordered, or moved from another pack")
        }
        let plain: [UInt8]
        switch entry.kind {
        case .none:
            guard payload.count == Int(entry.rawLength) else {
                throw CoreError(.corrupt, object: object, "length differs from the index")
            }
            plain = Array(payload)
        case .zstd:
            plain = try narrow {
                try payload.withUnsafeBytes {
                    try decompressor.decompress($0, rawLength: Int(entry.rawLength), object: object)
                }
            }
        }
        guard chunkIDKey.chunkID(for: plain) == entry.chunkID else {
            throw CoreError(.authenticationFailed, object: object,
                "plaintext does not match its chunk ID (written with another chunk-ID key, or by a host that lied)")
        }
        return plain
    }
}

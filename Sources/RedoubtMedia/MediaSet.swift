// Media format v1 records, labels, catalogs, writer and reader (docs/FORMAT.md §13.3–§13.7).
import Crypto
import Foundation
import RedoubtCore

/// Type of a record on media (§13.3).
public enum MediaRecordType: UInt8, Sendable, Codable {
    /// packID (32) then the pack bytes as stored.
    case pack = 1
    /// snapshotID (32) then the manifest bytes as stored.
    case manifest = 2
    /// Opaque audit anchor bytes.
    case auditAnchor = 3
    /// A named object (tenant descriptor, wrapped read key): name then bytes.
    case object = 4

    var name: String {
        switch self {
        case .pack: "pack"
        case .manifest: "manifest"
        case .auditAnchor: "audit-anchor"
        case .object: "object"
        }
    }
}

/// One record: a type, an identifier (32-byte ID in hex, an object name, or empty) and bytes.
public struct MediaRecord: Sendable, Equatable {
    public var type: MediaRecordType
    /// Hex pack/snapshot ID, object name, or "" for the audit anchor.
    public var id: String
    public var body: [UInt8]

    /// Makes a record.
    public init(type: MediaRecordType, id: String, body: [UInt8]) {
        self.type = type; self.id = id; self.body = body
    }

    /// Record framing (§13.3): type u8, id length u16, id UTF-8, body length u64,
    /// SHA-256 of id and body (32), then id and body.
    func encoded() -> [UInt8] {
        var none: SHA256Stream? = nil
        return framing(bodyHash: &none) + body
    }

    /// Everything before the body: type, id length, body length, record hash, id.
    /// `bodyHash`, if given, absorbs the body in the same loop as the record hash.
    private func framing(bodyHash: inout SHA256Stream?) -> [UInt8] {
        let idBytes = Array(id.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(43 + idBytes.count)
        out.append(type.rawValue)
        withUnsafeBytes(of: UInt16(idBytes.count).littleEndian) { out.append(contentsOf: $0) }
        withUnsafeBytes(of: UInt64(body.count).littleEndian) { out.append(contentsOf: $0) }
        var h = SHA256Stream()
        h.update(idBytes)
        body.withUnsafeBytes { b in
            if bodyHash != nil { h.update(b, alongside: &bodyHash!, b) } else { h.update(b) }
        }
        out += h.finalize()
        out += idBytes
        return out
    }

    /// Parses a whole record; nil when the framing or the hash does not check.
    static func decode(_ b: [UInt8]) -> MediaRecord? {
        guard b.count >= 43, let type = MediaRecordType(rawValue: b[0]) else { return nil }
        let idLen = Int(b[1]) | Int(b[2]) << 8
        var bodyLen: UInt64 = 0
        for i in 0..<8 { bodyLen |= UInt64(b[3 + i]) << (8 * i) }
        guard UInt64(b.count) == 43 + UInt64(idLen) + bodyLen else { return nil }
        let idBytes = Array(b[43..<(43 + idLen)]), body = Array(b[(43 + idLen)...])
        var h = SHA256()
        h.update(data: idBytes); h.update(data: body)
        guard Array(h.finalize()) == Array(b[11..<43]), let id = String(validating: idBytes, as: UTF8.self) else {
            return nil
        }
        return MediaRecord(type: type, id: id, body: body)
    }
}

/// A record already framed and hashed for media, so that a caller can prepare the next
/// record (read, hash) on another thread while the writer writes this one. The body is
/// kept apart from the framing: the writer copies it into blocks, never into a record
/// buffer first.
public struct FramedMediaRecord: Sendable {
    public let type: MediaRecordType
    public let id: String
    let head: [UInt8]
    let body: [UInt8]
    /// Bytes of the framed record (header, hash, id, body).
    public var size: Int { head.count + body.count }

    /// The record's bytes `from..<to`, as the part in the framing and the part in the body.
    func slices(_ from: Int, _ to: Int) -> (ArraySlice<UInt8>, ArraySlice<UInt8>) {
        let h = head.count
        return (head[Swift.min(from, h)..<Swift.min(to, h)], body[Swift.max(from - h, 0)..<Swift.max(to - h, 0)])
    }
}

extension MediaRecord {
    /// Frames and hashes the record (§13.3).
    public func framed() -> FramedMediaRecord {
        var none: SHA256Stream? = nil
        return FramedMediaRecord(type: type, id: id, head: framing(bodyHash: &none), body: body)
    }

    /// Frames the record only if its body's SHA-256 is `bodySHA256` (a pack's or a
    /// manifest's ID): both hashes in one pass over the body.
    public func framed(ifBodyHashes bodySHA256: [UInt8]) -> FramedMediaRecord? {
        var check: SHA256Stream? = SHA256Stream()
        let head = framing(bodyHash: &check)
        return check!.finalize() == bodySHA256 ? FramedMediaRecord(type: type, id: id, head: head, body: body) : nil
    }
}

/// Volume label, the JSON payload of block 0 (§13.4).
public struct MediaLabel: Codable, Sendable, Equatable {
    public var format: Int
    public var setID: String
    public var volumeSeq: UInt32
    public var pool: String
    public var blockSize: Int
    public var created: String
    public var retainUntil: String?
    public var tenant: String
    public var writer: String
}

/// One record's place on media, as listed by a catalog (§13.5).
public struct MediaCatalogEntry: Codable, Sendable, Equatable {
    public var type: String
    public var id: String
    public var recordSeq: UInt64
    public var volume: UInt32
    public var firstBlock: UInt64
    public var lastBlock: UInt64
    /// The record began on an earlier volume.
    public var startsBefore: Bool
    /// The record continues on the next volume.
    public var endsAfter: Bool
}

/// A volume catalog (kind 3) or set catalog (kind 4), §13.5.
public struct MediaCatalog: Codable, Sendable, Equatable {
    public var format: Int
    public var setID: String
    /// Volume this catalog closes.
    public var volumeSeq: UInt32
    /// Number of volumes of the set; only in the set catalog.
    public var volumeCount: UInt32?
    public var records: [MediaCatalogEntry]
}

func jsonBytes<T: Encodable>(_ v: T) -> [UInt8] {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys]
    return (try? Array(e.encode(v))) ?? []
}

/// Where blocks are written: one volume at a time, strictly sequentially.
public protocol SequentialDevice: AnyObject {
    /// Bytes one volume may hold, or nil when unlimited.
    var capacity: UInt64? { get }
    /// Starts volume `seq` (1-based); the device opens or asks for the medium.
    func beginVolume(_ seq: UInt32) throws(MediaError)
    /// Appends one whole block to the open volume.
    func write(_ block: [UInt8]) throws(MediaError)
    /// Ends the open volume (flush, close, make read-only where the device can).
    func endVolume() throws(MediaError)
    /// The label block already on the medium for volume `seq`, if it can be read without
    /// consuming a stream (nil for FIFOs, empty or absent media).
    func existingLabelBlock(_ seq: UInt32) -> [UInt8]?
    /// True once the medium signalled that it is nearly full (a tape's early warning):
    /// the writer then closes the volume and goes on with the next.
    var pastEarlyWarning: Bool { get }
}

extension SequentialDevice {
    public func existingLabelBlock(_ seq: UInt32) -> [UInt8]? { nil }
    public var pastEarlyWarning: Bool { false }
}

/// Where blocks are read from: volumes in the order supplied, each read strictly sequentially.
public protocol SequentialSource: AnyObject {
    /// Opens the next supplied volume; false when no more were supplied.
    func nextVolume() throws(MediaError) -> Bool
    /// Reads up to `n` bytes; fewer only at the end of the volume.
    func read(_ n: Int) throws(MediaError) -> [UInt8]
    /// True when volumes are asked for one at a time (tape): the reader stops after the
    /// set's last volume instead of asking for one more.
    var promptsForVolumes: Bool { get }
}

extension SequentialSource {
    public var promptsForVolumes: Bool { false }
}

/// Summary of a finished write.
public struct MediaWriteSummary: Sendable {
    public var volumes: UInt32
    public var records: UInt64
    public var bytes: UInt64
}

/// Writes records as a media set, spanning volumes when the device's capacity is reached (§13.6).
public final class MediaWriter {
    let device: SequentialDevice
    let setID: [UInt8]
    let labelBase: MediaLabel
    let blockSize: Int
    var room: Int { blockSize - MediaBlockHeader.size }
    var volume: UInt32 = 0
    var block: UInt64 = 0
    var recordSeq: UInt64 = 0
    var volumeEntries: [MediaCatalogEntry] = []
    var allEntries: [MediaCatalogEntry] = []
    var bytesWritten: UInt64 = 0
    /// Upper bound of one catalog entry's JSON, used to reserve room for catalogs.
    static let entryBound = 320

    /// Prepares a writer; nothing is written until the first record or `finish`.
    /// `created`/`retainUntil` are RFC 3339 UTC strings.
    public init(device: SequentialDevice, setID: [UInt8], pool: String, tenant: String, blockSize: Int,
                created: String, retainUntil: String?, writer: String) throws(MediaError) {
        guard setID.count == 16 else {
            throw MediaError(code: "E_MEDIA_LIMIT", volume: 0, block: 0, detail: "set ID must be 16 bytes")
        }
        guard blockSize >= 256, blockSize <= 4 << 20, blockSize.nonzeroBitCount == 1 else {
            throw MediaError(code: "E_MEDIA_LIMIT", volume: 0, block: 0,
                             detail: "block size \(blockSize) must be a power of two from 256 bytes to 4 MiB")
        }
        self.device = device; self.setID = setID; self.blockSize = blockSize
        labelBase = MediaLabel(format: 1, setID: hexString(setID), volumeSeq: 0, pool: pool, blockSize: blockSize,
                               created: created, retainUntil: retainUntil, tenant: tenant, writer: writer)
    }

    func blocksFor(_ bytes: Int) -> UInt64 { UInt64(max(1, (bytes + room - 1) / room)) }

    /// Blocks that must stay free on this volume for its catalogs and end block.
    func reserve(extraEntries: Int) -> UInt64 {
        let vol = blocksFor(256 + (volumeEntries.count + extraEntries) * Self.entryBound)
        let set = blocksFor(256 + (allEntries.count + extraEntries) * Self.entryBound)
        return vol + set + 1
    }

    var capacityBlocks: UInt64? { device.capacity.map { $0 / UInt64(blockSize) } }

    /// One block's buffer, reused: a fresh megabyte per block cost more (zeroing, page
    /// faults) than the checksum.
    var blockBuffer: [UInt8] = []

    func emit(_ kind: MediaBlockKind, _ payload: ArraySlice<UInt8>, _ more: ArraySlice<UInt8> = [], last: Bool,
        seq: UInt64, off: UInt64) throws(MediaError) {
        let h = MediaBlockHeader(setID: setID, volumeSeq: volume, blockSeq: block, kind: kind, lastOfRecord: last,
                                 payloadLen: UInt32(payload.count + more.count), recordSeq: seq, recordOff: off)
        try MediaBlock.encode(h, payload: payload, more, blockSize: blockSize, into: &blockBuffer)
        try device.write(blockBuffer)
        block += 1; bytesWritten += UInt64(blockSize)
    }

    func startVolume() throws(MediaError) {
        volume += 1; block = 0; volumeEntries = []
        // Why: a labelled volume still under retention holds another set someone relies on;
        // refuse before the device truncates it (§13.4).
        if let old = device.existingLabelBlock(volume), let bs = MediaBlock.announcedSize(old), old.count >= bs,
           let (h, p) = try? MediaBlock.decode(Array(old[0..<bs]), volume: MediaBlockHeader.volumeOf(old), block: 0),
               h.kind == .label,
           let l = try? JSONDecoder().decode(MediaLabel.self, from: Data(p)), let until = l.retainUntil,
               until > labelBase.created {
            throw MediaError(code: "E_MEDIA_RETAINED", volume: volume, block: 0,
                             detail: "medium holds volume \(l.volumeSeq) of set \(l.setID) (pool \(l.pool)), retained "
                                 + "until \(until); use another medium")
        }
        try device.beginVolume(volume)
        var label = labelBase
        label.volumeSeq = volume
        try emit(.label, jsonBytes(label)[...], last: true, seq: 0, off: 0)
        if let cap = capacityBlocks, cap < 1 + 1 + reserve(extraEntries: 1) {
            throw MediaError(code: "E_MEDIA_LIMIT", volume: volume, block: 0,
                             detail: """
                                 capacity of \(cap) blocks cannot hold a data block and the catalogs; raise --capacity
                                 """)
        }
    }

    func emitCatalog(_ kind: MediaBlockKind, _ cat: MediaCatalog) throws(MediaError) {
        let bytes = MediaRecord(type: .object, id: "catalog", body: jsonBytes(cat)).encoded()
        var off = 0
        repeat {
            let n = min(room, bytes.count - off)
            try emit(kind, bytes[off..<(off + n)], last: off + n == bytes.count, seq: 0, off: UInt64(off))
            off += n
        } while off < bytes.count
    }

    func closeVolume(last: Bool) throws(MediaError) {
        let sid = hexString(setID)
        try emitCatalog(.volumeCatalog, MediaCatalog(format: 1, setID: sid, volumeSeq: volume, volumeCount: nil,
            records: volumeEntries))
        if last {
            try emitCatalog(.setCatalog, MediaCatalog(format: 1, setID: sid, volumeSeq: volume, volumeCount: volume,
                records: allEntries))
        }
        try emit(.end, [], last: true, seq: 0, off: 0)
        try device.endVolume()
    }

    /// Appends one record, continuing on a new volume when this one is full.
    public func append(_ r: MediaRecord) throws(MediaError) { try append(r.framed()) }

    /// Appends a record framed beforehand (possibly on another thread).
    public func append(_ r: FramedMediaRecord) throws(MediaError) {
        if volume == 0 { try startVolume() }
        let size = r.size
        recordSeq += 1
        var off = 0
        var startsBefore = false
        while true {
            // Room for one more data block plus the catalogs (counting this record's entry)?
            let full = capacityBlocks.map { block + 1 + reserve(extraEntries: 1) > $0 } ?? false
            if full || device.pastEarlyWarning {
                if off > 0 || startsBefore {
                    volumeEntries[volumeEntries.count - 1].endsAfter = true
                    allEntries[allEntries.count - 1].endsAfter = true
                }
                try closeVolume(last: false)
                try startVolume()
                if off > 0 { startsBefore = true }
            }
            if off == 0 || volumeEntries.last?.recordSeq != recordSeq || volumeEntries.last?.volume != volume {
                let e = MediaCatalogEntry(type: r.type.name, id: r.id, recordSeq: recordSeq, volume: volume,
                                          firstBlock: block, lastBlock: block, startsBefore: startsBefore,
                                              endsAfter: false)
                volumeEntries.append(e); allEntries.append(e)
            }
            let n = min(room, size - off)
            let last = off + n == size
            volumeEntries[volumeEntries.count - 1].lastBlock = block
            allEntries[allEntries.count - 1].lastBlock = block
            let (a, b) = r.slices(off, off + n)
            try emit(.data, a, b, last: last, seq: recordSeq, off: UInt64(off))
            off += n
            if last { return }
        }
    }

    /// Writes the last volume's catalogs and end block and closes it.
    public func finish() throws(MediaError) -> MediaWriteSummary {
        if volume == 0 { try startVolume() }
        try closeVolume(last: true)
        return MediaWriteSummary(volumes: volume, records: recordSeq, bytes: bytesWritten)
    }
}

/// One damaged stretch found while reading (§13.7).
public struct MediaDamage: Sendable, Equatable, CustomStringConvertible {
    public var volume: UInt32
    public var block: UInt64
    public var detail: String
    /// Records that lost bytes, by recordSeq.
    public var recordSeqs: [UInt64]
    /// Those records as "type id", filled from a catalog when one was readable.
    public var records: [String]

    public var description: String {
        "volume \(volume) block \(block): \(detail); records affected: "
            + (records.isEmpty ? recordSeqs.map { "#\($0)" }.joined(separator: ", ") : records.joined(separator: ", "))
    }
}

/// What a read found.
public struct MediaReadReport: Sendable {
    public var labels: [MediaLabel] = []
    public var setCatalog: MediaCatalog?
    public var volumeCatalogs: [MediaCatalog] = []
    public var damage: [MediaDamage] = []
    public var recordsRead: UInt64 = 0
}

/// Reads a media set strictly sequentially (works on a pipe), verifying every block and record.
public final class MediaReader {
    let source: SequentialSource
    let skipDamaged: Bool

    /// `skipDamaged`: record damaged blocks in the report and go on, instead of stopping at the first.
    public init(source: SequentialSource, skipDamaged: Bool) {
        self.source = source; self.skipDamaged = skipDamaged
    }

    /// Reads every supplied volume in order and hands each verified record to `onRecord`.
    public func read(_ onRecord: (MediaRecord) throws(MediaError) -> Void) throws(MediaError) -> MediaReadReport {
        var report = MediaReadReport()
        var setID: [UInt8]?
        var expectVolume: UInt32 = 1
        var assembler = MediaRecordAssembler()
        while true {
            if report.setCatalog != nil && source.promptsForVolumes { break }
            let have = try source.nextVolume()
            guard have else { break }
            let vol = expectVolume
            if report.setCatalog != nil {
                throw MediaError(code: "E_MEDIA_ORDER", volume: vol, block: 0,
                                 detail: "an extra volume was supplied after the last volume of the set")
            }
            let (lh, label, blockSize) = try readLabel(volume: vol)
            if let s = setID, s != lh.setID {
                throw MediaError(code: "E_MEDIA_FOREIGN", volume: vol, block: 0,
                                 detail: """
                                     volume belongs to set \(hexString(lh.setID)), not \(hexString(s)) (foreign set)
                                     """)
            }
            setID = lh.setID
            report.labels.append(label)
            assembler.startVolume(vol)
            try readBlocks(volume: vol, setID: lh.setID, blockSize: blockSize, assembler: &assembler, report: &report,
                onRecord)
            expectVolume += 1
        }
        guard let set = report.setCatalog else {
            throw MediaError(code: "E_MEDIA_MISSING", volume: expectVolume, block: 0,
                             detail: report.labels.isEmpty ? "no volume was supplied"
                                 : """
                                     the set continues on volume \(expectVolume); supply it (set \
                                     \(hexString(setID ?? [])))
                                     """)
        }
        // Name damaged records from the catalog.
        let byName = Dictionary(set.records.map { ($0.recordSeq, "\($0.type) \($0.id)") }, uniquingKeysWith: {
            a, _ in a
        })
        for i in report.damage.indices {
            report.damage[i].records = report.damage[i].recordSeqs.compactMap { byName[$0] }
        }
        return report
    }

    /// Reads volume `vol`'s label block: its header, the label, and the block size it announces.
    private func readLabel(volume vol: UInt32) throws(MediaError) -> (MediaBlockHeader, MediaLabel, Int) {
        // Label: block size comes from the first 64 bytes.
        let head = try source.read(MediaBlockHeader.size)
        guard let bs = MediaBlock.announcedSize(head) else {
            throw MediaError(code: "E_MEDIA_LABEL", volume: vol, block: 0,
                             detail: head.isEmpty ? "volume is empty" : "no media label (unlabelled or foreign medium)")
        }
        let labelBlock = head + (try source.read(bs - MediaBlockHeader.size))
        let lh: MediaBlockHeader, lp: [UInt8]
        do throws(MediaError) {
            (lh, lp) = try MediaBlock.decode(labelBlock, volume: vol, block: 0)
        } catch {
            // A label that is sound read as the volume it names is another volume's.
            let named = MediaBlockHeader.volumeOf(labelBlock)
            if named != vol, (try? MediaBlock.decode(labelBlock, volume: named, block: 0)) != nil {
                throw MediaError(code: "E_MEDIA_ORDER", volume: vol, block: 0,
                                 detail: "\(error.detail); expected volume \(vol) (missing or out-of-order volume)")
            }
            throw MediaError(code: "E_MEDIA_LABEL", volume: vol, block: 0, detail: "bad label block: \(error.detail)")
        }
        guard lh.kind == .label, let label = try? JSONDecoder().decode(MediaLabel.self, from: Data(lp)),
            label.format == 1 else {
            throw MediaError(code: "E_MEDIA_LABEL", volume: vol, block: 0, detail: "block 0 is not a v1 media label")
        }
        return (lh, label, bs)
    }

    /// Reads volume `vol`'s blocks after its label up to its end block, feeding each to
    /// `assembler` and carrying out what it answers.
    private func readBlocks(volume vol: UInt32, setID: [UInt8], blockSize bs: Int,
        assembler: inout MediaRecordAssembler,
                            report: inout MediaReadReport,
                            _ onRecord: (MediaRecord) throws(MediaError) -> Void) throws(MediaError) {
        var blockNo: UInt64 = 1
        while true {
            let b = try source.read(bs)
            if b.isEmpty {
                throw MediaError(code: "E_MEDIA_TRUNCATED", volume: vol, block: blockNo,
                                 detail: "volume ends before its end block (truncated volume)")
            }
            let event: MediaRecordAssembler.Event
            do throws(MediaError) {
                let (h, p) = try MediaBlock.decode(b, volume: vol, block: blockNo)
                guard h.setID == setID else {
                    throw MediaError(code: "E_MEDIA_BLOCK", volume: vol, block: blockNo, detail: "block of another set")
                }
                event = .block(h, payload: p, block: blockNo)
            } catch {
                if b.count < bs {
                    throw MediaError(code: "E_MEDIA_TRUNCATED", volume: vol, block: blockNo,
                                     detail: "volume ends inside a block (truncated volume)")
                }
                event = .unreadable(block: blockNo, detail: error.detail)
            }
            blockNo += 1
            for action in try assembler.feed(event) {
                switch action {
                case .record(let r):
                    report.recordsRead += 1
                    try onRecord(r)
                case .catalog(let cat, let isSet):
                    if isSet { report.setCatalog = cat } else { report.volumeCatalogs.append(cat) }
                case .damage(let d):
                    if !skipDamaged {
                        throw MediaError(code: "E_MEDIA_DAMAGED", volume: d.volume, block: d.block,
                            detail: d.description)
                    }
                    report.damage.append(d)
                case .volumeEnded:
                    return
                }
            }
        }
    }
}

/// What one volume says of itself, read alone (`redoubt media list` on any volume).
public struct MediaVolumeListing: Sendable {
    public var label: MediaLabel
    /// The catalog of the records on this volume (§13.5), if it was readable.
    public var volumeCatalog: MediaCatalog?
    /// The catalog of the whole set: only on the set's last volume.
    public var setCatalog: MediaCatalog?
    /// Damaged blocks met while reading (checksums are checked, records are not assembled).
    public var damage: [MediaDamage]
    /// Other volumes that a restore of what this volume holds needs as well: neighbours
    /// holding the rest of records that span, or, on the last volume, every volume of the set.
    public var needsVolumes: [UInt32]
}

extension MediaReader {
    /// Reads the first supplied volume alone, whatever its place in the set: its label,
    /// every block's checksum, and its catalogs. Needs no other volume.
    public func listVolume() throws(MediaError) -> MediaVolumeListing {
        guard try source.nextVolume() else {
            throw MediaError(code: "E_MEDIA_MISSING", volume: 0, block: 0, detail: "no volume was supplied")
        }
        let head = try source.read(MediaBlockHeader.size)
        guard let bs = MediaBlock.announcedSize(head) else {
            throw MediaError(code: "E_MEDIA_LABEL", volume: 0, block: 0,
                detail: head.isEmpty ? "volume is empty" : "no media label (unlabelled or foreign medium)")
        }
        let labelBlock = head + (try source.read(bs - MediaBlockHeader.size))
        let vol = MediaBlockHeader.volumeOf(labelBlock)
        let (lh, lp) = try MediaBlock.decode(labelBlock, volume: vol, block: 0)
        guard lh.kind == .label, let label = try? JSONDecoder().decode(MediaLabel.self, from: Data(lp)),
            label.format == 1 else {
            throw MediaError(code: "E_MEDIA_LABEL", volume: vol, block: 0, detail: "block 0 is not a v1 media label")
        }
        var listing = MediaVolumeListing(label: label, volumeCatalog: nil, setCatalog: nil, damage: [],
            needsVolumes: [])
        var blockNo: UInt64 = 1
        var catalogBytes: [UInt8] = []
        while true {
            let b = try source.read(bs)
            if b.isEmpty {
                throw MediaError(code: "E_MEDIA_TRUNCATED", volume: vol, block: blockNo,
                    detail: "volume ends before its end block (truncated volume)")
            }
            let h: MediaBlockHeader, p: [UInt8]
            do throws(MediaError) {
                (h, p) = try MediaBlock.decode(b, volume: vol, block: blockNo)
            } catch {
                if !skipDamaged {
                    throw MediaError(code: "E_MEDIA_DAMAGED", volume: vol, block: blockNo, detail: error.detail)
                }
                listing.damage.append(MediaDamage(volume: vol, block: blockNo, detail: error.detail, recordSeqs: [],
                    records: []))
                blockNo += 1
                continue
            }
            blockNo += 1
            if h.kind == .end { break }
            guard h.kind == .volumeCatalog || h.kind == .setCatalog else { continue }
            if h.recordOff == 0 { catalogBytes = [] }
            catalogBytes += p
            if h.lastOfRecord, let r = MediaRecord.decode(catalogBytes),
                let cat = try? JSONDecoder().decode(MediaCatalog.self, from: Data(r.body)) {
                if h.kind == .setCatalog { listing.setCatalog = cat } else { listing.volumeCatalog = cat }
            }
        }
        var needs = Set<UInt32>()
        for e in listing.volumeCatalog?.records ?? [] {
            if e.startsBefore && vol > 1 { needs.insert(vol - 1) }
            if e.endsAfter { needs.insert(vol + 1) }
        }
        if let n = listing.setCatalog?.volumeCount { for v in 1...max(n, 1) where v != vol { needs.insert(v) } }
        listing.needsVolumes = needs.sorted()
        // Name damaged records from this volume's catalog where the block falls in one.
        for i in listing.damage.indices {
            let blk = listing.damage[i].block
            listing.damage[i].records = (listing.volumeCatalog?.records ?? []).filter { $0.firstBlock <= blk
                && blk <= $0.lastBlock }.map {
                "\($0.type) \($0.id)"
            }
        }
        return listing
    }
}

import Foundation

/// The state machine inside `MediaReader.read`: fed the blocks of a media set in order
/// (each decoded, or found unreadable), it assembles records across blocks and volumes,
/// collects catalogs, and decides which records a damaged stretch cost (§13.7). It does
/// no I/O: the reader reads, this says what the blocks mean, and tests feed it events.
struct MediaRecordAssembler {
    /// What the reader saw next on the current volume.
    enum Event {
        /// A block that decoded and belongs to the set.
        case block(MediaBlockHeader, payload: [UInt8], block: UInt64)
        /// A whole block whose checksum or header does not check.
        case unreadable(block: UInt64, detail: String)
    }

    /// What the reader must do, in order.
    enum Action {
        /// A verified record, to hand to the caller.
        case record(MediaRecord)
        /// A volume's catalog (`set`: the whole set's, on the last volume).
        case catalog(MediaCatalog, set: Bool)
        /// Records lost to damage: stop (E_MEDIA_DAMAGED) or report it and go on.
        case damage(MediaDamage)
        /// The volume's end block: the next volume, if any, follows.
        case volumeEnded
    }

    private(set) var volume: UInt32 = 0
    /// The record being assembled, possibly carried across a volume boundary.
    private var partial: (seq: UInt64, bytes: [UInt8])?
    private var lastSeq: UInt64 = 0
    private var skipUntilSeqEnds: UInt64?
    /// Records already reported damaged: their remaining blocks are skipped quietly.
    private var reported = Set<UInt64>()
    /// The first unreadable block of a damaged stretch not yet attributed to records.
    private var pendingDamage: MediaDamage?
    private var catalogBytes: [UInt8] = []

    /// A new volume starts: damage and catalogs do not carry over; a spanning record does.
    mutating func startVolume(_ v: UInt32) {
        volume = v
        pendingDamage = nil
        catalogBytes = []
    }

    mutating func feed(_ event: Event) throws(MediaError) -> [Action] {
        switch event {
        case .unreadable(let block, let detail):
            if pendingDamage == nil {
                pendingDamage = MediaDamage(volume: volume, block: block, detail: detail, recordSeqs: [], records: [])
            }
            return []
        case .block(let h, let p, let block):
            switch h.kind {
            case .data:
                var out = flushDamage(nextSeq: h.recordOff == 0 ? h.recordSeq - 1 : h.recordSeq)
                out += data(h, p, block: block)
                return out
            case .volumeCatalog, .setCatalog:
                return flushDamage(nextSeq: nil) + catalog(h, p)
            case .end:
                return flushDamage(nextSeq: nil) + [.volumeEnded]
            case .label:
                throw MediaError(code: "E_MEDIA_BLOCK", volume: volume, block: block,
                    detail: "label block inside a volume")
            }
        }
    }

    /// Attributes a pending damaged stretch to the records it cost: the one being
    /// assembled, and every record number skipped before `nextSeq` (or the next one, when
    /// no data block follows).
    private mutating func flushDamage(nextSeq: UInt64?) -> [Action] {
        guard var d = pendingDamage else { return [] }
        pendingDamage = nil
        var seqs = Set<UInt64>()
        if let p = partial { seqs.insert(p.seq) }
        if let n = nextSeq, n > lastSeq { for s in (lastSeq + 1)...n { seqs.insert(s) } }
        if nextSeq == nil { seqs.insert(lastSeq + 1) }
        d.recordSeqs = seqs.sorted()
        reported.formUnion(seqs)
        partial = nil
        return [.damage(d)]
    }

    private mutating func data(_ h: MediaBlockHeader, _ p: [UInt8], block: UInt64) -> [Action] {
        if let s = skipUntilSeqEnds, s == h.recordSeq {
            if h.lastOfRecord { skipUntilSeqEnds = nil; lastSeq = h.recordSeq }
            return []
        }
        skipUntilSeqEnds = nil
        if h.recordOff == 0 {
            partial = (h.recordSeq, p)
        } else if partial?.seq == h.recordSeq, UInt64(partial?.bytes.count ?? -1) == h.recordOff {
            // In place: `pp.bytes + p` would copy the whole record so far, per block.
            partial?.bytes.append(contentsOf: p)
        } else if reported.contains(h.recordSeq) {
            if h.lastOfRecord { lastSeq = h.recordSeq }
            return []
        } else {
            // Continuation of a record whose start we lost.
            if !h.lastOfRecord { skipUntilSeqEnds = h.recordSeq }
            lastSeq = h.recordSeq
            return [.damage(MediaDamage(volume: volume, block: block,
                detail: "record continues from bytes that were not read",
                                        recordSeqs: [h.recordSeq], records: []))]
        }
        guard h.lastOfRecord, let pp = partial else { return [] }
        partial = nil
        lastSeq = pp.seq
        guard let r = MediaRecord.decode(pp.bytes) else {
            return [.damage(MediaDamage(volume: volume, block: block, detail: "record hash or framing does not check",
                                        recordSeqs: [pp.seq], records: []))]
        }
        return [.record(r)]
    }

    private mutating func catalog(_ h: MediaBlockHeader, _ p: [UInt8]) -> [Action] {
        if h.recordOff == 0 { catalogBytes = [] }
        catalogBytes += p
        guard h.lastOfRecord else { return [] }
        defer { catalogBytes = [] }
        guard let r = MediaRecord.decode(catalogBytes),
              let cat = try? JSONDecoder().decode(MediaCatalog.self, from: Data(r.body)) else { return [] }
        return [.catalog(cat, set: h.kind == .setCatalog)]
    }
}

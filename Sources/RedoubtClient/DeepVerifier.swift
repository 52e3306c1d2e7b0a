import Foundation
import RedoubtCore

/// What a deep verify found: every chunk of every pack the snapshots name was opened and
/// checked against its ID, and every snapshot's trees were walked to see which of them
/// reference a chunk that does not open from any pack they name.
public struct DeepVerifyReport: Sendable, Encodable {
    /// A pack that does not open, or holds chunks that do not.
    public struct DamagedPack: Sendable, Encodable, Equatable {
        public let pack: String
        /// Chunks in it that fail (empty when the pack as a whole does not open).
        public let badChunks: Int
        public let problem: String
    }

    /// A snapshot that cannot be restored whole, and why.
    public struct AffectedSnapshot: Sendable, Encodable, Equatable {
        public let snapshot: String
        public let host: String
        /// Chunks its files reference that open from none of its packs.
        public let badChunks: Int
        /// The first file (or tree) that cannot be restored, and why.
        public let problem: String
    }

    public var snapshots = 0
    public var packsChecked = 0
    public var chunksChecked = 0
    public var damagedPacks: [DamagedPack] = []
    public var affectedSnapshots: [AffectedSnapshot] = []
    public var isClean: Bool { damagedPacks.isEmpty && affectedSnapshots.isEmpty }
}

/// Opens every chunk of a set of snapshots once, then names every snapshot that references
/// a chunk that does not open: what finds a chunk a host uploaded under an ID its bytes do
/// not have before a restore needs it. Needs the read key; holds one pack at a time while
/// checking chunks, and the IDs of good chunks.
public struct DeepVerifier: Sendable {
    public init() {}

    public func verify(_ manifests: [Manifest], readKey: ReadPrivateKey, chunkIDKey: ChunkIDKey, source: any PackSource,
                       progress: (String) -> Void = { _ in }) async throws -> DeepVerifyReport {
        var report = DeepVerifyReport()
        report.snapshots = manifests.count
        var packs: [PackID] = []
        var seen = Set<PackID>()
        for m in manifests { for p in m.header.packs where seen.insert(p).inserted { packs.append(p) } }

        // Pass 1: each pack once; which packs hold a good copy of each chunk.
        var goodIn: [ChunkID: [PackID]] = [:]
        var badIn: [ChunkID: String] = [:]
        let decompressor = try ChunkDecompressor()
        for (i, id) in packs.enumerated() {
            try Task.checkCancellation()
            progress("pack \(i + 1)/\(packs.count) \(id)")
            let opening: PackOpening
            do {
                opening = try Self.openEveryChunk(try await source.pack(id), id: id, readKey: readKey,
                                                  chunkIDKey: chunkIDKey, decompressor: decompressor)
            } catch {
                report.damagedPacks.append(.init(pack: id.description, badChunks: 0, problem: "\(error)"))
                continue
            }
            report.packsChecked += 1
            for c in opening.good { goodIn[c, default: []].append(id) }
            for (c, problem) in opening.bad where badIn[c] == nil { badIn[c] = problem }
            report.chunksChecked += opening.good.count + opening.bad.count
            if let first = opening.bad.first {
                report.damagedPacks.append(.init(pack: id.description, badChunks: opening.bad.count,
                    problem: first.problem))
            }
        }

        // Pass 2: walk each snapshot's trees; a reference is good if one of the snapshot's
        // own packs holds a good copy (a restore reads only those).
        for (i, m) in manifests.enumerated() {
            try Task.checkCancellation()
            progress("snapshot \(i + 1)/\(manifests.count) \(m.id)")
            let own = Set(m.header.packs)
            var bad = Set<ChunkID>(), first: String? = nil
            do {
                try await Restorer().list(manifest: m, readKey: readKey, chunkIDKey: chunkIDKey, source: source,
                    recursive: true) { entry in
                    for c in entry.content where !(goodIn[c]?.contains(where: own.contains) ?? false) {
                        bad.insert(c)
                        first = first ?? "\(entry.path): chunk \(c) "
                            + (badIn[c].map { "does not open: \($0)" } ?? "is in none of the snapshot's packs")
                    }
                }
            } catch {
                first = first ?? "its trees cannot be read: \(error)"
            }
            if let first {
                report.affectedSnapshots.append(.init(snapshot: m.id.description, host: m.header.host,
                    badChunks: bad.count, problem: first))
            }
        }
        return report
    }
}

/// What opening every chunk of one pack found, in the pack's order.
struct PackOpening {
    var good: [ChunkID] = []
    var bad: [(chunk: ChunkID, problem: String)] = []
}

extension DeepVerifier {
    /// Opens one pack and every chunk in it. Format 2 takes each chunk's seal from the pack's
    /// own sealed index: a restore uses its trees' seals, but a whole pack opens on its own.
    /// Throws when the pack itself does not open (hash, structure, key, index).
    static func openEveryChunk(_ bytes: [UInt8], id: PackID, readKey: ReadPrivateKey, chunkIDKey: ChunkIDKey,
                               decompressor: ChunkDecompressor) throws -> PackOpening {
        let opened = try PackReader.open(bytes, expectedID: id, readKey: readKey)
        let seals = try opened.indexSeals(readKey: readKey)
        var out = PackOpening()
        for e in opened.entries {
            do {
                _ = try opened.chunk(e, seal: seals[e.chunkID], chunkIDKey: chunkIDKey, decompressor: decompressor)
                out.good.append(e.chunkID)
            } catch {
                out.bad.append((e.chunkID, "\(error)"))
            }
        }
        return out
    }
}

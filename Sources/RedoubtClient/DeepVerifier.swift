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
            let opened: OpenedPack
            let seals: [ChunkID: ChunkSeal]
            do {
                opened = try PackReader.open(try await source.pack(id), expectedID: id, readKey: readKey)
                // Format 2: the pack's own sealed index must open and give a key that opens
                // each chunk (a restore uses its trees' keys, but a pack should be whole).
                seals = try opened.indexSeals(readKey: readKey)
            } catch {
                report.damagedPacks.append(.init(pack: id.description, badChunks: 0, problem: "\(error)"))
                continue
            }
            report.packsChecked += 1
            var bad = 0, first: String? = nil
            for e in opened.entries {
                do {
                    _ = try opened.chunk(e, seal: seals[e.chunkID], chunkIDKey: chunkIDKey, decompressor: decompressor)
                    goodIn[e.chunkID, default: []].append(id)
                } catch {
                    bad += 1
                    first = first ?? "\(error)"
                    badIn[e.chunkID] = badIn[e.chunkID] ?? "\(error)"
                }
                report.chunksChecked += 1
            }
            if bad > 0 { report.damagedPacks.append(.init(pack: id.description, badChunks: bad, problem: first ?? "")) }
        }

        // Pass 2: walk each snapshot's trees; a reference is good if one of the snapshot's
        // own packs holds a good copy (a restore reads only those).
        for (i, m) in manifests.enumerated() {
            try Task.checkCancellation()
            progress("snapshot \(i + 1)/\(manifests.count) \(m.id)")
            let own = Set(m.header.packs)
            var bad = Set<ChunkID>(), first: String? = nil
            do {
                try await Restorer().list(manifest: m, readKey: readKey, chunkIDKey: chunkIDKey, source: source, recursive: true) { entry in
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
                report.affectedSnapshots.append(.init(snapshot: m.id.description, host: m.header.host, badChunks: bad.count, problem: first))
            }
        }
        return report
    }
}

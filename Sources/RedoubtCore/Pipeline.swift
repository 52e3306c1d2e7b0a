/// The write side of the core. Format 2: chunk → compress-or-skip → convergent seal →
/// ID (hash of the sealed bytes) → dedup → pack. Format 1: chunk → keyed ID → dedup →
/// compress-or-skip → seal → pack.
///
/// Pure and in memory: finished packs are handed out with ``takeFinishedPacks()`` and
/// the caller uploads them. One pipeline per task; not thread-safe.
public final class PackPipeline {
    public let material: SharedWriteMaterial
    public let chunker: Chunker
    /// A pack is finished once it holds at least this many bytes, or this many chunks.
    public let targetPackSize: Int
    public let maxChunksPerPack: Int
    private let compressor: ChunkCompressor
    private let isKnown: (ChunkID) -> Bool
    private var current: PackWriter?
    /// A finished pack's buffer given back by ``recycle(_:)``, for the next pack.
    private var spare: [UInt8] = []
    private var finished: [FinishedPack] = []
    /// Chunk IDs sealed by this pipeline, with the pack that holds each (once finished).
    private var sealedHere: Set<ChunkID> = []
    public private(set) var chunksNew: UInt64 = 0
    public private(set) var chunksReused: UInt64 = 0
    public private(set) var bytesPacked: UInt64 = 0
    /// The pack format written (2 unless a test or fixture asks for 1).
    public let packVersion: UInt16
    /// Format 2: the seal of every chunk this pipeline sealed, for the trees and the
    /// manifest root that name them.
    public private(set) var seals: [ChunkID: ChunkSeal] = [:]
    /// False: ``add(sealed:)`` neither records seals nor skips a chunk this pipeline has
    /// sealed before, for a caller that keeps that itself (a backup of a million files makes
    /// a million chunks, and each worker's pipeline would otherwise remember them all).
    public let remembersChunks: Bool
    private var scratch: [UInt8] = []
    /// Gives each new pack a place to be written as it fills (``PackSpill``); nil, or a
    /// nil answer: the pack is built in memory.
    private let makeSpill: (() -> (any PackSpill)?)?
    /// Bytes of a spilled pack held in memory at once: about one average chunk, so that the
    /// spill is written in large appends (a chunk this large goes to it uncopied).
    public static let spillSlice = 1 << 20

    /// 16 MiB, as restic's packs. A pack built in memory (no spill) is most of its
    /// pipeline's memory.
    public static let defaultTargetPackSize = 16 << 20
    /// A writer holds about 100 bytes per chunk of its pack until the pack is finished, and
    /// finishing builds the index and chunk list (112 bytes per chunk) at once: 16 MiB of
    /// one-kilobyte files is 28 000 chunks, which made those the largest part of a backup of
    /// small files. 8192 keeps each under a megabyte (the format allows 2^20).
    public static let defaultMaxChunksPerPack = 1 << 13

    /// `isKnown` answers whether the repository already holds a chunk (the server's
    /// answer to "have?"); such chunks are not sealed again. `makeSpill`: see ``PackSpill``.
    public init(material: SharedWriteMaterial, targetPackSize: Int = defaultTargetPackSize,
                maxChunksPerPack: Int = defaultMaxChunksPerPack,
        compressionLevel: Int32 = ChunkCompressor.defaultLevel,
                chunkerParameters: Chunker.Parameters = .default, packVersion: UInt16 = PackFormat.version,
                remembersChunks: Bool = true, makeSpill: (() -> (any PackSpill)?)? = nil,
                isKnown: @escaping (ChunkID) -> Bool = { _ in false }) throws(CoreError) {
        self.makeSpill = makeSpill
        self.packVersion = packVersion
        self.remembersChunks = remembersChunks
        self.material = material
        self.chunker = Chunker(seed: material.chunkerSeed, parameters: chunkerParameters)
        self.targetPackSize = targetPackSize
        self.maxChunksPerPack = max(1, min(maxChunksPerPack, PackFormat.maxChunks - 1))
        self.compressor = try ChunkCompressor(level: compressionLevel)
        self.isKnown = isKnown
    }

    /// Adds one chunk's plaintext; returns its ID. Seals it only if neither the
    /// repository nor this pipeline already has it.
    @discardableResult
    public func add(chunk: UnsafeRawBufferPointer) throws(CoreError) -> ChunkID {
        if packVersion == 2 { return try add(sealed: seal(chunk)) }
        return try add(chunk: chunk, id: chunkID(for: chunk))
    }

    /// Compresses and seals `chunk` the format-2 way, without adding it (its ID is what
    /// to ask the repository about).
    public func seal(_ chunk: UnsafeRawBufferPointer) throws(CoreError) -> SealedChunk {
        try ConvergentSealing.seal(chunk, compressor: compressor, chunkIDKey: material.chunkIDKey, scratch: &scratch)
    }

    /// Adds a chunk sealed with ``seal(_:)`` (format 2) unless this pipeline or the
    /// repository already has it; records its seal either way.
    @discardableResult
    public func add(sealed chunk: SealedChunk) throws(CoreError) -> ChunkID {
        if remembersChunks { seals[chunk.id] = chunk.seal }
        if (remembersChunks && sealedHere.contains(chunk.id)) || isKnown(chunk.id) {
            chunksReused += 1
            return chunk.id
        }
        try openPack()
        try current!.append(chunk)
        if remembersChunks { sealedHere.insert(chunk.id) }
        chunksNew += 1
        if currentIsFull { try finishCurrent() }
        return chunk.id
    }

    /// The seals of `ids`, in order, if this pipeline sealed every one of them.
    public func seals(for ids: [ChunkID]) -> [ChunkSeal]? {
        var out: [ChunkSeal] = []
        for id in ids {
            guard let s = seals[id] else { return nil }
            out.append(s)
        }
        return out
    }

    /// The pack in progress holds enough bytes or chunks to be finished. Asked of the
    /// optional in place, not through `if let c = current`: that copy would keep the pack
    /// buffer shared while finish() appends to it, and the append would copy the whole pack.
    private var currentIsFull: Bool {
        current.map { $0.size >= targetPackSize || $0.chunkCount >= maxChunksPerPack } ?? false
    }

    private func openPack() throws(CoreError) {
        guard current == nil else { return }
        if let spill = makeSpill?() {
            current = try PackWriter(recipient: material.readPublicKey, capacity: Self.spillSlice,
                                     version: packVersion, spill: spill, spillAt: Self.spillSlice)
            return
        }
        var buffer: [UInt8] = []
        swap(&buffer, &spare)
        current = try PackWriter(recipient: material.readPublicKey, capacity: targetPackSize + (9 << 20),
                                 reusing: consume buffer, version: packVersion)
    }

    /// The keyed ID of `chunk`. Sealed bytes of the pack in progress not yet hashed for
    /// its pack ID are hashed in the same loop (SHA256Stream), so a caller that computes
    /// IDs here rather than with the key alone makes the write path cheaper.
    public func chunkID(for chunk: UnsafeRawBufferPointer) -> ChunkID {
        if current != nil { return current!.chunkID(for: chunk, key: material.chunkIDKey) }
        return material.chunkIDKey.chunkID(for: chunk)
    }

    /// Adds a chunk whose ID the caller has already computed with this tenant's
    /// chunk-ID key (to ask the repository about a batch first). A wrong ID is caught
    /// by every reader (docs/FORMAT.md §4.5 step 6), never silently accepted. Format 1 only:
    /// a format-2 ID is the hash of the sealed bytes (``seal(_:)``, ``add(sealed:)``).
    @discardableResult
    public func add(chunk: UnsafeRawBufferPointer, id: ChunkID) throws(CoreError) -> ChunkID {
        if sealedHere.contains(id) || isKnown(id) {
            chunksReused += 1
            return id
        }
        try openPack()
        try narrow {
            try compressor.compress(chunk) { kind, payload in
                try current!.append(id: id, kind: kind, rawLength: chunk.count, payload: payload)
            }
        }
        sealedHere.insert(id)
        chunksNew += 1
        if currentIsFull { try finishCurrent() }
        return id
    }

    /// Splits a whole in-memory blob (a tree encoding, a small file) with the chunker and
    /// adds each chunk; returns the ordered chunk list.
    public func add(blob: [UInt8]) throws(CoreError) -> [ChunkID] {
        try narrow {
            try blob.withUnsafeBytes { raw in
                var ids: [ChunkID] = []
                var offset = 0
                while offset < raw.count {
                    let rest = UnsafeRawBufferPointer(rebasing: raw[offset...])
                    let len = chunker.cut(rest, final: true) ?? rest.count
                    ids.append(try add(chunk: UnsafeRawBufferPointer(rebasing: rest[0..<len])))
                    offset += len
                }
                if ids.isEmpty { ids.append(try add(chunk: UnsafeRawBufferPointer(start: nil, count: 0))) }
                return ids
            }
        }
    }

    /// Encodes a tree and adds it; returns the chunk list that names it. In format 2 a
    /// node's missing seals are filled in from the chunks this pipeline sealed.
    public func add(tree: Tree) throws(CoreError) -> [ChunkID] {
        guard packVersion == 2 else { return try add(blob: try TreeCodec.encode(tree, version: 1)) }
        var nodes = tree.nodes
        for i in nodes.indices {
            if nodes[i].contentSeals.isEmpty, let s = seals(for: nodes[i].content) { nodes[i].contentSeals = s }
            if nodes[i].subtreeSeals.isEmpty, let s = seals(for: nodes[i].subtree) { nodes[i].subtreeSeals = s }
        }
        return try add(blob: try TreeCodec.encode(Tree(nodes: nodes)))
    }

    /// Gives back a pack the caller is done with (uploaded), so that the next pack is
    /// built in its memory instead of tens of MiB of fresh pages, each a page fault.
    /// Keeps one buffer. Bytes still held elsewhere are never written over (the next
    /// pack then gets fresh memory, as without this call).
    public func recycle(_ pack: consuming FinishedPack) {
        var bytes: [UInt8] = []
        swap(&bytes, &pack.bytes)
        guard spare.capacity == 0, bytes.capacity >= targetPackSize else { return }
        spare = bytes
    }

    public var hasFinishedPacks: Bool { !finished.isEmpty }

    /// Packs finished since the last call.
    public func takeFinishedPacks() -> [FinishedPack] {
        defer { finished.removeAll() }
        return finished
    }

    /// Finishes the pack in progress, if any, and returns every pack not yet taken.
    public func flush() throws(CoreError) -> [FinishedPack] {
        try finishCurrent()
        return takeFinishedPacks()
    }

    private func finishCurrent() throws(CoreError) {
        // take(), then consume: the consuming finish() must get the only reference, or
        // its first append duplicates the whole pack buffer (tens of MiB per pack).
        guard let c = current.take() else { return }
        let p = try (consume c).finish()
        bytesPacked += UInt64(p.size)
        finished.append(p)
    }
}

/// The read side of the core over packs fetched by a caller-supplied function: opens a
/// snapshot's manifest, trees and file contents with the tenant's keys.
///
/// The chunk → pack map is built from the public chunk lists of the packs the manifest
/// names, so it needs no catalog: only the packs and the read key.
public final class SnapshotReader {
    public let manifest: Manifest
    private let readKey: ReadPrivateKey
    private let chunkIDKey: ChunkIDKey
    private let fetch: (PackID) throws -> [UInt8]
    private var location: [ChunkID: PackID] = [:]
    /// Packs whose public lists are already in `location`.
    private var inspected: Set<PackID> = []
    private var opened: [PackID: OpenedPack] = [:]
    private var openedOrder: [PackID] = []
    private let decompressor: ChunkDecompressor
    /// Format 2: seals from the manifest root and the trees read so far (this snapshot's
    /// own chain; never a pack's index).
    private var seals: [ChunkID: ChunkSeal] = [:]
    /// Packs kept open (decrypted index and bytes) at once.
    public var cacheLimit = 4

    /// `fetch` returns a pack's bytes by ID (from a server, a bucket, a medium); any
    /// error it throws is passed through.
    public init(manifest: Manifest, readKey: ReadPrivateKey, chunkIDKey: ChunkIDKey,
        fetch: @escaping (PackID) throws -> [UInt8]) throws(CoreError) {
        self.manifest = manifest
        self.readKey = readKey
        self.chunkIDKey = chunkIDKey
        self.fetch = fetch
        self.decompressor = try ChunkDecompressor()
    }

    private func locate(_ id: ChunkID) throws -> PackID {
        if let p = location[id] { return p }
        // Inspect the manifest's packs until the chunk is found.
        for p in manifest.header.packs where !inspected.contains(p) {
            inspected.insert(p)
            let summary = try PackReader.inspect(try fetch(p), expectedID: p)
            for c in summary.chunkIDs { location[c] = p }
            if let found = location[id] { return found }
        }
        throw CoreError(.missing, object: "chunk \(id)",
            "not in any pack that snapshot \(manifest.id) names: the snapshot is incomplete")
    }

    private func pack(_ id: PackID) throws -> OpenedPack {
        if let p = opened[id] { return p }
        let p = try PackReader.open(try fetch(id), expectedID: id, readKey: readKey)
        opened[id] = p
        openedOrder.append(id)
        if openedOrder.count > cacheLimit { opened[openedOrder.removeFirst()] = nil }
        return p
    }

    /// One chunk's authenticated plaintext.
    public func chunk(_ id: ChunkID) throws -> [UInt8] {
        let p = try pack(try locate(id))
        guard let entry = p.entries.first(where: { $0.chunkID == id }) else {
            throw CoreError(.missing, object: "chunk \(id)", "pack \(p.id) does not hold it")
        }
        return try p.chunk(entry, seal: seals[id], chunkIDKey: chunkIDKey, decompressor: decompressor)
    }

    private func learn(_ tree: Tree) -> Tree {
        for n in tree.nodes {
            for (c, s) in zip(n.content, n.contentSeals) { seals[c] = s }
            for (c, s) in zip(n.subtree, n.subtreeSeals) { seals[c] = s }
        }
        return tree
    }

    /// Concatenated plaintext of a chunk list.
    public func blob(_ ids: [ChunkID]) throws -> [UInt8] {
        var out: [UInt8] = []
        for id in ids { out.append(contentsOf: try chunk(id)) }
        return out
    }

    /// The snapshot's root tree.
    public func rootTree() throws -> Tree {
        let root = try manifest.openRootRefs(readKey: readKey)
        for (c, s) in zip(root.ids, root.seals) { seals[c] = s }
        return learn(try TreeCodec.decode(try blob(root.ids), object: "root tree of snapshot \(manifest.id)"))
    }

    /// A directory node's tree.
    public func tree(of node: Node) throws -> Tree {
        for (c, s) in zip(node.subtree, node.subtreeSeals) { seals[c] = s }
        let object = "tree of \(printable(node.name)) in snapshot \(manifest.id)"
        return learn(try TreeCodec.decode(try blob(node.subtree), object: object))
    }

    /// A file node's whole contents, holes filled with zeros (for tests and small files).
    public func contents(of node: Node) throws -> [UInt8] {
        guard node.size <= 1 << 30 else {
            throw CoreError(.limitExceeded, object: "file \(printable(node.name))",
                "too large to read into memory; restore it to a file instead")
        }
        for (c, s) in zip(node.content, node.contentSeals) { seals[c] = s }
        let data = try blob(node.content)
        guard let regions = node.dataRegions else {
            guard UInt64(data.count) == node.size else {
                throw CoreError(.corrupt, object: "file \(printable(node.name)) in snapshot \(manifest.id)",
                    "content is \(data.count) bytes, tree says \(node.size)")
            }
            return data
        }
        var out = [UInt8](repeating: 0, count: Int(node.size))
        var from = 0
        for r in regions {
            let n = Int(r.length)
            guard from + n <= data.count else {
                throw CoreError(.corrupt, object: "file \(printable(node.name)) in snapshot \(manifest.id)",
                    "sparse map needs more data than the chunks hold")
            }
            out.replaceSubrange(Int(r.offset)..<(Int(r.offset) + n), with: data[from..<(from + n)])
            from += n
        }
        guard from == data.count else {
            throw CoreError(.corrupt, object: "file \(printable(node.name)) in snapshot \(manifest.id)",
                "chunks hold more data than the sparse map places")
        }
        return out
    }
}

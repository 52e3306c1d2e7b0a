import RedoubtCore

/// Reads one snapshot without restoring it: an entry's contents to a stream (`dump`), a
/// directory as a tar stream, and every entry for `diff` and `find`.
///
/// Like a restore it checks every tree and chunk it reads (IDs, seals, pack hashes); the
/// caller verifies the manifest first. Not thread-safe: used by one task.
public final class SnapshotBrowser {
    let session: RestoreSession
    public let manifest: Manifest

    public init(manifest: Manifest, readKey: ReadPrivateKey, chunkIDKey: ChunkIDKey,
                source: any PackSource) throws(CoreError) {
        self.manifest = manifest
        session = try RestoreSession(manifest: manifest, readKey: readKey, chunkIDKey: chunkIDKey, source: source,
                                     isRoot: false, skipDamaged: false,
                                     batchPlaintextBudget: RestoreSession.defaultBatchBudget, onProgress: { _ in })
    }

    private var located = false

    private func locate() async throws {
        if located { return }
        try await session.locateChunks()
        located = true
    }

    /// The node at `path` (as the user knows it, ``SnapshotLayout/snapshotPath(of:in:)``)
    /// and its path below the root; throws ``ArchiveError`` `.notFound` naming it.
    public func node(at path: [UInt8]) async throws -> (path: [UInt8], node: Node) {
        try await locate()
        let p = SnapshotLayout.snapshotPath(of: path, in: manifest)
        guard !p.isEmpty else {
            throw ArchiveError(.invalidArgument, object: printable(path),
                               "names the whole snapshot; name a file or directory in it")
        }
        guard let n = try await session.findNode(p) else {
            throw ArchiveError(.notFound, object: printable(path),
                               "no such entry in snapshot \(manifest.id); `redoubt ls` lists what it holds")
        }
        return (p, n)
    }

    /// Calls `body` with every entry below the root (or below `start`, a directory's path
    /// below the root), depth first in name order, each directory before its entries.
    /// `body` returns false to skip a directory's entries.
    public func walk(from start: [UInt8] = [], _ body: ([UInt8], Node) throws -> Bool) async throws {
        try await locate()
        let top: Tree
        if start.isEmpty {
            top = try await session.root()
        } else {
            guard let n = try await session.findNode(start), n.type == .directory else { return }
            top = try await session.loadTree(n.subtree, path: start)
        }
        var stack: [([UInt8], Node)] = top.nodes.reversed().map { (start.isEmpty ? $0.name : start + [0x2f] + $0.name,
                                                                    $0) }
        while let (path, n) = stack.popLast() {
            try Task.checkCancellation()
            guard try body(path, n), n.type == .directory else { continue }
            for c in try await session.loadTree(n.subtree, path: path).nodes.reversed() {
                stack.append((path + [0x2f] + c.name, c))
            }
        }
    }

    /// The entries of the directory at `path` below the root (empty: the root).
    public func children(of path: [UInt8], node: Node?) async throws -> [Node] {
        try await locate()
        guard let node else { return try await session.root().nodes }
        guard node.type == .directory else { return [] }
        return try await session.loadTree(node.subtree, path: path).nodes
    }

    /// Writes a regular file's bytes to `sink` in order, holes of a sparse file as zeros,
    /// checking that its chunks hold exactly what its tree entry says.
    public func contents(of node: Node, path: [UInt8], _ sink: ([UInt8]) throws -> Void) async throws {
        try await locate()
        let object = "file \(printable(path)) in snapshot \(manifest.id)"
        let regions = node.dataRegions ?? (node.size > 0 ? [Extent(offset: 0, length: node.size)] : [])
        var position: UInt64 = 0
        var pending: [UInt8] = [], used = 0, next = 0
        func zeros(_ n: UInt64) throws {
            var left = n
            let block = [UInt8](repeating: 0, count: 1 << 20)
            while left > 0 {
                let k = Int(min(left, UInt64(block.count)))
                try sink(k == block.count ? block : Array(block[..<k]))
                left -= UInt64(k)
            }
        }
        for r in regions {
            guard r.offset >= position else {
                throw CoreError(.corrupt, object: object, "its sparse regions overlap")
            }
            try zeros(r.offset - position)
            var left = r.length
            while left > 0 {
                if used == pending.count {
                    guard next < node.content.count else {
                        throw CoreError(.corrupt, object: object, "its chunks hold less than its tree entry says")
                    }
                    pending = try await session.contentChunk(node.content[next], path: path)
                    used = 0
                    next += 1
                    continue
                }
                let k = Int(min(left, UInt64(pending.count - used)))
                try sink(used == 0 && k == pending.count ? pending : Array(pending[used..<(used + k)]))
                used += k
                left -= UInt64(k)
            }
            position = r.offset + r.length
        }
        guard next == node.content.count, used == pending.count, position <= node.size else {
            throw CoreError(.corrupt, object: object, "its chunks hold more than its tree entry says")
        }
        try zeros(node.size - position)
    }
}

import Glibc
import Logging
import RedoubtCore
import Synchronization

/// Restores a snapshot, or one entry of it, into a local directory.
///
/// **Safety.** Names come from trees that `TreeCodec` has validated (no `/`, NUL, `.` or
/// `..`), and every entry is created relative to an open directory descriptor with
/// `O_NOFOLLOW`, then reopened only if its inode is the one this restore made. So no
/// path is resolved through a symlink — neither one in the snapshot nor one already in
/// the target — and nothing is written outside `target`. A hard link is made only to a
/// regular file this restore wrote.
///
/// **Efficiency.** The trees are read first; then every needed pack is fetched once,
/// opened (hash, data key, index checked) and each needed chunk decrypted, decompressed
/// and verified once — in the task that fetched it, up to two packs ahead of the one
/// being written — and written with `pwrite` at its offsets in every file that uses it.
/// A chunk's offset needs the lengths of the chunks before it, which only their packs'
/// indexes give; a chunk whose offset is not known yet waits in an unnamed temporary
/// file in the target (O_TMPFILE) instead of its pack being fetched again. A file is
/// created at its first write and gets its owner, attributes, mode and times through
/// its descriptor as soon as it is complete.
///
/// **Fidelity.** Contents (sparse files keep their holes: the file is sized with
/// `ftruncate` and only data regions are written), owners (numeric uid/gid, when
/// `isRoot`), modes including setuid/setgid/sticky (set after the owner), extended
/// attributes and ACLs, nanosecond mtime and atime (directories last, after their
/// contents), symlinks, hard links, FIFOs, devices (when `isRoot`), non-UTF-8 names,
/// empty files and directories. Sockets are not recreated (a note says so).
///
/// The caller verifies the manifest (`Manifest.verify`) before calling this. Integrity
/// failures of packs, chunks and trees are thrown as `CoreError`, which names the object;
/// with `skipDamaged` they are collected in ``RestoreResult/damaged`` instead, with the
/// files they affect, and the restore goes on.
public final class Restorer: Sendable {
    private let logger: Logger
    /// Plaintext bytes decrypted ahead per batch (see ``RestoreSession/defaultBatchBudget``);
    /// tests make it tiny to split every pack.
    let batchPlaintextBudget: Int

    public init(logger: Logger = Logger(label: "redoubt.restore")) {
        self.logger = logger
        batchPlaintextBudget = RestoreSession.defaultBatchBudget
    }

    init(batchPlaintextBudget: Int) {
        logger = Logger(label: "redoubt.restore")
        self.batchPlaintextBudget = batchPlaintextBudget
    }

    /// Restores `subpath` of the snapshot (a path as the user knows it, `/srv/www`, or
    /// below the snapshot root, `srv/www`; nil or empty for the whole snapshot) into the
    /// directory `target`, created if missing. Existing entries are replaced; see
    /// ``restore(manifest:readKey:chunkIDKey:source:target:options:isRoot:progress:)``.
    public func restore(manifest: Manifest, readKey: ReadPrivateKey, chunkIDKey: ChunkIDKey, source: any PackSource,
        target: String,
                        subpath: [UInt8]? = nil, isRoot: Bool = geteuid() == 0, skipDamaged: Bool = false,
                        progress: @escaping @Sendable (RestoreProgress) -> Void =
                            { _ in }) async throws -> RestoreResult {
        let paths = subpath.map { $0.isEmpty ? [] : [$0] } ?? []
        return try await restore(manifest: manifest, readKey: readKey, chunkIDKey: chunkIDKey, source: source,
                                 target: target, options: RestoreOptions(paths: paths, skipDamaged: skipDamaged),
                                 isRoot: isRoot, progress: progress)
    }

    /// Restores the entries `options` selects into the directory `target`, created if
    /// missing. Every entry keeps its path below the snapshot root, so restoring `/srv/www`
    /// of a snapshot of `/srv/www` creates `target/srv/www`, with `srv` as the snapshot
    /// recorded it (snapshots before manifest version 3: `target/www`). Existing
    /// directories are merged into; other existing entries are handled by
    /// ``RestoreOptions/overwrite``. A file replacing an existing entry is written under a
    /// temporary name in its directory and renamed to its own when whole (contents, owner,
    /// mode and times set); one where nothing was is written under its own name. A failure
    /// (a full disk) removes every file it did not finish, so it never leaves a truncated
    /// file under a real name, nor a good one truncated. Throws ``ArchiveError`` `.notFound`
    /// naming a selected path the snapshot does not hold, before anything is written.
    public func restore(manifest: Manifest, readKey: ReadPrivateKey, chunkIDKey: ChunkIDKey, source: any PackSource,
                        target: String, options: RestoreOptions, isRoot: Bool = geteuid() == 0,
                        progress: @escaping @Sendable (RestoreProgress) -> Void =
                            { _ in }) async throws -> RestoreResult {
        let r = try RestoreSession(manifest: manifest, readKey: readKey, chunkIDKey: chunkIDKey, source: source,
            isRoot: isRoot,
                                   skipDamaged: options.skipDamaged, batchPlaintextBudget: batchPlaintextBudget,
                                       onProgress: progress)
        let result = try await r.run(target: target, options: options)
        logger.info("restore finished", metadata: ["snapshot": "\(manifest.id)", "files": "\(result.files)",
            "packs": "\(result.packsFetched)"])
        return result
    }

    /// Calls `body` with each entry of the snapshot at `subpath` (as the user knows it or
    /// below the root, ``SnapshotLayout/snapshotPath(of:in:)``; nil or empty: its top
    /// level), as it is read: a directory's children, or the one entry a path names;
    /// `recursive` walks the directories below too, depth first, each directory's entries
    /// in tree (name) order. Reads trees only, so it needs only the packs that hold them
    /// — if `source` can locate chunks (the server); otherwise every pack the snapshot
    /// names is read once to find them. Throws ``ArchiveError`` `.notFound` for a path the
    /// snapshot does not hold, and `CoreError` (naming the object) for damaged trees.
    public func list(manifest: Manifest, readKey: ReadPrivateKey, chunkIDKey: ChunkIDKey, source: any PackSource,
                     subpath: [UInt8]? = nil, recursive: Bool = false,
                         _ body: (ListedEntry) throws -> Void) async throws {
        let r = try RestoreSession(manifest: manifest, readKey: readKey, chunkIDKey: chunkIDKey, source: source,
            isRoot: false,
                                   skipDamaged: false, batchPlaintextBudget: batchPlaintextBudget, onProgress: { _ in })
        try await r.list(subpath: subpath, recursive: recursive, body)
    }
}

/// One restore's state. Not thread-safe: used by the task that runs the restore.
final class RestoreSession {
    let manifest: Manifest
    let readKey: ReadPrivateKey
    let chunkIDKey: ChunkIDKey
    let source: any PackSource
    let isRoot: Bool
    let skipDamaged: Bool
    let onProgress: @Sendable (RestoreProgress) -> Void
    private let decompressor: ChunkDecompressor

    /// Chunk → the pack that holds it, and the plaintext lengths of format-1 chunks, learned
    /// from opened packs (a format-2 chunk's length is in its seal: ``length(_:)``).
    private var location: [ChunkID: PackID] = [:]
    private var lengths: [ChunkID: Int] = [:]
    /// Format-2 chunks' seals, from the manifest root and the trees read (this snapshot's
    /// own chain): a pack's uploader is never trusted for the key or length of a chunk.
    private var seals: [ChunkID: ChunkSeal] = [:]
    /// Opened packs kept for reuse (trees, and packs read to locate chunks).
    private var cache: [PackID: (pack: OpenedPack, index: [ChunkID: Int], size: Int, tick: Int)] = [:]
    private var cacheBytes = 0
    private let cacheBudget = 64 << 20
    private var tick = 0
    private var damagedPacks: [PackID: CoreError] = [:]
    private var packsFetched = 0

    private var tree: RestoreTree! = nil
    private var rootTree: Tree? = nil
    private var placements: [FilePlacement] = []
    private var deferred: [Int: [Int]] = [:]
    private var spill: SpillFile! = nil
    private var warnings: [RestoreWarning] = []
    private var damaged: [DamagedEntry] = []
    private var status = RestoreProgress(phase: .planning)
    private var lastReport: ContinuousClock.Instant? = nil
    private var counts = (files: UInt64(0), directories: UInt64(0), other: UInt64(0))

    init(manifest: Manifest, readKey: ReadPrivateKey, chunkIDKey: ChunkIDKey, source: any PackSource, isRoot: Bool,
        skipDamaged: Bool,
         batchPlaintextBudget: Int, onProgress: @escaping @Sendable (RestoreProgress) -> Void) throws(CoreError) {
        self.batchPlaintextBudget = batchPlaintextBudget
        self.manifest = manifest
        self.readKey = readKey
        self.chunkIDKey = chunkIDKey
        self.source = source
        self.isRoot = isRoot
        self.skipDamaged = skipDamaged
        self.onProgress = onProgress
        decompressor = try ChunkDecompressor()
    }

    private var snapshot: String { "snapshot \(manifest.id)" }

    /// How an error names the file of item `i`.
    private func fileObject(_ i: Int) -> String { "file \(tree.object(i)) in \(snapshot)" }

    /// Applies `update` and reports at most every 100 ms (always if `force`); the path of
    /// `entry`, the item at hand, is built only for a report that goes out.
    private func report(force: Bool = false, entry: Int? = nil, _ update: (inout RestoreProgress) -> Void = { _ in }) {
        update(&status)
        let now = ContinuousClock.now
        if !force, let last = lastReport, now - last < .milliseconds(100) { return }
        if let entry { status.currentPath = printable(tree.path(entry)) }
        lastReport = now
        onProgress(status)
    }

    private var filter = RestoreFilter(RestoreOptions(), manifest: nil)
    private var overwrite = OverwritePolicy.always
    private var skippedExisting: UInt64 = 0

    func run(target: String, options: RestoreOptions) async throws -> RestoreResult {
        filter = RestoreFilter(options, manifest: manifest)
        overwrite = options.overwrite
        let targetBytes = Array(target.utf8)
        if mkdir(target, 0o700) != 0 && Glibc.errno != EEXIST {
            throw ArchiveError.system("creating the restore target", object: target, errno: Glibc.errno)
        }
        let fd = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else {
            throw ArchiveError.system("opening the restore target", object: target, errno: Glibc.errno)
        }
        defer { close(fd) }
        tree = RestoreTree(targetFD: fd, targetPath: targetBytes)
        defer { tree.closeAll() }
        spill = SpillFile(directoryFD: fd)

        report(force: true)
        try await locateChunks()
        try await plan(given: options.paths)
        try await resolveHardLinks()
        do {
            try createEntries()
            try await writeContents()
        } catch {
            // Why: a file not finished is incomplete; none may stay behind, under its own
            // name or a temporary one (what it was to replace is still there).
            tree.removeUnfinished()
            throw error
        }
        try makeOtherEntries()
        report(force: true) { $0.phase = .finishing }
        try applyMetadata()
        report(force: true) { $0.phase = .done; $0.currentPath = "" }
        var result = RestoreResult(files: counts.files, directories: counts.directories, otherEntries: counts.other,
            bytesWritten: status.bytesDone,
                             packsFetched: packsFetched, warnings: warnings, damaged: damaged)
        result.skippedExisting = skippedExisting
        return result
    }

    // MARK: - packs

    /// Records an integrity failure for `path`, or throws it without `skipDamaged`.
    private func damage(_ path: [UInt8], _ error: CoreError) throws(CoreError) {
        guard skipDamaged else { throw error }
        damaged.append(DamagedEntry(path: path, error: error))
    }

    private func learn(_ p: OpenedPack) {
        for e in p.entries {
            if location[e.chunkID] == nil { location[e.chunkID] = p.id }
            if p.version == 1, lengths[e.chunkID] == nil { lengths[e.chunkID] = Int(e.rawLength) }
        }
    }

    /// Records the seals (and so the lengths) a tree or root gives for its chunks.
    private func learnSeals(_ ids: [ChunkID], _ list: [ChunkSeal]) {
        for (c, s) in zip(ids, list) { seals[c] = s }
    }

    /// A chunk's plaintext length if known: from its seal (what this snapshot's own trees
    /// say, never the uploader's index), else from a format-1 pack's index. Why not a map of
    /// every chunk's length: a second entry per chunk, written as the trees are read, made
    /// the plan slower and a kernel-tree restore peak at 171 to 181 MiB, against 168 to 170.
    private func length(_ c: ChunkID) -> Int? {
        if let s = seals[c] { return Int(s.rawLength) }
        return lengths[c]
    }

    private func learnSeals(_ tree: Tree) -> Tree {
        for n in tree.nodes {
            learnSeals(n.content, n.contentSeals)
            learnSeals(n.subtree, n.subtreeSeals)
        }
        return tree
    }

    private func keep(_ p: OpenedPack, size: Int) {
        guard cache[p.id] == nil, size <= cacheBudget else { return }
        while cacheBytes + size > cacheBudget, let oldest = cache.min(by: { $0.value.tick < $1.value.tick }) {
            cacheBytes -= oldest.value.size
            cache[oldest.key] = nil
        }
        tick += 1
        cache[p.id] = (p, p.positions(), size, tick)
        cacheBytes += size
    }

    private static func fetchAndOpen(_ source: any PackSource, _ id: PackID,
        _ readKey: ReadPrivateKey) async throws -> (OpenedPack, Int) {
        let bytes = try await source.pack(id)
        return (try PackReader.open(bytes, expectedID: id, readKey: readKey), bytes.count)
    }

    /// An opened pack, from the cache or fetched (and then cached).
    func openedPack(_ id: PackID) async throws -> (pack: OpenedPack, index: [ChunkID: Int]) {
        if let e = damagedPacks[id] { throw e }
        tick += 1
        if let c = cache[id] {
            cache[id]!.tick = tick
            return (c.pack, c.index)
        }
        packsFetched += 1
        let (p, size) = try await Self.fetchAndOpen(source, id, readKey)
        learn(p)
        keep(p, size: size)
        if let c = cache[id] { return (c.pack, c.index) }
        return (p, p.positions())
    }

    /// Plaintexts of the chunks a pack was opened for, or why each failed.
    typealias PreparedChunks = [ChunkID: Result<[UInt8], CoreError>]

    /// One run of a pack's work: the pack, opened, and the plaintexts of a run of the
    /// chunks wanted from it (`range`, indices into the caller's list for that pack).
    struct PackBatch: Sendable {
        let pack: OpenedPack
        let plain: PreparedChunks
        let range: Range<Int>
        /// More of this pack's chunks follow in another batch.
        let more: Bool
        var isFirst: Bool { range.lowerBound == 0 }
    }
    typealias PackResult = Result<PackBatch, any Error>
    /// Prepares the run of a pack's wanted chunks that starts at index `from`.
    typealias Prepare = @Sendable (_ pack: OpenedPack, _ from: Int) -> (PreparedChunks, range: Range<Int>, more: Bool)

    /// Plaintext bytes one batch prepares before it stops (the last chunk may pass it by
    /// up to a chunk's size). Why: text expands ~6x from its sealed size, so a whole
    /// 32 MiB pack prepared at once, with two more loading ahead, held over 600 MiB. Three
    /// batches can be alive (one written, two prepared); 8 MiB restored the benchmark corpus
    /// as fast as 16 MiB did. 2 MiB was measured only together with slimmer plan entries:
    /// 7.5 s / 198 MiB against 9.0 s / 235 on the kernel corpus, one run each, where this
    /// disk moves a restore's time by up to 30% from run to run.
    static let defaultBatchBudget = 2 << 20
    /// Batches prepared ahead of the one being written. One keeps both cores busy (one
    /// decrypts, one writes): on the 800 MB benchmark corpus a second one ahead restored no
    /// faster and held about 40 MiB more.
    static let batchesAhead = 1
    let batchPlaintextBudget: Int

    /// Fetches (unless given the opened pack) and opens one pack, then runs `prepare`.
    private static func load(_ source: any PackSource, _ id: PackID, _ readKey: ReadPrivateKey, opened: OpenedPack?,
        from: Int,
                             prepare: Prepare) async -> PackResult {
        let pack: OpenedPack
        if let opened {
            pack = opened
        } else {
            let bytes: [UInt8]
            do { bytes = try await source.pack(id) } catch { return .failure(error) }
            do throws(CoreError) {
                pack = try PackReader.open(bytes, expectedID: id, readKey: readKey)
            } catch {
                return .failure(error)
            }
        }
        let (plain, range, more) = prepare(pack, from)
        return .success(PackBatch(pack: pack, plain: plain, range: range, more: more))
    }

    /// Fetches and opens `ids` in order and runs `prepare` on each in a child task (so
    /// decryption overlaps writing), up to ``batchesAhead`` ahead of the one `body` handles. A
    /// pack whose chunks take several batches is opened once; its next batch starts as
    /// soon as the previous one reaches `body`. `body` gets each batch as it is ready: a
    /// pack's batches in their order, the packs interleaved as they come. Why: taken in the
    /// order they were started, every pack's first batch held up the writes of the pack
    /// before it for its whole fetch (1.3 s of a 5 s restore of the kernel tree). Cached
    /// packs are not fetched again. `leavingCache`: a cached pack leaves the cache as it
    /// starts (each is read once here), so its memory goes with its last batch.
    private func forEachPack(_ ids: [PackID], leavingCache: Bool = false, prepare: @escaping Prepare,
                             _ body: (PackID, PackResult) async throws -> Void) async throws {
        let source = self.source, readKey = self.readKey
        try await withThrowingTaskGroup(of: (PackID, PackResult, Bool).self) { group in
            var continuations: [(id: PackID, pack: OpenedPack, from: Int)] = []
            var nextPack = 0
            var inFlight = 0
            func startMore() {
                while inFlight < Self.batchesAhead + 1 {
                    let id: PackID, opened: OpenedPack?, from: Int
                    if !continuations.isEmpty {
                        let c = continuations.removeFirst()
                        (id, opened, from) = (c.id, c.pack, c.from)
                    } else if nextPack < ids.count {
                        id = ids[nextPack]
                        nextPack += 1
                        (opened, from) = (cache[id]?.pack, 0)
                        if leavingCache, let c = cache.removeValue(forKey: id) { cacheBytes -= c.size }
                    } else {
                        break
                    }
                    inFlight += 1
                    group.addTask {
                        (id, await Self.load(source, id, readKey, opened: opened, from: from, prepare: prepare),
                            opened == nil)
                    }
                }
            }
            startMore()
            while let (id, r, fetched) = try await group.next() {
                inFlight -= 1
                if fetched { packsFetched += 1 }
                if case .success(let b) = r, b.more {
                    // Started now, so that the pack's next batch is prepared while this one is written.
                    continuations.append((id, b.pack, b.range.upperBound))
                }
                startMore()
                try Task.checkCancellation()
                try await body(id, r)
            }
        }
    }

    /// Builds the chunk → pack map: from the source's catalog if it has one, else by
    /// opening every pack the manifest names (each kept while the budget allows).
    func locateChunks() async throws {
        let packs = manifest.header.packs
        if let s = source as? any ChunkLocatingPackSource {
            location = try await s.chunkLocations(inPacks: packs)
            // The trees name about as many chunks as the packs hold: sized once, the map
            // the plan fills is not rehashed as it grows.
            seals.reserveCapacity(location.count)
            return
        }
        status.packsTotal = packs.count
        try await forEachPack(packs, prepare: { _, from in ([:], from..<from, false) }) { id, result in
            switch result {
            case .success(let b):
                let p = b.pack
                learn(p)
                keep(p, size: p.entries.reduce(0) { $0 + Int($1.sealedLength) })
            case .failure(let e as CoreError) where skipDamaged:
                damagedPacks[id] = e
                warnings.append(RestoreWarning(path: [], "\(e)"))
            case .failure(let e):
                throw e
            }
        }
    }

    /// Largest tree encoding read (about four million entries): a tree naming the same
    /// chunk again and again is small in storage but would expand without bound.
    static let maxTreeBytes = 512 << 20

    /// The plaintext of a chunk list (a tree's encoding).
    private func blob(_ ids: [ChunkID], object: String) async throws -> [UInt8] {
        var out: [UInt8] = []
        var total = 0
        for id in ids {
            guard let p = location[id] else {
                throw CoreError(.missing, object: "chunk \(id)",
                    "part of \(object) but in none of the packs \(snapshot) lists: the snapshot is incomplete")
            }
            let opened = try await openedPack(p)
            guard let n = opened.index[id] else {
                throw CoreError(.missing, object: "chunk \(id)", "pack \(p) does not hold it (\(object))")
            }
            // Why before decrypting: the index (format 1) or the tree (format 2) gives each chunk's length.
            total += opened.pack.version == 1 ? Int(opened.pack.entries[n].rawLength) : Int(seals[id]?.rawLength ?? 0)
            guard total <= Self.maxTreeBytes else {
                throw CoreError(.limitExceeded, object: object,
                    """
                        its encoding exceeds \(Self.maxTreeBytes >> 20) MiB: the snapshot is damaged or was made to \
                        exhaust memory
                        """)
            }
            out += try opened.pack.chunk(opened.pack.entries[n], seal: seals[id], chunkIDKey: chunkIDKey,
                                         decompressor: decompressor)
        }
        return out
    }

    func loadTree(_ ids: [ChunkID], path: [UInt8]) async throws -> Tree {
        let object = path.isEmpty ? "root tree of \(snapshot)" : "tree of \(printable(path)) in \(snapshot)"
        return learnSeals(try TreeCodec.decode(try await blob(ids, object: object), object: object))
    }

    func root() async throws -> Tree {
        if let rootTree { return rootTree }
        let root = try manifest.openRootRefs(readKey: readKey)
        learnSeals(root.ids, root.seals)
        let t = try await loadTree(root.ids, path: [])
        rootTree = t
        return t
    }

    /// The node at `path` (relative to the snapshot root), through directories only.
    func findNode(_ path: [UInt8]) async throws -> Node? {
        let parts = path.split(separator: 0x2f, omittingEmptySubsequences: false).map(Array.init)
        guard !parts.isEmpty, parts.allSatisfy(TreeCodec.isSafeName) else { return nil }
        var t = try await root()
        var walked: [UInt8] = []
        for (k, name) in parts.enumerated() {
            guard let n = t[name] else { return nil }
            if k == parts.count - 1 { return n }
            guard n.type == .directory else { return nil }
            walked += (walked.isEmpty ? [] : [0x2f]) + name
            t = try await loadTree(n.subtree, path: walked)
        }
        return nil
    }

    /// The plaintext of one content chunk of `node` (at `path`), checked against its ID
    /// and seal: what `dump` streams.
    func contentChunk(_ id: ChunkID, path: [UInt8]) async throws -> [UInt8] {
        guard let p = location[id] else {
            throw CoreError(.missing, object: "chunk \(id)",
                "needed by file \(printable(path)) but in none of the packs \(snapshot) lists")
        }
        let opened = try await openedPack(p)
        guard let n = opened.index[id] else {
            throw CoreError(.missing, object: "chunk \(id)", "pack \(p) does not hold it (\(printable(path)))")
        }
        return try opened.pack.chunk(opened.pack.entries[n], seal: seals[id], chunkIDKey: chunkIDKey,
                                     decompressor: decompressor)
    }

    // MARK: - list

    func list(subpath: [UInt8]?, recursive: Bool, _ body: (ListedEntry) throws -> Void) async throws {
        try await locateChunks()
        var path = SnapshotLayout.snapshotPath(of: subpath ?? [], in: manifest)
        let top: Tree
        if path.isEmpty {
            top = try await root()
        } else {
            guard let node = try await findNode(path) else {
                throw ArchiveError(.notFound, object: printable(path), "no such entry in \(snapshot)")
            }
            guard node.type == .directory else { return try body(ListedEntry(path: path, node: node)) }
            top = try await loadTree(node.subtree, path: path)
        }
        // One path buffer, grown and cut back as the walk goes down and up: a deep tree
        // costs its depth, not depth × path length.
        var stack: [(nodes: [Node], next: Int, length: Int)] = [(top.nodes, 0, path.count)]
        while let last = stack.indices.last {
            try Task.checkCancellation()
            guard stack[last].next < stack[last].nodes.count else { stack.removeLast(); continue }
            let n = stack[last].nodes[stack[last].next]
            stack[last].next += 1
            path.removeSubrange(stack[last].length...)
            if !path.isEmpty { path.append(0x2f) }
            path += n.name
            try body(ListedEntry(path: path, node: n))
            if recursive, n.type == .directory {
                stack.append((try await loadTree(n.subtree, path: path).nodes, 0, path.count))
            }
        }
    }

    // MARK: - plan

    /// Reads the trees of what `filter` selects into `tree.items`, parents before their
    /// entries. `given` are the paths as the user gave them, for errors.
    private func plan(given: [[UInt8]]) async throws {
        for (p, user) in zip(filter.paths, given) where !p.isEmpty {
            guard try await findNode(p) != nil else {
                throw ArchiveError(.notFound, object: printable(user), """
                    no such entry in \(snapshot)\(p == user ? "" : " (looked for \(printable(p)) below its root)"); \
                    `redoubt ls` lists what it holds
                    """)
            }
        }
        var stack: [(parent: Int, node: Node, path: [UInt8], onTheWay: Bool)] = try await root().nodes.reversed().map {
            (-1, Self.planned($0), $0.name, false)
        }
        while let e = stack.popLast() {
            let place = filter.place(e.path)
            if place == .outside || (place == .inside && filter.excluded(e.path, name: e.node.name)) { continue }
            let i = tree.items.count
            var item = RestoreItem(parent: e.parent, name: e.node.name, node: e.node)
            item.onTheWay = place == .onTheWay
            tree.items.append(item)
            guard e.node.type == .directory else { continue }
            report(entry: i)
            let t: Tree
            do { t = try await loadTree(e.node.subtree, path: e.path) } catch let error as CoreError where skipDamaged {
                damaged.append(DamagedEntry(path: e.path, error: error))
                continue
            }
            for child in t.nodes.reversed() {
                // A file's path is for the filter only (a directory's also names its tree).
                let path = child.type == .directory || filter.readsPaths ? e.path + [0x2f] + child.name : []
                stack.append((i, Self.planned(child), path, false))
            }
        }
        if filter.hasIncludes {
            // An entry is kept if it or a directory above it matches, and so is every
            // directory on the way to a kept entry.
            var keep = [Bool](repeating: false, count: tree.items.count)
            for i in tree.items.indices {
                let it = tree.items[i]
                keep[i] = (!it.onTheWay && filter.included(tree.path(i), name: it.name))
                    || (it.parent >= 0 && keep[it.parent] && !tree.items[it.parent].onTheWay)
            }
            for i in tree.items.indices.reversed() where keep[i] && tree.items[i].parent >= 0 {
                keep[tree.items[i].parent] = true
            }
            for i in tree.items.indices where !keep[i] { tree.items[i].skipped = true }
        }
        var files: UInt64 = 0, bytes: UInt64 = 0
        for it in tree.items where !it.skipped && it.node.type == .file {
            files += 1
            bytes += it.node.size
        }
        report(force: true) { $0.filesTotal = files; $0.bytesTotal = bytes }
        // The plan grew by doubling as the trees were read and is not copied to its exact
        // size: the capacity past its last item was never written, so it is not resident
        // (a copy held both arrays at once, and took time).
    }

    /// A node as the plan keeps it, without what the restore never reads again: owners are
    /// set by number, and chunk seals were recorded in `seals` as the tree was read. Each of
    /// these is an allocation per entry, held for the whole restore.
    private static func planned(_ node: Node) -> Node {
        var n = node
        n.user = []
        n.group = []
        n.contentSeals = []
        n.subtreeSeals = []
        return n
    }

    /// Maps each hard link to the file item it links to. A link whose first name is not
    /// being restored (a subpath restore) becomes a copy of that file.
    private var hardLinkTargets: [Int: Int] = [:]

    private func resolveHardLinks() async throws {
        let links = tree.items.indices.filter { tree.items[$0].node.type == .hardlink && !tree.items[$0].skipped }
        guard !links.isEmpty else { return }
        // Only the files links name: paths are not kept per entry.
        let targets = Set(links.map { tree.items[$0].node.linkTarget })
        var files: [[UInt8]: Int] = [:]
        for (i, it) in tree.items.enumerated() where it.node.type == .file && !it.skipped {
            let path = tree.path(i)
            if targets.contains(path) { files[path] = i }
        }
        for i in links {
            let target = tree.items[i].node.linkTarget
            if let f = files[target] {
                hardLinkTargets[i] = f
                continue
            }
            // Why: the target is looked up through directories of the snapshot only, never
            // through a symlink, so a link cannot reach a file outside the snapshot.
            if let n = try await findNode(target), n.type == .file {
                var node = Self.planned(n)
                node.name = tree.items[i].name
                tree.items[i].node = node
                files[target] = i
                status.filesTotal = (status.filesTotal ?? 0) + 1
                status.bytesTotal = (status.bytesTotal ?? 0) + node.size
            } else {
                tree.items[i].skipped = true
                warnings.append(RestoreWarning(path: tree.path(i),
                    "hard link to \(printable(target)), which is not a file in \(snapshot); not restored"))
            }
        }
    }

    // MARK: - entries

    private func createEntries() throws {
        report(force: true) { $0.phase = .writing }
        placements.reserveCapacity(Int(clamping: status.filesTotal ?? 0))
        for i in tree.items.indices {
            let parent = tree.items[i].parent
            if parent >= 0 && tree.items[parent].skipped { tree.items[i].skipped = true }
            if tree.items[i].skipped { continue }
            if overwrite != .always, try keepsExisting(i) {
                tree.items[i].skipped = true
                skippedExisting += 1
                continue
            }
            switch tree.items[i].node.type {
            case .directory:
                try tree.makeDirectory(i)
                counts.directories += 1
            case .file:
                // Files with data are created at their first write (one open each).
                if tree.items[i].node.content.isEmpty { try tree.createFile(i) }
                placements.append(FilePlacement(item: i, node: tree.items[i].node))
                counts.files += 1
            default: break
            }
        }
    }

    /// Whether the overwrite policy leaves what already is at item `i`'s place. A
    /// directory is always merged into; one in the way of something else is left only by
    /// `never`.
    private func keepsExisting(_ i: Int) throws -> Bool {
        guard let st = try tree.existing(i) else { return false }
        let node = tree.items[i].node
        if node.type == .directory && st.isDirectory { return false }
        if overwrite == .never { return true }
        switch node.type {
        case .file:
            return st.fileType == ArchiveSys.typeRegular && st.size == node.size && st.mtime == node.mtime
        case .symlink:
            guard st.fileType == ArchiveSys.typeSymlink else { return false }
            return try tree.existingLinkTarget(i, sizeHint: Int(st.size)) == node.linkTarget
        default:
            return false
        }
    }

    private func makeOtherEntries() throws {
        for i in tree.items.indices where !tree.items[i].skipped {
            let node = tree.items[i].node
            switch node.type {
            case .directory, .file: continue
            case .symlink:
                try tree.makeSpecial(i, { dir, name in ArchiveSys.withCString(node.linkTarget) { symlinkat($0, dir,
                    name) } }, what: "symlink")
            case .fifo:
                try tree.makeSpecial(i, { dir, name in mkfifoat(dir, name, 0o600) }, what: "mkfifo")
            case .charDevice, .blockDevice:
                guard isRoot else {
                    tree.items[i].skipped = true
                    warnings.append(RestoreWarning(path: tree.path(i),
                        "\(node.type) not restored: creating devices needs root"))
                    continue
                }
                let kind: UInt32 = node.type == .charDevice ? ArchiveSys.typeChar : ArchiveSys.typeBlock
                try tree.makeSpecial(i, { dir, name in mknodat(dir, name, mode_t(kind | 0o600), dev_t(node.rdev)) },
                    what: "mknod")
            case .socket:
                tree.items[i].skipped = true
                warnings.append(RestoreWarning(path: tree.path(i),
                    "socket not restored: a socket is created by the program that listens on it"))
                continue
            case .hardlink:
                guard let target = hardLinkTargets[i] else { continue }
                if tree.items[target].skipped {
                    tree.items[i].skipped = true
                    warnings.append(RestoreWarning(path: tree.path(i),
                        "hard link not made: its first name \(tree.object(target)) was left as it was"))
                    continue
                }
                try tree.makeHardLink(i, to: target)
            }
            counts.other += 1
        }
    }

    // MARK: - contents

    /// Where each file's chunks go, and which packs to read in what order.
    private struct ContentPlan {
        /// Chunk → every (file, chunk index) it fills; removed once written or failed.
        var destinations: [ChunkID: [(file: Int, chunk: Int)]] = [:]
        /// Pack → the chunks wanted from it, in the order they were first needed.
        var expected: [PackID: [ChunkID]] = [:]
        /// Chunk → the files whose next offsets wait for its length.
        var waiting: [ChunkID: [Int]] = [:]
        /// The packs, in the order their first chunk is needed.
        var order: [PackID] = []
    }

    /// Writes every file's contents: plan where chunks go, then read each pack once (its
    /// chunks decrypted, decompressed and verified in the fetching task) and write here.
    private func writeContents() async throws {
        var plan = try planContents()
        // Packs opened for the trees that hold no wanted content would stay cached for the
        // whole content phase (up to the cache budget) and are never read again.
        for (id, c) in cache where plan.expected[id] == nil {
            cache[id] = nil
            cacheBytes -= c.size
        }
        status.packsTotal = plan.order.count
        status.packsDone = 0
        report(force: true)
        let prepare = Self.prepareChunks(wanted: plan.expected, chunkIDKey: chunkIDKey, seals: seals,
                                         budget: batchPlaintextBudget)
        try await forEachPack(plan.order, leavingCache: true, prepare: prepare) { id, result in
            try take(id, result, &plan)
            // Why: the batches' plaintexts are freed between the entries the plan holds for the
            // whole restore, and the pages they leave free stay resident until returned. Once
            // per pack: after every batch it held about 30 MiB less, but the restore took 0.8 s
            // longer, refaulting the pages it had returned.
            if case .success(let b) = result, !b.more { _ = mallocTrim(0) }
        }
        try finishContents()
    }

    /// The first step: each chunk's destinations and pack. Files without content are
    /// finished here; a chunk in no pack, or in a pack known damaged, damages its file.
    private func planContents() throws -> ContentPlan {
        var plan = ContentPlan()
        for f in placements.indices {
            if placements[f].chunks.isEmpty {
                if placements[f].expected != 0 {
                    try damage(tree.path(placements[f].item), CoreError(.corrupt,
                        object: fileObject(placements[f].item),
                        "has no content but a size of \(placements[f].expected) bytes"))
                }
                try finishedFile(f)
                continue
            }
            for (k, c) in placements[f].chunks.enumerated() {
                guard let p = location[c] else {
                    placements[f].damaged = true
                    try damage(tree.path(placements[f].item), CoreError(.missing, object: "chunk \(c)",
                        """
                            needed by file \(printable(tree.path(placements[f].item))) but in none of the packs \
                            \(snapshot) lists
                            """))
                    break
                }
                if let e = damagedPacks[p] {
                    placements[f].damaged = true
                    try damage(tree.path(placements[f].item), e)
                    break
                }
                if plan.destinations[c] == nil {
                    plan.expected[p, default: []].append(c)
                    if plan.expected[p]!.count == 1 { plan.order.append(p) }
                }
                plan.destinations[c, default: []].append((f, k))
            }
            if let w = placements[f].advance(length) { plan.waiting[w, default: []].append(f) }
        }
        return plan
    }

    /// What the fetching task runs on an opened pack: decrypts, decompresses and verifies
    /// its wanted chunks from `from` on, until `budget` plaintext bytes. It captures values
    /// only, never the session.
    private static func prepareChunks(wanted: [PackID: [ChunkID]], chunkIDKey key: ChunkIDKey,
                                      seals known: [ChunkID: ChunkSeal], budget: Int) -> Prepare {
        let positions = PackPositions()
        return { p, from in
            guard let want = wanted[p.id], from < want.count else { return ([:], from..<from, false) }
            let index = positions.index(of: p)
            var out: PreparedChunks = [:]
            let decompressor: ChunkDecompressor
            do throws(CoreError) { decompressor = try ChunkDecompressor() } catch {
                for c in want[from...] { out[c] = .failure(error) }
                return (out, from..<want.count, false)
            }
            var i = from, bytes = 0
            while i < want.count && (i == from || bytes < budget) {
                let c = want[i]
                i += 1
                guard let n = index[c] else { continue }
                let e = p.entries[n]
                let r = Result { () throws(CoreError) in
                    try p.chunk(e, seal: known[c], chunkIDKey: key, decompressor: decompressor)
                }
                if case .success(let data) = r { bytes += data.count }
                out[c] = r
            }
            positions.keep(index, of: p.id, more: i < want.count)
            return (out, from..<i, i < want.count)
        }
    }

    /// One batch of one pack, in pack order: learn lengths, write its chunks, then what
    /// waited for those lengths. A pack that failed damages every file it feeds (or ends
    /// the restore without `skipDamaged`).
    private func take(_ id: PackID, _ result: PackResult, _ plan: inout ContentPlan) throws {
        let batch: PackBatch
        switch result {
        case .success(let b): batch = b
        case .failure(let e as CoreError):
            guard skipDamaged else { throw e }
            for c in plan.expected[id] ?? [] {
                try damageFiles(plan.destinations.removeValue(forKey: c) ?? []) { _ in e }
            }
            report { $0.packsDone += 1 }
            return
        case .failure(let e): throw e
        }
        let touched = batch.isFirst ? learnLengths(batch.pack, &plan) : []
        try writeChunks(batch, of: id, &plan)
        try writeDeferred(touched)
        if !batch.more { report { $0.packsDone += 1 } }
    }

    /// The pack's index gives every chunk's length: offsets further into files are known.
    /// Returns the files that learned one.
    private func learnLengths(_ pack: OpenedPack, _ plan: inout ContentPlan) -> [Int] {
        var touched: [Int] = []
        for e in pack.entries where pack.version == 1 && lengths[e.chunkID] == nil {
            lengths[e.chunkID] = Int(e.rawLength)
        }
        for e in pack.entries {
            guard let ws = plan.waiting.removeValue(forKey: e.chunkID) else { continue }
            for f in ws {
                if let w = placements[f].advance(length) { plan.waiting[w, default: []].append(f) }
                touched.append(f)
            }
        }
        return touched
    }

    /// Writes each chunk of the batch where its offset is known, and spills it for the
    /// places whose offset is not known yet; a chunk that failed or is missing damages its files.
    private func writeChunks(_ batch: PackBatch, of id: PackID, _ plan: inout ContentPlan) throws {
        for c in (plan.expected[id] ?? [])[batch.range] {
            guard let ds = plan.destinations.removeValue(forKey: c) else { continue }
            let live = ds.filter { !placements[$0.file].damaged }
            if live.isEmpty { continue }
            switch batch.plain[c] {
            case .success(let data):
                for d in live {
                    if d.chunk < placements[d.file].known {
                        try data.withUnsafeBytes { try write(d.file, d.chunk, $0) }
                    } else {
                        try data.withUnsafeBytes { try spill.put(c, $0) }
                        deferred[d.file, default: []].append(d.chunk)
                    }
                }
            case .failure(let error):
                try damageFiles(live) { _ in error }
            case nil:
                // The catalog placed the chunk here, but the pack does not hold it.
                try damageFiles(live) { f in
                    CoreError(.missing, object: "chunk \(c)",
                        """
                            not in pack \(id), where the repository said it is; needed by \
                            \(printable(tree.path(placements[f].item)))
                            """)
                }
            }
        }
    }

    /// Marks the file of each destination damaged, once per file, by `error(file)`.
    private func damageFiles(_ ds: [(file: Int, chunk: Int)], _ error: (Int) -> CoreError) throws {
        for d in ds where !placements[d.file].damaged {
            placements[d.file].damaged = true
            try damage(tree.path(placements[d.file].item), error(d.file))
        }
    }

    /// Writes the spilled chunks of `files` whose offsets are now known.
    private func writeDeferred(_ files: [Int]) throws {
        for f in files {
            guard let ks = deferred[f], !placements[f].damaged else { continue }
            var still: [Int] = []
            for k in ks {
                if k < placements[f].known {
                    let data = try spill.read(placements[f].chunks[k])
                    try data.withUnsafeBytes { try write(f, k, $0) }
                } else {
                    still.append(k)
                }
            }
            deferred[f] = still.isEmpty ? nil : still
        }
    }

    /// The last step: a file still missing chunks is damaged; every file, damaged ones too
    /// (they stay, incomplete, and are listed), gets its metadata.
    private func finishContents() throws {
        for f in placements.indices where !placements[f].damaged && placements[f].chunksLeft > 0 {
            try damage(tree.path(placements[f].item), CoreError(.missing,
                object: fileObject(placements[f].item),
                                            "\(placements[f].chunksLeft) of its chunks were not found in the packs"))
        }
        for f in placements.indices where !tree.items[placements[f].item].metadataDone {
            try finishedFile(f)
        }
    }

    /// Writes chunk `k` of file `f` at its offset (into the data regions of a sparse file).
    private func write(_ f: Int, _ k: Int, _ data: UnsafeRawBufferPointer) throws {
        let placement = placements[f]
        let start = placement.offsets[k]
        let (end, overflow) = start.addingReportingOverflow(UInt64(data.count))
        guard !overflow, end <= placement.expected else {
            placements[f].damaged = true
            try damage(tree.path(placement.item), CoreError(.corrupt,
                object: fileObject(placement.item),
                                            """
                                                its chunks hold more than the \(placement.expected) bytes its tree \
                                                entry gives
                                                """))
            return
        }
        let fd = try tree.file(placement.item)
        for r in placement.fileRanges(contentOffset: start, length: data.count) {
            let from = Int(r.content - start)
            let e = ArchiveSys.pwriteAll(fd, UnsafeRawBufferPointer(rebasing: data[from..<(from + r.length)]),
                at: r.file)
            if e != 0 { throw ArchiveError.system("writing", object: printable(tree.path(placement.item)), errno: e) }
        }
        placements[f].chunksLeft -= 1
        status.bytesDone += UInt64(data.count)
        if placements[f].chunksLeft == 0 {
            // All lengths are known now: the chunks must add up to what the tree says.
            let last = placement.chunks.count - 1
            let total = placements[f].offsets[last] + UInt64(length(placement.chunks[last]) ?? 0)
            if total != placement.expected {
                placements[f].damaged = true
                try damage(tree.path(placement.item), CoreError(.corrupt,
                    object: fileObject(placement.item),
                                                """
                                                    its chunks hold \(total) bytes, its tree entry says \
                                                    \(placement.expected)
                                                    """))
            }
            try finishedFile(f)
        }
    }

    /// A file is written: its metadata is set through its fd, then it is closed.
    private func finishedFile(_ f: Int) throws {
        let i = placements[f].item
        try setMetadata(fd: try tree.file(i), item: i)
        tree.closeFile(i)
        try tree.commitFile(i)
        report(entry: i) { $0.filesDone += 1 }
    }

    /// Owner, extended attributes, mode and times of an open file, in that order (chown
    /// clears setuid/setgid and capabilities; the mode comes after the ACL).
    private func setMetadata(fd: Int32, item i: Int) throws {
        let item = tree.items[i]
        let node = item.node
        let ownerIsFinal = item.createdAs.map { $0.uid == node.uid && $0.gid == node.gid } ?? false
        if isRoot && !ownerIsFinal && fchown(fd, node.uid, node.gid) != 0 {
            warnings.append(RestoreWarning(path: tree.path(i),
                "owner \(node.uid):\(node.gid) not set: \(ArchiveSys.describe(errno: Glibc.errno))"))
        }
        if !node.xattrs.isEmpty {
            // No fsetxattr is importable here; the name in the open parent is the file
            // this fd has open (checked by inode when it was opened).
            let parent = try tree.directory(item.parent)
            let name = tree.currentName(i)
            let path = ArchiveSys.procPath(dirfd: parent, name: name)
                ?? (tree.targetPath + [0x2f] + tree.path(i).dropLast(item.name.count) + name)
            for x in node.xattrs {
                let e = ArchiveSys.setXattr(path, x)
                if e != 0 { xattrWarning(i, x, errno: e) }
            }
        }
        // An ACL set above moves the group bits, so the mode is set again after one.
        let modeIsFinal = node.xattrs.isEmpty && item.createdAs?.permissions == node.mode & 0o7777
        if !modeIsFinal && fchmod(fd, mode_t(node.mode)) != 0 {
            warnings.append(RestoreWarning(path: tree.path(i),
                "mode \(String(node.mode, radix: 8)) not set: \(ArchiveSys.describe(errno: Glibc.errno))"))
        }
        var times = [ArchiveSys.timespec(node.atime), ArchiveSys.timespec(node.mtime)]
        if futimens(fd, &times) != 0 {
            warnings.append(RestoreWarning(path: tree.path(i),
                "times not set: \(ArchiveSys.describe(errno: Glibc.errno))"))
        }
        tree.items[i].metadataDone = true
    }

    private func xattrWarning(_ i: Int, _ x: ExtendedAttribute, errno e: Int32) {
        let privileged = x.name.starts(with: Array("system.".utf8)) || x.name.starts(with: Array("security.".utf8))
            || x.name.starts(with: Array("trusted.".utf8))
        let hint = privileged && !isRoot ? " (needs root)" : ""
        warnings.append(RestoreWarning(path: tree.path(i),
            "extended attribute \(printable(x.name)) not set\(hint): \(ArchiveSys.describe(errno: e))"))
    }

    // MARK: - metadata

    /// Owners, extended attributes, modes and times: everything but directories in walk
    /// order, then directories deepest first, so writing into a directory never moves
    /// its times afterwards and a read-only directory is closed last.
    private func applyMetadata() throws {
        for i in tree.items.indices where !tree.items[i].skipped && !tree.items[i].metadataDone
            && tree.items[i].node.type != .directory && tree.items[i].node.type != .hardlink {
            try setMetadata(i)
        }
        for i in tree.items.indices.reversed() where tree.items[i].node.type == .directory && !tree.items[i].skipped {
            try setMetadata(i)
        }
    }

    private func setMetadata(_ i: Int) throws {
        let item = tree.items[i]
        let node = item.node
        let parent = try tree.directory(item.parent)
        try ArchiveSys.withCString(item.name) { (name: UnsafePointer<CChar>) throws in
            // The owner first: chown clears setuid/setgid and file capabilities.
            if isRoot && fchownat(parent, name, node.uid, node.gid, ArchiveSys.atSymlinkNoFollow) != 0 {
                warnings.append(RestoreWarning(path: tree.path(i),
                    "owner \(node.uid):\(node.gid) not set: \(ArchiveSys.describe(errno: Glibc.errno))"))
            }
            if !node.xattrs.isEmpty {
                let path = ArchiveSys.procPath(dirfd: parent, name: item.name) ?? (tree.targetPath + [0x2f]
                    + tree.path(i))
                for x in node.xattrs {
                    let e = ArchiveSys.setXattr(path, x)
                    if e != 0 { xattrWarning(i, x, errno: e) }
                }
            }
            // Symlinks have no mode of their own on Linux.
            if node.type != .symlink && fchmodat(parent, name, mode_t(node.mode), ArchiveSys.atSymlinkNoFollow) != 0 {
                warnings.append(RestoreWarning(path: tree.path(i),
                    "mode \(String(node.mode, radix: 8)) not set: \(ArchiveSys.describe(errno: Glibc.errno))"))
            }
            var times = [ArchiveSys.timespec(node.atime), ArchiveSys.timespec(node.mtime)]
            if utimensat(parent, name, &times, ArchiveSys.atSymlinkNoFollow) != 0 {
                warnings.append(RestoreWarning(path: tree.path(i),
                    "times not set: \(ArchiveSys.describe(errno: Glibc.errno))"))
            }
        }
    }
}

extension OpenedPack {
    /// Where each chunk is in the pack's index. A pack naming a chunk twice is read at its
    /// first place, wherever the restore reads it (trees or contents).
    func positions() -> [ChunkID: Int] {
        var index: [ChunkID: Int] = [:]
        index.reserveCapacity(entries.count)
        for (n, e) in entries.enumerated() where index[e.chunkID] == nil { index[e.chunkID] = n }
        return index
    }
}

/// Each pack's chunk index, built at its first batch and dropped after its last: a pack of
/// small files' chunks holds thousands and is prepared in many batches, which built it again
/// each time. Batches of one pack run one after another, never at once.
private final class PackPositions: Sendable {
    private let byPack = Mutex<[PackID: [ChunkID: Int]]>([:])

    func index(of p: OpenedPack) -> [ChunkID: Int] {
        byPack.withLock({ $0[p.id] }) ?? p.positions()
    }

    func keep(_ index: [ChunkID: Int], of id: PackID, more: Bool) {
        byPack.withLock { $0[id] = more ? index : nil }
    }
}

/// glibc's `malloc_trim` (not in the Glibc module): returns the free pages of every arena.
@_silgen_name("malloc_trim") private func mallocTrim(_ pad: Int) -> Int32

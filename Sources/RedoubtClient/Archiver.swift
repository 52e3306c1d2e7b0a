import Glibc
import Logging
import RedoubtCore

/// Backs up local paths into a repository as one snapshot.
///
/// **Snapshot root layout.** Each path in ``BackupOptions/paths``, made absolute and
/// normalised lexically, is kept whole below the root tree (manifest version 3): `/a/x`
/// and `/b/x` are `a/x` and `b/x`, the directories on the way (`a`, `b`) are stored with
/// their own metadata, and `/` puts its entries at the root. A path given twice, or inside
/// another path given, is walked once. The manifest's public header keeps the paths as
/// given, in order. Hard links name their first file by its path below the root
/// (`b/x/sub/file`). See ``SnapshotLayout``.
///
/// **What is stored.** Every entry below the paths (minus exclusions), never following a
/// symlink: names as raw bytes, all eight node types, `mode & 07777`, owner and group
/// (ids and names), the three times with nanoseconds, symlink targets, device numbers,
/// extended attributes (POSIX ACLs included), hard links (the first name seen in walk
/// order is the file, later names are `.hardlink` entries), and sparse files as their
/// data regions only.
///
/// **How.** The walk, the reading and the trees run together, so that what the backup
/// holds does not grow with the tree (``SnapshotBuilder``): each directory's files are
/// numbered as it is listed; files found unchanged in the ``MetadataCache`` are reused
/// once their chunks are confirmed in the repository (asked in batches), and the rest are
/// read by ``BackupOptions/workers`` workers in parallel: each reads windows of 1 MiB into
/// a reused buffer, cuts chunks, names a chunk the cache knows (by its keyed plaintext
/// hash, for changed files) from the cache and otherwise compresses and seals it once
/// (format 2: the ID is the hash of the sealed bytes), asks the repository about batches
/// of up to 1000 chunks or 8 MiB, packs the chunks nobody holds into its own pack and
/// uploads finished packs (at most one in flight per worker, sent from an unnamed file in
/// ``BackupOptions/spoolDirectory`` while the next pack fills the same memory:
/// ``SpooledPack``). A directory's tree is stored as soon as its files and subdirectories
/// are (so unchanged trees deduplicate), the next metadata cache is written beside the
/// old one as files finish, the manifest is signed and committed, and only then does the
/// new cache replace the old.
public final class Archiver: Sendable {
    private let logger: Logger
    let hooks: ArchiverTestHooks

    public init(logger: Logger = Logger(label: "redoubt.backup")) {
        self.logger = logger
        hooks = ArchiverTestHooks()
    }

    init(logger: Logger = Logger(label: "redoubt.backup"), hooks: ArchiverTestHooks) {
        self.logger = logger
        self.hooks = hooks
    }

    /// Backs up `options.paths` and commits one snapshot.
    ///
    /// `target` should be a ``PackLocatingBackupTarget``; a plain ``BackupTarget`` cannot
    /// say which packs hold the chunks it already has, so then nothing is deduplicated
    /// against the repository (only within this backup) and a warning says so.
    /// `now` is the snapshot's time. `progress` is called from worker tasks, at most
    /// about every 100 ms plus once per phase. Throws ``ArchiveError`` if a path cannot
    /// be backed up at all, and passes through errors of the target and of sealing;
    /// problems with single entries become ``BackupResult/warnings``.
    public func run(options: BackupOptions, keys: WriteKeySet, target: any BackupTarget, now: Timestamp,
                    progress: @escaping @Sendable (BackupProgress) -> Void = { _ in }) async throws -> BackupResult {
        guard options.paths.isEmpty == (options.stream != nil) else {
            throw ArchiveError(.invalidArgument, object: "backup",
                options.stream == nil ? "no paths given" : "a stream is backed up alone, without paths")
        }
        var warnings: [BackupWarning] = []
        let locating: any PackLocatingBackupTarget
        if let t = target as? any PackLocatingBackupTarget {
            locating = t
        } else {
            locating = UnlocatedTarget(base: target)
            warnings.append(BackupWarning(.other, path: [],
                "the repository cannot say which packs hold existing chunks; every chunk of this backup is uploaded "
                    + "again"))
        }
        let run = BackupRun(target: locating, material: keys.shared, options: options, hooks: hooks,
            onProgress: progress)

        // 1. The walk, on its own thread: it needs nothing of the cache, which loads meanwhile.
        var absolute: [[UInt8]] = []
        for p in options.paths { absolute.append(try SnapshotLayout.absolute(p)) }
        let legacy = hooks.legacyLayout
        let plan = SnapshotLayout.walkPlan(absolute, legacy: legacy)
        // A command's output is one file at the top level, named as the job says.
        var walker = try options.stream.map { s throws(ArchiveError) in try Walker.stream(name: s.name, now: now) }
            ?? Walker(paths: plan.paths, names: plan.names, snapshotPaths: plan.snapshotPaths,
                      excludes: options.excludes)
        walker.excludeCaches = options.excludeCaches
        walker.oneFileSystem = options.oneFileSystem
        walker.fileXattrsFromReader = true
        let walk = WalkAhead(walker)
        defer { walk.stop() }

        // 2. The cache of the last snapshot, and the next one, written as files finish.
        var cache = MetadataCache()
        var writer: MetadataCacheWriter? = nil
        if let path = options.cachePath {
            let loaded = MetadataCache.load(path: path, chunkIDKey: keys.shared.chunkIDKey)
            cache = loaded.cache
            if let problem = loaded.problem {
                warnings.append(BackupWarning(.cache, path: Array(path.utf8),
                    "metadata cache ignored (\(problem)); every file is read"))
            }
            do { writer = try MetadataCacheWriter(path: path, chunkIDKey: keys.shared.chunkIDKey) } catch {
                warnings.append(BackupWarning(.cache, path: Array(path.utf8),
                    "metadata cache not saved: \(error); the next backup reads every file"))
            }
        }

        // 3. Read and store trees as the walk lists them.
        run.progress(force: true) { $0 = BackupProgress(phase: .reading) }
        let workers = max(1, min(options.workers, 16))
        let queue = JobQueue()
        let builder = try SnapshotBuilder(run: run, queue: queue, cache: cache, writer: writer,
                                          streamFD: options.stream?.fd)
        (cache, writer) = (MetadataCache(), nil)
        var storedAncestors: [Node] = []
        typealias Stored = (root: [ChunkID], seals: [ChunkSeal], activity: Task<SnapshotActivity, Never>)
        let stored: Stored = try await withThrowingTaskGroup(of: Void.self) { readers in
            let (outcomes, sink) = AsyncThrowingStream.makeStream(of: FileOutcome.self)
            defer { queue.close() }
            for _ in 0..<workers {
                readers.addTask {
                    do { try await Self.workerLoop(run: run, queue: queue, outcomes: sink) } catch {
                        sink.finish(throwing: error)
                        throw error
                    }
                }
            }
            let stored = try await withThrowingTaskGroup(of: UploadedPack.self) { uploads -> Stored in
                var iterator = outcomes.makeAsyncIterator()
                while let event = try await walk.next() { try await builder.take(event, &iterator, &uploads) }
                guard let walked = walk.finished else {
                    throw ArchiveError(.inconsistentSnapshot, object: "backup", "the walk did not end (internal error)")
                }
                walker = walked
                let (files, bytes) = (walker.filesFound, walker.bytesFound)
                run.progress(force: true) { $0.filesTotal = files; $0.bytesTotal = bytes }
                try await builder.finish(&iterator, &uploads)
                let activity = builder.activity()
                // Every file's outcome is in, so no job comes any more: the readers flush their
                // last batches and packs while the top trees are stored and the tree pack is sent.
                queue.close()
                run.progress(force: true) { $0.phase = .trees }
                guard let top = builder.top else {
                    throw ArchiveError(.inconsistentSnapshot, object: "backup", "the walk did not end (internal error)")
                }
                let (root, seals) = try await storeRoot(top, walker: &walker, legacy: legacy, builder: builder,
                                                        ancestors: &storedAncestors, &uploads)
                try await builder.finishTrees(&uploads)
                return (root, seals, activity)
            }
            try await readers.waitForAll()
            return stored
        }
        let (root, rootSeals) = (stored.root, stored.seals)
        warnings += walker.warnings
        warnings += builder.warnings
        // Why here: a command that failed may have written a truncated dump; nothing is committed.
        if let s = options.stream {
            if let why = builder.streamFailure { throw ArchiveError(.io, object: s.name, why) }
            try await s.finished()
        }

        // 4. The packs this snapshot needs: every chunk it references, located.
        let registry = run.registry.withLock { $0 }
        var packs = Set(registry.uploaded).union(registry.referencedPacks)
        for c in registry.referencedUnlocated {
            guard let p = registry.location[c] else {
                throw ArchiveError(.inconsistentSnapshot, object: "chunk \(c)",
                    "referenced by the snapshot but neither uploaded nor reported by the repository (internal error)")
            }
            packs.insert(p)
        }
        var stats = builder.stats
        stats.directories += UInt64(storedAncestors.count)
        let status = run.status.withLock { $0.report }
        stats.bytesRead = status.bytesRead
        stats.bytesUploaded = status.bytesUploaded
        stats.chunksNew = registry.chunksNew
        stats.chunksReused = registry.chunksReused

        let activity = await stored.activity.value
        builder.releaseCache()

        // 7. Sign and commit.
        run.progress(force: true) { $0.phase = .committing }
        var rng = SystemRandomNumberGenerator()
        let nonce = (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let paths = options.stream.map { [Array($0.name.utf8)] } ?? options.paths.map { Array($0.utf8) }
        let header = ManifestHeader(tenant: keys.tenant, readKeyID: keys.shared.readPublicKey.keyID, host: keys.host,
                                    hostKey: keys.signingKey.publicKey, time: now, nonce: nonce,
                                    paths: paths, tags: options.tags, statistics: stats,
                                    packs: packs.sorted(), clientVersion: RedoubtVersion.string,
                                    activity: legacy ? nil : activity)
        let manifest = try Manifest.create(header: header, root: root, rootSeals: rootSeals,
                                           version: legacy ? 2 : Manifest.version,
                                           readPublicKey: keys.shared.readPublicKey, signingKey: keys.signingKey)
        let builderWarnings = builder.warnings.count
        try await locating.commit(manifest: manifest)
        logger.info("snapshot committed", metadata: ["snapshot": "\(manifest.id)", "packs": "\(packs.count)",
            "uploaded": "\(registry.uploaded.count)"])

        // 8. Only a committed snapshot may seed the next backup's cache.
        builder.commitCache()
        warnings += builder.warnings.suffix(from: builderWarnings)
        run.progress(force: true) { $0.phase = .done; $0.currentPath = "" }
        return BackupResult(manifest: manifest, statistics: stats, filesNew: builder.filesNew,
                            filesChanged: builder.filesChanged, filesUnchanged: builder.filesUnchanged,
                            bytesRead: stats.bytesRead, bytesUploaded: stats.bytesUploaded,
                                packsUploaded: registry.uploaded.count, warnings: warnings)
    }

    /// The root tree: the top-level entries, each below the directories on its way (stored
    /// with their own metadata, deepest first), or, for `/`, its entries.
    private func storeRoot(_ top: WalkDirectory, walker: inout Walker, legacy: Bool, builder: SnapshotBuilder,
                           ancestors stored: inout [Node], _ uploads: inout UploadGroup) async throws
        -> ([ChunkID], [ChunkSeal]) {
        // The directories on the way to each path, by their path below the root.
        var ancestors: [[UInt8]: Node] = [:]
        if !legacy {
            for i in top.entries.indices {
                let parts = top.topPaths[i].full.split(separator: 0x2f).map(Array.init)
                for k in parts.indices.dropLast() where ancestors[Array(parts[...k].joined(separator: [0x2f]))] == nil {
                    let rel = Array(parts[...k].joined(separator: [0x2f]))
                    ancestors[rel] = try walker.ancestorNode([0x2f] + rel)
                }
            }
        }
        // Each directory's entries by its path below the root ([]: the root itself).
        var members: [[UInt8]: [Node]] = [:]
        for i in top.entries.indices where !top.entries[i].omitted {
            let snapshotPath = top.topPaths[i].snapshot
            if snapshotPath.isEmpty {
                members[[], default: []] += builder.rootEntries
            } else {
                let parent = Array(snapshotPath.split(separator: 0x2f).dropLast().joined(separator: [0x2f]))
                members[parent, default: []].append(top.entries[i].node)
            }
        }
        // Deepest first, so a directory's subtree is stored before the node that names it.
        func depth(_ p: [UInt8]) -> Int { p.reduce(0) { $0 + ($1 == 0x2f ? 1 : 0) } }
        for path in ancestors.keys.sorted(by: { depth($0) > depth($1) }) where members[path] != nil {
            var node = ancestors[path]!
            (node.subtree, node.subtreeSeals) = try await builder.addTree(members[path] ?? [], &uploads)
            stored.append(node)
            let parent = Array(path.split(separator: 0x2f).dropLast().joined(separator: [0x2f]))
            members[parent, default: []].append(node)
        }
        return try await builder.addTree(members[[]] ?? [], &uploads)
    }

    /// One worker: reads the next file until the queue is closed, then flushes.
    private static func workerLoop(run: BackupRun, queue: JobQueue,
                                   outcomes: AsyncThrowingStream<FileOutcome, any Error>.Continuation) async throws {
        let worker = try BackupWorker(run: run)
        try await withThrowingTaskGroup(of: UploadedPack.self) { uploads in
            while let job = await queue.next() {
                outcomes.yield(try await worker.process(job, &uploads))
            }
            try Task.checkCancellation()
            try await worker.finish(&uploads)
        }
    }
}

/// Wraps a target that cannot locate chunks: it reports none, so everything is sealed.
struct UnlocatedTarget: PackLocatingBackupTarget {
    let base: any BackupTarget
    func existingChunks(_ ids: [ChunkID]) async throws -> Set<ChunkID> { [] }
    func existingChunkLocations(_ ids: [ChunkID]) async throws -> [ChunkID: PackID] { [:] }
    func upload(pack: FinishedPack) async throws { try await base.upload(pack: pack) }
    func commit(manifest: Manifest) async throws { try await base.commit(manifest: manifest) }
}

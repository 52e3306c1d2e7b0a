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
/// **How.** The paths are walked first (so totals are known), files found unchanged in
/// the ``MetadataCache`` are reused after their chunks are confirmed in the repository,
/// and the rest are read by ``BackupOptions/workers`` workers in parallel: each reads
/// windows of 16 MiB into a reused buffer, cuts chunks, names a chunk the cache knows (by
/// its keyed plaintext hash, for changed files) from the cache and otherwise compresses
/// and seals it once (format 2: the ID is the hash of the sealed bytes), asks the
/// repository about batches of up to 1000 chunks or 32 MiB, packs the chunks nobody holds
/// into its own pack and uploads finished packs (at most one in flight per worker, sent
/// from an unnamed file in ``BackupOptions/spoolDirectory`` while the next pack fills the
/// same memory: ``SpooledPack``).
/// Directory trees are then encoded bottom-up and stored the same way (so unchanged trees
/// deduplicate), the manifest is signed and committed, and only then is the metadata cache
/// replaced.
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

        // 1. The cache of the last snapshot.
        var cache = MetadataCache()
        if let path = options.cachePath {
            let loaded = MetadataCache.load(path: path, chunkIDKey: keys.shared.chunkIDKey)
            cache = loaded.cache
            if let problem = loaded.problem {
                warnings.append(BackupWarning(.cache, path: Array(path.utf8),
                    "metadata cache ignored (\(problem)); every file is read"))
            }
        }

        // 2. Walk.
        var absolute: [[UInt8]] = []
        for p in options.paths { absolute.append(try SnapshotLayout.absolute(p)) }
        var walker = Walker(excludes: options.excludes) { count, path in
            run.progress { $0.filesDone = UInt64(count); $0.currentPath = printable(path) }
        }
        walker.excludeCaches = options.excludeCaches
        walker.oneFileSystem = options.oneFileSystem
        let legacy = hooks.legacyLayout
        let plan = SnapshotLayout.walkPlan(absolute, legacy: legacy)
        // A command's output is one file at the top level, named as the job says.
        var walk = try options.stream.map { s throws(ArchiveError) in try WalkResult.stream(name: s.name, now: now) }
            ?? walker.walk(paths: plan.paths, names: plan.names, snapshotPaths: plan.snapshotPaths)
        warnings += walk.warnings
        // The directories on the way to each path, by their path below the root.
        var ancestors: [[UInt8]: Node] = [:]
        if !legacy {
            for i in walk.topLevel {
                let parts = walk.entries[i].fullPath.split(separator: 0x2f).map(Array.init)
                for k in parts.indices.dropLast() where ancestors[Array(parts[...k].joined(separator: [0x2f]))] == nil {
                    let rel = Array(parts[...k].joined(separator: [0x2f]))
                    ancestors[rel] = try walker.ancestorNode([0x2f] + rel)
                }
            }
        }
        let filesTotal = UInt64(walk.files.count)
        run.progress(force: true) {
            $0 = BackupProgress(phase: .checkingCache, filesTotal: filesTotal, bytesTotal: walk.bytesTotal)
        }

        // 3. Files unchanged since the cached snapshot, if the repository still has their chunks.
        var filesNew: UInt64 = 0, filesChanged: UInt64 = 0, filesUnchanged: UInt64 = 0
        var candidates: [(file: Int, entry: MetadataCache.Entry)] = []
        var jobs: [FileJob] = []
        /// Chunks of changed files' cached entries, by keyed plaintext hash.
        var cachedChunks: [ChunkID: CachedChunk] = [:]
        /// The keyed plaintext hashes of each stored file's chunks, for the next cache.
        var macs: [Int: [ChunkID]] = [:]
        /// Files under a path the cached snapshot did not have.
        var added = Set<Int>()
        for f in walk.files {
            let e = walk.entries[f]
            if let cached = cache[e.fullPath] {
                // Why the seals: a format-2 tree names each chunk with its seal; an entry
                // without them (written for format-1 chunks) is read again.
                if cached.matches(e.stat) && cached.contentSeals.count == cached.content.count {
                    candidates.append((f, cached))
                } else {
                    filesChanged += 1
                    jobs.append(FileJob(entry: f, path: e.fullPath, stat: e.stat))
                    let n = cached.content.count
                    if cached.contentMACs.count == n && cached.contentSeals.count == n {
                        for k in cached.content.indices {
                            let chunk = CachedChunk(id: cached.content[k], seal: cached.contentSeals[k])
                            cachedChunks[cached.contentMACs[k]] = chunk
                        }
                    }
                }
            } else {
                filesNew += 1
                added.insert(f)
                jobs.append(FileJob(entry: f, path: e.fullPath, stat: e.stat))
            }
        }
        var reused = Set<Int>()
        if !candidates.isEmpty {
            let missing = try await confirmInRepository(candidates.flatMap(\.entry.content), run: run)
            for c in candidates {
                if c.entry.content.contains(where: missing.contains) {
                    // Why: the repository lost (or never committed) a chunk; read the file again.
                    filesChanged += 1
                    jobs.append(FileJob(entry: c.file, path: walk.entries[c.file].fullPath,
                        stat: walk.entries[c.file].stat))
                    continue
                }
                filesUnchanged += 1
                reused.insert(c.file)
                walk.entries[c.file].node.content = c.entry.content
                walk.entries[c.file].node.contentSeals = c.entry.contentSeals
                walk.entries[c.file].node.dataRegions = c.entry.dataRegions
                macs[c.file] = c.entry.contentMACs
                run.progress { $0.filesDone += 1; $0.bytesDone += c.entry.size }
            }
            run.registry.withLock {
                $0.chunksReused += UInt64(candidates.filter { reused.contains($0.file) }.reduce(0) {
                    $0 + $1.entry.content.count
                })
            }
            // Per-file state is let go as soon as it is used: it is what grows with the tree.
            candidates = []
        }
        if !cachedChunks.isEmpty {
            // Why ask first: a chunk is named without its bytes only if the repository
            // holds it (confirmInRepository records where).
            let missing = try await confirmInRepository(cachedChunks.values.map(\.id), run: run)
            let usable = cachedChunks.filter { !missing.contains($0.value.id) }
            run.registry.withLock { $0.reusable = usable }
            cachedChunks = [:]
        }
        jobs.sort { $0.entry < $1.entry }
        if let s = options.stream { for i in jobs.indices { jobs[i].streamFD = s.fd } }

        // 4. Read the rest in parallel.
        run.progress(force: true) { $0.phase = .reading }
        // Each worker's outcomes, kept apart: joined, they would be held twice while the
        // reading ends, which is when a large tree's backup peaks.
        var outcomes: [[FileOutcome]] = []
        let workers = max(1, min(options.workers, 16))
        do {
            let jobList = jobs
            jobs = []
            try await withThrowingTaskGroup(of: [FileOutcome].self) { group in
                for _ in 0..<workers {
                    group.addTask { try await Self.workerLoop(run: run, jobs: jobList) }
                }
                for try await part in group { outcomes.append(part) }
            }
        }
        var stable = Set<Int>(reused)
        var heads: [Int: HeadSample] = [:]
        var sealedRaw: UInt64 = 0, sealedStored: UInt64 = 0
        for o in outcomes.joined() {
            if let w = o.warning { warnings.append(w) }
            heads[o.entry] = o.head
            sealedRaw += o.sealedRaw
            sealedStored += o.sealedStored
            guard let content = o.content, let st = o.stat else {
                walk.entries[o.entry].omitted = true
                continue
            }
            var node = walk.entries[o.entry].node
            node.content = content
            node.contentSeals = o.contentSeals
            macs[o.entry] = o.contentMACs
            node.dataRegions = o.dataRegions
            node.size = o.size
            node.mode = st.permissions
            node.uid = st.uid
            node.gid = st.gid
            node.mtime = st.mtime
            node.ctime = st.ctime
            node.atime = st.atime
            walk.entries[o.entry].node = node
            walk.entries[o.entry].stat = st
            if o.stable { stable.insert(o.entry) }
        }
        // Why here: a command that failed may have written a truncated dump; nothing is committed.
        if let s = options.stream {
            guard outcomes.joined().allSatisfy({ $0.content != nil }) else {
                let why = outcomes.joined().compactMap(\.warning).map(\.message).joined(separator: "; ")
                throw ArchiveError(.io, object: s.name, why)
            }
            try await s.finished()
        }
        outcomes = []
        // A hard link whose first name could not be stored has nothing to link to.
        var omittedFiles = Set<[UInt8]>()
        for f in walk.files where walk.entries[f].omitted { omittedFiles.insert(walk.entries[f].snapshotPath) }
        if !omittedFiles.isEmpty {
            for i in walk.entries.indices where walk.entries[i].node.type == .hardlink
                && omittedFiles.contains(walk.entries[i].node.linkTarget) {
                walk.entries[i].omitted = true
                warnings.append(BackupWarning(.unreadable, path: walk.entries[i].fullPath,
                    "hard link to a file that could not be read; not in the snapshot"))
            }
        }

        // 5. Trees, bottom-up: children always follow their directory in walk order.
        run.progress(force: true) { $0.phase = .trees }
        var storedAncestors: [Node] = []
        let (root, rootSeals): ([ChunkID], [ChunkSeal]) = try await withThrowingTaskGroup(of: UploadedPack.self) {
            uploads in
            let worker = try BackupWorker(run: run)
            for i in walk.entries.indices.reversed() where walk.entries[i].node.type == .directory
                && !walk.entries[i].omitted && !(walk.entries[i].parent < 0 && walk.entries[i].snapshotPath.isEmpty) {
                let children = walk.entries[i].children.filter { !walk.entries[$0].omitted }.map {
                    walk.entries[$0].node
                }
                (walk.entries[i].node.subtree, walk.entries[i].node.subtreeSeals) =
                    try await worker.addBlob(try TreeCodec.encode(Tree(nodes: children)), &uploads)
            }
            // Each directory's entries by its path below the root ([]: the root itself).
            var members: [[UInt8]: [Node]] = [:]
            for t in walk.topLevel where !walk.entries[t].omitted {
                let e = walk.entries[t]
                if e.snapshotPath.isEmpty {
                    // `/` itself: its entries are the root's.
                    members[[], default: []] += e.children.filter { !walk.entries[$0].omitted }.map {
                        walk.entries[$0].node
                    }
                } else {
                    let parent = Array(e.snapshotPath.split(separator: 0x2f).dropLast().joined(separator: [0x2f]))
                    members[parent, default: []].append(e.node)
                }
            }
            // Deepest first, so a directory's subtree is stored before the node that names it.
            func depth(_ p: [UInt8]) -> Int { p.reduce(0) { $0 + ($1 == 0x2f ? 1 : 0) } }
            for path in ancestors.keys.sorted(by: { depth($0) > depth($1) }) where members[path] != nil {
                var node = ancestors[path]!
                (node.subtree, node.subtreeSeals) =
                    try await worker.addBlob(try TreeCodec.encode(Tree(nodes: members[path] ?? [])), &uploads)
                storedAncestors.append(node)
                let parent = Array(path.split(separator: 0x2f).dropLast().joined(separator: [0x2f]))
                members[parent, default: []].append(node)
            }
            let refs = try await worker.addBlob(try TreeCodec.encode(Tree(nodes: members[[]] ?? [])), &uploads)
            try await worker.finish(&uploads)
            return refs
        }

        // 6. The packs this snapshot needs: every chunk it references, located.
        let registry = run.registry.withLock { $0 }
        var packs = Set(registry.uploaded)
        var referenced = root
        var stats = SnapshotStatistics()
        for a in storedAncestors {
            referenced += a.subtree
            stats.directories += 1
        }
        for e in walk.entries where !e.omitted && !(e.parent < 0 && e.snapshotPath.isEmpty) {
            referenced += e.node.content
            referenced += e.node.subtree
            switch e.node.type {
            case .file:
                stats.files += 1
                stats.bytesTotal += e.node.size
            case .directory: stats.directories += 1
            default: stats.otherEntries += 1
            }
        }
        for c in referenced {
            guard let p = registry.location[c] else {
                throw ArchiveError(.inconsistentSnapshot, object: "chunk \(c)",
                    "referenced by the snapshot but neither uploaded nor reported by the repository (internal error)")
            }
            packs.insert(p)
        }
        let status = run.status.withLock { $0.report }
        stats.bytesRead = status.bytesRead
        stats.bytesUploaded = status.bytesUploaded
        stats.chunksNew = registry.chunksNew
        stats.chunksReused = registry.chunksReused

        let activity = Self.activity(walk: walk, added: added, reused: reused, heads: heads, cache: cache,
                                     sealed: (sealedRaw, sealedStored))
        // The last use of the previous cache: the next one is built from this walk.
        cache = MetadataCache()
        heads = [:]

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
        try await locating.commit(manifest: manifest)
        logger.info("snapshot committed", metadata: ["snapshot": "\(manifest.id)", "packs": "\(packs.count)",
            "uploaded": "\(registry.uploaded.count)"])

        // 8. Only a committed snapshot may seed the next backup's cache.
        if let path = options.cachePath {
            var next = MetadataCache()
            for f in walk.files where !walk.entries[f].omitted && stable.contains(f) {
                let e = walk.entries[f]
                var entry = MetadataCache.Entry(size: e.stat.size, mtime: e.stat.mtime, ctime: e.stat.ctime,
                                                inode: e.stat.inode, device: e.stat.device, content: e.node.content,
                                                dataRegions: e.node.dataRegions)
                entry.contentSeals = e.node.contentSeals
                entry.contentMACs = macs[f] ?? []
                next[e.fullPath] = entry
            }
            do { try next.write(to: path, chunkIDKey: keys.shared.chunkIDKey) } catch {
                warnings.append(BackupWarning(.cache, path: Array(path.utf8),
                    "metadata cache not saved: \(error); the next backup reads every file"))
            }
        }
        run.progress(force: true) { $0.phase = .done; $0.currentPath = "" }
        return BackupResult(manifest: manifest, statistics: stats, filesNew: filesNew, filesChanged: filesChanged,
            filesUnchanged: filesUnchanged,
                            bytesRead: stats.bytesRead, bytesUploaded: stats.bytesUploaded,
                                packsUploaded: registry.uploaded.count, warnings: warnings)
    }

    /// The manifest's activity section: this backup's files against the cached snapshot's
    /// (none when there is no cache: then nothing can be compared).
    static func activity(walk: WalkResult, added: Set<Int>, reused: Set<Int>, heads: [Int: HeadSample],
                         cache: MetadataCache, sealed: (raw: UInt64, stored: UInt64)) -> SnapshotActivity {
        var files: [ActivityFile] = []
        files.reserveCapacity(walk.files.count)
        for f in walk.files where !walk.entries[f].omitted {
            let e = walk.entries[f]
            let change: ActivityFile.Change = added.contains(f) ? .added : (reused.contains(f) ? .unchanged : .changed)
            files.append(ActivityFile(path: e.fullPath, device: e.stat.device, inode: e.stat.inode, change: change,
                                      head: heads[f]))
        }
        let previous: [PreviousFile]? = cache.count == 0 ? nil
            : cache.map { PreviousFile(path: $0, device: $1.device, inode: $1.inode) }
        return ActivityAnalysis.analyze(files: files, previous: previous, sealedBytesRaw: sealed.raw,
                                        sealedBytesStored: sealed.stored)
    }

    /// One worker: takes the next file until none is left, then flushes.
    private static func workerLoop(run: BackupRun, jobs: [FileJob]) async throws -> [FileOutcome] {
        let worker = try BackupWorker(run: run)
        return try await withThrowingTaskGroup(of: UploadedPack.self) { uploads in
            var outcomes: [FileOutcome] = []
            while true {
                let i = run.nextJob.wrappingAdd(1, ordering: .relaxed).oldValue
                guard i < jobs.count else { break }
                outcomes.append(try await worker.process(jobs[i], &uploads))
            }
            try await worker.finish(&uploads)
            return outcomes
        }
    }

    /// Asks the repository where the given chunks are, in batches; records the answers
    /// and returns the chunks it does not have.
    private func confirmInRepository(_ ids: [ChunkID], run: BackupRun) async throws -> Set<ChunkID> {
        var unique = Array(Set(ids))
        unique.sort()
        var missing = Set<ChunkID>()
        var start = 0
        while start < unique.count {
            try Task.checkCancellation()
            let slice = Array(unique[start..<min(start + 1000, unique.count)])
            let found = try await run.target.existingChunkLocations(slice)
            run.registry.withLock { r in for (id, p) in found { r.location[id] = p } }
            for id in slice where found[id] == nil { missing.insert(id) }
            start += slice.count
        }
        return missing
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

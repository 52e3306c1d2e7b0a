import DequeModule
import RedoubtCore

/// Turns the walk's events into a snapshot's trees while the workers read files, holding
/// a bounded window of the tree at a time: that is what keeps a backup's memory from
/// growing with the number of files.
///
/// Each file gets a number in walk order when its directory is listed. A file found
/// unchanged in the metadata cache is stored from it once the repository confirms its
/// chunks: at once if the cache places them all in packs this host uploaded and the
/// repository still holds (asked once, for every pack of the cache), else after asking
/// about its chunks (in batches, while the walk goes on). Any other file goes to the
/// workers. A directory's tree is stored once every file numbered before the directory
/// closed has finished: by then its own files are done, its subdirectories' trees are
/// stored, and every earlier hard-link target is known to be in the snapshot or not. At
/// most ``window`` files are numbered and not yet behind that point; the walk waits for
/// the workers beyond it.
///
/// Used by one task only.
final class SnapshotBuilder {
    /// Files numbered but not yet behind the finished point: wide enough that while one
    /// worker reads a large file the other keeps taking small ones, and each costs only its
    /// entry and pending record. Measured on the kernel tree's run after 2% of its files
    /// changed (warm, release, two or three runs each): 8192 held about 2 MiB more than 4096
    /// at the same speed; 2048 held about 4 MiB less than 4096 but took 0.15 s (12%) longer.
    static let window = 4096
    /// Directories closed and waiting for their files beyond which the walk waits.
    static let maxWaitingDirectories = 8192
    /// Chunks of cached files confirmed with the repository per request.
    static let confirmBatch = 1000
    /// Requests of confirmation sent and not yet applied, beyond which the walk waits for
    /// the oldest. Why more than one: the walk waited for each answer in turn, and an
    /// unchanged run of small files left both cores idle half its time.
    static let confirmationsInFlight = 2

    let run: BackupRun
    private let treeWorker: BackupWorker
    private let queue: JobQueue
    private let streamFD: Int32?

    /// The previous snapshot's files, and which of them this backup found again (stored),
    /// one bit per cache index.
    private var cache: MetadataCache
    private(set) var seen: [UInt64]
    /// The next cache, written as files finish; nil if there is no cache or it failed.
    private var writer: MetadataCacheWriter?
    private(set) var tally: ActivityTally

    private struct Pending {
        let directory: WalkDirectory
        let slot: Int
        let path: [UInt8]
        let change: ActivityFile.Change
        /// The file's index in the cache, if it has an entry there.
        var cacheIndex: Int? = nil
        /// The entry as the cache holds it, taken when it was looked up (the cache's file is
        /// read about in order): copied into the next cache if the file is unchanged.
        var cacheEncoded: ArraySlice<UInt8>? = nil
    }

    private var pending: [Int: Pending] = [:]
    private var issued = 0
    /// Every file numbered below this has finished.
    private var finishedBelow = 0
    private var finishedAbove = Set<Int>()
    private var waiting: Deque<(directory: WalkDirectory, after: Int)> = []
    /// Unchanged files, and changed files with cached chunks, whose chunks the repository
    /// has not been asked about yet.
    private var unconfirmed: [Unconfirmed] = []
    private var unconfirmedChunks = 0
    private typealias Unconfirmed = (job: FileJob, entry: MetadataCache.Entry, unchanged: Bool)
    /// Batches sent to the repository, oldest first, with the request that answers which
    /// of their chunks it lacks.
    private var confirming: [Confirmation] = []
    /// Makes the last snapshot's tree chunks that the repository still holds reusable (an
    /// unchanged tree is then named, not sealed again); awaited before the first tree.
    private var treesConfirmed: Task<Void, any Error>?
    /// Which of the cache's packs this host uploaded and the repository holds: asked when
    /// the backup starts, awaited by the first cached file that names its packs.
    private var packsAsked: Task<Set<PackID>, any Error>?
    /// Its answer, once awaited.
    private var packsHeld: Set<PackID>?
    /// Entries for the next cache whose chunks' packs are not all known yet (a chunk still
    /// in a batch or a pack being filled), and how many packs had been finished when they
    /// were last looked at.
    private var unplaced: [(path: [UInt8], entry: MetadataCache.Entry)] = []
    private var packsFinishedWhenPlaced = 0
    /// This snapshot's tree chunks, for the next cache.
    private var treeChunks: [MetadataCache.TreeChunk] = []
    private struct Confirmation {
        let batch: [Unconfirmed]
        let missing: Task<Set<ChunkID>, any Error>
    }
    /// Files handed to the workers whose outcome has not come back.
    private var reading = 0
    /// Snapshot paths of hard-linked files that could not be stored.
    private var omittedFirstNames = Set<[UInt8]>()

    private(set) var warnings: [BackupWarning] = []
    private(set) var stats = SnapshotStatistics()
    private(set) var filesNew: UInt64 = 0, filesChanged: UInt64 = 0, filesUnchanged: UInt64 = 0
    private(set) var sealedRaw: UInt64 = 0, sealedStored: UInt64 = 0
    /// Why the stream (``BackupStream``) could not be stored, if it could not.
    private(set) var streamFailure: String?
    /// The entries of `/` when it is backed up: they are the root's.
    private(set) var rootEntries: [Node] = []
    /// The top, once its turn came (after every other directory), its entries complete.
    private(set) var top: WalkDirectory?

    init(run: BackupRun, queue: JobQueue, cache: MetadataCache, writer: MetadataCacheWriter?, streamFD: Int32?)
        throws(CoreError) {
        self.run = run
        self.queue = queue
        self.cache = cache
        self.writer = writer
        self.streamFD = streamFD
        tally = ActivityTally(hasBaseline: cache.count > 0)
        seen = [UInt64](repeating: 0, count: (cache.indexLimit + 63) / 64)
        treeWorker = try BackupWorker(run: run)
        if !cache.packs.isEmpty {
            let packs = cache.packs
            packsAsked = Task { try await run.target.uploadedPacks(packs) }
            self.cache.packs = []
        }
        if !cache.trees.isEmpty {
            treesConfirmed = Self.makeReusable(cache.trees, held: packsAsked, run)
            treeChunks.reserveCapacity(cache.trees.count + 64)
            self.cache.trees = []
        }
    }

    deinit {
        for c in confirming { c.missing.cancel() }
        treesConfirmed?.cancel()
        packsAsked?.cancel()
    }

    typealias Outcomes = AsyncThrowingStream<FileOutcome, any Error>.Iterator

    /// Takes one walk event, then stores what is ready and waits for the workers while
    /// the window is full.
    func take(_ event: WalkEvent, _ outcomes: inout Outcomes, _ uploads: inout UploadGroup) async throws {
        switch event {
        case .listed(let directory):
            for i in directory.entries.indices where directory.entries[i].node.type == .file {
                try await number(directory, i)
            }
        case .closed(let directory):
            waiting.append((directory, issued))
        }
        try await storeReady(&uploads)
        while issued - finishedBelow >= Self.window || waiting.count >= Self.maxWaitingDirectories {
            try await waitForOne(&outcomes, &uploads)
        }
    }

    /// After the last event: waits for every file and stores every directory left.
    func finish(_ outcomes: inout Outcomes, _ uploads: inout UploadGroup) async throws {
        while finishedBelow < issued { try await waitForOne(&outcomes, &uploads) }
        try await storeReady(&uploads)
        precondition(waiting.isEmpty, "a directory was left unstored")
    }

    /// Puts the treeWorker's blob in the repository (a tree of the root or of an ancestor).
    func addTree(_ nodes: [Node], _ uploads: inout UploadGroup) async throws -> ([ChunkID], [ChunkSeal]) {
        if let t = treesConfirmed {
            treesConfirmed = nil
            try await withTaskCancellationHandler { try await t.value } onCancel: { t.cancel() }
        }
        let refs = try await treeWorker.addBlob(try TreeCodec.encode(Tree(nodes: nodes)), &uploads)
        run.registry.withLock { $0.reference(refs.ids) }
        for k in refs.ids.indices {
            treeChunks.append(MetadataCache.TreeChunk(mac: refs.macs[k], id: refs.ids[k], seal: refs.seals[k]))
        }
        return (refs.ids, refs.seals)
    }

    func finishTrees(_ uploads: inout UploadGroup) async throws { try await treeWorker.finish(&uploads) }

    /// Replaces the old cache with the one written during this backup; call after the commit.
    func commitCache() {
        placeUnplaced(final: true)
        guard let writer else { return }
        run.registry.withLock { r in for k in treeChunks.indices { treeChunks[k].pack = r.location[treeChunks[k].id] } }
        do { try writer.commit(trees: treeChunks) } catch {
            warnings.append(BackupWarning(.cache, path: Array(writer.path.utf8),
                "metadata cache not saved: \(error); the next backup reads every file"))
        }
        self.writer = nil
    }

    /// Lets the previous cache go once the activity section is made.
    func releaseCache() {
        cache = MetadataCache()
        seen = []
    }

    /// The snapshot's activity section, worked out off this task (it reads every file of
    /// the previous snapshot): call once every file has finished, when all it needs is known,
    /// and it is ready while the last packs upload.
    func activity() -> Task<SnapshotActivity, Never> {
        let inputs = ActivityInputs(tally: tally, cache: cache, seen: seen, raw: sealedRaw, stored: sealedStored)
        return Task.detached { SnapshotBuilder.makeActivity(inputs) }
    }

    /// What the activity task needs, in one value: Swift 6.3's region-based isolation
    /// checker cannot check a detached task that captures them one by one.
    private struct ActivityInputs: Sendable {
        let tally: ActivityTally
        let cache: MetadataCache
        let seen: [UInt64]
        let raw: UInt64, stored: UInt64
    }

    private static func makeActivity(_ i: ActivityInputs) -> SnapshotActivity {
        i.tally.finish(previous: previousFiles(i.cache, i.seen), sealedBytesRaw: i.raw, sealedBytesStored: i.stored)
    }

    /// The previous snapshot's files, each with whether this backup stored a file at its path.
    private static func previousFiles(_ cache: MetadataCache, _ seen: [UInt64]) -> ActivityTally.PreviousFiles? {
        guard cache.count > 0 else { return nil }
        return { visit in
            cache.forEachFile { i, path, device, inode in
                let present = seen[i >> 6] & (1 << UInt64(i & 63)) != 0
                visit(PreviousFile(path: path, device: device, inode: inode), present)
            }
        }
    }

    // MARK: - files

    private func number(_ directory: WalkDirectory, _ i: Int) async throws {
        let seq = issued
        issued += 1
        let entry = directory.entries[i]
        let path = directory.fullPath(of: i)
        var job = FileJob(entry: seq, path: path, stat: entry.stat)
        job.streamFD = streamFD
        guard let (cacheIndex, cached, encoded) = cache.find(path) else {
            filesNew += 1
            pending[seq] = Pending(directory: directory, slot: i, path: path, change: .added)
            read(job)
            return
        }
        pending[seq] = Pending(directory: directory, slot: i, path: path, change: .changed, cacheIndex: cacheIndex,
                               cacheEncoded: encoded)
        // Why the seals: a format-2 tree names each chunk with its seal; an entry without
        // them (written for format-1 chunks) is read again, as is one whose extended
        // attributes are unknown (the walk leaves them to the reader).
        let hasSeals = cached.contentSeals.count == cached.content.count
        if cached.matches(entry.stat) && hasSeals && cached.xattrs != nil {
            if try await inHeldPacks(cached) {
                filesUnchanged += 1
                reuse(job, cached, placed: true)
                return
            }
            unconfirmed.append((job, cached, true))
            unconfirmedChunks += cached.content.count
        } else {
            filesChanged += 1
            if hasSeals && cached.contentMACs.count == cached.content.count && !cached.content.isEmpty {
                if try await inHeldPacks(cached) {
                    makeReusable(cached, missing: [])
                    read(job)
                    return
                }
                unconfirmed.append((job, cached, false))
                unconfirmedChunks += cached.content.count
            } else {
                read(job)
            }
        }
        if unconfirmedChunks >= Self.confirmBatch {
            askAboutUnconfirmed()
            if confirming.count > Self.confirmationsInFlight { try await applyOldestConfirmation() }
        }
    }

    /// Sends the waiting cached files' chunks to the repository in a request of their own.
    private func askAboutUnconfirmed() {
        guard !unconfirmed.isEmpty else { return }
        let batch = unconfirmed
        unconfirmed = []
        unconfirmedChunks = 0
        confirming.append(Confirmation(batch: batch, missing: Self.ask(batch.flatMap(\.entry.content), run)))
    }

    /// Applies the oldest answer: an unchanged file whose chunks are all there is stored
    /// from the cache, any other is read; a changed file's cached chunks that are there may
    /// be named without being sealed again.
    private func applyOldestConfirmation() async throws {
        let oldest = confirming.removeFirst()
        let (batch, answer) = (oldest.batch, oldest.missing)
        let missing = try await withTaskCancellationHandler {
            try await answer.value
        } onCancel: {
            answer.cancel()
        }
        for (job, entry, unchanged) in batch {
            if !unchanged {
                makeReusable(entry, missing: missing)
                read(job)
            } else if entry.content.contains(where: missing.contains) {
                // Why: the repository lost (or never committed) a chunk; read the file again.
                filesChanged += 1
                read(job)
            } else {
                filesUnchanged += 1
                reuse(job, entry, placed: false)
            }
        }
    }

    /// True if the cache places each of the entry's chunks in a pack this host uploaded
    /// that the repository still holds; their locations are then recorded for the manifest.
    private func inHeldPacks(_ entry: MetadataCache.Entry) async throws -> Bool {
        guard entry.contentPacks.count == entry.content.count else { return false }
        if packsHeld == nil, let asked = packsAsked {
            packsHeld = try await withTaskCancellationHandler { try await asked.value } onCancel: { asked.cancel() }
        }
        let held = packsHeld ?? []
        var located: [PackID] = []
        located.reserveCapacity(entry.content.count)
        for case let p? in entry.contentPacks where held.contains(p) { located.append(p) }
        guard located.count == entry.content.count else { return false }
        run.registry.withLock { r in
            for (id, p) in zip(entry.content, located) where r.location[id] == nil { r.location[id] = p }
        }
        return true
    }

    /// Lets a changed file's cached chunks that the repository holds be named without
    /// being sealed again.
    private func makeReusable(_ entry: MetadataCache.Entry, missing: Set<ChunkID>) {
        var usable: [(ChunkID, CachedChunk)] = []
        for k in entry.content.indices where !missing.contains(entry.content[k]) {
            usable.append((entry.contentMACs[k], CachedChunk(id: entry.content[k], seal: entry.contentSeals[k])))
        }
        run.registry.withLock { r in for (mac, c) in usable { r.reusable[mac] = c } }
    }

    private static func ask(_ ids: [ChunkID], _ run: BackupRun) -> Task<Set<ChunkID>, any Error> {
        Task { try await confirmInRepository(ids, run) }
    }

    /// Tree chunks in packs this host uploaded that the repository holds (`held`) are
    /// reusable at once; the others once the repository confirms them one by one.
    private static func makeReusable(_ trees: [MetadataCache.TreeChunk], held: Task<Set<PackID>, any Error>?,
                                     _ run: BackupRun) -> Task<Void, any Error> {
        Task {
            let packs = try await held?.value ?? []
            let others = trees.filter { !($0.pack.map(packs.contains) ?? false) }.map(\.id)
            let missing = try await confirmInRepository(others, run)
            run.registry.withLock { r in
                r.reusable.reserveCapacity(r.reusable.count + trees.count)
                for t in trees where !missing.contains(t.id) {
                    if let p = t.pack, packs.contains(p), r.location[t.id] == nil { r.location[t.id] = p }
                    r.reusable[t.mac] = CachedChunk(id: t.id, seal: t.seal)
                }
            }
        }
    }

    /// Asks the repository where the given chunks are; records the answers and returns the
    /// chunks it does not have.
    private static func confirmInRepository(_ ids: [ChunkID], _ run: BackupRun) async throws -> Set<ChunkID> {
        var unique = Array(Set(ids))
        unique.sort()
        var missing = Set<ChunkID>()
        var start = 0
        while start < unique.count {
            try Task.checkCancellation()
            let slice = Array(unique[start..<min(start + Self.confirmBatch, unique.count)])
            let found = try await run.target.existingChunkLocations(slice)
            run.registry.withLock { r in for (id, p) in found { r.location[id] = p } }
            for id in slice where found[id] == nil { missing.insert(id) }
            start += slice.count
        }
        return missing
    }

    /// Stores an unchanged file from its cache entry. `placed`: its packs were confirmed,
    /// so the entry goes into the next cache as it is; else it is written with the packs
    /// the repository named for its chunks just now.
    private func reuse(_ job: FileJob, _ entry: MetadataCache.Entry, placed: Bool) {
        guard let p = pending.removeValue(forKey: job.entry) else { return }
        var node = p.directory.entries[p.slot].node
        node.content = entry.content
        node.contentSeals = entry.contentSeals
        node.dataRegions = entry.dataRegions
        node.xattrs = entry.xattrs ?? []
        p.directory.entries[p.slot].node = node
        run.registry.withLock { $0.chunksReused += UInt64(entry.content.count) }
        run.progress { $0.filesDone += 1; $0.bytesDone += entry.size }
        stored(p, stat: p.directory.entries[p.slot].stat, head: nil, cacheEntry: entry,
               encoded: placed ? p.cacheEncoded : nil)
        finished(job.entry)
    }

    /// Waits for one worker's outcome and applies it; with no file at the workers, waits for
    /// the oldest confirmation instead, asking about the waiting cached files first if no
    /// request is out (so that none waits on a request never sent).
    private func waitForOne(_ outcomes: inout Outcomes, _ uploads: inout UploadGroup) async throws {
        // Why a worker's outcome first: asking about a batch that is not full costs a round
        // trip per call, and a changed file every fifty made a round trip per fifty files.
        // The batch goes early only if nothing else can move: no file at the workers, or the
        // oldest unfinished file is in it.
        let oldestAsked = confirming.first?.batch.first?.job.entry ?? unconfirmed.first?.job.entry
        if reading == 0 || oldestAsked == finishedBelow {
            if confirming.isEmpty {
                guard !unconfirmed.isEmpty else {
                    throw ArchiveError(.inconsistentSnapshot, object: "backup",
                                       "waiting for files no worker has (internal error)")
                }
                askAboutUnconfirmed()
            }
            try await applyOldestConfirmation()
            try await storeReady(&uploads)
            return
        }
        guard let o = try await outcomes.next() else {
            throw ArchiveError(.inconsistentSnapshot, object: "backup", "the workers stopped early (internal error)")
        }
        apply(o)
        try await storeReady(&uploads)
    }

    /// Hands a file to the workers.
    private func read(_ job: FileJob) {
        reading += 1
        queue.push(job)
    }

    private func apply(_ o: FileOutcome) {
        reading -= 1
        guard let p = pending.removeValue(forKey: o.entry) else { return }
        defer { finished(o.entry) }
        if let w = o.warning { warnings.append(w) }
        if let w = o.attributeWarning { warnings.append(w) }
        sealedRaw += o.sealedRaw
        sealedStored += o.sealedStored
        guard let content = o.content, let st = o.stat else {
            p.directory.entries[p.slot].omitted = true
            if streamFD != nil { streamFailure = o.warning?.message ?? "not read" }
            if p.directory.entries[p.slot].stat.links > 1 {
                omittedFirstNames.insert(p.directory.snapshotPath(of: p.slot))
            }
            return
        }
        var node = p.directory.entries[p.slot].node
        node.content = content
        node.contentSeals = o.contentSeals
        node.dataRegions = o.dataRegions
        node.size = o.size
        node.mode = st.permissions
        node.uid = st.uid
        node.gid = st.gid
        node.mtime = st.mtime
        node.ctime = st.ctime
        node.atime = st.atime
        node.xattrs = o.xattrs ?? []
        p.directory.entries[p.slot].node = node
        p.directory.entries[p.slot].stat = st
        var entry: MetadataCache.Entry? = nil
        if o.stable {
            entry = MetadataCache.Entry(size: st.size, mtime: st.mtime, ctime: st.ctime, inode: st.inode,
                                        device: st.device, content: content, dataRegions: o.dataRegions)
            entry?.contentSeals = o.contentSeals
            entry?.contentMACs = o.contentMACs
            entry?.xattrs = o.xattrs
        }
        stored(p, stat: st, head: o.head, cacheEntry: entry)
    }

    /// A file that is in the snapshot: for the activity section and the next cache.
    /// `encoded`: the entry as the previous cache holds it, copied instead of encoded again.
    private func stored(_ p: Pending, stat st: ArchiveSys.FileStat, head: HeadSample?,
                        cacheEntry: MetadataCache.Entry?, encoded: ArraySlice<UInt8>? = nil) {
        tally.add(ActivityFile(path: p.path, device: st.device, inode: st.inode, change: p.change, head: head))
        if let i = p.cacheIndex { seen[i >> 6] |= 1 << UInt64(i & 63) }
        guard let cacheEntry, writer != nil else { return }
        if let encoded {
            return write { w throws(ArchiveError) in try w.append(encoded: encoded, packs: cacheEntry.contentPacks) }
        }
        var entry = cacheEntry
        if place(&entry) {
            write { w throws(ArchiveError) in try w.append(path: p.path, entry) }
        } else {
            unplaced.append((p.path, entry))
        }
        placeUnplaced(final: unplaced.count >= Self.maxUnplaced)
    }

    /// Entries waiting for their chunks' packs beyond which they are written with the packs
    /// not yet known (their chunks then confirmed one by one next time). Measured at most:
    /// 17 197 in the kernel tree's first backup, 17 255 in a first backup of a million small
    /// files (each worker fills a pack of thousands of files at a time).
    static let maxUnplaced = 32768

    private func place(_ entry: inout MetadataCache.Entry) -> Bool {
        run.registry.withLock { Self.place(&entry, $0) }
    }

    /// Gives the entry each chunk's pack; false if one is still in a batch or a pack being
    /// filled. A chunk of unknown place (none is expected) is recorded as such.
    private static func place(_ entry: inout MetadataCache.Entry, _ r: borrowing ChunkRegistry) -> Bool {
        var packs: [PackID?] = []
        packs.reserveCapacity(entry.content.count)
        for id in entry.content {
            if r.sealing.contains(id) { return false }
            packs.append(r.location[id])
        }
        entry.contentPacks = packs
        return !packs.contains(nil)
    }

    /// Writes the waiting entries whose packs are now known, after each finished pack;
    /// `final`: every one, with what is known. One look at the registry for all of them:
    /// up to 17 197 waited at once in the kernel tree's first backup.
    private func placeUnplaced(final: Bool) {
        guard !unplaced.isEmpty else { return }
        let ready: [(path: [UInt8], entry: MetadataCache.Entry)]? = run.registry.withLock { r in
            guard final || r.uploaded.count != packsFinishedWhenPlaced else { return nil }
            packsFinishedWhenPlaced = r.uploaded.count
            var ready: [(path: [UInt8], entry: MetadataCache.Entry)] = [], still = ready
            for var u in unplaced {
                if Self.place(&u.entry, r) || final { ready.append(u) } else { still.append(u) }
            }
            unplaced = still
            return ready
        }
        for u in ready ?? [] { write { w throws(ArchiveError) in try w.append(path: u.path, u.entry) } }
    }

    private func write(_ body: (MetadataCacheWriter) throws(ArchiveError) -> Void) {
        guard let w = writer else { return }
        do { try body(w) } catch {
            warnings.append(BackupWarning(.cache, path: Array(w.path.utf8),
                "metadata cache not saved: \(error); the next backup reads every file"))
            writer = nil
        }
    }

    private func finished(_ seq: Int) {
        if seq == finishedBelow {
            finishedBelow += 1
            while finishedAbove.remove(finishedBelow) != nil { finishedBelow += 1 }
        } else {
            finishedAbove.insert(seq)
        }
    }

    // MARK: - trees

    /// Stores, in closing order, every directory whose files have all finished.
    private func storeReady(_ uploads: inout UploadGroup) async throws {
        while let first = waiting.first, first.after <= finishedBelow {
            try await store(waiting.removeFirst().directory, &uploads)
        }
    }

    private func store(_ directory: WalkDirectory, _ uploads: inout UploadGroup) async throws {
        // A hard link whose first name could not be stored has nothing to link to.
        if !omittedFirstNames.isEmpty {
            for i in directory.entries.indices where directory.entries[i].node.type == .hardlink
                && !directory.entries[i].omitted && omittedFirstNames.contains(directory.entries[i].node.linkTarget) {
                directory.entries[i].omitted = true
                warnings.append(BackupWarning(.unreadable, path: directory.fullPath(of: i),
                    "hard link to a file that could not be read; not in the snapshot"))
            }
        }
        guard let parent = directory.parent else {
            // `/` itself is not an entry of the snapshot: its entries are the root's.
            for i in directory.entries.indices where !directory.entries[i].omitted
                && !directory.topPaths[i].snapshot.isEmpty {
                count(directory.entries[i].node)
            }
            top = directory
            return
        }
        var nodes: [Node] = []
        nodes.reserveCapacity(directory.entries.count)
        for e in directory.entries where !e.omitted {
            count(e.node)
            nodes.append(e.node)
        }
        directory.entries = []
        if parent.isTop && directory.snapshotPath.isEmpty {
            rootEntries = nodes
            return
        }
        let (subtree, seals) = try await addTree(nodes, &uploads)
        parent.entries[directory.slot].node.subtree = subtree
        parent.entries[directory.slot].node.subtreeSeals = seals
    }

    private func count(_ node: Node) {
        run.registry.withLock { $0.reference(node.content) }
        switch node.type {
        case .file:
            stats.files += 1
            stats.bytesTotal += node.size
        case .directory: stats.directories += 1
        default: stats.otherEntries += 1
        }
    }
}

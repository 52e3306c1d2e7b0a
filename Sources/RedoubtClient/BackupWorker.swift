import DequeModule
import Glibc
import RedoubtCore
import Synchronization

/// Hooks for tests; all nil in production.
struct ArchiverTestHooks: Sendable {
    /// Called after a file's content was read and before it is stat'ed again, with the
    /// path and the attempt (1 or 2): lets a test change the file "during" the read.
    var afterFileRead: (@Sendable ([UInt8], Int) -> Void)? = nil
    /// Smaller chunks than format v1's, so tests get many chunks from little data.
    var chunkerParameters: Chunker.Parameters? = nil
    /// Called for each chunk of a changed file named from the metadata cache instead of sealed.
    var sealSkipped: (@Sendable () -> Void)? = nil
    /// Lay the root out as snapshots before manifest version 3 did (one entry per path,
    /// named by its last component) and write version 2: how tests make the old snapshots
    /// that must still restore.
    var legacyLayout = false
}

/// A chunk of the last snapshot a changed file may still contain: its ID and seal.
struct CachedChunk: Sendable {
    let id: ChunkID
    let seal: ChunkSeal
}

/// Which chunks the repository or this run holds, and where. Shared by all workers.
struct ChunkRegistry {
    /// Chunk → the pack that holds it: reported by the repository, or sealed here.
    var location = ChunkLocations()
    /// Chunks a worker has taken to seal whose pack is not finished yet.
    var sealing: Set<ChunkID> = []
    var chunksNew: UInt64 = 0
    var chunksReused: UInt64 = 0
    var uploaded: [PackID] = []
    /// The packs of the chunks the snapshot references, as far as they are located.
    var referencedPacks: Set<PackID> = []
    /// Chunks the snapshot references whose pack was not known when they were referenced
    /// (still in a pack being filled); located once every worker has finished.
    var referencedUnlocated: Set<ChunkID> = []
    var unlocatedLimit = 4096
    /// Keyed plaintext hash → chunk, for chunks of changed files in the metadata cache that
    /// the repository confirmed it holds: such a chunk is named without being compressed
    /// and sealed again (its location is in `location`).
    var reusable: [ChunkID: CachedChunk] = [:]
}

/// Chunk → pack, for every chunk a backup meets: the one map of a backup that grows with
/// the data (a million small files make a million chunks). A pack is named by its number
/// in a list of the few packs seen, and a chunk by the first half of its ID, so an entry
/// takes 20 bytes, not two IDs' 64 (a million chunks: 42 MB of buckets instead of 75).
///
/// Why half an ID is enough here: the map only decides what this backup sends. A chunk
/// whose prefix matched another's by chance (``ChunkID/prefix``) would be left unsent and
/// reported missing, by name, when its file is restored; a host that spent the 2^64 hashes
/// to make one would damage only its own snapshot, which it can write as it likes anyway.
/// The snapshot's trees name every chunk by its whole ID.
struct ChunkLocations {
    private var numbers: [ChunkIDPrefix: UInt32] = [:]
    private var packs: [PackID] = []
    private var packNumbers: [PackID: UInt32] = [:]

    subscript(id: ChunkID) -> PackID? {
        get { numbers[id.prefix].map { packs[Int($0)] } }
        set {
            guard let pack = newValue else {
                numbers[id.prefix] = nil
                return
            }
            if let n = packNumbers[pack] {
                numbers[id.prefix] = n
            } else {
                let n = UInt32(packs.count)
                packs.append(pack)
                packNumbers[pack] = n
                numbers[id.prefix] = n
            }
        }
    }
}

extension ChunkRegistry {
    /// Records that the snapshot references `ids`, so that the manifest lists their packs.
    mutating func reference(_ ids: [ChunkID]) {
        for id in ids where !sealing.contains(id) {
            if let p = location[id] { referencedPacks.insert(p) } else { referencedUnlocated.insert(id) }
        }
        if referencedUnlocated.count >= unlocatedLimit { locateReferenced() }
    }

    /// Moves referenced chunks located since into `referencedPacks`, so that the set of
    /// the others stays as small as the chunks in flight. A chunk being sealed here needs
    /// nothing: every pack this run uploads is listed.
    mutating func locateReferenced() {
        var still = Set<ChunkID>()
        for id in referencedUnlocated where !sealing.contains(id) {
            if let p = location[id] { referencedPacks.insert(p) } else { still.insert(id) }
        }
        referencedUnlocated = still
        unlocatedLimit = max(4096, 2 * still.count)
    }
}

/// Progress counters shared by all workers, and the reporting throttle.
struct ProgressState {
    var report: BackupProgress
    var last: ContinuousClock.Instant? = nil
}

/// State of one backup run that every worker shares.
final class BackupRun: Sendable {
    let target: any PackLocatingBackupTarget
    let material: SharedWriteMaterial
    let options: BackupOptions
    let hooks: ArchiverTestHooks
    let registry = Mutex(ChunkRegistry())
    let status: Mutex<ProgressState>
    /// Where finished packs are spooled while they upload, and the target that sends them
    /// from there; nil: packs upload from memory.
    let spool: (target: any SpooledPackTarget, directory: String)?
    private let onProgress: @Sendable (BackupProgress) -> Void

    init(target: any PackLocatingBackupTarget, material: SharedWriteMaterial, options: BackupOptions,
        hooks: ArchiverTestHooks,
         onProgress: @escaping @Sendable (BackupProgress) -> Void) {
        self.target = target
        self.material = material
        self.options = options
        self.hooks = hooks
        self.onProgress = onProgress
        status = Mutex(ProgressState(report: BackupProgress(phase: .scanning)))
        let directory = options.spoolDirectory ?? options.cachePath.map { path in
            path.lastIndex(of: "/").map { String(path[..<$0].isEmpty ? "/" : path[..<$0]) } ?? "."
        }
        if let directory, let t = target as? any SpooledPackTarget, t.acceptsSpooledPacks {
            spool = (t, directory)
        } else {
            spool = nil
        }
    }

    /// Updates the counters and reports them at most every 100 ms (always if `force`).
    func progress(force: Bool = false, _ update: (inout BackupProgress) -> Void) {
        let now = ContinuousClock.now
        let snapshot: BackupProgress? = status.withLock { s in
            update(&s.report)
            if !force, let last = s.last, now - last < .milliseconds(100) { return nil }
            s.last = now
            return s.report
        }
        if let snapshot { onProgress(snapshot) }
    }
}

/// How one regular file was stored.
struct FileOutcome: Sendable {
    /// The job's number (``FileJob/entry``).
    var entry: Int
    /// Nil if the file is left out of the snapshot (see `warning`).
    var content: [ChunkID]?
    /// The seal of each chunk of `content`.
    var contentSeals: [ChunkSeal] = []
    /// The keyed plaintext hash of each chunk of `content`, for the metadata cache.
    var contentMACs: [ChunkID] = []
    var dataRegions: [Extent]?
    var size: UInt64
    /// The stat matching the content that was read.
    var stat: ArchiveSys.FileStat?
    /// False if the file changed while it was read (it is then not cached).
    var stable: Bool
    var warning: BackupWarning?
    /// The file's extended attributes, listed through the descriptor it was read from; nil
    /// if they could not be (`attributeWarning` says why) or the file was not read.
    var xattrs: [ExtendedAttribute]?
    var attributeWarning: BackupWarning?
    /// The first KiB of the file as read, sampled for the activity section.
    var head: HeadSample?
    /// Plaintext and stored bytes of the chunks of this file that were compressed and sealed.
    var sealedRaw: UInt64 = 0
    var sealedStored: UInt64 = 0
}

/// A file to read.
struct FileJob: Sendable {
    /// The job's number in the backup, in walk order.
    var entry: Int
    var path: [UInt8]
    var stat: ArchiveSys.FileStat
    /// A stream to read to its end instead of opening `path` (``BackupStream``).
    var streamFD: Int32? = nil
}

/// An upload that finished: its size, and the pack itself if it was sent from memory
/// (its buffer then goes back to the pipeline).
struct UploadedPack: Sendable {
    var size: Int
    var pack: FinishedPack?
}

typealias UploadGroup = ThrowingTaskGroup<UploadedPack, any Error>

/// The files waiting for a worker: the archiver pushes, workers take, first in first out.
/// How many wait is up to the archiver (it keeps a bounded window of unfinished files).
final class JobQueue: Sendable {
    private struct State {
        var jobs: Deque<FileJob> = []
        var waiting: Deque<CheckedContinuation<FileJob?, Never>> = []
        var closed = false
    }

    private let state = Mutex(State())

    func push(_ job: FileJob) {
        let waiter: CheckedContinuation<FileJob?, Never>? = state.withLock { s in
            if let waiter = s.waiting.popFirst() { return waiter }
            s.jobs.append(job)
            return nil
        }
        waiter?.resume(returning: job)
    }

    /// No more jobs: workers waiting or coming get nil.
    func close() {
        let waiters = state.withLock { s in
            s.closed = true
            s.jobs = []
            defer { s.waiting = [] }
            return s.waiting
        }
        for w in waiters { w.resume(returning: nil) }
    }

    /// The next job, or nil once the queue is closed.
    func next() async -> FileJob? {
        await withCheckedContinuation { (c: CheckedContinuation<FileJob?, Never>) in
            let job: FileJob?? = state.withLock { s in
                if let job = s.jobs.popFirst() { return .some(job) }
                if s.closed { return .some(nil) }
                s.waiting.append(c)
                return .none
            }
            if let job { c.resume(returning: job) }
        }
    }
}

/// One backup worker: reads files through a reused buffer, cuts chunks, compresses and
/// seals each once (format 2: the ID is the hash of the sealed bytes, so it is known only
/// then), asks the repository about them in batches, packs the ones nobody has into its
/// own pack in progress and uploads finished packs, at most one in flight per worker.
///
/// Not thread-safe: one per task.
final class BackupWorker {
    let run: BackupRun
    let pipeline: PackPipeline
    private let maxChunk: Int
    /// Bytes read per pread.
    private let window: Int
    /// The read buffer: `window + maxChunk` bytes, so a window always fits behind the
    /// unchunked tail of the previous one.
    private let buffer: UnsafeMutableRawBufferPointer
    /// Sealed chunks waiting for the repository's answer, and their bytes.
    private var batchUsed = 0
    private var batchItems: [SealedChunk] = []
    private let batchMaxItems = 1000
    private var inFlight = 0
    private let maxInFlight = 1

    /// The head sample and sealed byte counts of the file being read (see ``FileOutcome``).
    private var fileHead: HeadSample?
    private var fileSealedRaw: UInt64 = 0
    private var fileSealedStored: UInt64 = 0

    /// Every worker holds one read buffer (`window` + the largest chunk) and one batch, so
    /// both are kept small. Chunks are cut as soon as the chunker finds their end, so what
    /// waits in the buffer is usually under one average chunk, and a small window costs
    /// neither copies nor much scanning again (one 8 MiB window, as before, made a 16 MiB
    /// buffer and moved up to 8 MiB back to its start after every window). A batch of
    /// 4 MiB, against 8, took the kernel tree's first backup from 128 to 137 MiB peak RSS to
    /// 122 to 124, in 7.67 to 7.87 s against 7.50 to 7.86 (three alternated runs each).
    static let windowSize = 1 << 20
    static let batchBytes = 4 << 20

    init(run: BackupRun) throws(CoreError) {
        self.run = run
        // The run's registry knows which chunks are sealed, so the pipeline need not.
        pipeline = try PackPipeline(material: run.material, targetPackSize: run.options.packSize,
                                    compressionLevel: run.options.compressionLevel,
                                    chunkerParameters: run.hooks.chunkerParameters ?? .default,
                                    remembersChunks: false,
                                    makeSpill: run.spool.map { spool in { PackSpoolFile(in: spool.directory) } })
        maxChunk = pipeline.chunker.parameters.max
        window = Self.windowSize
        buffer = .allocate(byteCount: window + maxChunk, alignment: 4096)
    }

    deinit { buffer.deallocate() }

    // MARK: - chunks

    /// Queues a sealed chunk; asks and packs when the batch is full.
    private func enqueue(_ chunk: SealedChunk, _ uploads: inout UploadGroup) async throws {
        batchItems.append(chunk)
        batchUsed += chunk.bytes.count
        try await flushIfFull(&uploads)
    }

    private func flushIfFull(_ uploads: inout UploadGroup) async throws {
        if batchUsed >= Self.batchBytes || batchItems.count >= batchMaxItems { try await flushBatch(&uploads) }
    }

    /// Asks the repository about the queued chunks this run does not know yet, seals
    /// the ones nobody has, and uploads any pack that fills up.
    func flushBatch(_ uploads: inout UploadGroup) async throws {
        guard !batchItems.isEmpty else { return }
        let items = batchItems
        let ask: [ChunkID] = run.registry.withLock { r in
            var seen = Set<ChunkID>()
            return items.compactMap { i in
                (r.location[i.id] == nil && !r.sealing.contains(i.id) && seen.insert(i.id).inserted) ? i.id : nil
            }
        }
        let found = ask.isEmpty ? [:] : try await run.target.existingChunkLocations(ask)
        let toSeal: [Int] = run.registry.withLock { r in
            for (id, pack) in found where r.location[id] == nil && !r.sealing.contains(id) { r.location[id] = pack }
            var seal: [Int] = []
            for (n, i) in items.enumerated() {
                if r.location[i.id] != nil || r.sealing.contains(i.id) { continue }
                r.sealing.insert(i.id)
                seal.append(n)
            }
            r.chunksNew += UInt64(seal.count)
            r.chunksReused += UInt64(items.count - seal.count)
            return seal
        }
        batchItems.removeAll(keepingCapacity: true)
        batchUsed = 0
        for n in toSeal {
            try pipeline.add(sealed: items[n])
            // Each pack goes to the upload slot as soon as it is full, before the next one
            // fills: else a batch could finish a pack while one uploads and fill a third.
            if pipeline.hasFinishedPacks { try await submit(pipeline.takeFinishedPacks(), &uploads) }
        }
    }

    /// Records finished packs and starts their uploads, waiting for an earlier one
    /// first if this worker already has `maxInFlight` running. A pack built in its spool file
    /// is sent from there; one built in memory is spooled if it can be, and its memory goes
    /// straight back to the pipeline for the next pack.
    private func submit(_ finished: consuming [FinishedPack], _ uploads: inout UploadGroup) async throws {
        // Popped one by one, so each pack's buffer has one owner and can be reused in place.
        var packs = finished
        packs.reverse()
        while let p = packs.popLast() {
            run.registry.withLock { r in
                for e in p.entries {
                    r.location[e.chunkID] = p.id
                    r.sealing.remove(e.chunkID)
                }
                r.uploaded.append(p.id)
            }
            if inFlight >= maxInFlight, let done = try await uploads.next() {
                inFlight -= 1
                uploaded(consume done)
            }
            let size = p.size
            if let spool = run.spool, let file = spooled(p, in: spool.directory) {
                pipeline.recycle(consume p)
                let target = spool.target
                uploads.addTask {
                    try await target.upload(spooled: file)
                    return UploadedPack(size: size)
                }
            } else {
                let target = run.target
                uploads.addTask {
                    try await target.upload(pack: p)
                    return UploadedPack(size: size, pack: p)
                }
            }
            inFlight += 1
        }
    }

    /// The pack's spool file: the one it was built in, or a copy of its bytes; nil if
    /// neither can be had (it is then sent from memory).
    private func spooled(_ p: borrowing FinishedPack, in directory: String) -> SpooledPack? {
        if let file = p.spill as? PackSpoolFile { return SpooledPack(id: p.id, count: p.size, file: file) }
        return SpooledPack.write(id: p.id, bytes: p.bytes, in: directory)
    }

    /// `consuming`, and callers pass `consume`: the pipeline can reuse the pack's memory
    /// only if nothing else still holds it.
    private func uploaded(_ done: consuming UploadedPack) {
        run.progress { $0.bytesUploaded += UInt64(done.size) }
        if let pack = done.pack.take() { pipeline.recycle(consume pack) }
    }

    /// Flushes everything this worker holds and waits for its uploads.
    func finish(_ uploads: inout UploadGroup) async throws {
        try await flushBatch(&uploads)
        try await submit(try pipeline.flush(), &uploads)
        while let done = try await uploads.next() {
            inFlight -= 1
            uploaded(consume done)
        }
    }

    /// Chunks an in-memory blob (a tree encoding) and queues it; returns its chunk list,
    /// the chunks' seals and their plaintexts' keyed hashes (one empty chunk for an empty
    /// blob, docs/FORMAT.md §3.1). A chunk the metadata cache named (an unchanged tree) is
    /// not sealed again.
    func addBlob(_ blob: [UInt8], _ uploads: inout UploadGroup) async throws
        -> (ids: [ChunkID], seals: [ChunkSeal], macs: [ChunkID]) {
        var ids: [ChunkID] = [], seals: [ChunkSeal] = [], macs: [ChunkID] = []
        var offset = 0
        repeat {
            let len = blob.withUnsafeBytes { raw in
                let rest = UnsafeRawBufferPointer(rebasing: raw[offset...])
                return rest.isEmpty ? 0 : (pipeline.chunker.cut(rest, final: true) ?? rest.count)
            }
            // Through the read buffer (a chunk always fits): emitting waits on the repository,
            // and no pointer into the blob may live across that.
            let base = buffer.baseAddress!
            blob.withUnsafeBytes { raw in
                if len > 0 { base.copyMemory(from: raw.baseAddress! + offset, byteCount: len) }
            }
            try await emit(UnsafeRawBufferPointer(start: base, count: len), &ids, &seals, &macs, &uploads)
            offset += len
        } while offset < blob.count
        return (ids, seals, macs)
    }

    // MARK: - files

    private struct ReadFailure: Error { let errno: Int32 }

    /// Reads one file and queues its chunks. Failures that concern only this file become
    /// a warning in the outcome; repository and sealing failures throw.
    func process(_ job: FileJob, _ uploads: inout UploadGroup) async throws -> FileOutcome {
        fileHead = nil
        fileSealedRaw = 0
        fileSealedStored = 0
        var outcome = try await read(job, &uploads)
        outcome.head = fileHead
        outcome.sealedRaw = fileSealedRaw
        outcome.sealedStored = fileSealedStored
        return outcome
    }

    private func read(_ job: FileJob, _ uploads: inout UploadGroup) async throws -> FileOutcome {
        try Task.checkCancellation()
        var outcome = FileOutcome(entry: job.entry, content: nil, dataRegions: nil, size: 0, stat: nil, stable: false,
            warning: nil)
        if let fd = job.streamFD { return try await processStream(job, fd: fd, outcome, &uploads) }
        var fd = ArchiveSys.withCString(job.path) { open($0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | ArchiveSys.oNoAtime) }
        if fd < 0 && Glibc.errno == EPERM {
            // O_NOATIME needs ownership or CAP_FOWNER.
            fd = ArchiveSys.withCString(job.path) { open($0, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
        }
        guard fd >= 0 else {
            let e = Glibc.errno
            outcome.warning = e == ENOENT || e == ELOOP
                ? BackupWarning(.vanished, path: job.path, "disappeared or was replaced before it could be read")
                : BackupWarning(.unreadable, path: job.path,
                    "cannot open: \(ArchiveSys.describe(errno: e)); not in the snapshot")
            return outcome
        }
        defer { close(fd) }
        guard case .success(var before) = ArchiveSys.fstat(fd), before.isRegular else {
            outcome.warning = BackupWarning(.vanished, path: job.path,
                "replaced by something other than a file before it could be read")
            return outcome
        }
        run.progress { $0.currentPath = printable(job.path) }
        var attempt = 1
        while true {
            let read: (content: [ChunkID], seals: [ChunkSeal], macs: [ChunkID], regions: [Extent]?, size: UInt64)
            do {
                read = try await readContent(fd: fd, stat: before, &uploads)
            } catch let f as ReadFailure {
                outcome.warning = BackupWarning(.unreadable, path: job.path,
                    "read failed: \(ArchiveSys.describe(errno: f.errno)); not in the snapshot")
                return outcome
            }
            run.hooks.afterFileRead?(job.path, attempt)
            guard case .success(let after) = ArchiveSys.fstat(fd) else {
                outcome.warning = BackupWarning(.unreadable, path: job.path,
                    "cannot stat after reading; not in the snapshot")
                return outcome
            }
            outcome.content = read.content
            outcome.contentSeals = read.seals
            outcome.contentMACs = read.macs
            outcome.dataRegions = read.regions
            outcome.size = read.size
            outcome.stat = before
            if !after.differsInContent(from: before) {
                outcome.stable = true
                break
            }
            if attempt == 2 {
                // Why: never mix silently; what was read is kept, and the user is told.
                outcome.warning = BackupWarning(.changedWhileReading, path: job.path,
                                                """
                                                    changed while being read, twice; stored as read the second time, \
                                                    which may mix old and new data
                                                    """)
                break
            }
            attempt += 1
            before = after
        }
        // After the content: a change to them since `before` moved the ctime, which the
        // next backup's cache check sees.
        switch ArchiveSys.listXattrs(fd: fd) {
        case .success(let x) where x.count <= TreeCodec.maxXattrs: outcome.xattrs = x
        case .success:
            outcome.attributeWarning = BackupWarning(.attributes, path: job.path,
                "more than \(TreeCodec.maxXattrs) extended attributes; none stored")
        case .failure(let e):
            outcome.attributeWarning = BackupWarning(.attributes, path: job.path,
                "extended attributes not stored: \(ArchiveSys.describe(errno: e))")
        }
        run.progress { $0.filesDone += 1 }
        return outcome
    }

    /// Reads a stream to its end; its content is whatever came before end of file, never cached.
    private func processStream(_ job: FileJob, fd: Int32, _ start: FileOutcome, _ uploads: inout UploadGroup)
        async throws -> FileOutcome {
        var outcome = start
        run.progress { $0.currentPath = printable(job.path) }
        do {
            let read = try await readContent(fd: fd, stat: job.stat, stream: true, &uploads)
            (outcome.content, outcome.contentSeals, outcome.contentMACs) = (read.0, read.1, read.2)
            outcome.size = read.4
            var st = job.stat
            st.size = read.4
            outcome.stat = st
        } catch let f as ReadFailure {
            outcome.warning = BackupWarning(.unreadable, path: job.path,
                "reading the command's output failed: \(ArchiveSys.describe(errno: f.errno))")
        }
        run.progress { $0.filesDone += 1 }
        return outcome
    }

    /// Reads the file's data (its data regions if sparse) in windows, chunking across
    /// window and region boundaries. Returns the chunk list, the regions (nil if dense)
    /// and the logical size. A `stream` is read with read(2) to its end, whatever `st` says.
    private func readContent(fd: Int32, stat st: ArchiveSys.FileStat, stream: Bool = false,
                             _ uploads: inout UploadGroup) async throws
        -> ([ChunkID], [ChunkSeal], [ChunkID], [Extent]?, UInt64) {
        var sparse: [Extent]? = nil
        if !stream && st.size > 0 && st.blocks * 512 < st.size,
           let regions = ArchiveSys.dataRegions(fd: fd, size: st.size),
           regions != [Extent(offset: 0, length: st.size)] {
            sparse = regions
        }
        let plan = stream ? [Extent(offset: 0, length: UInt64.max)]
            : sparse ?? (st.size > 0 ? [Extent(offset: 0, length: st.size)] : [])
        var chunks: [ChunkID] = []
        var seals: [ChunkSeal] = []
        var macs: [ChunkID] = []
        var readRegions: [Extent] = []
        var filled = 0, start = 0
        var total: UInt64 = 0
        let base = buffer.baseAddress!
        regions: for r in plan {
            var offset = r.offset
            var remaining = r.length
            var got: UInt64 = 0
            while remaining > 0 {
                try Task.checkCancellation()
                if buffer.count - filled < window && start > 0 {
                    if filled > start { memmove(base, base + start, filled - start) }
                    filled -= start
                    start = 0
                }
                let want = Int(min(UInt64(buffer.count - filled), remaining))
                let n: Int
                let answer = ArchiveSys.preadFull(fd, into: base + filled, count: want, at: stream ? nil : offset)
                switch answer {
                case .success(let k): n = k
                case .failure(let e): throw ReadFailure(errno: e)
                }
                if n == 0 { break }
                if offset == 0 {
                    // The head, while it is in the buffer anyway: a histogram of 4 KiB per file.
                    fileHead = HeadSample.measure(UnsafeRawBufferPointer(start: base + filled, count: n))
                }
                filled += n
                offset += UInt64(n)
                remaining -= UInt64(n)
                got += UInt64(n)
                total += UInt64(n)
                run.progress { $0.bytesRead += UInt64(n); $0.bytesDone += UInt64(n) }
                // Every chunk whose end is already in the buffer: the chunker finds the same
                // end in fewer bytes than `maxChunk` as in more (it answers nil until it does),
                // so the cuts are those of the whole file; what is left is under `maxChunk`.
                while filled > start, let len = pipeline.chunker.cut(
                    UnsafeRawBufferPointer(start: base + start, count: filled - start), final: false) {
                    try await emit(UnsafeRawBufferPointer(start: base + start, count: len), &chunks, &seals, &macs,
                        &uploads)
                    start += len
                }
            }
            if got > 0 { readRegions.append(Extent(offset: r.offset, length: got)) }
            if got < r.length { break regions }  // the file shrank: stop at what exists
        }
        while start < filled {
            let slice = UnsafeRawBufferPointer(start: base + start, count: filled - start)
            let len = pipeline.chunker.cut(slice, final: true) ?? slice.count
            try await emit(UnsafeRawBufferPointer(start: base + start, count: len), &chunks, &seals, &macs, &uploads)
            start += len
        }
        if sparse != nil { return (chunks, seals, macs, readRegions, st.size) }
        return (chunks, seals, macs, nil, total)
    }

    private func emit(_ chunk: UnsafeRawBufferPointer, _ chunks: inout [ChunkID], _ seals: inout [ChunkSeal],
                      _ macs: inout [ChunkID], _ uploads: inout UploadGroup) async throws {
        // The keyed hash of the plaintext (in one loop with the pack's pending bytes):
        // an unchanged chunk of a changed file is then named from the cache, not sealed again.
        let mac = pipeline.chunkID(for: chunk)
        macs.append(mac)
        let cached: CachedChunk? = run.registry.withLock { r in
            guard let c = r.reusable[mac] else { return nil }
            r.chunksReused += 1
            return c
        }
        if let cached {
            run.hooks.sealSkipped?()
            chunks.append(cached.id)
            seals.append(cached.seal)
            return
        }
        let sealed = try pipeline.seal(chunk)
        fileSealedRaw += UInt64(chunk.count)
        fileSealedStored += UInt64(sealed.bytes.count)
        chunks.append(sealed.id)
        seals.append(sealed.seal)
        try await enqueue(sealed, &uploads)
    }
}

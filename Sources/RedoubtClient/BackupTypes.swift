import RedoubtCore

/// A ``BackupTarget`` that can also say which pack holds each chunk it already has.
///
/// A manifest must list every pack that holds a chunk the snapshot needs
/// (docs/FORMAT.md §6.1), including chunks deduplicated against earlier snapshots, so the
/// archiver needs the packs of reused chunks, not only the fact that they exist.
///
/// Contract: idempotent and safe to retry; returns an entry for each of `ids` the
/// repository holds for this tenant (any one pack if several hold it) and nothing for the
/// others. The answer is a hint from the server's catalog: if it is wrong, the snapshot
/// fails to restore that chunk with an error naming it, never with wrong data.
public protocol PackLocatingBackupTarget: BackupTarget {
    func existingChunkLocations(_ ids: [ChunkID]) async throws -> [ChunkID: PackID]
    /// Of `packs`, those this host uploaded that the repository still holds: every chunk in
    /// them is this host's to reuse, so the metadata cache's chunks in them need no query of
    /// their own. Same contract as above: a wrong answer costs a restore of those chunks,
    /// named, never wrong data.
    func uploadedPacks(_ packs: [PackID]) async throws -> Set<PackID>
}

extension PackLocatingBackupTarget {
    /// A target that cannot say has every cached chunk confirmed on its own.
    public func uploadedPacks(_ packs: [PackID]) async throws -> Set<PackID> { [] }
}

/// What to back up and how.
public struct BackupOptions: Sendable {
    /// The paths to back up, as given by the user. Each becomes one top-level entry of
    /// the snapshot's root tree (see ``Archiver``).
    public var paths: [String]
    /// Glob patterns (fnmatch(3), no flags: `*` also matches `/`). An entry below one of
    /// the paths is skipped, with everything under it, if a pattern matches its absolute
    /// path or its name. The paths themselves are never excluded.
    public var excludes: [String]
    /// Free-form labels stored in the public manifest header.
    public var tags: [String]
    /// Where the metadata cache lives; nil disables it (every file is read).
    public var cachePath: String?
    /// Files read and sealed in parallel (each with its own pack in progress).
    public var workers: Int
    /// A pack is finished and uploaded once it holds this many bytes.
    public var packSize: Int
    /// The zstd level for chunks (docs/FORMAT.md §3.3).
    public var compressionLevel: Int32
    /// Keep only the `CACHEDIR.TAG` file of a directory tagged as a cache (bford.info/cachedir).
    public var excludeCaches = false
    /// Do not descend into a directory on another filesystem than its top-level path.
    public var oneFileSystem = false
    /// Back up this stream as one file instead of `paths` (which must then be empty).
    public var stream: BackupStream? = nil
    /// Where packs are written as they are built, in unnamed files, and sent from
    /// (``SpooledPack``); nil: the metadata cache's directory. With neither, or a target that
    /// takes packs from memory only, each worker builds its pack in memory and holds the
    /// uploading one beside it.
    public var spoolDirectory: String? = nil

    public init(paths: [String], excludes: [String] = [], tags: [String] = [], cachePath: String? = nil,
                workers: Int = 2, packSize: Int = PackPipeline.defaultTargetPackSize,
                compressionLevel: Int32 = ChunkCompressor.defaultLevel) {
        self.paths = paths
        self.excludes = excludes
        self.tags = tags
        self.cachePath = cachePath
        self.workers = workers
        self.packSize = packSize
        self.compressionLevel = compressionLevel
    }
}

/// A stream backed up as one regular file at the snapshot's top level: a command's output
/// (a database dump). It is read to its end with read(2), never seeked, and never cached.
public struct BackupStream: Sendable {
    /// The file's name in the snapshot (one component).
    public var name: String
    /// The read end (a pipe); the caller closes it after the backup.
    public var fd: Int32
    /// Called once the stream has ended and before anything is committed; throwing (the
    /// command failed) aborts the backup, so a truncated dump never becomes a snapshot.
    public var finished: @Sendable () async throws -> Void

    public init(name: String, fd: Int32, finished: @escaping @Sendable () async throws -> Void) {
        self.name = name
        self.fd = fd
        self.finished = finished
    }
}

/// A progress report during a backup; the CLI renders it.
public struct BackupProgress: Sendable {
    public enum Phase: String, Sendable {
        /// Before the walk starts.
        case scanning
        /// Not reported since the walk, the cache check and the reading run together
        /// (kept so that older callers' switches still compile).
        case checkingCache
        /// Walking, checking cached files with the repository, reading, chunking, sealing
        /// and uploading files, and storing each directory's tree once its files are done.
        case reading
        /// Storing the root tree and the last packs.
        case trees
        /// Committing the manifest.
        case committing
        case done
    }

    public var phase: Phase
    /// Files finished (read, or found unchanged in the cache).
    public var filesDone: UInt64
    /// Files in the snapshot; known once the walk ends, which is while files are still read.
    public var filesTotal: UInt64?
    /// Bytes of file data finished (read, or unchanged).
    public var bytesDone: UInt64
    /// Logical bytes of all files; known once the walk ends.
    public var bytesTotal: UInt64?
    /// Bytes actually read from disk so far.
    public var bytesRead: UInt64
    /// Bytes of packs uploaded so far.
    public var bytesUploaded: UInt64
    /// The path last started (printable), or "".
    public var currentPath: String

    public init(phase: Phase, filesDone: UInt64 = 0, filesTotal: UInt64? = nil, bytesDone: UInt64 = 0,
        bytesTotal: UInt64? = nil,
                bytesRead: UInt64 = 0, bytesUploaded: UInt64 = 0, currentPath: String = "") {
        self.phase = phase
        self.filesDone = filesDone
        self.filesTotal = filesTotal
        self.bytesDone = bytesDone
        self.bytesTotal = bytesTotal
        self.bytesRead = bytesRead
        self.bytesUploaded = bytesUploaded
        self.currentPath = currentPath
    }
}

/// Something the backup could not store faithfully, but that did not stop it.
public struct BackupWarning: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// The file kept changing while it was read; its content is what was read last.
        case changedWhileReading
        /// The entry could not be read and is not in the snapshot (or a directory is
        /// stored without its unreadable contents).
        case unreadable
        /// The entry disappeared between listing and reading.
        case vanished
        /// Extended attributes could not be read; the entry is stored without them.
        case attributes
        /// The metadata cache was unusable and is ignored.
        case cache
        /// Anything else the user should know.
        case other
    }

    public let kind: Kind
    /// The path concerned (raw bytes; empty if none).
    public let path: [UInt8]
    public let message: String

    public init(_ kind: Kind, path: [UInt8], _ message: String) {
        self.kind = kind
        self.path = path
        self.message = message
    }

    public var description: String { path.isEmpty ? message : "\(printable(path)): \(message)" }
}

/// What a finished backup did.
public struct BackupResult: Sendable {
    /// The committed manifest.
    public let manifest: Manifest
    /// The counts stored in the manifest header.
    public let statistics: SnapshotStatistics
    /// Files not in the metadata cache (all files when there is no cache).
    public let filesNew: UInt64
    /// Files in the cache whose size, times or inode differ: read again.
    public let filesChanged: UInt64
    /// Files found unchanged in the cache: not read.
    public let filesUnchanged: UInt64
    /// Bytes read from disk (re-reads of changing files included).
    public let bytesRead: UInt64
    /// Bytes of packs uploaded.
    public let bytesUploaded: UInt64
    /// Packs uploaded by this backup.
    public let packsUploaded: Int
    public let warnings: [BackupWarning]
}

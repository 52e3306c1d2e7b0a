import RedoubtCore

/// A ``PackSource`` that can also say which chunks each pack holds (the packs' public
/// chunk lists, docs/FORMAT.md §4.1), e.g. from the server's catalog.
///
/// With it a restore fetches each pack exactly once. Without it the restorer must fetch
/// every pack the manifest names once just to read its chunk list before it knows which
/// packs it needs; packs that fit its memory budget are kept, larger restores fetch the
/// rest a second time.
///
/// Contract: idempotent; the answer is an unauthenticated hint (every chunk is still
/// checked when opened), so a wrong answer makes the restore fail naming the chunk,
/// never write wrong data.
public protocol ChunkLocatingPackSource: PackSource {
    /// For chunks in `packs`, which of those packs holds each.
    func chunkLocations(inPacks packs: [PackID]) async throws -> [ChunkID: PackID]
}

/// A progress report during a restore; the CLI renders it.
public struct RestoreProgress: Sendable {
    public enum Phase: String, Sendable {
        /// Locating chunks and reading the snapshot's trees.
        case planning
        /// Creating entries and writing file contents, pack by pack.
        case writing
        /// Setting owners, modes, attributes and times.
        case finishing
        case done
    }

    public var phase: Phase
    public var filesDone: UInt64
    public var filesTotal: UInt64?
    /// Bytes of file data written.
    public var bytesDone: UInt64
    public var bytesTotal: UInt64?
    public var packsDone: Int
    public var packsTotal: Int?
    /// The entry last worked on, relative to the target (printable).
    public var currentPath: String

    public init(phase: Phase, filesDone: UInt64 = 0, filesTotal: UInt64? = nil, bytesDone: UInt64 = 0,
        bytesTotal: UInt64? = nil,
                packsDone: Int = 0, packsTotal: Int? = nil, currentPath: String = "") {
        self.phase = phase
        self.filesDone = filesDone
        self.filesTotal = filesTotal
        self.bytesDone = bytesDone
        self.bytesTotal = bytesTotal
        self.packsDone = packsDone
        self.packsTotal = packsTotal
        self.currentPath = currentPath
    }
}

/// Something a restore could not reproduce exactly, but that did not stop it.
public struct RestoreWarning: Sendable, Hashable, CustomStringConvertible {
    /// The entry, relative to the restore target (raw bytes).
    public let path: [UInt8]
    public let message: String

    public init(path: [UInt8], _ message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { "\(printable(path)): \(message)" }
}

/// An entry whose stored data failed an integrity check (only with `skipDamaged`).
public struct DamagedEntry: Sendable, CustomStringConvertible {
    /// The entry, relative to the restore target (raw bytes).
    public let path: [UInt8]
    /// The integrity error, which names the pack, chunk or tree concerned.
    public let error: CoreError

    public var description: String { "\(printable(path)): \(error)" }
}

/// What a finished restore did.
public struct RestoreResult: Sendable {
    public let files: UInt64
    public let directories: UInt64
    /// Symlinks, hard links, FIFOs and devices created.
    public let otherEntries: UInt64
    /// Bytes of file data written.
    public let bytesWritten: UInt64
    /// Pack downloads (a pack fetched twice counts twice).
    public let packsFetched: Int
    public let warnings: [RestoreWarning]
    /// Entries left incomplete because their data is damaged (empty unless `skipDamaged`).
    /// Damaged files stay in place, with holes where data is missing.
    public let damaged: [DamagedEntry]
    /// Existing entries left as they were (``OverwritePolicy/never``, ``OverwritePolicy/ifChanged``).
    public internal(set) var skippedExisting: UInt64 = 0
}

/// One entry of a snapshot as `redoubt ls` shows it: what the tree records, without the
/// contents.
public struct ListedEntry: Sendable, Equatable, Encodable {
    /// Relative to the snapshot root; bytes that are not printable UTF-8 are escaped
    /// (`printable`), so two raw names may print alike: `pathHex` is exact.
    public let path: String
    public let pathHex: String
    /// `file`, `directory`, `symlink`, `hardlink`, `fifo`, `char device`, `block device`, `socket`.
    public let type: String
    public let size: UInt64
    /// Permission bits with setuid, setgid and sticky (`st_mode & 07777`).
    public let mode: UInt32
    public let uid: UInt32
    public let gid: UInt32
    public let user: String
    public let group: String
    /// Modification time, seconds and nanoseconds since the epoch (UTC).
    public let mtime: Int64
    public let mtimeNanoseconds: UInt32
    /// A symlink's target, or the path a hard link names (escaped like `path`).
    public let linkTarget: String?
    public let linkTargetHex: String?
    /// A device's major and minor numbers.
    public let deviceMajor: UInt32?
    public let deviceMinor: UInt32?
    /// The node's type, for callers that switch on it (not encoded: `type` is).
    public let kind: NodeType
    /// A file's content chunks, in order (not encoded: chunk IDs are for checking, not listing).
    public let content: [ChunkID]

    enum CodingKeys: String, CodingKey {
        case path, pathHex, type, size, mode, uid, gid, user, group, mtime, mtimeNanoseconds, linkTarget, linkTargetHex,
            deviceMajor, deviceMinor
    }

    init(path: [UInt8], node: Node) {
        self.path = printable(path)
        pathHex = hexString(path)
        type = node.type.description
        size = node.size
        mode = node.mode & 0o7777
        uid = node.uid
        gid = node.gid
        user = printable(node.user)
        group = printable(node.group)
        mtime = node.mtime.seconds
        mtimeNanoseconds = node.mtime.nanoseconds
        let linked = node.type == .symlink || node.type == .hardlink
        linkTarget = linked ? printable(node.linkTarget) : nil
        linkTargetHex = linked ? hexString(node.linkTarget) : nil
        let device = node.type == .charDevice || node.type == .blockDevice
        // Linux's dev_t layout (gnu_dev_major / gnu_dev_minor).
        deviceMajor = device ? UInt32((node.rdev >> 8) & 0xfff | (node.rdev >> 32) & 0xffff_f000) : nil
        deviceMinor = device ? UInt32(node.rdev & 0xff | (node.rdev >> 12) & 0xffff_ff00) : nil
        kind = node.type
        content = node.content
    }
}

/// The kind of a tree entry. Raw values are part of the format (docs/FORMAT.md §5).
public enum NodeType: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case file = 1
    case directory = 2
    case symlink = 3
    /// A further name for a file already in the snapshot; `linkTarget` is that file's path.
    case hardlink = 4
    case fifo = 5
    case charDevice = 6
    case blockDevice = 7
    case socket = 8

    public var description: String {
        switch self {
        case .file: "file"
        case .directory: "directory"
        case .symlink: "symlink"
        case .hardlink: "hardlink"
        case .fifo: "fifo"
        case .charDevice: "char device"
        case .blockDevice: "block device"
        case .socket: "socket"
        }
    }
}

/// A point in time with nanoseconds, as Linux `struct timespec`.
public struct Timestamp: Sendable, Hashable, Comparable {
    public var seconds: Int64
    public var nanoseconds: UInt32

    public init(seconds: Int64, nanoseconds: UInt32 = 0) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    public static func < (a: Self, b: Self) -> Bool { (a.seconds, a.nanoseconds) < (b.seconds, b.nanoseconds) }
}

/// One extended attribute; POSIX ACLs are the `system.posix_acl_*` ones.
public struct ExtendedAttribute: Sendable, Hashable {
    public var name: [UInt8]
    public var value: [UInt8]
    public init(name: [UInt8], value: [UInt8]) {
        self.name = name
        self.value = value
    }
}

/// A byte range of a file.
public struct Extent: Sendable, Hashable {
    public var offset: UInt64
    public var length: UInt64
    public init(offset: UInt64, length: UInt64) {
        self.offset = offset
        self.length = length
    }
}

extension ByteWriter {
    /// A file's data regions as trees and the host's metadata cache write them: `0`, or
    /// `1 ‖ count uvarint ‖ count × (offset uvarint ‖ length uvarint)` for a sparse file.
    public mutating func dataRegions(_ regions: [Extent]?) {
        guard let regions else { return u8(0) }
        u8(1)
        uvarint(UInt64(regions.count))
        for r in regions {
            uvarint(r.offset)
            uvarint(r.length)
        }
    }
}

/// One entry of a directory tree: everything a faithful restore on Linux needs.
public struct Node: Sendable, Hashable {
    /// The name as raw bytes: Linux names need not be UTF-8.
    public var name: [UInt8]
    public var type: NodeType
    /// Permission bits including setuid, setgid and sticky (`st_mode & 07777`).
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    /// Owner and group names at backup time (empty if unknown), for restoring by name.
    public var user: [UInt8]
    public var group: [UInt8]
    public var mtime: Timestamp
    public var ctime: Timestamp
    public var atime: Timestamp
    /// Logical size of a file in bytes (0 for other types).
    public var size: UInt64
    /// A symlink's target, or a hard link's first path (relative to the snapshot root).
    public var linkTarget: [UInt8]
    /// Device number of a character or block device (`st_rdev`).
    public var rdev: UInt64
    /// Extended attributes, sorted by name.
    public var xattrs: [ExtendedAttribute]
    /// A file's data, as an ordered list of chunks.
    public var content: [ChunkID]
    /// For a sparse file, the data regions in ascending order; `content` is their
    /// concatenation and everything else is a hole. Nil for a dense file.
    public var dataRegions: [Extent]?
    /// A directory's tree, as an ordered list of chunks of its encoding.
    public var subtree: [ChunkID]
    /// Format 2: the seal of each chunk of `content`, in order (empty in format-1 trees).
    public var contentSeals: [ChunkSeal] = []
    /// Format 2: the seal of each chunk of `subtree`, in order (empty in format-1 trees).
    public var subtreeSeals: [ChunkSeal] = []

    public init(name: [UInt8], type: NodeType, mode: UInt32 = 0o644, uid: UInt32 = 0, gid: UInt32 = 0,
                user: [UInt8] = [], group: [UInt8] = [], mtime: Timestamp = .init(seconds: 0),
                    ctime: Timestamp = .init(seconds: 0),
                atime: Timestamp = .init(seconds: 0), size: UInt64 = 0, linkTarget: [UInt8] = [], rdev: UInt64 = 0,
                xattrs: [ExtendedAttribute] = [], content: [ChunkID] = [], dataRegions: [Extent]? = nil,
                    subtree: [ChunkID] = []) {
        self.name = name
        self.type = type
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.user = user
        self.group = group
        self.mtime = mtime
        self.ctime = ctime
        self.atime = atime
        self.size = size
        self.linkTarget = linkTarget
        self.rdev = rdev
        self.xattrs = xattrs
        self.content = content
        self.dataRegions = dataRegions
        self.subtree = subtree
    }
}

/// A directory's entries, sorted by name bytes, names unique.
public struct Tree: Sendable, Hashable {
    public private(set) var nodes: [Node]

    /// Sorts `nodes` by name (and each node's xattrs by name), so equal trees encode
    /// to equal bytes.
    public init(nodes: [Node]) {
        self.nodes = nodes.map { n in
            var n = n
            n.xattrs.sort { bytesPrecede($0.name, $1.name) }
            return n
        }.sorted { bytesPrecede($0.name, $1.name) }
    }

    init(validatedSorted nodes: [Node]) { self.nodes = nodes }

    public subscript(name: [UInt8]) -> Node? { nodes.first { $0.name == name } }
}

/// Encodes and decodes trees (formats 1 and 2, docs/FORMAT.md §5). Decoding is strict: any
/// byte sequence that is not the canonical encoding of a valid tree is rejected, and
/// no name can escape the directory it is restored into. Format 2 carries each chunk's
/// seal (key and length) beside its ID, so a reader needs nothing from a pack's uploader.
public enum TreeCodec {
    public static let magic = Array("RDBTTREE".utf8)
    /// The version writers write.
    public static let version: UInt16 = 2
    /// Limits that bound the work and memory a hostile tree can cause.
    public static let maxName = 4096
    public static let maxLinkTarget = 65536
    public static let maxXattrValue = 1 << 20
    public static let maxXattrs = 4096
    public static let maxEntries = 1 << 24

    /// The canonical encoding of `tree`. Throws if a node breaks a rule that decoding
    /// enforces (so nothing is written that cannot be read back).
    /// In `version` 2 every chunk of every node needs its seal.
    public static func encode(_ tree: Tree, version: UInt16 = TreeCodec.version) throws(CoreError) -> [UInt8] {
        var w = ByteWriter(capacity: 64 + tree.nodes.count * 160)
        w.raw(magic)
        w.u16(version)
        w.uvarint(UInt64(tree.nodes.count))
        var previous: [UInt8]? = nil
        for n in tree.nodes {
            try validate(n, after: previous, object: "tree entry")
            if version == 2, n.contentSeals.count != n.content.count || n.subtreeSeals.count != n.subtree.count {
                throw CoreError(.corrupt, object: "tree entry \(printableName(n.name))",
                                "a format-2 tree needs the seal of every chunk it names")
            }
            previous = n.name
            var b = ByteWriter(capacity: 160 + 32 * (n.content.count + n.subtree.count))
            b.lengthPrefixed(n.name)
            b.u8(n.type.rawValue)
            b.uvarint(UInt64(n.mode))
            b.uvarint(UInt64(n.uid))
            b.uvarint(UInt64(n.gid))
            b.lengthPrefixed(n.user)
            b.lengthPrefixed(n.group)
            for t in [n.mtime, n.ctime, n.atime] {
                b.i64(t.seconds)
                b.u32(t.nanoseconds)
            }
            b.uvarint(n.size)
            b.lengthPrefixed(n.linkTarget)
            b.uvarint(n.rdev)
            b.uvarint(UInt64(n.xattrs.count))
            for x in n.xattrs {
                b.lengthPrefixed(x.name)
                b.lengthPrefixed(x.value)
            }
            b.uvarint(UInt64(n.content.count))
            for (k, c) in n.content.enumerated() {
                b.raw(c.bytes)
                if version == 2 { seal(n.contentSeals[k], &b) }
            }
            b.dataRegions(n.dataRegions)
            b.uvarint(UInt64(n.subtree.count))
            for (k, c) in n.subtree.enumerated() {
                b.raw(c.bytes)
                if version == 2 { seal(n.subtreeSeals[k], &b) }
            }
            w.lengthPrefixed(b.bytes)
        }
        return w.bytes
    }

    /// Decodes a tree from untrusted bytes; `object` names it in errors.
    public static func decode(_ bytes: [UInt8], object: String) throws(CoreError) -> Tree {
        var r = ByteReader(bytes)
        do {
            guard try r.raw(8) == magic else {
                throw CoreError(.corrupt, object: object, "bad magic: not a Redoubt tree")
            }
            let v = try r.u16()
            guard v == 1 || v == 2 else {
                throw CoreError(.unsupportedVersion, object: object,
                                "tree format version \(v); this build reads 1 and 2: upgrade redoubt")
            }
            // Every node takes at least 40 bytes, so a count beyond remaining/40 is a lie.
            let count = try r.count(limit: min(maxEntries, r.remaining / 40))
            var nodes: [Node] = []
            nodes.reserveCapacity(count)
            var previous: [UInt8]? = nil
            for _ in 0..<count {
                var b = ByteReader(try r.lengthPrefixed())
                let name = try b.lengthPrefixed(limit: maxName)
                // Made only for an error (most entries are sound).
                func nodeObject() -> String { "\(object), entry \(printableName(name))" }
                guard let type = NodeType(rawValue: try b.u8()) else {
                    throw CoreError(.corrupt, object: nodeObject(), "unknown entry type")
                }
                let mode = try b.uvarint(), uid = try b.uvarint(), gid = try b.uvarint()
                guard mode <= 0o7777, uid <= UInt64(UInt32.max), gid <= UInt64(UInt32.max) else {
                    throw CoreError(.corrupt, object: nodeObject(), "mode, uid or gid out of range")
                }
                let user = try b.lengthPrefixed(limit: 256), group = try b.lengthPrefixed(limit: 256)
                var times: [Timestamp] = []
                for _ in 0..<3 {
                    let s = try b.i64(), ns = try b.u32()
                    guard ns < 1_000_000_000 else {
                        throw CoreError(.corrupt, object: nodeObject(), "nanoseconds out of range")
                    }
                    times.append(Timestamp(seconds: s, nanoseconds: ns))
                }
                let size = try b.uvarint()
                let link = try b.lengthPrefixed(limit: maxLinkTarget)
                let rdev = try b.uvarint()
                let nx = try b.count(limit: maxXattrs)
                var xattrs: [ExtendedAttribute] = []
                for _ in 0..<nx {
                    let xn = try b.lengthPrefixed(limit: 255), xv = try b.lengthPrefixed(limit: maxXattrValue)
                    xattrs.append(ExtendedAttribute(name: xn, value: xv))
                }
                let (content, contentSeals) = try chunkList(&b, version: v)
                var regions: [Extent]? = nil
                switch try b.u8() {
                case 0: break
                case 1:
                    let nr = try b.count(limit: b.remaining / 2)
                    var list: [Extent] = []
                    for _ in 0..<nr { list.append(Extent(offset: try b.uvarint(), length: try b.uvarint())) }
                    regions = list
                default: throw CoreError(.corrupt, object: nodeObject(), "bad sparse flag")
                }
                let (subtree, subtreeSeals) = try chunkList(&b, version: v)
                guard b.isAtEnd else { throw CoreError(.corrupt, object: nodeObject(), "trailing bytes in entry") }
                var node = Node(name: name, type: type, mode: UInt32(mode), uid: UInt32(uid), gid: UInt32(gid),
                    user: user, group: group,
                                mtime: times[0], ctime: times[1], atime: times[2], size: size, linkTarget: link,
                                    rdev: rdev,
                                xattrs: xattrs, content: content, dataRegions: regions, subtree: subtree)
                node.contentSeals = contentSeals
                node.subtreeSeals = subtreeSeals
                try validate(node, after: previous, object: nodeObject())
                previous = name
                nodes.append(node)
            }
            guard r.isAtEnd else { throw CoreError(.corrupt, object: object, "trailing bytes after the last entry") }
            return Tree(validatedSorted: nodes)
        } catch let e as CoreError { throw e } catch let e as ByteReader.Failure { throw e.corrupt(object,
            "malformed tree") } catch {
            throw CoreError(.corrupt, object: object, "\(error)")
        }
    }

    private static func seal(_ s: ChunkSeal, _ b: inout ByteWriter) {
        b.raw(s.key)
        b.u32(s.rawLength)
    }

    /// A chunk list: IDs (format 1), or ID ‖ key ‖ raw length u32 each (format 2).
    private static func chunkList(_ b: inout ByteReader, version: UInt16) throws(ByteReader.Failure)
        -> ([ChunkID], [ChunkSeal]) {
        let size = version == 1 ? 32 : 68
        let n = try b.count(limit: b.remaining / size)
        var out: [ChunkID] = [], seals: [ChunkSeal] = []
        out.reserveCapacity(n)
        for _ in 0..<n {
            out.append(ChunkID(bytes: try b.raw(32))!)
            if version == 2 {
                let key = try b.raw(32), raw = try b.u32()
                // A raw length over the format's limit is refused like an oversized length.
                guard let s = ChunkSeal(key: key, rawLength: raw) else {
                    throw ByteReader.Failure.lengthTooLarge(UInt64(raw))
                }
                seals.append(s)
            }
        }
        return (out, seals)
    }

    /// The rules that make a tree safe to restore and canonical to encode. `object` and the
    /// entry's printable name are made only for an error: a tree is read entry by entry,
    /// and most are sound.
    static func validate(_ n: Node, after previous: [UInt8]?, object: @autoclosure () -> String) throws(CoreError) {
        var name: String { printableName(n.name) }
        // Why: a name with '/' or NUL, or "." / "..", would let a hostile snapshot write
        // outside the directory being restored.
        guard isSafeName(n.name) else { throw CoreError(.corrupt, object: object(), "unsafe entry name \(name)") }
        if let previous, !bytesPrecede(previous, n.name) {
            throw CoreError(.corrupt, object: object(), "entries not in strictly ascending name order at \(name)")
        }
        var lastX: [UInt8]? = nil
        for x in n.xattrs {
            guard !x.name.isEmpty, !x.name.contains(0) else {
                throw CoreError(.corrupt, object: object(), "bad xattr name on \(name)")
            }
            if let lastX, !bytesPrecede(lastX, x.name) {
                throw CoreError(.corrupt, object: object(), "xattrs of \(name) not sorted/unique")
            }
            lastX = x.name
        }
        let isFile = n.type == .file
        guard isFile || (n.content.isEmpty && n.dataRegions == nil && n.size == 0) else {
            throw CoreError(.corrupt, object: object(), "\(n.type) \(name) carries file data")
        }
        guard n.type == .directory || n.subtree.isEmpty else {
            throw CoreError(.corrupt, object: object(), "\(n.type) \(name) carries a subtree")
        }
        guard n.type == .directory ? !n.subtree.isEmpty : true else {
            throw CoreError(.corrupt, object: object(), "directory \(name) has no subtree")
        }
        switch n.type {
        case .symlink:
            guard !n.linkTarget.isEmpty, !n.linkTarget.contains(0) else {
                throw CoreError(.corrupt, object: object(), "symlink \(name) has a bad target")
            }
        case .hardlink:
            // Why: a hard link restores as link(target) inside the restore root; a target
            // that is absolute or climbs out would link a file from elsewhere.
            guard isSafeRelativePath(n.linkTarget) else {
                throw CoreError(.corrupt, object: object(), "hard link \(name) has an unsafe target")
            }
        default:
            guard n.linkTarget.isEmpty else {
                throw CoreError(.corrupt, object: object(), "\(n.type) \(name) carries a link target")
            }
        }
        guard n.type == .charDevice || n.type == .blockDevice || n.rdev == 0 else {
            throw CoreError(.corrupt, object: object(), "\(n.type) \(name) carries a device number")
        }
        if let regions = n.dataRegions {
            var end: UInt64 = 0
            for r in regions {
                let (e, overflow) = r.offset.addingReportingOverflow(r.length)
                guard r.offset >= end, r.length > 0, !overflow, e <= n.size else {
                    throw CoreError(.corrupt, object: object(),
                        "sparse map of \(name) is not ascending, overlapping or within the size")
                }
                end = e
            }
        }
    }

    /// A single path component that is safe to create inside a directory.
    public static func isSafeName(_ name: [UInt8]) -> Bool {
        !name.isEmpty && name != [0x2e] && name != [0x2e, 0x2e] && !name.contains(0x2f) && !name.contains(0)
            && name.count <= 255
    }

    /// A relative path of safe names separated by '/'.
    public static func isSafeRelativePath(_ path: [UInt8]) -> Bool {
        guard !path.isEmpty, path.first != 0x2f else { return false }
        return path.split(separator: 0x2f, omittingEmptySubsequences: false).allSatisfy { isSafeName(Array($0)) }
    }

    /// A name for messages: UTF-8 where it is, with other bytes as \xNN.
    public static func printableName(_ name: [UInt8]) -> String { printable(name) }
}

/// Renders raw path bytes for humans: valid UTF-8 as is when nothing in it would act on a
/// terminal, else every byte that is not printable ASCII as \xNN (control, C1, bidi and other
/// invisible characters: `SafeText.needsEscape`).
public func printable(_ bytes: [UInt8]) -> String {
    if let s = String(validating: bytes, as: UTF8.self),
       !s.unicodeScalars.contains(where: { SafeText.needsEscape($0) && $0 != "\\" }) {
        return s
    }
    var out = ""
    for b in bytes {
        if b >= 0x20 && b < 0x7f && b != 0x5c { out.append(Character(UnicodeScalar(b))) } else {
            out += "\\x" + hexString([b])
        }
    }
    return out
}

import Glibc
import RedoubtCore

/// One difference between two snapshots, as `redoubt diff` reports it.
public struct SnapshotChange: Sendable, Equatable, Encodable {
    public enum Kind: String, Sendable, Encodable {
        case added, removed, changed
    }

    public let change: Kind
    /// Below the snapshot root; bytes that are not printable UTF-8 are escaped (`pathHex` is exact).
    public let path: String
    public let pathHex: String
    /// The entry's type in the second snapshot (the first for `removed`).
    public let type: String
    /// For `changed`: which of `type`, `content`, `size`, `mode`, `owner`, `mtime`,
    /// `linkTarget`, `xattrs`, `device` differ (access and change times are not compared).
    public let what: [String]

    init(_ change: Kind, _ path: [UInt8], _ node: Node, what: [String] = []) {
        self.change = change
        self.path = printable(path)
        pathHex = hexString(path)
        type = node.type.description
        self.what = what
    }
}

extension SnapshotBrowser {
    /// Calls `body` with every difference from snapshot `a` to snapshot `b`, in path order,
    /// each entry of an added or removed directory included. A directory whose tree has the
    /// same chunks in both is the same directory and is not read (unchanged trees
    /// deduplicate, so a diff of two backups of a mostly unchanged host reads little).
    public static func diff(_ a: SnapshotBrowser, _ b: SnapshotBrowser,
                            _ body: (SnapshotChange) throws -> Void) async throws {
        var stack: [(path: [UInt8], a: Node?, b: Node?)] = [([], nil, nil)]
        while let (path, da, db) = stack.popLast() {
            try Task.checkCancellation()
            let left = try await a.children(of: path, node: da), right = try await b.children(of: path, node: db)
            var i = 0, j = 0
            var below: [(path: [UInt8], a: Node?, b: Node?)] = []
            while i < left.count || j < right.count {
                let l = i < left.count ? left[i] : nil, r = j < right.count ? right[j] : nil
                let order: Int = if let l, let r { l.name == r.name ? 0 : (bytesPrecede(l.name, r.name) ? -1 : 1) }
                    else { l == nil ? 1 : -1 }
                let name = order <= 0 ? l!.name : r!.name
                let p = path.isEmpty ? name : path + [0x2f] + name
                if order < 0 {
                    try await report(.removed, p, l!, in: a, body)
                    i += 1
                } else if order > 0 {
                    try await report(.added, p, r!, in: b, body)
                    j += 1
                } else {
                    let what = differences(l!, r!)
                    if !what.isEmpty { try body(SnapshotChange(.changed, p, r!, what: what)) }
                    if l!.type == .directory && r!.type == .directory && l!.subtree != r!.subtree {
                        below.append((p, l, r))
                    } else if l!.type == .directory && r!.type != .directory {
                        try await a.walk(from: p) { q, n in try body(SnapshotChange(.removed, q, n)); return true }
                    } else if r!.type == .directory && l!.type != .directory {
                        try await b.walk(from: p) { q, n in try body(SnapshotChange(.added, q, n)); return true }
                    }
                    i += 1
                    j += 1
                }
            }
            stack += below.reversed()
        }
    }

    private static func report(_ kind: SnapshotChange.Kind, _ path: [UInt8], _ node: Node, in s: SnapshotBrowser,
                               _ body: (SnapshotChange) throws -> Void) async throws {
        try body(SnapshotChange(kind, path, node))
        if node.type == .directory {
            try await s.walk(from: path) { q, n in try body(SnapshotChange(kind, q, n)); return true }
        }
    }

    /// What differs between two nodes of the same name.
    static func differences(_ a: Node, _ b: Node) -> [String] {
        var out: [String] = []
        if a.type != b.type { return ["type"] }
        if a.content != b.content || a.dataRegions != b.dataRegions { out.append("content") }
        if a.size != b.size { out.append("size") }
        if a.mode != b.mode { out.append("mode") }
        if a.uid != b.uid || a.gid != b.gid { out.append("owner") }
        if a.mtime != b.mtime { out.append("mtime") }
        if a.linkTarget != b.linkTarget { out.append("linkTarget") }
        if a.xattrs != b.xattrs { out.append("xattrs") }
        if a.rdev != b.rdev { out.append("device") }
        return out
    }
}

/// Matches `find` patterns against entries.
public struct EntryPattern: Sendable {
    private let pattern: [CChar]

    public init(_ pattern: String) { self.pattern = Array(pattern.utf8CString) }

    /// The glob matches the entry's name, or its path below the root with a leading `/`
    /// (`*` never matches `/`).
    public func matches(path: [UInt8], name: [UInt8]) -> Bool {
        ArchiveSys.withCString([0x2f] + path, name) { full, base in
            pattern.withUnsafeBufferPointer {
                fnmatch($0.baseAddress, base, 0) == 0 || fnmatch($0.baseAddress, full, FNM_PATHNAME) == 0
            }
        }
    }
}

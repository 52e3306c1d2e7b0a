import RedoubtCore

/// Writes a POSIX pax tar stream (`pax` interchange format: ustar headers, each preceded
/// by an extended header carrying the exact path, link target, owner names, nanosecond
/// times and extended attributes as `SCHILY.xattr.NAME`, which GNU tar and bsdtar read).
/// Pure encoding: bytes go to `sink` as they are made.
struct TarStream {
    private let sink: ([UInt8]) throws -> Void

    init(_ sink: @escaping ([UInt8]) throws -> Void) { self.sink = sink }

    /// One entry's header; a regular file's `size` bytes follow through ``data(_:)`` and
    /// ``pad(size:)``. `type` is the ustar type flag ("0" file, "1" hard link, "2" symlink,
    /// "3" char device, "4" block device, "5" directory, "6" FIFO).
    func header(path: [UInt8], node: Node, type: UInt8, size: UInt64, linkTarget: [UInt8] = []) throws {
        var pax: [UInt8] = []
        func record(_ key: String, _ value: [UInt8]) {
            let body = Array(" \(key)=".utf8) + value + [0x0a]
            // The length counts its own digits.
            var n = body.count + 1
            while String(n).utf8.count + body.count != n { n = String(n).utf8.count + body.count }
            pax += Array(String(n).utf8) + body
        }
        let name = type == 0x35 ? path + [0x2f] : path
        if !(String(validating: name, as: UTF8.self) != nil
             && String(validating: linkTarget, as: UTF8.self) != nil) {
            record("hdrcharset", Array("BINARY".utf8))
        }
        record("path", name)
        if !linkTarget.isEmpty { record("linkpath", linkTarget) }
        record("mtime", Array(Self.time(node.mtime).utf8))
        record("atime", Array(Self.time(node.atime).utf8))
        record("uid", Array(String(node.uid).utf8))
        record("gid", Array(String(node.gid).utf8))
        if !node.user.isEmpty { record("uname", node.user) }
        if !node.group.isEmpty { record("gname", node.group) }
        if size >= 0o77777777777 { record("size", Array(String(size).utf8)) }
        for x in node.xattrs { record("SCHILY.xattr." + printable(x.name), x.value) }
        try sink(Self.ustar(name: Array("PaxHeaders/".utf8) + Array(name.suffix(80)), node: node, type: 0x78,
                            size: UInt64(pax.count)))
        try data(pax)
        try pad(size: UInt64(pax.count))
        try sink(Self.ustar(name: name, node: node, type: type, size: size, linkTarget: linkTarget))
    }

    func data(_ bytes: [UInt8]) throws { try sink(bytes) }

    /// Zeros up to the next 512-byte block after `size` bytes of data.
    func pad(size: UInt64) throws {
        let r = Int(size % 512)
        if r != 0 { try sink([UInt8](repeating: 0, count: 512 - r)) }
    }

    /// The end of the archive: two zero blocks.
    func finish() throws { try sink([UInt8](repeating: 0, count: 1024)) }

    static func time(_ t: Timestamp) -> String {
        let ns = String(t.nanoseconds)
        return "\(t.seconds)." + String(repeating: "0", count: 9 - ns.count) + ns
    }

    /// A ustar header block; fields that do not fit are cut (the pax header before it is exact).
    static func ustar(name: [UInt8], node: Node, type: UInt8, size: UInt64, linkTarget: [UInt8] = []) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ bytes: [UInt8], at offset: Int, width: Int) {
            for (k, b) in bytes.prefix(width).enumerated() { h[offset + k] = b }
        }
        func octal(_ v: UInt64, at offset: Int, width: Int) {
            let digits = String(min(v, UInt64(1) << (3 * UInt64(width - 1)) - 1), radix: 8)
            put(Array((String(repeating: "0", count: max(0, width - 1 - digits.count)) + digits).utf8), at: offset,
                width: width - 1)
        }
        put(Array(name.suffix(100)), at: 0, width: 100)
        octal(UInt64(node.mode & 0o7777), at: 100, width: 8)
        octal(UInt64(node.uid), at: 108, width: 8)
        octal(UInt64(node.gid), at: 116, width: 8)
        octal(size, at: 124, width: 12)
        octal(UInt64(max(0, node.mtime.seconds)), at: 136, width: 12)
        h[156] = type
        put(linkTarget, at: 157, width: 100)
        put(Array("ustar".utf8) + [0], at: 257, width: 6)
        put(Array("00".utf8), at: 263, width: 2)
        put(node.user, at: 265, width: 32)
        put(node.group, at: 297, width: 32)
        if node.type == .charDevice || node.type == .blockDevice {
            octal((node.rdev >> 8) & 0xfff | (node.rdev >> 32) & 0xffff_f000, at: 329, width: 8)
            octal(node.rdev & 0xff | (node.rdev >> 12) & 0xffff_ff00, at: 337, width: 8)
        }
        // The checksum is computed with its own field as spaces.
        for k in 148..<156 { h[k] = 0x20 }
        let sum = h.reduce(0) { $0 + Int($1) }
        let digits = String(sum, radix: 8)
        put(Array((String(repeating: "0", count: max(0, 6 - digits.count)) + digits).utf8) + [0, 0x20], at: 148,
            width: 8)
        return h
    }
}

extension SnapshotBrowser {
    /// Writes the entry at `start` (a path below the root) and everything below it as a pax
    /// tar stream to `sink`, each member named by its path below the snapshot root (so
    /// `tar -x` recreates the layout `restore` makes). A hard link whose first name was not
    /// written before it is written as a copy of that file; sockets are left out; a sparse
    /// file is written whole, its holes as zeros.
    public func tar(_ start: [UInt8], node: Node, _ sink: @escaping ([UInt8]) throws -> Void) async throws {
        let out = TarStream(sink)
        var written = Set<[UInt8]>()
        var members: [([UInt8], Node)] = [(start, node)]
        if node.type == .directory {
            try await walk(from: start) { path, n in
                members.append((path, n))
                return true
            }
        }
        for (path, n) in members {
            switch n.type {
            case .directory: try out.header(path: path, node: n, type: 0x35, size: 0)
            case .symlink: try out.header(path: path, node: n, type: 0x32, size: 0, linkTarget: n.linkTarget)
            case .fifo: try out.header(path: path, node: n, type: 0x36, size: 0)
            case .charDevice: try out.header(path: path, node: n, type: 0x33, size: 0)
            case .blockDevice: try out.header(path: path, node: n, type: 0x34, size: 0)
            case .socket: continue
            case .hardlink where written.contains(n.linkTarget):
                try out.header(path: path, node: n, type: 0x31, size: 0, linkTarget: n.linkTarget)
            case .file, .hardlink:
                var file = n
                if n.type == .hardlink {
                    guard let target = try await session.findNode(n.linkTarget), target.type == .file else { continue }
                    file = target
                    file.name = n.name
                }
                try out.header(path: path, node: file, type: 0x30, size: file.size)
                try await contents(of: file, path: path) { try out.data($0) }
                try out.pad(size: file.size)
                if n.type == .file { written.insert(path) }
            }
        }
        try out.finish()
    }
}

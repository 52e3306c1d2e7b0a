import RedoubtCore

/// What a backup would do, found without reading file contents or asking the repository.
public struct BackupPreview: Sendable {
    /// Files not in the metadata cache: they would be read.
    public var filesNew: UInt64 = 0
    /// Files in the cache whose size, times or inode differ: they would be read again.
    public var filesChanged: UInt64 = 0
    /// Files the cache says are unchanged: not read (unless the repository lost their chunks).
    public var filesUnchanged: UInt64 = 0
    /// Logical bytes of every file found.
    public var bytesTotal: UInt64 = 0
    /// Bytes of the new and changed files: an upper bound of what would be read.
    public var bytesToRead: UInt64 = 0
    public var warnings: [BackupWarning] = []
}

extension Archiver {
    /// Walks `options.paths` as ``run(options:keys:target:now:progress:)`` would (same
    /// excludes, tags, cache) and compares each file with the metadata cache. Reads no file
    /// content, writes nothing, contacts nothing: what would be uploaded is not known here
    /// (that needs the files' chunks and the repository's answer).
    public func preview(options: BackupOptions, chunkIDKey: ChunkIDKey) throws(ArchiveError) -> BackupPreview {
        guard !options.paths.isEmpty else { throw ArchiveError(.invalidArgument, object: "backup", "no paths given") }
        var out = BackupPreview()
        var cache = MetadataCache()
        if let path = options.cachePath {
            let loaded = MetadataCache.load(path: path, chunkIDKey: chunkIDKey)
            cache = loaded.cache
            if let problem = loaded.problem {
                out.warnings.append(BackupWarning(.cache, path: Array(path.utf8),
                    "metadata cache ignored (\(problem)); every file would be read"))
            }
        }
        var absolute: [[UInt8]] = []
        for p in options.paths { absolute.append(try SnapshotLayout.absolute(p)) }
        let plan = SnapshotLayout.walkPlan(absolute, legacy: false)
        var walker = Walker(paths: plan.paths, names: plan.names, snapshotPaths: plan.snapshotPaths,
                            excludes: options.excludes)
        walker.excludeCaches = options.excludeCaches
        walker.oneFileSystem = options.oneFileSystem
        defer { walker.abandon() }
        while let event = try walker.next() {
            guard case .listed(let directory) = event else { continue }
            for i in directory.entries.indices where directory.entries[i].node.type == .file {
                let st = directory.entries[i].stat
                if let cached = cache[directory.fullPath(of: i)] {
                    if cached.matches(st) && cached.contentSeals.count == cached.content.count {
                        out.filesUnchanged += 1
                        continue
                    }
                    out.filesChanged += 1
                } else {
                    out.filesNew += 1
                }
                out.bytesToRead += st.size
            }
        }
        out.warnings += walker.warnings
        out.bytesTotal = walker.bytesFound
        return out
    }
}

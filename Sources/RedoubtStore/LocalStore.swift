import CRedoubtSys
import Dispatch
import Foundation
import Logging
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// An `ObjectStore` in a local directory whose sealed objects carry the Linux immutable
/// flag (`FS_IMMUTABLE_FL`), so that not even the owning account can change or delete
/// them without first holding `CAP_LINUX_IMMUTABLE` and clearing the flag.
///
/// Layout: the object `packs/3f/3fa1…` is the file `<root>/packs/3f/3fa1…`; directories
/// are created mode 0700. An object's retain-until is the extended attribute
/// `user.redoubt.retain-until` (decimal Unix seconds, rounded up), written before the
/// flag is set because the flag also freezes extended attributes. Files named
/// `.tmp-<hex>~` are writes in progress; they are never listed (no key can contain `~`)
/// and the ones a crash left behind are removed by `init`.
///
/// Contract, beyond `ObjectStore`'s:
/// - `put` returns only after the object's bytes, its retain-until and its directory
///   entry are on disk (`fsync` of the file, then of its directory), and after the flag
///   is set when `immutableFlagSupported`.
/// - One `LocalStore` per root at a time, across all processes: `init` deletes every
///   temp file under the root, including those of another live store on the same root,
///   and the flag/xattr steps are serialized only within one instance.
/// - Blocking system calls run on Dispatch's global queue, never on the Swift
///   concurrency pool, so that an `fsync` cannot stall the server's other tasks.
/// - Needs a filesystem with user extended attributes (ext4, xfs, btrfs, tmpfs ≥ 6.6);
///   `init` throws without them. The immutable flag is optional: without it objects are
///   stored and retention is recorded but not enforced, and `immutabilityWarning` says
///   why and how to fix it.
public final class LocalStore: ObjectStore {
    /// The directory holding the objects, as opened (standardized, no trailing slash).
    public let rootPath: String

    /// Whether `init` proved, with a probe file, that `FS_IMMUTABLE_FL` can be set and
    /// cleared under the root. When false, objects are stored unsealed.
    public let immutableFlagSupported: Bool

    /// Nil when the immutable flag works; otherwise a sentence naming the cause (no
    /// `CAP_LINUX_IMMUTABLE`, or a filesystem without the flag) and the fix, for the
    /// server's start-up banner and `doctor`.
    public var immutabilityWarning: String? { immutabilityProblem }

    private let immutabilityProblem: String?
    private let logger: Logger
    /// Serializes the short flag/xattr critical sections (seal, delete, extendRetention),
    /// so that one never clears the flag while another depends on it being set, and
    /// delete's retention check cannot race an extension.
    private let metadataLock = Mutex<Void>(())

    static let retainAttribute = "user.redoubt.retain-until"
    static let tempPrefix = ".tmp-"
    static let tempSuffix = "~"

    /// Opens (and if missing creates, mode 0700) the store at `root`.
    ///
    /// Throws `.io` if the root is not a directory, is accessible by group or others, is
    /// owned by another user, or lives on a filesystem without user extended
    /// attributes. Removes temp files left by a crash. Probes the immutable flag and
    /// records the outcome in `immutableFlagSupported` / `immutabilityWarning` (also
    /// logged as a warning) instead of failing.
    public init(root: URL, logger: Logger = Logger(label: "redoubt.store.local")) throws {
        var path = root.standardizedFileURL.path
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        self.rootPath = path
        self.logger = logger
        try Self.createRootIfMissing(path)
        try Self.checkRootIsPrivate(path)
        let removed = try Self.removeStaleTemps(root: path)
        if removed > 0 {
            logger.notice("removed \(removed) temp file(s) left by an interrupted write", metadata: ["root": "\(path)"])
        }
        let problem = try Self.probe(root: path)
        self.immutabilityProblem = problem
        self.immutableFlagSupported = problem == nil
        if let problem {
            logger.warning("\(problem)", metadata: ["root": "\(path)"])
        }
    }

    // MARK: ObjectStore

    /// Stores `data` under `key`, sealed with the immutable flag; see the type's contract.
    /// A later identical put returns `.alreadyPresent` (and re-seals an object whose
    /// sealing a crash interrupted); other bytes throw `.conflict` and leave the stored
    /// object untouched. `retainUntil` is rounded up to a whole second.
    public func put(_ key: ObjectKey, _ data: [UInt8], retainUntil: Date?) async throws -> PutResult {
        try await offload { try self.putSync(key, .bytes(data), retainUntil) }
    }

    /// ``put(_:_:retainUntil:)`` of a file's bytes, copied in 1 MiB pieces into the store's
    /// own temp file, which is then published and sealed exactly as a put of an array is; a
    /// retry's comparison with the stored object also reads the file piece by piece.
    public func put(_ key: ObjectKey, contentsOf file: URL, retainUntil: Date?) async throws -> PutResult {
        try await putFile(key, file, retainUntil, adopting: false)
    }

    /// ``put(_:contentsOf:retainUntil:)`` of a file the caller gives up: on the store's
    /// filesystem the file itself becomes the object (its name is linked in and removed), so
    /// its bytes are neither read nor written again; elsewhere they are copied, and the file
    /// is left to the caller.
    public func put(_ key: ObjectKey, movingFile file: URL, retainUntil: Date?) async throws -> PutResult {
        try await putFile(key, file, retainUntil, adopting: true)
    }

    private func putFile(_ key: ObjectKey, _ file: URL, _ retainUntil: Date?,
                         adopting: Bool) async throws -> PutResult {
        try await offload {
            let source = open(file.path, O_RDONLY | O_CLOEXEC)
            guard source >= 0 else {
                let e = errno; throw self.ioError(key, "open source file \(file.path) for", self.path(of: key), e)
            }
            defer { close(source) }
            var st = stat()
            guard fstat(source, &st) == 0 else {
                let e = errno; throw self.ioError(key, "stat source file \(file.path) for", self.path(of: key), e)
            }
            return try self.putSync(key, .file(source, Int(st.st_size)), retainUntil,
                                    adopting: adopting ? (file.path, st) : nil)
        }
    }

    /// The object's bytes, or `range` of them (`.badRange` unless `0 <= lower` and
    /// `upper <= size`; an empty range inside the object returns no bytes).
    /// `.notFound` if there is no such object; `.integrity` if the file is shorter than
    /// its size said while reading.
    public func get(_ key: ObjectKey, range: Range<Int>?) async throws -> [UInt8] {
        try await offload { try self.getSync(key, range) }
    }

    /// The object opened once; each piece is read from the open file when asked, so
    /// that answering a pack needs no array of all of it.
    public func reader(_ key: ObjectKey) async throws -> ObjectReader? {
        guard let file = try await offload({ try self.openForReading(key) }) else { return nil }
        return ObjectReader(key: key, size: file.size) { offset, count in
            try await self.offload { try self.readPiece(file, key, offset: offset, count: count) }
        }
    }

    /// Size, retain-until and whether the immutable flag is set now; nil if no object.
    public func head(_ key: ObjectKey) async throws -> ObjectInfo? {
        try await offload { try self.headSync(key) }
    }

    /// Every object whose key starts with `prefix` (a plain string prefix, not only whole
    /// path components), in ascending key order. Temp files are never listed.
    public func list(prefix: String) async throws -> [ObjectInfo] {
        try await offload { try self.listSync(prefix) }
    }

    /// Deletes the object: `.locked` while `now < retainUntil`, `.notFound` if missing;
    /// otherwise clears the immutable flag, unlinks and fsyncs the directory.
    public func delete(_ key: ObjectKey, now: Date) async throws {
        try await offload { try self.deleteSync(key, now) }
    }

    /// Moves the object's retain-until to `until` if that is later; an earlier or equal
    /// date changes nothing. The flag is cleared only for the attribute write and is
    /// set again even if that write fails. `.notFound` if missing.
    public func extendRetention(_ key: ObjectKey, until: Date) async throws {
        try await offload { try self.extendSync(key, until) }
    }

    // MARK: Implementation

    private func offload<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try body() })
            }
        }
    }

    /// The bytes of a put: an array, or an open file of a known size read by piece.
    private enum PutSource {
        case bytes([UInt8])
        case file(Int32, Int)

        var count: Int {
            switch self {
            case .bytes(let b): b.count
            case .file(_, let n): n
            }
        }
    }

    /// `adopting`: the path and status of the file `data` has open, to be linked in as the
    /// temp file instead of copied where it can be (``adopt(_:_:as:in:)``).
    private func putSync(_ key: ObjectKey, _ data: PutSource, _ retainUntil: Date?,
                         adopting: (path: String, stat: stat)? = nil) throws -> PutResult {
        let (dirs, name) = Self.split(key)
        guard let dirfd = try openDirectory(dirs, creating: true, key: key) else {
            throw StoreError(.io, key: key.path,
                "the directory for \(path(of: key)) vanished while it was being created; retry the put")
        }
        defer { close(dirfd) }

        // Cheap answer for retries: no temp file when the object is already there.
        if let existing = try openObject(dirfd, name, key: key) {
            defer { close(existing) }
            return try compareExisting(existing, data, key: key)
        }

        let tmp = Self.tempName()
        let adopted = adopting.flatMap { Self.adopt($0.path, $0.stat, as: tmp, in: dirfd) }
        let fd = adopted ?? openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            let e = errno; throw ioError(key, "create temp file \(tmp) in", Self.dirPath(rootPath, dirs), e)
        }
        defer { close(fd) }
        var tempExists = true
        defer { if tempExists { unlinkat(dirfd, tmp, 0) } }

        if adopted == nil { try fill(fd, with: data, key: key) }
        if let retainUntil {
            // Before publishing: a visible object always carries its lock.
            try setRetain(fd, Self.retainSeconds(retainUntil), key: key)
        }
        guard fsync(fd) == 0 else { let e = errno; throw ioError(key, "fsync temp file for", path(of: key), e) }

        switch try publish(dirfd, tmp, name, key: key) {
        case .published:
            tempExists = false
        case .exists:
            // Lost a race with another put of the same key, or the name is a directory.
            guard let existing = try openObject(dirfd, name, key: key) else {
                var st = stat()
                if fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0, st.st_mode & S_IFMT == S_IFDIR {
                    throw StoreError(.io, key: key.path,
                        """
                            \(path(of: key)) is a directory holding other keys, so this key cannot be stored; this \
                            local store cannot hold both `a` and `a/b`
                            """)
                }
                throw StoreError(.io, key: key.path,
                    """
                        \(path(of: key)) existed during put and vanished before it could be compared (a concurrent \
                        delete); retry the put
                        """)
            }
            defer { close(existing) }
            return try compareExisting(existing, data, key: key)
        }
        guard fsync(dirfd) == 0 else {
            let e = errno; throw ioError(key, "fsync directory", Self.dirPath(rootPath, dirs), e)
        }

        if immutableFlagSupported {
            // The open descriptor still names the published inode.
            try metadataLock.withLock { _ in try seal(fd, key: key) }
        }
        return .created
    }

    /// Writes the bytes of a put into the temp file `fd`: an array at once, a file in 1 MiB
    /// pieces.
    private func fill(_ fd: Int32, with data: PutSource, key: ObjectKey) throws {
        switch data {
        case .bytes(let bytes):
            try Self.writeAll(fd, bytes, onError: { ioError(key, "write", self.path(of: key), $0) })
        case .file(let source, let size):
            var buffer = [UInt8](repeating: 0, count: min(1 << 20, max(size, 1)))
            var offset = 0
            while offset < size {
                let want = min(buffer.count, size - offset)
                guard try preadFully(source, &buffer, count: want, at: offset, key: key) == want else {
                    throw StoreError(.io, key: key.path,
                        "the source file became shorter than \(size) bytes while it was "
                                     + "copied into the store; retry the put")
                }
                try Self.writeAll(fd, Array(buffer[0..<want]), onError: {
                    ioError(key, "write", self.path(of: key), $0)
                })
                offset += want
            }
        }
    }

    /// Links the file at `path` (whose status is `st`) in as the temp file `tmp` and removes
    /// its own name, so that the inode has the temp name alone (once sealed, no other name of
    /// it could be removed). Returns a descriptor of it, or nil where the file must be copied
    /// instead: another filesystem, a name that no longer leads to that file, a file with
    /// other names or another owner, either of which could change it after it is stored.
    private static func adopt(_ path: String, _ st: stat, as tmp: String, in dirfd: Int32) -> Int32? {
        guard st.st_mode & S_IFMT == S_IFREG, st.st_nlink == 1, st.st_uid == geteuid(),
              linkat(AT_FDCWD, path, dirfd, tmp, 0) == 0 else { return nil }
        let fd = openat(dirfd, tmp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        var linked = stat()
        // The store's own mode for objects, whatever the file had.
        guard fd >= 0, fstat(fd, &linked) == 0, linked.st_dev == st.st_dev, linked.st_ino == st.st_ino,
              fchmod(fd, 0o600) == 0, unlink(path) == 0 else {
            if fd >= 0 { close(fd) }
            unlinkat(dirfd, tmp, 0)
            return nil
        }
        return fd
    }

    private enum Publish { case published, exists }

    /// Gives the temp file its final name without ever replacing an existing file.
    private func publish(_ dirfd: Int32, _ tmp: String, _ name: String, key: ObjectKey) throws -> Publish {
        if let renameat2 = Sys.renameat2 {
            if renameat2(dirfd, tmp, dirfd, name, Sys.renameNoReplace) == 0 { return .published }
            let e = errno
            if e == EEXIST { return .exists }
            // EINVAL/ENOSYS/ENOTSUP: this filesystem lacks RENAME_NOREPLACE; fall back.
            guard e == EINVAL || e == ENOSYS || e == ENOTSUP else {
                throw ioError(key, "rename temp file to", path(of: key), e)
            }
        }
        // link(2) fails with EEXIST rather than replacing: the same no-overwrite guarantee.
        if linkat(dirfd, tmp, dirfd, name, 0) == 0 {
            // Drop the temp name now: once sealed, the shared inode could not be unlinked.
            guard unlinkat(dirfd, tmp, 0) == 0 else {
                let e = errno
                _ = unlinkat(dirfd, name, 0)
                throw ioError(key, "remove temp name \(tmp) after linking", path(of: key), e)
            }
            return .published
        }
        let e = errno
        if e == EEXIST { return .exists }
        throw ioError(key, "link temp file to", path(of: key), e,
                      fix: e == EPERM || e == ENOTSUP
                          ? """
                              this filesystem supports neither renameat2(RENAME_NOREPLACE) nor hard links; put the \
                              store on ext4, xfs or btrfs
                              """ : nil)
    }

    /// Same bytes → `.alreadyPresent`; other bytes → `.conflict`. Compares size first.
    private func compareExisting(_ fd: Int32, _ data: PutSource, key: ObjectKey) throws -> PutResult {
        let size = try fileSize(fd, key: key)
        guard size == data.count else {
            throw StoreError(.conflict, key: key.path,
                             """
                                 an object of \(size) bytes is already stored under this key; this put has \
                                 \(data.count) bytes. Objects are never overwritten: store the new bytes under a new \
                                 key
                                 """)
        }
        let chunk = 1 << 20
        var offset = 0
        var buffer = [UInt8](repeating: 0, count: min(chunk, max(size, 1)))
        var theirs = [UInt8](repeating: 0, count: 0)
        if case .file = data { theirs = buffer }
        while offset < size {
            let want = min(chunk, size - offset)
            let got = try preadFully(fd, &buffer, count: want, at: offset, key: key)
            guard got == want else {
                throw StoreError(.integrity, key: key.path,
                    "the stored object is shorter than its size (\(size) bytes) while comparing; check the disk and "
                        + "the filesystem")
            }
            let same: Bool
            switch data {
            case .bytes(let bytes):
                same = buffer.withUnsafeBytes { a in
                    bytes.withUnsafeBytes { b in memcmp(a.baseAddress!, b.baseAddress! + offset, want) == 0 }
                }
            case .file(let source, _):
                guard try preadFully(source, &theirs, count: want, at: offset, key: key) == want else {
                    throw StoreError(.io, key: key.path,
                        "the source file became shorter than \(data.count) bytes while it "
                                     + "was compared with the stored object; retry the put")
                }
                same = buffer.withUnsafeBytes {
                    a in theirs.withUnsafeBytes { b in memcmp(a.baseAddress!, b.baseAddress!, want) == 0 }
                }
            }
            guard same else {
                throw StoreError(.conflict, key: key.path,
                                 "an object with other bytes (same size, \(size) bytes, first difference within bytes "
                                     + "\(offset)..<\(offset + want)) is already stored under this key. Objects are "
                                     + "never overwritten: store the new bytes under a new key")
            }
            offset += want
        }
        if immutableFlagSupported {
            // Completes a put that a crash interrupted between rename and seal: same
            // bytes, so the lock it should have had is the only thing that changes.
            try metadataLock.withLock { _ in try seal(fd, key: key) }
        }
        return .alreadyPresent
    }

    private func getSync(_ key: ObjectKey, _ range: Range<Int>?) throws -> [UInt8] {
        guard let fd = try openObject(key) else { throw notFound(key) }
        defer { close(fd) }
        let size = try fileSize(fd, key: key)
        let wanted = range ?? 0..<size
        guard wanted.lowerBound >= 0, wanted.upperBound <= size else {
            throw StoreError(.badRange, key: key.path,
                "range \(wanted.lowerBound)..<\(wanted.upperBound) lies outside the object's \(size) bytes")
        }
        var out = [UInt8](repeating: 0, count: wanted.count)
        let got = try preadFully(fd, &out, count: wanted.count, at: wanted.lowerBound, key: key)
        guard got == wanted.count else {
            throw shortRead(key, got, of: wanted.count, at: wanted.lowerBound, size: size)
        }
        return out
    }

    /// Fewer bytes than asked where the file's size said there were more.
    private func shortRead(_ key: ObjectKey, _ got: Int, of count: Int, at offset: Int, size: Int) -> StoreError {
        StoreError(.integrity, key: key.path,
            "short read: \(got) of \(count) bytes at offset \(offset) though the file reports \(size) bytes; "
                + "check the disk and the filesystem")
    }

    /// A file opened for an ``ObjectReader``, closed when the reader is dropped.
    private final class OpenFile: Sendable {
        let fd: Int32
        let size: Int
        init(fd: Int32, size: Int) {
            self.fd = fd
            self.size = size
        }
        deinit { close(fd) }
    }

    private func openForReading(_ key: ObjectKey) throws -> OpenFile? {
        guard let fd = try openObject(key) else { return nil }
        let size: Int
        do { size = try fileSize(fd, key: key) } catch {
            close(fd)
            throw error
        }
        return OpenFile(fd: fd, size: size)
    }

    private func readPiece(_ file: OpenFile, _ key: ObjectKey, offset: Int, count: Int) throws -> ByteBuffer {
        guard offset >= 0, count >= 0, offset + count <= file.size else {
            throw StoreError(.badRange, key: key.path,
                "range \(offset)..<\(offset + count) lies outside the object's \(file.size) bytes")
        }
        var piece = ByteBufferAllocator().buffer(capacity: count)
        let got = try piece.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
            try preadFully(file.fd, raw, count: count, at: offset, key: key)
        }
        guard got == count else { throw shortRead(key, got, of: count, at: offset, size: file.size) }
        return piece
    }

    private func headSync(_ key: ObjectKey) throws -> ObjectInfo? {
        guard let fd = try openObject(key) else { return nil }
        defer { close(fd) }
        return try info(fd, key: key)
    }

    private func info(_ fd: Int32, key: ObjectKey) throws -> ObjectInfo {
        ObjectInfo(key: key, size: try fileSize(fd, key: key),
                   retainUntil: try readRetain(fd, key: key), enforced: Self.isImmutable(fd))
    }

    private func listSync(_ prefix: String) throws -> [ObjectInfo] {
        // Start at the deepest directory the prefix names in full ("packs/3f/ab" → packs/3f).
        var dirPart = ""
        if let slash = prefix.lastIndex(of: "/") {
            dirPart = String(prefix[..<slash])
            // No key lies under a directory that is not itself a valid key path.
            guard ObjectKey(dirPart) != nil else { return [] }
        }
        var found: [ObjectInfo] = []
        try walk(relative: dirPart, prefix: prefix, into: &found)
        found.sort { $0.key < $1.key }
        return found
    }

    private func walk(relative: String, prefix: String, into found: inout [ObjectInfo]) throws {
        let dirPath = relative.isEmpty ? rootPath : rootPath + "/" + relative
        let dirfd = open(dirPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)
        if dirfd < 0 {
            let e = errno
            if e == ENOENT || e == ENOTDIR { return }
            throw ioError(prefix, "open directory", dirPath, e)
        }
        defer { close(dirfd) }
        for entry in try Self.entries(dirfd, path: dirPath, key: prefix) {
            // Temp files (`~`) and anything foreign fail this check and stay invisible.
            guard ObjectKey(entry.name) != nil else { continue }
            let rel = relative.isEmpty ? entry.name : relative + "/" + entry.name
            if entry.isDirectory {
                let asDir = rel + "/"
                if asDir.hasPrefix(prefix) || prefix.hasPrefix(asDir) {
                    try walk(relative: rel, prefix: prefix, into: &found)
                }
            } else if rel.hasPrefix(prefix), let key = ObjectKey(rel) {
                let fd = openat(dirfd, entry.name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
                if fd < 0 {
                    let e = errno
                    if e == ENOENT || e == ELOOP { continue }  // deleted meanwhile, or a symlink
                    throw ioError(key, "open", path(of: key), e)
                }
                defer { close(fd) }
                guard try Self.isRegularFile(fd, key: key, path: path(of: key)) else { continue }
                found.append(try info(fd, key: key))
            }
        }
    }

    private func deleteSync(_ key: ObjectKey, _ now: Date) throws {
        let (dirs, name) = Self.split(key)
        guard let dirfd = try openDirectory(dirs, creating: false, key: key) else { throw notFound(key) }
        defer { close(dirfd) }
        try metadataLock.withLock { _ in
            guard let fd = try openObject(dirfd, name, key: key) else { throw notFound(key) }
            defer { close(fd) }
            if let until = try readRetain(fd, key: key), now < until {
                // The lock is the whole point of the store: refuse, whatever the caller wants.
                throw StoreError(.locked, key: key.path,
                                 """
                                     locked until \(until.formatted(.iso8601)); it cannot be deleted before then \
                                     (asked at \(now.formatted(.iso8601)))
                                     """)
            }
            let flags = Self.flags(fd)
            let wasImmutable = flags.map { $0 & Sys.immutable != 0 } ?? false
            if let flags, wasImmutable, redoubt_fs_set_flags(fd, flags & ~Sys.immutable) != 0 {
                let e = errno
                throw ioError(key, "clear the immutable flag on", path(of: key), e,
                              fix: e == EPERM ? """
                                  the process needs CAP_LINUX_IMMUTABLE to delete sealed objects; run the server as \
                                  root or grant the capability
                                  """ : nil)
            }
            guard unlinkat(dirfd, name, 0) == 0 else {
                let e = errno
                if let flags, wasImmutable { _ = redoubt_fs_set_flags(fd, flags) }  // keep it sealed
                throw ioError(key, "unlink", path(of: key), e)
            }
            guard fsync(dirfd) == 0 else {
                let e = errno; throw ioError(key, "fsync directory", Self.dirPath(rootPath, dirs), e)
            }
        }
    }

    private func extendSync(_ key: ObjectKey, _ until: Date) throws {
        guard let fd = try openObject(key) else { throw notFound(key) }
        defer { close(fd) }
        let wanted = Self.retainSeconds(until)
        try metadataLock.withLock { _ in
            // Opened before the lock: a delete may have unlinked it since. Extending an
            // unlinked inode would report success for an object that is gone.
            var st = stat()
            if fstat(fd, &st) == 0, st.st_nlink == 0 { throw notFound(key) }
            if let current = try readRetain(fd, key: key), Int64(current.timeIntervalSince1970) >= wanted {
                return  // never shorten; equal is already done (retries land here)
            }
            let flags = Self.flags(fd)
            let wasImmutable = flags.map { $0 & Sys.immutable != 0 } ?? false
            if let flags, wasImmutable, redoubt_fs_set_flags(fd, flags & ~Sys.immutable) != 0 {
                let e = errno
                throw ioError(key, "clear the immutable flag (to extend retention) on", path(of: key), e,
                              fix: e == EPERM ? "the process needs CAP_LINUX_IMMUTABLE; run the server as root or "
                                  + "grant the capability" : nil)
            }
            var failure: Error?
            do {
                try setRetain(fd, wanted, key: key)
                if fsync(fd) != 0 {
                    let e = errno; throw ioError(key, "fsync after extending retention of", path(of: key), e)
                }
            } catch {
                failure = error
            }
            // Re-seal whether or not the attribute write worked: the object must not be
            // left unprotected by a failed extension.
            if wasImmutable || immutableFlagSupported {
                do {
                    try seal(fd, key: key)
                } catch let sealError as StoreError {
                    let before = failure.map { " after the retention write failed (\($0))" } ?? ""
                    throw StoreError(.io, key: key.path,
                        "the object is left WITHOUT its immutable flag\(before): \(sealError.detail)")
                }
            }
            if let failure { throw failure }
        }
    }

    // MARK: Files and flags

    private func path(of key: ObjectKey) -> String { rootPath + "/" + key.path }

    private static func split(_ key: ObjectKey) -> (dirs: [String], name: String) {
        var parts = key.path.split(separator: "/").map(String.init)
        let name = parts.removeLast()
        return (parts, name)
    }

    private static func dirPath(_ root: String, _ dirs: [String]) -> String {
        ([root] + dirs).joined(separator: "/")
    }

    private static func tempName() -> String {
        var rng = SystemRandomNumberGenerator()
        let hex = (0..<2).map { _ in
            let s = String(rng.next() as UInt64, radix: 16)
            return String(repeating: "0", count: 16 - s.count) + s
        }.joined()
        return tempPrefix + hex + tempSuffix
    }

    static func isTempName(_ name: String) -> Bool {
        name.hasPrefix(tempPrefix) && name.hasSuffix(tempSuffix)
    }

    /// Opens the key's directory; creates missing ones (0700, fsyncing each new one's
    /// parent) when `creating`, else returns nil if one is missing.
    private func openDirectory(_ dirs: [String], creating: Bool, key: ObjectKey) throws -> Int32? {
        var fd = open(rootPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { let e = errno; throw ioError(key, "open store root", rootPath, e) }
        var walked = rootPath
        for dir in dirs {
            walked += "/" + dir
            if creating {
                if mkdirat(fd, dir, 0o700) == 0 {
                    // The new directory's name is durable only once its parent is synced.
                    if fsync(fd) != 0 {
                        let e = errno
                        close(fd)
                        throw ioError(key, "fsync directory", (walked as NSString).deletingLastPathComponent, e)
                    }
                } else if errno != EEXIST {
                    let e = errno
                    close(fd)
                    throw ioError(key, "create directory", walked, e)
                }
            }
            let next = openat(fd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)
            let e = errno
            close(fd)
            guard next >= 0 else {
                if !creating && (e == ENOENT || e == ENOTDIR) { return nil }
                if e == ENOTDIR || e == ELOOP {
                    throw StoreError(.io, key: key.path,
                        "\(walked) is a file, not a directory, so \(key.path) cannot be stored under it; this local "
                            + "store cannot hold both `a` and `a/b`")
                }
                throw ioError(key, "open directory", walked, e)
            }
            fd = next
        }
        return fd
    }

    /// Opens the object read-only; nil if there is no regular file under that name.
    private func openObject(_ dirfd: Int32, _ name: String, key: ObjectKey) throws -> Int32? {
        let fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        return try checkedObject(fd, key: key)
    }

    private func openObject(_ key: ObjectKey) throws -> Int32? {
        let fd = open(path(of: key), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        return try checkedObject(fd, key: key)
    }

    private func checkedObject(_ fd: Int32, key: ObjectKey) throws -> Int32? {
        if fd < 0 {
            let e = errno
            if e == ENOENT || e == ENOTDIR { return nil }
            if e == ELOOP {
                throw StoreError(.io, key: key.path,
                    """
                        \(path(of: key)) is a symbolic link; a store holds only regular files. Remove it after \
                        checking who created it
                        """)
            }
            throw ioError(key, "open", path(of: key), e)
        }
        do {
            guard try Self.isRegularFile(fd, key: key, path: path(of: key)) else {
                close(fd)
                return nil  // a directory (prefix of other keys) is not an object
            }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    private static func isRegularFile(_ fd: Int32, key: ObjectKey, path: String) throws -> Bool {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw StoreError(.io, key: key.path, "fstat \(path): \(errnoText(errno))") }
        return st.st_mode & S_IFMT == S_IFREG
    }

    private func fileSize(_ fd: Int32, key: ObjectKey) throws -> Int {
        var st = stat()
        guard fstat(fd, &st) == 0 else { let e = errno; throw ioError(key, "fstat", path(of: key), e) }
        return Int(st.st_size)
    }

    /// Reads up to `count` bytes at `offset` into `buffer`; fewer only at end of file.
    private func preadFully(_ fd: Int32, _ buffer: inout [UInt8], count: Int, at offset: Int,
        key: ObjectKey) throws -> Int {
        try buffer.withUnsafeMutableBytes { try preadFully(fd, $0, count: count, at: offset, key: key) }
    }

    /// ``preadFully(_:_:count:at:key:)`` into raw memory of at least `count` bytes.
    private func preadFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, count: Int, at offset: Int,
        key: ObjectKey) throws -> Int {
        var done = 0
        while done < count {
            let n = pread(fd, buffer.baseAddress! + done, count - done, off_t(offset + done))
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                throw ioError(key, "read", path(of: key), e)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    private static func writeAll(_ fd: Int32, _ data: [UInt8], onError: (Int32) -> StoreError) throws {
        try data.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = write(fd, raw.baseAddress! + done, raw.count - done)
                if n < 0 {
                    let e = errno
                    if e == EINTR { continue }
                    throw onError(e)
                }
                done += n
            }
        }
    }

    /// Seconds since 1970, rounded up so that storing never shortens a lock; ≥ 0.
    static func retainSeconds(_ date: Date) -> Int64 {
        let t = date.timeIntervalSince1970.rounded(.up)
        guard t.isFinite else { return t > 0 ? Int64.max : 0 }
        if t <= 0 { return 0 }
        return t >= 9.2e18 ? Int64.max : Int64(t)
    }

    private func setRetain(_ fd: Int32, _ seconds: Int64, key: ObjectKey) throws {
        let value = Array(String(seconds).utf8)
        let rc = value.withUnsafeBytes { fsetxattr(fd, Self.retainAttribute, $0.baseAddress, $0.count, 0) }
        guard rc == 0 else {
            let e = errno
            throw ioError(key, "set \(Self.retainAttribute) on", path(of: key), e,
                          fix: e == ENOTSUP ? """
                              the filesystem does not support user extended attributes; use ext4, xfs or btrfs (or \
                              mount with user_xattr)
                              """ : nil)
        }
    }

    /// The recorded retain-until, or nil if the object has none.
    private func readRetain(_ fd: Int32, key: ObjectKey) throws -> Date? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = buffer.withUnsafeMutableBytes { fgetxattr(fd, Self.retainAttribute, $0.baseAddress, $0.count) }
        if n < 0 {
            let e = errno
            if e == ENODATA { return nil }
            if e == ERANGE {
                throw StoreError(.integrity, key: key.path,
                    """
                        \(Self.retainAttribute) on \(path(of: key)) is longer than any value Redoubt writes; inspect \
                        it with `getfattr -d \(path(of: key))`
                        """)
            }
            throw ioError(key, "read \(Self.retainAttribute) of", path(of: key), e)
        }
        let text = String(decoding: buffer[0..<n], as: UTF8.self)
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let seconds = Int64(text) else {
            throw StoreError(.integrity, key: key.path,
                """
                    \(Self.retainAttribute) on \(path(of: key)) is `\(text)`, not decimal Unix seconds; Redoubt did \
                    not write it. Inspect with `getfattr -d \(path(of: key))`
                    """)
        }
        return Date(timeIntervalSince1970: TimeInterval(seconds))
    }

    private static func flags(_ fd: Int32) -> Int32? {
        var flags: Int32 = 0
        return redoubt_fs_get_flags(fd, &flags) == 0 ? flags : nil
    }

    private static func isImmutable(_ fd: Int32) -> Bool {
        flags(fd).map { $0 & Sys.immutable != 0 } ?? false
    }

    /// Sets FS_IMMUTABLE_FL if not yet set. Call with `metadataLock` held.
    private func seal(_ fd: Int32, key: ObjectKey) throws {
        var flags: Int32 = 0
        guard redoubt_fs_get_flags(fd, &flags) == 0 else {
            let e = errno
            throw ioError(key, "read inode flags (FS_IOC_GETFLAGS) of", path(of: key), e)
        }
        if flags & Sys.immutable != 0 { return }
        guard redoubt_fs_set_flags(fd, flags | Sys.immutable) == 0 else {
            let e = errno
            throw ioError(key, "set the immutable flag on", path(of: key), e,
                          fix: "the object is stored but unsealed; a retried put of the same bytes seals it. "
                              + (e == EPERM ? "The process needs CAP_LINUX_IMMUTABLE" : "Check the filesystem"))
        }
    }

    // MARK: Errors

    private func notFound(_ key: ObjectKey) -> StoreError {
        StoreError(.notFound, key: key.path, "no object under this key in \(rootPath)")
    }

    private func ioError(_ key: ObjectKey, _ op: String, _ path: String, _ e: Int32, fix: String? = nil) -> StoreError {
        ioError(key.path, op, path, e, fix: fix)
    }

    private func ioError(_ key: String, _ op: String, _ path: String, _ e: Int32, fix: String? = nil) -> StoreError {
        Self.ioError(key, op, path, e, root: rootPath, fix: fix)
    }

    static func ioError(_ key: String, _ op: String, _ path: String, _ e: Int32, root: String,
        fix: String? = nil) -> StoreError {
        let remedy = fix ?? defaultFix(e, root: root)
        return StoreError(.io, key: key, "could not \(op) \(path): \(errnoText(e))" + (remedy.map { ". Fix: \($0)" }
            ?? ""))
    }

    private static func defaultFix(_ e: Int32, root: String) -> String? {
        switch e {
        case EACCES, EPERM:
            return "run Redoubt as the user that owns \(root) (sealed objects also need CAP_LINUX_IMMUTABLE)"
        case ENOSPC, EDQUOT:
            return "free space, or raise the quota, on the filesystem holding \(root)"
        case EROFS:
            return "remount the filesystem holding \(root) read-write"
        case EIO:
            return "the disk reported an I/O error; check `dmesg` and the disk's health"
        case EMFILE, ENFILE:
            return "raise the open-file limit (LimitNOFILE= in the unit, or ulimit -n)"
        default:
            return nil
        }
    }

    // MARK: Start-up

    private static func createRootIfMissing(_ root: String) throws {
        var st = stat()
        if stat(root, &st) == 0 { return }
        guard errno == ENOENT else { let e = errno; throw ioError(root, "stat store root", root, e, root: root) }
        // mkdir -p, every new directory 0700, each made durable in its parent.
        var built = root.hasPrefix("/") ? "" : "."
        for part in root.split(separator: "/") {
            let parent = built.isEmpty ? "/" : built
            built += "/" + part
            if mkdir(built, 0o700) == 0 {
                let pfd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                if pfd >= 0 { _ = fsync(pfd); close(pfd) }
            } else if errno != EEXIST {
                let e = errno
                throw ioError(root, "create store directory", built, e, root: root)
            }
        }
    }

    private static func checkRootIsPrivate(_ root: String) throws {
        var st = stat()
        guard stat(root, &st) == 0 else { let e = errno; throw ioError(root, "stat store root", root, e, root: root) }
        guard st.st_mode & S_IFMT == S_IFDIR else {
            throw StoreError(.io, key: root,
                "store root \(root) is not a directory. Fix: point the store at a directory")
        }
        let mode = st.st_mode & 0o7777
        // Others could read objects' names and sizes, or plant files; refuse rather than chmod
        // silently, because a shared root means the setup is not what the admin thinks.
        guard mode & 0o077 == 0 else {
            throw StoreError(.io, key: root,
                """
                    store root \(root) is accessible by group or others (mode \(String(mode, radix: 8))). Fix: chmod \
                    700 \(root)
                    """)
        }
        guard st.st_uid == geteuid() else {
            throw StoreError(.io, key: root,
                """
                    store root \(root) is owned by uid \(st.st_uid), not by this process (uid \(geteuid())). Fix: \
                    chown the directory to the user running Redoubt
                    """)
        }
    }

    /// Deletes every `.tmp-…~` file under the root (clearing an immutable flag a crashed
    /// probe may have left); returns how many.
    private static func removeStaleTemps(root: String) throws -> Int {
        var removed = 0
        func sweep(_ dir: String) throws {
            let dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW)
            guard dirfd >= 0 else { let e = errno; throw ioError(root, "open directory", dir, e, root: root) }
            defer { close(dirfd) }
            var removedHere = false
            for entry in try entries(dirfd, path: dir, key: root) {
                if entry.isDirectory {
                    if ObjectKey(entry.name) != nil { try sweep(dir + "/" + entry.name) }
                } else if isTempName(entry.name) {
                    if unlinkat(dirfd, entry.name, 0) != 0 {
                        let e = errno
                        let fd = openat(dirfd, entry.name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
                        if fd >= 0 {
                            var st = stat()
                            // A sealed temp that is also linked elsewhere shares its inode with
                            // an object: clearing its flag would unseal that object. Leave it
                            // (it is never listed) rather than weaken a lock.
                            if fstat(fd, &st) == 0, st.st_nlink > 1 {
                                close(fd)
                                continue
                            }
                            if let f = flags(fd), f & Sys.immutable != 0 {
                                _ = redoubt_fs_set_flags(fd, f & ~Sys.immutable)
                            }
                            close(fd)
                        }
                        guard unlinkat(dirfd, entry.name, 0) == 0 else {
                            throw ioError(root, "remove stale temp file", dir + "/" + entry.name, e, root: root)
                        }
                    }
                    removed += 1
                    removedHere = true
                }
            }
            if removedHere { _ = fsync(dirfd) }
        }
        try sweep(root)
        return removed
    }

    /// Sets and clears `FS_IMMUTABLE_FL` (and a user xattr) on a probe file created in
    /// `directory`, then removes it: nil if the flag works there, else a sentence naming
    /// the cause and the fix. Throws `.io` if the probe file cannot be created, user
    /// xattrs do not work, or the flag was set but could not be cleared. For `doctor`.
    public static func probeImmutableFlag(in directory: String) throws -> String? {
        try probe(root: directory)
    }

    /// Proves user xattrs work (else throws) and tries the immutable flag on a probe file;
    /// returns nil if the flag works, else the warning text.
    private static func probe(root: String) throws -> String? {
        let name = tempName()
        let probePath = root + "/" + name
        let fd = open(probePath, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { let e = errno; throw ioError(root, "create probe file", probePath, e, root: root) }
        defer {
            // Best effort: clear whatever we set, then remove. A leftover is swept at next init.
            if let f = flags(fd), f & Sys.immutable != 0 { _ = redoubt_fs_set_flags(fd, f & ~Sys.immutable) }
            close(fd)
            unlink(probePath)
        }
        let value = Array("0".utf8)
        let xattr = value.withUnsafeBytes { fsetxattr(fd, retainAttribute, $0.baseAddress, $0.count, 0) }
        guard xattr == 0 else {
            let e = errno
            throw ioError(root, "set a user extended attribute on", probePath, e, root: root,
                          fix: """
                              the store records each object's retain-until in the attribute \(retainAttribute); put \
                              the store on ext4, xfs or btrfs (or mount with user_xattr)
                              """)
        }

        let fsName = filesystemName(root)
        var flags: Int32 = 0
        guard redoubt_fs_get_flags(fd, &flags) == 0 else {
            let e = errno
            return "Immutable flag unavailable in \(root): the \(fsName) filesystem does not support inode flags "
                + "(FS_IOC_GETFLAGS: \(errnoText(e))). Objects are stored and their retention recorded, but NOT "
                + "protected against deletion or change by anyone with access to this host. Fix: put the store on "
                + "ext4, xfs or btrfs."
        }
        guard redoubt_fs_set_flags(fd, flags | Sys.immutable) == 0 else {
            let e = errno
            if e == EPERM {
                let cause = holdsLinuxImmutableCapability()
                    ? """
                        the kernel refused although the process holds CAP_LINUX_IMMUTABLE (a container whose user \
                        namespace does not own the filesystem?)
                        """
                    : "this process lacks CAP_LINUX_IMMUTABLE"
                return """
                    Immutable flag unavailable in \(root): \(cause) (FS_IOC_SETFLAGS: \(errnoText(e))). Objects are \
                    stored and their retention recorded, but NOT protected against deletion or change by anyone with \
                    access to this host. Fix: run the server as root, or grant the capability (systemd: \
                    AmbientCapabilities=CAP_LINUX_IMMUTABLE; or setcap cap_linux_immutable+ep on the binary).
                    """
            }
            return "Immutable flag unavailable in \(root): the \(fsName) filesystem does not support FS_IMMUTABLE_FL "
                + "(FS_IOC_SETFLAGS: \(errnoText(e))). Objects are stored and their retention recorded, but NOT "
                + "protected against deletion or change by anyone with access to this host. Fix: put the store on "
                + "ext4, xfs or btrfs."
        }
        var readBack: Int32 = 0
        guard redoubt_fs_get_flags(fd, &readBack) == 0, readBack & Sys.immutable != 0 else {
            return """
                Immutable flag unavailable in \(root): the \(fsName) filesystem accepted FS_IMMUTABLE_FL but did not \
                keep it. Objects are stored and their retention recorded, but NOT protected. Fix: put the store on \
                ext4, xfs or btrfs.
                """
        }
        guard redoubt_fs_set_flags(fd, readBack & ~Sys.immutable) == 0 else {
            let e = errno
            throw StoreError(.io, key: root,
                "the immutable flag could be set on the probe file \(probePath) but not cleared (\(errnoText(e))); "
                    + "deletion of expired objects would fail. Fix: check the filesystem, then `chattr -i "
                    + "\(probePath) && rm \(probePath)`")
        }
        return nil
    }

    /// Whether CAP_LINUX_IMMUTABLE (bit 9) is in this process's effective set.
    private static func holdsLinuxImmutableCapability() -> Bool {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return false }
        for line in status.split(separator: "\n") where line.hasPrefix("CapEff:") {
            let hex = line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces)
            if let bits = UInt64(hex, radix: 16) { return bits & (1 << 9) != 0 }
        }
        return false
    }

    /// The type of the filesystem holding `path`, from the longest matching mount point
    /// in /proc/self/mounts (statfs is not imported into Swift); "underlying" if unknown.
    private static func filesystemName(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return "underlying" }
        let real = String(cString: resolved)
        free(resolved)
        guard let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else {
            return "underlying"
        }
        var best: (point: String, type: String)?
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 3 else { continue }
            let point = fields[1].replacingOccurrences(of: "\\040", with: " ")
            let covers = point == "/" || real == point || real.hasPrefix(point + "/")
            if covers, point.count >= (best?.point.count ?? 0) { best = (point, String(fields[2])) }
        }
        return best?.type ?? "underlying"
    }

    struct Entry { let name: String; let isDirectory: Bool }

    /// The names in a directory except `.` and `..`; symlinks and other specials are
    /// reported as non-directories (callers open them with O_NOFOLLOW).
    private static func entries(_ dirfd: Int32, path: String, key: String) throws -> [Entry] {
        let dup = Glibc.dup(dirfd)
        guard dup >= 0 else {
            let e = errno
            throw StoreError(.io, key: key, "could not read directory \(path): \(errnoText(e))")
        }
        guard let dir = fdopendir(dup) else {
            let e = errno
            close(dup)
            throw StoreError(.io, key: key, "could not read directory \(path): \(errnoText(e))")
        }
        defer { closedir(dir) }
        var out: [Entry] = []
        errno = 0
        while let ent = readdir(dir) {
            let name = withUnsafePointer(to: ent.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if name == "." || name == ".." { continue }
            var isDir = Int32(ent.pointee.d_type) == Int32(DT_DIR)
            if Int32(ent.pointee.d_type) == Int32(DT_UNKNOWN) {
                var st = stat()
                isDir = fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_mode & S_IFMT == S_IFDIR
            }
            out.append(Entry(name: name, isDirectory: isDir))
            errno = 0
        }
        if errno != 0 { throw StoreError(.io, key: key, "could not read directory \(path): \(errnoText(errno))") }
        return out
    }
}

func errnoText(_ e: Int32) -> String {
    String(cString: strerror(e)) + " (errno \(e))"
}

/// libc entry points that neither Glibc's Swift module nor CRedoubtSys imports:
/// renameat2 is declared only under _GNU_SOURCE, so it is resolved once by name.
/// A `redoubt_renameat2` wrapper in CRedoubtSys would be the cleaner home.
enum Sys {
    typealias RenameAt2 = @convention(c) (Int32, UnsafePointer<CChar>?, Int32, UnsafePointer<CChar>?, UInt32) -> Int32

    /// RENAME_NOREPLACE from <linux/fs.h>.
    static let renameNoReplace: UInt32 = 1
    static let immutable: Int32 = redoubt_fs_immutable_fl()

    /// Nil on a libc without it (glibc < 2.28); `put` then falls back to link + unlink.
    static let renameat2: RenameAt2? = dlsym(nil, "renameat2").map { unsafeBitCast($0, to: RenameAt2.self) }
}

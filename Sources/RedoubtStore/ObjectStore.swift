import Foundation
import NIOCore

/// The name of an object in a store: a relative path of `[a-z0-9._-]` components
/// separated by `/`, such as `packs/3f/3fa1…` or `snapshots/acme/9c2e…`.
public struct ObjectKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let path: String

    /// Validates the key; nil for anything that could escape the store's root (`..`,
    /// absolute paths, empty components) or use characters outside the safe set.
    public init?(_ path: String) {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard !path.isEmpty, path.utf8.count <= 512, parts.allSatisfy({ p in
            !p.isEmpty && p != "." && p != ".." && p.utf8.allSatisfy { c in
                (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c == 0x2e || c == 0x5f || c == 0x2d
            }
        }) else { return nil }
        self.path = path
    }

    public var description: String { path }
    public static func < (a: Self, b: Self) -> Bool { a.path < b.path }
}

/// What a store knows about one object.
public struct ObjectInfo: Sendable, Equatable {
    public let key: ObjectKey
    public let size: Int
    /// The object's lock: it cannot be deleted or changed before this time. Nil if none.
    public let retainUntil: Date?
    /// Whether the store enforces the lock by itself (Linux immutable flag, S3 COMPLIANCE).
    public let enforced: Bool

    public init(key: ObjectKey, size: Int, retainUntil: Date?, enforced: Bool) {
        self.key = key
        self.size = size
        self.retainUntil = retainUntil
        self.enforced = enforced
    }
}

/// The outcome of a put.
public enum PutResult: Sendable, Equatable {
    /// The object was written.
    case created
    /// An object with the same key and the same bytes already existed; nothing changed.
    case alreadyPresent
}

/// The one public error of RedoubtStore. `code` is stable.
public struct StoreError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// No object under that key.
        case notFound = "E_STORE_NOT_FOUND"
        /// An object exists under that key with different bytes: never overwritten.
        case conflict = "E_STORE_CONFLICT"
        /// The object's lock has not expired: it cannot be deleted or shortened.
        case locked = "E_STORE_LOCKED"
        /// The requested range lies outside the object.
        case badRange = "E_STORE_RANGE"
        /// The store's medium failed (I/O error, permission, full disk).
        case io = "E_STORE_IO"
        /// The store's contents are not what was written (size or hash mismatch).
        case integrity = "E_STORE_INTEGRITY"
        /// A remote store (S3) refused the request; `remoteCode` keeps its own code.
        case remote = "E_STORE_REMOTE"
        /// The store's settings are unusable (bad endpoint URL, bucket name, CA).
        case config = "E_STORE_CONFIG"
    }

    public let code: Code
    public let key: String
    public let detail: String
    /// The remote server's own error code (S3's `AccessDenied`, `InvalidRequest`, …), if any.
    public var remoteCode: String? = nil

    public init(_ code: Code, key: String, _ detail: String) {
        self.code = code
        self.key = key
        self.detail = detail
    }

    public var description: String { "\(key): \(detail) [\(code.rawValue)]" }
}

/// A store of immutable, retention-locked objects. It knows names, bytes, ranges,
/// listing, deletion and retention; nothing of chunks, packs or snapshots.
///
/// Contracts, shared by every implementation and checked by the conformance suite
/// (Tests/RedoubtStoreTests/StoreConformance.swift):
/// - `put` is atomic and durable when it returns: a reader sees the whole object or
///   none. It never overwrites: same key and same bytes is `.alreadyPresent`, same key
///   and other bytes throws `.conflict`. Idempotent, so safe to retry.
/// - `get` returns exactly the bytes put (or the range asked); `.notFound`, `.badRange`.
/// - `delete` throws `.locked` while `now < retainUntil`; deleting a missing object
///   throws `.notFound`.
/// - `extendRetention` only ever moves a lock later; an earlier date is a no-op, never a
///   shortening. Safe to retry.
/// - Integrity is the caller's job above the store (IDs are hashes), but a store that
///   detects a short read reports `.integrity`.
public protocol ObjectStore: Sendable {
    func put(_ key: ObjectKey, _ data: [UInt8], retainUntil: Date?) async throws -> PutResult
    func get(_ key: ObjectKey, range: Range<Int>?) async throws -> [UInt8]
    func head(_ key: ObjectKey) async throws -> ObjectInfo?
    /// Objects whose key starts with `prefix`, in ascending key order.
    func list(prefix: String) async throws -> [ObjectInfo]
    func delete(_ key: ObjectKey, now: Date) async throws
    func extendRetention(_ key: ObjectKey, until: Date) async throws
    /// `put` of the bytes of a local file (which the caller does not change meanwhile), with
    /// the same contract. A store that can stream (``LocalStore``) copies it in bounded
    /// pieces; the default reads the file whole and calls `put`.
    func put(_ key: ObjectKey, contentsOf file: URL, retainUntil: Date?) async throws -> PutResult
    /// `put(_:contentsOf:retainUntil:)` of a file the caller gives up: a store may keep the
    /// file itself rather than a copy (``LocalStore`` does, on its own filesystem), so the file
    /// may be gone afterwards, whether the put succeeded or not. The default copies it.
    func put(_ key: ObjectKey, movingFile file: URL, retainUntil: Date?) async throws -> PutResult
    /// The object opened to be read a piece at a time; nil if there is none. A store that
    /// can read in place (``LocalStore``) reads each piece when asked; the default reads
    /// the object whole first.
    func reader(_ key: ObjectKey) async throws -> ObjectReader?
}

/// An object opened to be read in pieces, so that its reader (a server answering a pack)
/// needs no array of all of it. What it holds open is released when the last copy is
/// dropped.
public struct ObjectReader: Sendable {
    public let key: ObjectKey
    public let size: Int
    private let readRange: @Sendable (_ offset: Int, _ count: Int) async throws -> ByteBuffer

    /// `read` answers exactly `count` bytes from `offset`, within `size`, or throws.
    public init(key: ObjectKey, size: Int,
                read: @escaping @Sendable (_ offset: Int, _ count: Int) async throws -> ByteBuffer) {
        self.key = key
        self.size = size
        self.readRange = read
    }

    /// Every byte in order, in pieces of at most `pieceSize`, each read once `body` has
    /// taken the one before.
    public func forEachPiece(of pieceSize: Int, _ body: (ByteBuffer) async throws -> Void) async throws {
        var offset = 0
        while offset < size {
            let count = Swift.min(pieceSize, size - offset)
            let piece = try await readRange(offset, count)
            guard piece.readableBytes == count else {
                throw StoreError(.integrity, key: key.path,
                    "read \(piece.readableBytes) of the \(count) bytes asked at offset \(offset)")
            }
            offset += count
            try await body(piece)
        }
    }
}

extension ObjectStore {
    public func get(_ key: ObjectKey) async throws -> [UInt8] { try await get(key, range: nil) }

    public func put(_ key: ObjectKey, contentsOf file: URL, retainUntil: Date?) async throws -> PutResult {
        let data: Data
        do { data = try Data(contentsOf: file) } catch {
            throw StoreError(.io, key: key.path, "cannot read \(file.path) to store it: \(error)")
        }
        return try await put(key, [UInt8](data), retainUntil: retainUntil)
    }

    public func put(_ key: ObjectKey, movingFile file: URL, retainUntil: Date?) async throws -> PutResult {
        try await put(key, contentsOf: file, retainUntil: retainUntil)
    }

    public func reader(_ key: ObjectKey) async throws -> ObjectReader? {
        let whole: ByteBuffer
        do { whole = ByteBuffer(bytes: try await get(key)) } catch let e as StoreError where e.code == .notFound {
            return nil
        }
        return ObjectReader(key: key, size: whole.readableBytes) { offset, count in
            guard let piece = whole.getSlice(at: offset, length: count) else {
                throw StoreError(.badRange, key: key.path,
                    "range \(offset)..<\(offset + count) lies outside the object's \(whole.readableBytes) bytes")
            }
            return piece
        }
    }
}

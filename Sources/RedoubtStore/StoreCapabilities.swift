import Foundation

// What only some stores can do, as protocols a caller asks for (`store as? any
// LegalHoldStore`) instead of naming a concrete store type: a new store gains a
// capability by conforming, and nothing above the store switches on its type.

/// A store that can put an object under a legal hold: a held object cannot be deleted,
/// by anyone, until the hold is lifted, whatever its lock says.
public protocol LegalHoldStore: ObjectStore {
    /// Sets (`on`) or lifts the key's legal hold. `.notFound` if there is no such object.
    func setLegalHold(_ key: ObjectKey, on: Bool) async throws
    /// Whether the key is held; nil when the store reports no hold ever set.
    func legalHold(_ key: ObjectKey) async throws -> Bool?
}

/// A store that can prove, with a canary of its own, that it enforces its locks against
/// everyone (S3 Object Lock in COMPLIANCE mode); never by changing its settings.
public protocol LockProvingStore: ObjectStore {
    /// Runs the proof at `now`; every check is reported, none throws.
    func proveLocks(now: Date) async -> S3LockProof.Result
}

/// A store that keeps every version of an object and answers from its *original* one: a
/// read, head or listing is of the first version written, pinned by its version ID, so a
/// later version or delete marker (written by anyone holding the bucket's credentials) is
/// never read instead, and a concurrent change cannot mix two versions' bytes. Each
/// original carries the SHA-256 of the bytes written, and every whole `get` checks the bytes
/// against it (`.integrity` on a mismatch, or for a version that carries none: Redoubt did
/// not write it). What makes an off-site copy checkable, and a rerun able to skip what is
/// there, without the server or its catalog (an S3 bucket with versioning).
public protocol OriginalVersionStore: ObjectStore {
    /// Where the store is, for messages and audit records (`s3://bucket/prefix`); no secret.
    var place: String { get }
    /// The original version's info and the SHA-256 recorded when it was written (nil when it
    /// carries none); nil when the key has no version. Reads no bytes.
    func headRecorded(_ key: ObjectKey) async throws -> (info: ObjectInfo, sha256: String?)?
    /// The names (relative to the store) of every key under `prefix` that has an original
    /// version, including names that are not valid ``ObjectKey``s: what something other than
    /// Redoubt wrote is found too, never silently skipped.
    func originalNames(prefix: String) async throws -> [String]
}

/// Where an off-site copy goes: a store that proves it enforces its locks against everyone
/// (Object Lock COMPLIANCE), carries legal holds, and answers from original versions with
/// their recorded digests. An S3 bucket today; another store becomes a copy target by
/// conforming to all three.
public typealias CopyTargetStore = OriginalVersionStore & LockProvingStore & LegalHoldStore

/// A store whose locks may not be enforced on this host, and can say why (a local
/// directory on a filesystem without the immutable flag, or without the capability).
public protocol ImmutabilityReporting: Sendable {
    /// Why the store's locks are not enforced here, or nil when they are.
    var immutabilityWarning: String? { get }
}

extension S3Store: LegalHoldStore, LockProvingStore, OriginalVersionStore {
    public func proveLocks(now: Date) async -> S3LockProof.Result { await S3LockProof(client: client).run(now: now) }
}

extension LocalStore: ImmutabilityReporting {}

/// Where a store keeps its objects: the one description every store is built from.
public enum StoreLocation: Sendable {
    /// A local directory with immutable flags (`LocalStore`).
    case directory(String)
    /// An S3 bucket and prefix (`S3Store`); `caPEM` is a private CA for its endpoint.
    case s3(S3Target, caPEM: String? = nil)
}

/// Builds the store a location names: the one place that chooses a store type.
public enum StoreFactory {
    public static func make(_ location: StoreLocation) throws -> any ObjectStore {
        switch location {
        case .directory(let path):
            return try LocalStore(root: URL(fileURLWithPath: path))
        case .s3(let target, let caPEM):
            return try target.store(transport: try caPEM.map { try AHCTransport.shared(caPEM: $0) })
        }
    }
}

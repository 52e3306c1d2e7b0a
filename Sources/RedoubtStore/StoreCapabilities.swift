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

/// A store whose locks may not be enforced on this host, and can say why (a local
/// directory on a filesystem without the immutable flag, or without the capability).
public protocol ImmutabilityReporting: Sendable {
    /// Why the store's locks are not enforced here, or nil when they are.
    var immutabilityWarning: String? { get }
}

extension S3Store: LegalHoldStore, LockProvingStore {
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

import Crypto
import Foundation
import GRDB
import RedoubtCore

/// A principal's role (DESIGN.md §3).
public enum Role: String, Sendable, Codable, CaseIterable {
    /// A protected host: add packs, commit its own snapshots, list their metadata.
    case writer
    /// Downloads a tenant's packs and manifests to restore (holds the wrapped read key).
    case restorer
    /// Reads the audit log and metrics.
    case auditor
    /// Manages tenants and enrollments.
    case admin
}

/// An authenticated caller.
public struct Principal: Sendable, Equatable, Codable {
    public let id: String
    public let role: Role
    /// Nil for admins and auditors of the whole server.
    public let tenant: String?
    public let name: String
    public let fingerprint: String
    /// A writer's Ed25519 key that signs its manifests.
    public let hostKey: [UInt8]?
}

/// A tenant as the server knows it: public material only, plus the write material it
/// hands to enrolling hosts and the *wrapped* read key it hands to restorers.
public struct TenantRecord: Sendable, Equatable {
    public let name: String
    public let readKeyID: String
    public let readPublicKey: [UInt8]
    /// Encoded SharedWriteMaterial (chunk-ID key, chunker seed, read public key). It
    /// decrypts nothing, but is confidential: it would let an intruder confirm guesses
    /// about content through chunk IDs.
    public let writeMaterial: [UInt8]
    /// JSON of the wrapped read key (RedoubtKMS.WrappedReadKey): useless without the
    /// key provider.
    public let wrappedReadKey: String
    public let minRetention: TimeInterval
    public let createdAt: Date
    /// The read key's wrapping version: 1 at creation, +1 on every rotation (and on the
    /// shred, which leaves no wrapped copy). The tenant descriptor is `tenant-v<N>.json`.
    public var keyVersion: Int = 1
    /// When the tenant was crypto-shredded; nil while its read key still exists.
    public var shreddedAt: Date? = nil

    public init(name: String, readKeyID: String, readPublicKey: [UInt8], writeMaterial: [UInt8], wrappedReadKey: String,
                minRetention: TimeInterval, createdAt: Date, keyVersion: Int = 1, shreddedAt: Date? = nil) {
        self.name = name
        self.readKeyID = readKeyID
        self.readPublicKey = readPublicKey
        self.writeMaterial = writeMaterial
        self.wrappedReadKey = wrappedReadKey
        self.minRetention = minRetention
        self.createdAt = createdAt
        self.keyVersion = keyVersion
        self.shreddedAt = shreddedAt
    }
}

extension TenantRecord {
    func withWriteMaterial(_ material: [UInt8]) -> TenantRecord {
        TenantRecord(name: name, readKeyID: readKeyID, readPublicKey: readPublicKey, writeMaterial: material,
            wrappedReadKey: wrappedReadKey,
                     minRetention: minRetention, createdAt: createdAt, keyVersion: keyVersion, shreddedAt: shreddedAt)
    }
}

/// A key-encryption key that once wrapped a tenant's read key and was rotated away from.
/// `stub` is the wrapped key's JSON with the wrapped bytes removed: it names the provider
/// and the KEK, so the KEK can be destroyed later, but holds nothing that unwraps.
public struct RetiredKEK: Sendable, Equatable, Codable {
    public let version: Int
    public let stub: String
    public let retiredAt: Date
    public let destroyedAt: Date?
}

/// Public metadata of a committed snapshot.
public struct SnapshotRecord: Sendable, Equatable, Codable {
    public let id: String
    public let tenant: String
    public let host: String
    public let time: Date
    public let committedAt: Date
    public let retainUntil: Date
    public let paths: [String]
    public let tags: [String]
    public let statistics: SnapshotStatistics
    public let packCount: Int
    public let manifestSize: Int
}

/// The server's SQLite catalog (GRDB). Everything in it can be rebuilt from the store
/// except principals, enrollments and the audit log (docs/PROTOCOL.md §6).
///
/// It implements every repository protocol of ``CatalogRepositories``
/// (CatalogRepositories.swift), one aggregate per file (SQLiteCatalog+Packs.swift, …);
/// its schema is CatalogSchema.swift.
public final class Catalog: Sendable {
    let db: DatabasePool
    /// Nil for a read-only catalog, which writes no log.
    let checkpointer: CatalogCheckpointer?

    public init(path: String) throws {
        var config = Configuration()
        config.busyMode = .timeout(10)
        // Why: a shred's cleared write material (and other deleted rows) must not linger in
        // the file's free pages.
        config.prepareDatabase { db in try db.execute(sql: "PRAGMA secure_delete = ON") }
        db = try DatabasePool(path: path, configuration: config)
        // Why: the pool sets `synchronous = NORMAL` on its writer, under which a commit is
        // durable only at the next checkpoint. A power loss could then take back what was
        // already answered: a committed snapshot (while its packs' lock extensions go too),
        // a revocation, the last audit records. FULL syncs the WAL at every commit. Set here,
        // after the pool's own set-up, on its one writer connection (readers write nothing).
        try db.writeWithoutTransaction { try $0.execute(sql: "PRAGMA synchronous = FULL") }
        // The log is checkpointed beside the writer (CatalogCheckpointer.swift); the writer's
        // own checkpoint only bounds it.
        try db.writeWithoutTransaction {
            try $0.execute(sql: "PRAGMA wal_autocheckpoint = \(CatalogCheckpointer.ceilingPages)")
        }
        // Why: SQLite creates the file and its -wal/-shm 0644; the catalog holds write
        // material and the audit log, readable by the service user only (doctor: data.private).
        for suffix in ["", "-wal", "-shm"] { _ = chmod(path + suffix, 0o600) }
        try Self.migrator.migrate(db)
        checkpointer = try CatalogCheckpointer(path: path)
    }

    /// Opens an existing catalog read-only, without migrating it: for `doctor`, which must
    /// not change what it inspects. (SQLite may still create `-wal`/`-shm`; run as root,
    /// it gives them the database file's owner, so the service can still open them.)
    public init(readOnlyPath path: String) throws {
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.readonly = true
        db = try DatabasePool(path: path, configuration: config)
        checkpointer = nil
    }
}

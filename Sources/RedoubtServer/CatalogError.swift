import RedoubtCore

/// What a catalog repository throws when it refuses an operation: a code a caller can act
/// on, the object it concerns, and a message that names the object and the fix. It says
/// nothing of HTTP: ``ServerError/init(_:)`` maps it to a status and a stable `E_` code at
/// the service's edge, in one table, so every backend (SQLite today, PostgreSQL next)
/// answers a client exactly alike. Database failures themselves (I/O, a locked file) are
/// not turned into this type; they pass through as the backend's own errors.
public struct CatalogError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable, CaseIterable {
        /// The object does not exist (or no longer does).
        case notFound
        /// The object's state moved on (another change came first, already decided, already
        /// used): fetch it again.
        case conflict
        /// Garbage collection is deleting the object from the store right now: send it again
        /// once that is done. (A merely *queued* deletion is taken back instead.)
        case beingCollected
        /// A commit names packs the catalog does not hold (collected meanwhile): ``packs``.
        case packsMissing
        /// The tenant was crypto-shredded: nothing can be added to it or unwrapped for it.
        case shredded
        /// A legal hold stops the change.
        case held
        /// The tenant has no write material (a catalog rebuilt from the store).
        case noWriteMaterial
        /// The caller may not make this change (e.g. deciding their own approval request).
        case forbidden
        /// The change would exceed a quota.
        case quota
        /// The catalog does not hold what it should (a table missing from a previous catalog).
        case inconsistent
    }

    public let code: Code
    /// The object concerned, as the audit log names it (`tenant acme`, `request 1f2e…`).
    public let object: String
    public let message: String
    /// For ``Code/packsMissing``: the packs the catalog does not hold.
    public var packs: [PackID] = []

    /// Revoking `name` would leave no active admin.
    static func lastAdmin(_ name: String) -> CatalogError {
        CatalogError(.conflict, object: "admin \(name)", "\(name) is the last admin; enroll another first")
    }

    public init(_ code: Code, object: String, _ message: String, packs: [PackID] = []) {
        self.code = code
        self.object = object
        self.message = message
        self.packs = packs
    }

    /// Exactly as the same error reads once mapped (`message [E_CODE]`), so the CLI, which
    /// reports local catalog errors directly, prints what a client of the API would.
    public var description: String { ServerError(self).description }

    // The refusals more than one place builds, worded once.

    static func shredded(_ tenant: String) -> CatalogError {
        CatalogError(.shredded, object: "tenant \(tenant)",
                     "tenant \(tenant) was crypto-shredded: its read key is destroyed; its backups can never be "
                     + "read again and nothing can be added to it")
    }

    static func noWriteMaterial(_ tenant: String) -> CatalogError {
        CatalogError(.noWriteMaterial, object: "tenant \(tenant)",
                     "this server has no write material for tenant \(tenant) (its catalog was rebuilt from the "
                     + "store, where it is sealed to the read key): an admin gives it back with "
                     + "`redoubt admin tenant restore-material \(tenant)` (opens the sealed copy with the read key) "
                     + "or `… --from FILE` (an enrolled host's write-material.bin)")
    }

    /// `key` is the store key; `object` what a client calls it (`pack …`, `snapshot …`).
    static func beingCollected(key: String) -> CatalogError {
        CatalogError(.beingCollected, object: key,
                     "\(key) is being removed by garbage collection right now; send it again in a minute")
    }
}

extension CatalogError: RedoubtError {
    public var errorCode: String { ServerError(self).code }
    public var exitCategory: ExitCategory { ServerError(self).exitCategory }
}

extension ServerError {
    /// The one mapping from a catalog refusal to what the API answers: the status and the
    /// stable code by ``CatalogError/Code``, the catalog's message as it is.
    public init(_ e: CatalogError) {
        let (status, code) = Self.catalogMapping(e.code)
        self.init(status, code, e.message)
    }

    static func catalogMapping(_ code: CatalogError.Code) -> (status: Int, code: String) {
        switch code {
        case .notFound: (404, "E_NOT_FOUND")
        case .conflict: (409, "E_CONFLICT")
        case .beingCollected: (409, "E_RETRY")
        case .packsMissing: (409, "E_PACKS_MISSING")
        case .shredded: (410, "E_TENANT_SHREDDED")
        case .held: (409, "E_HELD")
        case .noWriteMaterial: (409, "E_NO_WRITE_MATERIAL")
        case .forbidden: (403, "E_FORBIDDEN")
        case .quota: (507, "E_QUOTA")
        case .inconsistent: (500, "E_INTERNAL")
        }
    }
}

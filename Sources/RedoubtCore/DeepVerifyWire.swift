import Foundation

extension Wire {
    /// `POST /v1/packs/verified`: packs of the caller's tenant that a restorer's deep verify
    /// opened whole (every chunk checked against its ID). At most ``maxPacks`` per request.
    public struct PacksVerifiedReport: Codable, Sendable {
        /// Most pack IDs one report names: the answer and the catalog write stay bounded.
        public static let maxPacks = 1000
        public var packs: [String]
        public init(packs: [String]) { self.packs = packs }
    }

    /// What the server recorded of a verified-packs report.
    public struct PacksVerifiedInfo: Codable, Sendable, Equatable {
        /// Packs whose last deep verify is now this report.
        public var recorded: Int
        /// IDs the tenant does not hold (garbage collection removed them since they were listed).
        public var unknown: [String]
        public init(recorded: Int, unknown: [String]) {
            self.recorded = recorded
            self.unknown = unknown
        }
    }

    /// One pack in a deep-verify queue, with its last deep verify.
    public struct DeepVerifyPack: Codable, Sendable, Equatable {
        public var id: String
        public var size: Int64
        /// When a restorer last reported it verified or damaged; nil: never.
        public var lastVerifiedAt: Date?
        /// `ok` or `damaged`; nil: never verified.
        public var lastOutcome: String?
        public init(id: String, size: Int64, lastVerifiedAt: Date?, lastOutcome: String?) {
            self.id = id
            self.size = size
            self.lastVerifiedAt = lastVerifiedAt
            self.lastOutcome = lastOutcome
        }
    }

    /// `GET /v1/deep-verify?budget=BYTES`: a tenant's deep-verify state, and the packs due
    /// next (never verified first, then the longest ago) up to the byte budget.
    public struct DeepVerifyState: Codable, Sendable, Equatable {
        /// Most packs one answer lists as due, whatever the budget.
        public static let maxDue = 10_000
        public var tenant: String
        public var packs: Int
        public var bytes: Int64
        public var neverVerifiedPacks: Int
        public var neverVerifiedBytes: Int64
        /// The oldest last deep verify among packs verified at least once (nil: none).
        public var oldestVerifiedAt: Date?
        public var newestVerifiedAt: Date?
        /// Packs whose last deep verify found them damaged.
        public var damagedPacks: Int
        /// Due next, in order, until their sizes reach the budget asked for (at least one
        /// pack when any is held and the budget is above zero).
        public var due: [DeepVerifyPack]
        public init(tenant: String, packs: Int, bytes: Int64, neverVerifiedPacks: Int, neverVerifiedBytes: Int64,
                    oldestVerifiedAt: Date?, newestVerifiedAt: Date?, damagedPacks: Int, due: [DeepVerifyPack]) {
            self.tenant = tenant
            self.packs = packs
            self.bytes = bytes
            self.neverVerifiedPacks = neverVerifiedPacks
            self.neverVerifiedBytes = neverVerifiedBytes
            self.oldestVerifiedAt = oldestVerifiedAt
            self.newestVerifiedAt = newestVerifiedAt
            self.damagedPacks = damagedPacks
            self.due = due
        }
    }
}

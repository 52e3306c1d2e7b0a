import Foundation

// Legal holds (docs/PROTOCOL.md §4.3): JSON bodies of `/v1/holds`.
extension Wire {
    /// `POST /v1/holds`: hold one snapshot (full ID or unique prefix) or a whole tenant.
    /// Exactly one of `snapshot` and `tenant` is set.
    public struct PlaceHoldRequest: Codable, Sendable {
        public var snapshot: String?
        public var tenant: String?
        /// Why the hold exists (a case number, a matter); shown in listings and the audit log.
        public var reason: String?
        public init(snapshot: String?, tenant: String?, reason: String?) {
            self.snapshot = snapshot
            self.tenant = tenant
            self.reason = reason
        }
    }

    /// A legal hold (`GET /v1/holds`). `releasedAt` is nil while it holds.
    public struct HoldInfo: Codable, Sendable, Equatable {
        public var id: String
        /// `snapshot` or `tenant`.
        public var kind: String
        /// The snapshot ID or the tenant name.
        public var target: String
        public var tenant: String
        public var reason: String
        public var createdBy: String
        public var createdAt: Date
        public var releasedAt: Date?
        /// The approved request that released it (nil when a lone admin released it).
        public var releaseRequest: String?
        public init(id: String, kind: String, target: String, tenant: String, reason: String, createdBy: String,
            createdAt: Date,
                    releasedAt: Date?, releaseRequest: String?) {
            self.id = id
            self.kind = kind
            self.target = target
            self.tenant = tenant
            self.reason = reason
            self.createdBy = createdBy
            self.createdAt = createdAt
            self.releasedAt = releasedAt
            self.releaseRequest = releaseRequest
        }
    }
}

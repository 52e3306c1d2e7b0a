import Foundation

extension Wire {
    /// `PUT /v1/tenants/{tenant}/quota`: the tenant's storage quota, or with `host` that
    /// host's; `bytes` nil removes it (docs/PROTOCOL.md §3.3).
    public struct SetQuotaRequest: Codable, Sendable {
        public var host: String?
        public var bytes: Int64?
        public init(host: String?, bytes: Int64?) {
            self.host = host
            self.bytes = bytes
        }
    }

    /// A tenant's or host's quota and what it holds: packs named by a committed snapshot,
    /// and packs no snapshot names yet.
    public struct QuotaInfo: Codable, Sendable, Equatable {
        public var tenant: String
        public var host: String?
        public var quotaBytes: Int64?
        public var committedBytes: Int64
        public var uncommittedBytes: Int64
        public init(tenant: String, host: String?, quotaBytes: Int64?, committedBytes: Int64, uncommittedBytes: Int64) {
            self.tenant = tenant
            self.host = host
            self.quotaBytes = quotaBytes
            self.committedBytes = committedBytes
            self.uncommittedBytes = uncommittedBytes
        }
    }
}

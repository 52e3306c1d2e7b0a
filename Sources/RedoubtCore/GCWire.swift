import Foundation

extension Wire {
    /// `POST /v1/tenants/{tenant}/gc`.
    public struct GCRequest: Codable, Sendable {
        /// Report what would go, change nothing.
        public var dryRun: Bool
        public init(dryRun: Bool) { self.dryRun = dryRun }
    }

    /// What a garbage collection removed (or, dry, would remove) and what it kept.
    public struct GCReport: Codable, Sendable, Equatable {
        public var tenant: String
        public var dryRun: Bool
        /// Snapshots whose lock had expired, removed (full IDs).
        public var snapshotsRemoved: [String]
        /// Expired snapshots kept because each is its host's newest.
        public var keptNewest: Int
        /// Expired snapshots kept because a legal hold covers them.
        public var keptHeld: Int
        public var packsRemoved: Int
        public var bytesRemoved: Int64
        /// Store objects still to delete (from this run or an earlier one that stopped), to
        /// be retried by the next run; 0 when all went.
        public var pendingDeletes: Int
        public init(tenant: String, dryRun: Bool, snapshotsRemoved: [String], keptNewest: Int, keptHeld: Int,
            packsRemoved: Int,
                    bytesRemoved: Int64, pendingDeletes: Int) {
            self.tenant = tenant
            self.dryRun = dryRun
            self.snapshotsRemoved = snapshotsRemoved
            self.keptNewest = keptNewest
            self.keptHeld = keptHeld
            self.packsRemoved = packsRemoved
            self.bytesRemoved = bytesRemoved
            self.pendingDeletes = pendingDeletes
        }
    }
}

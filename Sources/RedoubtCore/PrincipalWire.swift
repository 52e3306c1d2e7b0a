import Foundation

extension Wire {
    /// A principal as `GET /v1/principals` lists it to admins: never its certificate or keys.
    public struct PrincipalInfo: Codable, Sendable, Equatable {
        public var id: String
        /// `writer`, `restorer`, `auditor` or `admin`.
        public var role: String
        public var tenant: String?
        public var name: String
        /// SHA-256 of the client certificate (hex).
        public var fingerprint: String
        public var createdAt: Date
        /// The OS the host reported at enrollment or with its last commit.
        public var os: String?
        /// When its credential was revoked; nil while it authenticates.
        public var revokedAt: Date?
        /// A writer's newest committed snapshot (server time): hosts that stopped backing up show here.
        public var lastSnapshotAt: Date?
        /// Packs this writer uploaded that a restorer's deep verify reported as not opening
        /// (a host that uploaded bytes its chunk IDs do not name may have been taken).
        public var damagedPacks: Int?
        /// A writer's packs that no restorer has deep-verified yet (nil: none, or not a writer).
        public var packsNotDeepVerified: Int?
        /// The oldest last deep verify among a writer's packs verified at least once: a
        /// rolling verify that keeps up keeps this within its period (docs/PROTOCOL.md §4.6.1).
        public var oldestDeepVerifyAt: Date?
        /// A writer's storage: its quota, if any, and the bytes of packs it uploaded.
        public var quota: QuotaInfo?
        /// How often the host said it commits (`--expected-interval`, sent with its last commit).
        public var expectedIntervalSeconds: Double?
        /// A writer's `ok` (newest snapshot within its expected interval on the server's
        /// clock), `late`, or `unknown` (no expected interval, or no snapshot yet).
        public var backupStatus: String?
        public init(id: String, role: String, tenant: String?, name: String, fingerprint: String, createdAt: Date,
            os: String?,
                    revokedAt: Date?, lastSnapshotAt: Date?, damagedPacks: Int? = nil) {
            self.damagedPacks = damagedPacks
            self.id = id
            self.role = role
            self.tenant = tenant
            self.name = name
            self.fingerprint = fingerprint
            self.createdAt = createdAt
            self.os = os
            self.revokedAt = revokedAt
            self.lastSnapshotAt = lastSnapshotAt
        }
    }

    /// An enrollment token not yet used, cancelled or expired, as `GET /v1/enrollments`
    /// lists it: never the token itself.
    public struct EnrollmentInfo: Codable, Sendable, Equatable {
        /// The first 16 hex digits of the SHA-256 of the token's secret (what the audit log names).
        public var id: String
        public var role: String
        public var tenant: String?
        public var name: String
        public var createdBy: String
        public var expiresAt: Date
        public init(id: String, role: String, tenant: String?, name: String, createdBy: String, expiresAt: Date) {
            self.id = id
            self.role = role
            self.tenant = tenant
            self.name = name
            self.createdBy = createdBy
            self.expiresAt = expiresAt
        }
    }

    /// `POST /v1/packs/{id}/damaged`: a restorer's deep verify found the pack (or chunks in
    /// it) not opening; `problem` is what it saw (at most 512 bytes).
    public struct DamagedPackReport: Codable, Sendable {
        public var problem: String
        public init(problem: String) { self.problem = problem }
    }

    /// What the server recorded of a damaged-pack report: who uploaded the pack.
    public struct DamagedPackInfo: Codable, Sendable, Equatable {
        public var pack: String
        /// The host whose credential uploaded it; nil if unknown (uploaded before the server
        /// recorded uploaders, or found by a catalog rebuild).
        public var uploader: String?
        public init(pack: String, uploader: String?) {
            self.pack = pack
            self.uploader = uploader
        }
    }
}

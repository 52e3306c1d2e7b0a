import Foundation

/// JSON bodies of the v1 API (docs/PROTOCOL.md), shared by server and client so the two
/// cannot drift. Binary bodies (packs, manifests, chunk queries) are described there too.
public enum Wire {
    public static let apiVersion = "v1"

    /// What an enrollment token carries: printed once by the admin, pasted on the host.
    public struct EnrollmentToken: Codable, Sendable, Equatable {
        /// Server URL, e.g. `https://127.0.0.1:8443`.
        public var url: String
        /// The server CA certificate (DER, base64): the host trusts only this CA.
        public var ca: String
        /// SHA-256 of the CA's DER (hex), checked against `ca` before use.
        public var pin: String
        /// The one-time secret (hex); the server stores only its SHA-256.
        public var secret: String
        public var role: String
        public var tenant: String?
        public var name: String
        /// Unix seconds after which the server refuses the token.
        public var expires: Int64

        public init(url: String, ca: String, pin: String, secret: String, role: String, tenant: String?, name: String,
            expires: Int64) {
            self.url = url
            self.ca = ca
            self.pin = pin
            self.secret = secret
            self.role = role
            self.tenant = tenant
            self.name = name
            self.expires = expires
        }

        public static let prefix = "rdbt1."

        public func encoded() throws -> String {
            let e = JSONEncoder()
            e.outputFormatting = .sortedKeys
            return Self.prefix + base64URL(try e.encode(self))
        }

        public static func decode(_ s: String) throws -> EnrollmentToken {
            let t = s.trimmingCharacters(in: .whitespacesAndNewlines)
            guard t.hasPrefix(prefix), let data = fromBase64URL(String(t.dropFirst(prefix.count))),
                  let tok = try? JSONDecoder().decode(EnrollmentToken.self, from: data) else {
                throw CoreError(.corrupt, object: "enrollment token",
                    "not a Redoubt enrollment token (expected rdbt1.…); copy it again from `redoubt admin host add`")
            }
            return tok
        }
    }

    /// HTTP header of `POST /v1/snapshots` that carries the host's `PRETTY_NAME` (optional).
    public static let hostOSHeader = "Redoubt-OS"

    public struct EnrollRequest: Codable, Sendable {
        public var secret: String
        /// The host's TLS client public key, PEM (P-256 SubjectPublicKeyInfo).
        public var publicKeyPEM: String
        /// A writer's Ed25519 manifest-signing public key, base64.
        public var hostKey: String?
        /// `PRETTY_NAME` from /etc/os-release, for `doctor`'s separation check.
        public var os: String?

        public init(secret: String, publicKeyPEM: String, hostKey: String?, os: String?) {
            self.secret = secret
            self.publicKeyPEM = publicKeyPEM
            self.hostKey = hostKey
            self.os = os
        }
    }

    public struct EnrollResponse: Codable, Sendable {
        public var principalID: String
        public var role: String
        public var tenant: String?
        public var name: String
        /// The client certificate the server CA issued for the host's key, PEM.
        public var certificatePEM: String
        /// Encoded SharedWriteMaterial, base64 (writers and restorers).
        public var writeMaterial: String?
        /// WrappedReadKey JSON (restorers only).
        public var wrappedReadKey: String?

        public init(principalID: String, role: String, tenant: String?, name: String, certificatePEM: String,
            writeMaterial: String?, wrappedReadKey: String?) {
            self.principalID = principalID
            self.role = role
            self.tenant = tenant
            self.name = name
            self.certificatePEM = certificatePEM
            self.writeMaterial = writeMaterial
            self.wrappedReadKey = wrappedReadKey
        }
    }

    public struct CreateTenantRequest: Codable, Sendable {
        public var name: String
        /// X-Wing read public key, base64.
        public var readPublicKey: String
        /// Encoded SharedWriteMaterial, base64.
        public var writeMaterial: String
        /// WrappedReadKey JSON.
        public var wrappedReadKey: String
        public var minRetentionSeconds: Double?
        /// `host` (the default when absent) or `tenant`: which chunks a host may reuse.
        public var dedupScope: String?

        public init(name: String, readPublicKey: String, writeMaterial: String, wrappedReadKey: String,
            minRetentionSeconds: Double?,
                    dedupScope: String? = nil) {
            self.name = name
            self.readPublicKey = readPublicKey
            self.writeMaterial = writeMaterial
            self.wrappedReadKey = wrappedReadKey
            self.minRetentionSeconds = minRetentionSeconds
            self.dedupScope = dedupScope
        }
    }

    public struct TenantInfo: Codable, Sendable {
        public var name: String
        public var readKeyID: String
        public var minRetentionSeconds: Double
        public var createdAt: Date
        /// `host` or `tenant` (absent from servers older than dedup scopes, which shared chunks tenant-wide).
        public var dedupScope: String?
        public init(name: String, readKeyID: String, minRetentionSeconds: Double, createdAt: Date,
            dedupScope: String? = nil) {
            self.name = name
            self.readKeyID = readKeyID
            self.minRetentionSeconds = minRetentionSeconds
            self.createdAt = createdAt
            self.dedupScope = dedupScope
        }
    }

    /// `PUT /v1/tenants/{t}/dedup-scope`: widening to `tenant` needs approval.
    public struct SetDedupScopeRequest: Codable, Sendable {
        public var dedupScope: String
        public var requestID: String?
        public init(dedupScope: String, requestID: String?) {
            self.dedupScope = dedupScope
            self.requestID = requestID
        }
    }

    /// `GET /v1/tenants/{t}/read-key`: the tenant's current wrapped read key (absent once
    /// shredded) and, for admins, the retired KEKs it was wrapped under before.
    public struct ReadKeyInfo: Codable, Sendable {
        public var tenant: String
        public var keyVersion: Int
        /// WrappedReadKey JSON; nil after a shred.
        public var wrappedReadKey: String?
        public var shreddedAt: Date?
        public var retired: [RetiredKEKInfo]
        public init(tenant: String, keyVersion: Int, wrappedReadKey: String?, shreddedAt: Date?,
            retired: [RetiredKEKInfo]) {
            self.tenant = tenant
            self.keyVersion = keyVersion
            self.wrappedReadKey = wrappedReadKey
            self.shreddedAt = shreddedAt
            self.retired = retired
        }
    }

    /// A tenant's write material as an admin sees it: whether the server has it (a catalog
    /// rebuilt from the store alone has not), and the copy sealed to the read key that the
    /// tenant descriptor carries (base64 of docs/FORMAT.md §7.3's sealed form).
    public struct WriteMaterialInfo: Codable, Sendable {
        public var tenant: String
        public var present: Bool
        public var sealedWriteMaterial: String
        public init(tenant: String, present: Bool, sealedWriteMaterial: String) {
            self.tenant = tenant
            self.present = present
            self.sealedWriteMaterial = sealedWriteMaterial
        }
    }

    /// Gives a server back a tenant's write material (base64 of §7.3's encoding).
    public struct RestoreWriteMaterialRequest: Codable, Sendable {
        public var writeMaterial: String
        public init(writeMaterial: String) { self.writeMaterial = writeMaterial }
    }

    /// A KEK rotated away from: `stub` is its wrapped key's JSON without the wrapped bytes.
    public struct RetiredKEKInfo: Codable, Sendable {
        public var version: Int
        public var stub: String
        public var retiredAt: Date
        public var destroyedAt: Date?
        public init(version: Int, stub: String, retiredAt: Date, destroyedAt: Date?) {
            self.version = version
            self.stub = stub
            self.retiredAt = retiredAt
            self.destroyedAt = destroyedAt
        }
    }

    /// `PUT /v1/tenants/{t}/read-key`: the same read key, wrapped anew (version + 1).
    public struct RotateReadKeyRequest: Codable, Sendable {
        /// The new wrapping; empty when carrying out an approved request (which holds it).
        public var wrappedReadKey: String
        public var requestID: String?
        public init(wrappedReadKey: String, requestID: String? = nil) {
            self.wrappedReadKey = wrappedReadKey
            self.requestID = requestID
        }
    }

    /// `POST /v1/tenants/{t}/read-key/destroyed`: these versions' KEKs were destroyed.
    public struct DestroyedKEKsRequest: Codable, Sendable {
        public var versions: [Int]
        public init(versions: [Int]) { self.versions = versions }
    }

    /// `POST /v1/tenants/{t}/shred`: `confirm` must repeat the tenant's name;
    /// `destroyedVersions` lists the key versions whose KEKs the admin destroyed first.
    /// `check` asks only whether the shred is authorised (filing an approval request if
    /// the quorum needs one) and changes nothing; `requestID` names an approved request.
    public struct ShredRequest: Codable, Sendable {
        public var confirm: String
        public var destroyedVersions: [Int]
        public var requestID: String?
        public var check: Bool?
        public init(confirm: String, destroyedVersions: [Int], requestID: String? = nil, check: Bool? = nil) {
            self.confirm = confirm
            self.destroyedVersions = destroyedVersions
            self.requestID = requestID
            self.check = check
        }
    }

    /// `PUT /v1/tenants/{t}/retention`: lowering needs approval (`requestID`); raising does not.
    public struct SetRetentionRequest: Codable, Sendable {
        public var minRetentionSeconds: Double
        public var requestID: String?
        public init(minRetentionSeconds: Double, requestID: String?) {
            self.minRetentionSeconds = minRetentionSeconds
            self.requestID = requestID
        }
    }

    /// `POST /v1/admins`: a one-time enrollment token for another admin (needs approval).
    public struct AddAdminRequest: Codable, Sendable {
        public var name: String
        public var ttlSeconds: Double?
        public var requestID: String?
        public init(name: String, ttlSeconds: Double?, requestID: String?) {
            self.name = name
            self.ttlSeconds = ttlSeconds
            self.requestID = requestID
        }
    }

    /// `POST /v1/admins/{name}/remove` and `PUT /v1/quorum`: the approved request, if needed.
    public struct ApprovedChange: Codable, Sendable {
        public var requestID: String?
        public var quorum: Int?
        public init(requestID: String?, quorum: Int? = nil) {
            self.requestID = requestID
            self.quorum = quorum
        }
    }

    /// `GET /v1/quorum`.
    public struct QuorumInfo: Codable, Sendable {
        public var configured: Int
        public var effective: Int
        public var admins: Int
        public init(configured: Int, effective: Int, admins: Int) {
            self.configured = configured
            self.effective = effective
            self.admins = admins
        }
    }

    /// `POST /v1/copy-targets`: an S3 Object Lock copy of a tenant. `credentialsFile` is a
    /// path on the server host; no secret travels in the request.
    public struct AddCopyTargetRequest: Codable, Sendable {
        public var tenant: String
        public var url: String
        public var endpoint: String
        public var region: String
        public var credentialsFile: String?
        public var virtualHosted: Bool?
        public var marginSeconds: Double
        public var acceptUnenforced: Bool?
        public var requestID: String?
        public init(tenant: String, url: String, endpoint: String, region: String, credentialsFile: String?,
            virtualHosted: Bool?,
                    marginSeconds: Double, acceptUnenforced: Bool?, requestID: String?) {
            self.tenant = tenant
            self.url = url
            self.endpoint = endpoint
            self.region = region
            self.credentialsFile = credentialsFile
            self.virtualHosted = virtualHosted
            self.marginSeconds = marginSeconds
            self.acceptUnenforced = acceptUnenforced
            self.requestID = requestID
        }
    }

    /// A copy target and its last proof and sync (`GET /v1/copy-targets`).
    public struct CopyTargetInfo: Codable, Sendable {
        public var id: String
        public var tenant: String
        public var url: String
        public var endpoint: String
        public var region: String
        public var marginSeconds: Double
        public var acceptUnenforced: Bool
        public var createdAt: Date
        public var lastProofAt: Date?
        public var lastProofOK: Bool?
        public var lastProofDetail: String?
        public var lastSyncAt: Date?
        public var lastSyncOK: Bool?
        public var lastSyncDetail: String?
        public init(id: String, tenant: String, url: String, endpoint: String, region: String, marginSeconds: Double,
            acceptUnenforced: Bool,
                    createdAt: Date, lastProofAt: Date?, lastProofOK: Bool?, lastProofDetail: String?,
                        lastSyncAt: Date?, lastSyncOK: Bool?,
                    lastSyncDetail: String?) {
            self.id = id
            self.tenant = tenant
            self.url = url
            self.endpoint = endpoint
            self.region = region
            self.marginSeconds = marginSeconds
            self.acceptUnenforced = acceptUnenforced
            self.createdAt = createdAt
            self.lastProofAt = lastProofAt
            self.lastProofOK = lastProofOK
            self.lastProofDetail = lastProofDetail
            self.lastSyncAt = lastSyncAt
            self.lastSyncOK = lastSyncOK
            self.lastSyncDetail = lastSyncDetail
        }
    }

    /// A request for a change that needs other admins' approval (`GET /v1/requests`).
    public struct RequestInfo: Codable, Sendable {
        public var id: String
        public var action: String
        public var object: String
        public var parameters: [String: String]
        public var requester: String
        public var createdAt: Date
        public var expiresAt: Date
        public var needed: Int
        public var approvers: [String]
        public var rejectedBy: String?
        public var state: String
        public init(id: String, action: String, object: String, parameters: [String: String], requester: String,
            createdAt: Date,
                    expiresAt: Date, needed: Int, approvers: [String], rejectedBy: String?, state: String) {
            self.id = id
            self.action = action
            self.object = object
            self.parameters = parameters
            self.requester = requester
            self.createdAt = createdAt
            self.expiresAt = expiresAt
            self.needed = needed
            self.approvers = approvers
            self.rejectedBy = rejectedBy
            self.state = state
        }
    }

    public struct CreateEnrollmentRequest: Codable, Sendable {
        public var role: String
        public var name: String
        public var ttlSeconds: Double?
        public init(role: String, name: String, ttlSeconds: Double?) {
            self.role = role
            self.name = name
            self.ttlSeconds = ttlSeconds
        }
    }

    public struct CreateEnrollmentResponse: Codable, Sendable {
        public var token: String
        public var expires: Date
        public init(token: String, expires: Date) {
            self.token = token
            self.expires = expires
        }
    }

    /// Public metadata of a snapshot, as listed.
    public struct SnapshotInfo: Codable, Sendable, Equatable {
        public var id: String
        public var tenant: String
        public var host: String
        public var time: Date
        public var committedAt: Date
        public var retainUntil: Date
        public var paths: [String]
        public var tags: [String]
        public var statistics: SnapshotStatistics
        public var packCount: Int
        /// How many paths the snapshot names, when `paths` (in listings) shows only the
        /// first of them; absent from servers that always sent them all.
        public var pathCount: Int?
        /// In listings, when a retention policy covers the snapshot's host: the rules keeping it,
        /// each until when (empty: no rule does; the lock is the minimum retention's). Absent
        /// when no policy covers it, and from servers without policies.
        public var keptBy: [PolicyKeep]?
        /// The server's ransomware verdict on the snapshot (`clean`, `suspect`, `unknown`) and
        /// its reasons (docs/PROTOCOL.md §4.9). Absent for a writer, and from servers without detection.
        public var verdict: String?
        public var verdictReasons: [String]?

        public init(id: String, tenant: String, host: String, time: Date, committedAt: Date, retainUntil: Date,
            paths: [String], tags: [String],
                    statistics: SnapshotStatistics, packCount: Int, pathCount: Int? = nil) {
            self.pathCount = pathCount
            self.id = id
            self.tenant = tenant
            self.host = host
            self.time = time
            self.committedAt = committedAt
            self.retainUntil = retainUntil
            self.paths = paths
            self.tags = tags
            self.statistics = statistics
            self.packCount = packCount
        }
    }

    public struct UploadResponse: Codable, Sendable {
        public var id: String
        public var created: Bool
        public var retainUntil: Date
        /// Set when the upload leaves the host or tenant at 90 % of its quota or more.
        public var quotaWarning: String?
        public init(id: String, created: Bool, retainUntil: Date, quotaWarning: String? = nil) {
            self.quotaWarning = quotaWarning
            self.id = id
            self.created = created
            self.retainUntil = retainUntil
        }
    }

    public struct VerifyReport: Codable, Sendable {
        public var snapshot: String
        public var packsChecked: Int
        public var bytesChecked: Int
        public var damaged: [String]
        public var missing: [String]
        public var ok: Bool { damaged.isEmpty && missing.isEmpty }
        public init(snapshot: String, packsChecked: Int, bytesChecked: Int, damaged: [String], missing: [String]) {
            self.snapshot = snapshot
            self.packsChecked = packsChecked
            self.bytesChecked = bytesChecked
            self.damaged = damaged
            self.missing = missing
        }
    }

    public struct AuditEntry: Codable, Sendable {
        public var seq: Int64
        public var time: Date
        public var actor: String
        public var role: String
        public var credential: String
        public var source: String
        public var action: String
        public var object: String
        public var outcome: String
        public var detail: String
        public var prevHash: String
        public var hash: String
        public init(seq: Int64, time: Date, actor: String, role: String, credential: String, source: String,
            action: String, object: String,
                    outcome: String, detail: String, prevHash: String, hash: String) {
            self.seq = seq
            self.time = time
            self.actor = actor
            self.role = role
            self.credential = credential
            self.source = source
            self.action = action
            self.object = object
            self.outcome = outcome
            self.detail = detail
            self.prevHash = prevHash
            self.hash = hash
        }
    }

    /// Every error body: a stable code, a message naming the object, and the fix.
    public struct ErrorBody: Codable, Sendable {
        public var code: String
        public var message: String
        public init(code: String, message: String) {
            self.code = code
            self.message = message
        }
    }

    /// Encodes a list of IDs (a chunk or pack query, a pack query's answer): back to back,
    /// 32 bytes each.
    public static func encodeIDs<ID: Digest32ID>(_ ids: some Collection<ID>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(ids.count * 32)
        for id in ids { out += id.bytes }
        return out
    }

    /// ``encodeIDs(_:)``'s input again; nil unless the length is a multiple of 32.
    public static func decodeIDs<ID: Digest32ID>(_ bytes: [UInt8], as: ID.Type = ID.self) -> [ID]? {
        guard bytes.count % 32 == 0 else { return nil }
        return stride(from: 0, to: bytes.count, by: 32).map { ID(bytes: Array(bytes[$0..<($0 + 32)]))! }
    }

    /// Encodes a chunk query answer: for each held chunk, its ID then its pack's ID.
    public static func encodeChunkLocations(_ map: [ChunkID: PackID]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(map.count * 64)
        for (c, p) in map {
            out += c.bytes
            out += p.bytes
        }
        return out
    }

    public static func decodeChunkLocations(_ bytes: [UInt8]) -> [ChunkID: PackID]? {
        guard bytes.count % 64 == 0 else { return nil }
        var out: [ChunkID: PackID] = [:]
        for o in stride(from: 0, to: bytes.count, by: 64) {
            out[ChunkID(bytes: Array(bytes[o..<(o + 32)]))!] = PackID(bytes: Array(bytes[(o + 32)..<(o + 64)]))!
        }
        return out
    }
}

/// Base64url without padding (RFC 4648 §5).
public func base64URL(_ data: Data) -> String {
    data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/",
        with: "_").replacingOccurrences(of: "=", with: "")
}

public func fromBase64URL(_ s: String) -> Data? {
    var b = s.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while b.count % 4 != 0 { b += "=" }
    return Data(base64Encoded: b)
}

/// A client's credential file (`credential.json`, mode 0600): how it reaches and proves
/// itself to the server. Holds the client's TLS private key; never a key that decrypts.
public struct ClientCredential: Codable, Sendable {
    public var url: String
    /// The server CA certificate, PEM: the only CA the client trusts for this server.
    public var caPEM: String
    public var pin: String
    public var certificatePEM: String
    /// The client's P-256 TLS private key, PEM. Secret.
    public var keyPEM: String
    public var principalID: String
    public var role: String
    public var tenant: String?
    public var name: String

    public init(url: String, caPEM: String, pin: String, certificatePEM: String, keyPEM: String, principalID: String,
        role: String, tenant: String?, name: String) {
        self.url = url
        self.caPEM = caPEM
        self.pin = pin
        self.certificatePEM = certificatePEM
        self.keyPEM = keyPEM
        self.principalID = principalID
        self.role = role
        self.tenant = tenant
        self.name = name
    }
}

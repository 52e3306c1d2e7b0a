import Hummingbird

/// Everything the server records or authorises, by the one name the audit log, the
/// approvals catalog and the policy share (docs/PROTOCOL.md §5). Most name one route of
/// ``RedoubtHTTP/routes``; the rest name approvals (§4.2) and the server's own events.
/// Nothing here deletes, overwrites or shortens a lock (DESIGN.md §1.1): the one action
/// that deletes, `gc` (admin), removes only objects whose locks have expired and no hold
/// covers (docs/PROTOCOL.md §4.5).
///
/// Raw values are stored: in audit records and in filed approval requests. Renaming one
/// breaks matching against records already written; add a case instead.
public enum Action: String, Sendable, CaseIterable {
    // Routes (one each).
    case health, enroll
    case queryChunks = "query-chunks", uploadPack = "upload-pack", commitSnapshot = "commit"
    case listSnapshots = "list-snapshots", showSnapshot = "show-snapshot"
    case getManifest = "get-manifest", getPack = "get-pack", packChunkLists = "pack-chunk-lists"
    case reportDamagedPack = "report-damaged-pack", queryPacks = "query-packs"
    case reportVerifiedPacks = "report-verified-packs", deepVerifyState = "deep-verify-state"
    case verifySnapshot = "verify"
    case createTenant = "create-tenant", listTenants = "list-tenants", createEnrollment = "create-enrollment"
    case listEnrollments = "list-enrollments", cancelEnrollment = "cancel-enrollment"
    case listPrincipals = "list-principals", revokePrincipal = "revoke"
    case getReadKey = "get-read-key", rotateReadKey = "rotate-read-key", markKEKsDestroyed = "destroy-kek"
    case shredTenant = "shred-tenant", getWriteMaterial = "get-write-material"
    case restoreWriteMaterial = "restore-write-material"
    case setRetention = "set-retention", setDedupScope = "set-dedup-scope"
    case addAdmin = "add-admin", removeAdmin = "remove-admin"
    case getQuorum = "get-quorum", setQuorum = "set-quorum", listRequests = "list-requests"
    case approveRequest = "approve", rejectRequest = "reject"
    case addCopyTarget = "add-copy-target", listCopyTargets = "list-copy-targets"
    case removeCopyTarget = "remove-copy-target", syncCopyTarget = "sync-copy-target"
    case placeHold = "place-hold", listHolds = "list-holds", releaseHold = "release-hold"
    case collectGarbage = "gc", setQuota = "set-quota", setDetection = "set-detection"
    case clearVerdict = "clear-verdict"
    case setPolicy = "set-policy", listPolicies = "list-policies", simulatePolicy = "simulate-policy"
    case applyPolicy = "apply-policy"
    case getSchedule = "get-schedule", setSchedule = "set-schedule", listJobs = "list-jobs"
    case listAudit = "list-audit", verifyAudit = "verify-audit"
    case getMetrics = "get-metrics", getStatus = "get-status", setHostExpectation = "set-host-expectation"
    case addNotifyChannel = "add-notify-channel", listNotifyChannels = "list-notify-channels"
    case removeNotifyChannel = "remove-notify-channel", testNotifyChannel = "test-notify-channel"
    // Changes that need approval under another name than their route's (§4.2).
    case lowerRetention = "lower-retention", revokeWriter = "revoke-writer", acceptUnenforced = "accept-unenforced"
    case widenDedupScope = "widen-dedup-scope", lowerPolicy = "lower-policy"
    case weakenSchedule = "weaken-schedule"
    // Approval bookkeeping.
    case fileRequest = "request", executeRequest = "execute-request"
    // Events inside a request or the server, not routes of their own.
    case unknownRoute = "unknown-route", hostOS = "host-os", copyProof = "copy-proof", createAdmin = "create-admin"
    case start, clearWriteMaterial = "clear-write-material", sealDescriptor = "seal-descriptor"
    case gcDelete = "gc-delete", gcStore = "gc-store", refusedAnonymous = "refused-anonymous"
    case jobRun = "job", integrityFinding = "integrity-finding"
    case snapshotVerdict = "snapshot-verdict"
}

/// Prints as its stored name, so messages and records read the same.
extension Action: CustomStringConvertible {
    public var description: String { rawValue }
}

/// Decides who may do what, derived from the one route table (``RedoubtHTTP/routes``).
/// Pure: tested without a socket (Tests/RedoubtServerTests/PolicyTests.swift).
public enum Policy {
    /// The route a method and path name, with the path's parameters, or nil for anything
    /// the API does not offer (which every role is refused, with an audit record).
    public static func route(method: HTTPRequest.Method, path: String) -> (Route, [String: String])? {
        for r in RedoubtHTTP.routes where r.method == method {
            if let parameters = r.match(path) { return (r, parameters) }
        }
        return nil
    }

    /// The action a method and path name, or nil for anything the API does not offer.
    public static func action(method: HTTPRequest.Method, path: String) -> (Action, [String: String])? {
        route(method: method, path: path).map { ($0.0.action, $0.1) }
    }

    /// Whether `role` may perform `action` through the API at all: as its route declares;
    /// an action that no route offers is allowed to no one. Tenant and host scoping is
    /// checked by the handlers (a writer sees only its own host's snapshots).
    public static func allows(_ role: Role?, _ action: Action) -> Bool {
        RedoubtHTTP.route(for: action)?.access.allows(role) ?? false
    }

    /// Whether the action needs an authenticated client certificate.
    public static func needsCredential(_ action: Action) -> Bool {
        RedoubtHTTP.route(for: action)?.access != .anyone
    }
}

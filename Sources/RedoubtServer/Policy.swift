import Hummingbird

/// Everything the API lets a caller do. Nothing here deletes, overwrites or shortens a
/// lock (DESIGN.md §1.1): the one action that deletes, `collectGarbage` (admin), removes
/// only objects whose locks have expired and no hold covers (docs/PROTOCOL.md §4.5).
public enum Action: String, Sendable, CaseIterable {
    case health, enroll
    case queryChunks, uploadPack, commitSnapshot, listSnapshots, showSnapshot
    case getManifest, getPack, packChunkLists, verifySnapshot
    case createTenant, listTenants, createEnrollment, listEnrollments, cancelEnrollment, listPrincipals, revokePrincipal
    case getReadKey, rotateReadKey, markKEKsDestroyed, shredTenant, getWriteMaterial, restoreWriteMaterial
    case setRetention, addAdmin, removeAdmin, getQuorum, setQuorum, listRequests, decideRequest
    case addCopyTarget, listCopyTargets, removeCopyTarget, syncCopyTarget
    case placeHold, listHolds, releaseHold
    case collectGarbage, setQuota
    case listAudit, verifyAudit
}

/// Maps requests to actions and decides who may perform them. Pure: tested without a
/// socket (Tests/RedoubtServerTests/PolicyTests.swift).
public enum Policy {
    /// The action a method and path name, or nil for anything the API does not offer
    /// (which every role is refused, with a 403 and an audit record).
    public static func action(method: HTTPRequest.Method, path: String) -> (Action, [String: String])? {
        let parts = path.split(separator: "?", maxSplits: 1).first.map { $0.split(separator: "/").map(String.init) } ?? []
        guard parts.first == "v1" else { return nil }
        let p = Array(parts.dropFirst())
        switch (method, p.count) {
        case (.get, 1) where p[0] == "health": return (.health, [:])
        case (.post, 1) where p[0] == "enroll": return (.enroll, [:])
        case (.post, 2) where p[0] == "chunks" && p[1] == "query": return (.queryChunks, [:])
        case (.post, 2) where p[0] == "packs" && p[1] == "chunk-lists": return (.packChunkLists, [:])
        case (.put, 2) where p[0] == "packs": return (.uploadPack, ["id": p[1]])
        case (.get, 2) where p[0] == "packs": return (.getPack, ["id": p[1]])
        case (.post, 1) where p[0] == "snapshots": return (.commitSnapshot, [:])
        case (.get, 1) where p[0] == "snapshots": return (.listSnapshots, [:])
        case (.get, 2) where p[0] == "snapshots": return (.showSnapshot, ["id": p[1]])
        case (.get, 3) where p[0] == "snapshots" && p[2] == "manifest": return (.getManifest, ["id": p[1]])
        case (.post, 3) where p[0] == "snapshots" && p[2] == "verify": return (.verifySnapshot, ["id": p[1]])
        case (.post, 1) where p[0] == "tenants": return (.createTenant, [:])
        case (.get, 1) where p[0] == "tenants": return (.listTenants, [:])
        case (.post, 3) where p[0] == "tenants" && p[2] == "enrollments": return (.createEnrollment, ["tenant": p[1]])
        case (.get, 3) where p[0] == "tenants" && p[2] == "read-key": return (.getReadKey, ["tenant": p[1]])
        case (.put, 3) where p[0] == "tenants" && p[2] == "read-key": return (.rotateReadKey, ["tenant": p[1]])
        case (.post, 4) where p[0] == "tenants" && p[2] == "read-key" && p[3] == "destroyed": return (.markKEKsDestroyed, ["tenant": p[1]])
        case (.post, 3) where p[0] == "tenants" && p[2] == "shred": return (.shredTenant, ["tenant": p[1]])
        case (.get, 3) where p[0] == "tenants" && p[2] == "write-material": return (.getWriteMaterial, ["tenant": p[1]])
        case (.put, 3) where p[0] == "tenants" && p[2] == "write-material": return (.restoreWriteMaterial, ["tenant": p[1]])
        case (.put, 3) where p[0] == "tenants" && p[2] == "retention": return (.setRetention, ["tenant": p[1]])
        case (.post, 3) where p[0] == "tenants" && p[2] == "gc": return (.collectGarbage, ["tenant": p[1]])
        case (.put, 3) where p[0] == "tenants" && p[2] == "quota": return (.setQuota, ["tenant": p[1]])
        case (.post, 1) where p[0] == "admins": return (.addAdmin, [:])
        case (.post, 3) where p[0] == "admins" && p[2] == "remove": return (.removeAdmin, ["name": p[1]])
        case (.get, 1) where p[0] == "quorum": return (.getQuorum, [:])
        case (.put, 1) where p[0] == "quorum": return (.setQuorum, [:])
        case (.get, 1) where p[0] == "requests": return (.listRequests, [:])
        case (.post, 3) where p[0] == "requests" && (p[2] == "approve" || p[2] == "reject"): return (.decideRequest, ["id": p[1], "decision": p[2]])
        case (.post, 1) where p[0] == "copy-targets": return (.addCopyTarget, [:])
        case (.get, 1) where p[0] == "copy-targets": return (.listCopyTargets, [:])
        case (.post, 3) where p[0] == "copy-targets" && p[2] == "remove": return (.removeCopyTarget, ["id": p[1]])
        case (.post, 3) where p[0] == "copy-targets" && p[2] == "sync": return (.syncCopyTarget, ["id": p[1]])
        case (.post, 1) where p[0] == "holds": return (.placeHold, [:])
        case (.get, 1) where p[0] == "holds": return (.listHolds, [:])
        case (.post, 3) where p[0] == "holds" && p[2] == "release": return (.releaseHold, ["id": p[1]])
        case (.get, 1) where p[0] == "enrollments": return (.listEnrollments, [:])
        case (.post, 3) where p[0] == "enrollments" && p[2] == "cancel": return (.cancelEnrollment, ["id": p[1]])
        case (.get, 1) where p[0] == "principals": return (.listPrincipals, [:])
        case (.post, 3) where p[0] == "principals" && p[2] == "revoke": return (.revokePrincipal, ["id": p[1]])
        case (.get, 1) where p[0] == "audit": return (.listAudit, [:])
        case (.get, 2) where p[0] == "audit" && p[1] == "verify": return (.verifyAudit, [:])
        default: return nil
        }
    }

    /// Whether `role` may perform `action` at all. Tenant and host scoping is checked by
    /// the handlers (a writer sees only its own host's snapshots).
    public static func allows(_ role: Role?, _ action: Action) -> Bool {
        switch action {
        case .health, .enroll: return true  // enroll is authorised by its one-time token
        case .queryChunks: return role == .writer || role == .restorer
        case .uploadPack, .commitSnapshot: return role == .writer
        case .listSnapshots, .showSnapshot: return role != nil
        // Why: reading packs or manifests is restorer-only, so a host's own credential
        // cannot download even its own backups (DESIGN.md §1.2).
        case .getManifest, .getPack, .packChunkLists: return role == .restorer
        case .verifySnapshot: return role == .restorer || role == .admin || role == .auditor
        case .createTenant, .createEnrollment, .listEnrollments, .cancelEnrollment, .listTenants, .listPrincipals, .revokePrincipal: return role == .admin
        // A restorer may fetch its own tenant's wrapped key (the handler checks the tenant).
        case .getReadKey: return role == .admin || role == .restorer
        case .rotateReadKey, .markKEKsDestroyed, .shredTenant, .getWriteMaterial, .restoreWriteMaterial: return role == .admin
        case .setRetention, .addAdmin, .removeAdmin, .getQuorum, .setQuorum, .listRequests, .decideRequest: return role == .admin
        case .addCopyTarget, .listCopyTargets, .removeCopyTarget, .syncCopyTarget: return role == .admin
        case .placeHold, .listHolds, .releaseHold: return role == .admin
        // Removes only what no lock protects any more (§4.5): an admin's routine job.
        case .collectGarbage: return role == .admin
        case .setQuota: return role == .admin
        case .listAudit, .verifyAudit: return role == .admin || role == .auditor
        }
    }

    /// Whether the action needs an authenticated client certificate.
    public static func needsCredential(_ action: Action) -> Bool { action != .health && action != .enroll }
}

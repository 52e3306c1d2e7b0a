import Foundation
import RedoubtMedia
import RedoubtStore

/// What the server's own host does to its data directory without going through the API:
/// `server init --quorum`, `audit verify`, `copy sync` and `media export` open the catalog
/// and the store here, so the CLI never writes to either itself.
extension ServerHome {
    /// Sets the number of admins (requester included) a change weakening protection needs.
    public func setQuorum(_ quorum: Int) async throws {
        try await openCatalog().setSetting("quorum", String(quorum))
    }

    /// The audit chain's state as `audit verify` reports it.
    public struct AuditVerification: Encodable, Sendable {
        public let ok: Bool
        public let records: Int
        public let firstBad: Int64?
        public let head: Catalog.AuditChainHead
    }

    /// Re-walks the audit hash chain; with `anchor` (from an S3 copy or a media set) also
    /// proves the log was not cut back to before it.
    public func verifyAudit(anchor: Catalog.AuditChainHead?) async throws -> AuditVerification {
        let catalog = try await openCatalog()
        var result = try await catalog.verifyAudit()
        if let anchor { result = try await catalog.verifyAudit(anchor: anchor) }
        let head = try await catalog.auditChainHead()
        return AuditVerification(ok: result.firstBad == nil, records: result.count, firstBad: result.firstBad,
            head: head)
    }

    /// Where an off-site copy goes and how it was named on the command line, for the
    /// approval an unenforced target needs (`CopyApproval.parameters`).
    public struct CopyDestination: Sendable {
        public var url: String
        public var endpoint: String
        public var region: String
        public var credentialsFile: String?
        public var virtualHosted: Bool
        public init(url: String, endpoint: String, region: String, credentialsFile: String?, virtualHosted: Bool) {
            self.url = url
            self.endpoint = endpoint
            self.region = region
            self.credentialsFile = credentialsFile
            self.virtualHosted = virtualHosted
        }
    }

    /// Copies `tenant` from this server's store to `target` (`copy sync` on the server's host).
    /// `acceptUnenforced` keeps a target whose lock proof fails, which weakens protection and so
    /// needs the approved `requestID` once there are enough admins (M-of-N).
    public func syncCopy(tenant: String, to target: any CopyTargetStore, destination: CopyDestination,
                         margin: TimeInterval,
                         acceptUnenforced: Bool, requestID: String?, now: Date,
                         progress: (String) -> Void) async throws -> BucketCopySummary {
        let catalog = try await openCatalog()
        let store = try openStore()
        if acceptUnenforced {
            let parameters = CopyApproval.parameters(tenant: tenant, endpoint: destination.endpoint,
                region: destination.region,
                                                     credentialsFile: destination.credentialsFile,
                                                     virtualHosted: destination.virtualHosted, marginSeconds: margin)
            try await catalog.authorizeLocally(.acceptUnenforced, object: "copy target \(destination.url)",
                parameters: parameters,
                                         requestID: requestID, now: now)
        }
        // The host key statements first: the copy must carry who may sign its snapshots.
        _ = try await HostKeyObjects.ensure(catalog: catalog, store: store, ca: try certificateAuthority(),
                                            tenant: tenant, now: now)
        return try await BucketCopy.sync(catalog: catalog, store: store, tenant: tenant, target: target, margin: margin,
                                         acceptUnenforced: acceptUnenforced, actor: "local-admin", now: now,
                                         progress: progress)
    }

    /// Writes `tenant`'s selected snapshots to a media set (`media export` on the server's host).
    public func exportMedia(tenant: String, selection: MediaExport.Selection, writer: MediaWriter, now: Date,
                            progress: (String) -> Void) async throws -> MediaExportSummary {
        let catalog = try await openCatalog()
        let store = try openStore()
        // The host key statements first: the set must carry who may sign its snapshots.
        _ = try await HostKeyObjects.ensure(catalog: catalog, store: store, ca: try certificateAuthority(),
                                            tenant: tenant, now: now)
        return try await MediaExport.run(catalog: catalog, store: store, tenant: tenant,
                                         selection: selection, writer: writer, actor: "local-admin", now: now,
                                         progress: progress)
    }

    /// The catalog this server keeps its index in: the one place that picks its backend
    /// (the PostgreSQL database `server.json` names, else SQLite, `catalog.sqlite`);
    /// everything that serves or administers uses the repository protocols
    /// (CatalogRepositories.swift) only.
    public func openCatalog() async throws -> any CatalogRepositories {
        if let pg = try settings().catalog { return try await CatalogPools.shared.catalog(pg) }
        return try Catalog(path: catalogPath)
    }

    /// The store this server keeps its objects in: the bucket `server.json` names, else `store/`.
    public func openStore() throws -> any ObjectStore {
        if let s3 = try settings().store { return try s3.open() }
        return try StoreFactory.make(.directory(storePath))
    }
}

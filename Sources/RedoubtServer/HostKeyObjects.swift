// Registrations and revocations of host signing keys (docs/FORMAT.md §6.4), signed by the
// server CA and kept as immutable, locked objects beside the snapshots they vouch for, so
// that the store, every bucket copy and every media set prove who wrote each snapshot.
import Crypto
import Foundation
import RedoubtCore
import RedoubtStore

/// Where host key statements live in the store (and so in bucket copies and media sets),
/// and how the server writes them. Key spelling is here only.
public enum HostKeyObjects {
    /// `t/<tenant>/host-keys/`: every statement of the tenant is under it.
    public static func prefix(tenant: String) -> String { RepositoryLayout.hostKeysPrefix(tenant) }

    /// `t/<tenant>/host-keys/<principal ID>.registration`.
    public static func registrationKey(tenant: String, principal: String) -> ObjectKey? {
        RepositoryLayout.key(.hostKeyStatement(tenant: tenant, principal: principal, revocation: false))
    }

    /// `t/<tenant>/host-keys/<principal ID>.revocation`.
    public static func revocationKey(tenant: String, principal: String) -> ObjectKey? {
        RepositoryLayout.key(.hostKeyStatement(tenant: tenant, principal: principal, revocation: true))
    }

    /// True for a statement's name relative to the tenant (`host-keys/<ID>.registration` or
    /// `.revocation`, ID lowercase hex): what a media set carries as an `object` record, and
    /// what an import may turn into a store key.
    public static func isStatementName(_ name: String) -> Bool { RepositoryLayout.statement(name: name) != nil }

    /// A writer principal as the catalog holds it (``PrincipalRepository/hostKeyWriters(tenant:)``).
    public struct Writer: Sendable {
        public let id: String
        public let tenant: String
        public let name: String
        public let hostKey: HostPublicKey
        public let createdAt: Date
        public let revokedAt: Date?

        public init(id: String, tenant: String, name: String, hostKey: HostPublicKey, createdAt: Date,
                    revokedAt: Date?) {
            self.id = id
            self.tenant = tenant
            self.name = name
            self.hostKey = hostKey
            self.createdAt = createdAt
            self.revokedAt = revokedAt
        }
    }

    /// Writes every missing registration and revocation of `tenant`'s writers (every
    /// tenant's when nil), each signed by `ca`, locked until `now` + the tenant's minimum
    /// retention; returns how many it wrote. Existing objects are left as they are (they
    /// are immutable, and a fresh signature would differ). Run at server start, before
    /// each bucket sync and media write, and on a host's commit, so tenants from before
    /// statements existed are covered.
    @discardableResult
    public static func ensure(catalog: any CatalogRepositories, store: any ObjectStore, ca: CertificateAuthority,
                              tenant: String? = nil, now: Date) async throws -> Int {
        var written = 0
        var minRetention: [String: TimeInterval] = [:]
        for t in try await catalog.tenants() where tenant == nil || t.name == tenant {
            minRetention[t.name] = t.minRetention
        }
        for w in try await catalog.hostKeyWriters(tenant: tenant) {
            let until = RepositoryService.ceilDay(now.addingTimeInterval(minRetention[w.tenant] ?? 0))
            if try await ensureRegistration(w, store: store, ca: ca, until: until) { written += 1 }
            if let at = w.revokedAt, let key = revocationKey(tenant: w.tenant, principal: w.id),
               try await store.head(key) == nil {
                let s = HostKeyStatement(kind: .revocation, tenant: w.tenant, host: w.name, principal: w.id,
                                         hostKey: w.hostKey, time: Int64(at.timeIntervalSince1970.rounded(.down)),
                                         snapshots: try await committed(by: w, catalog: catalog, store: store))
                _ = try await store.put(key, try s.encoded(signedBy: ca.key), retainUntil: until)
                written += 1
            }
        }
        return written
    }

    /// Writes `w`'s registration unless the store has it; true if written.
    static func ensureRegistration(_ w: Writer, store: any ObjectStore, ca: CertificateAuthority,
                                   until: Date) async throws -> Bool {
        guard let key = registrationKey(tenant: w.tenant, principal: w.id) else {
            throw ServerError(500, "E_INTERNAL", "principal ID \(w.id) does not make a store key")
        }
        guard try await store.head(key) == nil else { return false }
        let s = HostKeyStatement(kind: .registration, tenant: w.tenant, host: w.name, principal: w.id,
                                 hostKey: w.hostKey, time: Int64(w.createdAt.timeIntervalSince1970.rounded(.down)))
        _ = try await store.put(key, try s.encoded(signedBy: ca.key), retainUntil: until)
        return true
    }

    /// The snapshots `w`'s key committed: those of its host whose manifest names the key.
    /// Read from the manifests themselves, since the catalog does not keep the signer.
    static func committed(by w: Writer, catalog: any CatalogRepositories,
                          store: any ObjectStore) async throws -> [SnapshotID] {
        var out: [SnapshotID] = []
        let since = w.createdAt.addingTimeInterval(-1)
        for s in try await catalog.snapshots(tenant: w.tenant, host: w.name) where s.committedAt >= since {
            guard let id = SnapshotID(hex: s.id) else { continue }
            let key = RepositoryService.manifestKey(tenant: w.tenant, id: id)
            // A manifest that cannot be read here cannot be restored from a copy either
            // (verify reports it); leaving it out must not keep the revocation from existing.
            guard let bytes = try? await store.get(key), let m = try? Manifest.parse(bytes, expectedID: id) else {
                continue
            }
            if m.header.hostKey == w.hostKey { out.append(id) }
        }
        return out
    }

    /// The statements of `tenant` in `store`, by key, for a copy or a media set.
    public static func all(in store: any ObjectStore,
                           tenant: String) async throws -> [(key: ObjectKey, bytes: [UInt8])] {
        var out: [(key: ObjectKey, bytes: [UInt8])] = []
        for info in try await store.list(prefix: prefix(tenant: tenant)).sorted(by: { $0.key < $1.key }) {
            out.append((info.key, try await store.get(info.key)))
        }
        return out
    }
}

extension RepositoryService {
    /// `HostKeyObjects.ensure` with this server's CA and clock.
    @discardableResult
    public func recordHostKeys(tenant: String? = nil) async throws -> Int {
        try await HostKeyObjects.ensure(catalog: catalog, store: store, ca: ca, tenant: tenant, now: try now())
    }

    /// On a commit by `p`: its registration exists and stays locked at least as long as
    /// the snapshot's packs (a restorer of a copy needs it as long as any snapshot it signed).
    func lockRegistration(of p: Principal, tenant: TenantRecord, until: Date) async throws {
        guard let raw = p.hostKey, let key = HostKeyObjects.registrationKey(tenant: tenant.name, principal: p.id) else {
            return
        }
        let createdAt: Date
        if let enrolled = try await catalog.principalInfo(id: p.id)?.createdAt {
            createdAt = enrolled
        } else {
            createdAt = try await now()
        }
        let w = HostKeyObjects.Writer(id: p.id, tenant: tenant.name, name: p.name,
                                      hostKey: try HostPublicKey(rawRepresentation: raw),
                                      createdAt: createdAt,
                                      revokedAt: nil)
        _ = try await HostKeyObjects.ensureRegistration(w, store: store, ca: ca, until: until)
        if let info = try await store.head(key), (info.retainUntil ?? .distantPast) < until {
            try await store.extendRetention(key, until: until)
        }
    }

    /// `POST /v1/principals/{id}/revoke`, then the revoked writer's revocation object at
    /// once (listing what its key committed), so copies made from now on carry it.
    public func revokePrincipalRecorded(id: String, _ req: Wire.ApprovedChange,
                                        ctx: CallContext) async throws -> Wire.PrincipalInfo {
        let info = try await revokePrincipal(id: id, req, ctx: ctx)
        if info.role == Role.writer.rawValue, let t = info.tenant {
            do { try await recordHostKeys(tenant: t) } catch {
                // The revocation stands in the catalog; the object follows at the next start or sync.
                logger.warning("revocation object not written yet",
                               metadata: ["principal": "\(id)", "error": "\(error)"])
            }
        }
        return info
    }
}

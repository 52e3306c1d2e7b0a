// Verifying a bucket copy alone: no server, no catalog, no key. Every object
// under a tenant's prefix is read whole and checked against its name (packs and
// manifests are named by their SHA-256) and its lock (COMPLIANCE, retain-until ahead);
// every pack a manifest names must be there.
import Crypto
import Foundation
import RedoubtAWS
import RedoubtCore
import RedoubtStore

/// The outcome of `BucketVerify.run`: counts and the objects found wrong, by class.
/// The JSON form (`redoubt copy verify --json`) is stable: keys are never renamed.
public struct BucketVerifyReport: Sendable, Codable, Equatable {
    /// One object found wrong: its key (relative to the copy's prefix) and why.
    public struct Finding: Sendable, Codable, Equatable {
        public var key: String
        public var detail: String
    }
    public var tenant: String
    public var objects: Int = 0
    public var bytes: Int = 0
    public var manifests: Int = 0
    public var packs: Int = 0
    /// Packs a manifest names that are not in the bucket (and a missing tenant descriptor).
    public var missing: [Finding] = []
    /// Bytes that are not what the key says: a hash that is not the ID, a manifest that
    /// does not parse, a recorded `x-amz-meta-sha256` that is absent or does not match.
    public var wrong: [Finding] = []
    /// Objects without a COMPLIANCE lock in force: no lock, GOVERNANCE, or expired.
    public var unlocked: [Finding] = []
    /// Locked, but retain-until falls before now + the minimum asked for.
    public var expiring: [Finding] = []
    /// Objects under the tenant's prefix that are none of Redoubt's (not a pack, manifest or descriptor name).
    public var extra: [Finding] = []

    /// Whether the copy can be trusted for a restore: nothing missing, wrong or unlocked.
    public var intact: Bool { missing.isEmpty && wrong.isEmpty && unlocked.isEmpty }
    /// Nothing to report at all.
    public var clean: Bool { intact && expiring.isEmpty && extra.isEmpty }
}

public enum BucketVerify {
    /// What a name under `t/<tenant>/` is.
    enum Kind: Equatable {
        case pack(PackID)
        case manifest(SnapshotID)
        case descriptor(Int)
        /// `catalog/<unix ms>.json`: the server's listing of the tenant's snapshots at a sync.
        case catalogExport
        /// `host-keys/<principal ID>.registration|.revocation` (docs/FORMAT.md §6.4).
        case hostKeyStatement
        case extra
    }

    static func kind(_ name: String, tenant: String) -> Kind {
        switch RepositoryLayout.parse(name, tenant: tenant) {
        case .pack(_, let id): .pack(id)
        case .manifest(_, let id): .manifest(id)
        case .descriptor(_, let v): .descriptor(v)
        case .catalogExport: .catalogExport
        case .hostKeyStatement: .hostKeyStatement
        case .auditHead, nil: .extra
        }
    }

    /// The key version of a tenant descriptor name (`t/<tenant>/tenant-v<N>.json`), else nil.
    public static func descriptorVersion(_ name: String, tenant: String) -> Int? {
        if case .descriptor(let v) = kind(name, tenant: tenant) { return v }
        return nil
    }

    /// The tenants a bucket copy holds (the names under `t/`), sorted.
    public static func tenants(in store: any OriginalVersionStore) async throws -> [String] {
        var out = Set<String>()
        for name in try await store.originalNames(prefix: RepositoryLayout.tenantsPrefix) {
            if let t = RepositoryLayout.tenant(of: name) { out.insert(t) }
        }
        return out.sorted()
    }

    /// Checks every object of `tenant` in `store`: each is read whole (the hash recorded
    /// with it must match, and for packs and manifests the SHA-256 must be the name),
    /// each must be COMPLIANCE-locked until at least `now + minRetain` (an expired lock
    /// counts as unlocked), and every pack that a manifest names must be there.
    /// Problems are collected, not thrown; only a failure to talk to the bucket throws.
    /// With `trustRoot` (the server CA's key a restorer pins), host key statements must
    /// open under it and every manifest must be signed by a key they register and do not
    /// revoke before it (else *wrong*, `E_SIGNATURE`); without it, authorship is not checked.
    public static func run(store: any OriginalVersionStore, tenant: String, now: Date, minRetain: TimeInterval,
                           trustRoot: P256.Signing.PublicKey? = nil,
                           progress: (String) -> Void) async throws -> BucketVerifyReport {
        var report = BucketVerifyReport(tenant: tenant)
        let prefix = RepositoryLayout.tenantPrefix(tenant)
        guard ObjectKey(prefix + "x") != nil else {
            throw StoreError(.config, key: prefix,
                "tenant name \(tenant.debugDescription) is not a valid key component")
        }
        let names = try await store.originalNames(prefix: prefix)
        // Names that are not valid keys cannot be Redoubt's; they are listed, not read.
        for name in names where ObjectKey(name) == nil {
            report.extra.append(.init(key: name, detail: "not a Redoubt key name (written by something else)"))
        }
        let infos = try await store.list(prefix: prefix)
        var present = Set<PackID>()
        var needed: [PackID: [SnapshotID]] = [:]
        var descriptors = 0
        var toRead: [(info: ObjectInfo, kind: Kind)] = []
        for info in infos {
            let key = info.key.path
            report.objects += 1
            report.bytes += info.size
            // The lock. Why COMPLIANCE only: a GOVERNANCE lock can be lifted by anyone
            // with s3:BypassGovernanceRetention, so it is no protection against an admin's
            // stolen credential.
            if let until = info.retainUntil {
                if !info.enforced {
                    report.unlocked.append(.init(key: key,
                        detail: """
                            lock mode is not COMPLIANCE (GOVERNANCE can be bypassed); retain-until \
                            \(S3Date.format(until))
                            """))
                } else if until <= now {
                    report.unlocked.append(.init(key: key,
                        detail: "COMPLIANCE lock expired at \(S3Date.format(until))"))
                } else if until < now.addingTimeInterval(minRetain) {
                    report.expiring.append(.init(key: key,
                        detail: """
                            retain-until \(S3Date.format(until)) is before the minimum asked for, \
                            \(S3Date.format(now.addingTimeInterval(minRetain)))
                            """))
                }
            } else {
                report.unlocked.append(.init(key: key, detail: "no Object Lock on the version Redoubt reads"))
            }
            let kind = kind(key, tenant: tenant)
            switch kind {
            case .extra:
                report.extra.append(.init(key: key,
                    detail: "not a pack, manifest, tenant descriptor or catalog export name"))
                continue
            case .pack(let id):
                // There, even if its bytes are wrong: reported once, as wrong, not also as missing.
                present.insert(id)
                report.packs += 1
            case .manifest: report.manifests += 1
            case .descriptor: descriptors += 1
            case .catalogExport, .hostKeyStatement: break
            }
            toRead.append((info, kind))
        }

        // The bytes: every object read whole, a few at a time (each read is latency-bound).
        let total = toRead.reduce(0) { $0 + $1.info.size }
        var results: [(wrong: String?, needs: [PackID])?] = Array(repeating: nil, count: toRead.count)
        var done = 0
        var doneBytes = 0
        try await withThrowingTaskGroup(of: (Int, String?, [PackID]).self) { group in
            func collect(_ r: (Int, String?, [PackID])) {
                results[r.0] = (r.1, r.2)
                done += 1
                doneBytes += toRead[r.0].info.size
                if done % 50 == 0 || done == toRead.count {
                    progress("\(done)/\(toRead.count) objects read, \(doneBytes)/\(total) bytes: "
                        + "\(toRead[r.0].info.key.path)")
                }
            }
            for (i, item) in toRead.enumerated() {
                if i >= 4, let r = try await group.next() { collect(r) }
                group.addTask {
                    let c = try await check(store, item.info.key, item.kind)
                    return (i, c.wrong, c.needs)
                }
            }
            while let r = try await group.next() { collect(r) }
        }
        for (i, item) in toRead.enumerated() {
            guard let r = results[i] else { continue }
            if let wrong = r.wrong { report.wrong.append(.init(key: item.info.key.path, detail: wrong)) }
            if case .manifest(let id) = item.kind { for p in r.needs { needed[p, default: []].append(id) } }
        }
        for (p, snapshots) in needed.sorted(by: { $0.key < $1.key }) where !present.contains(p) {
            report.missing.append(.init(key: RepositoryLayout.packKey(tenant: tenant, id: p).path,
                                        detail: """
                                            pack \(p) is named by snapshot \
                                            \(snapshots.map(\.description).sorted().joined(separator: ", ")) and is \
                                            not in the bucket
                                            """))
        }
        if let trustRoot {
            try await checkAuthorship(store: store, tenant: tenant, trustRoot: trustRoot, objects: toRead,
                                      report: &report)
        }
        if descriptors == 0 {
            report.missing.append(.init(key: RepositoryLayout.descriptorsPrefix(tenant) + "<N>.json",
                                        detail: """
                                            no tenant descriptor: the wrapped read key is not in the copy (restore \
                                            needs --read-key FILE)
                                            """))
        }
        return report
    }

    /// The authorship pass: statements that do not open under `trustRoot`, and manifests
    /// no statement vouches for, are *wrong*. Objects whose bytes were already wrong are
    /// skipped (reported once).
    static func checkAuthorship(store: any OriginalVersionStore, tenant: String, trustRoot: P256.Signing.PublicKey,
                                objects: [(info: ObjectInfo, kind: Kind)],
                                report: inout BucketVerifyReport) async throws {
        let bad = Set(report.wrong.map(\.key))
        var statements: [(name: String, bytes: [UInt8])] = []
        for o in objects where o.kind == .hostKeyStatement && !bad.contains(o.info.key.path) {
            let bytes = try await store.get(o.info.key)
            do { _ = try HostKeyStatement.open(bytes, trustRoot: trustRoot, object: o.info.key.path) } catch {
                report.wrong.append(.init(key: o.info.key.path, detail: "\(error)"))
            }
            statements.append((o.info.key.path, bytes))
        }
        let registry = HostKeyRegistry(tenant: tenant, trustRoot: trustRoot, objects: statements)
        for o in objects where !bad.contains(o.info.key.path) {
            guard case .manifest(let id) = o.kind else { continue }
            do {
                let manifest = try Manifest.parse(try await store.get(o.info.key), expectedID: id)
                try registry.check(manifest, readKeyID: nil)
            } catch {
                report.wrong.append(.init(key: o.info.key.path, detail: "\(error)"))
            }
        }
    }

    /// Reads one object whole and checks its bytes against its name: why it is wrong
    /// (nil if right) and, for a manifest, the packs it names. The store's `get` checks the
    /// bytes against the digest recorded with the original version first
    /// (``OriginalVersionStore``).
    static func check(_ store: any OriginalVersionStore, _ key: ObjectKey,
                      _ kind: Kind) async throws -> (wrong: String?,
        needs: [PackID]) {
        let bytes: [UInt8]
        do { bytes = try await store.get(key) } catch let e as StoreError where e.code == .integrity
            || e.code == .notFound {
            return (e.detail, [])
        }
        switch kind {
        case .pack(let id):
            let actual = SigV4Signer.hexSHA256(bytes)
            return (actual == id.description ? nil : "SHA-256 of the bytes is \(actual), not the pack ID", [])
        case .manifest(let id):
            do { return (nil, try Manifest.parse(bytes, expectedID: id, object: key.path).header.packs) } catch {
                return ("\(error)", [])
            }
        case .descriptor:
            let ok = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] != nil
            return (ok ? nil : "tenant descriptor is not a JSON object", [])
        case .catalogExport:
            let d = JSONDecoder()
            d.dateDecodingStrategy = .iso8601
            let ok = (try? d.decode(BucketCopy.CatalogExport.self, from: Data(bytes)))?.format == 1
            return (ok ? nil : "catalog export is not a format-1 snapshot listing", [])
        case .extra, .hostKeyStatement:
            // Statements are checked against the trust root in the authorship pass, if asked.
            return (nil, [])
        }
    }
}

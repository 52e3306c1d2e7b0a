import Foundation
import RedoubtCore

/// Where each object of a repository lives: the one place that spells an object key, and
/// the one parser of keys back into what they name. Pure: it touches no store.
///
/// ```
/// t/<tenant>/tenant-v<N>.json            the tenant descriptor of key version N
/// t/<tenant>/packs/<first 2 hex>/<pack ID>
/// t/<tenant>/snapshots/<snapshot ID>     a snapshot's manifest
/// t/<tenant>/catalog/<13-digit ms>.json  a bucket copy's listing of the tenant's snapshots
/// t/<tenant>/host-keys/<principal ID>.registration|.revocation   a host key statement
/// audit-head/<12-digit seq>.json         a bucket copy's anchored audit chain head
/// ```
///
/// It sits beside `ObjectKey` in RedoubtStore because its output is a validated key; no
/// store consults it, so every `ObjectStore` still knows names and bytes only. Parsing
/// accepts the canonical spelling only (lowercase hex, a pack filed under its first two
/// digits, decimal versions without leading zeros): anything else in a tenant's prefix
/// was not written by Redoubt.
public enum RepositoryLayout {
    /// One object a key names.
    public enum Object: Hashable, Sendable {
        case pack(tenant: String, id: PackID)
        case manifest(tenant: String, id: SnapshotID)
        case descriptor(tenant: String, version: Int)
        case catalogExport(tenant: String, milliseconds: Int64)
        /// A CA-signed registration (or, `revocation`, revocation) of a host's signing key
        /// (docs/FORMAT.md §6.4); `principal` is the host's principal ID, lowercase hex.
        case hostKeyStatement(tenant: String, principal: String, revocation: Bool)
        case auditHead(seq: Int64)

        /// The tenant the object belongs to; nil for the audit chain head.
        public var tenant: String? {
            switch self {
            case .pack(let t, _), .manifest(let t, _), .descriptor(let t, _), .catalogExport(let t, _),
                 .hostKeyStatement(let t, _, _): t
            case .auditHead: nil
            }
        }
    }

    /// The prefix every tenant's objects share.
    public static let tenantsPrefix = "t/"
    /// The prefix of anchored audit chain heads in a bucket copy.
    public static let auditHeadPrefix = "audit-head/"
    static let descriptorStem = "tenant-v"

    /// Everything of `tenant`: `t/<tenant>/`.
    public static func tenantPrefix(_ tenant: String) -> String { "\(tenantsPrefix)\(tenant)/" }
    /// The tenant's manifests: `t/<tenant>/snapshots/`.
    public static func snapshotsPrefix(_ tenant: String) -> String { tenantPrefix(tenant) + "snapshots/" }
    /// The tenant's descriptors: `t/<tenant>/tenant-v`.
    public static func descriptorsPrefix(_ tenant: String) -> String { tenantPrefix(tenant) + descriptorStem }
    /// The tenant's host key statements: `t/<tenant>/host-keys/`.
    public static func hostKeysPrefix(_ tenant: String) -> String { tenantPrefix(tenant) + hostKeysDirectory }
    static let hostKeysDirectory = "host-keys/"

    /// Whether `tenant` can name objects at all (every character a key may hold, no `/`).
    public static func isUsableTenant(_ tenant: String) -> Bool {
        !tenant.contains("/") && ObjectKey(tenantPrefix(tenant) + "x") != nil
    }

    /// The key of `object`; nil only when its tenant cannot be part of a key (see
    /// `isUsableTenant`), or a number is negative.
    public static func key(_ object: Object) -> ObjectKey? {
        if let t = object.tenant, !isUsableTenant(t) { return nil }
        switch object {
        case .pack(let t, let id):
            let h = id.description
            return ObjectKey("\(tenantPrefix(t))packs/\(h.prefix(2))/\(h)")
        case .manifest(let t, let id):
            return ObjectKey("\(snapshotsPrefix(t))\(id)")
        case .descriptor(let t, let v):
            return v >= 1 ? ObjectKey(tenantPrefix(t) + descriptorName(version: v)) : nil
        case .catalogExport(let t, let ms):
            return ms >= 0 ? ObjectKey("\(tenantPrefix(t))catalog/\(String(format: "%013lld", ms)).json") : nil
        case .hostKeyStatement(let t, let principal, let revocation):
            let name = hostKeyStatementName(principal: principal, revocation: revocation)
            return statement(name: name) != nil ? ObjectKey(tenantPrefix(t) + name) : nil
        case .auditHead(let seq):
            return seq >= 0 ? ObjectKey("\(auditHeadPrefix)\(String(format: "%012lld", seq)).json") : nil
        }
    }

    // Why these force-unwrap: every caller passes a tenant the server accepted
    // (lowercase letters, digits, `.`, `-`, `_`), all of which a key may hold, and IDs
    // print as lowercase hex; a name that could fail was refused long before.

    /// `t/<tenant>/packs/<first 2 hex>/<pack ID>`.
    public static func packKey(tenant: String, id: PackID) -> ObjectKey { key(.pack(tenant: tenant, id: id))! }
    /// `t/<tenant>/snapshots/<snapshot ID>`.
    public static func manifestKey(tenant: String, id: SnapshotID) -> ObjectKey {
        key(.manifest(tenant: tenant, id: id))!
    }
    /// `t/<tenant>/tenant-v<version>.json`.
    public static func descriptorKey(tenant: String, version: Int) -> ObjectKey {
        key(.descriptor(tenant: tenant, version: version))!
    }

    /// A descriptor's name inside its tenant's prefix (also its record ID on media): `tenant-v<N>.json`.
    public static func descriptorName(version: Int) -> String { "\(descriptorStem)\(version).json" }

    /// The key version a descriptor name (`tenant-v<N>.json`) holds, else nil.
    public static func descriptorVersion(name: some StringProtocol) -> Int? {
        guard name.hasPrefix(descriptorStem), name.hasSuffix(".json") else { return nil }
        let n = name.dropFirst(descriptorStem.count).dropLast(".json".count)
        guard let v = Int(n), v >= 1, String(v) == n else { return nil }
        return v
    }

    /// A statement's name inside its tenant's prefix (also its record ID on media):
    /// `host-keys/<principal ID>.registration` or `.revocation`.
    public static func hostKeyStatementName(principal: String, revocation: Bool) -> String {
        "\(hostKeysDirectory)\(principal).\(revocation ? "revocation" : "registration")"
    }

    /// The principal and kind a statement name (`host-keys/<ID>.registration|.revocation`,
    /// ID 1–64 lowercase hex digits) holds, else nil.
    public static func statement(name: some StringProtocol) -> (principal: String, revocation: Bool)? {
        guard name.hasPrefix(hostKeysDirectory) else { return nil }
        let rest = name.dropFirst(hostKeysDirectory.count)
        for (suffix, revocation) in [(".registration", false), (".revocation", true)] where rest.hasSuffix(suffix) {
            let id = rest.dropLast(suffix.count)
            guard (1...64).contains(id.count), id.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else { return nil }
            return (String(id), revocation)
        }
        return nil
    }

    /// What `path` names, or nil for anything Redoubt does not write there (a malformed or
    /// non-canonical key, an unknown kind).
    public static func parse(_ path: String) -> Object? {
        guard ObjectKey(path) != nil else { return nil }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if parts.count == 2, parts[0] + "/" == auditHeadPrefix {
            guard let seq = digits(parts[1], count: 12) else { return nil }
            return .auditHead(seq: seq)
        }
        guard parts.count >= 3, parts[0] + "/" == tenantsPrefix else { return nil }
        let t = parts[1]
        let rest = Array(parts[2...])
        switch rest.count {
        case 3 where rest[0] == "packs":
            if let id = PackID(hex: rest[2]), id.description == rest[2], rest[1] == String(rest[2].prefix(2)) {
                return .pack(tenant: t, id: id)
            }
        case 2 where rest[0] == "snapshots":
            if let id = SnapshotID(hex: rest[1]), id.description == rest[1] { return .manifest(tenant: t, id: id) }
        case 2 where rest[0] == "catalog":
            if let ms = digits(rest[1], count: 13) { return .catalogExport(tenant: t, milliseconds: ms) }
        case 2 where rest[0] + "/" == hostKeysDirectory:
            if let s = statement(name: rest.joined(separator: "/")) {
                return .hostKeyStatement(tenant: t, principal: s.principal, revocation: s.revocation)
            }
        case 1:
            if let v = descriptorVersion(name: rest[0]) { return .descriptor(tenant: t, version: v) }
        default: break
        }
        return nil
    }

    /// What `path` names if it is one of `tenant`'s objects; nil for another tenant's,
    /// the audit head, or anything malformed.
    public static func parse(_ path: String, tenant: String) -> Object? {
        guard let o = parse(path), o.tenant == tenant else { return nil }
        return o
    }

    /// The tenant whose prefix `path` is under (`t/<tenant>/…`), whatever follows.
    public static func tenant(of path: String) -> String? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count > 2, parts[0] + "/" == tenantsPrefix, !parts[1].isEmpty else { return nil }
        return String(parts[1])
    }

    /// `<n digits>.json` → n as a number.
    private static func digits(_ name: String, count: Int) -> Int64? {
        guard name.hasSuffix(".json") else { return nil }
        let n = name.dropLast(".json".count)
        guard n.count == count, n.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int64(n)
    }
}

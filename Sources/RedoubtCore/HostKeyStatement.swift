import Crypto
import Foundation

/// A statement, signed by the repository's trust root (the server CA's P-256 key, which
/// restorers pin), about one host signing key: that it was registered for a host of a tenant
/// (a **registration**), or that it was revoked and which snapshots it had committed by then
/// (a **revocation**). docs/FORMAT.md §6.4.
///
/// Why these exist: a manifest's own header names the key that signed it, so a manifest
/// proves only that its bytes are whole. Whoever can write a bucket copy or a media set could
/// plant a snapshot signed by a key of their own; a restorer that reads such a copy without
/// the server checks the signing key against these statements instead.
public struct HostKeyStatement: Sendable, Hashable {
    public enum Kind: UInt8, Sendable {
        case registration = 1
        case revocation = 2
    }

    public var kind: Kind
    public var tenant: String
    public var host: String
    /// The principal ID the server gave the host at enrollment (32 lowercase hex digits).
    public var principal: String
    public var hostKey: HostPublicKey
    /// Unix seconds by the server's clock: from when the key is valid (registration), or
    /// when it was revoked (revocation).
    public var time: Int64
    /// A revocation's list of every snapshot the key committed before it was revoked,
    /// ascending by ID bytes; empty in a registration.
    public var snapshots: [SnapshotID]

    public static let magic = Array("RDBTHKEY".utf8)
    public static let version: UInt16 = 1
    /// What the trust root signs: this label, then the body.
    public static let signatureLabel = Array("redoubt/v1/host-key-statement".utf8)
    /// A revocation lists every snapshot the key committed; bound so a hostile object
    /// cannot make a reader allocate without limit (2^20 snapshots of one host is 32 MiB).
    public static let maxSnapshots = 1 << 20
    public static let maxSize = 64 + 3 * 1024 + maxSnapshots * 32

    public init(kind: Kind, tenant: String, host: String, principal: String, hostKey: HostPublicKey, time: Int64,
                snapshots: [SnapshotID] = []) {
        self.kind = kind
        self.tenant = tenant
        self.host = host
        self.principal = principal
        self.hostKey = hostKey
        self.time = time
        self.snapshots = snapshots.sorted { bytesPrecede($0.bytes, $1.bytes) }
    }

    /// The signed part: `kind u8 ‖ tenant string ‖ host string ‖ principal string ‖
    /// hostKey[32] ‖ time i64 ‖ count uvarint ‖ count × snapshotID[32]`.
    public var body: [UInt8] {
        var w = ByteWriter(capacity: 128 + snapshots.count * 32)
        w.u8(kind.rawValue)
        w.string(tenant)
        w.string(host)
        w.string(principal)
        w.raw(hostKey.rawRepresentation)
        w.i64(time)
        w.uvarint(UInt64(snapshots.count))
        for s in snapshots { w.raw(s.bytes) }
        return w.bytes
    }

    /// The object's bytes: `magic ‖ version u16 ‖ body bytes* ‖ signature[64]`, signed with
    /// ECDSA P-256 / SHA-256 (raw `r ‖ s`) over `signatureLabel ‖ body`.
    public func encoded(signedBy key: P256.Signing.PrivateKey) throws(CoreError) -> [UInt8] {
        let b = body
        let sig: P256.Signing.ECDSASignature
        do { sig = try key.signature(for: Self.signatureLabel + b) } catch {
            throw CoreError(.badKey, object: "host key statement", "the trust root cannot sign: \(error)")
        }
        return Self.frame(body: b, signature: Array(sig.rawRepresentation))
    }

    /// Frames a body and a raw signature (also how fixtures are assembled).
    public static func frame(body: [UInt8], signature: [UInt8]) -> [UInt8] {
        var w = ByteWriter(capacity: body.count + 96)
        w.raw(magic)
        w.u16(version)
        w.lengthPrefixed(body)
        w.raw(signature)
        return w.bytes
    }

    /// Parses an object and checks its signature under `trustRoot`. `object` names it in
    /// errors (its store key). `.badSignature` if the trust root did not sign it.
    public static func open(_ bytes: [UInt8], trustRoot: P256.Signing.PublicKey,
                            object: String) throws(CoreError) -> HostKeyStatement {
        guard bytes.count <= maxSize else {
            throw CoreError(.limitExceeded, object: object, "\(bytes.count) bytes is not a host key statement")
        }
        var r = ByteReader(bytes)
        let body: [UInt8], sig: [UInt8]
        do {
            guard try r.raw(8) == magic else {
                throw CoreError(.corrupt, object: object, "bad magic: not a host key statement")
            }
            let v = try r.u16()
            guard v == version else {
                throw CoreError(.unsupportedVersion, object: object,
                                "host key statement version \(v); this build reads \(version): upgrade redoubt")
            }
            body = try r.lengthPrefixed(limit: maxSize)
            sig = try r.raw(64)
            guard r.isAtEnd else { throw CoreError(.corrupt, object: object, "trailing bytes after the signature") }
        } catch let e as CoreError {
            throw e
        } catch let e as ByteReader.Failure {
            throw e.corrupt(object, "malformed host key statement")
        } catch {
            throw CoreError(.corrupt, object: object, "\(error)")
        }
        // Why before decoding the body: nothing of an unsigned object is believed.
        guard let signature = try? P256.Signing.ECDSASignature(rawRepresentation: sig),
              trustRoot.isValidSignature(signature, for: signatureLabel + body)
        else {
            throw CoreError(.badSignature, object: object,
                            "not signed by the pinned server CA: forged or from another repository")
        }
        return try decodeBody(body, object: object)
    }

    /// The statement an object claims to be, without checking its signature: only to name a
    /// forgery in a listing (`HostKeyRegistry.status`), never to trust it.
    static func claimed(_ bytes: [UInt8]) -> HostKeyStatement? {
        guard bytes.count <= maxSize, bytes.count > 8 + 2 + 64 else { return nil }
        var r = ByteReader(bytes)
        guard (try? r.raw(8)) == magic, (try? r.u16()) == version,
              let body = try? r.lengthPrefixed(limit: maxSize) else { return nil }
        return try? decodeBody(body, object: "host key statement")
    }

    static func decodeBody(_ body: [UInt8], object: String) throws(CoreError) -> HostKeyStatement {
        var r = ByteReader(body)
        do {
            guard let kind = Kind(rawValue: try r.u8()) else {
                throw CoreError(.corrupt, object: object, "unknown statement kind")
            }
            let tenant = try r.string(limit: 1024)
            let host = try r.string(limit: 1024)
            let principal = try r.string(limit: 1024)
            let hostKey = try HostPublicKey(rawRepresentation: try r.raw(32))
            let time = try r.i64()
            let n = try r.count(limit: min(maxSnapshots, r.remaining / 32))
            var snaps: [SnapshotID] = []
            snaps.reserveCapacity(n)
            for _ in 0..<n {
                guard let s = SnapshotID(bytes: try r.raw(32)) else {
                    throw CoreError(.corrupt, object: object, "bad snapshot ID")
                }
                if let last = snaps.last, !bytesPrecede(last.bytes, s.bytes) {
                    throw CoreError(.corrupt, object: object, "snapshot list not strictly ascending")
                }
                snaps.append(s)
            }
            guard r.isAtEnd else { throw CoreError(.corrupt, object: object, "trailing bytes in the body") }
            guard kind == .revocation || snaps.isEmpty else {
                throw CoreError(.corrupt, object: object, "a registration lists no snapshots")
            }
            return HostKeyStatement(kind: kind, tenant: tenant, host: host, principal: principal, hostKey: hostKey,
                                    time: time, snapshots: snaps)
        } catch let e as CoreError {
            throw e
        } catch let e as ByteReader.Failure {
            throw e.corrupt(object, "malformed host key statement")
        } catch {
            throw CoreError(.corrupt, object: object, "\(error)")
        }
    }
}

/// The host keys a copy (the store, a bucket copy, a media set) proves were registered by
/// the trust root, and which of them were revoked: what a restorer checks a manifest's
/// signer against when it cannot ask the server. docs/FORMAT.md §6.4.
public struct HostKeyRegistry: Sendable {
    /// A statement object that did not open (forged, damaged, another tenant's): ignored,
    /// and named in the error of a manifest that would have needed it.
    public struct Ignored: Sendable, Hashable {
        public let name: String
        public let reason: String
    }

    public let tenant: String
    public private(set) var registrations: [HostKeyStatement] = []
    public private(set) var revocations: [HostKeyStatement] = []
    public private(set) var ignored: [Ignored] = []
    /// Host keys that a registration here claims but the trust root did not sign.
    public private(set) var forgedKeys: [HostPublicKey] = []

    /// Who wrote a snapshot, as a listing of a copy shows it.
    public enum Status: String, Sendable, Codable {
        /// `check` passes: a registered key, not revoked before the snapshot.
        case verified
        /// No registration of the key opens under the trust root, and none claims it.
        case unregisteredKey = "unregistered-key"
        /// The key is registered but was revoked before this snapshot was committed.
        case revoked
        /// Only a registration the trust root did not sign names the key.
        case forgedStatement = "forged-statement"
        /// The key is registered but the manifest's own signature or header does not check.
        case badSignature = "bad-signature"
    }

    /// What `check` concludes about `manifest`, as one word for a listing.
    public func status(of manifest: Manifest) -> Status {
        do { try check(manifest, readKeyID: nil); return .verified } catch {}
        let h = manifest.header
        if registrations.contains(where: { $0.hostKey == h.hostKey && $0.host == h.host && $0.tenant == h.tenant }) {
            return revocations.contains { $0.hostKey == h.hostKey } ? .revoked : .badSignature
        }
        return forgedKeys.contains(h.hostKey) ? .forgedStatement : .unregisteredKey
    }

    /// Opens every object (`name` is its key, for messages) under `trustRoot`. Objects that
    /// do not open, or that name another tenant, are kept in `ignored`: anyone who can write
    /// the copy can add objects, and one bad object must not stop a restore of genuine
    /// snapshots.
    public init(tenant: String, trustRoot: P256.Signing.PublicKey, objects: [(name: String, bytes: [UInt8])]) {
        self.tenant = tenant
        for (name, bytes) in objects {
            do {
                let s = try HostKeyStatement.open(bytes, trustRoot: trustRoot, object: name)
                guard s.tenant == tenant else {
                    let reason = "names tenant \(s.tenant.debugDescription), not \(tenant.debugDescription)"
                    ignored.append(Ignored(name: name, reason: reason))
                    continue
                }
                switch s.kind {
                case .registration: registrations.append(s)
                case .revocation: revocations.append(s)
                }
            } catch {
                ignored.append(Ignored(name: name, reason: (error as? CoreError)?.detail ?? "\(error)"))
                if let c = HostKeyStatement.claimed(bytes), c.tenant == tenant, c.kind == .registration {
                    forgedKeys.append(c.hostKey)
                }
            }
        }
    }

    /// Checks that `manifest` was signed by a key the trust root registered for the host it
    /// names, in this tenant, and that the key was not revoked before the manifest was
    /// committed (a revoked key's revocation lists every snapshot it committed); then the
    /// signature itself and the read key (`Manifest.verify`). `.badSignature` naming the
    /// snapshot otherwise.
    /// `readKeyID` nil: the read key is not checked (a keyless verify of a copy).
    public func check(_ manifest: Manifest, readKeyID: ReadKeyID?) throws(CoreError) {
        let h = manifest.header
        let object = "snapshot \(manifest.id)"
        let regs = registrations.filter { $0.hostKey == h.hostKey && $0.host == h.host && $0.tenant == h.tenant }
        guard !regs.isEmpty else {
            let note = ignored.isEmpty ? "" : "; \(ignored.count) host key object(s) here were ignored ("
                + ignored.prefix(3).map { "\($0.name): \($0.reason)" }.joined(separator: "; ") + ")"
            throw CoreError(.badSignature, object: object,
                            "signed by host key \(hexString(h.hostKey.rawRepresentation)) of host "
                            + "\(h.host.debugDescription), which no registration signed by the pinned server CA "
                            + "names for tenant \(tenant.debugDescription)" + note
                            + ": not written by an enrolled host (planted in this copy?); refusing it")
        }
        try manifest.verify(tenant: tenant, host: h.host, hostKey: h.hostKey, readKeyID: readKeyID ?? h.readKeyID)
        var revokedAt: [Int64] = []
        for reg in regs {
            let revs = revocations.filter { $0.principal == reg.principal && $0.hostKey == reg.hostKey }
            // Why by listed ID, not by time: the header's time is the host's clock, and a
            // stolen key can backdate; the server listed what the key had committed.
            if revs.isEmpty || revs.contains(where: { $0.snapshots.contains(manifest.id) }) { return }
            revokedAt.append(contentsOf: revs.map(\.time))
        }
        let when = revokedAt.min().map { Date(timeIntervalSince1970: TimeInterval($0)) }.map { "\($0)" } ?? "?"
        throw CoreError(.badSignature, object: object,
                        "signed by host \(h.host.debugDescription)'s key, which the server CA revoked at \(when); "
                        + "the snapshot is not among those the key committed before: refusing it")
    }
}

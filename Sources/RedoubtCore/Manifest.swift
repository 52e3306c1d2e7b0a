import Crypto
import Foundation

/// Counts a backup reports about itself. Public: the server may read them.
public struct SnapshotStatistics: Sendable, Hashable, Codable {
    public var files: UInt64 = 0
    public var directories: UInt64 = 0
    public var otherEntries: UInt64 = 0
    /// Total logical size of the files.
    public var bytesTotal: UInt64 = 0
    /// Bytes the client read from disk (unchanged files found in its cache are not read).
    public var bytesRead: UInt64 = 0
    /// Bytes of packs uploaded for this snapshot, after dedup and compression.
    public var bytesUploaded: UInt64 = 0
    public var chunksNew: UInt64 = 0
    public var chunksReused: UInt64 = 0
    public init() {}
}

/// The public header of a snapshot manifest: what a server may read and index.
public struct ManifestHeader: Sendable, Hashable {
    public var tenant: String
    /// The read key the sealed part is sealed to.
    public var readKeyID: ReadKeyID
    public var host: String
    /// The host's Ed25519 key that signs the manifest.
    public var hostKey: HostPublicKey
    /// When the backup started, by the client's clock.
    public var time: Timestamp
    /// 16 random bytes, so two snapshots never share an ID.
    public var nonce: [UInt8]
    /// The paths that were backed up, as given (raw bytes).
    public var paths: [[UInt8]]
    public var tags: [String]
    public var statistics: SnapshotStatistics
    /// Every pack that holds a chunk this snapshot needs, ascending, unique.
    public var packs: [PackID]
    public var clientVersion: String
    /// What changed on the host since its previous snapshot, by its own account (format 3,
    /// docs/FORMAT.md §6.5). Nil in manifests of formats 1 and 2, and when the section is of
    /// a later version than this build reads.
    public var activity: SnapshotActivity?
    /// The section's bytes as stored (format 3), also when this build cannot read its version.
    public var activityBytes: [UInt8]?

    /// The section as a writer encodes it: the stored bytes if any, else ``activity``'s encoding.
    var encodedActivity: [UInt8]? { activityBytes ?? activity?.encode() }

    public init(tenant: String, readKeyID: ReadKeyID, host: String, hostKey: HostPublicKey, time: Timestamp,
        nonce: [UInt8],
                paths: [[UInt8]], tags: [String], statistics: SnapshotStatistics, packs: [PackID],
                    clientVersion: String, activity: SnapshotActivity? = nil) {
        self.activity = activity
        self.activityBytes = activity?.encode()
        self.tenant = tenant
        self.readKeyID = readKeyID
        self.host = host
        self.hostKey = hostKey
        self.time = time
        self.nonce = nonce
        self.paths = paths
        self.tags = tags
        self.statistics = statistics
        self.packs = packs
        self.clientVersion = clientVersion
    }
}

/// Bounds a reader puts on a manifest's public header beyond the format's own: how many
/// backed-up paths and tags it may carry, and their bytes. The server applies its limits
/// here (docs/PROTOCOL.md §3.2), so a manifest of millions of empty paths is refused while
/// it is parsed, before anything is allocated per path.
public struct ManifestBounds: Sendable, Equatable {
    public var maxPaths: Int
    /// Bytes of all paths together.
    public var maxPathBytes: Int
    public var maxTags: Int
    /// Bytes of each tag.
    public var maxTagBytes: Int

    public init(maxPaths: Int, maxPathBytes: Int, maxTags: Int, maxTagBytes: Int) {
        self.maxPaths = maxPaths
        self.maxPathBytes = maxPathBytes
        self.maxTags = maxTags
        self.maxTagBytes = maxTagBytes
    }
}

/// A snapshot manifest (docs/FORMAT.md §6): a public header, a part sealed to the tenant's
/// read key (the root tree), and the host's signature over both.
///
/// The snapshot ID is the SHA-256 of the manifest's bytes.
public struct Manifest: Sendable {
    public static let magic = Array("RDBTSNAP".utf8)
    /// The version `redoubt backup` writes: 4, with root seals (from 2), a root tree that
    /// keeps each backed-up path whole (from 3, docs/FORMAT.md §5.3) and the header's
    /// activity section (from 4, §6.5).
    public static let version: UInt16 = 4
    static let sealedAADLabel = Array("redoubt/v1/manifest-sealed-aad".utf8)
    public static let maxSize = 64 << 20
    static let signatureSize = 64

    public let id: SnapshotID
    public let header: ManifestHeader
    /// The exact bytes, as stored and as signed.
    public let bytes: [UInt8]
    let headerBytes: [UInt8]
    let encapsulatedKey: [UInt8]
    let sealedBody: [UInt8]
    let signature: [UInt8]
    let signedLength: Int
    /// 1 to 4: from 2 the sealed root gives each root chunk's seal; from 3 the root tree
    /// names each backed-up path by all its components (``keepsPathsWhole``); from 4 the
    /// header carries the host's activity section.
    public var version: UInt16 = 1

    /// The root tree holds each backed-up path at its whole path (`/b/x` is `b` → `x`);
    /// before version 3 it held one entry per path named by its last component
    /// (docs/FORMAT.md §5.3).
    public var keepsPathsWhole: Bool { version >= 3 }

    /// Builds and signs a manifest. `root` is the chunk list of the root tree's encoding;
    /// with `rootSeals` (one per root chunk) it is format 2 (or `version`, 2 or 3), without
    /// them format 1. Version 3 says the root tree keeps paths whole: only a writer that
    /// lays the root out so passes it.
    public static func create(header: ManifestHeader, root: [ChunkID], rootSeals: [ChunkSeal]? = nil,
                              version: UInt16 = 2, readPublicKey: ReadPublicKey,
                              signingKey: HostSigningKey) throws(CoreError) -> Manifest {
        if let rootSeals, rootSeals.count != root.count {
            throw CoreError(.corrupt, object: "new snapshot",
                            "\(rootSeals.count) root seals for \(root.count) root chunks")
        }
        guard (2...4).contains(version) else {
            throw CoreError(.unsupportedVersion, object: "new snapshot", "manifest version \(version) is not written")
        }
        guard header.readKeyID == readPublicKey.keyID, header.hostKey == signingKey.publicKey else {
            throw CoreError(.badKey, object: "new snapshot",
                "header names a different read key or host key than the ones given")
        }
        guard header.nonce.count == 16 else {
            throw CoreError(.corrupt, object: "new snapshot", "nonce must be 16 bytes")
        }
        // Version 4 is exactly the one whose header carries an activity section.
        guard (header.encodedActivity != nil) == (rootSeals != nil && version == 4) else {
            throw CoreError(.corrupt, object: "new snapshot",
                            "an activity section goes with root seals and manifest version 4, and only with them")
        }
        let version: UInt16 = rootSeals == nil ? 1 : version
        let headerBytes = encodeHeader(header)
        var body = ByteWriter(capacity: 8 + root.count * 32)
        body.uvarint(UInt64(root.count))
        for (k, c) in root.enumerated() {
            body.raw(c.bytes)
            if let rootSeals {
                body.raw(rootSeals[k].key)
                body.u32(rootSeals[k].rawLength)
            }
        }
        var w = ByteWriter(capacity: headerBytes.count + 2048)
        w.raw(magic)
        w.u16(version)
        w.lengthPrefixed(headerBytes)
        do {
            var sender = try HPKE.Sender(recipientKey: readPublicKey.key, ciphersuite: readKeyCiphersuite,
                info: hpkeInfo(readPublicKey.keyID))
            let sealed = try sender.seal(body.bytes, authenticating: sealedAADLabel + headerBytes)
            w.lengthPrefixed(Array(sender.encapsulatedKey))
            w.lengthPrefixed(Array(sealed))
        } catch {
            throw CoreError(.badKey, object: "new snapshot",
                "cannot seal the root to read key \(readPublicKey.keyID): \(error)")
        }
        let signed = w.bytes
        w.raw(try signingKey.signature(for: Label.manifestSignature + signed))
        return try parse(w.bytes, object: "new snapshot")
    }

    static func hpkeInfo(_ keyID: ReadKeyID) -> Data { Data(Label.manifestHPKE + keyID.bytes) }

    /// Parses a manifest's structure from untrusted bytes. This checks neither the
    /// signature nor who it names: call ``verify(tenant:host:hostKey:readKeyID:)``.
    /// If `expectedID` is given the bytes must hash to it.
    /// `bounds`, if given, limits the header's paths and tags (`.limitExceeded` beyond them).
    public static func parse(_ bytes: [UInt8], expectedID: SnapshotID? = nil, object: String? = nil,
                             bounds: ManifestBounds? = nil) throws(CoreError) -> Manifest {
        let id = SnapshotID(bytes: Array(SHA256.hash(data: bytes)))!
        let object = object ?? "snapshot \(expectedID ?? id)"
        if let expectedID, expectedID != id {
            throw CoreError(.authenticationFailed, object: object,
                "bytes hash to \(id): the manifest was modified or is another one")
        }
        guard bytes.count <= maxSize else {
            throw CoreError(.limitExceeded, object: object, "manifest of \(bytes.count) bytes exceeds the limit")
        }
        var r = ByteReader(bytes)
        do {
            guard try r.raw(8) == magic else {
                throw CoreError(.corrupt, object: object, "bad magic: not a Redoubt snapshot manifest")
            }
            let v = try r.u16()
            guard (1...4).contains(v) else {
                throw CoreError(.unsupportedVersion, object: object,
                                "manifest format version \(v); this build reads 1 to 4: upgrade redoubt")
            }
            let headerBytes = try r.lengthPrefixed()
            let enc = try r.lengthPrefixed(limit: 2048)
            let sealed = try r.lengthPrefixed()
            let signedLength = r.offset
            let sig = try r.raw(signatureSize)
            guard r.isAtEnd else { throw CoreError(.corrupt, object: object, "trailing bytes after the signature") }
            let header = try decodeHeader(headerBytes, object: object, bounds: bounds, activity: v >= 4)
            return Manifest(id: id, header: header, bytes: bytes, headerBytes: headerBytes, encapsulatedKey: enc,
                            sealedBody: sealed, signature: sig, signedLength: signedLength, version: v)
        } catch let e as CoreError { throw e } catch let e as ByteReader.Failure { throw e.corrupt(object,
            "malformed manifest") } catch {
            throw CoreError(.corrupt, object: object, "\(error)")
        }
    }

    /// Checks the host's signature and that the manifest names this tenant, host, host
    /// key and read key. What a server does before it accepts a commit, and a restorer
    /// before it trusts a snapshot.
    public func verify(tenant: String, host: String, hostKey: HostPublicKey, readKeyID: ReadKeyID) throws(CoreError) {
        let object = "snapshot \(id)"
        guard hostKey.isValidSignature(signature, for: Label.manifestSignature + Array(bytes[0..<signedLength])) else {
            throw CoreError(.badSignature, object: object,
                """
                    signature does not verify with host \(host)'s key: the manifest was modified or signed by another \
                    host
                    """)
        }
        guard header.hostKey == hostKey else {
            throw CoreError(.badSignature, object: object,
                "names host key \(header.hostKey), not \(host)'s registered key")
        }
        guard header.tenant == tenant else {
            throw CoreError(.badSignature, object: object,
                "names tenant \(header.tenant.debugDescription), expected \(tenant.debugDescription)")
        }
        guard header.host == host else {
            throw CoreError(.badSignature, object: object,
                "names host \(header.host.debugDescription), expected \(host.debugDescription)")
        }
        guard header.readKeyID == readKeyID else {
            throw CoreError(.wrongTenant, object: object,
                "sealed to read key \(header.readKeyID), not the tenant's \(readKeyID)")
        }
    }

    /// Unseals the root tree's chunk list with the read key.
    public func openRoot(readKey: ReadPrivateKey) throws(CoreError) -> [ChunkID] {
        try openRootRefs(readKey: readKey).ids
    }

    /// Unseals the root tree's chunk list and (format 2) each root chunk's seal.
    public func openRootRefs(readKey: ReadPrivateKey) throws(CoreError) -> (ids: [ChunkID], seals: [ChunkSeal]) {
        let object = "snapshot \(id)"
        guard header.readKeyID == readKey.publicKey.keyID else {
            throw CoreError(.wrongTenant, object: object,
                "sealed to read key \(header.readKeyID), not this tenant's \(readKey.publicKey.keyID)")
        }
        let plain: Data
        do {
            var recipient = try HPKE.Recipient(privateKey: readKey.key, ciphersuite: readKeyCiphersuite,
                info: Manifest.hpkeInfo(header.readKeyID),
                                               encapsulatedKey: Data(encapsulatedKey))
            plain = try recipient.open(sealedBody, authenticating: Manifest.sealedAADLabel + headerBytes)
        } catch {
            throw CoreError(.authenticationFailed, object: object,
                "sealed root does not authenticate: the manifest was modified")
        }
        var r = ByteReader(plain)
        do {
            let size = version == 1 ? 32 : 68
            let n = try r.count(limit: r.remaining / size)
            var out: [ChunkID] = [], seals: [ChunkSeal] = []
            for _ in 0..<n {
                out.append(ChunkID(bytes: try r.raw(32))!)
                if version >= 2 {
                    let key = try r.raw(32), raw = try r.u32()
                    guard let s = ChunkSeal(key: key, rawLength: raw) else {
                        throw CoreError(.corrupt, object: object, "sealed root has a bad seal")
                    }
                    seals.append(s)
                }
            }
            guard r.isAtEnd, !out.isEmpty else { throw CoreError(.corrupt, object: object, "sealed root is malformed") }
            return (out, seals)
        } catch let e as CoreError { throw e } catch let e as ByteReader.Failure { throw e.corrupt(object,
            "sealed root") } catch {
            throw CoreError(.corrupt, object: object, "\(error)")
        }
    }

    static func encodeHeader(_ h: ManifestHeader) -> [UInt8] {
        var w = ByteWriter(capacity: 512 + h.packs.count * 32)
        w.string(h.tenant)
        w.raw(h.readKeyID.bytes)
        w.string(h.host)
        w.lengthPrefixed(h.hostKey.rawRepresentation)
        w.i64(h.time.seconds)
        w.u32(h.time.nanoseconds)
        w.raw(h.nonce)
        w.uvarint(UInt64(h.paths.count))
        for p in h.paths { w.lengthPrefixed(p) }
        w.uvarint(UInt64(h.tags.count))
        for t in h.tags { w.string(t) }
        let s = h.statistics
        for v in [s.files, s.directories, s.otherEntries, s.bytesTotal, s.bytesRead, s.bytesUploaded, s.chunksNew,
            s.chunksReused] {
            w.uvarint(v)
        }
        let packs = Array(Set(h.packs)).sorted()
        w.uvarint(UInt64(packs.count))
        for p in packs { w.raw(p.bytes) }
        w.string(h.clientVersion)
        if let activity = h.encodedActivity { w.lengthPrefixed(activity) }
        return w.bytes
    }

    /// The most bytes an activity section may take (format 3).
    static let maxActivityBytes = 4096

    static func decodeHeader(_ bytes: [UInt8], object: String,
        bounds: ManifestBounds? = nil, activity hasActivity: Bool = false) throws(CoreError) -> ManifestHeader {
        var r = ByteReader(bytes)
        do {
            let tenant = try r.string(limit: 256)
            let keyID = ReadKeyID(bytes: try r.raw(16))!
            let host = try r.string(limit: 256)
            let hostKey = try HostPublicKey(rawRepresentation: try r.lengthPrefixed(limit: 64))
            let time = Timestamp(seconds: try r.i64(), nanoseconds: try r.u32())
            guard time.nanoseconds < 1_000_000_000 else {
                throw CoreError(.corrupt, object: object, "time nanoseconds out of range")
            }
            let nonce = try r.raw(16)
            var paths: [[UInt8]] = []
            let pathCount = try r.count(limit: r.remaining)
            if let bounds, pathCount > bounds.maxPaths {
                throw CoreError(.limitExceeded, object: object,
                    "names \(pathCount) backed-up paths; at most \(bounds.maxPaths) are accepted")
            }
            var pathBytes = 0
            for _ in 0..<pathCount {
                paths.append(try r.lengthPrefixed(limit: 65536))
                pathBytes += paths[paths.count - 1].count
                if let bounds, pathBytes > bounds.maxPathBytes {
                    throw CoreError(.limitExceeded, object: object,
                        "backed-up paths over \(bounds.maxPathBytes) bytes together")
                }
            }
            var tags: [String] = []
            let tagCount = try r.count(limit: r.remaining)
            if let bounds, tagCount > bounds.maxTags {
                throw CoreError(.limitExceeded, object: object,
                    "carries \(tagCount) tags; at most \(bounds.maxTags) are accepted")
            }
            for _ in 0..<tagCount {
                tags.append(try r.string(limit: 1024))
                if let bounds, tags[tags.count - 1].utf8.count > bounds.maxTagBytes {
                    throw CoreError(.limitExceeded, object: object,
                        "carries a tag of \(tags[tags.count - 1].utf8.count) bytes; "
                                    + "at most \(bounds.maxTagBytes) are accepted")
                }
            }
            var s = SnapshotStatistics()
            s.files = try r.uvarint(); s.directories = try r.uvarint(); s.otherEntries = try r.uvarint()
            s.bytesTotal = try r.uvarint(); s.bytesRead = try r.uvarint(); s.bytesUploaded = try r.uvarint()
            s.chunksNew = try r.uvarint(); s.chunksReused = try r.uvarint()
            let np = try r.count(limit: r.remaining / 32)
            var packs: [PackID] = []
            packs.reserveCapacity(np)
            for _ in 0..<np {
                let p = PackID(bytes: try r.raw(32))!
                // Why: canonical order, so one set of packs has one encoding.
                if let last = packs.last, !(last < p) {
                    throw CoreError(.corrupt, object: object, "pack list not ascending and unique")
                }
                packs.append(p)
            }
            let clientVersion = try r.string(limit: 256)
            let activityBytes = hasActivity ? try r.lengthPrefixed(limit: maxActivityBytes) : nil
            guard r.isAtEnd else { throw CoreError(.corrupt, object: object, "trailing bytes in header") }
            var h = ManifestHeader(tenant: tenant, readKeyID: keyID, host: host, hostKey: hostKey, time: time,
                nonce: nonce,
                                  paths: paths, tags: tags, statistics: s, packs: packs, clientVersion: clientVersion)
            if let activityBytes {
                h.activityBytes = activityBytes
                h.activity = try SnapshotActivity.decode(activityBytes, object: object)
            }
            return h
        } catch let e as CoreError { throw e } catch let e as ByteReader.Failure { throw e.corrupt(object,
            "malformed header") } catch {
            throw CoreError(.corrupt, object: object, "\(error)")
        }
    }
}

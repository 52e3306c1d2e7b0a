import Foundation
import NIOHTTP1
import RedoubtAWS
import Synchronization
import Testing

@testable import RedoubtStore

/// A real S3 server from `scripts/peers`, or nil (recorded as a failure under
/// `REDOUBT_PEERS_REQUIRED=1`).
struct S3Peer: Sendable {
    let name: String
    let endpoint: URL
    let writer: AWSCredentials
    let admin: AWSCredentials

    static func named(_ name: String) -> S3Peer? {
        let env = ProcessInfo.processInfo.environment
        func creds(_ v: String?) -> AWSCredentials? {
            guard let parts = v?.split(separator: ":"), parts.count == 2 else { return nil }
            return AWSCredentials(accessKeyID: String(parts[0]), secretAccessKey: String(parts[1]))
        }
        let any = AWSCredentials(accessKeyID: "test", secretAccessKey: "test")
        var peer: S3Peer?
        switch name {
        case "seaweed":
            if let e = env["REDOUBT_TEST_SEAWEED"], let url = URL(string: e),
                let w = creds(env["REDOUBT_TEST_SEAWEED_WRITER"]),
                let a = creds(env["REDOUBT_TEST_SEAWEED_ADMIN"]) {
                    peer = S3Peer(name: name, endpoint: url, writer: w, admin: a)
                }
        case "localstack":
            if let e = env["REDOUBT_TEST_LOCALSTACK"], let url = URL(string: e) {
                peer = S3Peer(name: name, endpoint: url, writer: any, admin: any)
            }
        case "moto":
            if let e = env["REDOUBT_TEST_MOTO"], let url = URL(string: e) {
                peer = S3Peer(name: name, endpoint: url, writer: any, admin: any)
            }
        default: break
        }
        if peer == nil {
            if env["REDOUBT_PEERS_REQUIRED"] == "1" {
                Issue.record("S3 peer \(name) is not configured: ./scripts/peers start")
            }
            else { print("skipping: S3 peer \(name) not configured (./scripts/peers start; source its env)") }
        }
        return peer
    }

    /// A fresh bucket made by the admin identity, with Object Lock on (or off).
    func makeBucket(objectLock: Bool = true) async throws -> String {
        let bucket = "redoubt-test-\(UInt32.random(in: 0 ... .max))"
        let admin = S3Client(location: S3Location(endpoint: endpoint, region: "us-east-1", bucket: bucket),
            credentials: admin)
        let r = try await admin.send(.PUT, key: nil, headers: objectLock ? [("x-amz-bucket-object-lock-enabled",
            "true")] : [])
        guard r.status == 200 else {
            throw S3Error(status: r.status, code: r.errorCode ?? "", message: r.errorMessage ?? "", key: bucket)
        }
        return bucket
    }

    private static let shared = Mutex<[String: String]>([:])

    /// One Object Lock bucket per peer for the whole test process: tests that need no
    /// bucket of their own use it under a unique prefix. (SeaweedFS gives every bucket
    /// its own volumes and runs out after a few hundred buckets.)
    func sharedBucket() async throws -> String {
        if let b = Self.shared.withLock({ $0[name] }) { return b }
        let made = try await makeBucket()
        return Self.shared.withLock { all in
            if let b = all[name] { return b }
            all[name] = made
            return made
        }
    }

    /// A prefix no other test uses.
    static func unique(_ base: String) -> String { "\(base)-\(String(UInt32.random(in: 0 ... .max), radix: 16))" }

    func client(_ bucket: String, prefix: String = "", as identity: AWSCredentials? = nil,
        transport: (any S3Transport)? = nil,
                retry: S3RetryPolicy = S3RetryPolicy()) -> S3Client {
        S3Client(location: S3Location(endpoint: endpoint, region: "us-east-1", bucket: bucket, prefix: prefix),
            credentials: identity ?? writer,
                 transport: transport, retry: retry)
    }
}

/// The store contract, on real S3 servers with Object Lock.
@Suite(.serialized) struct S3StoreConformanceTests {
    @Test(arguments: StoreConformance.Check.allCases)
    func seaweedFS(_ check: StoreConformance.Check) async throws {
        guard let peer = S3Peer.named("seaweed") else { return }
        let bucket = try await peer.sharedBucket()
        try await StoreConformance(makeStore: { S3Store(client: peer.client(bucket,
            prefix: "conformance")) }).run(check)
    }

    @Test(arguments: StoreConformance.Check.allCases)
    func localStack(_ check: StoreConformance.Check) async throws {
        guard let peer = S3Peer.named("localstack") else { return }
        let bucket = try await peer.sharedBucket()
        try await StoreConformance(makeStore: { S3Store(client: peer.client(bucket,
            prefix: "conformance")) }).run(check)
    }
}

/// Proof of enforcement: passes where COMPLIANCE is enforced, fails where it is not.
@Suite(.serialized) struct S3LockProofTests {
    @Test func passesOnLocalStackWithObjectLock() async throws {
        guard let peer = S3Peer.named("localstack") else { return }
        let result = await S3LockProof(client: peer.client(try await peer.makeBucket())).run()
        #expect(result.passed, "\(result.checks)")
    }

    @Test func passesOnSeaweedFSForAWriterWithoutBypassRights() async throws {
        guard let peer = S3Peer.named("seaweed") else { return }
        let result = await S3LockProof(client: peer.client(try await peer.makeBucket())).run()
        #expect(result.passed, "\(result.checks)")
    }

    @Test func failsOnABucketWithoutObjectLock() async throws {
        guard let peer = S3Peer.named("localstack") else { return }
        let result = await S3LockProof(client: peer.client(try await peer.makeBucket(objectLock: false))).run()
        #expect(!result.passed)
        #expect(result.checks.first?.name == "object-lock-enabled" && result.checks.first?.passed == false)
    }

    @Test func failsOnAServerThatAcceptsLockSettingsWithoutEnforcingThem() async throws {
        // moto accepts COMPLIANCE and then lets the retention be shortened.
        guard let peer = S3Peer.named("moto") else { return }
        let result = await S3LockProof(client: peer.client(try await peer.makeBucket())).run()
        #expect(!result.passed, "moto must fail the proof: \(result.checks)")
        #expect(result.checks.contains {
            !$0.passed && ($0.name == "retention-not-shortenable" || $0.name == "locked-version-not-deletable"
                || $0.name == "mode-not-downgradable")
        })
    }
}

/// An attacker holding Redoubt's own S3 credentials against what Redoubt wrote.
@Suite(.serialized) struct S3AttackerTests {
    func attack(_ peer: S3Peer) async throws {
        let bucket = try await peer.makeBucket()
        let client = peer.client(bucket)
        let store = S3Store(client: client)
        let key = try #require(ObjectKey("packs/ab/abcdef"))
        let original = Array("the pack as written".utf8)
        let until = Date().addingTimeInterval(3600)
        #expect(try await store.put(key, original, retainUntil: until) == .created)
        let head = try await client.send(.HEAD, key: key.path)
        let version = try #require(head.header("x-amz-version-id"))

        // Delete the locked version.
        let delete = try await client.send(.DELETE, key: key.path, query: [("versionId", version)])
        #expect(!(200..<300).contains(delete.status), "\(peer.name): deleting a locked version must be refused")
        // Shorten, then downgrade, its retention.
        for (mode, date) in [("COMPLIANCE", Date().addingTimeInterval(60)), ("GOVERNANCE", until)] {
            let xml = S3XML.retentionBody(mode: mode, until: date)
            let r = try await client.send(.PUT, key: key.path, query: [("retention", ""), ("versionId", version)],
                headers: [("content-md5", contentMD5(xml))], body: xml)
            #expect(r.status != 200, "\(peer.name): \(mode) until \(date) must be refused")
        }
        // Suspend versioning on a locked bucket.
        let xml =
            Array("""
                <VersioningConfiguration \
                xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>Suspended</Status></VersioningConfiguration>
                """.utf8)
        let suspend = try await client.send(.PUT, key: nil, query: [("versioning", "")], headers: [("content-md5",
            contentMD5(xml))], body: xml)
        #expect(suspend.status != 200, "\(peer.name): suspending versioning must be refused")
        // Overwrite through the store: refused; the original bytes stay.
        await #expect(throws: StoreError.self) { try await store.put(key, Array("ransom".utf8), retainUntil: until) }
        #expect(try await store.get(key) == original)
        let stillThere = try await client.send(.GET, key: key.path, query: [("versionId", version)])
        #expect(stillThere.status == 200 && stillThere.body == original)
    }

    @Test func localStackRefusesEveryAttack() async throws {
        guard let peer = S3Peer.named("localstack") else { return }
        try await attack(peer)
    }

    @Test func seaweedFSRefusesEveryAttack() async throws {
        guard let peer = S3Peer.named("seaweed") else { return }
        try await attack(peer)
    }
}

/// Multipart uploads and the errors S3 gives, on the real servers.
@Suite(.serialized) struct S3MultipartTests {
    @Test(arguments: ["seaweed", "localstack"])
    func multipartUploadKeepsTheLockAndTheBytes(_ name: String) async throws {
        guard let peer = S3Peer.named(name) else { return }
        let store = S3Store(client: peer.client(try await peer.sharedBucket(), prefix: S3Peer.unique("multipart")),
            multipartThreshold: 6 << 20, partSize: 5 << 20)
        let key = try #require(ObjectKey("packs/mp/big"))
        let data = (0..<(11 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
        let until = Date().addingTimeInterval(3600).rounded()
        #expect(try await store.put(key, data, retainUntil: until) == .created)
        #expect(try await store.put(key, data, retainUntil: until) == .alreadyPresent)
        var other = data
        other[7 << 20] ^= 1
        await #expect(throws: StoreError.self) { try await store.put(key, other, retainUntil: until) }
        let info = try #require(try await store.head(key))
        #expect(info.size == data.count)
        #expect(info.retainUntil == until)
        #expect(info.enforced)
        #expect(try await store.get(key) == data)
        #expect(try await store.get(key, range: (6 << 20)..<((6 << 20) + 10)) == Array(data[(6 << 20)..<((6 << 20)
            + 10)]))
        let e = await #expect(throws: StoreError.self) { try await store.delete(key, now: Date()) }
        #expect(e?.code == .locked)
    }

    /// SeaweedFS checks signatures: a writer with the wrong secret is refused, S3's code kept, no secret shown.
    @Test func wrongSecretIsRefusedWithS3sCode() async throws {
        guard let peer = S3Peer.named("seaweed") else { return }
        let bucket = try await peer.sharedBucket()
        let bad = AWSCredentials(accessKeyID: peer.writer.accessKeyID, secretAccessKey: "not-the-secret")
        let store = S3Store(client: peer.client(bucket, as: bad))
        let key = try #require(ObjectKey("sig/x"))
        let e = await #expect(throws: StoreError.self) { _ = try await store.put(key, [1, 2, 3], retainUntil: nil) }
        #expect(e?.code == .remote)
        #expect(e?.remoteCode == "SignatureDoesNotMatch", "\(String(describing: e))")
        #expect(!(e?.description.contains("not-the-secret") ?? true), "the secret must not appear in errors")
    }

    @Test func etagsAreCheckedAsMD5sOnlyWithoutKMSOrCustomerKeys() {
        func r(_ h: [(String, String)]) -> S3Response { S3Response(status: 200, headers: HTTPHeaders(h), body: []) }
        #expect(S3Store.etagIsMD5(r([("etag", "\"abc\"")])))
        #expect(S3Store.etagIsMD5(r([("x-amz-server-side-encryption", "AES256")])))
        #expect(!S3Store.etagIsMD5(r([("x-amz-server-side-encryption", "aws:kms")])))
        #expect(!S3Store.etagIsMD5(r([("x-amz-server-side-encryption", "aws:kms:dsse")])))
        #expect(!S3Store.etagIsMD5(r([("x-amz-server-side-encryption-customer-algorithm", "AES256")])))
    }

    @Test func aCAThatIsNotPEMIsAConfigError() throws {
        let e = #expect(throws: StoreError.self) { _ = try AHCTransport(caPEM: "not a certificate") }
        #expect(e?.code == .config)
    }
}

/// An attacker holding Redoubt's own writer credential cannot delete or change a locked
/// version, but can add a newer version or a delete marker on top of it. The store must
/// still read, list, extend and settle the version Redoubt wrote.
@Suite(.serialized) struct S3OverwrittenKeyTests {
    func attack(_ peer: S3Peer) async throws {
        let client = peer.client(try await peer.sharedBucket(), prefix: S3Peer.unique("overwritten"))
        let store = S3Store(client: client)
        let until = Date().addingTimeInterval(3600).rounded()
        let keys = try ["packs/aa/overwritten", "packs/aa/deleted", "packs/aa/both"].map { try #require(ObjectKey($0)) }
        var originals: [ObjectKey: [UInt8]] = [:]
        for (i, key) in keys.enumerated() {
            originals[key] = (0..<(1000 + i)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) }
            #expect(try await store.put(key, originals[key]!, retainUntil: until) == .created)
        }
        // The attacker, with the same credential: plain PUTs (no If-None-Match) and
        // DELETEs without a version ID, which S3 allows on a locked, versioned bucket.
        let ransom = Array("ransom: pay to get your pack back".utf8)
        for key in [keys[0], keys[2]] {
            let r = try await client.send(.PUT, key: client.objectName(key.path), headers: [("content-md5",
                contentMD5(ransom))], body: ransom)
            #expect(r.status == 200,
                "\(peer.name): the attacker's overwrite should be accepted as a new version (\(r.status))")
        }
        for key in [keys[1], keys[2]] {
            let r = try await client.send(.DELETE, key: client.objectName(key.path))
            #expect((200..<300).contains(r.status),
                "\(peer.name): the attacker's delete marker should be accepted (\(r.status))")
        }
        // The attack took: the current versions are the attacker's.
        let current0 = try await client.send(.GET, key: client.objectName(keys[0].path))
        #expect(current0.body == ransom)
        for key in keys[1...] { #expect(try await client.send(.GET, key: client.objectName(key.path)).status == 404) }

        for key in keys {
            #expect(try await store.get(key) == originals[key], "\(peer.name): \(key) must read the original")
            #expect(try await store.get(key, range: 10..<20) == Array(originals[key]![10..<20]))
            let info = try #require(try await store.head(key))
            #expect(info.size == originals[key]!.count && info.retainUntil == until && info.enforced)
            // A resync finds the original: no new version, the ransom is a conflict.
            #expect(try await store.put(key, originals[key]!, retainUntil: until) == .alreadyPresent)
            let e = await #expect(throws: StoreError.self) { try await store.put(key, ransom, retainUntil: until) }
            #expect(e?.code == .conflict)
        }
        let listed = try await store.list(prefix: "packs/aa/")
        #expect(listed.map(\.key) == keys.sorted())
        #expect(listed.allSatisfy { $0.size == originals[$0.key]!.count && $0.retainUntil == until && $0.enforced })

        // Extending a lock extends the original version's, not the attacker's.
        // A second apart, so that a server that moves LastModified on a retention change
        // (SeaweedFS does) dates the original after the attacker's version.
        try await Task.sleep(for: .milliseconds(1100))
        let later = until.addingTimeInterval(600)
        try await store.extendRetention(keys[0], until: later)
        let versions = try await client.send(.GET, key: nil, query: [("versions", ""), ("prefix",
            client.objectName(keys[0].path))])
        let extended = try await store.head(keys[0])?.retainUntil
        #expect(extended == later,
            """
                \(peer.name): \(String(describing: extended)) vs \(later); \
                \(String(decoding: versions.body, as: UTF8.self))
                """)
        let page = try #require(S3XML.listObjectVersions(versions.body))
        #expect(page.versions.filter { !$0.isDeleteMarker }.count == 2,
            "one original, one attacker version; resync added none")
        #expect(try await store.get(keys[0]) == originals[keys[0]],
            "\(peer.name): after a lock extension the original is still the one read")

        // A key the attacker took first (no recorded hash): never settled as ours, never read as ours.
        let planted = try #require(ObjectKey("packs/aa/planted"))
        let p = try await client.send(.PUT, key: client.objectName(planted.path), headers: [("content-md5",
            contentMD5(ransom))], body: ransom)
        #expect(p.status == 200)
        let c = await #expect(throws: StoreError.self) { try await store.put(planted, ransom, retainUntil: until) }
        #expect(c?.code == .conflict)
        let g = await #expect(throws: StoreError.self) { _ = try await store.get(planted) }
        #expect(g?.code == .integrity)
    }

    /// Version listings span pages (two entries a page here) with versions and delete
    /// markers of one key split across pages.
    func paged(_ peer: S3Peer) async throws {
        let counting = FaultyTransport(try AHCTransport.shared(), plan: [])
        let client = peer.client(try await peer.sharedBucket(), prefix: S3Peer.unique("paged"), transport: counting)
        var store = S3Store(client: client)
        store.listPageSize = 2
        let until = Date().addingTimeInterval(3600).rounded()
        var originals: [ObjectKey: [UInt8]] = [:]
        for i in 0..<5 {
            let key = try #require(ObjectKey("snapshots/s\(i)"))
            originals[key] = Array(repeating: UInt8(i), count: 100 + i)
            _ = try await store.put(key, originals[key]!, retainUntil: until)
        }
        let ransom = Array("ransom".utf8)
        for i in [1, 3] {
            for _ in 0..<2 {
                _ = try await client.send(.PUT, key: client.objectName("snapshots/s\(i)"), headers: [("content-md5",
                    contentMD5(ransom))], body: ransom)
            }
        }
        for i in [3, 4] { _ = try await client.send(.DELETE, key: client.objectName("snapshots/s\(i)")) }
        counting.urls.withLock { $0.removeAll() }
        let listed = try await store.list(prefix: "snapshots/")
        let pages = counting.urls.withLock { $0.filter { $0.contains("versions") }.count }
        #expect(pages >= 5, "\(peer.name): 12 entries at 2 a page should take several pages, took \(pages)")
        #expect(listed.map(\.key) == originals.keys.sorted(), "\(peer.name)")
        #expect(listed.allSatisfy { $0.size == originals[$0.key]!.count })
        for (key, bytes) in originals { #expect(try await store.get(key) == bytes, "\(peer.name): \(key)") }
    }

    @Test func theOriginalIsTheLastListedVersionThatIsNotADeleteMarker() {
        func v(_ key: String, _ id: String, latest: Bool = false, marker: Bool = false) -> S3XML.ListedVersion {
            S3XML.ListedVersion(key: key, versionID: id, isLatest: latest, isDeleteMarker: marker, size: 1, etag: nil)
        }
        // Newest first, as S3 lists: delete marker, attacker's version, the original.
        let newestFirst = [v("a", "dm", latest: true, marker: true), v("a", "ransom"), v("a", "orig"), v("b", "only",
            latest: true)]
        #expect(S3Store.originals(newestFirst).map(\.versionID) == ["orig", "only"])
        // A server listing oldest first marks its last entry latest: read the other way.
        let oldestFirst = [v("a", "orig"), v("a", "ransom"), v("a", "dm", latest: true, marker: true)]
        #expect(S3Store.originals(oldestFirst).map(\.versionID) == ["orig"])
        // Only delete markers: no original.
        #expect(S3Store.originals([v("c", "dm", latest: true, marker: true)]).isEmpty)
    }

    @Test func localStackPagesVersionListings() async throws {
        guard let peer = S3Peer.named("localstack") else { return }
        try await paged(peer)
    }

    @Test func seaweedFSPagesVersionListings() async throws {
        guard let peer = S3Peer.named("seaweed") else { return }
        try await paged(peer)
    }

    @Test func localStackReadsTheOriginalUnderAnAttackersVersions() async throws {
        guard let peer = S3Peer.named("localstack") else { return }
        try await attack(peer)
    }

    @Test func seaweedFSReadsTheOriginalUnderAnAttackersVersions() async throws {
        guard let peer = S3Peer.named("seaweed") else { return }
        try await attack(peer)
    }
}

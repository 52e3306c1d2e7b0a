import Crypto
import Foundation
import RedoubtAWS
import RedoubtClient
import RedoubtCore
import RedoubtMedia
import RedoubtServer
import RedoubtStore
import Testing

/// Every copy proves who wrote each snapshot (docs/FORMAT.md §6.4): an attacker who can
/// write a bucket copy or a media set plants snapshots (signed by a key of their own, with
/// or without a registration they signed themselves) and restores refuse them, naming the
/// snapshot, while the genuine snapshot still restores bit for bit from the copy alone.
@Suite(.serialized) struct AuthorshipTests {
    /// What the attacker plants: a restorable snapshot of the genuine host's name signed by
    /// a fresh key (they hold the tenant's write material, as a compromised host would), its
    /// packs, and a registration of that key signed by a P-256 key of their own.
    struct Plant {
        let packs: [FinishedPack]
        let manifest: Manifest
        let forgedRegistration: [UInt8]
    }

    func plant(tenant: String, host: String, material: SharedWriteMaterial) throws -> Plant {
        let key = HostSigningKey.generate()
        let keys = WriteKeySet(tenant: tenant, host: host, shared: material, signingKey: key)
        let (packs, manifest) = try makeSnapshot(
            keys: keys, files: [("README.txt", Array("pay 10 BTC to get your files back".utf8))])
        let forged = try HostKeyStatement(
            kind: .registration, tenant: tenant, host: host, principal: "00112233445566778899aabbccddeeff",
            hostKey: key.publicKey, time: testNow
        ).encoded(signedBy: P256.Signing.PrivateKey())
        return Plant(packs: packs, manifest: manifest, forgedRegistration: forged)
    }

    /// A revocation of the genuine host's key, forged: it must not stop genuine restores.
    func forgedRevocation(tenant: String, host: String, hostKey: HostPublicKey, principal: String) throws -> [UInt8] {
        try HostKeyStatement(
            kind: .revocation, tenant: tenant, host: host, principal: principal, hostKey: hostKey, time: 0
        )
        .encoded(signedBy: P256.Signing.PrivateKey())
    }

    /// A media set as an attacker holding a media writer writes it: the genuine records of
    /// `records` plus two planted snapshots (one self-signed, one with a forged registration).
    func plantedSet(_ q: QuickstartServer, records: [MediaRecord]) throws -> (String, Plant, Plant) {
        let genuine = try Manifest.parse(try #require(records.first { $0.type == .manifest }?.body))
        let material = try ClientConfig(path: "\(q.base)/restorer").sharedMaterial()
        let selfSigned = try plant(tenant: "quickstart", host: genuine.header.host, material: material)
        let withForgery = try plant(tenant: "quickstart", host: genuine.header.host, material: material)

        // Whoever writes media writes a whole new set: the genuine records plus the plants.
        var forged = records.filter { $0.type != .auditAnchor }
        for p in [selfSigned, withForgery] {
            forged += p.packs.map { MediaRecord(type: .pack, id: $0.id.description, body: $0.bytes) }
            forged.append(MediaRecord(type: .manifest, id: p.manifest.id.description, body: p.manifest.bytes))
        }
        forged.append(
            MediaRecord(
                type: .object, id: "host-keys/00112233445566778899aabbccddeeff.registration",
                body: withForgery.forgedRegistration))
        let planted = "\(q.dir)/planted-set"
        let mw = try MediaWriter(
            device: FileSequentialDevice(path: planted), setID: Array(repeating: 7, count: 16), pool: "p",
            tenant: "quickstart", blockSize: 16 << 10, created: "2026-12-05T00:00:00Z", retainUntil: nil,
            writer: "attacker")
        for rec in forged { try mw.append(rec) }
        _ = try mw.finish()

        return (planted, selfSigned, withForgery)
    }

    @Test func plantedSnapshotsInABucketAreRefusedAndGenuineOnesRestore() async throws {
        let bucketTests = BucketCopyTests()
        guard let peer = bucketTests.peer("seaweed") else { return }
        let q = try await QuickstartServer.start("authorship-bucket", quickstartEnv: "REDOUBT_PASSPHRASE=auth-pass")
        defer { q.stop() }
        _ = await q.shell("kill $(cat '\(q.dir)/server.pid'); sleep 1")
        let creds = "\(q.dir)/s3-credentials"
        try "[default]\naws_access_key_id = \(peer.writer.id)\naws_secret_access_key = \(peer.writer.secret)\n"
            .write(toFile: creds, atomically: true, encoding: .utf8)
        let name = "redoubt-auth-\(UInt32.random(in: 0 ... .max))"
        let admin = S3Client(
            location: S3Location(endpoint: peer.url, region: "us-east-1", bucket: name), credentials: peer.admin)
        #expect(
            try await admin.send(.PUT, key: nil, headers: [("x-amz-bucket-object-lock-enabled", "true")]).status == 200)
        let target = "--to s3://\(name)/redoubt --endpoint \(peer.url.absoluteString) --credentials '\(creds)'"
        let (sync, syncOut) = await q.sh("copy sync quickstart --data '\(q.base)/server' \(target)")
        try #require(sync == 0, "copy sync: \(syncOut)")
        #expect(syncOut.contains("host-keys/"), "the registration went to the bucket: \(syncOut)")

        // The attacker holds Redoubt's own writer credential for the bucket.
        let attacker = S3Store(
            client: S3Client(
                location: S3Location(endpoint: peer.url, region: "us-east-1", bucket: name, prefix: "redoubt"),
                credentials: AWSCredentials(accessKeyID: peer.writer.id, secretAccessKey: peer.writer.secret)))
        let genuine = try Manifest.parse(
            try await attacker.get(try #require(ObjectKey("t/quickstart/snapshots/\(q.snapshot)"))))
        let material = try ClientConfig(path: "\(q.base)/restorer").sharedMaterial()
        let selfSigned = try plant(tenant: "quickstart", host: genuine.header.host, material: material)
        let withForgery = try plant(tenant: "quickstart", host: genuine.header.host, material: material)
        let lock = Date().addingTimeInterval(86400)
        for p in [selfSigned, withForgery] {
            for pack in p.packs {
                _ = try await attacker.put(
                    BucketCopy.packKey(tenant: "quickstart", id: pack.id), pack.bytes, retainUntil: lock)
            }
            _ = try await attacker.put(
                try #require(ObjectKey("t/quickstart/snapshots/\(p.manifest.id)")), p.manifest.bytes, retainUntil: lock)
        }
        _ = try await attacker.put(
            try #require(
                HostKeyObjects.registrationKey(tenant: "quickstart", principal: "00112233445566778899aabbccddeeff")),
            withForgery.forgedRegistration, retainUntil: lock)
        let registrations = try await attacker.list(prefix: HostKeyObjects.prefix(tenant: "quickstart"))
        let genuinePrincipal = try #require(
            registrations.map(\.key.path).first { !$0.contains("0011223344") }.map {
                String($0.split(separator: "/").last?.split(separator: ".").first ?? "")
            })
        _ = try await attacker.put(
            try #require(HostKeyObjects.revocationKey(tenant: "quickstart", principal: genuinePrincipal)),
            try forgedRevocation(
                tenant: "quickstart", host: genuine.header.host, hostKey: genuine.header.hostKey,
                principal: genuinePrincipal), retainUntil: lock)

        // The server is gone; only the bucket and the restorer's config remain.
        _ = await q.shell("chattr -R -i '\(q.base)/server' 2>/dev/null; rm -rf '\(q.base)/server'")
        let from = "--from s3://\(name)/redoubt --endpoint \(peer.url.absoluteString) --credentials '\(creds)'"
        // Listings of the copy mark each snapshot with who wrote it, under the pinned CA.
        let listing = "\(q.dir)/snapshots.json"
        let (l, lErr) = await q.shell("( \(q.bin) snapshots \(from) \(q.restorer) --json > '\(listing)' )")
        let rows = (try? JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: listing)))) as? [[String: Any]] ?? []
        let marks = Dictionary(rows.compactMap { r in (r["id"] as? String).map { ($0, r["authorship"] as? String) } },
                               uniquingKeysWith: { a, _ in a })
        #expect(l == 0, "\(lErr)")
        #expect(
            marks == [
                q.snapshot: "verified", selfSigned.manifest.id.description: "unregistered-key",
                withForgery.manifest.id.description: "forged-statement",
            ], "\(rows)")
        let (c, cOut) = await q.sh("copy snapshots quickstart \(target) \(q.restorer)")
        #expect(
            c == 0 && cOut.contains("\(selfSigned.manifest.id.description.prefix(8))")
                && cOut.contains("NOT VERIFIED: unregistered-key") && cOut.contains("NOT VERIFIED: forged-statement")
                && cOut.components(separatedBy: "NOT VERIFIED").count == 3, "\(cOut)")
        for p in [selfSigned, withForgery] {
            let dest = "\(q.dir)/planted-\(p.manifest.id.description.prefix(8))"
            let (r, out) = await q.sh(
                "restore \(p.manifest.id) \(from) --target '\(dest)' \(q.restorer)", env: "REDOUBT_PASSPHRASE=auth-pass"
            )
            #expect(r == 5, "planted snapshot restored: \(out)")
            #expect(
                out.contains("snapshot \(p.manifest.id)") && out.contains("E_SIGNATURE")
                    && out.contains("pinned server CA"), "\(out)")
            #expect(
                !FileManager.default.fileExists(atPath: "\(dest)/README.txt"),
                "nothing of the planted snapshot is written")
        }
        let (g, gOut) = await q.sh(
            "copy restore quickstart \(q.snapshot) \(target) --target '\(q.dir)/genuine' \(q.restorer)",
            env: "REDOUBT_PASSPHRASE=auth-pass")
        #expect(g == 0, "genuine restore from the bucket: \(gOut)")
        await #expect(
            q.shell("diff -r '\(q.base)/sample' '\(q.dir)/genuine\(q.base)/sample'").0 == 0,
            "restored tree differs from the sample")

        // A keyless verify of the copy with the pinned CA names exactly the plants as wrong.
        let json = "\(q.dir)/verify.json"
        let (v, vErr) = await q.shell(
            "( \(q.bin) copy verify quickstart \(target) --config '\(q.base)/restorer' --json > '\(json)' )")
        let vOut = (try? String(contentsOfFile: json, encoding: .utf8)) ?? ""
        #expect(v == 5, "copy verify: \(vOut) \(vErr)")
        let report = try #require(
            (try? JSONSerialization.jsonObject(with: Data(vOut.utf8))) as? [String: Any], "\(vOut) \(vErr)")
        let wrong = Set(((report["wrong"] as? [[String: Any]]) ?? []).compactMap { $0["key"] as? String })
        #expect(
            wrong == [
                "t/quickstart/snapshots/\(selfSigned.manifest.id)", "t/quickstart/snapshots/\(withForgery.manifest.id)",
                "t/quickstart/host-keys/00112233445566778899aabbccddeeff.registration",
                "t/quickstart/host-keys/\(genuinePrincipal).revocation",
            ], "\(vOut)")
    }

    /// Stops the quickstart server and writes its tenant to a media set at `<dir>/vol`;
    /// the set's records.
    func writtenSet(_ q: QuickstartServer) async throws -> [MediaRecord] {
        _ = await q.shell("kill $(cat '\(q.dir)/server.pid'); sleep 1")
        let set = "\(q.dir)/vol"
        let (w,
            wOut) = await q.sh("""
                media write quickstart --data '\(q.base)/server' --device 'file:\(set)' --block-size 16K
                """)
        try #require(w == 0, "media write: \(wOut)")
        var records: [MediaRecord] = []
        _ = try MediaReader(source: FileSequentialDevice(path: set), skipDamaged: false).read { records.append($0) }
        return records
    }

    @Test func plantedSnapshotsOnMediaAreRefusedAndGenuineOnesRestore() async throws {
        let q = try await QuickstartServer.start("authorship-media", quickstartEnv: "REDOUBT_PASSPHRASE=auth-pass")
        defer { q.stop() }
        let records = try await writtenSet(q)
        #expect(
            records.contains { $0.type == .object && HostKeyObjects.isStatementName($0.id) },
            "the set carries the registration")
        let (planted, selfSigned, withForgery) = try plantedSet(q, records: records)

        let listing = "\(q.dir)/media-list.json"
        let (l, lErr) = await q.shell(
            "( \(q.bin) media list --device 'file:\(planted)' \(q.restorer) --json > '\(listing)' )")
        let list = (try? JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: listing)))) as? [String: Any]
        #expect(l == 0, "\(lErr)")
        #expect(
            (list?["authorship"] as? [String: String]) == [
                q.snapshot: "verified", selfSigned.manifest.id.description: "unregistered-key",
                withForgery.manifest.id.description: "forged-statement",
            ], "\(String(describing: list))")
        _ = await q.shell("chattr -R -i '\(q.base)/server' 2>/dev/null; rm -rf '\(q.base)/server'")
        for p in [selfSigned, withForgery] {
            let dest = "\(q.dir)/planted-\(p.manifest.id.description.prefix(8))"
            let (r, out) = await q.sh(
                "media restore \(p.manifest.id) --device 'file:\(planted)' --target '\(dest)' \(q.restorer)",
                env: "REDOUBT_PASSPHRASE=auth-pass")
            #expect(r == 5, "planted snapshot restored from media: \(out)")
            #expect(out.contains("snapshot \(p.manifest.id)") && out.contains("E_SIGNATURE"), "\(out)")
            #expect(!FileManager.default.fileExists(atPath: "\(dest)/README.txt"))
        }
        let (g, gOut) = await q.sh(
            "media restore \(q.snapshot) --device 'file:\(planted)' --target '\(q.dir)/genuine' \(q.restorer)",
            env: "REDOUBT_PASSPHRASE=auth-pass")
        #expect(g == 0, "genuine restore from the same set: \(gOut)")
        await #expect(
            q.shell("diff -r '\(q.base)/sample' '\(q.dir)/genuine\(q.base)/sample'").0 == 0,
            "restored tree differs from the sample")
    }

    /// Disaster recovery from a set an attacker holding a media writer wrote: the fresh
    /// server has a new CA, so the import checks each manifest against the old CA a restorer
    /// pinned. Planted snapshots are not imported and are named (exit 5); the genuine one
    /// and its registration land in the new store, the forged registration does not.
    @Test func plantedSnapshotsOnMediaAreNotImported() async throws {
        let q = try await QuickstartServer.start("authorship-import", quickstartEnv: "REDOUBT_PASSPHRASE=auth-pass")
        defer { q.stop() }
        let records = try await writtenSet(q)
        let (planted, selfSigned, withForgery) = try plantedSet(q, records: records)

        let fresh = "\(q.dir)/fresh"
        let (i, iOut) = await q.sh("server init --data '\(fresh)' --listen 127.0.0.1:\(try freeLoopbackPort())")
        try #require(i == 0, "server init: \(iOut)")
        let (n, nOut) = await q.sh("media import --device 'file:\(planted)' --data '\(fresh)'")
        #expect(n == 2 && nOut.contains("--trusted-config"), "import without a trust root: \(nOut)")
        let store = try LocalStore(root: URL(fileURLWithPath: ServerHome(path: fresh).storePath))
        #expect(try await store.list(prefix: "t/").isEmpty, "a refused import put nothing into the store")

        let (m, mOut) = await q.sh(
            "media import --device 'file:\(planted)' --data '\(fresh)' --trusted-config '\(q.base)/restorer'")
        #expect(m == 5, "planted snapshots imported: \(mOut)")
        for p in [selfSigned, withForgery] {
            #expect(mOut.contains("NOT IMPORTED") && mOut.contains("snapshot \(p.manifest.id)"), "\(mOut)")
            #expect(try await store.head(try #require(ObjectKey("t/quickstart/snapshots/\(p.manifest.id)"))) == nil)
        }
        #expect(
            try await store.head(try #require(ObjectKey("t/quickstart/snapshots/\(q.snapshot)"))) != nil,
            "the genuine snapshot is imported")
        // The statements land in the new store, verified under the old CA; the forgery does not.
        let statements = try await HostKeyObjects.all(in: store, tenant: "quickstart")
        #expect(!statements.contains { $0.key.path.hasSuffix("00112233445566778899aabbccddeeff.registration") })
        let registry = HostKeyRegistry(
            tenant: "quickstart", trustRoot: try ClientConfig(path: "\(q.base)/restorer").trustRoot(),
            objects: statements.map { ($0.key.path, $0.bytes) })
        #expect(!registry.registrations.isEmpty && registry.ignored.isEmpty, "\(registry.ignored)")
        let genuine = try Manifest.parse(
            try await store.get(try #require(ObjectKey("t/quickstart/snapshots/\(q.snapshot)"))))
        #expect(throws: Never.self) { try registry.check(genuine, readKeyID: nil) }

        // Asked to skip, the operator gets exit 0 and the plants are still named.
        let (k, kOut) = await q.sh(
            "media import --device 'file:\(planted)' --data '\(fresh)' --trusted-config '\(q.base)/restorer' "
                + "--skip-unverified")
        #expect(k == 0 && kOut.contains("snapshot \(selfSigned.manifest.id)"), "\(kOut)")
    }

    /// A set written before host key statements existed (or with them stripped) restores
    /// nothing: a restorer cannot tell its snapshots from planted ones.
    @Test func mediaWithoutRegistrationsIsRefused() async throws {
        let q = try await QuickstartServer.start("authorship-noreg", quickstartEnv: "REDOUBT_PASSPHRASE=auth-pass")
        defer { q.stop() }
        let records = try await writtenSet(q)
        let stripped = "\(q.dir)/stripped"
        let mw = try MediaWriter(
            device: FileSequentialDevice(path: stripped), setID: Array(repeating: 8, count: 16), pool: "p",
            tenant: "quickstart", blockSize: 16 << 10, created: "2026-12-05T00:00:00Z", retainUntil: nil,
            writer: "attacker")
        for rec in records where !(rec.type == .object && HostKeyObjects.isStatementName(rec.id)) { try mw.append(rec) }
        _ = try mw.finish()
        let (r, out) = await q.sh(
            "media restore \(q.snapshot) --device 'file:\(stripped)' --target '\(q.dir)/r' \(q.restorer)",
            env: "REDOUBT_PASSPHRASE=auth-pass")
        #expect(r == 5 && out.contains("snapshot \(q.snapshot)") && out.contains("E_SIGNATURE"), "\(out)")
    }
}

/// The server writes the statements: a registration on a host's first commit, a
/// revocation listing what the key committed when the host is revoked, and the missing
/// ones at start for hosts enrolled before.
@Suite struct HostKeyObjectsServerTests {
    @Test func commitRegistersAndRevocationListsTheKeysSnapshots() async throws {
        let server = try await TestServer.start()
        let keys = try TenantKeys.generate()
        try await server.createTenant("acme", keys: keys)
        let (wc, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let (_, idle) = try await server.enroll(tenant: "acme", role: "writer", name: "idle")
        let root = try wc.trustRoot()
        let store = server.service.store
        let ws = try wc.writeKeySet()
        let (packs, manifest) = try makeSnapshot(keys: ws, files: [("a", Array("one".utf8))])
        for p in packs { try await writer.upload(pack: p) }
        try await writer.commit(manifest: manifest)
        let webID = try wc.credential().principalID
        let regKey = try #require(HostKeyObjects.registrationKey(tenant: "acme", principal: webID))
        let reg = try HostKeyStatement.open(try await store.get(regKey), trustRoot: root, object: regKey.path)
        #expect(
            reg.kind == .registration && reg.host == "web1" && reg.hostKey == ws.signingKey.publicKey
                && reg.principal == webID)
        #expect(
            (try await store.head(regKey))?.retainUntil ?? .distantPast > Date().addingTimeInterval(29 * 86400),
            "locked as long as the snapshot")

        // A host that never committed gets its registration at the next start (or sync).
        let idleID = try #require(
            try await server.service.listPrincipals(includeRevoked: false).first { $0.name == "idle" }?.id)
        #expect(
            try await store.head(try #require(HostKeyObjects.registrationKey(tenant: "acme", principal: idleID))) == nil
        )
        #expect(try await server.service.recordHostKeys() == 1)
        #expect(
            try await store.head(try #require(HostKeyObjects.registrationKey(tenant: "acme", principal: idleID))) != nil
        )
        await idle.shutdown()

        // Revoked: the revocation lists exactly the snapshot the key committed.
        _ = try await server.admin.revokePrincipal(id: webID, requestID: nil)
        let revKey = try #require(HostKeyObjects.revocationKey(tenant: "acme", principal: webID))
        let rev = try HostKeyStatement.open(try await store.get(revKey), trustRoot: root, object: revKey.path)
        #expect(rev.kind == .revocation && rev.snapshots == [manifest.id])

        // A restorer's check: the listed snapshot passes; one the stolen key signs later does not.
        let objects = try await HostKeyObjects.all(in: store, tenant: "acme").map {
            (name: $0.key.path, bytes: $0.bytes)
        }
        let registry = HostKeyRegistry(tenant: "acme", trustRoot: root, objects: objects)
        #expect(registry.ignored.isEmpty)
        try registry.check(manifest, readKeyID: keys.readKey.publicKey.keyID)
        let (_, late) = try makeSnapshot(keys: ws, files: [("b", Array("backdated".utf8))], time: testNow - 86400)
        #expect(throws: CoreError.self) { try registry.check(late, readKeyID: keys.readKey.publicKey.keyID) }
        await writer.shutdown()
        await server.stop()
    }
}

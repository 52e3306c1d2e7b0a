import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing
import RedoubtAWS
import RedoubtClient
import RedoubtCore
import RedoubtStore
@testable import RedoubtServer

/// Copy targets kept by the server against real LocalStack (and moto, which does not
/// enforce locks): proved when added, synced in the background after each commit.
@Suite(.serialized) struct CopyTargetTests {
    func bucket(_ endpoint: URL) async throws -> String {
        let name = "redoubt-target-\(UInt32.random(in: 0 ... .max))"
        let admin = S3Client(location: S3Location(endpoint: endpoint, region: "us-east-1", bucket: name),
                             credentials: AWSCredentials(accessKeyID: "test", secretAccessKey: "test"))
        let r = try await admin.send(.PUT, key: nil, headers: [("x-amz-bucket-object-lock-enabled", "true")])
        #expect(r.status == 200)
        return name
    }

    @Test func aCommitIsCopiedToTheTargetInTheBackgroundUnderCompliance() async throws {
        guard let env = peerEnvironment("REDOUBT_TEST_LOCALSTACK", "REDOUBT_TEST_MOTO"),
              let ls = env["REDOUBT_TEST_LOCALSTACK"].flatMap(URL.init(string:)),
                  let moto = env["REDOUBT_TEST_MOTO"].flatMap(URL.init(string:)) else {
                  return
              }
        let server = try await TestServer.start(jobs: true)
        let keys = try TenantKeys.generate()
        try await server.createTenant("acme", keys: keys)
        let (wc, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let creds = server.dir.appendingPathComponent("s3-credentials").path
        try "[default]\naws_access_key_id = test\naws_secret_access_key = test\n".write(toFile: creds, atomically: true,
            encoding: .utf8)
        do {
            let name = try await bucket(ls)
            func req(_ url: String, _ endpoint: URL, accept: Bool = false) -> Wire.AddCopyTargetRequest {
                Wire.AddCopyTargetRequest(tenant: "acme", url: url, endpoint: endpoint.absoluteString,
                    region: "us-east-1", credentialsFile: creds,
                                          virtualHosted: false, marginSeconds: 7 * 86400, acceptUnenforced: accept,
                                              requestID: nil)
            }
            // A host cannot add (or learn of) copy targets.
            await #expect(throws: APIError.self) { try await writer.addCopyTarget(req("s3://\(name)/x", ls)) }
            await #expect(throws: APIError.self) { try await writer.copyTargets() }

            let t = try await server.admin.addCopyTarget(req("s3://\(name)/redoubt", ls))
            #expect(t.lastProofOK == true)

            // A commit: the server copies it without being asked (the commit wakes the scheduler).
            let (packs, manifest) = try makeSnapshot(keys: try wc.writeKeySet(), files: [("a", (0..<200_000).map {
                UInt8(truncatingIfNeeded: $0)
            })])
            for p in packs { _ = try await writer.uploadPack(id: p.id, bytes: p.bytes) }
            let info = try await writer.commit(manifestBytes: manifest.bytes)
            var synced: Wire.CopyTargetInfo?
            let store = S3Store(client: S3Client(location: S3Location(endpoint: ls, region: "us-east-1", bucket: name,
                prefix: "redoubt"),
                                                 credentials: AWSCredentials(accessKeyID: "test",
                                                     secretAccessKey: "test")))
            // Bounded: the sync the target's addition asked for may end first, so the commit's own
            // is known by its manifest reaching the bucket.
            for _ in 0..<300 where synced == nil {
                let there = try await store.list(prefix: "t/acme/").contains {
                    $0.key.path.hasSuffix(manifest.id.description)
                }
                synced = try await server.admin.copyTargets().first { $0.id == t.id && $0.lastSyncAt != nil }
                let running = try await server.service.catalog.jobState(job: "copy-sync", tenant: "acme")?.leaseHolder
                if !there || synced?.lastSyncOK != true || running != nil { synced = nil }
                if synced == nil { try await Task.sleep(nanoseconds: 100_000_000) }
            }
            let s = try #require(synced)
            #expect(s.lastSyncOK == true, "\(s.lastSyncDetail ?? "")")
            let objects = try await store.list(prefix: "t/acme/")
            for p in packs {
                let o = try #require(objects.first { $0.key.path.hasSuffix(p.id.description) })
                #expect(o.enforced && (o.retainUntil
                    ?? .distantPast) >= info.retainUntil.addingTimeInterval(7 * 86400 - 86400))
            }
            #expect(objects.contains { $0.key.path.hasSuffix(manifest.id.description) })

            // A second commit copied in the same millisecond (this server's clock stands
            // still): its catalog export takes the next free name instead of failing the sync.
            let (packs2, manifest2) = try makeSnapshot(keys: try wc.writeKeySet(), files: [("b",
                (0..<150_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })],
                                                       time: testNow + 100)
            for p in packs2 { _ = try await writer.uploadPack(id: p.id, bytes: p.bytes) }
            _ = try await writer.commit(manifestBytes: manifest2.bytes)
            let again = try await server.admin.syncCopyTarget(id: t.id, wait: true)
            #expect(again.lastSyncOK == true, "\(again.lastSyncDetail ?? "")")
            let exports = try await store.list(prefix: "t/acme/catalog/").map(\.key).sorted { $0.path < $1.path }
            let newest = try #require(exports.last)
            let d = JSONDecoder()
            d.dateDecodingStrategy = .iso8601
            let export = try d.decode(BucketCopy.CatalogExport.self, from: Data(try await store.get(newest)))
            #expect(export.snapshots.count == 2, "\(exports.map(\.path))")

            // moto accepts lock settings without enforcing them: refused, or kept only when accepted on purpose.
            let motoBucket = try await bucket(moto)
            do {
                _ = try await server.admin.addCopyTarget(req("s3://\(motoBucket)/redoubt", moto))
                Issue.record("an unenforcing target was accepted")
            } catch let e as APIError { #expect(e.status == 400 && e.message.contains("does not enforce"), "\(e)") }
            let kept = try await server.admin.addCopyTarget(req("s3://\(motoBucket)/redoubt", moto, accept: true))
            #expect(kept.lastProofOK == false && kept.acceptUnenforced)
            #expect(try await server.admin.copyTargets().count == 2)
            let audit = try await server.admin.audit(limit: 10_000)
            #expect(audit.contains { $0.action == "copy-proof" && $0.outcome == "denied" })
            #expect(audit.contains { $0.action == "add-copy-target" && $0.detail.contains("UNENFORCED") })

            // Removing (a lone admin may) stops the copying; the bucket keeps its locked objects.
            let left = try await server.admin.removeCopyTarget(id: kept.id, requestID: nil)
            #expect(left.map(\.id) == [t.id])
        } catch { Issue.record("\(error)") }
        await writer.shutdown()
        await server.stop()
    }

    /// An admin's copy target with a plain-http endpoint off loopback is refused (400) by the
    /// server itself, before any request leaves it: SigV4 does not encrypt, so even the lock
    /// proof would put the admin's access key id and the canary on the wire in clear. The
    /// endpoint is a listener on 127.0.0.2 (loopback to the kernel, but not one of the names
    /// http is allowed to), so a request that did go out would be seen.
    @Test func aPlainHTTPEndpointOffLoopbackIsRefusedBeforeAnyRequest() async throws {
        final class Accepted: @unchecked Sendable {
            private let lock = NSLock()
            private var n = 0
            func add() { lock.withLock { n += 1 } }
            var count: Int { lock.withLock { n } }
        }
        let accepted = Accepted()
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                // Counted and hung up on, so that a regression fails the test instead of hanging it.
                accepted.add()
                channel.close(promise: nil)
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: "127.0.0.2", port: 0).get()
        let port = try #require(listener.localAddress?.port)
        let server = try await TestServer.start()
        try await server.createTenant("acme", keys: try TenantKeys.generate())
        let creds = server.dir.appendingPathComponent("s3-credentials").path
        try "[default]\naws_access_key_id = AKIAVICTIM\naws_secret_access_key = victim-secret\n"
            .write(toFile: creds, atomically: true, encoding: .utf8)
        do {
            for endpoint in ["http://127.0.0.2:\(port)", "HTTP://127.0.0.2:\(port)/", "http://10.0.0.1:\(port)"] {
                for accept in [false, true] {
                    let req = Wire.AddCopyTargetRequest(
                        tenant: "acme", url: "s3://redoubt-copy/x", endpoint: endpoint, region: "us-east-1",
                        credentialsFile: creds, virtualHosted: false, marginSeconds: 86400, acceptUnenforced: accept,
                        requestID: nil)
                    do {
                        _ = try await server.admin.addCopyTarget(req)
                        Issue.record("\(endpoint) was accepted")
                    } catch let e as APIError {
                        #expect(e.status == 400 && e.message.contains("plain http"), "\(e)")
                        #expect(!e.message.contains("victim-secret") && !e.message.contains("AKIAVICTIM"))
                    }
                }
            }
            #expect(try await server.admin.copyTargets().isEmpty)
            #expect(accepted.count == 0, "the server connected to the plain-http endpoint")
            // The listener does count: a connection made on purpose is seen.
            let probe = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.2", port: port).get()
            try? await probe.close()  // the listener may have hung up first
            for _ in 0..<50 where accepted.count == 0 { try await Task.sleep(nanoseconds: 20_000_000) }
            #expect(accepted.count == 1)
        } catch { Issue.record("\(error)") }
        try await listener.close()
        await server.stop()
    }
}

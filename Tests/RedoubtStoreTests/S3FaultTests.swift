import Foundation
import NIOHTTP1
import RedoubtAWS
import Synchronization
import Testing

@testable import RedoubtStore

/// Wraps the real transport (our own layer, not the server) and, by plan, cuts the
/// connection or answers 500 / 503 SlowDown before a request reaches the real server,
/// or lets a request reach it and then loses the answer (the case that tests that
/// retries are idempotent). `nil` in the plan passes a request through untouched.
final class FaultyTransport: S3Transport {
    enum Fault: Sendable { case cut, status500, slowDown, loseAnswer }
    let inner: any S3Transport
    let plan: Mutex<[Fault?]>
    let seen = Mutex<[String]>([])
    let urls = Mutex<[String]>([])

    init(_ inner: any S3Transport, plan: [Fault?]) {
        self.inner = inner
        self.plan = Mutex(plan)
    }

    struct Cut: Error {}

    func execute(_ request: S3HTTPRequest) async throws -> S3Response {
        let fault = plan.withLock { p in p.isEmpty ? nil : p.removeFirst() }
        seen.withLock { $0.append("\(request.method.rawValue)" + (fault.map { " \($0)" } ?? "")) }
        urls.withLock { $0.append(request.url) }
        switch fault {
        case .cut: throw Cut()
        case .status500:
            return S3Response(status: 500, headers: [:],
                body: Array("<Error><Code>InternalError</Code><Message>injected</Message></Error>".utf8))
        case .slowDown:
            return S3Response(status: 503, headers: [:],
                body: Array("<Error><Code>SlowDown</Code><Message>injected</Message></Error>".utf8))
        case .loseAnswer:
            _ = try await inner.execute(request)
            throw Cut()
        case nil: return try await inner.execute(request)
        }
    }
}

/// Faults injected into our transport while the real S3 servers answer everything else.
@Suite(.serialized) struct S3FaultTests {
    static let fast = S3RetryPolicy(attempts: 6, baseDelay: .milliseconds(5), maxDelay: .milliseconds(50))

    func store(_ peer: S3Peer, _ faulty: FaultyTransport, threshold: Int = 64 << 20) async throws -> S3Store {
        let bucket = try await peer.sharedBucket()
        return S3Store(client: peer.client(bucket, prefix: S3Peer.unique("faults"), transport: faulty,
            retry: Self.fast),
                       multipartThreshold: threshold, partSize: 5 << 20)
    }

    @Test(arguments: ["seaweed", "localstack"])
    func cutsErrorsAndThrottlesAreRetriedAndTheObjectIsWrittenOnce(_ name: String) async throws {
        guard let peer = S3Peer.named(name) else { return }
        // The version listing passes; the PUT reaches the server but its answer is lost,
        // then a cut, a 500 and a throttle: the retried conditional PUT finds the object.
        let faulty = FaultyTransport(try AHCTransport.shared(), plan: [nil, .loseAnswer, .cut, .status500, .slowDown])
        let store = try await store(peer, faulty)
        let key = try #require(ObjectKey("packs/f1/one"))
        let data = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let until = Date().addingTimeInterval(3600).rounded()
        let result = try await store.put(key, data, retainUntil: until)
        #expect(result == .alreadyPresent || result == .created)
        let seen = faulty.seen.withLock { $0 }
        #expect(seen.prefix(5) == ["GET", "PUT loseAnswer", "PUT cut", "PUT status500", "PUT slowDown"], "\(seen)")
        #expect(try await store.get(key) == data)
        let info = try #require(try await store.head(key))
        #expect(info.retainUntil == until && info.enforced)
    }

    @Test(arguments: ["seaweed", "localstack"])
    func multipartUploadSurvivesFaultsBetweenPartsAndALostCompletion(_ name: String) async throws {
        guard let peer = S3Peer.named(name) else { return }
        // List, create, part 1; part 2 cut twice then a 500; part 3; Complete lands but
        // its answer is lost, so the retry finds the upload gone or the key taken.
        let faulty = FaultyTransport(try AHCTransport.shared(), plan: [nil, nil, nil, .cut, .cut, .status500, nil, nil,
            .loseAnswer])
        let store = try await store(peer, faulty, threshold: 6 << 20)
        let key = try #require(ObjectKey("packs/f2/big"))
        let data = (0..<(12 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13 >> 3) }
        let until = Date().addingTimeInterval(3600).rounded()
        let result = try await store.put(key, data, retainUntil: until)
        let seen = faulty.seen.withLock { $0 }
        #expect(result == .created || result == .alreadyPresent, "\(seen)")
        #expect(seen.prefix(9) == ["GET", "POST", "PUT", "PUT cut", "PUT cut", "PUT status500", "PUT", "PUT",
            "POST loseAnswer"], "\(seen)")
        #expect(try await store.get(key) == data)
        #expect(try await store.head(key)?.retainUntil == until)
    }

    @Test func retriesEndWithAnIOErrorThatNamesTheKeyAndNoSecret() async throws {
        guard let peer = S3Peer.named("seaweed") else { return }
        let faulty = FaultyTransport(try AHCTransport.shared(), plan: Array(repeating: .cut, count: 100))
        let store = S3Store(client: peer.client("redoubt-unused", prefix: "x", transport: faulty,
                                                retry: S3RetryPolicy(attempts: 3, baseDelay: .milliseconds(1),
                                                    maxDelay: .milliseconds(2))))
        let key = try #require(ObjectKey("packs/never"))
        let e = await #expect(throws: StoreError.self) { _ = try await store.get(key) }
        #expect(e?.code == .io)
        #expect(e?.key == "packs/never")
        #expect(faulty.seen.withLock { $0.count } == 3)
        let secret =
            try #require(ProcessInfo.processInfo.environment["REDOUBT_TEST_SEAWEED_WRITER"]?.split(separator: ":")
            .last.map(String.init))
        #expect(!(e?.description.contains(secret) ?? true), "the secret must not appear in errors")
    }

    /// A server that sends fewer bytes than stored (simulated by cutting the answer of
    /// each GET short in our transport) is caught: an integrity error, never data.
    @Test func shortBodiesAreIntegrityErrors() async throws {
        guard let peer = S3Peer.named("localstack") else { return }
        final class Truncating: S3Transport {
            let inner: any S3Transport
            init(_ i: any S3Transport) { inner = i }
            func execute(_ r: S3HTTPRequest) async throws -> S3Response {
                let resp = try await inner.execute(r)
                // Only object reads (a version listing has no versionId in its query).
                guard r.method == .GET, r.url.contains("versionId="), resp.status == 200 || resp.status == 206,
                    !resp.body.isEmpty else {
                    return resp
                }
                return S3Response(status: resp.status, headers: resp.headers, body: Array(resp.body.dropLast()))
            }
        }
        let bucket = try await peer.sharedBucket()
        let prefix = S3Peer.unique("trunc")
        let good = S3Store(client: peer.client(bucket, prefix: prefix))
        let key = try #require(ObjectKey("packs/t/t"))
        _ = try await good.put(key, [1, 2, 3, 4, 5], retainUntil: nil)
        let bad = S3Store(client: peer.client(bucket, prefix: prefix, transport: Truncating(try AHCTransport.shared())))
        let whole = await #expect(throws: StoreError.self) { _ = try await bad.get(key) }
        #expect(whole?.code == .integrity)
        let part = await #expect(throws: StoreError.self) { _ = try await bad.get(key, range: 1..<4) }
        #expect(part?.code == .integrity)
    }

    /// Bytes changed after the write (simulated in our transport) fail the recorded SHA-256.
    @Test func changedBytesFailTheRecordedHash() async throws {
        guard let peer = S3Peer.named("seaweed") else { return }
        final class Flipping: S3Transport {
            let inner: any S3Transport
            init(_ i: any S3Transport) { inner = i }
            func execute(_ r: S3HTTPRequest) async throws -> S3Response {
                let resp = try await inner.execute(r)
                guard r.method == .GET, r.url.contains("versionId="), resp.status == 200, !resp.body.isEmpty else {
                    return resp
                }
                var body = resp.body
                body[0] ^= 0xff
                return S3Response(status: resp.status, headers: resp.headers, body: body)
            }
        }
        let bucket = try await peer.sharedBucket()
        let prefix = S3Peer.unique("flip")
        let key = try #require(ObjectKey("packs/h/h"))
        _ = try await S3Store(client: peer.client(bucket, prefix: prefix)).put(key, Array("pack bytes".utf8),
            retainUntil: nil)
        let bad = S3Store(client: peer.client(bucket, prefix: prefix, transport: Flipping(try AHCTransport.shared())))
        let e = await #expect(throws: StoreError.self) { _ = try await bad.get(key) }
        #expect(e?.code == .integrity)
    }
}

/// A hostile S3 endpoint whose version listing never ends: markers that alternate (a, b,
/// a, …) or go back in key order. Our own transport stands in for it (no S3 server can be
/// made to answer this way); the listing must stop with an error, not loop for ever.
final class CyclingListing: S3Transport {
    let markers: [String]
    let calls = Mutex(0)
    init(_ markers: [String]) { self.markers = markers }

    func execute(_ request: S3HTTPRequest) async throws -> S3Response {
        let n = calls.withLock { c -> Int in
            c += 1
            return c
        }
        let next = markers[(n - 1) % markers.count]
        let xml = "<ListVersionsResult><IsTruncated>true</IsTruncated><NextKeyMarker>\(next)</NextKeyMarker>"
            + "<NextVersionIdMarker>v</NextVersionIdMarker></ListVersionsResult>"
        return S3Response(status: 200, headers: [:], body: Array(xml.utf8))
    }
}

@Suite struct HostileListingTests {
    @Test(arguments: [["t/a", "t/b"], ["t/b", "t/a"]])
    func aListingThatDoesNotAdvanceIsAnError(_ markers: [String]) async throws {
        let endpoint = try #require(URL(string: "http://127.0.0.1:9"))
        let transport = CyclingListing(markers)
        let client = S3Client(location: S3Location(endpoint: endpoint, region: "us-east-1", bucket: "b"),
                              credentials: AWSCredentials(accessKeyID: "a", secretAccessKey: "s"), transport: transport)
        await #expect(throws: StoreError.self) { _ = try await client.listVersions(prefix: "t/") }
        #expect(transport.calls.withLock { $0 } <= 3)
    }
}

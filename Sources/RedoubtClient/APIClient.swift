import AsyncHTTPClient
import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import RedoubtCore

/// An error from the server or the connection to it: the HTTP status (0 if none), the
/// server's stable code and message, which name the object and the fix.
public struct APIError: Error, Sendable, CustomStringConvertible {
    public let status: Int
    public let code: String
    public let message: String

    public init(status: Int, code: String, message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public var description: String {
        status == 0 ? "\(message) [\(code)]" : "server said \(status): \(message) [\(code)]"
    }
    /// The server refused the caller (401/403).
    public var isRefusal: Bool { status == 401 || status == 403 }
}

/// The v1 API over HTTPS with the caller's client certificate, trusting only the server
/// CA from its credential (docs/PROTOCOL.md). One per process; call ``shutdown()``.
public final class APIClient: Sendable {
    let http: HTTPClient
    public let baseURL: String
    public let credential: ClientCredential?

    /// How long an unused connection stays pooled unless told otherwise. Why shorter than the
    /// server's idle timeout (90 s by default): a pooled connection the server is closing fails
    /// the request sent on it, and a POST is not sent twice.
    public static let defaultPoolIdleSeconds: Double = 20

    /// A client that authenticates with `credential`. `poolIdleSeconds`: how long an unused
    /// connection stays pooled; keep it below the server's idle timeout.
    public convenience init(credential: ClientCredential,
                            poolIdleSeconds: Double = APIClient.defaultPoolIdleSeconds) throws {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv13
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(credential.caPEM.utf8)))
        tls.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(credential.certificatePEM.utf8)).map {
            .certificate($0)
        }
        tls.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(credential.keyPEM.utf8), format: .pem))
        try self.init(url: credential.url, tls: tls, credential: credential, poolIdleSeconds: poolIdleSeconds)
    }

    /// An unauthenticated client for enrollment, trusting only `caDER`.
    public convenience init(url: String, caDER: [UInt8]) throws {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv13
        tls.trustRoots = .certificates([try NIOSSLCertificate(bytes: caDER, format: .der)])
        try self.init(url: url, tls: tls, credential: nil, poolIdleSeconds: Self.defaultPoolIdleSeconds)
    }

    init(url: String, tls: TLSConfiguration, credential: ClientCredential?, poolIdleSeconds: Double) throws {
        var config = HTTPClient.Configuration(tlsConfiguration: tls)
        config.httpVersion = .http1Only
        config.timeout = .init(connect: .seconds(10), read: .seconds(600))
        config.connectionPool = .init(idleTimeout: .milliseconds(Int64(poolIdleSeconds * 1000)),
            concurrentHTTP1ConnectionsPerHostSoftLimit: 8)
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
        baseURL = url.hasSuffix("/") ? String(url.dropLast()) : url
        self.credential = credential
    }

    public func shutdown() async { try? await http.shutdown() }

    deinit {
        // A client dropped on an error path before shutdown() would keep its pool's
        // connections open; the task holds the HTTP client until they are closed.
        let http = self.http
        Task { try? await http.shutdown() }
    }

    /// `PRETTY_NAME` from this host's /etc/os-release, read once; nil if absent.
    public static let hostOS: String? = {
        guard let s = try? String(contentsOfFile: "/etc/os-release", encoding: .utf8) else { return nil }
        for line in s.split(separator: "\n") where line.hasPrefix("PRETTY_NAME=") {
            return String(line.dropFirst("PRETTY_NAME=".count))
                .trimmingCharacters(in: CharacterSet(charactersIn: "\"'"))
        }
        return nil
    }()

    // MARK: transport

    /// Sends a request and returns the body of a 2xx answer; anything else is an APIError.
    public func send(_ method: HTTPMethod, _ path: String, body: [UInt8]? = nil,
        contentType: String = "application/octet-stream",
                     headers: [(String, String)] = [], limit: Int = 1 << 30,
                     idempotent: Bool = false) async throws -> (status: Int, body: [UInt8]) {
        // Sent from the array in small slices: a whole-pack ByteBuffer copy would double
        // the memory of every upload in flight (see BodySlices for the TLS side).
        let stream = body.map { HTTPClientRequest.Body.stream(BodySlices(bytes: $0), length: .known(Int64($0.count))) }
        return try await send(method, path, stream: stream, contentType: contentType, headers: headers, limit: limit,
            idempotent: idempotent)
    }

    /// ``send(_:_:body:contentType:headers:limit:)`` with a body the caller streams.
    func send(_ method: HTTPMethod, _ path: String, stream body: HTTPClientRequest.Body?,
              contentType: String = "application/octet-stream", headers: [(String, String)] = [],
              limit: Int = 1 << 30, idempotent: Bool = false) async throws -> (status: Int, body: [UInt8]) {
        var req = HTTPClientRequest(url: baseURL + path)
        req.method = method
        for (name, value) in headers { req.headers.add(name: name, value: value) }
        if let body {
            req.headers.add(name: "Content-Type", value: contentType)
            req.body = body
        }
        let resp: HTTPClientResponse
        do { resp = try await execute(req, idempotent: idempotent) } catch {
            throw unreachable(error, "\(method) \(path)")
        }
        return try checked(status: Int(resp.status.code), try await Self.collect(resp, upTo: limit))
    }

    private func unreachable(_ error: any Error, _ request: String) -> APIError {
        APIError(status: 0, code: "E_CONNECT",
                 message: """
                     cannot reach the Redoubt server at \(baseURL) (\(request): \(error)): is `redoubt server run` \
                     up, and is this credential from that server?
                     """)
    }

    /// The answer if its status is a success, else the server's error (or the body's start).
    private func checked(status: Int, _ data: [UInt8]) throws -> (status: Int, body: [UInt8]) {
        guard (200..<300).contains(status) else {
            if let e = try? JSONDecoder().decode(Wire.ErrorBody.self, from: Data(data)) {
                throw APIError(status: status, code: e.code, message: e.message)
            }
            throw APIError(status: status, code: "E_HTTP", message: String(decoding: data.prefix(500), as: UTF8.self))
        }
        return (status, data)
    }

    /// The body of `resp` in one array, filled as it arrives: collecting into a ByteBuffer
    /// first and copying it out would hold every downloaded pack twice.
    static func collect(_ resp: HTTPClientResponse, upTo limit: Int) async throws -> [UInt8] {
        var out: [UInt8] = []
        if let declared = resp.headers.first(name: "content-length").flatMap(Int.init), declared >= 0 {
            guard declared <= limit else { throw NIOTooManyBytesError(maxBytes: limit) }
            out.reserveCapacity(declared)
        }
        for try await part in resp.body {
            guard out.count + part.readableBytes <= limit else { throw NIOTooManyBytesError(maxBytes: limit) }
            out.append(contentsOf: part.readableBytesView)
        }
        return out
    }

    /// Sends once more a request that cannot have changed anything twice (GET, HEAD, a PUT
    /// of content-addressed bytes, and a POST its caller calls `idempotent`: a lookup, or a
    /// commit, which answers the same snapshot for the same manifest) when its connection
    /// closed before any answer: a server closes idle connections, and one may close just
    /// as the pool hands it out.
    private func execute(_ req: HTTPClientRequest, idempotent: Bool) async throws -> HTTPClientResponse {
        do { return try await http.execute(req, timeout: .seconds(600)) } catch {
            guard idempotent || [.GET, .HEAD, .PUT].contains(req.method), Self.closedBeforeAnswer(error) else {
                throw error
            }
            return try await http.execute(req, timeout: .seconds(600))
        }
    }

    static func closedBeforeAnswer(_ error: any Error) -> Bool {
        if let e = error as? HTTPClientError { return e == .remoteConnectionClosed }
        if error is ChannelError { return true }
        if let e = error as? IOError { return e.errnoCode == ECONNRESET || e.errnoCode == EPIPE }
        return false
    }

    func json<T: Decodable>(_ type: T.Type, _ method: HTTPMethod, _ path: String,
        body: (some Encodable)? = Optional<Int>.none) async throws -> T {
        var payload: [UInt8]? = nil
        if let body { payload = Array(try JSONEncoder().encode(body)) }
        let (_, data) = try await send(method, path, body: payload, contentType: "application/json")
        let d = WireDate.decoder()
        do { return try d.decode(T.self, from: Data(data)) } catch {
            throw APIError(status: 0, code: "E_PROTOCOL",
                message: "server answered \(path) with an unexpected body: \(error)")
        }
    }

    // MARK: API

    public func health() async throws -> [String: String] { try await json([String: String].self, .GET, "/v1/health") }

    public func enroll(_ req: Wire.EnrollRequest) async throws -> Wire.EnrollResponse {
        try await json(Wire.EnrollResponse.self, .POST, "/v1/enroll", body: req)
    }

    public func createTenant(_ req: Wire.CreateTenantRequest) async throws -> Wire.TenantInfo {
        try await json(Wire.TenantInfo.self, .POST, "/v1/tenants", body: req)
    }

    public func tenants() async throws -> [Wire.TenantInfo] {
        try await json([Wire.TenantInfo].self, .GET, "/v1/tenants")
    }

    public func createEnrollment(tenant: String, role: String, name: String,
        ttlSeconds: Double?) async throws -> Wire.CreateEnrollmentResponse {
        try await json(Wire.CreateEnrollmentResponse.self, .POST, "/v1/tenants/\(tenant)/enrollments",
                       body: Wire.CreateEnrollmentRequest(role: role, name: name, ttlSeconds: ttlSeconds))
    }

    /// The tenant's current wrapped read key (admin: any tenant, with retired KEKs;
    /// restorer: its own tenant).
    public func readKey(tenant: String) async throws -> Wire.ReadKeyInfo {
        try await json(Wire.ReadKeyInfo.self, .GET, "/v1/tenants/\(tenant)/read-key")
    }

    /// Rotates to `wrappedReadKey`, or (empty, with `requestID`) to the wrapping an approved
    /// request holds.
    public func rotateReadKey(tenant: String, wrappedReadKey: String,
        requestID: String? = nil) async throws -> Wire.ReadKeyInfo {
        try await json(Wire.ReadKeyInfo.self, .PUT, "/v1/tenants/\(tenant)/read-key",
                       body: Wire.RotateReadKeyRequest(wrappedReadKey: wrappedReadKey, requestID: requestID))
    }

    public func writeMaterial(tenant: String) async throws -> Wire.WriteMaterialInfo {
        try await json(Wire.WriteMaterialInfo.self, .GET, "/v1/tenants/\(tenant)/write-material")
    }

    public func restoreWriteMaterial(tenant: String, material: String) async throws -> Wire.WriteMaterialInfo {
        try await json(Wire.WriteMaterialInfo.self, .PUT, "/v1/tenants/\(tenant)/write-material",
            body: Wire.RestoreWriteMaterialRequest(writeMaterial: material))
    }

    public func markKEKsDestroyed(tenant: String, versions: [Int]) async throws -> Wire.ReadKeyInfo {
        try await json(Wire.ReadKeyInfo.self, .POST, "/v1/tenants/\(tenant)/read-key/destroyed",
            body: Wire.DestroyedKEKsRequest(versions: versions))
    }

    public func shredTenant(tenant: String, confirm: String, destroyedVersions: [Int], requestID: String? = nil,
        check: Bool = false) async throws -> Wire.ReadKeyInfo {
        try await json(Wire.ReadKeyInfo.self, .POST, "/v1/tenants/\(tenant)/shred",
                       body: Wire.ShredRequest(confirm: confirm, destroyedVersions: destroyedVersions,
                           requestID: requestID, check: check ? true : nil))
    }

    // MARK: copy targets

    public func addCopyTarget(_ req: Wire.AddCopyTargetRequest) async throws -> Wire.CopyTargetInfo {
        try await json(Wire.CopyTargetInfo.self, .POST, "/v1/copy-targets", body: req)
    }

    public func copyTargets() async throws -> [Wire.CopyTargetInfo] {
        try await json([Wire.CopyTargetInfo].self, .GET, "/v1/copy-targets")
    }

    public func removeCopyTarget(id: String, requestID: String?) async throws -> [Wire.CopyTargetInfo] {
        try await json([Wire.CopyTargetInfo].self, .POST, "/v1/copy-targets/\(id)/remove",
            body: Wire.ApprovedChange(requestID: requestID))
    }

    public func syncCopyTarget(id: String, wait: Bool) async throws -> Wire.CopyTargetInfo {
        try await json(Wire.CopyTargetInfo.self, .POST, "/v1/copy-targets/\(id)/sync" + (wait ? "?wait=1" : ""))
    }

    // MARK: approvals

    public func setMinRetention(tenant: String, seconds: Double, requestID: String?) async throws -> Wire.TenantInfo {
        try await json(Wire.TenantInfo.self, .PUT, "/v1/tenants/\(tenant)/retention",
            body: Wire.SetRetentionRequest(minRetentionSeconds: seconds, requestID: requestID))
    }

    public func setDedupScope(tenant: String, scope: String, requestID: String?) async throws -> Wire.TenantInfo {
        try await json(Wire.TenantInfo.self, .PUT, "/v1/tenants/\(tenant)/dedup-scope",
                       body: Wire.SetDedupScopeRequest(dedupScope: scope, requestID: requestID))
    }

    public func addAdmin(name: String, ttlSeconds: Double?,
        requestID: String?) async throws -> Wire.CreateEnrollmentResponse {
        try await json(Wire.CreateEnrollmentResponse.self, .POST, "/v1/admins", body: Wire.AddAdminRequest(name: name,
            ttlSeconds: ttlSeconds, requestID: requestID))
    }

    public func removeAdmin(name: String, requestID: String?) async throws -> Wire.QuorumInfo {
        try await json(Wire.QuorumInfo.self, .POST, "/v1/admins/\(name)/remove",
            body: Wire.ApprovedChange(requestID: requestID))
    }

    /// Enrolled principals (admin); `includeRevoked` adds the revoked ones.
    /// Sets (nil: removes) a tenant's storage quota, or with `host` that host's (admin).
    public func setQuota(tenant: String, host: String?, bytes: Int64?) async throws -> Wire.QuotaInfo {
        try await json(Wire.QuotaInfo.self, .PUT, "/v1/tenants/\(tenant)/quota", body: Wire.SetQuotaRequest(host: host,
            bytes: bytes))
    }

    public func principals(includeRevoked: Bool = false) async throws -> [Wire.PrincipalInfo] {
        try await json([Wire.PrincipalInfo].self, .GET, includeRevoked ? "/v1/principals?all=1" : "/v1/principals")
    }

    /// Removes a tenant's expired snapshots and the packs nothing names any more (admin).
    public func collectGarbage(tenant: String, dryRun: Bool) async throws -> Wire.GCReport {
        try await json(Wire.GCReport.self, .POST, "/v1/tenants/\(tenant)/gc", body: Wire.GCRequest(dryRun: dryRun))
    }

    /// Enrollment tokens that could still enroll someone (admin).
    public func enrollments() async throws -> [Wire.EnrollmentInfo] {
        try await json([Wire.EnrollmentInfo].self, .GET, "/v1/enrollments")
    }

    /// Cancels a pending enrollment token by its ID (or a unique prefix of 12+ hex digits).
    public func cancelEnrollment(id: String) async throws -> Wire.EnrollmentInfo {
        try await json(Wire.EnrollmentInfo.self, .POST, "/v1/enrollments/\(id)/cancel")
    }

    /// Revokes a writer, restorer or auditor credential (a writer needs approval once there are two admins).
    public func revokePrincipal(id: String, requestID: String?) async throws -> Wire.PrincipalInfo {
        try await json(Wire.PrincipalInfo.self, .POST, "/v1/principals/\(id)/revoke",
            body: Wire.ApprovedChange(requestID: requestID))
    }

    public func quorum() async throws -> Wire.QuorumInfo { try await json(Wire.QuorumInfo.self, .GET, "/v1/quorum") }

    public func setQuorum(_ q: Int, requestID: String?) async throws -> Wire.QuorumInfo {
        try await json(Wire.QuorumInfo.self, .PUT, "/v1/quorum", body: Wire.ApprovedChange(requestID: requestID,
            quorum: q))
    }

    public func requests() async throws -> [Wire.RequestInfo] {
        try await json([Wire.RequestInfo].self, .GET, "/v1/requests")
    }

    public func decide(request id: String, approve: Bool) async throws -> Wire.RequestInfo {
        try await json(Wire.RequestInfo.self, .POST, "/v1/requests/\(id)/\(approve ? "approve" : "reject")")
    }

    /// Every snapshot the caller may see, read a page at a time (the server answers at most
    /// `pageSize`, docs/PROTOCOL.md §3).
    public func snapshots(host: String? = nil, pageSize: Int = 5000) async throws -> [Wire.SnapshotInfo] {
        var all: [Wire.SnapshotInfo] = []
        while true {
            var query = ["limit=\(pageSize)"]
            if let host {
                query.append("host=\(host.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? host)")
            }
            if let last = all.last { query.append("after=\(last.id)") }
            let page = try await json([Wire.SnapshotInfo].self, .GET, "/v1/snapshots?" + query.joined(separator: "&"))
            all += page
            if page.count < pageSize { return all }
        }
    }

    public func snapshot(_ id: String) async throws -> Wire.SnapshotInfo {
        try await json(Wire.SnapshotInfo.self, .GET, "/v1/snapshots/\(id)")
    }

    public func manifestBytes(_ id: String) async throws -> [UInt8] {
        try await send(.GET, "/v1/snapshots/\(id)/manifest").body
    }

    public func verify(_ id: String) async throws -> Wire.VerifyReport {
        try await json(Wire.VerifyReport.self, .POST, "/v1/snapshots/\(id)/verify")
    }

    public func audit(after: Int64 = 0, limit: Int = 1000) async throws -> [Wire.AuditEntry] {
        try await json([Wire.AuditEntry].self, .GET, "/v1/audit?after=\(after)&limit=\(limit)")
    }

    /// Which of `ids` the tenant holds, and in which pack; batched.
    public func chunkLocations(_ ids: [ChunkID]) async throws -> [ChunkID: PackID] {
        var out: [ChunkID: PackID] = [:]
        var i = 0
        while i < ids.count {
            let batch = Array(ids[i..<min(i + 20_000, ids.count)])
            i += batch.count
            let (_, data) = try await send(.POST, "/v1/chunks/query", body: Wire.encodeIDs(batch),
                idempotent: true)
            guard let m = Wire.decodeChunkLocations(data) else {
                throw APIError(status: 0, code: "E_PROTOCOL", message: "malformed chunk query answer")
            }
            out.merge(m) { a, _ in a }
        }
        return out
    }

    /// Which of `packs` this writer uploaded and the tenant still holds; batched.
    public func uploadedPacks(_ packs: [PackID]) async throws -> Set<PackID> {
        var out = Set<PackID>()
        var i = 0
        while i < packs.count {
            let batch = packs[i..<min(i + 20_000, packs.count)]
            i += batch.count
            let data: [UInt8]
            do {
                data = try await send(.POST, "/v1/packs/query", body: Wire.encodeIDs(batch), idempotent: true).body
            } catch let e as APIError where e.status == 403 && e.code == "E_FORBIDDEN" && i == batch.count {
                // A server from before this endpoint refuses it as a path the API does not
                // define (docs/openapi.yaml, "Undefined methods and paths"): the cache's chunks
                // are then confirmed one by one, as that server expects.
                return []
            }
            guard let answered = Wire.decodeIDs(data, as: PackID.self) else {
                throw APIError(status: 0, code: "E_PROTOCOL", message: "malformed pack query answer")
            }
            guard Set(answered).isSubset(of: batch) else {
                throw APIError(status: 0, code: "E_PROTOCOL", message: "the server answered a pack not asked for")
            }
            out.formUnion(answered)
        }
        return out
    }

    public func uploadPack(id: PackID, bytes: [UInt8]) async throws -> Wire.UploadResponse {
        let (_, data) = try await send(.PUT, "/v1/packs/\(id)", body: bytes)
        let d = WireDate.decoder()
        return try d.decode(Wire.UploadResponse.self, from: Data(data))
    }

    /// ``uploadPack(id:bytes:)`` from a spooled copy, read in slices as it is sent.
    public func uploadPack(spooled pack: SpooledPack) async throws -> Wire.UploadResponse {
        let (_, data) = try await put("/v1/packs/\(pack.id)", spooled: pack)
        return try WireDate.decoder().decode(Wire.UploadResponse.self, from: Data(data))
    }

    /// PUTs `pack`, reading each slice from its file only while the connection can take it.
    /// Why: a streamed `HTTPClientRequest` body is read as fast as the file gives it, and
    /// the connection's pushback reaches it only once the connection's event loop has caught
    /// up, so slices queued there, plain and encrypted: 42 MiB at a first backup's peak
    /// (heaptrack), more than the packs being uploaded. Here the request, its body and its
    /// connection share one loop, and each slice is read in a task of its own on it, after
    /// the loop has written the one before and seen whether the socket took it (read in the
    /// same task, every slice of a pack was read before any was sent: 15 MiB).
    private func put(_ path: String, spooled pack: SpooledPack) async throws -> (status: Int, body: [UInt8]) {
        var req = try HTTPClient.Request(url: baseURL + path, method: .PUT)
        req.headers.add(name: "Content-Type", value: "application/octet-stream")
        let loop = http.eventLoopGroup.next()
        req.body = .stream(contentLength: Int64(pack.count)) { writer in
            @Sendable func send(from offset: Int) -> EventLoopFuture<Void> {
                guard offset < pack.count else { return loop.makeSucceededVoidFuture() }
                let part: ByteBuffer
                do { part = try pack.read(at: offset, limit: BodySlices.sliceSize) } catch {
                    return loop.makeFailedFuture(error)
                }
                let next = offset + part.readableBytes
                return writer.write(.byteBuffer(part)).flatMap { loop.flatSubmit { send(from: next) } }
            }
            return send(from: 0)
        }
        let response: HTTPClient.Response
        do {
            // Sent again once, like other content-addressed PUTs, if the connection closed first.
            let onLoop = HTTPClient.EventLoopPreference.delegateAndChannel(on: loop), request = req
            @Sendable func attempt() async throws -> HTTPClient.Response {
                try await http.execute(request: request, eventLoop: onLoop, deadline: .now() + .seconds(600)).get()
            }
            do { response = try await attempt() } catch {
                guard Self.closedBeforeAnswer(error) else { throw error }
                response = try await attempt()
            }
        } catch let e as ArchiveError {
            throw e  // the spooled copy could not be read back: not the server's doing
        } catch { throw unreachable(error, "PUT \(path)") }
        return try checked(status: Int(response.status.code), response.body.map { Array($0.readableBytesView) } ?? [])
    }

    /// Tells the server a pack does not open (deep verify); the answer names its uploader.
    public func reportDamagedPack(_ id: PackID, problem: String) async throws -> Wire.DamagedPackInfo {
        try await json(Wire.DamagedPackInfo.self, .POST, "/v1/packs/\(id)/damaged",
            body: Wire.DamagedPackReport(problem: problem))
    }

    public func packBytes(_ id: PackID) async throws -> [UInt8] { try await send(.GET, "/v1/packs/\(id)").body }

    /// Commits a snapshot, reporting this host's OS (`Redoubt-OS`, docs/PROTOCOL.md §6) as
    /// each backup does, so the server's `doctor` sees upgrades and reinstalls.
    public func commit(manifestBytes: [UInt8]) async throws -> Wire.SnapshotInfo {
        let os = Self.hostOS.map { [(Wire.hostOSHeader, $0)] } ?? []
        let (_, data) = try await send(.POST, "/v1/snapshots", body: manifestBytes, headers: os,
            idempotent: true)
        let d = WireDate.decoder()
        return try d.decode(Wire.SnapshotInfo.self, from: Data(data))
    }
}

extension APIClient: PackLocatingBackupTarget, SpooledPackTarget, ChunkLocatingPackSource {
    public func upload(spooled pack: SpooledPack) async throws { _ = try await uploadPack(spooled: pack) }

    public func existingChunkLocations(_ ids: [ChunkID]) async throws -> [ChunkID: PackID] {
        try await chunkLocations(ids)
    }

    public func chunkLocations(inPacks packs: [PackID]) async throws -> [ChunkID: PackID] {
        var out: [ChunkID: PackID] = [:]
        var seen = Set<PackID>()
        var left = packs.filter { seen.insert($0).inserted }
        // The server answers the first lists that fit its answer limit (docs/PROTOCOL.md §3);
        // what it left out is asked for again.
        while !left.isEmpty {
            let batch = Array(left.prefix(5000))
            let data = try await send(.POST, "/v1/packs/chunk-lists", body: Wire.encodeIDs(batch),
                idempotent: true).body
            var answered = Set<PackID>()
            var r = ByteReader(data)
            do {
                while !r.isAtEnd {
                    let pack = try PackID(bytes: r.raw(32)).orThrow()
                    answered.insert(pack)
                    let n = Int(try r.u32())
                    for _ in 0..<n {
                        out[try ChunkID(bytes: r.raw(32)).orThrow()] = pack
                    }
                }
            } catch {
                throw APIError(status: 0, code: "E_PROTOCOL", message: "malformed pack chunk lists from the server")
            }
            guard !answered.isEmpty, answered.isSubset(of: Set(batch)) else {
                throw APIError(status: 0, code: "E_PROTOCOL",
                               message: "the server answered pack chunk lists for no pack or for packs not asked for")
            }
            left = left.filter { !answered.contains($0) }
        }
        return out
    }

    public func existingChunks(_ ids: [ChunkID]) async throws -> Set<ChunkID> {
        Set(try await chunkLocations(ids).keys)
    }
    public func upload(pack: FinishedPack) async throws { _ = try await uploadPack(id: pack.id, bytes: pack.bytes) }
    public func commit(manifest: Manifest) async throws { _ = try await commit(manifestBytes: manifest.bytes) }
    public func pack(_ id: PackID) async throws -> [UInt8] { try await packBytes(id) }
}


private extension Optional {
    /// The value, or a read failure: a 32-byte ID that does not make an ID is malformed input.
    func orThrow() throws -> Wrapped {
        guard let v = self else { throw ByteReader.Failure.truncated(needed: 32, remaining: 0) }
        return v
    }
}

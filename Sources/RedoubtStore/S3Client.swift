import AsyncHTTPClient
import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import RedoubtAWS
import Synchronization

/// Where an S3 bucket is and how to sign for it.
public struct S3Location: Sendable, Equatable {
    /// `http://127.0.0.1:8333` or `https://s3.eu-west-1.amazonaws.com`.
    public var endpoint: URL
    public var region: String
    public var bucket: String
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    public var prefix: String
    /// Path-style (`endpoint/bucket/key`) rather than virtual-hosted (`bucket.endpoint/key`).
    public var pathStyle: Bool

    public init(endpoint: URL, region: String, bucket: String, prefix: String = "", pathStyle: Bool = true) {
        self.endpoint = endpoint
        self.region = region
        self.bucket = bucket
        self.prefix = prefix.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        self.pathStyle = pathStyle
    }
}

/// An S3 response: status, headers, body.
public struct S3Response: Sendable {
    public let status: Int
    public let headers: HTTPHeaders
    public let body: [UInt8]
    public func header(_ name: String) -> String? { headers.first(name: name) }
    public init(status: Int, headers: HTTPHeaders, body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }
    /// The `<Code>` of an S3 error body, if any.
    public var errorCode: String? { S3XML.error(body)?.code }
    public var errorMessage: String? { S3XML.error(body)?.message }
}

/// One signed HTTP request as it goes on the wire.
public struct S3HTTPRequest: Sendable {
    public var method: HTTPMethod
    public var url: String
    public var headers: HTTPHeaders
    public var body: [UInt8]

    public init(method: HTTPMethod, url: String, headers: HTTPHeaders, body: [UInt8]) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
    }
}

/// Sends signed requests and returns the whole answer. The real one is `AHCTransport`;
/// tests wrap it to inject faults (cuts, lost answers, 5xx, throttling) into our own
/// layer while the real S3 server stays the peer.
///
/// Contract: throw for a request that got no complete answer (a cut, a timeout);
/// return every answer the server gave, whatever its status. Retries are the client's.
public protocol S3Transport: Sendable {
    func execute(_ request: S3HTTPRequest) async throws -> S3Response
}

/// The AsyncHTTPClient transport: HTTP/1.1, TLS 1.2 or later with the system roots or
/// one private CA, bodies bounded at 1 GiB.
public final class AHCTransport: S3Transport {
    let http: HTTPClient
    let bodyLimit: Int

    /// A transport trusting `caPEM` (PEM certificates) instead of the system roots when given.
    /// Prefer `shared(caPEM:)`: each instance owns a connection pool that lives as long as it.
    public convenience init(caPEM: String? = nil, bodyLimit: Int = 1 << 30) throws {
        var roots = NIOSSLTrustRoots.default
        if let caPEM {
            do { roots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(caPEM.utf8))) } catch {
                throw StoreError(.config, key: "ca",
                    "cannot read the S3 endpoint's CA certificate (\(error)): give a PEM file")
            }
        }
        self.init(trustRoots: roots, bodyLimit: bodyLimit)
    }

    init(trustRoots: NIOSSLTrustRoots, bodyLimit: Int) {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        tls.trustRoots = trustRoots
        var config = HTTPClient.Configuration(tlsConfiguration: tls)
        config.httpVersion = .http1Only
        config.decompression = .disabled
        config.timeout = .init(connect: .seconds(10), read: .seconds(120))
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
        self.bodyLimit = bodyLimit
    }

    public func execute(_ request: S3HTTPRequest) async throws -> S3Response {
        var req = HTTPClientRequest(url: request.url)
        req.method = request.method
        req.headers = request.headers
        if !request.body.isEmpty || request.method == .PUT || request.method == .POST {
            req.body = .bytes(ByteBuffer(bytes: request.body))
        }
        let response = try await http.execute(req, timeout: .seconds(300))
        let bytes = try await response.body.collect(upTo: bodyLimit)
        return S3Response(status: Int(response.status.code), headers: response.headers,
            body: Array(bytes.readableBytesView))
    }

    private static let cache = Mutex<[String: AHCTransport]>([:])

    /// One process-wide transport per CA (nil: the system roots). AsyncHTTPClient must be
    /// shut down before release; a cached one lives as long as the process and pools
    /// connections across every client that uses it.
    public static func shared(caPEM: String? = nil) throws -> AHCTransport {
        try cache.withLock { all in
            if let t = all[caPEM ?? ""] { return t }
            let t = try AHCTransport(caPEM: caPEM)
            all[caPEM ?? ""] = t
            return t
        }
    }

    /// The shared transport with the system roots.
    static var system: AHCTransport {
        cache.withLock { all in
            if let t = all[""] { return t }
            let t = AHCTransport(trustRoots: .default, bodyLimit: 1 << 30)
            all[""] = t
            return t
        }
    }
}

/// How often and how long to retry a request that got no answer, a 5xx or a throttle.
public struct S3RetryPolicy: Sendable {
    /// Attempts in all, the first included.
    public var attempts: Int
    /// The first back-off; each retry doubles it (with jitter), up to `maxDelay`.
    public var baseDelay: Duration
    public var maxDelay: Duration

    public init(attempts: Int = 6, baseDelay: Duration = .milliseconds(200), maxDelay: Duration = .seconds(5)) {
        self.attempts = attempts
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    func delay(before attempt: Int) -> Duration {
        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
        let ceiling = min(seconds(maxDelay), seconds(baseDelay) * pow(2, Double(attempt - 1)))
        return .milliseconds(Int(ceiling * 1000 * Double.random(in: 0.5...1.0)))
    }
}

/// A small S3 client: SigV4-signed requests (payload hash always signed) through an
/// `S3Transport`, retries with backoff on broken connections, 5xx and throttling, and
/// errors that keep S3's code and message. Credentials never appear in errors or logs.
public struct S3Client: Sendable {
    public let location: S3Location
    let signer: SigV4Signer
    let transport: any S3Transport
    public var retry: S3RetryPolicy

    /// A client for `location`, signing with `credentials`; `transport` defaults to the
    /// shared AsyncHTTPClient transport with the system roots.
    public init(location: S3Location, credentials: AWSCredentials, transport: (any S3Transport)? = nil,
                retry: S3RetryPolicy = S3RetryPolicy()) {
        self.location = location
        self.signer = SigV4Signer(credentials: credentials, region: location.region, service: "s3")
        self.transport = transport ?? AHCTransport.system
        self.retry = retry
    }

    /// The full object key for `key` under the location's prefix.
    public func objectName(_ key: String) -> String { location.prefix.isEmpty ? key : location.prefix + "/" + key }

    /// Sends one request to the bucket (`key` nil) or an object, retrying transient
    /// failures. Returns any response S3 gave that is not transient, success or not.
    public func send(
        _ method: HTTPMethod, key: String?, query: [(name: String, value: String)] = [],
        headers extra: [(name: String, value: String)] = [], body: [UInt8] = []
    ) async throws -> S3Response {
        var host = SigV4Signer.hostHeader(for: location.endpoint)
        var path = ""
        if location.pathStyle { path = "/" + SigV4Signer.encode(location.bucket, keepSlash: false) } else {
            host = location.bucket + "." + host
        }
        path += "/" + (key.map { SigV4Signer.encodePath($0) } ?? "")
        if key == nil && location.pathStyle { path = String(path.dropLast()) }
        let scheme = location.endpoint.scheme ?? "https"
        let payloadHash = SigV4Signer.hexSHA256(body)
        var lastError: (any Error)?
        for attempt in 0..<max(1, retry.attempts) {
            try Task.checkCancellation()
            if attempt > 0 { try await Task.sleep(for: retry.delay(before: attempt)) }
            let request = SigV4Request(method: method.rawValue, encodedPath: path.isEmpty ? "/" : path, query: query,
                                       headers: [("host", host)] + extra, payloadHash: payloadHash)
            let signed = signer.sign(request, at: Date())
            let query = request.encodedQuery
            var headers = HTTPHeaders()
            for (n, v) in extra + signed { headers.add(name: n, value: v) }
            let url = "\(scheme)://\(host)\(request.encodedPath)" + (query.isEmpty ? "" : "?" + query)
            do {
                let r = try await transport.execute(S3HTTPRequest(method: method, url: url, headers: headers,
                    body: body))
                if Self.isTransient(r) {
                    lastError = S3Error(status: r.status, code: r.errorCode ?? "HTTP\(r.status)",
                        message: r.errorMessage ?? "", key: key ?? location.bucket)
                    continue
                }
                return r
            } catch let error as CancellationError {
                throw error
            } catch {
                lastError = error
            }
        }
        throw lastError ?? S3Error(status: 0, code: "Unreachable", message: "no attempt made", key: key
            ?? location.bucket)
    }

    /// 5xx that may pass (not 501 NotImplemented, which never will), 429, and the
    /// throttling and timeout codes some servers send with 400 or 403.
    static func isTransient(_ r: S3Response) -> Bool {
        if [500, 502, 503, 504, 429].contains(r.status) { return true }
        if r.status == 400 || r.status == 403 || r.status >= 500, let code = r.errorCode {
            return ["SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError"].contains(code)
        }
        return false
    }
}

/// An error S3 returned, with its code and message kept.
public struct S3Error: Error, Sendable, CustomStringConvertible {
    public let status: Int
    public let code: String
    public let message: String
    public let key: String
    public var description: String { "S3 \(status) \(code) on \(key): \(message)" }
}

/// S3's dates: ISO 8601 with or without fractional seconds.
public enum S3Date {
    public static func parse(_ s: String) -> Date? {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = f.date(from: s) { return d }
        f.formatOptions = [.withInternetDateTime]
        if let d = f.date(from: s) { return d }
        // HTTP date (Last-Modified style), as some servers send for lock headers.
        let h = DateFormatter()
        h.locale = Locale(identifier: "en_US_POSIX")
        h.timeZone = TimeZone(secondsFromGMT: 0)
        h.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return h.date(from: s)
    }

    public static func format(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: d)
    }
}

/// Content-MD5 (base64), which S3 requires on requests that carry lock settings.
func contentMD5(_ body: [UInt8]) -> String { Data(Insecure.MD5.hash(data: body)).base64EncodedString() }

import AsyncHTTPClient
import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import RedoubtAWS

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
    /// The `<Code>` of an S3 error body, if any.
    public var errorCode: String? { S3XML.first("Code", in: body) }
    public var errorMessage: String? { S3XML.first("Message", in: body) }
}

/// A small S3 client on AsyncHTTPClient: SigV4-signed requests (payload hash always
/// signed), retries with backoff on 5xx, throttling and broken connections, and errors
/// that keep S3's code and message. Credentials never appear in errors or logs.
public struct S3Client: Sendable {
    public let location: S3Location
    let signer: SigV4Signer
    let http: HTTPClient
    /// Attempts per request (first try included).
    public var attempts = 5

    public init(location: S3Location, credentials: AWSCredentials, http: HTTPClient = .shared) {
        self.location = location
        self.signer = SigV4Signer(credentials: credentials, region: location.region, service: "s3")
        self.http = http
    }

    /// The full object key for `key` under the location's prefix.
    public func objectName(_ key: String) -> String { location.prefix.isEmpty ? key : location.prefix + "/" + key }

    /// Sends one request to the bucket (`key` nil) or an object, retrying transient
    /// failures. Returns any response S3 gave that is not transient, success or not.
    public func send(
        _ method: HTTPMethod, key: String?, query: [(name: String, value: String)] = [],
        headers extra: [(name: String, value: String)] = [], body: [UInt8] = []
    ) async throws -> S3Response {
        var host = location.endpoint.host ?? "localhost"
        if let port = location.endpoint.port { host += ":\(port)" }
        var path = ""
        if location.pathStyle { path = "/" + SigV4Signer.encode(location.bucket, keepSlash: false) } else { host = location.bucket + "." + host }
        path += "/" + (key.map { SigV4Signer.encodePath($0) } ?? "")
        if key == nil && location.pathStyle { path = String(path.dropLast()) }
        let scheme = location.endpoint.scheme ?? "https"
        let payloadHash = SigV4Signer.hexSHA256(body)
        var lastError: (any Error)?
        for attempt in 0..<max(1, attempts) {
            if attempt > 0 {
                // Exponential backoff with jitter: 0.2 s, 0.4 s, 0.8 s, … (capped at 5 s).
                let base = min(5.0, 0.2 * pow(2.0, Double(attempt - 1)))
                try await Task.sleep(for: .milliseconds(Int(base * 1000 * Double.random(in: 0.5...1.0))))
            }
            let request = SigV4Request(method: method.rawValue, encodedPath: path.isEmpty ? "/" : path, query: query,
                                       headers: [("host", host)] + extra, payloadHash: payloadHash)
            let signed = signer.sign(request, at: Date())
            let query = request.encodedQuery
            var http = HTTPClientRequest(url: "\(scheme)://\(host)\(request.encodedPath)" + (query.isEmpty ? "" : "?" + query))
            http.method = method
            for (n, v) in extra + signed { http.headers.add(name: n, value: v) }
            if !body.isEmpty || method == .PUT || method == .POST { http.body = .bytes(ByteBuffer(bytes: body)) }
            do {
                let response = try await self.http.execute(http, timeout: .seconds(120))
                let bytes = try await response.body.collect(upTo: 1 << 30)
                let r = S3Response(status: Int(response.status.code), headers: response.headers, body: Array(bytes.readableBytesView))
                // 5xx and throttling are transient; anything else is S3's answer.
                if r.status >= 500 || r.status == 429 || r.errorCode == "SlowDown" || r.errorCode == "Throttling" {
                    lastError = S3Error(status: r.status, code: r.errorCode ?? "HTTP\(r.status)", message: r.errorMessage ?? "", key: key ?? location.bucket)
                    continue
                }
                return r
            } catch let error as CancellationError {
                throw error
            } catch {
                lastError = error
            }
        }
        throw lastError ?? S3Error(status: 0, code: "Unreachable", message: "no attempt made", key: key ?? location.bucket)
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

/// Minimal reading of S3's XML: the elements Redoubt needs have no attributes or
/// nesting ambiguity, and keys are restricted to a safe character set.
enum S3XML {
    static func all(_ element: String, in body: [UInt8]) -> [String] {
        let text = String(decoding: body, as: UTF8.self)
        var out: [String] = []
        var rest = text[...]
        let open = "<\(element)>", close = "</\(element)>"
        while let a = rest.range(of: open), let b = rest.range(of: close, range: a.upperBound..<rest.endIndex) {
            out.append(unescape(String(rest[a.upperBound..<b.lowerBound])))
            rest = rest[b.upperBound...]
        }
        return out
    }

    static func first(_ element: String, in body: [UInt8]) -> String? { all(element, in: body).first }

    static func unescape(_ s: String) -> String {
        s.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&amp;", with: "&")
    }
}

/// S3's dates: ISO 8601 with or without fractional seconds.
enum S3Date {
    static func parse(_ s: String) -> Date? {
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

    static func format(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime]
        return f.string(from: d)
    }
}

/// Content-MD5 (base64), which S3 requires on requests that carry lock settings.
func contentMD5(_ body: [UInt8]) -> String { Data(Insecure.MD5.hash(data: body)).base64EncodedString() }

import Crypto
import Foundation

/// AWS credentials: an access key ID, its secret, and an optional session token.
///
/// The secret never prints: `description` names the key ID only, so a credential that
/// reaches a log or an error message gives nothing away.
public struct AWSCredentials: Sendable, CustomStringConvertible {
    /// The public half: safe to log.
    public let accessKeyID: String
    let secretAccessKey: String
    /// A temporary-credential session token (`x-amz-security-token`), if any.
    public let sessionToken: String?

    /// Credentials from their parts. The caller must not keep the secret in argv or logs.
    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        // an empty token is no token (AWS refuses one sent empty)
        self.sessionToken = sessionToken?.isEmpty == true ? nil : sessionToken
    }

    public var description: String { "AWSCredentials(\(accessKeyID), secret redacted)" }
}

/// One HTTP request as SigV4 sees it, before signing.
public struct SigV4Request: Sendable {
    /// `GET`, `PUT`, …
    public var method: String
    /// The path exactly as it goes on the wire, already percent-encoded (`/bucket/a%20b`).
    public var encodedPath: String
    /// Query parameters, not encoded; the signer encodes and sorts them.
    public var query: [(name: String, value: String)]
    /// Headers to sign, including `host`. Names are matched case-insensitively.
    public var headers: [(name: String, value: String)]
    /// Lowercase hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.
    public var payloadHash: String

    public init(
        method: String, encodedPath: String, query: [(name: String, value: String)] = [],
        headers: [(name: String, value: String)], payloadHash: String
    ) {
        self.method = method
        self.encodedPath = encodedPath
        self.query = query
        self.headers = headers
        self.payloadHash = payloadHash
    }

    /// The query string as it must go on the wire: the same encoding the signature covers.
    public var encodedQuery: String { SigV4Signer.canonicalQuery(query) }
}

/// Signs requests with AWS Signature Version 4 (header form).
///
/// The canonical request, string to sign and signing key follow the AWS reference; the
/// known-answer tests use the examples AWS publishes for S3.
public struct SigV4Signer: Sendable {
    public let credentials: AWSCredentials
    public let region: String
    public let service: String

    public init(credentials: AWSCredentials, region: String, service: String) {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// Lowercase hex SHA-256 of `data`, for `x-amz-content-sha256` and the payload hash.
    public static func hexSHA256<D: DataProtocol>(_ data: D) -> String {
        hex(SHA256.hash(data: data))
    }

    /// The empty body's hash.
    public static let emptyPayloadHash =
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    /// The headers to add to `request` so that it carries a valid signature at `date`:
    /// `x-amz-date`, `x-amz-content-sha256` (unless `includeContentHash` is false, as
    /// for services other than S3), `x-amz-security-token` when there is a session token,
    /// and `Authorization`.
    public func sign(_ request: SigV4Request, at date: Date, includeContentHash: Bool = true) -> [(name: String,
        value: String)] {
        let amzDate = Self.amzDate(date)
        let day = String(amzDate.prefix(8))
        var added: [(name: String, value: String)] = [("x-amz-date", amzDate)]
        if includeContentHash { added.append(("x-amz-content-sha256", request.payloadHash)) }
        if let token = credentials.sessionToken { added.append(("x-amz-security-token", token)) }

        var signed = request
        // Headers we add replace any the caller set under the same name.
        let addedNames = Set(added.map { $0.name })
        signed.headers = request.headers.filter { !addedNames.contains($0.name.lowercased()) } + added
        let (canonical, signedHeaders) = canonicalRequest(signed)
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = "AWS4-HMAC-SHA256\n\(amzDate)\n\(scope)\n\(Self.hexSHA256(Data(canonical.utf8)))"
        let signature = Self.hex(HMAC<SHA256>.authenticationCode(for: Data(stringToSign.utf8),
            using: signingKey(day: day)))
        added.append((
            "Authorization",
            """
                AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), \
                Signature=\(signature)
                """
        ))
        return added
    }

    /// The canonical request and the signed-header list, exposed for tests.
    func canonicalRequest(_ request: SigV4Request) -> (String, String) {
        var merged: [String: [String]] = [:]
        for (name, value) in request.headers {
            merged[name.lowercased(), default: []].append(Self.trimHeaderValue(value))
        }
        let names = merged.keys.sorted()
        let canonicalHeaders = names.map { "\($0):\(merged[$0, default: []].joined(separator: ","))\n" }.joined()
        let signedHeaders = names.joined(separator: ";")
        // S3 signs the path as sent; the other services sign it encoded once more.
        let path = request.encodedPath.isEmpty ? "/" : request.encodedPath
        let canonicalPath = service == "s3" ? path : Self.encode(path, keepSlash: true)
        let text = [
            request.method, canonicalPath, Self.canonicalQuery(request.query),
            canonicalHeaders, signedHeaders, request.payloadHash,
        ].joined(separator: "\n")
        return (text, signedHeaders)
    }

    private func signingKey(day: String) -> SymmetricKey {
        func mac(_ key: SymmetricKey, _ text: String) -> SymmetricKey {
            SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Data(text.utf8), using: key)))
        }
        let secret = SymmetricKey(data: Data(("AWS4" + credentials.secretAccessKey).utf8))
        return mac(mac(mac(mac(secret, day), region), service), "aws4_request")
    }

    static func canonicalQuery(_ query: [(name: String, value: String)]) -> String {
        var pairs: [(String, String)] = query.map {
            (encode($0.name, keepSlash: false), encode($0.value, keepSlash: false))
        }
        pairs.sort { (a: (String, String), b: (String, String)) -> Bool in a.0 == b.0 ? a.1 < b.1 : a.0 < b.0 }
        return pairs.map { (pair: (String, String)) -> String in pair.0 + "=" + pair.1 }.joined(separator: "&")
    }

    /// RFC 3986 encoding as SigV4 defines it: unreserved characters stay, everything
    /// else becomes `%XX` with uppercase hex.
    public static func encode(_ text: String, keepSlash: Bool) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"),
                UInt8(ascii: "."), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: "/") where keepSlash:
                out.append("/")
            default:
                out += String(format: "%%%02X", byte)
            }
        }
        return out
    }

    /// An object key as an encoded path segment sequence (`a b/c` → `a%20b/c`).
    public static func encodePath(_ path: String) -> String { encode(path, keepSlash: true) }

    /// The `host` header value an HTTP client sends for `url`, which the signature must
    /// cover byte for byte: an IPv6 address in brackets, and the port only when it is not
    /// the scheme's default (AsyncHTTPClient drops `:443` from `https://h:443`, so signing
    /// `h:443` made every request fail with a signature mismatch).
    public static func hostHeader(for url: URL) -> String {
        var host = url.host ?? ""
        if host.contains(":") && !host.hasPrefix("[") { host = "[\(host)]" }
        let defaultPort = url.scheme?.lowercased() == "http" ? 80 : 443
        if let port = url.port, port != defaultPort { host += ":\(port)" }
        return host
    }

    static func trimHeaderValue(_ value: String) -> String {
        // Leading/trailing spaces go; inner runs of spaces collapse to one.
        value.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
            .trimmingCharacters(in: .whitespaces)
    }

    static func amzDate(_ date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d%02d%02dT%02d%02d%02dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
            Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
    }

    static func hex<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

import Foundation
import RedoubtAWS

/// A bucket copy as a user names it (`s3://BUCKET/PREFIX`, an endpoint URL, a region and
/// where the credentials come from), checked once. The only parser of `s3://` targets: the
/// CLI (`copy …`, `--from`) and the server's copy targets both go through `parse`, so the
/// rules below hold on every path:
/// - the endpoint is `https`; plain `http` only to a loopback address (127.0.0.1, localhost,
///   ::1), because SigV4 signs but does not encrypt: every object and request would be
///   readable on the wire;
/// - the endpoint carries no user, password, query or fragment (secrets live in the
///   credentials file or the AWS environment, never in a URL that is logged and audited);
/// - the bucket is an S3 bucket name and no prefix segment is empty, `.` or `..`.
/// Parsing does no I/O: credentials are read only by `awsCredentials()`.
public struct S3Target: Sendable, Equatable {
    /// Where the access key and secret come from. Only the place is kept, never the secret.
    public enum CredentialsSource: Sendable, Equatable {
        /// An AWS shared-credentials file (`aws_access_key_id`, `aws_secret_access_key`).
        case file(String)
        /// The AWS environment variables of the process.
        case environment
    }

    public let location: S3Location
    public let credentials: CredentialsSource

    /// Hosts to which plain http is allowed (tests and a local gateway); compared lowercased.
    public static let loopbackHosts: Set<String> = ["127.0.0.1", "localhost", "::1"]

    /// Parses `url` (`s3://BUCKET` or `s3://BUCKET/PREFIX`) with `endpoint` and `region`.
    /// Throws `StoreError.config` naming the part at fault and the fix; the error never
    /// repeats anything that could be a secret.
    public static func parse(
        url: String, endpoint: String, region: String, credentialsFile: String? = nil,
        pathStyle: Bool = true
    ) throws(StoreError) -> S3Target {
        let (bucket, prefix) = try parsePath(url)
        let endpointURL = try checkEndpoint(endpoint)
        guard !region.isEmpty, region.count <= 64,
            region.unicodeScalars.allSatisfy({
                CharacterSet.alphanumerics.contains($0) && $0.isASCII || $0 == "-" || $0 == "_"
            })
        else { throw refuse("region \(region.debugDescription) must be a region name such as us-east-1") }
        let source: CredentialsSource
        if let credentialsFile {
            guard !credentialsFile.isEmpty else {
                throw refuse("the credentials file path is empty: name the file or leave it out")
            }
            source = .file(credentialsFile)
        } else {
            source = .environment
        }
        return S3Target(
            location: S3Location(
                endpoint: endpointURL, region: region, bucket: bucket, prefix: prefix, pathStyle: pathStyle),
            credentials: source)
    }

    static func refuse(_ detail: String) -> StoreError { StoreError(.config, key: "copy target", detail) }

    /// The bucket and prefix of `s3://BUCKET/PREFIX` (prefix without leading or trailing `/`,
    /// maybe empty), checked as `parse` checks them; for commands that need no endpoint.
    public static func parsePath(_ url: String) throws(StoreError) -> (bucket: String, prefix: String) {
        guard url.count >= 5, url.prefix(5).lowercased() == "s3://" else {
            throw refuse("\(url.debugDescription) must be s3://BUCKET or s3://BUCKET/PREFIX")
        }
        let rest = url.dropFirst(5)
        let bucket = String(rest.prefix { $0 != "/" })
        try checkBucket(bucket)
        let prefix = String(rest.dropFirst(bucket.count)).trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        if !prefix.isEmpty {
            for segment in prefix.split(separator: "/", omittingEmptySubsequences: false) {
                // Why: a gateway or proxy that normalizes paths would move `..` or `//` keys
                // outside the prefix the admin chose, into another tenant's or the bucket root.
                guard !segment.isEmpty, segment != ".", segment != ".." else {
                    throw refuse(
                        "prefix \(prefix.debugDescription) has an empty, `.` or `..` segment: name the folder plainly, "
                            + "e.g. s3://\(bucket)/redoubt")
                }
                guard segment.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7f && $0 != "\\" }) else {
                    throw refuse("prefix \(prefix.debugDescription) has a control character or a backslash")
                }
            }
        }
        return (bucket, prefix)
    }

    /// S3's bucket naming rules: 3–63 of lowercase letters, digits, `.`, `-` (and `_`, which
    /// older buckets and some S3-compatible servers have), starting and ending alphanumeric.
    static func checkBucket(_ bucket: String) throws(StoreError) {
        guard !bucket.isEmpty else { throw refuse("the bucket is missing: write s3://BUCKET/PREFIX") }
        if bucket.contains(where: \.isUppercase) {
            throw refuse(
                "bucket \(bucket.debugDescription) has capital letters; S3 bucket names are lowercase: "
                    + "s3://\(bucket.lowercased())")
        }
        let allowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyz0123456789.-_")
        guard (3...63).contains(bucket.count), bucket.unicodeScalars.allSatisfy(allowed.contains),
            let first = bucket.unicodeScalars.first, let last = bucket.unicodeScalars.last,
            CharacterSet.alphanumerics.contains(first), CharacterSet.alphanumerics.contains(last)
        else {
            throw refuse(
                "bucket \(bucket.debugDescription) is not an S3 bucket name "
                    + "(3 to 63 lowercase letters, digits, dots and hyphens, "
                    + "starting and ending with a letter or digit)"
            )
        }
    }

    static func checkEndpoint(_ endpoint: String) throws(StoreError) -> URL {
        guard let url = URL(string: endpoint), let scheme = url.scheme?.lowercased(), let rawHost = url.host,
            !rawHost.isEmpty
        else {
            throw refuse("the endpoint must be a URL such as https://s3.eu-west-1.amazonaws.com")
        }
        let host = rawHost.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        let shown = "\(scheme)://\(rawHost)\(url.port.map { ":\($0)" } ?? "")"
        // Why: the endpoint is stored in the catalog, audited and printed; a secret in it would leak.
        guard url.user == nil, url.password == nil else {
            throw refuse("the endpoint \(shown) carries a user or password: put the keys in a credentials file instead")
        }
        guard url.query == nil, url.fragment == nil else {
            throw refuse("the endpoint \(shown) has a query or fragment: give only scheme, host, port and path")
        }
        switch scheme {
        case "https": break
        case "http":
            // Why: SigV4 signs but does not encrypt; plain http would show every object and
            // request on the wire. Loopback is for tests and a gateway on the same host only.
            guard loopbackHosts.contains(host) else {
                throw refuse(
                    "plain http to \(shown) is refused: "
                        + "only a loopback address (127.0.0.1, localhost, ::1) may use http; "
                        + "use https (with the private CA's certificate if the endpoint has one)")
            }
        default:
            throw refuse("the endpoint \(shown) must be https (or http to a loopback address)")
        }
        return url
    }

    /// The target for logs, errors, audit records and status: bucket, prefix, endpoint and
    /// where the credentials come from. Never a key or secret (the endpoint cannot hold one).
    public var redacted: String {
        let e = location.endpoint
        let endpoint = "\(e.scheme?.lowercased() ?? "?")://\(e.host ?? "?")\(e.port.map { ":\($0)" } ?? "")\(e.path)"
        let creds: String
        switch credentials {
        case .file(let path): creds = "credentials file \(path)"
        case .environment: creds = "credentials from the AWS environment"
        }
        return "s3://\(location.bucket)/\(location.prefix) at \(endpoint) (region \(location.region), \(creds))"
    }

    /// Reads the credentials now (they are never kept with the target).
    public func awsCredentials(environment: [String: String] = ProcessInfo.processInfo.environment) throws
        -> AWSCredentials
    {
        switch credentials {
        case .file(let path): try AWSCredentials.file(path)
        case .environment: try AWSCredentials.standard(environment: environment)
        }
    }

    /// The store at this target, signing with credentials read now.
    public func store(transport: (any S3Transport)? = nil) throws -> S3Store {
        S3Store(client: S3Client(location: location, credentials: try awsCredentials(), transport: transport))
    }
}

import AsyncHTTPClient
import Foundation
import NIOCore
import RedoubtAWS
import RedoubtCore

/// Wraps the read key with a KEK held by AWS KMS (or a KMS speaking its JSON API): the
/// KMS's own Encrypt and Decrypt, bound to an encryption context that names the tenant
/// and key version, so the KEK never leaves the KMS.
///
/// URI: `awskms://REGION/KEY-ID[?endpoint=URL]`. `KEY-ID` is a key ID, a key ARN or
/// `alias/NAME`; `new` makes ``preparingKEK(tenant:)`` create one. The endpoint defaults
/// to `https://kms.REGION.amazonaws.com`; plain `http` is accepted only for a KMS on
/// loopback (a test KMS). Credentials come from `AWS_ACCESS_KEY_ID`/
/// `AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN` or the shared credentials file, read when
/// the KMS is first needed (backups never need it); they never appear in the URI.
///
/// Encryption context (docs/FORMAT.md §7.1): `{"redoubt-tenant": TENANT,
/// "redoubt-key-version": "N"}` with N in decimal.
public struct AWSKMSKeyProvider: KeyProvider {
    public let region: String
    /// The key as the URI names it (key ID, ARN, `alias/…`, or `new`).
    public let keyID: String
    /// The `?endpoint=` override, if any.
    public let endpointOverride: URL?
    /// Explicit credentials; nil reads the standard chain at each call.
    let credentials: AWSCredentials?
    let http: HTTPClient
    /// Seconds to wait for one KMS answer.
    public var timeoutSeconds: Int64 = 30

    public var uri: String {
        var s = "awskms://\(region)/\(keyID)"
        if let e = endpointOverride {
            let allowed = CharacterSet.urlQueryAllowed.subtracting(CharacterSet(charactersIn: "&=?"))
            let endpoint = e.absoluteString
            s += "?endpoint=" + (endpoint.addingPercentEncoding(withAllowedCharacters: allowed) ?? endpoint)
        }
        return s
    }

    /// A provider for `keyID` in `region`. `credentials` nil means the standard AWS chain.
    public init(region: String, keyID: String, endpoint: URL? = nil, credentials: AWSCredentials? = nil,
        http: HTTPClient = AWSKMSKeyProvider.defaultHTTPClient) throws(KeyProviderError) {
        // Why: the region goes into a host name and the signature scope; refuse anything odd.
        guard !region.isEmpty, region.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }) else {
            throw .malformed("""
                AWS KMS provider URI: region \(region.debugDescription) is not a region name like us-east-1: \
                awskms://REGION/KEY-ID
                """)
        }
        guard !keyID.isEmpty, keyID.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else {
            throw .malformed("AWS KMS provider URI needs a key ID, key ARN, alias/NAME or new: awskms://REGION/KEY-ID")
        }
        if let endpoint {
            let scheme = endpoint.scheme?.lowercased()
            let host = endpoint.host?.lowercased() ?? ""
            guard scheme == "https" || scheme == "http", !host.isEmpty else {
                throw .malformed("AWS KMS endpoint \(endpoint.absoluteString.debugDescription) is not an https:// URL")
            }
            // Why: over plain http anyone on the path sees the plaintext read-key seed in
            // Encrypt and Decrypt; only a KMS on this machine may be spoken to that way.
            guard scheme == "https" || ["127.0.0.1", "localhost", "::1", "[::1]"].contains(host) else {
                throw .malformed("""
                    AWS KMS endpoint \(endpoint.absoluteString) uses http://, which is allowed only for 127.0.0.1 or \
                    localhost (a test KMS): use https://
                    """)
            }
        }
        self.region = region
        self.keyID = keyID
        self.endpointOverride = endpoint
        self.credentials = credentials
        self.http = http
    }

    /// Parses an `awskms://` URI. `credentials` nil means the standard AWS chain.
    public init(uri: String, credentials: AWSCredentials? = nil,
        http: HTTPClient = AWSKMSKeyProvider.defaultHTTPClient) throws(KeyProviderError) {
        guard uri.hasPrefix("awskms://") else { throw .unknownProvider(uri) }
        guard isWellFormedProviderURI(uri) else {
            throw .malformed("\(uri.debugDescription): not a well-formed awskms:// URI (printable ASCII, no '#')")
        }
        var rest = Substring(uri.dropFirst("awskms://".count))
        var endpoint: URL? = nil
        if let q = rest.firstIndex(of: "?") {
            let query = URLComponents(string: "x:?" + rest[rest.index(after: q)...])?.queryItems ?? []
            for item in query {
                guard item.name == "endpoint", let value = item.value, let url = URL(string: value) else {
                    throw .malformed("""
                        AWS KMS provider URI: unknown or empty parameter \(item.name.debugDescription); only \
                        ?endpoint=URL is known
                        """)
                }
                endpoint = url
            }
            rest = rest[..<q]
        }
        guard let slash = rest.firstIndex(of: "/") else {
            throw .malformed("AWS KMS provider URI needs a region and a key: awskms://REGION/KEY-ID[?endpoint=URL]")
        }
        try self.init(region: String(rest[..<slash]), keyID: String(rest[rest.index(after: slash)...]),
                      endpoint: endpoint, credentials: credentials, http: http)
    }

    /// The encryption context every wrap and unwrap sends (docs/FORMAT.md §7.1).
    public static func encryptionContext(_ context: KeyContext) -> [String: String] {
        ["redoubt-tenant": context.tenant, "redoubt-key-version": String(context.keyVersion)]
    }

    // MARK: KeyProvider

    public func wrap(_ key: ReadPrivateKey, context: KeyContext) async throws -> WrappedReadKey {
        guard keyID != "new" else {
            throw KeyProviderError.malformed("""
                AWS KMS provider \(uri) names no key yet: create the tenant with it (…/new creates the key) or name a \
                key ID
                """)
        }
        var seed = key.exportSeed().withUnsafeBytes { Array($0) }
        defer { zero(&seed) }
        // The base64 text and JSON body are Strings we cannot wipe; the byte arrays we own
        // are zeroed (best effort, like every managed-memory client).
        let plaintext = Data(seed).base64EncodedString()
        let answer = try await call("Encrypt", [
            "KeyId": keyID, "Plaintext": plaintext, "EncryptionContext": Self.encryptionContext(context),
        ], key: keyID)
        guard let blob = answer["CiphertextBlob"] as? String, let sealed = Data(base64Encoded: blob), !sealed.isEmpty,
            let kek = answer["KeyId"] as? String, !kek.isEmpty
        else {
            throw KeyProviderError.kmsProtocol(provider: uri, detail: "Encrypt answer lacks CiphertextBlob or KeyId")
        }
        return WrappedReadKey(
            provider: uri, context: context, publicKey: key.publicKey,
            parameters: ["awskms-key-id": kek, "awskms-region": region, "algorithm": "SYMMETRIC_DEFAULT"],
            wrapped: Array(sealed))
    }

    public func unwrap(_ wrapped: WrappedReadKey, context: KeyContext) async throws -> ReadPrivateKey {
        try checkContext(wrapped, context)
        // The wrapped key names the KEK that sealed it; rotation may have moved on since.
        let kek = wrapped.parameters["awskms-key-id"] ?? keyID
        let kms = try self.inRegion(wrapped.parameters["awskms-region"] ?? region)
        let answer = try await kms.call("Decrypt", [
            "KeyId": kek, "CiphertextBlob": Data(try wrapped.wrappedBytes()).base64EncodedString(),
            "EncryptionContext": Self.encryptionContext(context),
        ], key: kek)
        guard var plain = (answer["Plaintext"] as? String).flatMap({ Data(base64Encoded: $0) }) else {
            throw KeyProviderError.kmsProtocol(provider: uri, detail: "Decrypt answer lacks Plaintext")
        }
        defer { plain.resetBytes(in: plain.startIndex..<plain.endIndex) }
        guard plain.count == 32 else {
            throw KeyProviderError.keyMismatch(provider: uri, readKeyID: wrapped.readKeyID)
        }
        let key = try ReadPrivateKey(seed: SecretBytes(copying: plain))
        return try checkUnwrapped(key, wrapped)
    }

    /// `awskms://REGION/new` creates the tenant's KEK now: a symmetric encrypt/decrypt key
    /// described and tagged with the tenant's name.
    public func preparingKEK(tenant: String) async throws -> any KeyProvider {
        guard keyID == "new" else { return self }
        let answer = try await call("CreateKey", [
            "KeySpec": "SYMMETRIC_DEFAULT", "KeyUsage": "ENCRYPT_DECRYPT",
            "Description": "Redoubt key-encryption key for tenant \(tenant)",
            "Tags": [["TagKey": "redoubt-tenant", "TagValue": tenant]],
        ], key: nil)
        guard let meta = answer["KeyMetadata"] as? [String: Any], let id = meta["KeyId"] as? String, !id.isEmpty else {
            throw KeyProviderError.kmsProtocol(provider: uri, detail: "CreateKey answer lacks KeyMetadata.KeyId")
        }
        return try AWSKMSKeyProvider(region: region, keyID: id, endpoint: endpointOverride, credentials: credentials,
            http: http)
    }

    /// Crypto-shreds the KEK that wrapped `wrapped`: ScheduleKeyDeletion with AWS's
    /// shortest window (7 days); from now on the KMS refuses every use of it. A key already
    /// pending deletion counts as done. A key the KMS does not know is an error, since it
    /// may be a wrong region or account rather than a deleted key.
    public func destroyKEK(of wrapped: WrappedReadKey) async throws {
        let kek = wrapped.parameters["awskms-key-id"] ?? keyID
        let kms = try self.inRegion(wrapped.parameters["awskms-region"] ?? region)
        _ = try await kms.call("ScheduleKeyDeletion", ["KeyId": kek, "PendingWindowInDays": 7], key: kek,
                               pendingDeletionIsDone: true)
    }

    /// Checks the KEK's `redoubt-tenant` tag at the KMS: `awskms://…/new` tags each KEK it
    /// creates with its tenant. A key pending deletion passes (nothing left to destroy); a key
    /// the KMS does not know fails, as in ``destroyKEK(of:)``.
    public func checkKEKOwner(of wrapped: WrappedReadKey, tenant: String) async throws {
        let kek = wrapped.parameters["awskms-key-id"] ?? keyID
        let kms = try self.inRegion(wrapped.parameters["awskms-region"] ?? region)
        let described = try await kms.call("DescribeKey", ["KeyId": kek], key: kek)
        if let meta = described["KeyMetadata"] as? [String: Any], meta["KeyState"] as? String == "PendingDeletion" {
            return
        }
        let answer = try await kms.call("ListResourceTags", ["KeyId": kek, "Limit": 50], key: kek)
        let tags = (answer["Tags"] as? [[String: Any]] ?? []).compactMap { t -> (String, String)? in
            guard let k = t["TagKey"] as? String, let v = t["TagValue"] as? String else { return nil }
            return (k, v)
        }
        let owners = tags.filter { $0.0 == "redoubt-tenant" }.map(\.1)
        guard owners == [tenant] else {
            let tagged = owners.isEmpty
                ? "with no redoubt-tenant tag" : "redoubt-tenant=\(owners.joined(separator: ","))"
            throw KeyProviderError.foreignKEK(provider: kms.uri,
                detail: "key \(kek) is tagged \(tagged), not redoubt-tenant=\(tenant) as the KEKs Redoubt creates "
                    + "for tenant \(tenant) are. Nothing was destroyed. If it really is this tenant's (a key "
                    + "adopted at tenant creation), tag it (aws kms tag-resource --key-id \(kek) "
                    + "--tags TagKey=redoubt-tenant,TagValue=\(tenant)) and repeat")
        }
    }

    // MARK: The JSON API

    /// The process-wide client for KMS calls. Unlike `HTTPClient.shared` it does not keep
    /// re-trying a refused connection until the request's deadline: a KMS that is down is
    /// reported after ``call(_:_:key:)``'s own few attempts, within seconds. It lives for
    /// the whole process and is never shut down.
    public static let defaultHTTPClient: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(10))
        configuration.connectionPool.retryConnectionEstablishment = false
        // Why: a redirect would carry Encrypt's plaintext (the read key's seed) and the
        // session token to another host, possibly over http.
        configuration.redirectConfiguration = .disallow
        return HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
    }()

    func inRegion(_ other: String) throws(KeyProviderError) -> AWSKMSKeyProvider {
        other == region ? self : try AWSKMSKeyProvider(region: other, keyID: keyID, endpoint: endpointOverride,
            credentials: credentials, http: http)
    }

    var endpoint: URL {
        endpointOverride ?? URL(string: "https://kms.\(region).amazonaws.com/")!  // region is checked to be [a-z0-9-]+
    }

    /// Sends one `TrentService.<operation>` request and returns the decoded answer, or
    /// throws the ``KeyProviderError`` its `__type` maps to. `key` names the key in messages.
    /// Retries only failures that happened before the KMS could act (connect errors) and
    /// throttling / 5xx answers, twice.
    /// With `pendingDeletionIsDone`, a key the KMS reports as pending deletion answers as
    /// an empty success, decided on the KMS's own error type rather than on words.
    func call(_ operation: String, _ body: [String: Any], key: String?,
              pendingDeletionIsDone: Bool = false) async throws(KeyProviderError) -> [String: Any] {
        let credentials: AWSCredentials
        if let c = self.credentials { credentials = c } else {
            do { credentials = try AWSCredentials.standard() } catch {
                // Why: the message names the variables and file, never a value.
                throw .secretMissing(provider: uri, how: "\(error)")
            }
        }
        var payload: [UInt8]
        do { payload = Array(try JSONSerialization.data(withJSONObject: body)) } catch {
            throw .kmsProtocol(provider: uri, detail: "cannot encode the \(operation) request")
        }
        defer { zero(&payload) }
        let url = endpoint
        var lastFailure: KeyProviderError = .unreachable(provider: uri, detail: "no attempt made")
        for attempt in 0..<3 {
            if attempt > 0 {
                do { try await Task.sleep(for: .milliseconds(300 * attempt)) } catch {
                    throw .unreachable(provider: uri, detail: "cancelled")
                }
            }
            let signed = signedRequest(operation, payload: payload, credentials: credentials, at: Date())
            var http = HTTPClientRequest(url: signed.url)
            http.method = .POST
            // AsyncHTTPClient writes the same Host header the signature covers.
            for (n, v) in signed.headers where n != "host" { http.headers.add(name: n, value: v) }
            http.body = .bytes(ByteBuffer(bytes: payload))
            let status: Int
            var answer: [UInt8]
            do {
                let response = try await self.http.execute(http, timeout: .seconds(timeoutSeconds))
                status = Int(response.status.code)
                answer = Array(try await response.body.collect(upTo: 1 << 20).readableBytesView)
            } catch {
                let timedOut = (error as? HTTPClientError).map {
                    $0 == .deadlineExceeded || $0 == .readTimeout
                } ?? false
                // Why: no answer means the KMS may be down or firewalled; backups go on
                // without it, and only restores and key changes wait for it.
                lastFailure = .unreachable(provider: uri,
                    detail: """
                        cannot reach \(url.absoluteString) (\(Self.describe(error))): check the region, the endpoint \
                        and this host's network; backups continue meanwhile
                        """)
                // A request that timed out may still be at work in the KMS: do not pile on.
                if timedOut { throw lastFailure }
                continue
            }
            defer { zero(&answer) }
            let decoded = (try? JSONSerialization.jsonObject(with: Data(answer))) as? [String: Any]
            if (200..<300).contains(status) {
                guard let decoded else {
                    throw .kmsProtocol(provider: uri,
                        detail: "\(operation) answer (HTTP \(status)) is not a JSON object")
                }
                return decoded
            }
            if pendingDeletionIsDone && Self.isPendingDeletion(decoded) { return [:] }
            let error = Self.classify(status: status, body: decoded, operation: operation, key: key, provider: uri,
                endpoint: url)
            if status >= 500 || status == 429
                || (decoded?["__type"] as? String)?.hasSuffix("ThrottlingException") == true {
                lastFailure = error
                continue
            }
            throw error
        }
        throw lastFailure
    }

    /// The URL and headers (with `host`, which the HTTP client sets itself) of one
    /// `TrentService.<operation>` POST carrying `payload`, signed with SigV4 for `kms`.
    func signedRequest(_ operation: String, payload: [UInt8], credentials: AWSCredentials,
        at date: Date) -> (url: String, headers: [(name: String, value: String)]) {
        let url = endpoint
        let host = SigV4Signer.hostHeader(for: url)
        let path = url.path.isEmpty ? "/" : url.path
        let headers: [(name: String, value: String)] = [
            ("host", host), ("content-type", "application/x-amz-json-1.1"), ("x-amz-target",
                "TrentService.\(operation)"),
        ]
        let request = SigV4Request(method: "POST", encodedPath: path, headers: headers,
            payloadHash: SigV4Signer.hexSHA256(payload))
        let signer = SigV4Signer(credentials: credentials, region: region, service: "kms")
        return ("\(url.scheme ?? "https")://\(host)\(path)", headers + signer.sign(request, at: date,
            includeContentHash: false))
    }

    /// Whether a KMS error answer says the key is pending deletion.
    static func isPendingDeletion(_ body: [String: Any]?) -> Bool {
        let rawType = body?["__type"] as? String ?? ""
        let type = rawType.split(separator: "#").last.map(String.init) ?? rawType
        let message = (body?["message"] as? String) ?? (body?["Message"] as? String) ?? ""
        return type == "KMSInvalidStateException" && Self.saysPendingDeletion(message)
    }

    /// AWS says a key is pending deletion only in the message of KMSInvalidStateException.
    static func saysPendingDeletion(_ message: String) -> Bool {
        message.lowercased().contains("pending deletion") || message.contains("PendingDeletion")
    }

    /// Maps a KMS error answer to a ``KeyProviderError``.
    static func classify(status: Int, body: [String: Any]?, operation: String, key: String?, provider: String,
        endpoint: URL) -> KeyProviderError {
        // AWS sends `__type` as `NotFoundException` or `com.amazonaws.kms#NotFoundException`.
        let rawType = body?["__type"] as? String ?? ""
        let type = rawType.split(separator: "#").last.map(String.init) ?? rawType
        let message = (body?["message"] as? String) ?? (body?["Message"] as? String) ?? ""
        let what = key.map { "key \($0)" } ?? "the KMS"
        let said = message.isEmpty ? type : "\(type): \(message)"
        switch type {
        case "DisabledException":
            return .keyDisabled(provider: provider,
                detail: """
                    \(what) is disabled (\(said)); enable it (aws kms enable-key) to restore. Backups continue \
                    meanwhile
                    """)
        case "KMSInvalidStateException":
            if Self.saysPendingDeletion(message) {
                return .keyDestroyed(provider: provider,
                    detail: """
                        \(what) is pending deletion (\(said)); cancel the deletion (aws kms cancel-key-deletion) \
                        within its waiting period, or the wrapped copies under it are lost
                        """)
            }
            return .keyDisabled(provider: provider, detail: "\(what) is not usable in its present state (\(said))")
        case "NotFoundException":
            return .keyDestroyed(provider: provider,
                detail: """
                    \(what) does not exist in this account and region (\(said)); check the region and credentials, or \
                    the key was deleted
                    """)
        case "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException", "IncompleteSignature",
            "IncompleteSignatureException", "ExpiredTokenException", "InvalidClientTokenId",
                "MissingAuthenticationToken", "SignatureDoesNotMatch":
            return .credentialRejected(provider: provider,
                detail: """
                    \(operation) on \(what) refused (\(said)); check AWS_ACCESS_KEY_ID / the credentials file, the \
                    system clock, and that the key policy allows kms:\(operation)
                    """)
        case "InvalidCiphertextException", "IncorrectKeyException":
            // Why: the KMS authenticates the ciphertext and the context; refusing it means
            // the stored bytes, the context or the named key were changed.
            return .wrongSecret(provider: provider)
        case "":
            return .kmsProtocol(provider: provider,
                detail: "\(operation) got HTTP \(status) from \(endpoint.absoluteString) without a KMS error type")
        default:
            return .kmsProtocol(provider: provider, detail: "\(operation) on \(what) failed: HTTP \(status) \(said)")
        }
    }

    static func describe(_ error: any Error) -> String {
        if let e = error as? HTTPClientError { return "\(e)" }
        return String(describing: error)
    }
}

private func zero(_ bytes: inout [UInt8]) {
    for i in bytes.indices { bytes[i] = 0 }
}

import Foundation
import RedoubtCore

/// Every bound on what one request, connection or caller may spend on this server: time,
/// connections, bytes, catalog rows and audit records. One value, read at start from
/// `server.json` (key `limits`) and `--limit NAME=VALUE` flags; defaults and errors are
/// the table in docs/PROTOCOL.md §3.2. Every limit is above zero; none can be switched off.
public struct ServerLimits: Codable, Sendable, Equatable {
    /// A connection with no complete TLS handshake, request head or body progress for this
    /// long is closed; so is an idle keep-alive connection, and one that takes less than a
    /// piece of a pack answer (``streamedPieceSize``) in this time. Above the client's own
    /// pool timeout (`APIClient.defaultPoolIdleSeconds`, 20 s), so the server does not close a
    /// connection the client is reusing.
    public var idleTimeoutSeconds: Double = 90
    /// The TLS handshake must finish this soon after the connection is accepted.
    public var handshakeTimeoutSeconds: Double = 10
    /// Open connections from one source address (closed at accept beyond it); hosts behind
    /// one NAT share it, at up to 8 connections each.
    public var maxConnectionsPerSource: Int = 256
    /// Open connections presenting one client certificate (503 beyond it).
    public var maxConnectionsPerCredential: Int = 32
    /// Open connections in all.
    public var maxConnections: Int = 4096
    /// Bytes of a request's header fields together, and of any one field.
    public var maxHeaderBytes: Int = 16 << 10
    /// Bytes of a request's path and query.
    public var maxURIBytes: Int = 4096
    /// Body of `PUT /v1/packs/ID`.
    public var maxPackBytes: Int = 512 << 20
    /// Body of `POST /v1/snapshots` (a manifest).
    public var maxManifestBytes: Int = 64 << 20
    /// Body of every other request (JSON, chunk queries).
    public var maxRequestBytes: Int = 4 << 20
    /// Backed-up paths a manifest may name, and their bytes together.
    public var maxManifestPaths: Int = 1024
    public var maxManifestPathBytes: Int = 256 << 10
    /// Tags a manifest may carry, and bytes of each.
    public var maxManifestTags: Int = 64
    public var maxTagBytes: Int = 256
    /// Paths a snapshot listing shows per snapshot (the full count is always given).
    public var listedPathsPerSnapshot: Int = 16
    /// Chunk IDs one pack may declare (the format's own bound is 2^20).
    public var maxChunksPerPack: Int = 1 << 20
    /// Chunk-index rows written per catalog transaction, so one large pack does not hold
    /// the catalog's write lock for long.
    public var chunkInsertBatch: Int = 4096
    /// Audit records for refused anonymous requests: at most one per source per this many
    /// seconds, carrying the count of refusals it stands for.
    public var anonymousAuditWindowSeconds: Double = 60
    /// Bytes of an audit record's object and detail fields.
    public var maxAuditFieldBytes: Int = 512
    /// The slowest a request body may arrive, in bytes per second averaged over each
    /// `bodyRateWindowSeconds` once `bodyRateGraceSeconds` have passed (§3.2.1). Low enough
    /// for any real link shared by a host's parallel uploads; a 32 MiB pack at the floor
    /// still takes nine hours.
    public var minBodyBytesPerSecond: Int = 1024
    public var bodyRateWindowSeconds: Double = 30
    public var bodyRateGraceSeconds: Double = 10

    public init() {}

    /// The names `--limit NAME=VALUE` accepts, with how to read each (docs/PROTOCOL.md §3.2).
    static var settable: [(name: String, path: WritableKeyPath<ServerLimits, Int>?,
        seconds: WritableKeyPath<ServerLimits, Double>?,
                           size: Bool)] { [
        ("idle-timeout", nil, \.idleTimeoutSeconds, false),
        ("handshake-timeout", nil, \.handshakeTimeoutSeconds, false),
        ("connections-per-source", \.maxConnectionsPerSource, nil, false),
        ("connections-per-credential", \.maxConnectionsPerCredential, nil, false),
        ("connections", \.maxConnections, nil, false),
        ("header-size", \.maxHeaderBytes, nil, true),
        ("uri-size", \.maxURIBytes, nil, true),
        ("pack-size", \.maxPackBytes, nil, true),
        ("manifest-size", \.maxManifestBytes, nil, true),
        ("request-size", \.maxRequestBytes, nil, true),
        ("manifest-paths", \.maxManifestPaths, nil, false),
        ("manifest-path-bytes", \.maxManifestPathBytes, nil, true),
        ("manifest-tags", \.maxManifestTags, nil, false),
        ("tag-size", \.maxTagBytes, nil, true),
        ("listed-paths", \.listedPathsPerSnapshot, nil, false),
        ("chunks-per-pack", \.maxChunksPerPack, nil, false),
        ("chunk-insert-batch", \.chunkInsertBatch, nil, false),
        ("anonymous-audit-window", nil, \.anonymousAuditWindowSeconds, false),
        ("audit-field-size", \.maxAuditFieldBytes, nil, true),
        ("body-rate-floor", \.minBodyBytesPerSecond, nil, true),
        ("body-rate-window", nil, \.bodyRateWindowSeconds, false),
        ("body-rate-grace", nil, \.bodyRateGraceSeconds, false),
    ] }

    /// Applies `NAME=VALUE` settings (sizes take K/M/G suffixes, times s/m/h). Throws a
    /// `ServerError` naming the setting and the accepted names on anything else.
    public func applying(_ settings: [String]) throws -> ServerLimits {
        var out = self
        for s in settings {
            let parts = s.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let entry = Self.settable.first(where: { $0.name == parts[0] }) else {
                throw ServerError.badRequest("--limit \(s.debugDescription): expected NAME=VALUE with NAME one of "
                                             + Self.settable.map(\.name).joined(separator: ", "))
            }
            if let kp = entry.seconds {
                guard let v = Self.parseSeconds(parts[1]), v > 0 else {
                    throw ServerError.badRequest("""
                        --limit \(entry.name)=\(parts[1]): expected a time above zero such as 30s, 5m or 1h
                        """)
                }
                out[keyPath: kp] = v
            } else if let kp = entry.path {
                guard let v = entry.size ? Self.parseSize(parts[1]) : Int(parts[1]), v > 0 else {
                    throw ServerError.badRequest("--limit \(entry.name)=\(parts[1]): expected "
                                                 + (entry.size ? """
                                                     a size above zero such as 512K, 64M or 1G
                                                     """ : "a whole number above zero"))
                }
                out[keyPath: kp] = v
            }
        }
        guard out.maxChunksPerPack <= 1 << 20 else {
            throw ServerError.badRequest("""
                --limit chunks-per-pack=\(out.maxChunksPerPack): the pack format allows at most 1048576
                """)
        }
        return out
    }

    /// `512`, `64K`, `16M`, `2G`, `1T` (powers of 1024; `KiB` etc. accepted too).
    public static func parseSize(_ s: String) -> Int? {
        var t = s.trimmingCharacters(in: .whitespaces).uppercased()
        if t.hasSuffix("IB") { t.removeLast(2) } else if t.hasSuffix("B") { t.removeLast() }
        let shift: Int
        switch t.last {
        case "K": shift = 10
        case "M": shift = 20
        case "G": shift = 30
        case "T": shift = 40
        default: shift = 0
        }
        if shift > 0 { t.removeLast() }
        guard let n = Int(t), n >= 0, n <= Int.max >> shift else { return nil }
        return n << shift
    }

    static func parseSeconds(_ s: String) -> Double? {
        var t = s.trimmingCharacters(in: .whitespaces).lowercased()
        var unit = 1.0
        switch t.last {
        case "s": t.removeLast()
        case "m": unit = 60; t.removeLast()
        case "h": unit = 3600; t.removeLast()
        default: break
        }
        return Double(t).map { $0 * unit }
    }

    /// The body limit of a request, by method and path: packs and manifests have their
    /// own; everything else is small JSON or a chunk query.
    func bodyLimit(method: String, path: String) -> Int {
        if method == "PUT" && path.hasPrefix("/v1/packs/") { return maxPackBytes }
        if method == "POST" && (path == "/v1/snapshots" || path == "/v1/snapshots/") { return maxManifestBytes }
        return maxRequestBytes
    }

    /// The manifest bounds the server parses commits with.
    var manifestBounds: ManifestBounds {
        ManifestBounds(maxPaths: maxManifestPaths, maxPathBytes: maxManifestPathBytes, maxTags: maxManifestTags,
            maxTagBytes: maxTagBytes)
    }

    /// A commit refused for a manifest over one of these bounds.
    func manifestTooLarge(_ e: CoreError) -> ServerError {
        ServerError(413, "E_TOO_LARGE",
            "commit refused: \(e.description) (server limits manifest-paths=\(maxManifestPaths), "
                    + """
                        manifest-path-bytes=\(maxManifestPathBytes), manifest-tags=\(maxManifestTags), \
                        tag-size=\(maxTagBytes); 
                        """
                    + """
                        back up fewer top-level paths per snapshot, or ask the operator to raise the limit; \
                        docs/PROTOCOL.md §3.2)
                        """)
    }

    // Settings files written before limits existed, or naming only some: every limit not
    // named keeps its default.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func d<T: Decodable>(_ k: CodingKeys, _ v: inout T) throws {
            if let x = try c.decodeIfPresent(T.self, forKey: k) { v = x }
        }
        try d(.idleTimeoutSeconds, &idleTimeoutSeconds)
        try d(.handshakeTimeoutSeconds, &handshakeTimeoutSeconds)
        try d(.maxConnectionsPerSource, &maxConnectionsPerSource)
        try d(.maxConnectionsPerCredential, &maxConnectionsPerCredential)
        try d(.maxConnections, &maxConnections)
        try d(.maxHeaderBytes, &maxHeaderBytes)
        try d(.maxURIBytes, &maxURIBytes)
        try d(.maxPackBytes, &maxPackBytes)
        try d(.maxManifestBytes, &maxManifestBytes)
        try d(.maxRequestBytes, &maxRequestBytes)
        try d(.maxManifestPaths, &maxManifestPaths)
        try d(.maxManifestPathBytes, &maxManifestPathBytes)
        try d(.maxManifestTags, &maxManifestTags)
        try d(.maxTagBytes, &maxTagBytes)
        try d(.listedPathsPerSnapshot, &listedPathsPerSnapshot)
        try d(.maxChunksPerPack, &maxChunksPerPack)
        try d(.chunkInsertBatch, &chunkInsertBatch)
        try d(.anonymousAuditWindowSeconds, &anonymousAuditWindowSeconds)
        try d(.maxAuditFieldBytes, &maxAuditFieldBytes)
        try d(.minBodyBytesPerSecond, &minBodyBytesPerSecond)
        try d(.bodyRateWindowSeconds, &bodyRateWindowSeconds)
        try d(.bodyRateGraceSeconds, &bodyRateGraceSeconds)
    }
}

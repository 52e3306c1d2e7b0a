/// The `redoubt` command's exit codes: the one table README.md "Exit codes" and
/// `redoubt --help` are made from (a test holds README to it). Raw values are stable:
/// scripts depend on them.
public enum ExitCategory: Int32, Sendable, CaseIterable {
    case ok = 0
    case failure = 1
    case usage = 2
    case notFound = 3
    /// The server refused the credential (401/403).
    case refused = 4
    /// Stored bytes failed a check: tampered, truncated or corrupt, or missing.
    case integrity = 5
    /// The read key could not be unwrapped (wrong passphrase, key provider failure).
    case key = 6
    /// The server could not be reached.
    case unreachable = 7
    /// Finished, but with warnings (files skipped or changed while read) or damage found.
    case partial = 8
    /// The KMS or HSM that holds the tenant's KEK could not be reached.
    case kmsUnreachable = 9
    /// The KEK is disabled or revoked at the KMS.
    case keyDisabled = 10
    /// The KEK is destroyed (crypto-shredded) or scheduled for deletion.
    case keyDestroyed = 11
    /// The KMS or HSM refused this client's credential (certificate, PIN, access key).
    case kmsCredentialRejected = 12
    /// The change needs other admins' approval: a request was filed (or is still pending).
    case approvalRequired = 13

    /// The one-line meaning, word for word as in README.md's table.
    public var meaning: String {
        switch self {
        case .ok: "success"
        case .failure: "failure (the message names the object and the fix)"
        case .usage: "usage error, or an unreadable token or credential file (the message names it and the fix)"
        case .notFound: "not found (snapshot, tenant, configuration)"
        case .refused: "refused by the server (credential not allowed)"
        case .integrity: "integrity failure: stored bytes were modified, truncated or are missing"
        case .key: "the read key cannot be unwrapped (wrong passphrase, key provider failure)"
        case .unreachable: "the server cannot be reached"
        case .partial: "finished with warnings (files changed while read, entries skipped)"
        case .kmsUnreachable: "the KMS or HSM holding the tenant's KEK cannot be reached (backups are unaffected)"
        case .keyDisabled: "the KEK is disabled or revoked at the KMS: reactivate it, or restore from an escrowed copy"
        case .keyDestroyed: "the KEK is destroyed: the tenant was crypto-shredded; only an escrowed copy can restore"
        case .kmsCredentialRejected: "the KMS refused this client's credential (certificate, PIN, access key)"
        case .approvalRequired:
            """
                the change needs other admins' approval: a request was filed or is still pending (`redoubt admin \
                request list`)
                """
        }
    }

    /// The exit-code section of `redoubt --help`, one line per code.
    public static var helpText: String {
        "Exit codes:\n" + allCases.map { "  \($0.rawValue)\($0.rawValue < 10 ? " " : "")  \($0.meaning)" }
            .joined(separator: "\n")
    }

    /// The category of any error: a ``RedoubtError``'s own, else `.failure`.
    public static func of(_ error: any Error) -> ExitCategory {
        (error as? any RedoubtError)?.exitCategory ?? .failure
    }

    /// The category of an HTTP answer's status and stable code, shared by the server's
    /// error and the client's view of it so that both exit alike.
    public static func ofHTTP(status: Int, code: String) -> ExitCategory {
        if code == "E_APPROVAL_REQUIRED" || code == "E_APPROVAL_PENDING" { return .approvalRequired }
        if status == 0 && code == "E_CONNECT" { return .unreachable }
        // A garbled token or local credential file is the user's input to fix, not damage
        // to stored bytes (5) nor a refusal by the server (4).
        if status == 0 && (code == "E_TOKEN" || code == "E_CREDENTIAL") { return .usage }
        switch status {
        case 401, 403: return .refused
        case 404: return .notFound
        case 422: return .integrity
        default: return .failure
        }
    }
}

/// The shape every module's public error has: a stable code, a message that names the
/// object and the fix (`description`), the cause where one is kept, and the exit category
/// the CLI leaves with. The CLI maps errors only through this protocol, so a new error
/// type cannot fall through to a wrong exit code unnoticed.
public protocol RedoubtError: Error, CustomStringConvertible {
    /// The stable machine-readable code, e.g. `E_CORRUPT` or `E_MEDIA_DAMAGED`.
    var errorCode: String { get }
    /// The error this one wraps, if it keeps it.
    var underlying: (any Error)? { get }
    /// Which documented exit code this error means.
    var exitCategory: ExitCategory { get }
}

extension RedoubtError {
    public var underlying: (any Error)? { nil }
}

extension CoreError: RedoubtError {
    public var errorCode: String { code.rawValue }
    public var exitCategory: ExitCategory { isIntegrityFailure ? .integrity : .failure }
}

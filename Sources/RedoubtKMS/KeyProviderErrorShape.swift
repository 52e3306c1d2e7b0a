import RedoubtCore

extension KeyProviderError: RedoubtError {
    public var errorCode: String { code }

    /// Each KMS state a user must act on differently has its own exit code (9–12); any
    /// other failure to unwrap the read key is 6.
    public var exitCategory: ExitCategory {
        switch self {
        case .unreachable: .kmsUnreachable
        case .keyDisabled: .keyDisabled
        case .keyDestroyed: .keyDestroyed
        case .credentialRejected: .kmsCredentialRejected
        default: .key
        }
    }
}

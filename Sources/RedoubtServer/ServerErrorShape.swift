import RedoubtCore

extension ServerError: RedoubtError {
    public var errorCode: String { code }
    /// As the same error seen by a client over the API (``ExitCategory/ofHTTP(status:code:)``).
    public var exitCategory: ExitCategory { .ofHTTP(status: status, code: code) }
}

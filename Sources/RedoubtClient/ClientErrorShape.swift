import RedoubtCore

extension APIError: RedoubtError {
    public var errorCode: String { code }
    public var exitCategory: ExitCategory { .ofHTTP(status: status, code: code) }
}

extension ArchiveError: RedoubtError {
    public var errorCode: String { code.rawValue }
    public var exitCategory: ExitCategory { code == .notFound ? .notFound : .failure }
}

extension MetadataCache.Unusable: RedoubtError {
    public var errorCode: String { "E_CACHE" }
    public var exitCategory: ExitCategory { .failure }
}

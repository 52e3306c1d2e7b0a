import RedoubtCore

extension StoreError: RedoubtError {
    public var errorCode: String { code.rawValue }
    public var exitCategory: ExitCategory { code == .integrity ? .integrity : .failure }
}

extension S3Error: RedoubtError {
    public var errorCode: String { "E_STORE_REMOTE" }
    public var exitCategory: ExitCategory { .failure }
}

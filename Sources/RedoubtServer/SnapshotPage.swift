import RedoubtCore

/// One page of `GET /v1/snapshots`: at most `limit` snapshots after the one named `after`,
/// in listing order. The answer is bounded by the page, never by how many snapshots a
/// tenant (or a host flooding it with decoys) has; clients ask for the next page with
/// the last ID they got until a page comes back short.
public struct SnapshotPage: Sendable {
    /// Most snapshots one answer holds, and the default.
    public static let maxLimit = 5000
    public let after: String?
    public let limit: Int

    public init(after: String?, limit: String?) throws {
        if let after, SnapshotID(hex: after) == nil {
            throw ServerError.badRequest("""
                after must be a snapshot ID (64 lowercase hex digits), the last of the previous page
                """)
        }
        let n = try limit.map { text -> Int in
            guard let n = Int(text), (1...Self.maxLimit).contains(n) else {
                throw ServerError.badRequest("limit must be a whole number from 1 to \(Self.maxLimit)")
            }
            return n
        } ?? Self.maxLimit
        self.after = after
        self.limit = n
    }

    // The page itself is read by the catalog (`Catalog.snapshotPage`, SnapshotPageQuery.swift),
    // with the cursor and the bound in the query.
}

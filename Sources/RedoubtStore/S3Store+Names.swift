import Foundation

extension S3Store {
    /// The names (relative to the store's prefix) of every key under `prefix` that has an
    /// original version, including names that are not valid `ObjectKey`s; no HEAD per
    /// object. For finding tenants and objects that something other than Redoubt wrote.
    public func originalNames(prefix: String) async throws -> [String] {
        let base = client.location.prefix.isEmpty ? "" : client.location.prefix + "/"
        let versions = try await client.listVersions(prefix: base + prefix, pageSize: listPageSize)
        return Self.originals(versions).filter { $0.key.hasPrefix(base + prefix) }.map {
            String($0.key.dropFirst(base.count))
        }
    }
}

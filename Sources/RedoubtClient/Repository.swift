import RedoubtCore

/// Where a backup sends its data: the Redoubt server's API in production, memory in
/// tests. A host can only add: nothing here reads, deletes or overwrites.
///
/// Contracts: every method is idempotent and safe to retry; `upload` of a pack the
/// repository already holds is a no-op; `commit` fails unless every pack the manifest
/// names is present and the manifest verifies for this host.
public protocol BackupTarget: Sendable {
    /// Of `ids`, the chunks the repository already holds for this tenant.
    func existingChunks(_ ids: [ChunkID]) async throws -> Set<ChunkID>
    /// Stores a finished pack.
    func upload(pack: FinishedPack) async throws
    /// Commits a snapshot.
    func commit(manifest: Manifest) async throws
}

/// Where a restore reads from: the server (restorer role), a bucket, media, or memory.
public protocol PackSource: Sendable {
    /// A pack's bytes; the caller verifies them against the ID.
    func pack(_ id: PackID) async throws -> [UInt8]
}

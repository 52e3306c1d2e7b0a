import Foundation
import RedoubtClient
import RedoubtCore

/// Commits, as `host`, a format-1 snapshot of `files` (name, bytes) at the top of its tree, as
/// a format-1 client made it under tenant-wide dedup: chunks `isHeld` says the tenant holds
/// are named, not uploaded, and the manifest also lists `otherPacks` (where those chunks are).
/// Returns the snapshot's ID. Format-1 chunks are what a server cannot check without keys.
func commitFormatOneSnapshot(_ files: [(name: String, bytes: [UInt8])], as host: (ClientConfig, APIClient),
                             isHeld: @escaping (ChunkID) -> Bool, otherPacks: [PackID],
                             nonce: UInt8) async throws -> String {
    let keys = try host.0.writeKeySet()
    let pipeline = try PackPipeline(material: keys.shared, packVersion: 1, isKnown: isHeld)
    var nodes: [Node] = []
    for f in files {
        nodes.append(Node(name: Array(f.name.utf8), type: .file, size: UInt64(f.bytes.count),
                          content: try pipeline.add(blob: f.bytes)))
    }
    let root = try pipeline.add(tree: Tree(nodes: nodes))
    let own = try pipeline.flush()
    for p in own { _ = try await host.1.uploadPack(id: p.id, bytes: p.bytes) }
    let header = ManifestHeader(tenant: keys.tenant, readKeyID: keys.shared.readPublicKey.keyID,
                                host: keys.host, hostKey: keys.signingKey.publicKey,
                                time: Timestamp(seconds: testNow), nonce: [UInt8](repeating: nonce, count: 16),
                                paths: [Array("/srv".utf8)], tags: [], statistics: SnapshotStatistics(),
                                packs: own.map(\.id) + otherPacks, clientVersion: "format-1 client")
    let manifest = try Manifest.create(header: header, root: root, readPublicKey: keys.shared.readPublicKey,
                                       signingKey: keys.signingKey)
    guard manifest.version == 1 else { throw CoreError(.corrupt, object: "test manifest", "not format 1") }
    return try await host.1.commit(manifestBytes: manifest.bytes).id
}

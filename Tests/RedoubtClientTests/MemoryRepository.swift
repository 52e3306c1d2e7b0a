import RedoubtClient
import RedoubtCore

/// A repository in memory that checks what a server checks: packs against their IDs
/// (PackReader.inspect) and read key, manifests against the host's key, and that every
/// pack a manifest names is present. Counts uploads and fetches for the tests.
actor MemoryRepository: PackLocatingBackupTarget, SpooledPackTarget, ChunkLocatingPackSource {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    let tenant: String
    let host: String
    let hostKey: HostPublicKey
    let readKeyID: ReadKeyID
    private(set) var packs: [PackID: [UInt8]] = [:]
    private(set) var chunkIndex: [ChunkID: PackID] = [:]
    private(set) var manifests: [Manifest] = []
    private(set) var uploads = 0
    /// Uploads that came from a spooled copy (``SpooledPack``) rather than memory.
    private(set) var spooledUploads = 0
    private(set) var fetches: [PackID: Int] = [:]
    private(set) var locationQueries = 0
    /// Every chunk ID asked about, and the questions about packs.
    private(set) var chunksAsked = Set<ChunkID>()
    private(set) var packQueries = 0

    init(keys: WriteKeySet) {
        tenant = keys.tenant
        host = keys.host
        hostKey = keys.signingKey.publicKey
        readKeyID = keys.shared.readPublicKey.keyID
    }

    func existingChunks(_ ids: [ChunkID]) async throws -> Set<ChunkID> { Set(ids.filter { chunkIndex[$0] != nil }) }

    func existingChunkLocations(_ ids: [ChunkID]) async throws -> [ChunkID: PackID] {
        locationQueries += 1
        chunksAsked.formUnion(ids)
        var out: [ChunkID: PackID] = [:]
        for id in ids { if let p = chunkIndex[id] { out[id] = p } }
        return out
    }

    func upload(pack: FinishedPack) async throws {
        let summary = try PackReader.inspect(pack.bytes, expectedID: pack.id)
        guard summary.keyID == readKeyID else {
            throw Failure(description: "pack \(pack.id) sealed to another read key")
        }
        uploads += 1
        guard packs[pack.id] == nil else { return }
        packs[pack.id] = pack.bytes
        for c in summary.chunkIDs where chunkIndex[c] == nil { chunkIndex[c] = pack.id }
    }

    /// Reads the spooled copy back and checks it as a server would (against its ID).
    func upload(spooled pack: SpooledPack) async throws {
        let bytes = try pack.bytes()
        let summary = try PackReader.inspect(bytes, expectedID: pack.id)
        guard summary.keyID == readKeyID else {
            throw Failure(description: "pack \(pack.id) sealed to another read key")
        }
        uploads += 1
        spooledUploads += 1
        guard packs[pack.id] == nil else { return }
        packs[pack.id] = bytes
        for c in summary.chunkIDs where chunkIndex[c] == nil { chunkIndex[c] = pack.id }
    }

    func commit(manifest: Manifest) async throws {
        try manifest.verify(tenant: tenant, host: host, hostKey: hostKey, readKeyID: readKeyID)
        for p in manifest.header.packs where packs[p] == nil {
            throw Failure(description: "manifest names missing pack \(p)")
        }
        manifests.append(manifest)
    }

    func pack(_ id: PackID) async throws -> [UInt8] {
        fetches[id, default: 0] += 1
        guard let b = packs[id] else { throw Failure(description: "no pack \(id)") }
        return b
    }

    func chunkLocations(inPacks packs: [PackID]) async throws -> [ChunkID: PackID] {
        let wanted = Set(packs)
        return chunkIndex.filter { wanted.contains($0.value) }
    }

    /// Flips one byte in the middle of a stored pack.
    func tamper(_ id: PackID) {
        guard var b = packs[id] else { return }
        b[b.count / 2] ^= 0x01
        packs[id] = b
    }

    func resetCounters() {
        uploads = 0
        spooledUploads = 0
        fetches = [:]
        locationQueries = 0
        chunksAsked = []
        packQueries = 0
    }

    /// One host's repository: every pack it holds is this host's.
    func uploadedPacks(_ ids: [PackID]) async throws -> Set<PackID> {
        packQueries += 1
        return Set(ids.filter { packs[$0] != nil })
    }

    /// Forgets a pack and its chunks, as garbage collection would.
    func drop(_ id: PackID) {
        packs[id] = nil
        chunkIndex = chunkIndex.filter { $0.value != id }
    }

    /// Adds packs made outside the archiver (hostile-snapshot tests).
    func store(_ p: FinishedPack) async throws { try await upload(pack: p) }
}

/// The same repository seen as a plain PackSource, without a catalog.
struct PlainSource: PackSource {
    let repository: MemoryRepository
    func pack(_ id: PackID) async throws -> [UInt8] { try await repository.pack(id) }
}

/// The same repository seen as a plain BackupTarget that cannot locate chunks.
struct PlainTarget: BackupTarget {
    let repository: MemoryRepository
    func existingChunks(_ ids: [ChunkID]) async throws -> Set<ChunkID> { try await repository.existingChunks(ids) }
    func upload(pack: FinishedPack) async throws { try await repository.upload(pack: pack) }
    func commit(manifest: Manifest) async throws { try await repository.commit(manifest: manifest) }
}

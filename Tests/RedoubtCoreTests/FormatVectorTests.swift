import Crypto
import Foundation
import Testing

@testable import RedoubtCore

/// The test vectors of docs/FORMAT.md §14, checked against this build: the document's
/// own block is parsed, so the text and the code cannot drift apart. A second
/// implementation checks itself against the same values.
///
/// `REDOUBT_WRITE_FIXTURES=1 swift test --filter FormatVectorTests` prints the values (and
/// writes the X-Wing ciphertext fixture if it is missing; it is never rewritten).
@Suite struct FormatVectorTests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let ciphertextFile = "Tests/RedoubtCoreTests/Fixtures/vectors-v1/xwing-ciphertext.hex"

    /// `name: value` lines between the markers in FORMAT.md.
    static func documented() throws -> [String: String] {
        let text = try String(contentsOf: repo.appendingPathComponent("docs/FORMAT.md"), encoding: .utf8)
        guard let start = text.range(of: "<!-- test-vectors-v1 -->"),
            let end = text.range(of: "<!-- end test-vectors-v1 -->")
        else {
            throw CoreError(.corrupt, object: "docs/FORMAT.md", "no test vector block")
        }
        var out: [String: String] = [:]
        var last: String?
        for line in text[start.upperBound..<end.lowerBound].split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2, !parts[0].hasPrefix("`"), !parts[0].isEmpty {
                out[parts[0]] = parts[1]
                last = parts[0]
            } else if let k = last, parts.count == 1, !parts[0].hasPrefix("`") {
                // A long value continues on the next lines.
                out[k, default: ""] += parts[0]
            }
        }
        return out
    }

    static let seed = (0..<32).map { UInt8($0) }
    static let chunkIDKeyBytes = (0..<32).map { UInt8(0x20 + $0) }

    /// The vector tree: a file, an empty file, a symlink, a hard link and a subdirectory.
    static func tree(key: ChunkIDKey) throws -> (empty: [UInt8], tree: [UInt8]) {
        let empty = try TreeCodec.encode(Tree(nodes: []), version: 1)
        let t = Timestamp(seconds: 1_795_000_000, nanoseconds: 250_000_000)
        let nodes = [
            Node(
                name: Array("a.txt".utf8), type: .file, mode: 0o644, uid: 1000, gid: 1000, user: Array("alice".utf8),
                group: Array("staff".utf8),
                mtime: t, ctime: t, atime: t, size: 5, content: [key.chunkID(for: Array("hello".utf8))]),
            Node(
                name: Array("empty".utf8), type: .file, mode: 0o600, uid: 1000, gid: 1000, mtime: t, ctime: t, atime: t,
                size: 0),
            Node(
                name: Array("hard".utf8), type: .hardlink, mode: 0o644, uid: 1000, gid: 1000, mtime: t, ctime: t,
                atime: t,
                linkTarget: Array("data/a.txt".utf8)),
            Node(
                name: Array("link".utf8), type: .symlink, mode: 0o777, mtime: t, ctime: t, atime: t,
                linkTarget: Array("a.txt".utf8)),
            Node(
                name: Array("sub".utf8), type: .directory, mode: 0o755, mtime: t, ctime: t, atime: t,
                subtree: [key.chunkID(for: empty)]),
        ]
        return (empty, try TreeCodec.encode(Tree(nodes: nodes), version: 1))
    }

    @Test func documentedVectorsHoldForThisBuild() throws {
        let key = try ReadPrivateKey(seed: SecretBytes(copying: Self.seed))
        let chunkKey = try ChunkIDKey(secret: SecretBytes(copying: Self.chunkIDKeyBytes))
        let (empty, tree) = try Self.tree(key: chunkKey)
        let ctURL = Self.repo.appendingPathComponent(Self.ciphertextFile)
        if ProcessInfo.processInfo.environment["REDOUBT_WRITE_FIXTURES"] == "1",
            !FileManager.default.fileExists(atPath: ctURL.path)
        {
            let r = try key.publicKey.key.encapsulate()
            try FileManager.default.createDirectory(
                at: ctURL.deletingLastPathComponent(), withIntermediateDirectories: true)
            try (hexString(r.encapsulated) + "\n").write(to: ctURL, atomically: true, encoding: .utf8)
        }
        let ctHex = try String(contentsOf: ctURL, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let ct = try #require(bytesFromHex(ctHex))
        let ss = try key.key.decapsulate(Data(ct)).withUnsafeBytes { Array($0) }
        let pk = key.publicKey.rawRepresentation
        let computed: [String: String] = [
            "x-wing-seed": hexString(Self.seed),
            "x-wing-public-key-sha256": hexString(SHA256.hash(data: pk)),
            "x-wing-public-key-first-32": hexString(pk.prefix(32)),
            "x-wing-public-key-x25519": hexString(pk.suffix(32)),
            "read-key-id": key.publicKey.keyID.description,
            "x-wing-ciphertext-sha256": hexString(SHA256.hash(data: ct)),
            "x-wing-shared-secret": hexString(ss),
            "chunk-id-key": hexString(Self.chunkIDKeyBytes),
            "chunk-id-of-hello": chunkKey.chunkID(for: Array("hello".utf8)).description,
            "empty-tree": hexString(empty),
            "empty-tree-chunk-id": chunkKey.chunkID(for: empty).description,
            "tree": hexString(tree),
            "tree-chunk-id": chunkKey.chunkID(for: tree).description,
        ]
        if ProcessInfo.processInfo.environment["REDOUBT_WRITE_FIXTURES"] == "1" {
            for k in computed.keys.sorted() { print("\(k): \(computed[k]!)") }
        }
        #expect(pk.count == 1216 && ct.count == 1120 && ss.count == 32)
        let doc = try Self.documented()
        for (k, v) in computed {
            #expect(doc[k] == v, "FORMAT.md §14 \(k): documented \(doc[k] ?? "nothing"), computed \(v)")
        }
        #expect(doc["x-wing-ciphertext"] == Self.ciphertextFile)
        // The tree bytes decode and re-encode to themselves (the encoding is canonical).
        let decoded = try TreeCodec.decode(tree, object: "vector tree")
        #expect(try TreeCodec.encode(decoded, version: 1) == tree)
        // An empty regular file is stored with no chunk at all (§5.3), not one empty chunk.
        let emptyFile = try #require(decoded.nodes.first { $0.name == Array("empty".utf8) })
        #expect(
            emptyFile.type == .file && emptyFile.size == 0 && emptyFile.content.isEmpty && emptyFile.dataRegions == nil)
    }
}

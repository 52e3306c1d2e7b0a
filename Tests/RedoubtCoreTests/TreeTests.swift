import Testing
@testable import RedoubtCore

/// Deterministic PRNG for property tests (SplitMix64).
struct TreeRNG: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
    mutating func int(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
}

func fakeChunkID(_ seed: UInt8) -> ChunkID { ChunkID(bytes: [UInt8](repeating: seed, count: 32))! }
func fakeSeal(_ seed: UInt8) -> ChunkSeal {
    ChunkSeal(key: [UInt8](repeating: seed ^ 0x5a, count: 32), rawLength: UInt32(seed) * 1000)!
}

/// `node` with a seal for each chunk it names, as format 2 requires.
func sealed(_ node: Node) -> Node {
    var n = node
    n.contentSeals = n.content.map { fakeSeal($0.bytes[0]) }
    n.subtreeSeals = n.subtree.map { fakeSeal($0.bytes[0]) }
    return n
}

func everyKindTree() -> Tree {
    let t = Timestamp(seconds: 1_700_000_000, nanoseconds: 123_456_789)
    return Tree(nodes: everyKindNodes(t).map(sealed))
}

private func everyKindNodes(_ t: Timestamp) -> [Node] {
    [
        Node(name: Array("file.txt".utf8), type: .file, mode: 0o644, uid: 1000, gid: 1000, user: Array("alice".utf8),
            group: Array("staff".utf8),
             mtime: t, ctime: t, atime: t, size: 11,
             xattrs: [ExtendedAttribute(name: Array("user.b".utf8), value: [1]),
                      ExtendedAttribute(name: Array("system.posix_acl_access".utf8), value: [2, 0, 0, 0])],
             content: [fakeChunkID(1)]),
        Node(name: [0x66, 0xff, 0xfe], type: .file, mode: 0o600, size: 0),
        Node(name: Array("dir".utf8), type: .directory, mode: 0o755, subtree: [fakeChunkID(2), fakeChunkID(3)]),
        Node(name: Array("link".utf8), type: .symlink, mode: 0o777, linkTarget: Array("../../etc/passwd".utf8)),
        Node(name: Array("hard".utf8), type: .hardlink, linkTarget: Array("dir/file.txt".utf8)),
        Node(name: Array("fifo".utf8), type: .fifo, mode: 0o600),
        Node(name: Array("null".utf8), type: .charDevice, mode: 0o666, rdev: 0x103),
        Node(name: Array("sda".utf8), type: .blockDevice, mode: 0o660, rdev: 0x800),
        Node(name: Array("sock".utf8), type: .socket, mode: 0o755),
        Node(name: Array("sparse".utf8), type: .file, mode: 0o644, size: 1 << 30, content: [fakeChunkID(4)],
             dataRegions: [Extent(offset: 0, length: 4096), Extent(offset: 1 << 20, length: 8192)]),
        Node(name: Array("setuid".utf8), type: .file, mode: 0o4755, mtime: Timestamp(seconds: -5,
            nanoseconds: 999_999_999)),
    ]
}

@Suite struct TreeTests {
    @Test func everyEntryKindRoundTrips() throws {
        let tree = everyKindTree()
        let bytes = try TreeCodec.encode(tree)
        let back = try TreeCodec.decode(bytes, object: "test tree")
        #expect(back == tree)
        #expect(back.nodes.count == 11)
        #expect(back[Array("sparse".utf8)]?.dataRegions?.count == 2)
        #expect(back[[0x66, 0xff, 0xfe]] != nil)
    }

    @Test func encodingIsDeterministicWhateverTheInputOrder() throws {
        var rng = TreeRNG(state: 7)
        let tree = everyKindTree()
        for _ in 0..<20 {
            var shuffled = tree.nodes
            shuffled.shuffle(using: &rng)
            for i in shuffled.indices { shuffled[i].xattrs.reverse() }
            #expect(try TreeCodec.encode(Tree(nodes: shuffled)) == TreeCodec.encode(tree))
        }
    }

    @Test(arguments: [[UInt8](), [0x2e], [0x2e, 0x2e], Array("a/b".utf8), [0x61, 0x00], [UInt8](repeating: 0x61,
        count: 256)])
    func refusesUnsafeNames(_ name: [UInt8]) throws {
        let bad = Tree(nodes: [Node(name: name, type: .fifo)])
        #expect(throws: CoreError.self) { try TreeCodec.encode(bad) }
    }

    @Test(arguments: [Array("/etc/passwd".utf8), Array("../x".utf8), Array("a/../../x".utf8), Array("a//b".utf8), []])
    func refusesHardLinksThatLeaveTheRestoreRoot(_ target: [UInt8]) throws {
        let bad = Tree(nodes: [Node(name: Array("h".utf8), type: .hardlink, linkTarget: target)])
        #expect(throws: CoreError.self) { try TreeCodec.encode(bad) }
    }

    @Test func refusesDataOnEntriesThatCannotHoldIt() throws {
        let cases: [Node] = [
            Node(name: Array("d".utf8), type: .directory, content: [fakeChunkID(1)], subtree: [fakeChunkID(2)]),
            Node(name: Array("d".utf8), type: .directory),
            Node(name: Array("f".utf8), type: .fifo, size: 3),
            Node(name: Array("f".utf8), type: .file, subtree: [fakeChunkID(1)]),
            Node(name: Array("f".utf8), type: .file, rdev: 5),
            Node(name: Array("f".utf8), type: .file, size: 10, dataRegions: [Extent(offset: 8, length: 4)]),
            Node(name: Array("f".utf8), type: .file, size: 10, dataRegions: [Extent(offset: 4, length: 2),
                Extent(offset: 5, length: 1)]),
        ]
        for n in cases {
            #expect(throws: CoreError.self) { try TreeCodec.encode(Tree(nodes: [n])) }
        }
    }

    @Test func decodeRejectsDuplicateAndUnsortedNames() throws {
        // Hand-build an encoding with two equal names by encoding each alone and splicing.
        let one = try TreeCodec.encode(Tree(nodes: [Node(name: Array("a".utf8), type: .fifo)]))
        let body = Array(one[11...])  // after magic(8) + version(2) + count(1)
        let dup = Array(one[0..<10]) + [2] + body + body
        #expect(throws: CoreError.self) { try TreeCodec.decode(dup, object: "t") }
    }

    @Test func everyTruncationIsAnError() throws {
        let bytes = try TreeCodec.encode(everyKindTree())
        for n in 0..<bytes.count {
            #expect(throws: CoreError.self) { try TreeCodec.decode(Array(bytes[0..<n]), object: "t") }
        }
        #expect(throws: CoreError.self) { try TreeCodec.decode(bytes + [0], object: "t") }
    }

    @Test func randomAndMutatedInputNeverCrashes() throws {
        var rng = TreeRNG(state: 42)
        let valid = try TreeCodec.encode(everyKindTree())
        var accepted = 0
        for i in 0..<4000 {
            var input: [UInt8]
            if i % 2 == 0 {
                input = rng.bytes(rng.int(600))
                if i % 4 == 0 { input = TreeCodec.magic + [1, 0] + input }
            } else {
                input = valid
                for _ in 0..<(1 + rng.int(4)) { input[rng.int(input.count)] ^= UInt8(1 + rng.int(255)) }
            }
            do {
                let t = try TreeCodec.decode(input, object: "fuzz")
                // Anything accepted must be canonical: it re-encodes to the same bytes.
                #expect(try TreeCodec.encode(t) == input)
                accepted += 1
            } catch let e as CoreError {
                #expect(e.code == .corrupt || e.code == .unsupportedVersion)
            }
        }
        #expect(accepted < 4000)
    }

    @Test func errorsNameTheEntry() throws {
        var bytes = try TreeCodec.encode(Tree(nodes: [Node(name: Array("victim".utf8), type: .fifo)]))
        // The type byte follows the name: magic 8, version 2, count 1, entry length 1, name length 1, name 6.
        bytes[8 + 2 + 1 + 1 + 1 + 6] = 99
        let e = #expect(throws: CoreError.self) { try TreeCodec.decode(bytes, object: "tree 1234") }
        #expect(e?.object.contains("victim") == true)
        #expect(e?.object.contains("tree 1234") == true)
    }
}

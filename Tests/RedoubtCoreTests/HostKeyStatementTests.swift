import Crypto
import Foundation
import Testing

@testable import RedoubtCore

/// Host key statements (docs/FORMAT.md §6.4): the golden registration and revocation in
/// Tests/RedoubtCoreTests/Fixtures/host-keys-v1, and what a restorer accepts and refuses.
///
/// The fixture's signatures are ECDSA (randomized), so it was written once
/// (`REDOUBT_WRITE_FIXTURES=1 swift test --filter HostKeyStatementTests`) and is never
/// rewritten; the test checks that it opens and that this build encodes the same body.
@Suite struct HostKeyStatementTests {
    /// The fixture's trust root: P-256 private scalar SHA-256("redoubt host key fixture CA").
    static let trustRoot = try! P256.Signing.PrivateKey(
        rawRepresentation: Array(SHA256.hash(data: Array("redoubt host key fixture CA".utf8))))
    /// The fixture's host key: Ed25519 seed SHA-256("redoubt host key fixture host").
    static let hostKey = try! HostSigningKey(
        secret: SecretBytes(copying: Array(SHA256.hash(data: Array("redoubt host key fixture host".utf8)))))
    static let principal = "0123456789abcdef0123456789abcdef"
    static let snapshots = [
        SnapshotID(bytes: Array(repeating: 0x22, count: 32))!, SnapshotID(bytes: Array(repeating: 0x11, count: 32))!,
    ]

    static var registration: HostKeyStatement {
        HostKeyStatement(
            kind: .registration, tenant: "golden", host: "fixture-host", principal: principal,
            hostKey: hostKey.publicKey, time: 1_795_000_000)
    }

    static var revocation: HostKeyStatement {
        HostKeyStatement(
            kind: .revocation, tenant: "golden", host: "fixture-host", principal: principal,
            hostKey: hostKey.publicKey, time: 1_796_000_000, snapshots: snapshots)
    }

    static var fixtureDir: URL {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("host-keys-v1")
    }

    @Test(.enabled(if: ProcessInfo.processInfo.environment["REDOUBT_WRITE_FIXTURES"] == "1"))
    func regenerate() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(
            "Fixtures/host-keys-v1")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (name, s) in [("registration.bin", Self.registration), ("revocation.bin", Self.revocation)] {
            let url = dir.appendingPathComponent(name)
            // Never rewritten: a fixture pins what earlier builds wrote.
            guard !FileManager.default.fileExists(atPath: url.path) else { continue }
            try Data(try s.encoded(signedBy: Self.trustRoot)).write(to: url)
        }
        try (hexString(Self.trustRoot.publicKey.x963Representation) + "\n")
            .write(to: dir.appendingPathComponent("trust-root.hex"), atomically: true, encoding: .utf8)
    }

    @Test func goldenStatementsOpenAndThisBuildWritesTheSameBody() throws {
        let hex = try String(contentsOf: Self.fixtureDir.appendingPathComponent("trust-root.hex"), encoding: .utf8)
        let root = try P256.Signing.PublicKey(
            x963Representation: try #require(bytesFromHex(hex.trimmingCharacters(in: .whitespacesAndNewlines))))
        #expect(root.x963Representation == Self.trustRoot.publicKey.x963Representation)
        for (name, expected) in [("registration.bin", Self.registration), ("revocation.bin", Self.revocation)] {
            let bytes = Array(try Data(contentsOf: Self.fixtureDir.appendingPathComponent(name)))
            let s = try HostKeyStatement.open(bytes, trustRoot: root, object: name)
            #expect(s == expected, "\(name)")
            // Same body, same framing: only the (randomized) signature is the fixture's own.
            #expect(HostKeyStatement.frame(body: expected.body, signature: Array(bytes.suffix(64))) == bytes, "\(name)")
        }
        // The revocation's list is stored ascending whatever order it was given in.
        #expect(Self.revocation.snapshots.first?.bytes.first == 0x11)
    }

    @Test func aStatementSignedByAnyOtherKeyOrAlteredIsRefused() throws {
        let root = Self.trustRoot.publicKey
        let forged = try Self.registration.encoded(signedBy: P256.Signing.PrivateKey())
        #expect(throws: CoreError.self) { try HostKeyStatement.open(forged, trustRoot: root, object: "forged") }
        var genuine = try Self.registration.encoded(signedBy: Self.trustRoot)
        _ = try HostKeyStatement.open(genuine, trustRoot: root, object: "genuine")
        // Flip one byte of the host name: the signature no longer covers it.
        genuine[20] ^= 0x01
        do {
            _ = try HostKeyStatement.open(genuine, trustRoot: root, object: "altered")
            Issue.record("an altered statement opened")
        } catch {
            #expect(error.code == .badSignature || error.code == .corrupt)
        }
        #expect(throws: CoreError.self) {
            try HostKeyStatement.open(Array(genuine.prefix(30)), trustRoot: root, object: "truncated")
        }
    }

    /// A registry built from a copy's objects: a manifest by a registered key passes; one by
    /// an unregistered key (whatever it signs) or by a revoked key after its revocation does
    /// not; forged objects are ignored and do not block genuine snapshots.
    @Test func registryAcceptsOnlyRegisteredUnrevokedSigners() throws {
        let read = try ReadPrivateKey.generate()
        let material = SharedWriteMaterial(
            readPublicKey: read.publicKey, chunkIDKey: ChunkIDKey.generate(), chunkerSeed: ChunkerSeed.generate())
        func manifest(_ key: HostSigningKey, host: String = "fixture-host") throws(CoreError) -> Manifest {
            let header = ManifestHeader(
                tenant: "golden", readKeyID: read.publicKey.keyID, host: host, hostKey: key.publicKey,
                time: Timestamp(seconds: 1_795_000_100), nonce: (0..<16).map { _ in UInt8.random(in: 0...255) },
                paths: [], tags: [], statistics: SnapshotStatistics(), packs: [], clientVersion: "test")
            return try Manifest.create(
                header: header, root: [ChunkID(bytes: Array(repeating: 1, count: 32))!],
                readPublicKey: material.readPublicKey,
                signingKey: key)
        }
        let genuine = try manifest(Self.hostKey)
        let stranger = HostSigningKey.generate()
        let planted = try manifest(stranger)
        let objects: [(name: String, bytes: [UInt8])] = [
            ("reg", try Self.registration.encoded(signedBy: Self.trustRoot)),
            (
                "forged-reg",
                try HostKeyStatement(
                    kind: .registration, tenant: "golden", host: "fixture-host", principal: "ff",
                    hostKey: stranger.publicKey, time: 0
                ).encoded(signedBy: P256.Signing.PrivateKey())
            ),
            (
                "forged-rev",
                try HostKeyStatement(
                    kind: .revocation, tenant: "golden", host: "fixture-host", principal: Self.principal,
                    hostKey: Self.hostKey.publicKey, time: 0
                ).encoded(signedBy: P256.Signing.PrivateKey())
            ),
            ("junk", Array("not a statement".utf8)),
        ]
        let registry = HostKeyRegistry(tenant: "golden", trustRoot: Self.trustRoot.publicKey, objects: objects)
        #expect(registry.ignored.map(\.name) == ["forged-reg", "forged-rev", "junk"])
        try registry.check(genuine, readKeyID: read.publicKey.keyID)
        do {
            try registry.check(planted, readKeyID: read.publicKey.keyID)
            Issue.record("a planted snapshot passed")
        } catch {
            #expect(error.code == .badSignature && error.object == "snapshot \(planted.id)")
            #expect(error.detail.contains("forged-reg"), "names the ignored registration: \(error.detail)")
        }
        // The registered key under another host's name is not that host's.
        #expect(throws: CoreError.self) {
            try registry.check(try manifest(Self.hostKey, host: "other"), readKeyID: read.publicKey.keyID)
        }

        // Revoked: what the key committed before stays; anything else it signs is refused.
        let revocation = HostKeyStatement(
            kind: .revocation, tenant: "golden", host: "fixture-host", principal: Self.principal,
            hostKey: Self.hostKey.publicKey, time: 1_796_000_000, snapshots: [genuine.id])
        let revoked = HostKeyRegistry(
            tenant: "golden", trustRoot: Self.trustRoot.publicKey,
            objects: objects + [("rev", try revocation.encoded(signedBy: Self.trustRoot))])
        try revoked.check(genuine, readKeyID: read.publicKey.keyID)
        do {
            try revoked.check(try manifest(Self.hostKey), readKeyID: read.publicKey.keyID)
            Issue.record("a snapshot signed after revocation passed")
        } catch {
            #expect(error.code == .badSignature && error.detail.contains("revoked"))
        }
        // Another tenant's registry does not vouch for this tenant's snapshot.
        let other = HostKeyRegistry(tenant: "other", trustRoot: Self.trustRoot.publicKey, objects: objects)
        #expect(throws: CoreError.self) { try other.check(genuine, readKeyID: read.publicKey.keyID) }
    }
}

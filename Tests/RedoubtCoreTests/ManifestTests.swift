import Testing
@testable import RedoubtCore

struct ManifestFixture {
    let tenant = TenantKeys.fixedForTests(seed: 1)
    let host = HostSigningKey.fixedForTests(seed: 2)

    func header(tenant name: String = "acme", host hostName: String = "web1", packs: [PackID] = []) -> ManifestHeader {
        var stats = SnapshotStatistics()
        stats.files = 3
        stats.bytesTotal = 12345
        return ManifestHeader(tenant: name, readKeyID: tenant.readKey.publicKey.keyID, host: hostName,
            hostKey: host.publicKey,
                              time: Timestamp(seconds: 1_790_000_000, nanoseconds: 5), nonce: [UInt8](repeating: 9,
                                  count: 16),
                              paths: [Array("/srv".utf8), [0x2f, 0xff]], tags: ["daily", "db"], statistics: stats,
                              packs: packs, clientVersion: "redoubt test")
    }

    func make(root: [ChunkID] = [fakeChunkID(7), fakeChunkID(8)]) throws -> Manifest {
        try Manifest.create(header: header(packs: [PackID(bytes: [UInt8](repeating: 2, count: 32))!,
            PackID(bytes: [UInt8](repeating: 1, count: 32))!]),
                            root: root, readPublicKey: tenant.readKey.publicKey, signingKey: host)
    }
}

extension TenantKeys {
    /// Deterministic tenant keys for tests and fixtures.
    static func fixedForTests(seed: UInt8) -> TenantKeys {
        let b = {
            (o: UInt8) in SecretBytes(copying: (0..<32).map {
                UInt8(truncatingIfNeeded: Int($0) + Int(o) + Int(seed) * 7)
            })
        }
        return TenantKeys(readKey: try! ReadPrivateKey(seed: b(0)), chunkIDKey: try! ChunkIDKey(secret: b(32)),
            chunkerSeed: try! ChunkerSeed(secret: b(64)))
    }
}

extension HostSigningKey {
    static func fixedForTests(seed: UInt8) -> HostSigningKey {
        try! HostSigningKey(secret: SecretBytes(copying: (0..<32).map {
            UInt8(truncatingIfNeeded: Int($0) * 3 + Int(seed))
        }))
    }
}

@Suite struct ManifestTests {
    let f = ManifestFixture()

    @Test func roundTripsAndVerifies() throws {
        let m = try f.make()
        let parsed = try Manifest.parse(m.bytes, expectedID: m.id)
        #expect(parsed.header == m.header)
        #expect(parsed.header.packs == parsed.header.packs.sorted())
        #expect(parsed.header.paths[1] == [0x2f, 0xff])
        try parsed.verify(tenant: "acme", host: "web1", hostKey: f.host.publicKey,
            readKeyID: f.tenant.readKey.publicKey.keyID)
        #expect(try parsed.openRoot(readKey: f.tenant.readKey) == [fakeChunkID(7), fakeChunkID(8)])
    }

    @Test func snapshotIDIsTheHashOfTheBytesAndEachSnapshotIsUnique() throws {
        let a = try f.make(), b = try f.make()
        #expect(a.id != b.id)  // fresh HPKE encapsulation each time
        #expect(throws: CoreError.self) { try Manifest.parse(a.bytes, expectedID: b.id) }
    }

    @Test func rejectsAnotherHostsKeyTenantOrHostName() throws {
        let m = try f.make()
        let other = HostSigningKey.fixedForTests(seed: 3)
        let keyID = f.tenant.readKey.publicKey.keyID
        #expect { try m.verify(tenant: "acme", host: "web1", hostKey: other.publicKey, readKeyID: keyID) } throws: {
            ($0 as? CoreError)?.code == .badSignature
        }
        #expect { try m.verify(tenant: "other", host: "web1", hostKey: f.host.publicKey, readKeyID: keyID) } throws: {
            ($0 as? CoreError)?.code == .badSignature
        }
        #expect { try m.verify(tenant: "acme", host: "web2", hostKey: f.host.publicKey, readKeyID: keyID) } throws: {
            ($0 as? CoreError)?.code == .badSignature
        }
        let otherTenant = TenantKeys.fixedForTests(seed: 9)
        #expect { try m.verify(tenant: "acme", host: "web1", hostKey: f.host.publicKey,
            readKeyID: otherTenant.readKey.publicKey.keyID) } throws: {
            ($0 as? CoreError)?.code == .wrongTenant
        }
        #expect { try m.openRoot(readKey: otherTenant.readKey) } throws: { ($0 as? CoreError)?.code == .wrongTenant }
    }

    @Test func everyFlippedByteBreaksParseSignatureOrSeal() throws {
        let m = try f.make()
        let keyID = f.tenant.readKey.publicKey.keyID
        for i in 0..<m.bytes.count {
            var b = m.bytes
            b[i] ^= 0x01
            do {
                let p = try Manifest.parse(b)
                try p.verify(tenant: "acme", host: "web1", hostKey: f.host.publicKey, readKeyID: keyID)
                _ = try p.openRoot(readKey: f.tenant.readKey)
                Issue.record("byte \(i) flipped and the manifest still verified")
            } catch is CoreError {}
        }
    }

    @Test func aHostCannotSignForAnotherHost() throws {
        // A compromised host signs a manifest that claims to be from web2.
        let forged = try Manifest.create(header: f.header(host: "web2"), root: [fakeChunkID(1)],
            readPublicKey: f.tenant.readKey.publicKey, signingKey: f.host)
        let web2 = HostSigningKey.fixedForTests(seed: 4)
        #expect(throws: CoreError.self) {
            try forged.verify(tenant: "acme", host: "web2", hostKey: web2.publicKey,
                readKeyID: f.tenant.readKey.publicKey.keyID)
        }
    }

    @Test func everyTruncationAndRandomInputIsAnError() throws {
        let m = try f.make()
        for n in 0..<m.bytes.count {
            #expect(throws: CoreError.self) { try Manifest.parse(Array(m.bytes[0..<n])) }
        }
        var rng = TreeRNG(state: 99)
        for i in 0..<3000 {
            var input = rng.bytes(rng.int(400))
            if i % 2 == 0 { input = Manifest.magic + [1, 0] + input }
            #expect(throws: CoreError.self) { try Manifest.parse(input) }
        }
    }
}

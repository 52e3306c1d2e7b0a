import Testing
@testable import RedoubtCore

private func fixedSecret(_ purpose: UInt8) -> SecretBytes {
    SecretBytes(copying: (0..<32).map { UInt8(truncatingIfNeeded: Int($0) * 13 + Int(purpose) * 41 + 5) })
}

private func bytes(of s: SecretBytes) -> [UInt8] { s.withUnsafeBytes { Array($0) } }

private func fixedSharedMaterial() throws -> SharedWriteMaterial {
    SharedWriteMaterial(readPublicKey: try ReadPrivateKey(seed: fixedSecret(1)).publicKey,
                        chunkIDKey: try ChunkIDKey(secret: fixedSecret(2)),
                            chunkerSeed: try ChunkerSeed(secret: fixedSecret(3)))
}

/// Every way a value is turned into text: interpolation, `String(describing:)`,
/// `String(reflecting:)` and `dump` (which walks stored properties by reflection).
private func renderings(_ value: Any) -> [String: String] {
    var dumped = ""
    dump(value, to: &dumped)
    return [
        "interpolation": "\(value)",
        "describing": String(describing: value),
        "reflecting": String(reflecting: value),
        "dump": dumped,
    ]
}

/// The integers `dump` prints one per line ("- 123") for byte arrays, in order.
private func dumpedIntegers(_ text: String) -> [Int] {
    text.split(separator: "\n").compactMap { line in
        let t = line.drop { $0 == " " || $0 == "|" }
        guard t.hasPrefix("- ") else { return nil }
        return Int(t.dropFirst(2))
    }
}

/// Where any rendering of `value` shows 6 or more consecutive bytes of `secret`, in hex
/// (either case) or as the decimal lines `dump` prints for arrays; empty if nowhere.
private func leaks(of secret: [UInt8], in value: Any) -> [String] {
    let window = 6
    var found: [String] = []
    for (how, text) in renderings(value).sorted(by: { $0.key < $1.key }) {
        let lower = text.lowercased()
        let numbers = dumpedIntegers(text)
        for start in 0...(secret.count - window) {
            let piece = Array(secret[start..<(start + window)])
            if lower.contains(hexString(piece)) { found.append("\(how): bytes \(start)..<\(start + window) in hex") }
            let decimal = piece.map(Int.init)
            if numbers.count >= window, (0...(numbers.count - window)).contains(where: { numbers[$0..<($0
                + window)].elementsEqual(decimal) }) {
                found.append("\(how): bytes \(start)..<\(start + window) in decimal")
            }
        }
    }
    return found
}

private func expectRedacted(_ value: Any, hiding secret: [UInt8], _ name: String,
    sourceLocation: SourceLocation = #_sourceLocation) {
    let found = leaks(of: secret, in: value)
    #expect(found.isEmpty, "\(name) shows its secret: \(found.prefix(4))", sourceLocation: sourceLocation)
}

@Suite struct KeyTests {
    // MARK: Redaction

    @Test func readPrivateKeyNeverPrintsItsSeed() throws {
        let key = try ReadPrivateKey(seed: fixedSecret(1))
        expectRedacted(key, hiding: bytes(of: fixedSecret(1)), "ReadPrivateKey")
        #expect("\(key)".contains("redacted"))
        #expect("\(key)".contains(key.publicKey.keyID.description))
    }

    @Test func chunkIDKeyNeverPrintsItsKey() throws {
        let key = try ChunkIDKey(secret: fixedSecret(2))
        expectRedacted(key, hiding: bytes(of: fixedSecret(2)), "ChunkIDKey")
    }

    @Test func chunkerSeedNeverPrintsItsSecret() throws {
        let seed = try ChunkerSeed(secret: fixedSecret(3))
        expectRedacted(seed, hiding: bytes(of: fixedSecret(3)), "ChunkerSeed")
    }

    @Test func hostSigningKeyNeverPrintsItsKey() throws {
        let key = try HostSigningKey(secret: fixedSecret(4))
        expectRedacted(key, hiding: bytes(of: fixedSecret(4)), "HostSigningKey")
    }

    @Test func secretBytesNeverPrintItsContents() {
        let s = fixedSecret(5)
        expectRedacted(s, hiding: bytes(of: s), "SecretBytes")
        #expect("\(s)" == "SecretBytes(32 bytes, redacted)")
    }

    @Test func generatedKeysNeverPrintTheirSecrets() throws {
        let tenant = try TenantKeys.generate()
        expectRedacted(tenant.readKey, hiding: bytes(of: tenant.readKey.exportSeed()), "generated ReadPrivateKey")
        expectRedacted(tenant.chunkIDKey, hiding: bytes(of: tenant.chunkIDKey.export()), "generated ChunkIDKey")
        expectRedacted(tenant.chunkerSeed, hiding: bytes(of: tenant.chunkerSeed.secret), "generated ChunkerSeed")
        let host = HostSigningKey.generate()
        expectRedacted(host, hiding: bytes(of: host.export()), "generated HostSigningKey")
    }

    @Test func writeKeySetAndTenantKeysNeverPrintTheirSecrets() throws {
        let shared = try fixedSharedMaterial()
        let set = WriteKeySet(tenant: "acme", host: "db-1", shared: shared,
            signingKey: try HostSigningKey(secret: fixedSecret(4)))
        for purpose: UInt8 in [2, 3, 4] {
            expectRedacted(set, hiding: bytes(of: fixedSecret(purpose)), "WriteKeySet (secret \(purpose))")
            expectRedacted(shared, hiding: bytes(of: fixedSecret(purpose)), "SharedWriteMaterial (secret \(purpose))")
        }
        #expect("\(set)".contains("acme") && "\(set)".contains("db-1"))

        let tenant = TenantKeys(readKey: try ReadPrivateKey(seed: fixedSecret(1)),
            chunkIDKey: try ChunkIDKey(secret: fixedSecret(2)),
                                chunkerSeed: try ChunkerSeed(secret: fixedSecret(3)))
        for purpose: UInt8 in [1, 2, 3] {
            expectRedacted(tenant, hiding: bytes(of: fixedSecret(purpose)), "TenantKeys (secret \(purpose))")
        }
    }

    /// The checker itself: it must see a secret that is printed.
    @Test func redactionCheckCatchesAPrintedSecret() {
        let secret = bytes(of: fixedSecret(6))
        struct Leaky { let key: [UInt8] }
        #expect(leaks(of: secret, in: Leaky(key: secret)).contains("dump: bytes 0..<6 in decimal"))
        #expect(leaks(of: secret, in: hexString(secret)).contains("describing: bytes 0..<6 in hex"))
        #expect(leaks(of: secret, in: hexString(secret).uppercased()).count == 4 * 27)
    }

    // MARK: Read key

    @Test func readKeyRebuiltFromItsSeedHasTheSamePublicKey() throws {
        let key = try ReadPrivateKey.generate()
        let again = try ReadPrivateKey(seed: key.exportSeed())
        #expect(again.publicKey == key.publicKey)
        #expect(again.publicKey.keyID == key.publicKey.keyID)
        #expect(again.exportSeed().equals(key.exportSeed()))
        #expect(key.publicKey.rawRepresentation.count == 1216)
    }

    @Test func sameSeedGivesTheSameKeyAndKeyID() throws {
        let a = try ReadPrivateKey(seed: fixedSecret(1)), b = try ReadPrivateKey(seed: fixedSecret(1))
        #expect(a.publicKey == b.publicKey)
        #expect(try ReadPrivateKey(seed: fixedSecret(2)).publicKey != a.publicKey)
        #expect(try ReadPublicKey(rawRepresentation: a.publicKey.rawRepresentation).keyID == a.publicKey.keyID)
    }

    @Test(arguments: [0, 1, 16, 31, 33, 64])
    func seedOfWrongLengthIsABadKey(count: Int) {
        let s = SecretBytes(copying: [UInt8](repeating: 7, count: count))
        let errors = [
            #expect(throws: CoreError.self) { try ReadPrivateKey(seed: s) },
            #expect(throws: CoreError.self) { try ChunkIDKey(secret: s) },
            #expect(throws: CoreError.self) { try ChunkerSeed(secret: s) },
            #expect(throws: CoreError.self) { try HostSigningKey(secret: s) },
        ]
        #expect(errors.map { $0?.code } == [.badKey, .badKey, .badKey, .badKey])
    }

    @Test func malformedPublicKeysAreBadKeys() {
        for raw in [[], [UInt8](repeating: 1, count: 32), [UInt8](repeating: 0, count: 1215), [UInt8](repeating: 0,
            count: 1217)] {
            let e = #expect(throws: CoreError.self) { try ReadPublicKey(rawRepresentation: raw) }
            #expect(e?.code == .badKey)
        }
        // Ed25519 public keys are checked for length only.
        for raw in [[], [UInt8](repeating: 1, count: 31), [UInt8](repeating: 1, count: 33)] {
            let e = #expect(throws: CoreError.self) { try HostPublicKey(rawRepresentation: raw) }
            #expect(e?.code == .badKey)
        }
    }

    @Test func hostKeyRebuiltFromItsExportSignsAndVerifies() throws {
        let key = HostSigningKey.generate()
        let again = try HostSigningKey(secret: key.export())
        #expect(again.publicKey == key.publicKey)
        let message: [UInt8] = Array("manifest".utf8)
        let signature = try again.signature(for: message)
        #expect(key.publicKey.isValidSignature(signature, for: message))
        #expect(!key.publicKey.isValidSignature(signature, for: message + [0]))
    }

    @Test func chunkIDsAreKeyed() throws {
        let a = try ChunkIDKey(secret: fixedSecret(2)), b = try ChunkIDKey(secret: fixedSecret(3))
        let data: [UInt8] = Array("same content".utf8)
        #expect(a.chunkID(for: data) == a.chunkID(for: data))
        #expect(a.chunkID(for: data) != b.chunkID(for: data))
        #expect(try ChunkIDKey(secret: a.export()).chunkID(for: data) == a.chunkID(for: data))
    }

    // MARK: Shared write material

    @Test func sharedWriteMaterialRoundTrips() throws {
        let m = try fixedSharedMaterial()
        let encoded = m.encode()
        let decoded = try SharedWriteMaterial.decode(encoded)
        #expect(decoded.readPublicKey == m.readPublicKey)
        #expect(decoded.chunkIDKey.export().equals(m.chunkIDKey.export()))
        #expect(decoded.chunkerSeed.secret.equals(m.chunkerSeed.secret))
        #expect(decoded.encode().equals(encoded))
        #expect(bytes(of: encoded).starts(with: Array("RDBTWKS1".utf8)))

        let generated = try TenantKeys.generate().sharedWriteMaterial
        #expect(try SharedWriteMaterial.decode(generated.encode()).encode().equals(generated.encode()))
    }

    @Test func truncatedOrExtendedSharedWriteMaterialIsCorrupt() throws {
        let encoded = bytes(of: try fixedSharedMaterial().encode())
        for n in 0..<encoded.count {
            let e = #expect(throws: CoreError.self) {
                try SharedWriteMaterial.decode(SecretBytes(copying: encoded.prefix(n)))
            }
            #expect(e?.code == .corrupt, "truncated to \(n) bytes")
        }
        for extra: [UInt8] in [[0], [1, 2, 3], encoded] {
            let e = #expect(throws: CoreError.self) {
                try SharedWriteMaterial.decode(SecretBytes(copying: encoded + extra))
            }
            #expect(e?.code == .corrupt)
        }
    }

    /// Sealed to the read key (what tenant descriptors in the store, buckets and media hold):
    /// opens only with that read key and that tenant's name, and every changed, cut or
    /// extended byte is refused.
    @Test func sealedWriteMaterialOpensOnlyWithItsReadKeyAndTenant() throws {
        let keys = try TenantKeys.generate()
        let m = keys.sharedWriteMaterial
        let sealed = try m.sealed(tenant: "acme")
        #expect(sealed.starts(with: Array("RDBTSWM1".utf8)))
        let secret = bytes(of: m.chunkIDKey.export())
        #expect(!sealed.indices.contains { i in sealed[i...].starts(with: secret) })
        #expect(try SharedWriteMaterial.open(sealed: sealed, tenant: "acme",
            readKey: keys.readKey).encode().equals(m.encode()))
        #expect(try m.sealed(tenant: "acme") != sealed)  // a fresh encapsulation each time

        let other = try TenantKeys.generate()
        #expect(throws: CoreError.self) {
            try SharedWriteMaterial.open(sealed: sealed, tenant: "acme", readKey: other.readKey)
        }
        let wrongTenant = #expect(throws: CoreError.self) {
            try SharedWriteMaterial.open(sealed: sealed, tenant: "acme-b", readKey: keys.readKey)
        }
        #expect(wrongTenant?.code == .authenticationFailed)
        // Another tenant's material sealed to this read key (possible for anyone: it is public).
        let planted = try SharedWriteMaterial(readPublicKey: other.readKey.publicKey,
            chunkIDKey: other.sharedWriteMaterial.chunkIDKey,
                                              chunkerSeed: other.sharedWriteMaterial.chunkerSeed).sealed(tenant: "acme")
        #expect(try SharedWriteMaterial.open(sealed: planted, tenant: "acme",
            readKey: other.readKey).readPublicKey == other.readKey.publicKey)
        #expect(throws: CoreError.self) {
            try SharedWriteMaterial.open(sealed: planted, tenant: "acme", readKey: keys.readKey)
        }

        var rng = SplitMix64(seed: 0x5ea1)
        for n in stride(from: 0, to: sealed.count, by: 37) {
            #expect(throws: CoreError.self) {
                try SharedWriteMaterial.open(sealed: Array(sealed.prefix(n)), tenant: "acme", readKey: keys.readKey)
            }
            var b = sealed
            b[n] ^= UInt8(1 + rng.int(255))
            #expect(throws: CoreError.self) {
                try SharedWriteMaterial.open(sealed: b, tenant: "acme", readKey: keys.readKey)
            }
        }
        #expect(throws: CoreError.self) {
            try SharedWriteMaterial.open(sealed: sealed + [0], tenant: "acme", readKey: keys.readKey)
        }
    }

    /// A changed byte is either refused, or (inside key material, which has no checksum)
    /// decodes to material that encodes back to exactly the changed bytes.
    @Test func mutatedSharedWriteMaterialIsRefusedOrDecodesExactly() throws {
        let encoded = bytes(of: try fixedSharedMaterial().encode())
        var rng = SplitMix64(seed: 0x3e7)
        var refused = 0
        for i in 0..<encoded.count {
            var b = encoded
            b[i] ^= UInt8(1 + rng.int(255))
            do {
                let m = try SharedWriteMaterial.decode(SecretBytes(copying: b))
                #expect(bytes(of: m.encode()) == b, "byte \(i)")
            } catch {
                #expect(error.code == .corrupt || error.code == .badKey, "byte \(i): \(error)")
                refused += 1
            }
        }
        // The magic and the three length prefixes are always refused.
        #expect(refused >= 8 + 3)
        for i in 0..<8 {
            var b = encoded
            b[i] ^= 0x20
            let e = #expect(throws: CoreError.self) { try SharedWriteMaterial.decode(SecretBytes(copying: b)) }
            #expect(e?.code == .corrupt)
        }
    }

    @Test func randomBytesAreNotSharedWriteMaterial() {
        var rng = SplitMix64(seed: 0xacc)
        for round in 0..<2000 {
            var b = rng.bytes(rng.int(1400))
            if round % 2 == 1 {
                // Right magic, random lengths and contents.
                var w = ByteWriter()
                w.raw(Array("RDBTWKS1".utf8))
                w.uvarint(UInt64(rng.int(2) == 0 ? 1216 : rng.int(5000)))
                b = w.bytes + b
            }
            let e = #expect(throws: CoreError.self) { try SharedWriteMaterial.decode(SecretBytes(copying: b)) }
            #expect(e.map { $0.code == .corrupt || $0.code == .badKey } == true)
        }
    }
}

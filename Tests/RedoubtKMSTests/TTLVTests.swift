import Testing

@testable import RedoubtKMS

/// Known answers are the encoding examples of the KMIP 1.4 specification, §9.1.2.
@Suite struct TTLVTests {
    let t20 = TTLV.Tag(rawValue: 0x420020)

    func hex(_ s: String) -> [UInt8] {
        let digits = s.filter { !$0.isWhitespace && $0 != "|" }
        var out: [UInt8] = []
        var i = digits.startIndex
        while i < digits.endIndex {
            let j = digits.index(i, offsetBy: 2)
            out.append(UInt8(digits[i..<j], radix: 16) ?? 0xEE)
            i = j
        }
        return out
    }

    @Test(arguments: [
        ("integer 8", TTLV.Value.integer(8), "42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00"),
        ("long integer", .longInteger(123_456_789_000_000_000),
            "42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00"),
        ("big integer", .bigInteger([0x03, 0xFD, 0x35, 0xEB, 0x6B, 0xC2, 0xDF, 0x46, 0x18, 0x08, 0x00, 0x00]),
         "42 00 20 | 04 | 00 00 00 10 | 00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00"),
        ("enumeration 255", .enumeration(255), "42 00 20 | 05 | 00 00 00 04 | 00 00 00 FF 00 00 00 00"),
        ("boolean true", .boolean(true), "42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 01"),
        ("text string", .textString("Hello World"),
            "42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00"),
        ("byte string", .byteString([1, 2, 3]), "42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 00"),
        ("date-time", .dateTime(1_205_495_800), "42 00 20 | 09 | 00 00 00 08 | 00 00 00 00 47 DA 67 F8"),
        ("interval 10 days", .interval(864_000), "42 00 20 | 0A | 00 00 00 04 | 00 0D 2F 00 00 00 00 00"),
    ])
    func encodesTheSpecificationExamples(name: String, value: TTLV.Value, expected: String) throws {
        let item = TTLV(t20, value)
        #expect(item.encoded() == hex(expected), "\(name)")
        // Big integers decode to their padded form; everything else decodes to itself.
        let decoded = try TTLV.decode(hex(expected))
        if case .bigInteger = value {
            #expect(decoded.encoded() == hex(expected))
        } else {
            #expect(decoded == item, "\(name)")
        }
    }

    @Test func encodesTheSpecificationStructureExample() throws {
        let item = TTLV(t20, .structure([
            TTLV(TTLV.Tag(rawValue: 0x420004), .enumeration(254)),
            TTLV(TTLV.Tag(rawValue: 0x420005), .integer(255)),
        ]))
        let expected =
            hex("""
                42 00 20 | 01 | 00 00 00 20 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 | 42 00 05 | 02 | \
                00 00 00 04 | 00 00 00 FF 00 00 00 00
                """)
        #expect(item.encoded() == expected)
        let decoded = try TTLV.decode(expected)
        #expect(decoded == item)
        #expect(decoded[TTLV.Tag(rawValue: 0x420005)]?.value == .integer(255))
        #expect(TTLV.messageLength(header: Array(expected.prefix(8))) == expected.count)
    }

    @Test func signExtendsNegativeBigIntegers() {
        let item = TTLV(t20, .bigInteger([0x80, 0x01]))
        #expect(item.encoded() == hex("42 00 20 04 00 00 00 08 FF FF FF FF FF FF 80 01"))
    }

    @Test func refusesNonZeroPaddingBadLengthsAndBadBooleans() {
        var padded = hex("42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00")
        padded[padded.count - 1] = 1
        #expect(throws: KeyProviderError.self) { try TTLV.decode(padded) }
        #expect(throws: KeyProviderError.self) {
            try TTLV.decode(hex("42 00 20 | 02 | 00 00 00 08 | 00 00 00 00 00 00 00 08"))
        }
        #expect(throws: KeyProviderError.self) {
            try TTLV.decode(hex("42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 02"))
        }
        #expect(throws: KeyProviderError.self) { try TTLV.decode(hex("42 00 20 | 0B | 00 00 00 00")) }
        #expect(throws: KeyProviderError.self) {
            try TTLV.decode(hex("42 00 20 | 07 | 00 00 00 02 | FF FE 00 00 00 00 00 00"))
        }
    }

    @Test func refusesOversizedAndDeeplyNestedMessages() {
        var item = TTLV(t20, .integer(1))
        for _ in 0..<40 { item = TTLV(t20, .structure([item])) }
        let deep = item.encoded()
        let error = #expect(throws: KeyProviderError.self) { try TTLV.decode(deep) }
        #expect(error?.code == "E_KEY_KMS_PROTOCOL")
        let big = TTLV(t20, .byteString([UInt8](repeating: 7, count: 2 << 20))).encoded()
        #expect(throws: KeyProviderError.self) { try TTLV.decode(big) }
        // A header that claims 4 GiB on a short buffer.
        #expect(throws: KeyProviderError.self) {
            try TTLV.decode(hex("42 00 20 | 08 | FF FF FF F8 | 00 00 00 00 00 00 00 00"))
        }
    }

    func randomItem(_ rng: inout some RandomNumberGenerator, depth: Int) -> TTLV {
        let tag = TTLV.Tag(rawValue: 0x420000 | UInt32.random(in: 0...0xFF, using: &rng))
        switch Int.random(in: 0...(depth < 4 ? 10 : 9), using: &rng) {
        case 0: return TTLV(tag, .integer(Int32.random(in: .min ... .max, using: &rng)))
        case 1: return TTLV(tag, .longInteger(Int64.random(in: .min ... .max, using: &rng)))
        case 2: return TTLV(tag, .bigInteger((0..<8).map { _ in UInt8.random(in: 0...255, using: &rng) }))
        case 3: return TTLV(tag, .enumeration(UInt32.random(in: 0...UInt32.max, using: &rng)))
        case 4: return TTLV(tag, .boolean(Bool.random(using: &rng)))
        case 5: return TTLV(tag, .textString(String((0..<Int.random(in: 0...20, using: &rng)).map {
            _ in "aé€Z".randomElement(using: &rng) ?? "a"
        })))
        case 6: return TTLV(tag, .byteString((0..<Int.random(in: 0...40, using: &rng)).map {
            _ in UInt8.random(in: 0...255, using: &rng)
        }))
        case 7: return TTLV(tag, .dateTime(Int64.random(in: 0...4_000_000_000, using: &rng)))
        case 8, 9: return TTLV(tag, .interval(UInt32.random(in: 0...UInt32.max, using: &rng)))
        default: return TTLV(tag, .structure((0..<Int.random(in: 0...5, using: &rng)).map {
            _ in randomItem(&rng, depth: depth + 1)
        }))
        }
    }

    @Test func randomMessagesRoundTripAndEveryTruncationOrMutationIsAnErrorNotACrash() throws {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let item = TTLV(t20, .structure((0..<4).map { _ in randomItem(&rng, depth: 1) }))
            let bytes = item.encoded()
            #expect(bytes.count % 8 == 0)
            #expect(try TTLV.decode(bytes) == item)
            for cut in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 16)) {
                #expect(throws: KeyProviderError.self) { try TTLV.decode(Array(bytes.prefix(cut))) }
            }
            var mutated = bytes
            for _ in 0..<8 {
                let i = Int.random(in: 0..<mutated.count, using: &rng)
                mutated[i] ^= UInt8.random(in: 1...255, using: &rng)
                _ = try? TTLV.decode(mutated)  // may or may not parse; must not trap
            }
            let noise = (0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = try? TTLV.decode(noise)
        }
    }
}

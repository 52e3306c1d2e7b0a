import Testing
@testable import RedoubtMedia

@Suite struct MediaBlockTests {
    let header = MediaBlockHeader(setID: Array(0..<16), volumeSeq: 2, blockSeq: 7, kind: .data,
                                  lastOfRecord: true, payloadLen: 5, recordSeq: 3, recordOff: 1024)

    @Test func crc32cKnownAnswer() {
        // RFC 3720 B.4 check value for "123456789".
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    }

    @Test func roundTrip() throws {
        let b = try MediaBlock.encode(header, payload: [1, 2, 3, 4, 5], blockSize: 4096)
        #expect(b.count == 4096)
        let (h, p) = try MediaBlock.decode(b, volume: 2, block: 7)
        #expect(h == header)
        #expect(p == [1, 2, 3, 4, 5])
    }

    @Test func everyFlippedBitIsCaughtAndNamed() throws {
        let b = try MediaBlock.encode(header, payload: [9, 8, 7], blockSize: 256)
        for bit in stride(from: 0, to: b.count * 8, by: 13) {
            var d = b
            d[bit / 8] ^= UInt8(1 << (bit % 8))
            let e = #expect(throws: MediaError.self) { try MediaBlock.decode(d, volume: 2, block: 7) }
            #expect(e?.volume == 2 && e?.block == 7 && e?.code == "E_MEDIA_BLOCK")
        }
    }

    @Test func wrongPositionAndTruncation() throws {
        let b = try MediaBlock.encode(header, payload: [], blockSize: 256)
        let e1 = #expect(throws: MediaError.self) { try MediaBlock.decode(b, volume: 3, block: 7) }
        #expect(e1?.detail.contains("volume 2") == true)
        let e2 = #expect(throws: MediaError.self) { try MediaBlock.decode(b, volume: 2, block: 8) }
        #expect(e2?.detail.contains("expected 8") == true)
        let e3 = #expect(throws: MediaError.self) { try MediaBlock.decode(Array(b[0..<40]), volume: 2, block: 7) }
        #expect(e3?.detail.contains("truncated") == true)
        let e4 = #expect(throws: MediaError.self) {
            try MediaBlock.encode(header, payload: [UInt8](repeating: 0, count: 300), blockSize: 256)
        }
        #expect(e4?.code == "E_MEDIA_LIMIT")
    }
}

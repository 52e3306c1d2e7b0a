import NIOCore
import RedoubtStore
import Testing

struct ObjectReaderTests {
    /// A store whose reads come back short must not pass the short piece on as if whole:
    /// the answer would be cut silently or, at zero bytes, never end.
    @Test func aShortPieceIsAnIntegrityErrorNamingTheObject() async throws {
        let key = try #require(ObjectKey("packs/ab/short"))
        for given in [0, 1, 4095] {
            let reader = ObjectReader(key: key, size: 10_000) { _, count in
                ByteBuffer(repeating: 7, count: Swift.min(count, given))
            }
            var passed = 0
            await #expect {
                try await reader.forEachPiece(of: 4096) { passed += $0.readableBytes }
            } throws: { error in
                guard let e = error as? StoreError else { return false }
                return e.code == .integrity && e.key == key.path
            }
            #expect(passed == 0, "a short piece of \(given) bytes was passed on")
        }
    }
}

import Foundation
import RedoubtStore
import Testing

/// The in-memory store passes the same contract as the local and S3 stores, and adds what
/// tests above the store need: legal holds, its own clock, and injected faults.
@Suite struct MemoryStoreTests {
    @Test(arguments: StoreConformance.Check.allCases)
    func conformance(_ check: StoreConformance.Check) async throws {
        try await StoreConformance(makeStore: { MemoryStore() }).run(check)
    }

    @Test func aLegalHoldRefusesDeletionWhateverTheLockSays() async throws {
        let store = MemoryStore()
        let key = try #require(ObjectKey("t/acme/snapshots/x"))
        _ = try await store.put(key, [1], retainUntil: nil)
        let held: any ObjectStore = store
        let capable = try #require(held as? any LegalHoldStore, "MemoryStore is a LegalHoldStore")
        try await capable.setLegalHold(key, on: true)
        #expect(try await capable.legalHold(key) == true)
        await #expect(throws: StoreError.self) { try await store.delete(key, now: Date.distantFuture) }
        #expect(try await store.get(key) == [1])
        try await capable.setLegalHold(key, on: false)
        try await store.delete(key, now: Date())
        #expect(try await store.head(key) == nil)
        let missing = try #require(ObjectKey("t/acme/none"))
        let e = await #expect(throws: StoreError.self) { try await capable.setLegalHold(missing, on: true) }
        #expect(e?.code == .notFound && e?.key == missing.path)
    }

    @Test func locksAreJudgedAtTheCallersTimeAndTheClockIsTheStoresOwn() async throws {
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        let store = MemoryStore(clock: { start })
        #expect(await store.now() == start)
        let key = try #require(ObjectKey("k"))
        _ = try await store.put(key, [7], retainUntil: start.addingTimeInterval(100))
        await #expect(throws: StoreError.self) { try await store.delete(key, now: start.addingTimeInterval(99)) }
        try await store.delete(key, now: start.addingTimeInterval(100))
        #expect(try await store.head(key) == nil)
        // It enforces its locks itself: nothing to warn about.
        let reporting: any ObjectStore = store
        #expect((reporting as? any ImmutabilityReporting)?.immutabilityWarning == nil)
    }

    @Test func injectedFaultsFailTheChosenOperationsTheChosenNumberOfTimes() async throws {
        let store = MemoryStore()
        let pack = try #require(ObjectKey("t/acme/packs/ab/abc"))
        let other = try #require(ObjectKey("t/acme/snapshots/s1"))
        await store.inject(.init(.put, prefix: "t/acme/packs/", times: 2, error: .io))
        for _ in 0..<2 {
            let e = await #expect(throws: StoreError.self) { try await store.put(pack, [1], retainUntil: nil) }
            #expect(e?.code == .io && e?.key == pack.path)
        }
        #expect(try await store.put(pack, [1], retainUntil: nil) == .created)
        #expect(try await store.put(other, [2], retainUntil: nil) == .created)
        await store.inject(.init(.get, error: .integrity))
        let g = await #expect(throws: StoreError.self) { try await store.get(other) }
        #expect(g?.code == .integrity)
        await store.clearFaults()
        #expect(try await store.get(other) == [2])
        #expect(await store.keys == [pack.path, other.path])
    }
}

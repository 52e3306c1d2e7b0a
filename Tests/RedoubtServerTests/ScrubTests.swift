import Foundation
import Testing
import RedoubtClient
import RedoubtCore
import NIOCore
import RedoubtStore
@testable import RedoubtServer

@Suite(.serialized) struct ScrubTests {
    @Test func theScrubFindsAPackCorruptedOnDiskAndRecordsAnIntegrityFinding() async throws {
        let server = try await TestServer.start()
        let keys = try TenantKeys.generate()
        try await server.createTenant("acme", keys: keys)
        let (cfg, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let (packs, manifest) = try makeSnapshot(keys: try cfg.writeKeySet(), files: [
            ("a", (0..<40_000).map { _ in UInt8.random(in: 0...255) }),
        ])
        for p in packs { _ = try await writer.uploadPack(id: p.id, bytes: p.bytes) }
        _ = try await writer.commit(manifestBytes: manifest.bytes)
        let victim = try #require(packs.first)

        // Root on the repository host clears the immutable flag and flips one byte.
        let path = URL(fileURLWithPath: server.home.storePath)
            .appendingPathComponent(RepositoryService.packKey(tenant: "acme", id: victim.id).path).path
        _ = system("chattr -i '\(path)' 2>/dev/null")
        let handle = try #require(FileHandle(forUpdatingAtPath: path), "cannot open \(path) for writing")
        try handle.seek(toOffset: UInt64(victim.bytes.count / 2))
        let byte = try #require(try handle.read(upToCount: 1)?.first)
        try handle.seek(toOffset: UInt64(victim.bytes.count / 2))
        try handle.write(contentsOf: [byte ^ 0x40])
        try handle.close()

        // A month on, every pack is due; the scrub re-reads them all without a key.
        let s = JobScheduler(service: server.service, holder: "a", jobs: [ServerJobs.scrub])
        server.clock.set(server.clock.now().addingTimeInterval(31 * 86400))
        let reports = await s.tick(now: server.clock.now())
        #expect(reports.map(\.outcome) == ["findings"], "\(reports)")
        let findings = try await server.service.catalog.findings(tenant: "acme", since: nil)
        #expect(findings.count == 1, "\(findings)")
        let f = try #require(findings.first)
        #expect(f.code == "E_INTEGRITY" && f.object == "pack \(victim.id)" && f.source == "scrub")
        #expect(f.detail.contains(victim.id.description))
        // Audited once, naming the pack.
        let audited = try await server.admin.audit().filter { $0.action == "integrity-finding" }
        #expect(audited.count == 1 && audited.first?.object == "pack \(victim.id)")
        #expect(audited.first?.outcome == "damaged" && audited.first?.detail.hasPrefix("E_INTEGRITY") == true)
        // `jobs list` shows the run and its outcome.
        let job = try #require(try await server.admin.jobs().first { $0.job == "scrub" && $0.tenant == "acme" })
        #expect(job.outcome == "findings" && job.failures == 0)

        // Found again later: counted, not audited again.
        server.clock.set(server.clock.now().addingTimeInterval(31 * 86400))
        #expect(await s.tick(now: server.clock.now()).map(\.outcome) == ["findings"])
        #expect(try await server.service.catalog.findings(tenant: "acme", since: nil).first?.count == 2)
        #expect(try await server.admin.audit().filter { $0.action == "integrity-finding" }.count == 1)
        await writer.shutdown()
        await server.stop()
    }

    /// The scrub checks a pack larger than one read piece by range alone: no read of the whole
    /// object, none larger than the piece, so its memory does not grow with the pack.
    @Test func theScrubReadsAPackLargerThanOnePieceByRangeOnly() async throws {
        let server = try await TestServer.start(inMemory: true, wrapStore: { ReadRecordingStore(inner: $0) })
        let recorder = try #require(server.service.store as? ReadRecordingStore)
        let keys = try TenantKeys.generate()
        try await server.createTenant("acme", keys: keys)
        let (cfg, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let (packs, manifest) = try makeSnapshot(keys: try cfg.writeKeySet(), files: [
            ("big", (0..<(6 << 20)).map { _ in UInt8.random(in: 0...255) }),
        ])
        let big = try #require(packs.max { $0.bytes.count < $1.bytes.count })
        try #require(big.bytes.count > 2 * PackReader.inspectPieceSize, "pack of \(big.bytes.count) bytes")
        for p in packs { _ = try await writer.uploadPack(id: p.id, bytes: p.bytes) }
        _ = try await writer.commit(manifestBytes: manifest.bytes)

        recorder.reset()
        let s = JobScheduler(service: server.service, holder: "a", jobs: [ServerJobs.scrub])
        server.clock.set(server.clock.now().addingTimeInterval(31 * 86400))
        let reports = await s.tick(now: server.clock.now())
        #expect(reports.map(\.outcome) == ["ok"], "\(reports)")
        let total = packs.reduce(0) { $0 + $1.bytes.count }
        #expect(reports.first?.detail.contains("bytes=\(total) ") == true, "\(reports)")
        let reads = recorder.reads
        #expect(reads.allSatisfy { $0.range != nil }, "whole reads: \(reads.filter { $0.range == nil })")
        #expect(reads.allSatisfy { ($0.range?.count ?? .max) <= PackReader.inspectPieceSize })
        let bigKey = RepositoryService.packKey(tenant: "acme", id: big.id).path
        #expect(reads.filter { $0.key == bigKey }.reduce(0) { $0 + ($1.range?.count ?? 0) } >= big.bytes.count)
        await writer.shutdown()
        await server.stop()
    }

    /// A day-by-day run of the slice rule on a real catalog: packs uploaded over time, one
    /// scrub a day; no pack goes longer than the period without a check.
    @Test func aDailyScrubRereadsEveryPackWithinThirtyDays() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-scrub-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let catalog = try Catalog(path: dir.appendingPathComponent("catalog.db").path)
        let day: TimeInterval = 86400
        let t0 = Date(timeIntervalSince1970: 1_780_000_000)
        var lastCheck: [String: Date] = [:]
        var worst: TimeInterval = 0
        var perDay: [Int] = []
        for d in 0..<120 {
            let now = t0.addingTimeInterval(Double(d) * day)
            // Seven new packs a day for the first 60 days (their upload is their first check).
            if d < 60 {
                for _ in 0..<7 {
                    let id = hexString((0..<32).map { _ in UInt8.random(in: 0...255) })
                    try catalog.insertPack(tenant: "acme", id: id, key: "acme/packs/\(id)", size: 1000,
                                           retainUntil: now.addingTimeInterval(365 * day), chunkIDs: [], now: now)
                    lastCheck[id] = now
                }
            }
            let slice = try catalog.scrubSlice(tenant: "acme", now: now, period: ServerJobs.scrubPeriod,
                                               interval: day)
            perDay.append(slice.count)
            for (id, _) in slice {
                worst = max(worst, now.timeIntervalSince(lastCheck[id] ?? now))
                try catalog.recordScrub(tenant: "acme", pack: id, result: "ok", at: now)
                lastCheck[id] = now
            }
        }
        let end = t0.addingTimeInterval(119 * day)
        for (_, t) in lastCheck { worst = max(worst, end.timeIntervalSince(t)) }
        #expect(lastCheck.count == 420)
        #expect(worst <= ServerJobs.scrubPeriod, "a pack waited \(worst / day) days")
        print("scrub slice: \(lastCheck.count) packs over 120 days, longest wait \(worst / day) days, "
              + "most packs in one day \(perDay.max() ?? 0), after day 60 at most \(perDay[60...].max() ?? 0)")
        // The work is spread: about a thirtieth of 420 packs a day once all exist, not all at once.
        #expect(perDay[60...].allSatisfy { $0 <= 30 }, "\(perDay)")
    }
}

/// A decorator over a real store that records every read (key and range): what the scrub
/// asks of the store, not a stand-in for it.
final class ReadRecordingStore: ObjectStore, @unchecked Sendable {
    let inner: any ObjectStore
    private let lock = NSLock()
    private var log: [(key: String, range: Range<Int>?)] = []

    init(inner: any ObjectStore) { self.inner = inner }

    var reads: [(key: String, range: Range<Int>?)] { lock.withLock { log } }
    func reset() { lock.withLock { log.removeAll() } }

    func get(_ key: ObjectKey, range: Range<Int>?) async throws -> [UInt8] {
        lock.withLock { log.append((key.path, range)) }
        return try await inner.get(key, range: range)
    }
    func put(_ key: ObjectKey, _ data: [UInt8], retainUntil: Date?) async throws -> PutResult {
        try await inner.put(key, data, retainUntil: retainUntil)
    }
    func put(_ key: ObjectKey, contentsOf file: URL, retainUntil: Date?) async throws -> PutResult {
        try await inner.put(key, contentsOf: file, retainUntil: retainUntil)
    }
    func head(_ key: ObjectKey) async throws -> ObjectInfo? { try await inner.head(key) }
    func list(prefix: String) async throws -> [ObjectInfo] { try await inner.list(prefix: prefix) }
    func delete(_ key: ObjectKey, now: Date) async throws { try await inner.delete(key, now: now) }
    func extendRetention(_ key: ObjectKey, until: Date) async throws {
        try await inner.extendRetention(key, until: until)
    }
    /// Each piece is a recorded range read, made when the reader asks for it.
    func reader(_ key: ObjectKey) async throws -> ObjectReader? {
        guard let size = try await inner.head(key)?.size else { return nil }
        return ObjectReader(key: key, size: size) { [self] offset, count in
            ByteBuffer(bytes: try await get(key, range: offset..<offset + count))
        }
    }
}

import Foundation
import Testing
@testable import RedoubtMedia

/// The golden media set v1 (docs/FORMAT.md §13): fixed set ID, time and records.
enum MediaFixture {
    static let setID: [UInt8] = Array(0xA0..<0xB0)
    static let capacity: UInt64 = 14 * 512
    static var records: [MediaRecord] {
        [
            MediaRecord(type: .pack, id: String(repeating: "a1", count: 32), body: (0..<200).map { UInt8($0) }),
            MediaRecord(type: .pack, id: String(repeating: "b2", count: 32), body: (0..<900).map { UInt8($0 % 251) }),
            MediaRecord(type: .manifest, id: String(repeating: "c3", count: 32), body: Array("golden manifest".utf8)),
            MediaRecord(type: .object, id: "tenant-v1.json", body: Array(#"{"tenant":"acme"}"#.utf8)),
            MediaRecord(type: .auditAnchor, id: "",
                body: Array(#"{"seq":3,"hash":"\#(String(repeating: "0", count: 64))"}"#.utf8)),
        ]
    }

    /// Writes the fixture to `path` (volumes path, path.2, …).
    static func write(_ path: String) throws -> MediaWriteSummary {
        let w = try MediaWriter(device: FileSequentialDevice(path: path, capacity: capacity), setID: setID,
            pool: "golden",
                                tenant: "acme", blockSize: 512, created: "2026-11-26T00:00:00Z",
                                retainUntil: "2027-11-26T00:00:00Z", writer: "redoubt-fixture")
        for r in records { try w.append(r) }
        return try w.finish()
    }
}

@Suite struct MediaFixtureTests {
    var fixtureDir: String? { Bundle.module.path(forResource: "Fixtures", ofType: nil).map { $0 + "/v1" } }

    /// Regenerates the committed fixture (run with REDOUBT_REGENERATE_FIXTURES=1 only when the format version changes).
    @Test(.enabled(if: ProcessInfo.processInfo.environment["REDOUBT_REGENERATE_FIXTURES"] == "1"))
    func regenerate() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().path + "/Fixtures/v1"
        for n in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where n.hasPrefix("set.rdm") {
            try FileManager.default.removeItem(atPath: "\(dir)/\(n)")
        }
        let s = try MediaFixture.write("\(dir)/set.rdm")
        #expect(s.volumes == 2)
    }

    @Test func goldenSetReadsBack() throws {
        let dir = try #require(fixtureDir)
        let src = FileSequentialDevice(path: "\(dir)/set.rdm")
        #expect(src.paths.count == 2)
        let (got, rep) = try readAll(src)
        #expect(got == MediaFixture.records)
        #expect(rep.damage.isEmpty)
        #expect(rep.labels.map(\.volumeSeq) == [1, 2])
        #expect(rep.labels.first?.pool == "golden" && rep.labels.first?.tenant == "acme")
        #expect(rep.labels.first?.setID == "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")
        #expect(rep.labels.first?.retainUntil == "2027-11-26T00:00:00Z")
        #expect(rep.setCatalog?.volumeCount == 2)
        #expect(rep.setCatalog?.records.map(\.type) == ["pack", "pack", "manifest", "object", "audit-anchor"])
        #expect(rep.volumeCatalogs.map(\.volumeSeq) == [1, 2])
        #expect(rep.volumeCatalogs.map { $0.records.count }.reduce(0, +) == 5)
    }

    @Test func writerStillProducesTheGoldenBytes() throws {
        let dir = try #require(fixtureDir)
        let tmp = mediaTempDir(); defer { try? FileManager.default.removeItem(atPath: tmp) }
        _ = try MediaFixture.write("\(tmp)/set.rdm")
        for n in ["set.rdm", "set.rdm.2"] {
            let a = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(n)"))
            let b = try Data(contentsOf: URL(fileURLWithPath: "\(tmp)/\(n)"))
            #expect(a == b, "\(n) differs from the golden bytes")
        }
    }
}

import Foundation
import RedoubtCore
@testable import RedoubtServer
import Testing

extension CatalogConformance {
    /// The checks of what the server's own operations keep: verdicts, job leases, the
    /// scrub's ledger, monitoring and alerts.
    func runOperations(_ check: Check, _ c: any CatalogRepositories) async throws {
        let t0 = Self.t0, day = Self.day
        switch check {
        case .verdictsRoundTripAndVolumesCountOnlyUnsharedPacks:
            // p1 only in s1 (new), p2 in s1 and s2 (shared), p3 without a chunk count.
            for (n, size) in [(1, 100), (2, 1000), (3, 10)] {
                try await c.insertPack(
                    tenant: "acme", id: Self.pack(n).description, key: Self.packKey("acme", Self.pack(n)),
                    size: size, retainUntil: t0, chunkIDs: [], now: t0, uploader: "w1", batch: 10, verified: false)
            }
            try await c.recordPackChunkCount(tenant: "acme", pack: Self.pack(1).description, chunks: 7)
            try await c.recordPackChunkCount(tenant: "acme", pack: Self.pack(2).description, chunks: 50)
            // The first count stays.
            try await c.recordPackChunkCount(tenant: "acme", pack: Self.pack(1).description, chunks: 999)
            try await c.insertSnapshot(Self.snapshot(1, committed: t0, retainUntil: t0, packs: 3),
                                       packs: [Self.pack(1), Self.pack(2), Self.pack(3)], requirePacks: true,
                                       manifestKey: nil)
            try await c.insertSnapshot(Self.snapshot(2, committed: t0.addingTimeInterval(1), retainUntil: t0,
                                                     packs: 1),
                                       packs: [Self.pack(2)], requirePacks: true, manifestKey: nil)
            let v1 = try await c.snapshotPackVolumes(tenant: "acme", snapshot: Self.snapshotID(1))
            #expect(v1.newBytes == 110 && v1.newChunks == 7 && v1.referencedBytes == 1110, "\(v1)")
            let v2 = try await c.snapshotPackVolumes(tenant: "acme", snapshot: Self.snapshotID(2))
            #expect(v2.newBytes == 0 && v2.newChunks == 0 && v2.referencedBytes == 1000, "\(v2)")
            // Another tenant's view of the same snapshot names no pack of its own.
            let other = try await c.snapshotPackVolumes(tenant: "beta", snapshot: Self.snapshotID(1))
            #expect(other.newBytes == 0 && other.newChunks == 0 && other.referencedBytes == 0)
            let none = try await c.snapshotPackVolumes(tenant: "acme", snapshot: Self.snapshotID(9))
            #expect(none.newBytes == 0 && none.referencedBytes == 0)

            // Refusals: only the actor's own `denied` records after the given one.
            for (actor, outcome) in [("w1", "denied"), ("w2", "denied"), ("w1", "ok"), ("w1", "denied")] {
                _ = try await c.audit(time: t0, actor: actor, role: "writer", credential: "fp", source: "-",
                                      action: "upload-pack", object: "x", outcome: outcome, detail: "")
            }
            #expect(try await c.refusals(actor: "w1", afterSeq: 0) == (2, 4))
            #expect(try await c.refusals(actor: "w1", afterSeq: 1) == (1, 4))
            #expect(try await c.refusals(actor: "w3", afterSeq: 0) == (0, 4))

            var signals = VerdictSignals()
            signals.files = 12
            signals.newBytes = 110
            signals.refused = 3
            func record(_ n: Int, host: String, at: TimeInterval, _ kind: SnapshotVerdict.Kind) -> VerdictRecord {
                VerdictRecord(snapshot: Self.snapshotID(n), tenant: "acme", host: host,
                              committedAt: t0.addingTimeInterval(at),
                              verdict: SnapshotVerdict(kind: kind, reasons: kind == .clean ? [] : ["why \(n)"]),
                              signals: signals, auditSeq: Int64(n))
            }
            let r1 = record(1, host: "web1", at: 0.25, .suspect), r2 = record(2, host: "web1", at: 10, .clean)
            let r3 = record(3, host: "web1", at: 10, .unknown), r4 = record(4, host: "web2", at: 5, .clean)
            for r in [r1, r2, r3, r4] { try await c.insertVerdict(r) }
            // One verdict per snapshot: a second scoring keeps the first.
            try await c.insertVerdict(record(1, host: "web1", at: 0.25, .clean))
            // Newest commit first, ties by snapshot descending; times exactly as stored.
            #expect(try await c.verdicts(tenant: "acme", host: "web1", limit: 10) == [r3, r2, r1])
            #expect(try await c.verdicts(tenant: "acme", host: "web1", limit: 2) == [r3, r2])
            #expect(try await c.verdicts(tenant: "beta", host: "web1", limit: 10).isEmpty)
            let byID = try await c.verdicts(snapshots: [Self.snapshotID(1), Self.snapshotID(4), Self.snapshotID(9)])
            #expect(byID == [Self.snapshotID(1): r1, Self.snapshotID(4): r4])
            #expect(try await c.verdicts(snapshots: []).isEmpty)
            try await c.clearVerdict(snapshot: Self.snapshotID(1), reasons: ["approved by alice"])
            let cleared = try await c.verdicts(snapshots: [Self.snapshotID(1)])[Self.snapshotID(1)]
            #expect(cleared?.verdict == SnapshotVerdict(kind: .clean, reasons: ["approved by alice"]))
            #expect(cleared?.signals == signals && cleared?.auditSeq == 1)

            // Settings: defaults until set, then what was set, per tenant.
            #expect(try await c.detectionSettings(tenant: "acme") == Wire.DetectionSettings())
            var s = Wire.DetectionSettings()
            s.baselineSnapshots = 9
            s.spreadFactor = 2.5
            try await c.setDetectionSettings(tenant: "acme", s)
            #expect(try await c.detectionSettings(tenant: "acme") == s)
            s.baselineSnapshots = 4
            try await c.setDetectionSettings(tenant: "acme", s)
            #expect(try await c.detectionSettings(tenant: "acme") == s)
            #expect(try await c.detectionSettings(tenant: "beta") == Wire.DetectionSettings())

        default:
            Issue.record("\(check) is not an operations check")
        }
    }
}

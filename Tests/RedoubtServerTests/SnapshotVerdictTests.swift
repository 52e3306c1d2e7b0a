import Foundation
import GRDB
import Testing
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer

/// A snapshot of one file of `data` whose manifest carries `activity` and claims `files`
/// files, dated at the server's clock (commits are ordered by the server's time).
func makeActivitySnapshot(keys: WriteKeySet, data: [UInt8], activity: SnapshotActivity?, files: UInt64,
                          now: Date, alsoNaming: [PackID] = []) throws -> (packs: [FinishedPack], manifest: Manifest) {
    let pipeline = try PackPipeline(material: keys.shared)
    let node = Node(name: Array("f".utf8), type: .file, size: UInt64(data.count), content: try pipeline.add(blob: data))
    let root = try pipeline.add(tree: Tree(nodes: [node]))
    let packs = try pipeline.flush()
    var stats = SnapshotStatistics()
    stats.files = files
    let header = ManifestHeader(tenant: keys.tenant, readKeyID: keys.shared.readPublicKey.keyID, host: keys.host,
                                hostKey: keys.signingKey.publicKey,
                                time: Timestamp(seconds: Int64(now.timeIntervalSince1970)),
                                nonce: (0..<16).map { _ in UInt8.random(in: 0...255) }, paths: [Array("/data".utf8)],
                                tags: [], statistics: stats, packs: packs.map(\.id) + alsoNaming,
                                clientVersion: "test", activity: activity)
    return (packs, try Manifest.create(header: header, root: root, rootSeals: pipeline.seals(for: root),
                                       version: activity == nil ? 2 : 4, readPublicKey: keys.shared.readPublicKey,
                                       signingKey: keys.signingKey))
}

/// The verdict rules on their own (no server).
struct VerdictScorerTests {
    static func normal(churn: UInt64 = 10, newBytes: Int64 = 100_000) -> VerdictSignals {
        var a = SnapshotActivity()
        a.hasBaseline = true
        a.filesChanged = churn
        a.sampledFiles = churn
        var s = VerdictSignals()
        s.activity = a
        s.files = 2000
        s.newBytes = newBytes
        s.newChunks = 5
        s.referencedBytes = 50_000_000
        return s
    }

    static let history = (0..<5).map { normal(churn: 8 + UInt64($0), newBytes: 90_000 + Int64($0) * 5000) }

    @Test func anOrdinarySnapshotIsCleanAndAFirstOneUnknown() {
        let v = VerdictScorer.score(Self.normal(), history: Self.history, settings: .init())
        #expect(v.kind == .clean)
        #expect(v.reasons.isEmpty)
        var first = Self.normal()
        first.activity?.hasBaseline = false
        #expect(VerdictScorer.score(first, history: [], settings: .init()).kind == .unknown)
        var old = Self.normal()
        old.activity = nil
        let u = VerdictScorer.score(old, history: Self.history, settings: .init())
        #expect(u.kind == .unknown)
        #expect(u.reasons.first?.contains("activity") == true)
    }

    @Test func eachContentRuleMakesASuspect() {
        var notes = Self.normal()
        notes.activity?.ransomNoteDirectories = 3
        var known = Self.normal()
        known.activity?.knownRansomExtension = 3
        var newExt = Self.normal()
        newExt.activity?.topNewExtension = "xq7"
        newExt.activity?.topNewExtensionFiles = 40
        var content = Self.normal()
        content.activity?.suspiciousContentFiles = 20
        content.activity?.highEntropyFiles = 20
        for (name, s) in [("notes", notes), ("known", known), ("new extension", newExt), ("content", content)] {
            let v = VerdictScorer.score(s, history: Self.history, settings: .init())
            #expect(v.kind == .suspect, "\(name)")
            #expect(!v.reasons.isEmpty)
        }
        // Just under each threshold: clean.
        notes.activity?.ransomNoteDirectories = 2
        content.activity?.suspiciousContentFiles = 9
        newExt.activity?.topNewExtensionFiles = 19
        for s in [notes, content, newExt] {
            #expect(VerdictScorer.score(s, history: Self.history, settings: .init()).kind == .clean)
        }
        // A tenant's own threshold applies.
        var strict = Wire.DetectionSettings()
        strict.suspiciousFiles = 5
        strict.suspiciousShare = 0.001
        #expect(VerdictScorer.score(content, history: Self.history, settings: strict).kind == .suspect)
    }

    @Test func aHostThatUsuallyWritesRandomFilesIsJudgedAgainstItsOwnBaseline() {
        let noisy = (0..<5).map { k -> VerdictSignals in
            var s = Self.normal()
            s.activity?.suspiciousContentFiles = 50 + UInt64(k)
            return s
        }
        var today = Self.normal()
        today.activity?.suspiciousContentFiles = 55
        #expect(VerdictScorer.score(today, history: noisy, settings: .init()).kind == .clean)
        today.activity?.suspiciousContentFiles = 400
        #expect(VerdictScorer.score(today, history: noisy, settings: .init()).kind == .suspect)
    }

    @Test func whatTheServerMeasuresJudgesEvenWhenTheHostLies() {
        // A host that reports nothing unusual but sent new packs for most of its data.
        var liar = Self.normal()
        liar.newBytes = 40_000_000
        let v = VerdictScorer.score(liar, history: Self.history, settings: .init())
        #expect(v.kind == .suspect)
        #expect(v.reasons.contains { $0.contains("rewrote") })
        #expect(v.reasons.contains { $0.contains("new bytes after dedup") })
        // Without a baseline the volume is not judged.
        #expect(VerdictScorer.score(liar, history: Array(Self.history.prefix(2)), settings: .init()).kind == .clean)
        // Refusals are judged without one.
        var prober = Self.normal()
        prober.refused = 20
        #expect(VerdictScorer.score(prober, history: [], settings: .init()).kind == .suspect)
        // A large upload that is a small share of the data is a note, not a verdict.
        var upgrade = Self.normal()
        upgrade.newBytes = 12_000_000
        let u = VerdictScorer.score(upgrade, history: Self.history, settings: .init())
        #expect(u.kind == .clean)
        #expect(u.reasons.contains { $0.contains("new bytes after dedup") })
    }

    @Test func settingsOutOfRangeAreNamed() {
        var s = Wire.DetectionSettings()
        s.baselineSnapshots = 0
        #expect(s.problem?.contains("baselineSnapshots") == true)
        s = Wire.DetectionSettings()
        s.suspiciousShare = 1.5
        #expect(s.problem?.contains("suspiciousShare") == true)
        #expect(Wire.DetectionSettings.defaults.problem == nil)
    }
}

/// Verdicts, automatic holds and `latest-clean` against a real server with a manual clock.
@Suite(.serialized) struct SnapshotVerdictTests {
    struct World {
        let server: TestServer
        let writer: APIClient
        let keys: WriteKeySet
        let restorer: APIClient
        let bob: APIClient
    }

    /// Tenant "acme" with host "web1", a restorer, and a second admin (a hold's release needs approval).
    func world() async throws -> World {
        let server = try await TestServer.start()
        try await server.createTenant("acme", keys: try TenantKeys.generate())
        let token = try await server.admin.addAdmin(name: "bob", ttlSeconds: nil, requestID: nil).token
        let cfg = ClientConfig(path: server.dir.appendingPathComponent("cfg-admin-bob").path)
        _ = try await ClientConfig.enroll(token: token, into: cfg, os: nil)
        let bob = try APIClient(credential: cfg.credential())
        let (wc, writer) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let (_, restorer) = try await server.enroll(tenant: "acme", role: "restorer", name: "r1")
        return World(server: server, writer: writer, keys: try wc.writeKeySet(), restorer: restorer, bob: bob)
    }

    static func activity(baseline: Bool = true, changed: UInt64 = 10, suspicious: UInt64 = 0) -> SnapshotActivity {
        var a = SnapshotActivity()
        a.hasBaseline = baseline
        a.filesChanged = changed
        a.sampledFiles = changed + suspicious
        a.suspiciousContentFiles = suspicious
        a.highEntropyFiles = suspicious
        return a
    }

    /// Commits one snapshot an hour after the previous one (by the server's manual clock).
    func commit(_ w: World, _ activity: SnapshotActivity?, bytes: Int = 50_000) async throws -> Wire.SnapshotInfo {
        w.server.clock.set(w.server.clock.now().addingTimeInterval(3600))
        let data = (0..<bytes).map { _ in UInt8.random(in: 0...255) }
        let (packs, manifest) = try makeActivitySnapshot(keys: w.keys, data: data, activity: activity, files: 1000,
                                                         now: w.server.clock.now())
        for p in packs { _ = try await w.writer.uploadPack(id: p.id, bytes: p.bytes) }
        return try await w.writer.commit(manifestBytes: manifest.bytes)
    }

    func verdicts(_ w: World) async throws -> [String: Wire.SnapshotInfo] {
        Dictionary(uniqueKeysWithValues: try await w.restorer.snapshots(host: "web1").map { ($0.id, $0) })
    }

    @Test(.sqliteCatalogOnly)
    func aSuspectCommitHoldsTheHostsNewestCleanSnapshotsAndTheHostCannotUndoIt() async throws {
        let w = try await world()
        let first = try await commit(w, Self.activity(baseline: false))
        var clean: [Wire.SnapshotInfo] = []
        for _ in 0..<4 { clean.append(try await commit(w, Self.activity())) }
        var seen = try await verdicts(w)
        #expect(seen[first.id]?.verdict == "unknown")
        for c in clean { #expect(seen[c.id]?.verdict == "clean", "\(seen[c.id]?.verdictReasons ?? [])") }
        #expect(LatestClean.pick(try await w.restorer.snapshots(host: "web1"), host: "web1")?.id == clean.last?.id)

        // The attack: 300 of 1000 files now look encrypted.
        let attack = try await commit(w, Self.activity(changed: 300, suspicious: 300))
        seen = try await verdicts(w)
        #expect(seen[attack.id]?.verdict == "suspect")
        #expect(seen[attack.id]?.verdictReasons?.first?.contains("300 changed files look encrypted") == true)
        #expect(LatestClean.pick(try await w.restorer.snapshots(host: "web1"), host: "web1")?.id == clean.last?.id)

        // The three newest clean snapshots are held by the detector, and audited.
        let holds = try await w.server.service.catalog.holds(active: true)
        #expect(Set(holds.map(\.target)) == Set(clean.suffix(3).map(\.id)))
        #expect(holds.allSatisfy { $0.createdBy == "detector" && $0.reason.contains("suspect") })
        #expect(try await !w.server.service.catalog.isHeld(snapshot: clean[0].id))
        let audit = try await w.server.service.catalog.auditRecords()
        #expect(audit.contains { $0.action == "snapshot-verdict" && $0.outcome == "suspect"
            && $0.object == "snapshot \(attack.id)" })
        #expect(audit.filter { $0.action == "place-hold" && $0.actor == "detector" }.count == 3)
        // And notified once: a one-off kept in the catalog, so a restart does not send it again.
        let notified = try w.server.service.sqlite.db.read { db in
            try Row.fetchAll(db, sql: "SELECT host, summary FROM notify_alerts WHERE kind = 'suspect-snapshot'")
        }
        #expect(notified.count == 1)
        #expect((notified.first?["summary"] as String?)?.contains(attack.id.prefix(8)) == true, "\(notified)")

        // The host, as an attacker would: it sees no verdicts, cannot lift a hold, cannot tune detection.
        let own = try await w.writer.snapshots(host: nil)
        #expect(own.count == 6 && own.allSatisfy { $0.verdict == nil && $0.verdictReasons == nil })
        for h in holds {
            await refused("E_FORBIDDEN", "a host lifting a hold") { _ = try await w.writer.releaseHold(id: h.id,
                requestID: nil) }
        }
        var lax = Wire.DetectionSettings()
        lax.suspiciousFiles = 1_000_000
        await refused("E_FORBIDDEN", "a host raising its thresholds") {
            _ = try await w.writer.setDetection(tenant: "acme", lax)
        }
        // Quiet snapshots after the attack stay suspect: the files are still encrypted.
        let after = try await commit(w, Self.activity())
        seen = try await verdicts(w)
        #expect(seen[after.id]?.verdict == "suspect")
        #expect(seen[after.id]?.verdictReasons?.first?.contains("follows suspect snapshot \(attack.id)") == true)
        #expect(LatestClean.pick(try await w.restorer.snapshots(host: "web1"), host: "web1")?.id == clean.last?.id)
        #expect(try await w.server.service.catalog.holds(active: true).count == 3, "no new holds for the same attack")

        // Even one admin cannot lift the detector's hold alone: it needs the quorum.
        await refused("E_APPROVAL_REQUIRED", "one admin lifting a hold") {
            _ = try await w.server.admin.releaseHold(id: holds[0].id, requestID: nil)
        }
        #expect(try await w.server.service.catalog.isHeld(snapshot: holds[0].target))

        // A false positive, or a rebuilt host: the admins' quorum clears the newest suspect
        // verdict; the host's next snapshot is judged on its own again. The host cannot.
        await refused("E_FORBIDDEN", "a host clearing its own verdict") {
            _ = try await w.writer.clearVerdict(snapshot: after.id, reason: "all fine", requestID: nil)
        }
        await refused("E_APPROVAL_REQUIRED", "one admin clearing a verdict") {
            _ = try await w.server.admin.clearVerdict(snapshot: after.id, reason: "host rebuilt", requestID: nil)
        }
        let req = try #require(try await w.server.admin.requests().first { $0.action == "clear-verdict" })
        _ = try await w.bob.decide(request: req.id, approve: true)
        let cleared = try await w.server.admin.clearVerdict(snapshot: after.id, reason: "host rebuilt",
                                                            requestID: req.id)
        #expect(cleared.verdict == "clean" && cleared.reasons.first?.hasPrefix("cleared by admin ") == true
            && cleared.reasons.first?.hasSuffix(": host rebuilt") == true)
        let next = try await commit(w, Self.activity())
        seen = try await verdicts(w)
        #expect(seen[attack.id]?.verdict == "suspect", "the attack itself stays suspect")
        #expect(seen[after.id]?.verdict == "clean")
        #expect(seen[next.id]?.verdict == "clean", "\(seen[next.id]?.verdictReasons ?? [])")
        #expect(try await w.server.service.catalog.holds(active: true).count == 3, "holds stay until released")
        await w.server.stop()
    }

    @Test func refusedRequestBurstsAndATenantsSettingsJudgeCommits() async throws {
        let w = try await world()
        var s = Wire.DetectionSettings()
        s.refusedBurst = 5
        s.holdSnapshots = 1
        let set = try await w.server.admin.setDetection(tenant: "acme", s)
        #expect(set.refusedBurst == 5 && set.holdSnapshots == 1 && set.baselineSnapshots == 10)
        var bad = Wire.DetectionSettings()
        bad.rewriteShare = 0
        await refused("E_BAD_REQUEST", "a share of zero") { _ = try await w.server.admin.setDetection(tenant: "acme",
            bad) }
        let a = try await commit(w, Self.activity(baseline: false))
        let b = try await commit(w, Self.activity())
        // The host probes what it may not do: read packs, list another host.
        for _ in 0..<5 {
            _ = try? await w.writer.snapshots(host: "db1")
        }
        let c = try await commit(w, Self.activity())
        let seen = try await verdicts(w)
        #expect(seen[a.id]?.verdict == "unknown")
        #expect(seen[b.id]?.verdict == "clean")
        #expect(seen[c.id]?.verdict == "suspect")
        #expect(seen[c.id]?.verdictReasons?.first?.contains("5 refused requests") == true)
        #expect(try await w.server.service.catalog.holds(active: true).map(\.target) == [b.id])
        await w.server.stop()
    }
}

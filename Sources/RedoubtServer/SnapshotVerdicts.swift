import Foundation
import RedoubtCore

// Ransomware verdicts (docs/PROTOCOL.md §4.9). Each commit is scored against its host's
// own baseline: the host's account of what changed (the manifest's activity section,
// FORMAT.md §6.5) and what the server measured itself, which a host that lies in its
// manifest cannot change: the new pack bytes and chunks the snapshot brought, the share of
// the snapshot's packs they are, and the requests the server refused the host's credential.

/// What the server knows of one commit, kept with its verdict as the next commits' baseline.
public struct VerdictSignals: Codable, Sendable, Equatable {
    /// The host's own account (nil: a manifest before format 3, or a later activity version).
    public var activity: SnapshotActivity?
    /// Files in the snapshot (the header's count).
    public var files: UInt64 = 0
    /// Bytes of the packs the snapshot names that no earlier snapshot named (server-measured).
    public var newBytes: Int64 = 0
    /// Chunks in those packs (server-measured).
    public var newChunks: Int64 = 0
    /// Bytes of all the packs the snapshot names (server-measured).
    public var referencedBytes: Int64 = 0
    /// Requests from the host's credential the server refused since its previous verdict.
    public var refused: Int64 = 0

    public init() {}

    /// New pack bytes as a share of the snapshot's pack bytes.
    var rewriteShare: Double { referencedBytes > 0 ? Double(newBytes) / Double(referencedBytes) : 0 }
    /// Files the host says it added, changed or deleted.
    var churn: UInt64? { activity.map { $0.filesAdded + $0.filesChanged + $0.filesDeleted } }
}

/// A verdict and why.
public struct SnapshotVerdict: Sendable, Equatable {
    public enum Kind: String, Sendable, Codable { case clean, suspect, unknown }
    public var kind: Kind
    /// Human-readable reasons, most serious first; each names the measured value and its threshold.
    public var reasons: [String]
}

/// Scores a commit. Pure: no catalog, no clock (tested in SnapshotVerdictTests).
public enum VerdictScorer {
    /// `history`: the host's previous snapshots not judged suspect, newest first, at most
    /// the settings' baseline size.
    public static func score(_ s: VerdictSignals, history: [VerdictSignals],
                             settings: Wire.DetectionSettings) -> SnapshotVerdict {
        let d = Wire.DetectionSettings.defaults.merging(settings)
        var suspect: [String] = [], notes: [String] = []
        let files = max(s.files, 1)
        let k = d.spreadFactor ?? 4
        let baselineReady = history.count >= (d.minimumBaseline ?? 3)

        // Server-measured first: a host cannot talk these away.
        if s.refused >= Int64(d.refusedBurst ?? 20) {
            suspect.append("\(s.refused) refused requests from this host's credential since its previous snapshot "
                           + "(threshold \(d.refusedBurst ?? 20))")
        }
        if baselineReady {
            let share = s.rewriteShare, usual = median(history.map(\.rewriteShare))
            let limit = d.rewriteShare ?? 0.5
            if share >= limit && usual < limit / 2 && s.newBytes > d.uploadFloorBytes ?? 0 {
                suspect.append("rewrote \(percent(share)) of its data: \(s.newBytes) new bytes of "
                               + "\(s.referencedBytes) (usual \(percent(usual)), threshold \(percent(limit)))")
            }
            let bytesLimit = threshold(history.map { Double($0.newBytes) }, k: k)
            if Double(s.newBytes) > max(bytesLimit, Double(d.uploadFloorBytes ?? 0)) {
                let usualBytes = Int64(median(history.map { Double($0.newBytes) }))
                notes.append("uploaded \(s.newBytes) new bytes after dedup (usual \(usualBytes), "
                             + "unusual above \(Int64(bytesLimit)))")
            }
            let chunkLimit = threshold(history.map { Double($0.newChunks) }, k: k)
            if Double(s.newChunks) > chunkLimit && s.newBytes > d.uploadFloorBytes ?? 0 {
                notes.append("\(s.newChunks) new chunks (unusual above \(Int64(chunkLimit)))")
            }
        }

        // The host's own account, when it gives one and had a previous snapshot to compare with.
        var verdictUnknown: String?
        if let a = s.activity, a.hasBaseline {
            if a.ransomNoteDirectories >= UInt64(d.ransomNoteDirectories ?? 3) {
                suspect.append("ransom-note file names appeared in \(a.ransomNoteDirectories) directories "
                               + "(threshold \(d.ransomNoteDirectories ?? 3))")
            }
            if a.knownRansomExtension >= UInt64(d.knownExtensionFiles ?? 3) {
                suspect.append("\(a.knownRansomExtension) files got a known ransomware extension "
                               + "(threshold \(d.knownExtensionFiles ?? 3))")
            }
            let extLimit = max(Double(d.newExtensionFiles ?? 20), (d.newExtensionShare ?? 0.01) * Double(files))
            if Double(a.topNewExtensionFiles) >= extLimit {
                suspect.append("\(a.topNewExtensionFiles) files got the new extension .\(a.topNewExtension) "
                               + "(threshold \(Int(extLimit.rounded(.up))))")
            }
            let usual = history.compactMap { $0.activity.map { Double($0.suspiciousContentFiles) } }
            let contentLimit = max(Double(d.suspiciousFiles ?? 10), (d.suspiciousShare ?? 0.005) * Double(files),
                                   usual.count >= (d.minimumBaseline ?? 3) ? threshold(usual, k: k) : 0)
            if Double(a.suspiciousContentFiles) >= contentLimit {
                suspect.append("\(a.suspiciousContentFiles) changed files look encrypted: \(a.highEntropyFiles) with "
                               + "a random head of no known format, \(a.typeMismatchFiles) not matching their "
                               + "extension, of \(a.sampledFiles) sampled "
                               + "(threshold \(Int(contentLimit.rounded(.up))))")
            }
            if a.sealedBytesRaw > 0 && s.newBytes > d.uploadFloorBytes ?? 0
                && Double(s.newBytes) >= 0.95 * Double(a.sealedBytesRaw) {
                notes.append("changed data did not compress: \(s.newBytes) bytes stored for \(a.sealedBytesRaw) "
                             + "the host says it read")
            }
            if baselineReady, let churn = s.churn {
                let past = history.compactMap { $0.churn.map(Double.init) }
                if past.count >= (d.minimumBaseline ?? 3) {
                    let limit = max(threshold(past, k: k), 100)
                    if Double(churn) > limit {
                        notes.append("\(churn) files added, changed or deleted (usual \(Int(median(past))), "
                                     + "unusual above \(Int(limit)))")
                    }
                }
            }
        } else if s.activity == nil {
            verdictUnknown = "the manifest has no activity section this server reads (a client before format 3)"
        } else {
            verdictUnknown = "the host had no previous snapshot to compare with"
        }
        if !suspect.isEmpty { return SnapshotVerdict(kind: .suspect, reasons: suspect + notes) }
        if let verdictUnknown { return SnapshotVerdict(kind: .unknown, reasons: [verdictUnknown] + notes) }
        if !baselineReady {
            notes.append("baseline of \(history.count) snapshots; volumes are judged from \(d.minimumBaseline ?? 3)")
        }
        return SnapshotVerdict(kind: .clean, reasons: notes)
    }

    /// The median of the values (0 for none).
    static func median(_ v: [Double]) -> Double {
        guard !v.isEmpty else { return 0 }
        let s = v.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// Median plus `k` spreads, where the spread is the scaled median absolute deviation,
    /// and at least a quarter of the median and 1: a host whose every snapshot looked alike
    /// would otherwise find any change unusual.
    static func threshold(_ v: [Double], k: Double) -> Double {
        let m = median(v)
        let mad = median(v.map { abs($0 - m) }) * 1.4826
        return m + k * max(mad, m / 4, 1)
    }

    static func percent(_ x: Double) -> String { "\(Int((x * 100).rounded()))%" }
}

import Foundation

extension Wire {
    /// A tenant's ransomware-detection settings (docs/PROTOCOL.md §4.9): how many of a
    /// host's snapshots form its baseline, and the thresholds of each rule. Every field has
    /// a default; `PUT /v1/tenants/{tenant}/detection` sets the fields it sends and keeps the rest.
    public struct DetectionSettings: Codable, Sendable, Equatable {
        /// The baseline: this many of the host's latest snapshots not judged suspect.
        public var baselineSnapshots: Int?
        /// Fewer snapshots than this in the baseline: the volume rules do not judge.
        public var minimumBaseline: Int?
        /// A volume is unusual above the baseline's median plus this many spreads.
        public var spreadFactor: Double?
        /// Ransom-note names in at least this many directories: suspect.
        public var ransomNoteDirectories: Int?
        /// Files with a known ransomware extension, at least: suspect.
        public var knownExtensionFiles: Int?
        /// Files sharing one extension the previous snapshot did not have: suspect at this
        /// count and this share of the snapshot's files, both.
        public var newExtensionFiles: Int?
        public var newExtensionShare: Double?
        /// Changed files that look encrypted (random head, or content not matching the
        /// extension): suspect at this count and this share of the files, both, and above the baseline.
        public var suspiciousFiles: Int?
        public var suspiciousShare: Double?
        /// Server-measured: new pack bytes at least this share of all the pack bytes the
        /// snapshot names (while the baseline's median is under half of it): suspect.
        public var rewriteShare: Double?
        /// New pack bytes below this never count as unusual.
        public var uploadFloorBytes: Int64?
        /// Refused requests from the host's credential since its previous snapshot, at least: suspect.
        public var refusedBurst: Int?
        /// How many of the host's newest snapshots not judged suspect a suspect one puts under legal hold.
        public var holdSnapshots: Int?

        public init() {}

        /// Every field set: the defaults (docs/PROTOCOL.md §4.9).
        public static let defaults: DetectionSettings = {
            var d = DetectionSettings()
            d.baselineSnapshots = 10
            d.minimumBaseline = 3
            d.spreadFactor = 4
            d.ransomNoteDirectories = 3
            d.knownExtensionFiles = 3
            d.newExtensionFiles = 20
            d.newExtensionShare = 0.01
            d.suspiciousFiles = 10
            d.suspiciousShare = 0.005
            d.rewriteShare = 0.5
            d.uploadFloorBytes = 8 << 20
            d.refusedBurst = 20
            d.holdSnapshots = 3
            return d
        }()

        /// These settings with the fields `other` sets replaced.
        public func merging(_ other: DetectionSettings) -> DetectionSettings {
            var m = self
            m.baselineSnapshots = other.baselineSnapshots ?? m.baselineSnapshots
            m.minimumBaseline = other.minimumBaseline ?? m.minimumBaseline
            m.spreadFactor = other.spreadFactor ?? m.spreadFactor
            m.ransomNoteDirectories = other.ransomNoteDirectories ?? m.ransomNoteDirectories
            m.knownExtensionFiles = other.knownExtensionFiles ?? m.knownExtensionFiles
            m.newExtensionFiles = other.newExtensionFiles ?? m.newExtensionFiles
            m.newExtensionShare = other.newExtensionShare ?? m.newExtensionShare
            m.suspiciousFiles = other.suspiciousFiles ?? m.suspiciousFiles
            m.suspiciousShare = other.suspiciousShare ?? m.suspiciousShare
            m.rewriteShare = other.rewriteShare ?? m.rewriteShare
            m.uploadFloorBytes = other.uploadFloorBytes ?? m.uploadFloorBytes
            m.refusedBurst = other.refusedBurst ?? m.refusedBurst
            m.holdSnapshots = other.holdSnapshots ?? m.holdSnapshots
            return m
        }

        /// Why the settings are out of range, or nil: counts at least 1 (the baseline at most
        /// 1000, the hold at most 100), shares in (0, 1], the spread factor in (0, 100].
        public var problem: String? {
            let counts: [(String, Int?, Int)] = [
                ("baselineSnapshots", baselineSnapshots, 1000), ("minimumBaseline", minimumBaseline, 1000),
                ("ransomNoteDirectories", ransomNoteDirectories, Int.max),
                ("knownExtensionFiles", knownExtensionFiles, Int.max),
                ("newExtensionFiles", newExtensionFiles, Int.max),
                ("suspiciousFiles", suspiciousFiles, Int.max), ("refusedBurst", refusedBurst, Int.max),
                ("holdSnapshots", holdSnapshots, 100),
            ]
            for (name, v, most) in counts {
                if let v, v < 1 || v > most { return "\(name) must be between 1 and \(most)" }
            }
            for (name, v) in [("newExtensionShare", newExtensionShare), ("suspiciousShare", suspiciousShare),
                              ("rewriteShare", rewriteShare)] {
                if let v, !(v > 0 && v <= 1) { return "\(name) must be above 0 and at most 1" }
            }
            if let f = spreadFactor, !(f > 0 && f <= 100) { return "spreadFactor must be above 0 and at most 100" }
            if let b = uploadFloorBytes, b < 0 { return "uploadFloorBytes must not be negative" }
            return nil
        }
    }
}

extension Wire {
    /// `POST /v1/snapshots/{id}/verdict` (admin, approved by the quorum): an admin's
    /// judgement that a suspect snapshot is clean (a false positive, or the host was
    /// rebuilt), with the reason. Later snapshots of the host no longer follow it as suspect.
    public struct ClearVerdictRequest: Codable, Sendable {
        public var reason: String
        public var requestID: String?
        public init(reason: String, requestID: String?) {
            self.reason = reason
            self.requestID = requestID
        }
    }

    /// A snapshot's verdict after an admin cleared it.
    public struct VerdictInfo: Codable, Sendable, Equatable {
        public var snapshot: String
        public var verdict: String
        public var reasons: [String]
        public init(snapshot: String, verdict: String, reasons: [String]) {
            self.snapshot = snapshot
            self.verdict = verdict
            self.reasons = reasons
        }
    }
}

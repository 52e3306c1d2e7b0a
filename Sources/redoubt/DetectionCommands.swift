import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore

// `admin detection TENANT [--baseline N] …`: a tenant's ransomware-detection baseline and
// thresholds (docs/PROTOCOL.md §4.9). Without options it prints the settings in force.
struct AdminDetectionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "detection",
        abstract: "Show or set a tenant's ransomware-detection baseline and thresholds.")
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The tenant.") var tenant: String
    @Option(name: .long, help: "Snapshots of a host that form its baseline (default 10).") var baseline: Int?
    @Option(name: .long, help: "Baseline snapshots needed before volumes are judged (default 3).")
    var minimumBaseline: Int?
    @Option(name: .long, help: "Unusual above the median plus this many spreads (default 4).") var spreadFactor: Double?
    @Option(name: .long, help: "Directories with a ransom-note name: suspect (default 3).") var noteDirectories: Int?
    @Option(name: .long, help: "Files with a known ransomware extension: suspect (default 3).")
    var knownExtensionFiles: Int?
    @Option(name: .long, help: "Files sharing one new extension: suspect (default 20).") var newExtensionFiles: Int?
    @Option(name: .long, help: "… and at least this share of the files (default 0.01).") var newExtensionShare: Double?
    @Option(name: .long, help: "Changed files that look encrypted: suspect (default 10).") var suspiciousFiles: Int?
    @Option(name: .long, help: "… and at least this share of the files (default 0.005).") var suspiciousShare: Double?
    @Option(name: .long, help: "New pack bytes as a share of the snapshot's: suspect (default 0.5).")
    var rewriteShare: Double?
    @Option(name: .long, help: "New bytes below this are never unusual (default 8388608).") var uploadFloor: Int64?
    @Option(name: .long, help: "Refused requests since the previous snapshot: suspect (default 20).")
    var refusedBurst: Int?
    @Option(name: .long, help: "Newest not-suspect snapshots held after a suspect one (default 3).")
    var holdSnapshots: Int?
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            var req = Wire.DetectionSettings()
            req.baselineSnapshots = baseline
            req.minimumBaseline = minimumBaseline
            req.spreadFactor = spreadFactor
            req.ransomNoteDirectories = noteDirectories
            req.knownExtensionFiles = knownExtensionFiles
            req.newExtensionFiles = newExtensionFiles
            req.newExtensionShare = newExtensionShare
            req.suspiciousFiles = suspiciousFiles
            req.suspiciousShare = suspiciousShare
            req.rewriteShare = rewriteShare
            req.uploadFloorBytes = uploadFloor
            req.refusedBurst = refusedBurst
            req.holdSnapshots = holdSnapshots
            if let problem = req.problem { throw ValidationError(problem) }
            let s = try await RedoubtCLI.with(try admin.client()) { try await $0.setDetection(tenant: tenant, req) }
            if json {
                try printJSON(s)
            } else {
                let data = try JSONEncoder().encode(s)
                let fields = (try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
                for k in fields.keys.sorted() { print("\(k) \(fields[k].map { "\($0)" } ?? "-")") }
            }
            return .ok
        }
    }
}

// `admin verdict-clear SNAPSHOT --reason TEXT [--request ID]`: an admin's judgement that a
// suspect snapshot is clean, approved by the quorum (docs/PROTOCOL.md §4.9).
struct AdminVerdictClearCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verdict-clear", abstract: "Mark a suspect snapshot clean (needs approval from other admins).",
        discussion: """
            Without --request this files a request; once other admins approve it, repeat with --request ID. The \
            host's next snapshots no longer follow it as suspect; legal holds it caused stay until released.
            """)
    @OptionGroup var admin: AdminOptions
    @Argument(help: "Snapshot ID or a unique prefix (8+ hex digits).") var snapshot: String
    @Option(name: .long, help: "Why it is clean (kept in the verdict's reasons and the audit log).") var reason: String
    @Option(name: .long, help: "An approved request for this change.") var request: String?

    func run() async throws {
        try await RedoubtCLI.run {
            let v = try await RedoubtCLI.with(try admin.client()) {
                try await $0.clearVerdict(snapshot: snapshot, reason: reason, requestID: request)
            }
            print("snapshot \(v.snapshot) is now \(v.verdict): \(v.reasons.first ?? "")")
            return .ok
        }
    }
}

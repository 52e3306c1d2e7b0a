import Foundation
import RedoubtClient

/// `restore --json` (docs/CLI-JSON.md): counts as numbers, messages as arrays.
struct RestoreJSON: Encodable {
    let files: UInt64
    let directories: UInt64
    let other: UInt64
    let bytes: UInt64
    let packs: Int
    let seconds: Double?
    let warnings: [String]
    let damaged: [String]
    /// Existing entries `--overwrite never|if-changed` left as they were.
    let kept: UInt64

    init(_ r: RestoreResult, seconds: Double?) {
        files = UInt64(r.files)
        directories = UInt64(r.directories)
        other = UInt64(r.otherEntries)
        bytes = UInt64(r.bytesWritten)
        packs = Int(r.packsFetched)
        self.seconds = seconds.map { ($0 * 100).rounded() / 100 }
        warnings = r.warnings.map(\.description)
        damaged = r.damaged.map(\.description)
        kept = r.skippedExisting
    }
}

/// `verify SNAPSHOT --json` (docs/CLI-JSON.md).
struct VerifyJSON: Encodable {
    let snapshot: String
    let packsChecked: Int
    let bytesChecked: Int64
    let chunksDecrypted: Int
    let problems: [String]
}

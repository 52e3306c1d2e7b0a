import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore

extension VerifyCommand {
    /// `verify --deep --rolling`: one budgeted run of the rolling deep verify (§4.6.1).
    func verifyRolling() async throws -> Exit {
        let plan: RollingBudget
        switch (budget, days) {
        case (.some, .some): throw ValidationError("give --budget or --days, not both")
        case (.some(let b), nil): plan = .bytes(Int64(clamping: try parseMediaSize(b)))
        case (nil, .some(let d)):
            guard d >= 1 else {
                throw ValidationError("--days must be 1 or more (every pack re-opened within that many daily runs)")
            }
            plan = .days(d)
        case (nil, nil): plan = .default
        }
        let cfg = config.resolved
        return try await RedoubtCLI.with(try APIClient(credential: cfg.credential())) { client in
            let readKey = try await key.unwrap(config: cfg)
            let material = try cfg.sharedMaterial()
            let report = try await RollingDeepVerifier().run(client: client, readKey: readKey,
                                                             chunkIDKey: material.chunkIDKey, budget: plan) { p in
                // Progress goes to stderr (a journal under systemd); --json keeps stdout clean.
                let rate = p.elapsed > 0 ? Double(p.bytes) / p.elapsed : 0
                let eta = rate > 0 ? Int(Double(max(0, p.budget - p.bytes)) / rate) : nil
                let line = "deep verify: \(p.packs) packs, \(formatBytes(UInt64(p.bytes)))"
                    + " of \(formatBytes(UInt64(p.budget)))"
                    + ", \(formatBytes(UInt64(rate)))/s" + (eta.map { ", ETA \($0 / 60)m\($0 % 60)s" } ?? "")
                if isatty(2) == 1 {
                    FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
                } else if p.packs % 100 == 0 || p.pack.isEmpty {
                    FileHandle.standardError.write(Data((line + "\n").utf8))
                }
            }
            if isatty(2) == 1 { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
            if json {
                try printJSON(report)
            } else {
                print("rolling deep verify: \(report.packsChecked) packs, \(formatBytes(UInt64(report.bytesChecked))) "
                      + "(budget \(formatBytes(UInt64(report.budgetBytes)))), "
                      + "\(report.chunksChecked) chunks decrypted and checked "
                      + "in \(Int(report.seconds)) s")
                if let a = report.after { print(Self.describe(a)) }
                for d in report.damagedPacks {
                    let host = report.uploaders[d.pack] ?? "unknown"
                    print("  DAMAGED PACK \(d.pack) (uploaded by host \(host)): \(d.problem)")
                }
                for a in report.affectedSnapshots {
                    print("  SNAPSHOT \(a.snapshot) of host \(a.host) cannot be restored whole: \(a.problem)")
                }
                print(report.isClean ? "OK" : "\(report.damagedPacks.count) damaged pack(s), "
                      + "\(report.affectedSnapshots.count) snapshot(s) affected")
            }
            return report.isClean ? .ok : .integrity
        }
    }

    /// `verify --status`: the tenant's deep-verify state, as the server records it.
    func deepVerifyStatus() async throws -> Exit {
        let cfg = config.resolved
        return try await RedoubtCLI.with(try APIClient(credential: cfg.credential())) { client in
            let s = try await client.deepVerifyState(budget: 0)
            if json { try printJSON(s) } else { print(Self.describe(s)) }
            return .ok
        }
    }

    static func describe(_ s: Wire.DeepVerifyState) -> String {
        let f = ISO8601DateFormatter()
        return "tenant \(shown(s.tenant)): \(s.packs) packs (\(formatBytes(UInt64(s.bytes)))), "
            + "\(s.neverVerifiedPacks) never deep-verified (\(formatBytes(UInt64(s.neverVerifiedBytes)))), "
            + "oldest deep verify \(s.oldestVerifiedAt.map { f.string(from: $0) } ?? "none"), "
            + "\(s.damagedPacks) last found damaged"
    }
}

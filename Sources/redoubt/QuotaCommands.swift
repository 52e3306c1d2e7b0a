import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore
import RedoubtServer

// `admin tenant set TENANT --quota SIZE` and `admin host set TENANT HOST --quota SIZE`:
// storage quotas (docs/PROTOCOL.md §3.3).

/// `SIZE` (K/M/G/T, powers of 1024) or `none`, as the request's byte count.
func parseQuota(_ s: String) throws -> Int64? {
    if s == "none" { return nil }
    guard let n = ServerLimits.parseSize(s), n > 0 else {
        throw ValidationError("--quota \(s): expected a size above zero such as 500G or 2T, or `none` to remove the quota")
    }
    return Int64(n)
}

func printQuota(_ q: Wire.QuotaInfo) {
    let who = q.host.map { "host \(q.tenant)/\($0)" } ?? "tenant \(q.tenant)"
    let quota = q.quotaBytes.map { formatBytes(UInt64($0)) } ?? "none"
    print("\(who): quota \(quota); holds \(formatBytes(UInt64(q.committedBytes))) committed, "
          + "\(formatBytes(UInt64(q.uncommittedBytes))) not yet committed")
}

struct TenantSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "set", abstract: "Set a tenant's storage quota (all its hosts' packs, committed or not).")
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The tenant.") var tenant: String
    @Option(name: .long, help: "Bytes of packs the tenant may hold, e.g. 2T, or `none`.") var quota: String

    func run() async throws {
        try await RedoubtCLI.run {
            let bytes = try parseQuota(quota)
            printQuota(try await RedoubtCLI.with(try admin.client()) { try await $0.setQuota(tenant: tenant, host: nil, bytes: bytes) })
            return .ok
        }
    }
}

struct HostSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "set", abstract: "Set a host's storage quota (the packs it uploaded, committed or not).")
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The tenant.") var tenant: String
    @Argument(help: "The host.") var host: String
    @Option(name: .long, help: "Bytes of packs the host may hold, e.g. 500G, or `none`.") var quota: String

    func run() async throws {
        try await RedoubtCLI.run {
            let bytes = try parseQuota(quota)
            printQuota(try await RedoubtCLI.with(try admin.client()) { try await $0.setQuota(tenant: tenant, host: host, bytes: bytes) })
            return .ok
        }
    }
}

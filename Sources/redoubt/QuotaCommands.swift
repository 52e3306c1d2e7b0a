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
        throw ValidationError("""
            --quota \(s): expected a size above zero such as 500G or 2T, or `none` to remove the quota
            """)
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
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: """
            Change a tenant's storage quota (all its hosts' packs, committed or not) or dedup scope (widening needs \
            approval).
            """)
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The tenant.") var tenant: String
    @Option(name: .long, help: "Bytes of packs the tenant may hold, e.g. 2T, or `none`.") var quota: String?
    @Option(name: .long, help: ArgumentHelp(DedupScopeHelp.text, valueName: "host|tenant")) var dedupScope: String?
    @Option(name: .long, help: "An approved request for widening the dedup scope.") var request: String?

    func run() async throws {
        try await RedoubtCLI.run {
            guard quota != nil || dedupScope != nil else {
                throw ValidationError("name a setting to change: --quota SIZE or --dedup-scope host|tenant")
            }
            if let dedupScope, !["host", "tenant"].contains(dedupScope) {
                throw ValidationError("--dedup-scope is host or tenant")
            }
            let bytes = try quota.map(parseQuota)
            try await RedoubtCLI.with(try admin.client()) { client in
                if quota != nil {
                    printQuota(try await client.setQuota(tenant: tenant, host: nil, bytes: bytes ?? nil))
                }
                if let dedupScope {
                    let t = try await client.setDedupScope(tenant: tenant, scope: dedupScope, requestID: request)
                    print("tenant \(t.name): dedup scope \(t.dedupScope ?? dedupScope)")
                }
            }
            return .ok
        }
    }
}

struct HostSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "set",
        abstract: "Set a host's storage quota (the packs it uploaded, committed or not).")
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The tenant.") var tenant: String
    @Argument(help: "The host.") var host: String
    @Option(name: .long, help: "Bytes of packs the host may hold, e.g. 500G, or `none`.") var quota: String

    func run() async throws {
        try await RedoubtCLI.run {
            let bytes = try parseQuota(quota)
            printQuota(try await RedoubtCLI.with(try admin.client()) {
                try await $0.setQuota(tenant: tenant, host: host, bytes: bytes)
            })
            return .ok
        }
    }
}

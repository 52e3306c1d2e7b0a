import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore

// `redoubt admin policy set|show|list|simulate|apply`: retention policies the server
// enforces as locks (docs/PROTOCOL.md §4.7). Raising is immediate; lowering or removing
// needs approval (exit 13 names the request).

struct AdminPolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
            abstract: "Retention policies: keep hourly, daily, weekly, monthly, yearly restore points.",
        subcommands: [AdminPolicySet.self, AdminPolicyShow.self, AdminPolicyList.self, AdminPolicySimulate.self,
                      AdminPolicyApply.self])
}

struct AdminPolicySet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set", abstract: "Set (or with --remove remove) a tenant's policy for a host glob and tag.",
        discussion: """
            Periods are on the server's commit time in --time-zone (default UTC). Fewer or shorter on any rule, 
            """
            + """
                another zone, or --remove needs other admins' approval: file it, have them approve, repeat with \
                --request ID.
                """)
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The tenant.") var tenant: String
    @Option(name: .long, help: "Hosts this policy covers (shell glob).") var host = "*"
    @Option(name: .long, help: "Only snapshots carrying this tag.") var tag = ""
    @Option(name: .customLong("keep-last")) var last = 0
    @Option(name: .customLong("keep-hourly")) var hourly = 0
    @Option(name: .customLong("keep-daily")) var daily = 0
    @Option(name: .customLong("keep-weekly")) var weekly = 0
    @Option(name: .customLong("keep-monthly")) var monthly = 0
    @Option(name: .customLong("keep-yearly")) var yearly = 0
    @Option(name: .customLong("keep-within"), help: "e.g. 30d, 12h, 2w, 1y (365 days).") var within: String?
    @Option(name: .customLong("time-zone"), help: "IANA zone, e.g. Europe/Berlin.") var timeZone = "UTC"
    @Flag(name: .long, help: "Remove the policy (needs approval).") var remove = false
    @Option(name: .long, help: "An approved request's ID.") var request: String?
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        var seconds: TimeInterval = 0
        if let within {
            guard let s = RetentionRules.parseDuration(within) else {
                throw ValidationError("--keep-within \(within): give a duration such as 30d, 12h, 2w or 1y")
            }
            seconds = s
        }
        let rules = RetentionRules(last: last, hourly: hourly, daily: daily, weekly: weekly, monthly: monthly,
                                   yearly: yearly, withinSeconds: seconds, timeZone: timeZone)
        try await RedoubtCLI.run {
            let list = try await RedoubtCLI.with(try admin.client()) {
                try await $0.setPolicy(tenant: tenant, Wire.SetPolicyRequest(hostGlob: host, tag: tag,
                    rules: remove ? nil : rules,
                                                                             remove: remove, requestID: request))
            }
            if json { try printJSON(list) } else { printPolicies(list) }
            return .ok
        }
    }
}

func printPolicies(_ list: [Wire.PolicyInfo]) {
    if list.isEmpty { print("no retention policies: `redoubt admin policy set TENANT --keep-daily 14 …`") }
    for p in list {
        print(shown("\(p.tenant)  host \(p.hostGlob)\(p.tag.isEmpty ? "" : "  tag \(p.tag)")  \(p.rules.summary)"))
    }
}

struct AdminPolicyShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "A tenant's retention policies.")
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The tenant.") var tenant: String
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let list = try await RedoubtCLI.with(try admin.client()) { try await $0.policies(tenant: tenant) }
            if json { try printJSON(list) } else { printPolicies(list) }
            return .ok
        }
    }
}

struct AdminPolicyList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Every tenant's retention policies.")
    @OptionGroup var admin: AdminOptions
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let list = try await RedoubtCLI.with(try admin.client()) { try await $0.policies() }
            if json { try printJSON(list) } else { printPolicies(list) }
            return .ok
        }
    }
}

func printDecisions(_ s: Wire.PolicySimulation) {
    let f = ISO8601DateFormatter()
    for d in s.snapshots {
        let why = d.keeps.isEmpty ? "not kept: expires \(f.string(from: d.retainUntil))"
            : d.keeps.map { "\($0.rule) until \(f.string(from: $0.until))\($0.final ? "" : " (period running)")" }
                .joined(separator: ", ")
        print(shown("\(d.id.prefix(12))  \(d.host)  committed \(f.string(from: d.committedAt))  \(why)"))
    }
    print("\(s.kept) of \(s.snapshots.count) snapshot(s) kept by a rule"
        + (s.extended > 0 ? "; \(s.extended) lock(s) extended" : ""))
}

struct AdminPolicySimulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "simulate",
                                                    abstract: """
                                                        What the policies keep, until when and why; changes nothing.
                                                        """)
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The tenant.") var tenant: String
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let s = try await RedoubtCLI.with(try admin.client()) { try await $0.simulatePolicy(tenant: tenant) }
            if json { try printJSON(s) } else { printDecisions(s) }
            return .ok
        }
    }
}

struct AdminPolicyApply: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "apply",
                                                    abstract: """
                                                        Extend the locks of what the policies keep (every host).
                                                        """)
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The tenant.") var tenant: String
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let s = try await RedoubtCLI.with(try admin.client()) { try await $0.applyPolicy(tenant: tenant) }
            if json { try printJSON(s) } else { printDecisions(s) }
            return .ok
        }
    }
}

import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore

// `redoubt admin notify …` and `redoubt admin status` (docs/PROTOCOL.md §5.3).
struct AdminNotifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "notify",
        abstract: "Send notifications to webhooks and mail when something needs a person.",
        subcommands: [NotifyAdd.self, NotifyList.self, NotifyRemove.self, NotifyTest.self, NotifyExpect.self])
}

struct NotifyAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add",
        abstract: "Add a notification channel: webhook URL, or email --smtp HOST:PORT --from A --to B.",
        discussion: """
            A webhook receives each event as a JSON POST, signed when --secret-file is given: header \
            x-redoubt-signature is sha256= and the hex HMAC-SHA256 of the body under the file's bytes. \
            Failed deliveries are retried with backoff. Files are paths on the server host, read when \
            a message is sent. Email goes over SMTP with STARTTLS (required except to a loopback \
            relay); --credentials names a file of user (line 1) and password (line 2). \
            Event kinds: host-stale, integrity-failure, copy-lagging, lock-proof-failed, \
            refusal-burst, approval-requested, hold-placed, hold-lifted, job-failed.
            """)
    @OptionGroup var admin: AdminOptions
    @Argument(help: "webhook or email") var kind: String
    @Argument(help: "The webhook URL (https; http only to loopback).") var url: String?
    @Option(name: .long, help: "email: the SMTP server, HOST:PORT.") var smtp: String?
    @Option(name: .long, help: "email: the sender address.") var from: String?
    @Option(name: .long, help: "email: a recipient (repeatable).") var to: [String] = []
    @Flag(name: .long, help: "email: upgrade the connection with STARTTLS (required unless --smtp is loopback).")
    var starttls = false
    @Option(name: .long, help: "email: a file on the server host, the SMTP user on line 1 and password on line 2.")
    var credentials: String?
    @Option(name: .long, help: "A file on the server host holding the HMAC secret.") var secretFile: String?
    @Option(name: .long, help: "A PEM file on the server host of CAs to trust for the webhook's or SMTP's TLS.")
    var caFile: String?
    @Option(name: .long, help: "Only these event kinds (comma-separated; default: all).") var events: String?
    @Option(name: .long, help: "Only this tenant's events (default: every tenant's and the server's).")
    var tenant: String?
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let kinds = events.map { $0.split(separator: ",").map(String.init) }
            let req: Wire.AddNotifyChannelRequest
            switch kind {
            case "webhook":
                guard let url else { throw ValidationError("notify add webhook needs the URL") }
                req = .init(kind: kind, url: url, secretFile: secretFile, caFile: caFile, events: kinds, tenant: tenant)
            case "email":
                guard smtp != nil, from != nil, !to.isEmpty else {
                    throw ValidationError("notify add email needs --smtp HOST:PORT, --from and at least one --to")
                }
                req = .init(kind: kind, caFile: caFile, smtp: smtp, from: from, to: to, starttls: starttls,
                            credentialsFile: credentials, events: kinds, tenant: tenant)
            default: throw ValidationError("notify add takes webhook URL or email --smtp … (not \(kind))")
            }
            let c = try await RedoubtCLI.with(try admin.client()) { try await $0.addNotifyChannel(req) }
            if json { try printJSON(c) } else { print(NotifyList.line(c)) }
            return .ok
        }
    }
}

struct NotifyList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List notification channels.")
    @OptionGroup var admin: AdminOptions
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let list = try await RedoubtCLI.with(try admin.client()) { try await $0.notifyChannels() }
            if json { try printJSON(list) } else {
                if list.isEmpty { print("no notification channels: `redoubt admin notify add webhook URL`") }
                for c in list { print(Self.line(c)) }
            }
            return .ok
        }
    }

    static func line(_ c: Wire.NotifyChannelInfo) -> String {
        shown("""
            \(c.id)  \(c.kind) \(c.target)  events: \(c.events.isEmpty ? "all" : c.events.joined(separator: ",")) \
             tenant: \(c.tenant ?? "all")
            """)
    }
}

struct NotifyRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove", abstract: "Remove a notification channel.")
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The channel ID (`notify list`).") var id: String

    func run() async throws {
        try await RedoubtCLI.run {
            _ = try await RedoubtCLI.with(try admin.client()) { try await $0.removeNotifyChannel(id: id) }
            print("removed notification channel \(id)")
            return .ok
        }
    }
}

struct NotifyTest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "test",
        abstract: "Send a test notification to one channel now.")
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The channel ID (`notify list`).") var id: String

    func run() async throws {
        try await RedoubtCLI.run {
            let e = try await RedoubtCLI.with(try admin.client()) { try await $0.testNotifyChannel(id: id) }
            print("delivered test notification \(e.id) to channel \(id)")
            return .ok
        }
    }
}

struct NotifyExpect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "expect",
        abstract: "Set how often a host is expected to back up (stale after 1.5 times that).")
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The tenant.") var tenant: String
    @Argument(help: "The host.") var host: String
    @Option(name: .long, help: "The interval (e.g. 1d, 6h); without it, the expectation is cleared (26h default).")
    var every: String?

    func run() async throws {
        try await RedoubtCLI.run {
            let req = Wire.HostExpectationRequest(tenant: tenant, host: host,
                                                  intervalSeconds: try every.map(parseDuration))
            _ = try await RedoubtCLI.with(try admin.client()) { try await $0.setHostExpectation(req) }
            print(every.map { "host \(tenant)/\(host) is expected to back up every \($0)" }
                  ?? "host \(tenant)/\(host): expectation cleared (stale after 26h)")
            return .ok
        }
    }
}

struct AdminStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status",
        abstract: "One screen of what needs a person: stale hosts, lagging copies, failed jobs, approvals, alerts.",
        discussion: "Exit code 8 when anything is listed, 0 when all is well (admin or auditor credential).")
    @OptionGroup var admin: AdminOptions
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let s = try await RedoubtCLI.with(try admin.client()) { try await $0.status() }
            if json { try printJSON(s) } else { print(Self.screen(s), terminator: "") }
            let quiet = s.staleHosts.isEmpty && s.laggingCopies.isEmpty && s.failedJobs.isEmpty
                && s.pendingApprovals.isEmpty && s.openAlerts.isEmpty
            return quiet ? .ok : .partial
        }
    }

    static func screen(_ s: Wire.StatusInfo) -> String {
        var out = "Redoubt status at \(s.serverTime) (server clock)\n"
        func section(_ title: String, _ lines: [String], none: String) {
            out += "\n\(title)\n" + (lines.isEmpty ? "  \(none)\n" : lines.map { "  " + shown($0) + "\n" }.joined())
        }
        section("Stale hosts", s.staleHosts.map {
            "\($0.tenant)/\($0.host): last commit \($0.lastCommit.map { "\($0)" } ?? "never"), "
                + "\(Int($0.ageSeconds / 3600)) h ago (expected every \(Int($0.expectedIntervalSeconds / 3600)) h)"
        }, none: "none")
        section("Copies", s.laggingCopies.map { "\($0.tenant) target \($0.target): \($0.problem)" },
                none: "all synced and proved (`redoubt admin copy status`)")
        section("Failed jobs (audit log)", s.failedJobs.map { "\($0.action): \($0.count)" }, none: "none recorded")
        section("Approvals pending", s.pendingApprovals.map {
            "\($0.id) \($0.action) \($0.object) by \($0.requester)"
        }, none: "none")
        section("Open alerts", s.openAlerts.map { "\($0.kind): \($0.summary) — \($0.command)" }, none: "none")
        return out
    }
}

import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore

// M-of-N approvals: `admin request list|approve|reject`, `admin admins add|list|remove`,
// `admin quorum show|set`, `admin tenant set-retention`. A change that weakens
// protection first comes back with exit code 13 and a request ID; once other admins
// approve, the same command with `--request ID` makes it.

struct RequestCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "request",
        abstract: "List, approve and reject requests for changes that weaken protection.",
                                                    subcommands: [RequestList.self, RequestApprove.self,
                                                        RequestReject.self])
}

struct RequestList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List requests and their approvals.")
    @OptionGroup var admin: AdminOptions
    @Flag(name: .long, help: "Only pending requests.") var pending = false
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let all = try await RedoubtCLI.with(try admin.client()) { try await $0.requests() }
            let list = pending ? all.filter { $0.state == "pending" } : all
            if json { try printJSON(list) } else {
                if list.isEmpty { print("no requests") }
                for r in list {
                    let params =
                        r.parameters.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
                    print(shown("\(r.id)  \(r.state)  \(r.action) \(r.object)\(params.isEmpty ? "" : " (\(params))")  "
                        + "by \(r.requester)  "
                        + "approvals \(r.approvers.count)/\(r.needed)"
                        + (r.approvers.isEmpty ? "" : " [\(r.approvers.joined(separator: ", "))]")
                        + (r.rejectedBy.map { "  rejected by \($0)" } ?? "") + "  expires \(r.expiresAt)"))
                }
            }
            return .ok
        }
    }
}

protocol DecisionCommand: AsyncParsableCommand {
    var admin: AdminOptions { get }
    var id: String { get }
    static var approve: Bool { get }
}

extension DecisionCommand {
    func run() async throws {
        try await RedoubtCLI.run {
            let r = try await RedoubtCLI.with(try admin.client()) {
                try await $0.decide(request: id, approve: Self.approve)
            }
            print("request \(r.id) (\(r.action) \(r.object)): \(r.state), \(r.approvers.count) of \(r.needed) approvals"
                + (r.state == "approved" ? "; the requester can now repeat the command with --request \(r.id)" : ""))
            return .ok
        }
    }
}

struct RequestApprove: DecisionCommand {
    static let configuration = CommandConfiguration(commandName: "approve",
        abstract: "Approve another admin's request (your own does not count).")
    static let approve = true
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The request ID.") var id: String
}

struct RequestReject: DecisionCommand {
    static let configuration = CommandConfiguration(commandName: "reject",
        abstract: "Reject a request: it can no longer be approved.")
    static let approve = false
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The request ID.") var id: String
}

struct AdminsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "admins",
        abstract: "Add, list and remove admins (adding and removing need approval).",
                                                    subcommands: [AdminsAdd.self, AdminsList.self, AdminsRemove.self])
}

struct AdminsAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add",
        abstract: "Print a one-time enrollment token for a new admin.")
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The new admin's name.") var name: String
    @Option(name: .long, help: "How long the token stays valid.") var ttl = "24h"
    @Option(name: .long, help: "An approved request for this change.") var request: String?

    func run() async throws {
        try await RedoubtCLI.run {
            let ttlSeconds = try parseDuration(ttl)
            let r = try await RedoubtCLI.with(try admin.client()) {
                try await $0.addAdmin(name: name, ttlSeconds: ttlSeconds, requestID: request)
            }
            FileHandle.standardError.write(Data(("One-time admin token for \(name), valid until \(r.expires). "
                + "On the new admin's machine run:\n  redoubt enroll TOKEN --config DIR\n"
                + "then use --credential DIR/credential.json\n").utf8))
            print(r.token)
            return .ok
        }
    }
}

struct AdminsList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List admins and the quorum.")
    @OptionGroup var admin: AdminOptions
    @Flag(name: .long, help: "Print JSON.") var json = false

    struct Listing: Encodable {
        var admins: [String]
        var quorum: Wire.QuorumInfo
    }

    func run() async throws {
        try await RedoubtCLI.run {
            let (principals, q) = try await RedoubtCLI.with(try admin.client()) { c in
                (try await c.principals(), try await c.quorum())
            }
            let names = principals.filter { $0.role == "admin" }.map(\.name)
            if json { try printJSON(Listing(admins: names, quorum: q)) } else {
                for n in names { print(n) }
                print("quorum: \(q.effective) of \(q.admins) admins (configured \(q.configured))")
            }
            return .ok
        }
    }
}

struct AdminsRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove",
        abstract: "Revoke an admin's credential (needs approval).")
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The admin's name.") var name: String
    @Option(name: .long, help: "An approved request for this change.") var request: String?

    func run() async throws {
        try await RedoubtCLI.run {
            let q = try await RedoubtCLI.with(try admin.client()) {
                try await $0.removeAdmin(name: name, requestID: request)
            }
            print("admin \(name) removed; quorum now \(q.effective) of \(q.admins) admins")
            return .ok
        }
    }
}

struct QuorumCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "quorum",
        abstract: "Show or change how many admins a weakening change needs.",
                                                    subcommands: [QuorumShow.self, QuorumSet.self],
                                                        defaultSubcommand: QuorumShow.self)
}

struct QuorumShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show the quorum.")
    @OptionGroup var admin: AdminOptions
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let q = try await RedoubtCLI.with(try admin.client()) { try await $0.quorum() }
            if json { try printJSON(q) } else {
                print("quorum: \(q.effective) of \(q.admins) admins (configured \(q.configured))")
            }
            return .ok
        }
    }
}

struct QuorumSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "set", abstract: "Change the quorum (needs approval).")
    @OptionGroup var admin: AdminOptions
    @Argument(help: "Admins (requester included) that a weakening change needs.") var quorum: Int
    @Option(name: .long, help: "An approved request for this change.") var request: String?

    func run() async throws {
        try await RedoubtCLI.run {
            let q = try await RedoubtCLI.with(try admin.client()) { try await $0.setQuorum(quorum, requestID: request) }
            print("quorum: \(q.effective) of \(q.admins) admins (configured \(q.configured))")
            return .ok
        }
    }
}

struct TenantSetRetention: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "set-retention",
        abstract: "Change a tenant's minimum retention (lowering it needs approval).")
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The tenant.") var tenant: String
    @Argument(help: "The new minimum retention (e.g. 90d).") var minRetention: String
    @Option(name: .long, help: "An approved request for this change.") var request: String?

    func run() async throws {
        try await RedoubtCLI.run {
            let seconds = try parseDuration(minRetention)
            let t = try await RedoubtCLI.with(try admin.client()) {
                try await $0.setMinRetention(tenant: tenant, seconds: seconds, requestID: request)
            }
            print("""
                tenant \(t.name): minimum retention \(Int(t.minRetentionSeconds / 86400)) days (new snapshots; \
                existing locks are never shortened)
                """)
            return .ok
        }
    }
}

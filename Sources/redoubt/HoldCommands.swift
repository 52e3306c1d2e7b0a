import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore

// `redoubt admin hold add|list|release`: legal holds. A hold keeps a snapshot's (or a
// whole tenant's) packs and manifests locked, here and in the S3 copies, past their
// retention; placing one is immediate, releasing one needs approval.

struct AdminHoldCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "hold",
        abstract: "Legal holds: keep snapshots locked past their retention.",
                                                    subcommands: [AdminHoldAdd.self, AdminHoldList.self,
                                                        AdminHoldRelease.self])
}

struct AdminHoldAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add",
            abstract: "Hold a snapshot, or with --tenant every snapshot of a tenant (present and future).",
        discussion: """
            Takes effect at once: the held objects stay locked locally and get an S3 legal hold in the tenant's copy \
            targets until the hold is released through an approved request.
            """)
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The snapshot ID (or a unique prefix of at least 8 hex digits).") var snapshot: String?
    @Option(name: .long, help: "Hold every snapshot of this tenant instead.") var tenant: String?
    @Option(name: .long,
        help: "Why (a case or matter reference); kept with the hold and in the audit log.") var reason: String?
    @Flag(name: .long, help: "Print JSON.") var json = false

    func validate() throws {
        guard (snapshot == nil) != (tenant == nil) else {
            throw ValidationError("name exactly one: a SNAPSHOT, or --tenant TENANT")
        }
    }

    func run() async throws {
        try await RedoubtCLI.run {
            let h = try await RedoubtCLI.with(try admin.client()) {
                try await $0.placeHold(Wire.PlaceHoldRequest(snapshot: snapshot, tenant: tenant, reason: reason))
            }
            if json { try printJSON(h) } else {
                print("legal hold \(h.id) on \(h.kind) "
                    + "\(h.target)\(h.kind == "tenant" ? "" : " (tenant \(h.tenant))") is in force")
                print("releasing it needs approval: `redoubt admin hold release \(h.id)`")
            }
            return .ok
        }
    }
}

struct AdminHoldList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list",
        abstract: "Legal holds, in force and released.")
    @OptionGroup var admin: AdminOptions
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let list = try await RedoubtCLI.with(try admin.client()) { try await $0.holds() }
            if json { try printJSON(list) } else {
                if list.isEmpty {
                    print("no legal holds: `redoubt admin hold add SNAPSHOT|--tenant TENANT --reason TEXT`")
                }
                for h in list {
                    let state = h.releasedAt.map { "released \($0)" + (h.releaseRequest.map { " (request \($0))" }
                        ?? "") } ?? "IN FORCE"
                    let tenant = h.kind == "tenant" ? "" : "  tenant \(h.tenant)"
                    print(shown("\(h.id)  \(h.kind) \(h.target)\(tenant)  by \(h.createdBy) \(h.createdAt)  "
                                + "\(state)\(h.reason.isEmpty ? "" : "  reason: \(h.reason)")"))
                }
            }
            return .ok
        }
    }
}

struct AdminHoldRelease: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "release", abstract: "Release a legal hold (needs approval from other admins).",
        discussion: """
            Without --request this files a request; once other admins approve it, repeat with --request ID. Locks \
            already extended stay until their date.
            """)
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The hold ID (`hold list`).") var id: String
    @Option(name: .long, help: "An approved request for this release.") var request: String?

    func run() async throws {
        try await RedoubtCLI.run {
            let h = try await RedoubtCLI.with(try admin.client()) {
                try await $0.releaseHold(id: id, requestID: request)
            }
            print("""
                legal hold \(h.id) on \(h.kind) \(h.target) released; copy targets lift their S3 legal holds on their \
                next sync
                """)
            return .ok
        }
    }
}

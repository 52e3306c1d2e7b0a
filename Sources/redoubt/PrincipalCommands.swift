import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore
import RedoubtServer

// `admin host|restorer|auditor list|revoke`: who holds a credential, when each host last
// committed a snapshot, and taking a credential back (docs/PROTOCOL.md §4.4).

protocol PrincipalRoleCommand {
    static var role: String { get }
}

protocol PrincipalListCommand: AsyncParsableCommand, PrincipalRoleCommand {
    var admin: AdminOptions { get }
    var listing: PrincipalListArguments { get }
}

struct PrincipalListArguments: ParsableArguments {
    @Argument(help: "Only this tenant's.") var tenant: String?
    @Flag(name: .long, help: "Include revoked credentials.") var all = false
    @Option(name: .long,
        help: """
            Hosts only: list just those whose newest snapshot is older than this (e.g. 26h), or that never committed \
            one, and exit 8 if there are any (for monitoring).
            """)
    var staleAfter: String?
    @Flag(name: .long, help: "Print JSON.") var json = false
}

extension PrincipalListCommand {
    /// `DEEP VERIFIED` of a host: the oldest restorer deep verify of its packs, or how many
    /// no restorer has opened yet (a rolling verify that keeps up keeps this recent).
    static func deepVerified(_ p: Wire.PrincipalInfo) -> String {
        if let n = p.packsNotDeepVerified { return "\(n) pack(s) never" }
        return p.oldestDeepVerifyAt.map { String(ISO8601DateFormatter().string(from: $0).prefix(10)) } ?? "-"
    }

    func run() async throws {
        try await RedoubtCLI.run {
            var staleBefore: Date? = nil
            if let s = listing.staleAfter {
                guard Self.role == "writer" else {
                    throw ValidationError("--stale-after applies to hosts (`redoubt admin host list`)")
                }
                staleBefore = Date().addingTimeInterval(-(try parseDuration(s)))
            }
            var list = try await RedoubtCLI.with(try admin.client()) {
                try await $0.principals(includeRevoked: listing.all)
            }
                .filter { $0.role == Self.role && (listing.tenant == nil || $0.tenant == listing.tenant) }
            if let staleBefore { list = list.filter { ($0.lastSnapshotAt ?? .distantPast) < staleBefore } }
            // Why 8: monitoring runs this and alerts on a host that stopped backing up.
            let exit: Exit = staleBefore != nil && !list.isEmpty ? .partial : .ok
            if listing.json { try printJSON(list); return exit }
            guard !list.isEmpty else {
                let what =
                    staleBefore.map { "hosts without a snapshot since \(ISO8601DateFormatter().string(from: $0))" }
                    ?? "\(Self.role) credentials"
                FileHandle.standardError.write(Data("""
                    no \(what)\(listing.tenant.map { " for tenant \($0)" } ?? "")\n
                    """.utf8))
                return .ok
            }
            let f = ISO8601DateFormatter()
            let writers = Self.role == "writer"
            print("""
                NAME                          ENROLLED              \
                \(writers ? "LAST SNAPSHOT         BACKUP        STORED / QUOTA        " : "")
                """
                  + (writers ? "DEEP VERIFIED         " : "")
                  + "STATE                 OS")
            for p in list {
                let name = shown("\(p.tenant.map { $0 + "/" } ?? "")\(p.name)")
                let last = p.lastSnapshotAt.map { f.string(from: $0) } ?? "never"
                // A host whose uploads a restorer's deep verify found not opening may have been taken.
                let state = p.revokedAt.map { "revoked \(f.string(from: $0).prefix(10))" }
                    ?? p.damagedPacks.map { "DAMAGED PACKS: \($0)" } ?? "active"
                print(name.padding(toLength: 28, withPad: " ", startingAt: 0) + "  " + f.string(from: p.createdAt)
                    + "  "
                      + (writers ? last.padding(toLength: 20, withPad: " ", startingAt: 0) + "  "
                         + Self.backup(p).padding(toLength: 12, withPad: " ", startingAt: 0) + "  "
                         + Self.storage(p.quota).padding(toLength: 20, withPad: " ", startingAt: 0) + "  "
                         + Self.deepVerified(p).padding(toLength: 20, withPad: " ", startingAt: 0) + "  " : "")
                      + state.padding(toLength: 20, withPad: " ", startingAt: 0) + "  " + shown(p.os ?? "-"))
            }
            return exit
        }
    }
}

extension PrincipalListCommand {
    /// `BACKUP` of a host: `ok`, `late` or `unknown` against the interval it expects (`ok/1d`).
    static func backup(_ p: Wire.PrincipalInfo) -> String {
        (p.backupStatus ?? "unknown") + (p.expectedIntervalSeconds.map { "/" + formatInterval($0) } ?? "")
    }

    /// `STORED / QUOTA` of a host, with a mark at 90 % of the quota or more.
    static func storage(_ q: Wire.QuotaInfo?) -> String {
        guard let q else { return "-" }
        let used = q.committedBytes + q.uncommittedBytes
        guard let quota = q.quotaBytes else { return formatBytes(UInt64(used)) + " / none" }
        return formatBytes(UInt64(used)) + " / " + formatBytes(UInt64(quota)) + (used * 10 >= quota * 9 ? " NEAR" : "")
    }
}

protocol PrincipalRevokeCommand: AsyncParsableCommand, PrincipalRoleCommand {
    var admin: AdminOptions { get }
    var target: PrincipalRevokeArguments { get }
}

struct PrincipalRevokeArguments: ParsableArguments {
    @Argument(help: "The tenant.") var tenant: String
    @Argument(help: "The host's or person's name.") var name: String
    @Option(name: .long,
        help: """
            An approved request for this change (revoking a host needs one while the quorum is above one).
            """) var request: String?
}

extension PrincipalRevokeCommand {
    func run() async throws {
        try await RedoubtCLI.run {
            let p = try await RedoubtCLI.with(try admin.client()) { c in
                let active = try await c.principals().filter {
                    $0.role == Self.role && $0.tenant == target.tenant && $0.name == target.name
                }
                guard let p = active.first else {
                    throw ServerError.notFound("""
                        no active \(Self.role) \(target.tenant)/\(target.name): `redoubt admin \(Self.command) list \
                        \(target.tenant) --all`
                        """)
                }
                return try await c.revokePrincipal(id: p.id, requestID: target.request)
            }
            print("""
                \(Self.role) \(target.tenant)/\(target.name) revoked (credential \(p.fingerprint.prefix(16))…): it is \
                refused from its next request on; what it committed stays
                """)
            return .ok
        }
    }
}

extension PrincipalRoleCommand {
    /// The `admin` subcommand that manages this role.
    static var command: String { role == "writer" ? "host" : role }
}

struct HostList: PrincipalListCommand {
    static let configuration = CommandConfiguration(commandName: "list",
        abstract: "List enrolled hosts and when each last committed a snapshot.")
    static let role = "writer"
    @OptionGroup var admin: AdminOptions
    @OptionGroup var listing: PrincipalListArguments
}

struct HostRevoke: PrincipalRevokeCommand {
    static let configuration = CommandConfiguration(commandName: "revoke",
        abstract: "Revoke a host's credential: its backups stop (needs approval while the quorum is above one).")
    static let role = "writer"
    @OptionGroup var admin: AdminOptions
    @OptionGroup var target: PrincipalRevokeArguments
}

struct RestorerList: PrincipalListCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List enrolled restorers.")
    static let role = "restorer"
    @OptionGroup var admin: AdminOptions
    @OptionGroup var listing: PrincipalListArguments
}

struct RestorerRevoke: PrincipalRevokeCommand {
    static let configuration = CommandConfiguration(commandName: "revoke",
        abstract: "Revoke a restorer's credential (at once).")
    static let role = "restorer"
    @OptionGroup var admin: AdminOptions
    @OptionGroup var target: PrincipalRevokeArguments
}

struct AuditorList: PrincipalListCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List enrolled auditors.")
    static let role = "auditor"
    @OptionGroup var admin: AdminOptions
    @OptionGroup var listing: PrincipalListArguments
}

struct AuditorRevoke: PrincipalRevokeCommand {
    static let configuration = CommandConfiguration(commandName: "revoke",
        abstract: "Revoke an auditor's credential (at once).")
    static let role = "auditor"
    @OptionGroup var admin: AdminOptions
    @OptionGroup var target: PrincipalRevokeArguments
}

struct TokenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "token",
        abstract: "List and cancel enrollment tokens not yet used.",
                                                    subcommands: [TokenList.self, TokenCancel.self])
}

struct TokenList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list",
        abstract: "List the enrollment tokens that could still enroll someone.")
    @OptionGroup var admin: AdminOptions
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let list = try await RedoubtCLI.with(try admin.client()) { try await $0.enrollments() }
            if json { try printJSON(list); return .ok }
            guard !list.isEmpty else {
                FileHandle.standardError.write(Data("no pending enrollment tokens\n".utf8)); return .ok
            }
            let f = ISO8601DateFormatter()
            print("ID                ROLE      NAME                          EXPIRES               BY")
            for e in list {
                let name = shown("\(e.tenant.map { $0 + "/" } ?? "")\(e.name)")
                print("\(shown(e.id))  \(shown(e.role).rightPadded(to: 8))  \(name.rightPadded(to: 28))  "
                      + "\(f.string(from: e.expiresAt))  \(shown(e.createdBy))")
            }
            return .ok
        }
    }
}

struct TokenCancel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cancel",
        abstract: "Cancel an enrollment token (sent to the wrong place, no longer needed): it enrolls no one.")
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The token's ID from `redoubt admin token list` (12+ hex digits).") var id: String

    func run() async throws {
        try await RedoubtCLI.run {
            let e = try await RedoubtCLI.with(try admin.client()) { try await $0.cancelEnrollment(id: id) }
            print("token \(e.id) (\(e.role) \(e.tenant.map { $0 + "/" } ?? "")\(e.name)) cancelled")
            return .ok
        }
    }
}

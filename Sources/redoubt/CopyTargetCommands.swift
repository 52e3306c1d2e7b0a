import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore
import RedoubtStore

// `redoubt admin copy add|status|sync|remove`: S3 Object Lock copy targets kept by the
// server, which copies after each commit and proves each target again daily.

struct AdminCopyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "copy",
        abstract: "Off-site S3 Object Lock copies that the server keeps up to date.",
                                                    subcommands: [AdminCopyAdd.self, AdminCopyStatus.self,
                                                        AdminCopySync.self, AdminCopyRemove.self])
}

struct AdminCopyAdd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Add a copy target for a tenant: proved first, then synced after every commit.",
        discussion: """
            The credentials file is read by the server (it must be on the repository host, readable by the service \
            user); no secret is sent.
            """)
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The tenant.") var tenant: String
    @Argument(help: "s3://BUCKET/PREFIX") var url: String
    @Option(name: .long, help: "S3 endpoint URL.") var endpoint: String
    @Option(name: .long, help: "Region for signing.") var region = "us-east-1"
    @Option(name: .long,
        help: """
            AWS shared-credentials file on the server host (else the service's AWS environment).
            """) var credentials: String?
    @Flag(name: .long, help: "Virtual-hosted addressing instead of path-style.") var virtualHosted = false
    @Option(name: .long,
        help: "Added to each object's local lock for its lock in the bucket.") var retentionMargin = "7d"
    @Flag(name: .long,
        help: """
            Keep the target even if it fails the lock proof (needs approval; warned on every status).
            """) var acceptUnenforced = false
    @Option(name: .long, help: "An approved request (for --accept-unenforced).") var request: String?
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            // The server checks again; checking here names the mistake before any request.
            _ = try BucketOptions.target(path: url, flag: "the target", endpoint: endpoint, region: region,
                                         credentials: credentials, virtualHosted: virtualHosted)
            let req = Wire.AddCopyTargetRequest(tenant: tenant, url: url, endpoint: endpoint, region: region,
                credentialsFile: credentials,
                                                virtualHosted: virtualHosted,
                                                    marginSeconds: try parseDuration(retentionMargin),
                                                acceptUnenforced: acceptUnenforced, requestID: request)
            let t = try await RedoubtCLI.with(try admin.client()) { try await $0.addCopyTarget(req) }
            if json { try printJSON(t) } else {
                print("""
                    copy target \(t.id): \(t.url) for tenant \(t.tenant), proof \
                    \(t.lastProofOK == true ? "passed" : "FAILED (\(t.lastProofDetail ?? "?")), kept as asked")
                    """)
                print("the server copies now and after every commit; `redoubt admin copy status` shows progress")
            }
            return .ok
        }
    }
}

struct AdminCopyStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status",
        abstract: "Copy targets, their last proof and their last sync.")
    @OptionGroup var admin: AdminOptions
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let list = try await RedoubtCLI.with(try admin.client()) { try await $0.copyTargets() }
            if json { try printJSON(list) } else {
                if list.isEmpty {
                    print("no copy targets: `redoubt admin copy add TENANT s3://BUCKET/PREFIX --endpoint URL`")
                }
                for t in list { print(Self.line(t)) }
            }
            return list.allSatisfy { $0.lastProofOK == true && $0.lastSyncOK != false } ? .ok : .partial
        }
    }

    static func line(_ t: Wire.CopyTargetInfo) -> String {
        let proof =
            t.lastProofOK == true ? """
                proof ok \(t.lastProofAt.map { "\($0)" } ?? "")
                """ : "WARNING proof failed: \(t.lastProofDetail ?? "?")"
        let sync = t.lastSyncAt.map { "last sync \($0): " + (t.lastSyncOK == true ? (t.lastSyncDetail
            ?? "ok") : "FAILED \(t.lastSyncDetail ?? "")") } ?? "not synced yet"
        return shown("\(t.id)  \(t.tenant) → \(t.url)  \(proof)  \(sync)")
    }
}

struct AdminCopySync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sync",
        abstract: "Ask the server to sync a copy target now.")
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The copy target ID (`copy status`).") var id: String
    @Flag(name: .long, help: "Wait until the sync has finished.") var wait = false

    func run() async throws {
        try await RedoubtCLI.run {
            let t = try await RedoubtCLI.with(try admin.client()) { try await $0.syncCopyTarget(id: id, wait: wait) }
            print(AdminCopyStatus.line(t))
            return t.lastSyncOK == false ? .failure : .ok
        }
    }
}

struct AdminCopyRemove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "remove",
        abstract: "Stop copying to a target (needs approval; the bucket's locked objects stay).")
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The copy target ID.") var id: String
    @Option(name: .long, help: "An approved request for this change.") var request: String?

    func run() async throws {
        try await RedoubtCLI.run {
            let left = try await RedoubtCLI.with(try admin.client()) {
                try await $0.removeCopyTarget(id: id, requestID: request)
            }
            print("copy target \(id) removed; \(left.count) left")
            return .ok
        }
    }
}

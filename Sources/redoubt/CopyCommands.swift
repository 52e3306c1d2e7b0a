import ArgumentParser
import Foundation
import RedoubtAWS
import RedoubtClient
import RedoubtCore
import RedoubtServer
import RedoubtStore

/// Off-site copies to S3 with Object Lock COMPLIANCE.
struct CopyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy", abstract: "Immutable off-site copies on S3 Object Lock (COMPLIANCE).",
        subcommands: [CopySync.self, CopyProve.self, CopyPolicy.self, CopySnapshots.self, CopyRestore.self,
            CopyVerify.self])
}

/// Where the bucket is and whose credentials to use; the secret comes from a file only.
struct BucketOptions: ParsableArguments {
    @Option(name: .long, help: "The copy: s3://BUCKET/PREFIX.") var to: String
    @Option(name: .long, help: "S3 endpoint URL (e.g. https://s3.eu-west-1.amazonaws.com).") var endpoint: String
    @Option(name: .long, help: "Region for signing.") var region = "us-east-1"
    @Option(name: .long,
        help: """
            AWS shared-credentials file (aws_access_key_id, aws_secret_access_key); else the AWS environment.
            """) var credentials: String?
    @Flag(name: .long,
        help: "Virtual-hosted addressing (bucket.endpoint) instead of path-style.") var virtualHosted = false
    @Option(name: .long,
        help: """
            PEM file of the private CA that signed the endpoint's certificate (else the system roots).
            """) var ca: String?

    func store() throws -> S3Store {
        try Self.store(path: to, flag: "--to", endpoint: endpoint, region: region, credentials: credentials,
            virtualHosted: virtualHosted, ca: ca)
    }

    /// The S3 store at `path` (s3://BUCKET/PREFIX, given with `flag`), shared by `--to` and `--from`.
    static func store(path: String, flag: String, endpoint: String, region: String, credentials: String?,
        virtualHosted: Bool, ca: String?) throws -> S3Store {
        let target = try target(path: path, flag: flag, endpoint: endpoint, region: region, credentials: credentials,
                                virtualHosted: virtualHosted)
        let transport = try ca.map { path -> AHCTransport in
            guard let pem = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw ValidationError("cannot read the CA file \(path)")
            }
            return try AHCTransport.shared(caPEM: pem)
        }
        return try target.store(transport: transport)
    }

    /// The parsed target (the one parser the server uses too); a bad one is a usage error.
    static func target(path: String, flag: String, endpoint: String, region: String, credentials: String?,
                       virtualHosted: Bool) throws -> S3Target {
        do {
            return try S3Target.parse(url: path, endpoint: endpoint, region: region, credentialsFile: credentials,
                                      pathStyle: !virtualHosted)
        } catch {
            throw ValidationError("\(flag) \(path): \(error.detail)")
        }
    }
}

struct CopySync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "sync",
        abstract: """
            Prove the bucket enforces Object Lock, then copy a tenant to it (resumable); run on the server host.
            """)
    @Argument(help: "The tenant.") var tenant: String
    @Option(name: .long, help: "The server data directory.") var data: String
    @OptionGroup var bucket: BucketOptions
    @Option(name: .long,
        help: "Added to each object's local lock for its lock in the bucket (e.g. 7d).") var retentionMargin = "7d"
    @Flag(name: .long,
        help: """
            Copy even if the lock proof fails (needs an approved request once there are two admins; recorded; warned \
            on every run).
            """) var acceptUnenforced = false
    @Option(name: .long, help: "An approved request for --accept-unenforced.") var request: String?

    func run() async throws {
        try await RedoubtCLI.run {
            let target = try bucket.store()
            // Why: keeping a target that does not enforce its locks weakens protection (M-of-N).
            let margin = try parseDuration(retentionMargin)
            guard margin.isFinite, margin >= 0, margin <= CopyApproval.maxMarginSeconds else {
                throw ValidationError("--retention-margin must be between 0 and 10 years")
            }
            let destination = ServerHome.CopyDestination(url: bucket.to, endpoint: bucket.endpoint,
                region: bucket.region,
                                                         credentialsFile: bucket.credentials,
                                                         virtualHosted: bucket.virtualHosted)
            let s = try await ServerHome(path: data).syncCopy(tenant: tenant, to: target, destination: destination,
                margin: margin,
                                                              acceptUnenforced: acceptUnenforced, requestID: request,
                                                              now: Date()) { line in
                FileHandle.standardError.write(Data("  \(line)\n".utf8))
            }
            print("""
                copied tenant \(tenant) to \(bucket.to): \(s.copied) new, \(s.alreadyThere) already there, \
                \(s.extended) locks extended; audit record \(s.auditSeq)
                """)
            return s.proof?.passed == false ? .partial : .ok
        }
    }
}

struct CopyProve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "prove",
        abstract: "Check that a bucket enforces Object Lock COMPLIANCE, with a canary (never by changing the bucket).")
    @OptionGroup var bucket: BucketOptions
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let result = await try bucket.store().proveLocks(now: Date())
            if json { try printJSON(result) } else {
                for c in result.checks { print("\(c.passed ? "pass" : "FAIL")  \(c.name): \(c.detail)") }
                print(result.passed ? """
                    \(bucket.to) enforces Object Lock COMPLIANCE
                    """ : "\(bucket.to) does NOT enforce Object Lock: do not use it as a copy target")
            }
            return result.passed ? .ok : .refused
        }
    }
}

struct CopyPolicy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "policy",
        abstract: """
            Print a least-privilege bucket policy: only Redoubt writes and extends locks; nobody deletes or unlocks.
            """)
    @Option(name: .long, help: "The bucket (s3://BUCKET/PREFIX).") var to: String
    @Option(name: .long, help: "Redoubt's principal ARN (the copy writer).") var principal: String

    func run() async throws {
        try await RedoubtCLI.run {
            let bucket: String
            do throws(StoreError) {
                bucket = try S3Target.parsePath(to.lowercased().hasPrefix("s3://") ? to : "s3://" + to).bucket
            } catch {
                throw ValidationError("--to \(to): \(error.detail)")
            }
            let arn = "arn:aws:s3:::\(bucket)"
            let policy: [String: Any] = [
                "Version": "2012-10-17",
                "Statement": [
                    ["Sid": "RedoubtWritesAndExtendsLocks", "Effect": "Allow", "Principal": ["AWS": principal],
                     "Action": ["s3:PutObject", "s3:PutObjectRetention", "s3:GetObject", "s3:GetObjectRetention",
                         "s3:GetObjectVersion",
                                "s3:PutObjectLegalHold", "s3:GetObjectLegalHold"],
                     "Resource": "\(arn)/*"],
                    ["Sid": "RedoubtReadsBucketState", "Effect": "Allow", "Principal": ["AWS": principal],
                     "Action": ["s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketObjectLockConfiguration",
                         "s3:GetBucketVersioning"],
                     "Resource": arn],
                    ["Sid": "NobodyDeletesOrBypasses", "Effect": "Deny", "Principal": "*",
                     "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"],
                         "Resource": "\(arn)/*"],
                    ["Sid": "NobodyWeakensTheBucket", "Effect": "Deny", "Principal": "*",
                     "Action": ["s3:PutBucketPolicy", "s3:DeleteBucketPolicy", "s3:PutBucketVersioning",
                         "s3:PutBucketObjectLockConfiguration",
                                "s3:DeleteBucket", "s3:PutLifecycleConfiguration"],
                     "Resource": arn],
                ],
            ]
            let data = try JSONSerialization.data(withJSONObject: policy, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return .ok
        }
    }
}

struct CopySnapshots: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "snapshots",
        abstract: "List a tenant's snapshots in a bucket copy (no server, no catalog).")
    @Argument(help: "The tenant.") var tenant: String
    @OptionGroup var bucket: BucketOptions
    @Flag(name: .long, help: "Print JSON.") var json = false
    @OptionGroup(title: "Whose pinned CA checks who wrote each snapshot") var config: ConfigOption

    func run() async throws {
        try await RedoubtCLI.run {
            try await BucketCommands.snapshots(store: try bucket.store(), tenant: tenant, host: nil, json: json,
                                               cfg: config.resolved)
        }
    }
}

/// Packs read from the bucket copy; the restorer verifies each against its ID.
struct BucketPackSource: PackSource {
    let store: S3Store
    let tenant: String
    func pack(_ id: PackID) async throws -> [UInt8] {
        try await store.get(RepositoryLayout.packKey(tenant: tenant, id: id))
    }
}

struct CopyRestore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "restore",
        abstract: "Restore a snapshot from a bucket copy alone (no server, no catalog).")
    @Argument(help: "The tenant.") var tenant: String
    @Argument(help: "Snapshot ID or a unique prefix (8+ hex digits).") var snapshot: String
    @OptionGroup var bucket: BucketOptions
    @Option(name: .long, help: "Directory to restore into (created if missing).") var target: String
    @OptionGroup var config: ConfigOption
    @OptionGroup(title: "The read key") var key: ReadKeyOptions

    func run() async throws {
        try await RedoubtCLI.run {
            try await BucketCommands.restore(store: try bucket.store(), place: bucket.to, tenant: tenant,
                snapshot: snapshot, target: target,
                                             config: config.resolved, key: key)
        }
    }
}

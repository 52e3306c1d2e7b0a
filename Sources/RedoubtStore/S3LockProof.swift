import Foundation
import NIOHTTP1
import RedoubtAWS

/// Proof that an S3 target really enforces Object Lock, by trying what an attacker with
/// Redoubt's own credentials would try on a canary, never on real data and never by
/// changing the bucket's settings.
///
/// Checks, in order: Object Lock is enabled; versioning is enabled; a canary written in
/// COMPLIANCE mode for a day cannot have its version deleted, its retention shortened,
/// or its mode switched to GOVERNANCE; and afterwards it is still there, unchanged.
/// Several S3-compatible servers accept lock headers and then allow all of these.
public struct S3LockProof: Sendable {
    /// One check's outcome.
    public struct Check: Sendable, Codable, Equatable {
        public let name: String
        public let passed: Bool
        public let detail: String
    }

    /// The outcome of a proof: passed only if every check passed.
    public struct Result: Sendable, Codable, Equatable {
        public let time: Date
        public let checks: [Check]
        public var passed: Bool { !checks.isEmpty && checks.allSatisfy(\.passed) }
        /// The first failed check's name and detail, for messages.
        public var firstFailure: String? { checks.first { !$0.passed }.map { "\($0.name): \($0.detail)" } }
    }

    public let client: S3Client
    public init(client: S3Client) { self.client = client }

    /// Runs every check; stops at the first one that makes the rest meaningless.
    public func run(now: Date = Date()) async -> Result {
        var checks: [Check] = []
        func record(_ name: String, _ passed: Bool, _ detail: String) {
            checks.append(Check(name: name, passed: passed, detail: detail))
        }
        do {
            let lock = try await client.send(.GET, key: nil, query: [("object-lock", "")])
            let enabled = lock.status == 200 && S3XML.lockConfiguration(lock.body)?.enabled == true
            record("object-lock-enabled", enabled,
                enabled ? "ObjectLockEnabled is Enabled" : """
                    the bucket has no Object Lock configuration (\(lock.status) \(lock.errorCode ?? "")): create the \
                    bucket with Object Lock enabled
                    """)
            let versioning = try await client.send(.GET, key: nil, query: [("versioning", "")])
            let versioned = versioning.status == 200 && S3XML.versioningStatus(versioning.body) == .some("Enabled")
            record("versioning-enabled", versioned, versioned ? "versioning is Enabled" : "versioning is not Enabled")
            guard enabled else { return Result(time: now, checks: checks) }

            let key = client.objectName("redoubt-canary/\(UUID().uuidString.lowercased())")
            let body = Array("redoubt lock canary \(S3Date.format(now))\n".utf8)
            let until = now.addingTimeInterval(86400).rounded()
            let put = try await client.send(.PUT, key: key, headers: [
                ("content-md5", contentMD5(body)), ("x-amz-object-lock-mode", "COMPLIANCE"),
                ("x-amz-object-lock-retain-until-date", S3Date.format(until)),
            ], body: body)
            guard put.status == 200, let version = put.header("x-amz-version-id"), !version.isEmpty,
                version != "null" else {
                record("canary-written", false,
                    "a COMPLIANCE canary could not be written with a version ID (\(put.status) \(put.errorCode ?? ""))")
                return Result(time: now, checks: checks)
            }
            record("canary-written", true, "canary \(key) version \(version), COMPLIANCE until \(S3Date.format(until))")

            let delete = try await client.send(.DELETE, key: key, query: [("versionId", version)])
            record("locked-version-not-deletable", !(200..<300).contains(delete.status),
                   (200..<300)
                       .contains(delete.status) ? """
                           DELETE of the locked version succeeded (\(delete.status)): the target does not enforce \
                           COMPLIANCE
                           """ : "refused (\(delete.status) \(delete.errorCode ?? ""))")

            func retention(_ mode: String, _ date: Date) async throws -> S3Response {
                let body = "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>\(mode)</Mode>"
                    + "<RetainUntilDate>\(S3Date.format(date))</RetainUntilDate></Retention>"
                let xml = Array(body.utf8)
                return try await client.send(.PUT, key: key, query: [("retention", ""), ("versionId", version)],
                                             headers: [("content-md5", contentMD5(xml))], body: xml)
            }
            let shorten = try await retention("COMPLIANCE", now.addingTimeInterval(3600).rounded())
            record("retention-not-shortenable", shorten.status != 200,
                   shorten.status == 200 ? """
                       the COMPLIANCE retention was shortened: the target does not enforce it
                       """ : "refused (\(shorten.status) \(shorten.errorCode ?? ""))")
            let downgrade = try await retention("GOVERNANCE", until)
            record("mode-not-downgradable", downgrade.status != 200,
                   downgrade.status == 200 ? "COMPLIANCE was switched to GOVERNANCE" : """
                       refused (\(downgrade.status) \(downgrade.errorCode ?? ""))
                       """)

            let head = try await client.send(.HEAD, key: key, query: [("versionId", version)])
            let mode = head.header("x-amz-object-lock-mode")
            let kept = head.header("x-amz-object-lock-retain-until-date").flatMap(S3Date.parse)
            let intact = head.status == 200 && mode == "COMPLIANCE"
                && kept.map { $0 >= until.addingTimeInterval(-1) } == true
            record("canary-intact", intact, intact ? "still COMPLIANCE until \(kept.map(S3Date.format) ?? "?")"
                   : """
                       after the attempts the canary is \(head.status) mode \(mode ?? "none") until \
                       \(kept.map(S3Date.format) ?? "none")
                       """)
        } catch {
            record("target-reachable", false, "\(error)")
        }
        return Result(time: now, checks: checks)
    }
}

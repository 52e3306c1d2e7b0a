import Foundation
import RedoubtStore

/// Where a server keeps its objects: the data directory's own `store/` (the embedded
/// default), or an S3 bucket with Object Lock that several server nodes can share.
///
/// Only where the bucket is and where its credentials are read from is kept (in
/// `server.json`); the key and secret stay in the credentials file or the service's AWS
/// environment. A bucket becomes a primary store only after ``S3LockProof`` shows that it
/// enforces COMPLIANCE for these credentials, and `server run` proves it again at every
/// start: a bucket whose locks an owner of the credentials can shorten or delete would let a
/// thief of the server's S3 key erase every backup.
public struct PrimaryStoreSettings: Codable, Sendable, Equatable {
    /// `s3://BUCKET` or `s3://BUCKET/PREFIX`.
    public var url: String
    public var endpoint: String
    public var region: String
    /// AWS shared-credentials file on the server host; nil: the service's AWS environment.
    public var credentialsFile: String?
    /// PEM file of a private CA that signed the endpoint's certificate; nil: system roots.
    public var caFile: String?
    public var virtualHosted: Bool?

    public init(url: String, endpoint: String, region: String, credentialsFile: String? = nil,
                caFile: String? = nil, virtualHosted: Bool? = nil) {
        self.url = url
        self.endpoint = endpoint
        self.region = region
        self.credentialsFile = credentialsFile
        self.caFile = caFile
        self.virtualHosted = virtualHosted
    }

    /// The bucket, checked by the one parser every S3 path uses (https, or http to loopback).
    public func target() throws -> S3Target {
        do {
            return try S3Target.parse(url: url, endpoint: endpoint, region: region,
                                      credentialsFile: credentialsFile, pathStyle: !(virtualHosted ?? false))
        } catch {
            throw ServerError.badRequest("primary store \(url): \(error.detail)")
        }
    }

    func caPEM() throws -> String? {
        guard let caFile else { return nil }
        guard let data = FileManager.default.contents(atPath: caFile) else {
            throw ServerError(500, "E_CONFIG", "primary store \(url): cannot read the CA file \(caFile)")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// The store, signing with credentials read now.
    public func open() throws -> any ObjectStore {
        let target = try target()
        do {
            return try StoreFactory.make(.s3(target, caPEM: try caPEM()))
        } catch let e as ServerError {
            throw e
        } catch {
            throw ServerError(500, "E_CONFIG", """
                primary store \(target.redacted): \(error); the credentials file must be readable by the \
                server's user
                """)
        }
    }

    /// Proves the bucket enforces Object Lock COMPLIANCE for the server's own credentials;
    /// throws `E_UNENFORCED` naming the first check that failed and what to do.
    @discardableResult
    public func prove(now: Date = Date()) async throws -> S3LockProof.Result {
        guard let store = try open() as? any LockProvingStore else {
            throw ServerError(500, "E_CONFIG", "primary store \(url) cannot prove its locks")
        }
        let result = await store.proveLocks(now: now)
        guard result.passed else {
            throw ServerError(409, "E_UNENFORCED", """
                primary store \(try target().redacted) does not prove Object Lock COMPLIANCE \
                (\(result.firstFailure ?? "no check ran")): use a bucket created with Object Lock on a server that \
                enforces it, with credentials that cannot bypass governance
                """)
        }
        return result
    }
}

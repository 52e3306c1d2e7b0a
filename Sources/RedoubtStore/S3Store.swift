import Crypto
import Foundation
import NIOHTTP1
import RedoubtAWS

/// An `ObjectStore` on an S3 bucket with Object Lock: every object is written with
/// `x-amz-object-lock-mode: COMPLIANCE` and its own retain-until date (never a bucket
/// default), and a Content-MD5 the server must check.
///
/// Never-overwrite is checked before each put (HEAD, then compare the SHA-256 recorded
/// in the object's metadata). On a versioned, locked bucket a racing writer could add a
/// version, but never remove or change a locked one: the original bytes stay.
public struct S3Store: ObjectStore {
    public let client: S3Client

    public init(client: S3Client) { self.client = client }

    func fail(_ code: StoreError.Code, _ key: ObjectKey, _ r: S3Response, _ what: String) -> StoreError {
        StoreError(code, key: key.path, "\(what): S3 \(r.status) \(r.errorCode ?? "") \(r.errorMessage ?? "")")
    }

    func io(_ key: ObjectKey, _ error: any Error) -> StoreError {
        StoreError(.io, key: key.path, "S3 request failed after retries: \(error)")
    }

    public func put(_ key: ObjectKey, _ data: [UInt8], retainUntil: Date?) async throws -> PutResult {
        let digest = SigV4Signer.hexSHA256(data)
        if let existing = try await headResponse(key) {
            // Why compare hashes: same key with other bytes is an attack or a bug, never an update.
            if existing.header("x-amz-meta-sha256") == digest { return .alreadyPresent }
            let bytes = try await get(key, range: nil)
            if bytes == data { return .alreadyPresent }
            throw StoreError(.conflict, key: key.path, "an object with other bytes exists under this key in s3://\(client.location.bucket); it is never overwritten")
        }
        // If-None-Match: * makes the create conditional where the server supports it, so
        // two racing writers cannot both create: the loser sees 412 and compares bytes.
        var headers: [(name: String, value: String)] = [
            ("content-md5", contentMD5(data)), ("x-amz-meta-sha256", digest), ("content-type", "application/octet-stream"),
            ("if-none-match", "*"),
        ]
        if let retainUntil {
            headers += [("x-amz-object-lock-mode", "COMPLIANCE"), ("x-amz-object-lock-retain-until-date", S3Date.format(retainUntil.rounded()))]
        }
        let r: S3Response
        do { r = try await client.send(.PUT, key: client.objectName(key.path), headers: headers, body: data) } catch { throw io(key, error) }
        if r.status == 412 || r.status == 409 {
            // Another writer created it first: same bytes is fine, other bytes a conflict.
            if try await get(key, range: nil) == data { return .alreadyPresent }
            throw StoreError(.conflict, key: key.path, "an object with other bytes exists under this key in s3://\(client.location.bucket); it is never overwritten")
        }
        guard r.status == 200 else { throw fail(.io, key, r, "PUT refused") }
        return .created
    }

    public func get(_ key: ObjectKey, range: Range<Int>?) async throws -> [UInt8] {
        var headers: [(name: String, value: String)] = []
        if let range {
            guard let info = try await head(key) else { throw StoreError(.notFound, key: key.path, "no such object in s3://\(client.location.bucket)") }
            guard range.lowerBound >= 0, range.upperBound <= info.size else {
                throw StoreError(.badRange, key: key.path, "range \(range) outside the object's \(info.size) bytes")
            }
            if range.isEmpty { return [] }
            headers.append(("range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)"))
        }
        let r: S3Response
        do { r = try await client.send(.GET, key: client.objectName(key.path), headers: headers) } catch { throw io(key, error) }
        if r.status == 404 { throw StoreError(.notFound, key: key.path, "no such object in s3://\(client.location.bucket)") }
        guard r.status == 200 || r.status == 206 else { throw fail(.io, key, r, "GET failed") }
        if let range, r.body.count != range.count {
            throw StoreError(.integrity, key: key.path, "asked for \(range.count) bytes, S3 returned \(r.body.count)")
        }
        return r.body
    }

    func headResponse(_ key: ObjectKey) async throws -> S3Response? {
        let r: S3Response
        do { r = try await client.send(.HEAD, key: client.objectName(key.path)) } catch { throw io(key, error) }
        if r.status == 404 { return nil }
        guard r.status == 200 else { throw fail(.io, key, r, "HEAD failed") }
        return r
    }

    public func head(_ key: ObjectKey) async throws -> ObjectInfo? {
        guard let r = try await headResponse(key) else { return nil }
        let until = r.header("x-amz-object-lock-retain-until-date").flatMap(S3Date.parse)
        return ObjectInfo(key: key, size: Int(r.header("content-length") ?? "") ?? 0, retainUntil: until,
                          enforced: r.header("x-amz-object-lock-mode") == "COMPLIANCE")
    }

    public func list(prefix: String) async throws -> [ObjectInfo] {
        var keys: [ObjectKey] = []
        // No valid key has an empty component; some servers normalise `a//` to `a/`.
        if prefix.contains("//") || prefix.hasPrefix("/") { return [] }
        var token: String? = nil
        let base = client.location.prefix.isEmpty ? "" : client.location.prefix + "/"
        repeat {
            var query: [(name: String, value: String)] = [("list-type", "2"), ("prefix", base + prefix)]
            if let token { query.append(("continuation-token", token)) }
            let r: S3Response
            do { r = try await client.send(.GET, key: nil, query: query) } catch {
                throw StoreError(.io, key: prefix, "S3 list failed after retries: \(error)")
            }
            guard r.status == 200 else { throw StoreError(.io, key: prefix, "S3 list failed: \(r.status) \(r.errorCode ?? "")") }
            for name in S3XML.all("Key", in: r.body) where name.hasPrefix(base) {
                if let key = ObjectKey(String(name.dropFirst(base.count))), key.path.hasPrefix(prefix) { keys.append(key) }
            }
            token = S3XML.first("IsTruncated", in: r.body) == "true" ? S3XML.first("NextContinuationToken", in: r.body) : nil
        } while token != nil
        var out: [ObjectInfo] = []
        for key in keys.sorted() { if let info = try await head(key) { out.append(info) } }
        return out
    }

    public func delete(_ key: ObjectKey, now: Date) async throws {
        guard let info = try await head(key) else { throw StoreError(.notFound, key: key.path, "no such object in s3://\(client.location.bucket)") }
        if let until = info.retainUntil, now < until {
            throw StoreError(.locked, key: key.path, "locked until \(S3Date.format(until))")
        }
        let r: S3Response
        do { r = try await client.send(.DELETE, key: client.objectName(key.path)) } catch { throw io(key, error) }
        guard r.status == 204 || r.status == 200 else { throw fail(.locked, key, r, "DELETE refused") }
    }

    public func extendRetention(_ key: ObjectKey, until: Date) async throws {
        guard let info = try await head(key) else { throw StoreError(.notFound, key: key.path, "no such object in s3://\(client.location.bucket)") }
        // Only ever later: an earlier date is a no-op, never a shortening.
        if let current = info.retainUntil, current >= until { return }
        let body = Array("<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>COMPLIANCE</Mode><RetainUntilDate>\(S3Date.format(until.rounded()))</RetainUntilDate></Retention>".utf8)
        let r: S3Response
        do {
            r = try await client.send(.PUT, key: client.objectName(key.path), query: [("retention", "")],
                                      headers: [("content-md5", contentMD5(body))], body: body)
        } catch { throw io(key, error) }
        guard r.status == 200 else { throw fail(.io, key, r, "PutObjectRetention refused") }
    }
}

extension Date {
    /// Whole seconds, rounded up, so a lock is never shorter than asked.
    func rounded() -> Date { Date(timeIntervalSince1970: timeIntervalSince1970.rounded(.up)) }
}

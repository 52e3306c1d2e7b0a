import Crypto
import Foundation
import NIOHTTP1
import RedoubtAWS

/// An `ObjectStore` on an S3 bucket with Object Lock: every object is written with
/// `x-amz-object-lock-mode: COMPLIANCE` and its own retain-until date (never a bucket
/// default), a Content-MD5 the server must check, and its SHA-256 in `x-amz-meta-sha256`.
///
/// Reads never trust the key's current version. Anyone holding a writer credential of
/// the bucket can put a newer version or a delete marker over a locked object; the
/// locked version stays, but the key's current version is then someone else's. So every
/// operation works on the key's **original** version: the oldest one that is not a
/// delete marker (ListObjectVersions). Redoubt creates a key only once (`If-None-Match:
/// *`, after checking no version exists), so the original is the one Redoubt wrote, and
/// a whole read is checked against the SHA-256 recorded with it.
///
/// Mapping of the contract onto S3:
/// - `put`: if an original exists, same bytes is `.alreadyPresent`, other bytes
///   `.conflict`; otherwise a conditional PUT (a 412 is settled the same way). Objects
///   larger than `multipartThreshold` go up in parts, the lock on CreateMultipartUpload,
///   each part with its own Content-MD5 and its ETag checked, the upload aborted on failure.
/// - `get`/`head`/`extendRetention`: the original version, by version ID.
/// - `list`: ListObjectVersions, so a delete marker does not hide a locked object; one
///   HEAD per listed object for its lock (the listing carries no lock dates).
/// - `delete`: refused while the original is locked; otherwise every version and delete
///   marker of the key is removed, so that the key is free again.
public struct S3Store: ObjectStore {
    public let client: S3Client
    /// Objects larger than this go up as multipart uploads.
    public var multipartThreshold: Int
    /// The part size of multipart uploads (S3's minimum is 5 MiB except the last part).
    public var partSize: Int
    /// Entries per version-listing page (`max-keys`); nil for the server's default (1000).
    public var listPageSize: Int? = nil

    public init(client: S3Client, multipartThreshold: Int = 64 << 20, partSize: Int = 16 << 20) {
        self.client = client
        self.multipartThreshold = multipartThreshold
        self.partSize = max(5 << 20, partSize)
    }

    public var place: String { "s3://\(client.location.bucket)/\(client.location.prefix)" }

    func fail(_ code: StoreError.Code, _ key: ObjectKey, _ r: S3Response, _ what: String) -> StoreError {
        var e = StoreError(code, key: key.path, "\(what): S3 \(r.status) \(r.errorCode ?? "") \(r.errorMessage ?? "")")
        e.remoteCode = r.errorCode
        return e
    }

    func io(_ key: ObjectKey, _ error: any Error) -> StoreError {
        if let e = error as? StoreError { return e }
        return StoreError(.io, key: key.path, "S3 request failed after retries: \(error)")
    }

    func send(_ key: ObjectKey, _ method: HTTPMethod, query: [(name: String, value: String)] = [],
              headers: [(name: String, value: String)] = [], body: [UInt8] = []) async throws -> S3Response {
        do { return try await client.send(method, key: client.objectName(key.path), query: query, headers: headers,
            body: body) } catch {
            throw io(key, error)
        }
    }

    func conflict(_ key: ObjectKey) -> StoreError {
        StoreError(.conflict, key: key.path,
            "an object with other bytes exists under this key in \(place); it is never overwritten")
    }

    // MARK: The original version

    /// The version Redoubt wrote: the oldest version of exactly this key that is not a
    /// delete marker; nil if there is none.
    func original(_ key: ObjectKey) async throws -> S3XML.ListedVersion? {
        let name = client.objectName(key.path)
        return try await Self.originals(client.listVersions(prefix: name, key: key, pageSize: listPageSize)).first {
            $0.key == name
        }
    }

    /// The original version of each key in `versions`, in key order: the oldest version
    /// that is not a delete marker.
    ///
    /// Age comes from the listing's order, never from LastModified: SeaweedFS moves a
    /// version's LastModified when its retention is extended, so by date an attacker's
    /// newer version would pass for the original after Redoubt's next lock extension.
    /// S3 lists a key's versions newest first; should a server list them oldest first,
    /// its `IsLatest` entry comes last and the order is turned round.
    static func originals(_ versions: [S3XML.ListedVersion]) -> [S3XML.ListedVersion] {
        var byKey: [String: [S3XML.ListedVersion]] = [:]
        for v in versions { byKey[v.key, default: []].append(v) }
        var out: [S3XML.ListedVersion] = []
        for (_, listed) in byKey {
            var newestFirst = listed
            if listed.count > 1, listed.last?.isLatest == true, listed.first?.isLatest != true { newestFirst.reverse() }
            if let original = newestFirst.last(where: { !$0.isDeleteMarker }) { out.append(original) }
        }
        return out.sorted { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) }
    }

    /// `versionId` for one version; none for the `null` version of an unversioned bucket.
    static func pin(_ v: S3XML.ListedVersion) -> [(name: String, value: String)] {
        v.versionID == "null" || v.versionID.isEmpty ? [] : [("versionId", v.versionID)]
    }

    // MARK: ObjectStore

    public func put(_ key: ObjectKey, _ data: [UInt8], retainUntil: Date?) async throws -> PutResult {
        let digest = SigV4Signer.hexSHA256(data)
        if let existing = try await original(key) {
            return try await settle(key, data, digest: digest, existing: existing)
        }
        if data.count > multipartThreshold {
            return try await putMultipart(key, data, digest: digest, retainUntil: retainUntil)
        }
        // If-None-Match: * makes the create conditional where the server supports it, so
        // two racing writers cannot both create: the loser sees 412 and compares bytes.
        var headers: [(name: String, value: String)] = [
            ("content-md5", contentMD5(data)), ("x-amz-meta-sha256", digest), ("content-type",
                "application/octet-stream"),
            ("if-none-match", "*"),
        ]
        if let retainUntil { headers += lockHeaders(retainUntil) }
        let r = try await send(key, .PUT, headers: headers, body: data)
        if r.status == 412 || r.status == 409 {
            guard let existing = try await original(key) else {
                throw fail(.remote, key, r, "PUT refused, yet no version is there")
            }
            return try await settle(key, data, digest: digest, existing: existing)
        }
        guard r.status == 200 else { throw fail(.remote, key, r, "PUT refused") }
        // Why: a checksum mismatch is never accepted as written. S3 checked Content-MD5;
        // the ETag of a single-part upload without SSE-KMS is that MD5, so a server that
        // stored other bytes (or ignored the header) shows here.
        if Self.etagIsMD5(r), let etag = r.header("etag")?.trimmingCharacters(in: CharacterSet(charactersIn: "\"")),
            etag.count == 32,
            etag.lowercased() != hexMD5(data)
        {
            throw StoreError(.integrity, key: key.path, "S3 stored bytes whose MD5 (\(etag)) is not the one sent")
        }
        return .created
    }

    /// The key has an original: the same bytes is `.alreadyPresent`, other bytes `.conflict`.
    /// The SHA-256 recorded with the original decides without a read (a whole read checks
    /// the bytes against it later).
    func settle(_ key: ObjectKey, _ data: [UInt8], digest: String,
        existing: S3XML.ListedVersion) async throws -> PutResult {
        guard existing.size == data.count else { throw conflict(key) }
        let h = try await send(key, .HEAD, query: Self.pin(existing))
        guard h.status == 200 else { throw fail(.remote, key, h, "HEAD of the original version failed") }
        // Same size and a recorded hash that differs: other bytes, without reading them.
        // No recorded hash: not a version Redoubt wrote (every put records one), so the
        // key is taken by something else, whatever its bytes.
        guard h.header("x-amz-meta-sha256") == digest else { throw conflict(key) }
        return .alreadyPresent
    }

    /// Whether the answer's ETag is an MD5 of the bytes (AWS: not under SSE-KMS, DSSE-KMS
    /// or SSE-C, where it is opaque). Without this a bucket with default KMS encryption
    /// would fail every write as an integrity error.
    static func etagIsMD5(_ r: S3Response) -> Bool {
        if r.header("x-amz-server-side-encryption-customer-algorithm") != nil { return false }
        if let sse = r.header("x-amz-server-side-encryption")?.lowercased(), sse.hasPrefix("aws:kms") { return false }
        return true
    }

    func lockHeaders(_ until: Date) -> [(name: String, value: String)] {
        [("x-amz-object-lock-mode", "COMPLIANCE"), ("x-amz-object-lock-retain-until-date",
            S3Date.format(until.rounded()))]
    }

    func putMultipart(_ key: ObjectKey, _ data: [UInt8], digest: String, retainUntil: Date?) async throws -> PutResult {
        // The lock and the hash go on CreateMultipartUpload: S3 applies them to the
        // assembled object (parts carry no lock headers).
        var h: [(name: String, value: String)] = [("content-type", "application/octet-stream"), ("x-amz-meta-sha256",
            digest)]
        if let retainUntil { h += lockHeaders(retainUntil) }
        let created = try await send(key, .POST, query: [("uploads", "")], headers: h)
        guard created.status == 200 else { throw fail(.remote, key, created, "CreateMultipartUpload refused") }
        guard let uploadID = S3XML.uploadID(created.body) else {
            throw StoreError(.integrity, key: key.path, "S3 answered CreateMultipartUpload without an UploadId")
        }
        func abort() async { _ = try? await send(key, .DELETE, query: [("uploadId", uploadID)]) }
        do {
            var parts: [(number: Int, etag: String)] = []
            var md5s: [UInt8] = []
            var offset = 0
            repeat {
                try Task.checkCancellation()
                let number = parts.count + 1
                let part = Array(data[offset..<min(data.count, offset + partSize)])
                let md5 = Insecure.MD5.hash(data: part)
                let r = try await send(key, .PUT, query: [("partNumber", "\(number)"), ("uploadId", uploadID)],
                                       headers: [("content-md5", Data(md5).base64EncodedString())], body: part)
                guard r.status == 200, let etag = r.header("etag") else {
                    throw fail(.remote, key, r, "UploadPart \(number) refused")
                }
                // Why: each part's ETag is its MD5; another value means other bytes were stored.
                if Self.etagIsMD5(r),
                    etag.trimmingCharacters(in: CharacterSet(charactersIn: "\"")).lowercased() != hex(md5) {
                    throw StoreError(.integrity, key: key.path,
                        "S3 stored part \(number) with ETag \(etag), not the MD5 of the part sent")
                }
                parts.append((number, etag))
                md5s += Array(md5)
                offset += part.count
            } while offset < data.count
            let body = S3XML.completeMultipartBody(parts)
            let r = try await send(key, .POST, query: [("uploadId", uploadID)],
                                   headers: [("content-md5", contentMD5(body)), ("if-none-match", "*")], body: body)
            // 412/409: someone created the key first. NoSuchUpload: a retry after an
            // answer was lost, and the first Complete went through. Either way the
            // original now decides, by its recorded hash.
            if r.status == 412 || r.status == 409 || r.errorCode == "NoSuchUpload",
                let existing = try await original(key) {
                await abort()
                return try await settle(key, data, digest: digest, existing: existing)
            }
            guard r.status == 200, let done = S3XML.completeMultipart(r.body) else {
                throw fail(.remote, key, r, "CompleteMultipartUpload refused")
            }
            // S3 may answer 200 and put the error in the body.
            if let e = done.error {
                var err = StoreError(.remote, key: key.path,
                    "CompleteMultipartUpload: S3 answered \(e.code): \(e.message)")
                err.remoteCode = e.code
                throw err
            }
            let expected = hexMD5(md5s) + "-\(parts.count)"
            if Self.etagIsMD5(r), let etag = done.etag?.trimmingCharacters(in: CharacterSet(charactersIn: "\"")),
                etag.contains("-"),
                etag.lowercased() != expected
            {
                throw StoreError(.integrity, key: key.path,
                    "S3 assembled an object with ETag \(etag), expected \(expected)")
            }
            guard let v = try await original(key), v.size == data.count else {
                throw StoreError(.integrity, key: key.path,
                    "after a multipart upload \(place) does not hold \(data.count) bytes under this key")
            }
            return .created
        } catch {
            await abort()
            throw error
        }
    }

    public func get(_ key: ObjectKey, range: Range<Int>?) async throws -> [UInt8] {
        guard let v = try await original(key) else {
            throw StoreError(.notFound, key: key.path, "no such object in \(place)")
        }
        return try await read(key, v, range: range)
    }

    /// Reads one version, pinned by its ID, so a newer version or delete marker is never
    /// read instead and a concurrent change cannot mix two versions' bytes.
    func read(_ key: ObjectKey, _ v: S3XML.ListedVersion, range: Range<Int>?) async throws -> [UInt8] {
        var headers: [(name: String, value: String)] = []
        var want = v.size
        if let range {
            guard range.lowerBound >= 0, range.upperBound <= v.size else {
                throw StoreError(.badRange, key: key.path, "range \(range) outside the object's \(v.size) bytes")
            }
            if range.isEmpty { return [] }
            headers.append(("range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)"))
            want = range.count
        }
        let r = try await send(key, .GET, query: Self.pin(v), headers: headers)
        if r.status == 404 { throw StoreError(.notFound, key: key.path, "no such object in \(place)") }
        if r.status == 416 {
            throw StoreError(.badRange, key: key.path, "range \(range.map { "\($0)" } ?? "") refused by S3")
        }
        guard r.status == 200 || r.status == 206 else { throw fail(.remote, key, r, "GET failed") }
        guard r.body.count == want else {
            throw StoreError(.integrity, key: key.path, "asked for \(want) bytes, S3 returned \(r.body.count)")
        }
        // Why: the hash recorded at write time is checked on every whole read, so bytes
        // that changed on the server (or in transit past TLS) are an integrity error.
        // A version without one was not written by Redoubt (every put records it).
        if range == nil {
            guard let recorded = r.header("x-amz-meta-sha256") else {
                throw StoreError(.integrity, key: key.path,
                    "the version in \(place) carries no x-amz-meta-sha256: Redoubt did not write it")
            }
            guard recorded == SigV4Signer.hexSHA256(r.body) else {
                throw StoreError(.integrity, key: key.path,
                    "the bytes S3 returned do not match the SHA-256 recorded when they were written")
            }
        }
        return r.body
    }

    public func head(_ key: ObjectKey) async throws -> ObjectInfo? {
        guard let v = try await original(key) else { return nil }
        return try await info(key, v)
    }

    /// The original version's size and lock, and the SHA-256 recorded when it was written
    /// (nil if it carries none); nil if the key has no version. For an object whose key
    /// is its own hash (packs, manifests) this tells that it is already copied without
    /// reading it on either side; a later whole read still checks the bytes.
    public func headRecorded(_ key: ObjectKey) async throws -> (info: ObjectInfo, sha256: String?)? {
        guard let v = try await original(key) else { return nil }
        let r = try await headVersion(key, v)
        return (Self.info(key, v, r), r.header("x-amz-meta-sha256"))
    }

    /// HEAD of one version: its size and its lock.
    func info(_ key: ObjectKey, _ v: S3XML.ListedVersion) async throws -> ObjectInfo {
        Self.info(key, v, try await headVersion(key, v))
    }

    func headVersion(_ key: ObjectKey, _ v: S3XML.ListedVersion) async throws -> S3Response {
        let r = try await send(key, .HEAD, query: Self.pin(v))
        guard r.status == 200 else { throw fail(.remote, key, r, "HEAD of version \(v.versionID) failed") }
        return r
    }

    static func info(_ key: ObjectKey, _ v: S3XML.ListedVersion, _ r: S3Response) -> ObjectInfo {
        let until = r.header("x-amz-object-lock-retain-until-date").flatMap(S3Date.parse)
        return ObjectInfo(key: key, size: Int(r.header("content-length") ?? "") ?? v.size, retainUntil: until,
                          enforced: r.header("x-amz-object-lock-mode") == "COMPLIANCE" && until != nil)
    }

    public func list(prefix: String) async throws -> [ObjectInfo] {
        // No valid key has an empty component; some servers normalise `a//` to `a/`.
        if prefix.contains("//") || prefix.hasPrefix("/") { return [] }
        let base = client.location.prefix.isEmpty ? "" : client.location.prefix + "/"
        let versions: [S3XML.ListedVersion]
        do { versions = try await client.listVersions(prefix: base + prefix, pageSize: listPageSize) } catch {
            throw (error as? StoreError) ?? StoreError(.io, key: prefix, "S3 list failed after retries: \(error)")
        }
        var found: [(ObjectKey, S3XML.ListedVersion)] = []
        for v in Self.originals(versions) where v.key.hasPrefix(base) {
            // Names that are not valid keys (written by something else) are skipped.
            if let key = ObjectKey(String(v.key.dropFirst(base.count))), key.path.hasPrefix(prefix) {
                found.append((key, v))
            }
        }
        // The listing has no lock dates: one HEAD per object, eight at a time.
        var out: [ObjectInfo?] = Array(repeating: nil, count: found.count)
        try await withThrowingTaskGroup(of: (Int, ObjectInfo).self) { group in
            for (i, (key, v)) in found.enumerated() {
                if i >= 8, let (j, info) = try await group.next() { out[j] = info }
                group.addTask { (i, try await info(key, v)) }
            }
            while let (j, info) = try await group.next() { out[j] = info }
        }
        return out.compactMap { $0 }.sorted { $0.key < $1.key }
    }

    public func delete(_ key: ObjectKey, now: Date) async throws {
        guard let info = try await head(key) else {
            throw StoreError(.notFound, key: key.path, "no such object in \(place)")
        }
        // Why refuse before asking: the bucket refuses too (COMPLIANCE), and both must agree.
        if let until = info.retainUntil, now < until {
            throw StoreError(.locked, key: key.path, "locked until \(S3Date.format(until))")
        }
        // Every version and delete marker, so that the key is free again (a plain DELETE
        // on a versioned bucket only adds a marker, and the original would still be read).
        let name = client.objectName(key.path)
        let versions = try await client.listVersions(prefix: name, key: key, pageSize: listPageSize).filter {
            $0.key == name
        }
        for v in versions.isEmpty ? [nil] : versions.map(Optional.some) {
            let r = try await send(key, .DELETE, query: v.map(Self.pin) ?? [])
            if r.status == 204 || r.status == 200 || r.status == 404 { continue }
            throw fail(r.status == 403 || r.status == 400 ? .locked : .remote, key, r,
                "DELETE of version \(v?.versionID ?? "-") refused")
        }
    }

    public func extendRetention(_ key: ObjectKey, until: Date) async throws {
        guard let v = try await original(key) else {
            throw StoreError(.notFound, key: key.path, "no such object in \(place)")
        }
        let info = try await info(key, v)
        // Only ever later: an earlier date is a no-op, never a shortening.
        if let current = info.retainUntil, current >= until { return }
        let body = S3XML.retentionBody(mode: "COMPLIANCE", until: until)
        let r = try await send(key, .PUT, query: [("retention", "")] + Self.pin(v), headers: [("content-md5",
            contentMD5(body))], body: body)
        guard r.status == 200 else { throw fail(.remote, key, r, "PutObjectRetention refused") }
    }
}

extension S3Client {
    /// Every version and delete marker under `prefix` (a full object name, bucket-relative),
    /// across pages. `key` names the object in errors.
    func listVersions(prefix: String, key: ObjectKey? = nil,
        pageSize: Int? = nil) async throws -> [S3XML.ListedVersion] {
        let what = key?.path ?? prefix
        var out: [S3XML.ListedVersion] = []
        var marker: (key: String, version: String?)? = nil
        var seen = Set<String>()
        repeat {
            var query: [(name: String, value: String)] = [("versions", ""), ("prefix", prefix)]
            if let pageSize { query.append(("max-keys", "\(pageSize)")) }
            if let marker {
                query.append(("key-marker", marker.key))
                if let v = marker.version { query.append(("version-id-marker", v)) }
            }
            let r: S3Response
            do { r = try await send(.GET, key: nil, query: query) } catch {
                throw StoreError(.io, key: what, "S3 ListObjectVersions failed after retries: \(error)")
            }
            guard r.status == 200 else {
                var e = StoreError(.remote, key: what,
                    "S3 ListObjectVersions refused: \(r.status) \(r.errorCode ?? "") \(r.errorMessage ?? "")")
                e.remoteCode = r.errorCode
                throw e
            }
            guard let page = S3XML.listObjectVersions(r.body) else {
                throw StoreError(.integrity, key: what, "S3 sent a version listing that is not a ListVersionsResult")
            }
            out += page.versions
            if page.isTruncated {
                guard let next = page.nextKeyMarker else {
                    throw StoreError(.integrity, key: what, "S3 version listing is truncated without a NextKeyMarker")
                }
                // A server that hands back a marker it gave before, or goes back in key order
                // (S3 lists keys in ascending order), would loop for ever.
                let seenKey = next + "\u{0}" + (page.nextVersionIDMarker ?? "")
                if let marker, next.utf8.lexicographicallyPrecedes(marker.key.utf8) || seen.contains(seenKey) {
                    throw StoreError(.integrity, key: what, "S3 version listing does not advance past \(next)")
                }
                seen.insert(seenKey)
                marker = (next, page.nextVersionIDMarker)
            } else {
                marker = nil
            }
        } while marker != nil
        return out
    }
}

func hex(_ digest: some Sequence<UInt8>) -> String { digest.map { String(format: "%02x", $0) }.joined() }

/// Lowercase hex MD5: the ETag of a single-part upload.
func hexMD5(_ body: [UInt8]) -> String { hex(Insecure.MD5.hash(data: body)) }

extension Date {
    /// Whole seconds, rounded up, so a lock is never shorter than asked.
    func rounded() -> Date { Date(timeIntervalSince1970: timeIntervalSince1970.rounded(.up)) }
}

import Foundation
import NIOHTTP1

// S3 legal hold on the original version of a key (docs/PROTOCOL.md §4.3): a held object
// version cannot be deleted, by anyone, until the hold is lifted, whatever its
// retain-until date. Redoubt sets it on the objects of held snapshots in its copies.
extension S3Store {
    /// Sets (`on`) or lifts the legal hold of the key's original version (the one Redoubt
    /// wrote, never a later version someone else put over it).
    public func setLegalHold(_ key: ObjectKey, on: Bool) async throws {
        guard let v = try await original(key) else {
            throw StoreError(.notFound, key: key.path, "no such object in \(place)")
        }
        let body = S3XML.legalHoldBody(on: on)
        let r = try await send(key, .PUT, query: [("legal-hold", "")] + Self.pin(v), headers: [("content-md5",
            contentMD5(body))], body: body)
        guard r.status == 200 else { throw fail(.remote, key, r, "PutObjectLegalHold \(on ? "ON" : "OFF") refused") }
    }

    /// Whether the key's original version has a legal hold (nil if the bucket reports none set).
    public func legalHold(_ key: ObjectKey) async throws -> Bool? {
        guard let v = try await original(key) else {
            throw StoreError(.notFound, key: key.path, "no such object in \(place)")
        }
        let r = try await send(key, .GET, query: [("legal-hold", "")] + Self.pin(v))
        if r.status == 404 { return nil }
        guard r.status == 200 else { throw fail(.remote, key, r, "GetObjectLegalHold refused") }
        return S3XML.legalHoldStatus(r.body).map { $0 == "ON" }
    }
}

extension S3XML {
    /// The body of PutObjectLegalHold.
    public static func legalHoldBody(on: Bool) -> [UInt8] {
        Array("""
            <LegalHold \
            xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>\(on ? "ON" : "OFF")</Status></LegalHold>
            """.utf8)
    }

    /// `ON` or `OFF` from a GetObjectLegalHold answer.
    public static func legalHoldStatus(_ bytes: [UInt8]) -> String? {
        guard let root = S3XMLElement.parse(bytes), root.name == "LegalHold" else { return nil }
        return root.value("Status")
    }
}

import Foundation
import Hummingbird
import Logging
import RedoubtCore
@testable import RedoubtServer
import Testing

/// Catalog refusals carry no HTTP; the service's edge maps them, in one table, to what the
/// API has always answered. A new backend throws the same codes and so answers alike.
@Suite struct CatalogErrorTests {
    /// The table as the API documents it (docs/PROTOCOL.md error codes): changing a row
    /// changes what clients and scripts see.
    static let expected: [CatalogError.Code: (Int, String)] = [
        .notFound: (404, "E_NOT_FOUND"), .conflict: (409, "E_CONFLICT"), .beingCollected: (409, "E_RETRY"),
        .packsMissing: (409, "E_PACKS_MISSING"), .shredded: (410, "E_TENANT_SHREDDED"), .held: (409, "E_HELD"),
        .noWriteMaterial: (409, "E_NO_WRITE_MATERIAL"), .forbidden: (403, "E_FORBIDDEN"), .quota: (507, "E_QUOTA"),
        .inconsistent: (500, "E_INTERNAL"),
    ]

    @Test func everyCodeMapsToItsStatusAndStableCode() {
        #expect(Set(Self.expected.keys) == Set(CatalogError.Code.allCases), "a code without a row in this table")
        for code in CatalogError.Code.allCases {
            let e = ServerError(CatalogError(code, object: "tenant acme", "tenant acme: why and the fix"))
            #expect(
                e.status == Self.expected[code]?.0 && e.code == Self.expected[code]?.1,
                "\(code) → \(e.status) \(e.code)")
            #expect(e.message == "tenant acme: why and the fix", "the mapping keeps the catalog's message as it is")
        }
    }

    /// The CLI reports a catalog error it meets locally exactly as the mapped one, and
    /// leaves with the exit code a client of the API would.
    @Test func theCLISeesWhatAClientSees() {
        for code in CatalogError.Code.allCases {
            let c = CatalogError(code, object: "x", "m")
            let s = ServerError(c)
            #expect(
                c.description == s.description && c.errorCode == s.code && c.exitCategory == s.exitCategory, "\(code)")
        }
        #expect(CatalogError(.notFound, object: "x", "m").exitCategory == .notFound)
        #expect(CatalogError(.forbidden, object: "x", "m").exitCategory == .refused)
    }

    /// The refusals worded once read exactly as they always did.
    @Test func sharedRefusalsKeepTheirWording() {
        let shredded = ServerError.shredded("acme")
        #expect(shredded.status == 410 && shredded.code == "E_TENANT_SHREDDED")
        #expect(
            shredded.message
                == "tenant acme was crypto-shredded: its read key is destroyed; its backups can never be read again "
                + "and nothing can be added to it"
        )
        let material = ServerError.noWriteMaterial("acme")
        #expect(material.status == 409 && material.code == "E_NO_WRITE_MATERIAL")
        #expect(
            material.message.hasPrefix(
                "this server has no write material for tenant acme (its catalog was rebuilt from the store"))
    }

    /// A refusal from inside a catalog transaction reaches the client as it did when the
    /// catalog threw HTTP errors itself: here the rotation race, through the real catalog.
    @Test func aRefusalInsideATransactionNamesTheObject() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-caterr-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let catalog = try Catalog(path: dir.appendingPathComponent("catalog.sqlite").path)
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        try catalog.insertTenant(
            TenantRecord(
                name: "acme", readKeyID: "k", readPublicKey: [1], writeMaterial: [2], wrappedReadKey: "{}",
                minRetention: 86400, createdAt: now))
        let stale = #expect(throws: CatalogError.self) {
            try catalog.replaceReadKey(
                tenant: "acme", newVersion: 3, wrapped: "{}", retiredStub: "{}", now: now, shredded: false)
        }
        #expect(stale?.code == .conflict && stale?.object == "tenant acme")
        #expect(stale.map { ServerError($0).code } == "E_CONFLICT")
        let missing = #expect(throws: CatalogError.self) {
            try catalog.replaceReadKey(
                tenant: "nobody", newVersion: 2, wrapped: "{}", retiredStub: "{}", now: now, shredded: false)
        }
        #expect(missing.map { ServerError($0).status } == 404)
    }

    /// The HTTP edge answers a catalog refusal that reaches it as the mapped error: status,
    /// the `x-redoubt-error` code header, nothing marked as audited.
    @Test func theHTTPEdgeAppliesTheMapping() async {
        let logger = Logger(label: "test.catalog-error")
        for code in CatalogError.Code.allCases {
            let r = await handle(logger) { throw CatalogError(code, object: "tenant acme", "m") }
            #expect(Int(r.status.code) == Self.expected[code]?.0, "\(code)")
            #expect(r.headers[errorCodeHeader] == Self.expected[code]?.1, "\(code)")
            #expect(r.headers[auditedHeader] == nil)
        }
    }
}

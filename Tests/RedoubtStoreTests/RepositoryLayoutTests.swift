import Foundation
import RedoubtCore
import RedoubtStore
import Testing

/// The one spelling of every object key, and its parser: each key parses back to what it
/// names, and nothing else (another tenant's key, a near miss, a path trick) parses at all.
@Suite struct RepositoryLayoutTests {
    static func randomBytes() -> [UInt8] { (0..<32).map { _ in UInt8.random(in: 0...255) } }

    @Test func everyKeyParsesBackToWhatItNames() throws {
        let pack = try #require(PackID(bytes: Self.randomBytes()))
        let snap = try #require(SnapshotID(bytes: Self.randomBytes()))
        let objects: [RepositoryLayout.Object] = [
            .pack(tenant: "acme", id: pack), .manifest(tenant: "acme", id: snap), .descriptor(tenant: "acme",
                version: 1),
            .descriptor(tenant: "a.b-c_d", version: 12), .catalogExport(tenant: "acme",
                milliseconds: 1_800_000_000_123),
            .hostKeyStatement(tenant: "acme", principal: "00ff", revocation: false),
            .hostKeyStatement(tenant: "acme", principal: "00ff", revocation: true), .auditHead(seq: 42),
        ]
        for o in objects {
            let key = try #require(RepositoryLayout.key(o), "\(o) has no key")
            #expect(RepositoryLayout.parse(key.path) == o, "\(key.path)")
            if let t = o.tenant {
                #expect(RepositoryLayout.parse(key.path, tenant: t) == o)
                #expect(RepositoryLayout.tenant(of: key.path) == t)
                #expect(key.path.hasPrefix(RepositoryLayout.tenantPrefix(t)))
            }
        }
        // The spellings other copies (bucket copies, media) and older servers rely on.
        let h = pack.description
        #expect(RepositoryLayout.packKey(tenant: "acme", id: pack).path == "t/acme/packs/\(h.prefix(2))/\(h)")
        #expect(RepositoryLayout.manifestKey(tenant: "acme", id: snap).path == "t/acme/snapshots/\(snap)")
        #expect(RepositoryLayout.descriptorKey(tenant: "acme", version: 3).path == "t/acme/tenant-v3.json")
        #expect(RepositoryLayout.key(.catalogExport(tenant: "acme",
            milliseconds: 5))?.path == "t/acme/catalog/0000000000005.json")
        #expect(RepositoryLayout.key(.auditHead(seq: 7))?.path == "audit-head/000000000007.json")
        #expect(RepositoryLayout.descriptorName(version: 9) == "tenant-v9.json")
        #expect(RepositoryLayout.key(.hostKeyStatement(tenant: "acme", principal: "ab", revocation: true))?.path
                    == "t/acme/host-keys/ab.revocation")
        #expect(RepositoryLayout.key(.hostKeyStatement(tenant: "acme", principal: "AB", revocation: false)) == nil)
        #expect(RepositoryLayout.descriptorVersion(name: "tenant-v9.json") == 9)
    }

    @Test func anotherTenantsKeyOrAMalformedKeyParsesToNothing() throws {
        let pack = try #require(PackID(bytes: Self.randomBytes()))
        let h = pack.description
        let beta = RepositoryLayout.packKey(tenant: "beta", id: pack).path
        #expect(RepositoryLayout.parse(beta, tenant: "acme") == nil)
        #expect(RepositoryLayout.parse(RepositoryLayout.descriptorKey(tenant: "beta", version: 1).path,
            tenant: "acme") == nil)
        // A tenant whose name starts like another's is another tenant.
        #expect(RepositoryLayout.parse("t/acme2/tenant-v1.json", tenant: "acme") == nil)
        #expect(RepositoryLayout.parse(RepositoryLayout.key(.auditHead(seq: 1))!.path, tenant: "acme") == nil)
        let malformed = [
            "", "t/acme", "t/acme/", "t//tenant-v1.json", "t/acme/packs/\(h)", "t/acme/packs/zz/\(h)",
            "t/acme/packs/\(h.prefix(2))/\(h.uppercased())", "t/acme/packs/\(h.prefix(2))/\(h)/x",
            "t/acme/snapshots/\(h.dropLast())", "t/acme/snapshots/\(h)0", "t/acme/snapshots/../packs/\(h)",
            "/t/acme/tenant-v1.json", "t/acme/tenant-v0.json", "t/acme/tenant-v01.json", "t/acme/tenant-v-1.json",
            "t/acme/tenant-v1.json.bak", "t/acme/tenant-v.json", "t/acme/Tenant-v1.json",
            "t/acme/catalog/123.json", "t/acme/catalog/000000000000a.json", "audit-head/1.json",
            "audit-head/000000000001.json/x", "u/acme/tenant-v1.json", "t/acme/other/tenant-v1.json",
        ]
        for m in malformed {
            #expect(RepositoryLayout.parse(m) == nil, "\(m.debugDescription) parsed")
            #expect(RepositoryLayout.parse(m, tenant: "acme") == nil, "\(m.debugDescription) parsed")
        }
        // No key for a tenant name that could not be one component, nor for negative numbers.
        #expect(RepositoryLayout.key(.descriptor(tenant: "a/b", version: 1)) == nil)
        #expect(RepositoryLayout.key(.descriptor(tenant: "..", version: 1)) == nil)
        #expect(RepositoryLayout.key(.descriptor(tenant: "ACME", version: 1)) == nil)
        #expect(RepositoryLayout.key(.descriptor(tenant: "acme", version: 0)) == nil)
        #expect(RepositoryLayout.key(.auditHead(seq: -1)) == nil)
    }
}

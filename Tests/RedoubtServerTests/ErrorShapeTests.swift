import Foundation
import Testing
@testable import RedoubtAWS
@testable import RedoubtClient
import RedoubtCore
import RedoubtKMS
import RedoubtMedia
import RedoubtServer
@testable import RedoubtStore

/// One error shape: every module's public error is a `RedoubtError` whose exit category is
/// the one README "Exit codes" documents, and README, `--help` and the code's table of exit
/// codes list the same codes with the same meanings.
@Suite struct ErrorShapeTests {
    static let packageRoot: URL = {
        var dir = URL(fileURLWithPath: #filePath)
        while dir.path != "/"
            && !FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) {
            dir.deleteLastPathComponent()
        }
        return dir
    }()

    /// README's "Exit codes" table as (code, meaning) rows.
    static func readmeExitCodes() throws -> [(Int32, String)] {
        let readme = try String(contentsOf: packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let lines = readme.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let start = try #require(lines.firstIndex(of: "## Exit codes"), "README.md has no \"## Exit codes\" section")
        var rows: [(Int32, String)] = []
        for line in lines[(start + 1)...] {
            if line.hasPrefix("## ") { break }
            let cells = line.split(separator: "|", omittingEmptySubsequences: false)
                .map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 4, let code = Int32(cells[1]) else { continue }
            rows.append((code, cells[2...].dropLast().joined(separator: "|")))
        }
        return rows
    }

    @Test func readmeListsExactlyTheExitCodesOfTheTable() throws {
        let readme = try Self.readmeExitCodes()
        let table = ExitCategory.allCases.map { ($0.rawValue, $0.meaning) }
        #expect(readme.map(\.0) == table.map(\.0), "README exit codes differ from ExitCategory")
        for (r, t) in zip(readme, table) {
            #expect(r.1 == t.1, "exit code \(r.0): README says \"\(r.1)\", ExitCategory says \"\(t.1)\"")
        }
        #expect(ExitCategory.allCases.map(\.rawValue) == Array(0...13))
    }

    @Test func helpListsEveryExitCodeWithItsMeaning() throws {
        let binary = CrashTests.binary.path
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the redoubt executable first")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = ["--help"]
        let pipe = Pipe()
        p.standardOutput = pipe
        try p.run()
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        // The help may wrap long lines: compare with runs of blanks made one space.
        func flat(_ s: String) -> String { s.split(whereSeparator: { $0 == " " || $0 == "\n" }).joined(separator: " ") }
        let help = flat(out)
        for c in ExitCategory.allCases {
            #expect(help.contains(flat("\(c.rawValue) \(c.meaning)")), "--help lacks exit code \(c.rawValue): \(out)")
        }
    }

    /// A set written with 512-byte blocks; returns its path.
    func writeMediaSet(_ dir: String) throws -> String {
        let path = "\(dir)/set"
        let w = try MediaWriter(device: FileSequentialDevice(path: path), setID: Array(0..<16), pool: "offsite",
            tenant: "acme",
                                blockSize: 512, created: "2026-11-26T00:00:00Z", retainUntil: nil, writer: "test")
        for i in 0..<4 {
            try w.append(MediaRecord(type: .pack, id: String(repeating: String(i), count: 64),
                                     body: (0..<(300 + i * 700)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) }))
        }
        _ = try w.finish()
        return path
    }

    func tempDir() -> String {
        let p = NSTemporaryDirectory() + "redoubt-errors-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true)
        return p
    }

    @Test func damagedOrTruncatedMediaMapToIntegrity() throws {
        let dir = tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = try writeMediaSet(dir)
        let good = try Data(contentsOf: URL(fileURLWithPath: path))
        // A flipped bit in a data block.
        var flipped = good
        flipped[3 * 512 + 100] ^= 0x10
        try flipped.write(to: URL(fileURLWithPath: path))
        let damaged = #expect(throws: MediaError.self) {
            _ = try MediaReader(source: FileSequentialDevice(path: path), skipDamaged: false).read { _ in }
        }
        #expect(damaged?.code == "E_MEDIA_DAMAGED")
        #expect(damaged.map { ExitCategory.of($0) } == .integrity)
        #expect(damaged?.errorCode == "E_MEDIA_DAMAGED")
        // Cut short mid-block.
        try good.prefix(5 * 512 + 17).write(to: URL(fileURLWithPath: path))
        let truncated = #expect(throws: MediaError.self) {
            _ = try MediaReader(source: FileSequentialDevice(path: path), skipDamaged: true).read { _ in }
        }
        #expect(truncated?.code == "E_MEDIA_TRUNCATED")
        #expect(truncated.map { ExitCategory.of($0) } == .integrity)
        // A wrong medium or a refused write is a plain failure naming the fix.
        for code in ["E_MEDIA_LABEL", "E_MEDIA_FOREIGN", "E_MEDIA_ORDER", "E_MEDIA_DEVICE", "E_MEDIA_EXISTS",
            "E_MEDIA_FULL",
                     "E_MEDIA_LIMIT", "E_MEDIA_RETAINED"] {
            #expect(ExitCategory.of(MediaError(code: code, volume: 1, block: 0, detail: "x")) == .failure, "\(code)")
        }
        for code in ["E_MEDIA_BLOCK", "E_MEDIA_MISSING"] {
            #expect(ExitCategory.of(MediaError(code: code, volume: 1, block: 0, detail: "x")) == .integrity, "\(code)")
        }
    }

    /// Through the binary: `media list` of a truncated and of a damaged set exits 5 and names
    /// the code, the volume and the block.
    @Test func damagedMediaSetExitsFiveThroughTheCLI() throws {
        let binary = CrashTests.binary.path
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the redoubt executable first")
        let dir = tempDir(); defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = try writeMediaSet(dir)
        let good = try Data(contentsOf: URL(fileURLWithPath: path))
        func list() throws -> (Int32, String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: binary)
            p.arguments = ["media", "list", "--device", "file:\(path)"]
            let err = Pipe()
            p.standardError = err
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            return (p.terminationStatus, text)
        }
        let (ok, okErr) = try list()
        #expect(ok == 0, "intact set: \(okErr)")
        try good.prefix(5 * 512 + 17).write(to: URL(fileURLWithPath: path))
        let (t, tErr) = try list()
        #expect(t == 5 && tErr.contains("E_MEDIA_TRUNCATED: volume 1 block 5"), "truncated set: \(t) \(tErr)")
        var flipped = good
        flipped[3 * 512 + 100] ^= 0x10
        try flipped.write(to: URL(fileURLWithPath: path))
        let (d, dErr) = try list()
        #expect(d == 5 && dErr.contains("E_MEDIA_DAMAGED"), "damaged set: \(d) \(dErr)")
    }

    @Test func eachErrorTypeHasTheExitCodeReadmeDocuments() throws {
        func of(_ e: any Error) -> Int32 { ExitCategory.of(e).rawValue }
        // RedoubtCore: stored bytes that fail a check are 5; anything else 1.
        for c in [CoreError.Code.corrupt, .authenticationFailed, .wrongTenant, .badSignature, .missing] {
            #expect(of(CoreError(c, object: "pack 3fa1", "x")) == 5, "\(c)")
        }
        for c in [CoreError.Code.unsupportedVersion, .limitExceeded, .badKey, .compression] {
            #expect(of(CoreError(c, object: "pack 3fa1", "x")) == 1, "\(c)")
        }
        #expect(CoreError(.corrupt, object: "o", "x").errorCode == "E_CORRUPT")
        // RedoubtStore.
        #expect(of(StoreError(.integrity, key: "k", "x")) == 5)
        for c in [StoreError.Code.notFound, .conflict, .locked, .badRange, .io, .remote, .config] {
            #expect(of(StoreError(c, key: "k", "x")) == 1, "\(c)")
        }
        #expect(StoreError(.locked, key: "k", "x").errorCode == "E_STORE_LOCKED")
        #expect(of(S3Error(status: 403, code: "AccessDenied", message: "x", key: "k")) == 1)
        // RedoubtAWS.
        #expect(of(AWSCredentialsError(message: "no AWS credentials")) == 1)
        // RedoubtKMS: 9-12 for the KMS states a user acts on, else 6.
        #expect(of(KeyProviderError.unreachable(provider: "kmip://k", detail: "x")) == 9)
        #expect(of(KeyProviderError.keyDisabled(provider: "kmip://k", detail: "x")) == 10)
        #expect(of(KeyProviderError.keyDestroyed(provider: "kmip://k", detail: "x")) == 11)
        #expect(of(KeyProviderError.credentialRejected(provider: "kmip://k", detail: "x")) == 12)
        for e in [KeyProviderError.wrongSecret(provider: "passphrase:"), .malformed("x"), .unknownProvider("x"),
                  .secretMissing(provider: "passphrase:", how: "x"), .kmsProtocol(provider: "kmip://k", detail: "x")] {
            #expect(of(e) == 6, "\(e)")
        }
        #expect(KeyProviderError.keyDestroyed(provider: "p", detail: "x").errorCode == "E_KEY_DESTROYED")
        // RedoubtServer and, over the API, RedoubtClient: the same status and code exit alike.
        let http: [(Int, String, Int32)] = [
            (404, "E_NOT_FOUND", 3), (403, "E_FORBIDDEN", 4), (401, "E_UNAUTHENTICATED", 4), (422, "E_INTEGRITY", 5),
            (403, "E_APPROVAL_REQUIRED", 13), (409, "E_APPROVAL_PENDING", 13), (400, "E_BAD_REQUEST", 1), (409,
                "E_RETRY", 1),
        ]
        for (status, code, exit) in http {
            #expect(of(ServerError(status, code, "x")) == exit, "server \(status) \(code)")
            #expect(of(APIError(status: status, code: code, message: "x")) == exit, "client \(status) \(code)")
        }
        #expect(of(APIError(status: 0, code: "E_CONNECT", message: "x")) == 7)
        // A garbled token or local credential file is the user's to fix: usage, not integrity.
        #expect(of(APIError(status: 0, code: "E_TOKEN", message: "x")) == 2)
        #expect(of(APIError(status: 0, code: "E_CREDENTIAL", message: "x")) == 2)
        #expect(ServerError.notFound("x").errorCode == "E_NOT_FOUND")
        // The client's filesystem side.
        #expect(of(ArchiveError(.notFound, object: "/etc", "x")) == 3)
        for c in [ArchiveError.Code.io, .unsafePath, .invalidArgument, .inconsistentSnapshot] {
            #expect(of(ArchiveError(c, object: "/etc", "x")) == 1, "\(c)")
        }
        #expect(of(MetadataCache.Unusable(reason: "x")) == 1)
        // An error of no Redoubt module is a plain failure.
        #expect(of(CocoaError(.fileNoSuchFile)) == 1)
    }
}

import Foundation
import NIOHTTP1
import Testing
import RedoubtClient
import RedoubtCore
@testable import RedoubtServer

/// Untrusted strings and bodies at the API's edge, sent with real credentials over real TLS:
/// nothing a caller sends can break the audit chain, slip past the JSON decoder by a
/// duplicate key, reach an admin's terminal as control characters, or make the server
/// answer far more than it was asked.
@Suite(.serialized, .timeLimit(.minutes(5))) struct UntrustedInputTests {
    struct World {
        let server: TestServer
        let writerConfig: ClientConfig
        let writer: APIClient
        let restorer: APIClient

        func stop() async {
            await writer.shutdown()
            await restorer.shutdown()
            await server.stop()
        }
    }

    func world() async throws -> World {
        let server = try await TestServer.start()
        try await server.createTenant("acme", keys: try TenantKeys.generate())
        let (wc, w) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        let (_, r) = try await server.enroll(tenant: "acme", role: "restorer", name: "vault")
        return World(server: server, writerConfig: wc, writer: w, restorer: r)
    }

    /// The status and error code of a request (200/"" when it succeeded).
    func status(_ client: APIClient, _ method: HTTPMethod, _ path: String,
                json: String? = nil) async -> (Int, String, String) {
        do {
            let body = json.map { Array($0.utf8) }
            let r = try await client.send(method, path, body: body, contentType: "application/json")
            return (r.status, "", String(decoding: r.body, as: UTF8.self))
        } catch let e as APIError { return (e.status, e.code, e.message) } catch { return (-1, "\(error)", "") }
    }

    /// Byte strings that are not UTF-8 (lone continuation, overlong NUL, surrogate, too high).
    static let invalidUTF8: [[UInt8]] = [[0xff], [0xfe, 0xff], [0x80], [0xc0, 0x80], [0xed, 0xa0, 0x80],
                                         [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82]]

    // MARK: 1. the audit chain

    @Test func aHostsQueryWithAnyByteCannotBreakTheAuditChain() async throws {
        let w = try await world()
        defer { Task { await w.stop() } }
        var byteStrings = (0...255).map { [UInt8(ascii: "a"), UInt8($0), UInt8(ascii: "b")] }
        byteStrings += Self.invalidUTF8
        byteStrings.append(Array("x\u{202e}evil\u{2028}line".utf8))
        for bytes in byteStrings {
            let q = bytes.map { String(format: "%%%02X", $0) }.joined()
            let (code, err, _) = await status(w.writer, .GET, "/v1/snapshots?host=\(q)")
            // A name that is a valid principal name but not this host's: refused as another host's.
            #expect(code == 400 || code == 403, "host=\(q): \(code) \(err)")
            if code == 400 { #expect(err == "E_BAD_REQUEST") }
        }
        let verdict = try await w.server.service.catalog.verifyAudit()
        #expect(verdict.firstBad == nil, "audit chain broken at \(verdict.firstBad ?? -1)")
        // What was audited holds no control character.
        for r in try await w.server.service.catalog.auditRecords() {
            for f in [r.actor, r.object, r.detail] {
                let raw = f.unicodeScalars.contains { $0.value < 0x20 || (0x7f...0x9f).contains($0.value) }
                #expect(!raw, "\(r.seq): \(f.debugDescription)")
            }
        }
        let (ok, _, _) = await status(w.writer, .GET, "/v1/snapshots?host=web1")
        #expect(ok == 200)
        try await Self.expectAuditVerifyPasses(w.server)
    }

    @Test func everyByteValueInEveryAuditedFieldIsStoredAsHashed() async throws {
        let w = try await world()
        defer { Task { await w.stop() } }
        let catalog = w.server.service.catalog
        var values: [String] = []
        values.append(String(String.UnicodeScalarView((0...255).compactMap { Unicode.Scalar(UInt32($0)) })))
        values.append(String(decoding: (0...255).map { UInt8($0) }, as: UTF8.self))
        values += Self.invalidUTF8.map { String(decoding: [0x41] + $0 + [0x42], as: UTF8.self) }
        values.append("bidi \u{202e}txt.exe\u{2066} sep\u{2028}\u{2029} bom\u{feff} \\x00 literal")
        values.append(String(repeating: "\u{0}", count: 100_000))
        for v in values {
            for field in 0..<8 {
                var f = Array(repeating: "x", count: 8)
                f[field] = v
                let rec = try await catalog.audit(time: Date(), actor: f[0], role: f[1], credential: f[2], source: f[3],
                                            action: f[4], object: f[5], outcome: f[6], detail: f[7])
                let stored = try #require(try await catalog.auditRecords(after: rec.seq - 1, limit: 1).first)
                let fields = { (r: Catalog.AuditRecord) in
                    [r.actor, r.role, r.credential, r.source, r.action, r.object, r.outcome, r.detail]
                }
                #expect(fields(stored) == fields(rec) && stored.hash == rec.hash,
                        "field \(field): stored \(stored) differs from what was hashed \(rec)")
                #expect(fields(rec).allSatisfy { $0.utf8.count <= 4096 + 64 }, "field \(field) is not bounded")
            }
        }
        // Each single byte in the object field: distinct inputs stay distinct once stored.
        var seen: [String: Int] = [:]
        for b in 0...255 {
            let s = String(String.UnicodeScalarView([Unicode.Scalar(UInt8(b))]))
            let rec = try await catalog.audit(time: Date(), actor: "a", role: "r", credential: "c", source: "s",
                                        action: "probe", object: "o" + s + "o", outcome: "ok")
            #expect(seen[rec.object] == nil,
                    "byte \(b) and \(seen[rec.object] ?? -1) are stored alike: \(rec.object.debugDescription)")
            seen[rec.object] = b
        }
        let verdict = try await catalog.verifyAudit()
        #expect(verdict.firstBad == nil, "audit chain broken at \(verdict.firstBad ?? -1)")
        try await Self.expectAuditVerifyPasses(w.server)
    }

    /// `redoubt audit verify` (the built binary, on the data directory) finds the chain intact.
    static func expectAuditVerifyPasses(_ server: TestServer,
                                        sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let data = server.dir.appendingPathComponent("data").path
        let (s, out, err) = try await UntrustedInputCLITests.run(["audit", "verify", "--data", data])
        #expect(s == 0 && out.contains("intact"), "audit verify: \(s) \(out) \(err)", sourceLocation: sourceLocation)
    }

    @Test func anEnrollmentOSWithControlCharactersIsRefusedBeforeAnythingIsStored() async throws {
        let w = try await world()
        defer { Task { await w.stop() } }
        let token = try await w.server.admin.createEnrollment(tenant: "acme", role: "writer", name: "web2",
                                                             ttlSeconds: 3600).token
        let bad = ["Linux\u{0}evil", "Linux\u{1b}]0;owned\u{7}", "Linux\nacme/forged  active", "Linux\u{9b}31m",
                   "Linux\u{202e}", "Li\u{200b}nux",
                   String(repeating: "L", count: 129)]
        for (i, os) in bad.enumerated() {
            let cfg = ClientConfig(path: w.server.dir.appendingPathComponent("bad-os-\(i)").path)
            await refused("E_BAD_REQUEST", "enrollment with os \(os.debugDescription)") {
                _ = try await ClientConfig.enroll(token: token, into: cfg, os: os)
            }
        }
        // The token was not used up by the refusals.
        let cfg = ClientConfig(path: w.server.dir.appendingPathComponent("good-os").path)
        _ = try await ClientConfig.enroll(token: token, into: cfg, os: " Debian GNU/Linux 12 (bookworm) ")
        let p = try #require(try await w.server.admin.principals().first { $0.name == "web2" })
        #expect(p.os == "Debian GNU/Linux 12 (bookworm)")
        #expect(try await w.server.service.catalog.verifyAudit().firstBad == nil)
        try await Self.expectAuditVerifyPasses(w.server)
    }

    @Test func aMalformedRequestIDIsRefusedAndTheChainHolds() async throws {
        let w = try await world()
        defer { Task { await w.stop() } }
        let ids = ["a\\u0000b", "\\u001b[31mred", "0123456789abcdeg", "0123456789ABCDEF",
                   String(repeating: "a", count: 300)]
        for id in ids {
            let body = #"{"quorum":2,"requestID":"\#(id)"}"#
            let (code, err, msg) = await status(w.server.admin, .PUT, "/v1/quorum", json: body)
            #expect(code == 400 && err == "E_BAD_REQUEST" && msg.contains("requestID"),
                    "requestID \(id): \(code) \(err) \(msg)")
        }
        let (code, err, _) = await status(w.server.admin, .POST, "/v1/requests/%1b%5b31m/approve")
        #expect(code == 400 && err == "E_BAD_REQUEST", "approve of a malformed ID: \(code) \(err)")
        // A hold's reason is free text: listed and audited, so it follows the same rule.
        for reason in [#"case 7\u0000"#, #"case 7\u001b[2J"#, #"case 7\u202e"#, #"case 7\n999 forged"#] {
            let body = #"{"tenant":"acme","reason":"\#(reason)"}"#
            let (h, hErr, _) = await status(w.server.admin, .POST, "/v1/holds", json: body)
            #expect(h == 400 && hErr == "E_BAD_REQUEST", "hold reason \(reason): \(h) \(hErr)")
        }
        #expect(try await w.server.admin.holds().isEmpty)
        #expect(try await w.server.service.catalog.verifyAudit().firstBad == nil)
        try await Self.expectAuditVerifyPasses(w.server)
    }

    // MARK: 2. request JSON

    @Test func duplicateKeysTrailingBytesDeepNestingAndHugeNumbersAreRefused() async throws {
        let w = try await world()
        defer { Task { await w.stop() } }
        let admin = w.server.admin
        let cases: [(String, String, String)] = [
            ("/v1/tenants/acme/gc", #"{"dryRun":true,"dryRun":false}"#, "dryRun"),
            ("/v1/tenants/acme/gc", #"{"dryRun":true,"dry\u0052un":false}"#, "dryRun"),
            ("/v1/tenants/acme/gc", #"{"dryRun":true,"x":{"a":1,"a":2}}"#, "\"a\""),
            ("/v1/tenants/acme/gc", #"{"dryRun":true}{"dryRun":false}"#, "trailing"),
            ("/v1/tenants/acme/gc",
             #"{"dryRun":true,"x":"# + String(repeating: "[", count: 100) + String(repeating: "]", count: 100) + "}",
             "deep"),
            ("/v1/tenants/acme/enrollments", #"{"role":"auditor","role":"writer","name":"x"}"#, "role"),
            ("/v1/tenants/acme/enrollments", #"{"role":"auditor","name":"x","ttlSeconds":1e400}"#, "number"),
            ("/v1/admins", #"{"name":"x","ttlSeconds":3600,"requestID":null,"ttlSeconds":60}"#, "ttlSeconds"),
        ]
        for (path, body, names) in cases {
            let (code, err, msg) = await status(admin, .POST, path, json: body)
            #expect(code == 400 && err == "E_BAD_REQUEST" && msg.contains(names),
                    "\(path) \(body.prefix(60)): \(code) \(err) \(msg)")
        }
        // The wrapped read key is JSON inside the JSON body: checked as strictly.
        let nested = #"{"wrappedReadKey":"{\"format\":1,\"context\":{\"tenant\":\"acme\",\"tenant\":\"x\"}}"}"#
        let (n, nErr, nMsg) = await status(admin, .PUT, "/v1/tenants/acme/read-key", json: nested)
        #expect(n == 400 && nErr == "E_BAD_REQUEST" && nMsg.contains("duplicate key \"tenant\""),
            "\(n) \(nErr) \(nMsg)")
        let (q, qErr, qMsg) = await status(admin, .PUT, "/v1/quorum", json: #"{"quorum":99999999999999999999999}"#)
        #expect(q == 400 && qErr == "E_BAD_REQUEST" && qMsg.contains("quorum"), "huge quorum: \(q) \(qErr) \(qMsg)")
        // Nothing ran and nothing was issued.
        // (Refused bodies are audited as failed `gc` requests; a collection that ran is `ok`.)
        #expect(try await w.server.service.catalog.auditRecords()
            .filter { $0.action == "gc" && $0.outcome == "ok" }.isEmpty)
        #expect(try await admin.enrollments().isEmpty)
        // A well-formed body with whitespace around it still works.
        let (ok, okErr, okBody) = await status(admin, .POST, "/v1/tenants/acme/gc", json: " {\"dryRun\" : true}\n")
        #expect(ok == 200 && okBody.contains("\"dryRun\":true"), "\(ok) \(okErr) \(okBody)")
    }

    // MARK: 4. answer sizes

    /// Resident set size of this process (the server runs in it), from /proc.
    static func rssBytes() -> Int {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
    }

    @Test func repeatedPackIDsAreAnsweredOnceAndTheAnswerStaysSmall() async throws {
        let w = try await world()
        defer { Task { await w.stop() } }
        // One pack holding many chunks (many small files), as a restore host asks for it.
        let files = (0..<300).map { i in ("f\(i)", (0..<200).map { _ in UInt8.random(in: 0...255) }) }
        let (packs, manifest) = try makeSnapshot(keys: try w.writerConfig.writeKeySet(), files: files)
        for p in packs { _ = try await w.writer.uploadPack(id: p.id, bytes: p.bytes) }
        _ = try await w.writer.commit(manifestBytes: manifest.bytes)
        let pack = packs[0].id
        let oneList = 36 + 32 * 301
        var body: [UInt8] = []
        for _ in 0..<20_000 { body += pack.bytes }
        let before = Self.rssBytes()
        let (_, answer) = try await w.restorer.send(.POST, "/v1/packs/chunk-lists", body: body)
        let after = Self.rssBytes()
        print("chunk-lists: request \(body.count) B, answer \(answer.count) B; RSS before \(before >> 20) MiB, "
              + "after \(after >> 20) MiB, growth \((after - before) >> 20) MiB")
        #expect(answer.count <= oneList + 32 * 16, "answer of \(answer.count) bytes for one pack repeated")
        #expect(after - before < 48 << 20, "server and client grew by \((after - before) >> 20) MiB")
        // Whatever the order and repetition, each pack's list comes once and the client reads all chunks.
        let located = try await w.restorer.chunkLocations(inPacks: Array(repeating: pack, count: 50))
        #expect(located.count >= 300 && Set(located.values) == [pack])
    }

    @Test func auditPagesStopAtTheirByteLimitAndPagingStillReadsEverything() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        for i in 0..<300 {
            try await server.service.catalog.audit(time: Date(), actor: "test", role: "-", credential: "-",
                    source: "local",
                                             action: "probe", object: "record \(i)", outcome: "ok",
                                             detail: String(repeating: "d", count: 3000))
        }
        let total = Int(try await server.service.catalog.auditChainHead().seq)
        var seqs: [Int64] = []
        var pages = 0
        while true {
            let page = try await server.service.auditEntries(after: seqs.last ?? 0, limit: 1000, byteLimit: 100_000)
            guard !page.isEmpty else { break }
            #expect(page.count <= 100_000 / 3000 + 1, "a page of \(page.count) records")
            seqs += page.map(\.seq)
            pages += 1
        }
        #expect(seqs == (1...Int64(total)).map { $0 } && pages > 5)
    }

    @Test func chunkListAnswersStopAtTheLimitAndTheRestIsAskedAgain() async throws {
        let w = try await world()
        defer { Task { await w.stop() } }
        var ids: [PackID] = []
        for i in 0..<3 {
            let files = [("f\(i)", Array(repeating: UInt8(i), count: 1000))]
            let (packs, manifest) = try makeSnapshot(keys: try w.writerConfig.writeKeySet(), files: files)
            for p in packs { _ = try await w.writer.uploadPack(id: p.id, bytes: p.bytes) }
            _ = try await w.writer.commit(manifestBytes: manifest.bytes)
            ids += packs.map(\.id)
        }
        let restorer = try await w.server.service.catalog.principals(tenant: nil).first { $0.role == .restorer }
        let restorerCall = CallContext(principal: restorer, source: "test")
        let body = ids.flatMap(\.bytes)
        // A limit below two lists: only the first pack is answered (always at least one).
        let first = try await w.server.service.packChunkLists(body, ctx: restorerCall, answerLimit: 40)
        var r = ByteReader(first)
        #expect(PackID(bytes: try r.raw(32)) == ids[0])
        _ = try r.raw(32 * Int(try r.u32()))
        #expect(r.isAtEnd, "more than one list under a 40-byte limit")
        // The client asks again for what was left out and gets every pack's chunks.
        let all = try await w.restorer.chunkLocations(inPacks: ids)
        #expect(Set(all.values) == Set(ids))
    }
}

/// The `redoubt` binary against a test server: listings that an attacker's strings reach, and
/// `audit list` paging.
@Suite(.serialized, .timeLimit(.minutes(5))) struct UntrustedInputCLITests {
    /// Runs the binary; returns its status, stdout and stderr (through files: outputs can exceed a pipe).
    ///
    /// Why it awaits the exit instead of blocking on it: the in-process server runs on the
    /// same two cooperative threads, and a test thread blocked waiting for the CLI starves the
    /// server the CLI is waiting for.
    static func run(_ args: [String]) async throws -> (Int32, String, String) {
        let p = Process()
        p.executableURL = CrashTests.binary
        p.arguments = args
        let dir = FileManager.default.temporaryDirectory
        let out = dir.appendingPathComponent("cli-out-\(UUID().uuidString)")
        let err = dir.appendingPathComponent("cli-err-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: out.path, contents: nil)
        FileManager.default.createFile(atPath: err.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: out); try? FileManager.default.removeItem(at: err) }
        p.standardOutput = try FileHandle(forWritingTo: out)
        p.standardError = try FileHandle(forWritingTo: err)
        try await withCheckedThrowingContinuation { (done: CheckedContinuation<Void, any Error>) in
            p.terminationHandler = { _ in done.resume() }
            do { try p.run() } catch {
                p.terminationHandler = nil
                done.resume(throwing: error)
            }
        }
        return (p.terminationStatus, try String(contentsOf: out, encoding: .utf8),
                try String(contentsOf: err, encoding: .utf8))
    }

    /// Whether `s` holds anything a terminal would act on (C0 but newline, DEL, C1, bidi controls).
    static func hasTerminalControls(_ s: String) -> Bool {
        s.unicodeScalars.contains { c in
            (c.value < 0x20 && c != "\n") || (0x7f...0x9f).contains(c.value) || (0x202a...0x202e).contains(c.value)
                || (0x2066...0x2069).contains(c.value) || c.value == 0x2028 || c.value == 0x2029
        }
    }

    @Test(.sqliteCatalogOnly) func hostAndAuditListingsEscapeControlCharacters() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        try await server.createTenant("acme", keys: try TenantKeys.generate())
        let (_, web1) = try await server.enroll(tenant: "acme", role: "writer", name: "web1")
        await web1.shutdown()
        let catalog = server.service.catalog
        // What an older server stored raw: an OS that paints the terminal and forges a line.
        let evil = "Linux\u{1b}]0;owned\u{7}\u{1b}[2J\r\nacme/db9                      "
            + "2026-01-01T00:00:00Z  active \u{9b}31m\u{202e}"
        let id = try #require(try await catalog.principals(tenant: nil).first { $0.name == "web1" }?.id)
        _ = try await catalog.updatePrincipalOS(id: id, os: evil)
        let cred = server.home.adminCredentialPath
        let (s, out, err) = try await Self.run(["admin", "host", "list", "--credential", cred])
        #expect(s == 0, "host list: \(err)")
        #expect(!Self.hasTerminalControls(out), "host list printed control characters: \(out.debugDescription)")
        #expect(out.split(separator: "\n").count == 2 && out.contains("\\x1b"), "host list: \(out)")
        // And a raw audit record (written before audited strings were made safe).
        let db = server.home.catalogPath
        let sql = "INSERT INTO audit VALUES((SELECT MAX(seq)+1 FROM audit), 0, 'anonymous', '-', '-', '1.2.3.4:5', "
            + "'request', "
            + "'GET /x' || char(27) || '[2J' || char(10) || '999  forged', 'denied', char(155) || 'x', '0', '0');"
        let sqlite = Process()
        sqlite.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        sqlite.arguments = [db, sql]
        try sqlite.run()
        sqlite.waitUntilExit()
        try #require(sqlite.terminationStatus == 0)
        let (a, aOut, aErr) = try await Self.run(["audit", "list", "--credential", cred])
        #expect(a == 0, "audit list: \(aErr)")
        #expect(!Self.hasTerminalControls(aOut), "audit list printed control characters: \(aOut.debugDescription)")
        #expect(!aOut.split(separator: "\n").contains { $0.hasPrefix("999") }, "a forged line: \(aOut)")
        // JSON output carries the exact value, escaped by the encoder.
        let (j, jOut, _) = try await Self.run(["admin", "host", "list", "--credential", cred, "--json"])
        let list = try #require(try JSONSerialization.jsonObject(with: Data(jOut.utf8)) as? [[String: Any]])
        #expect(j == 0 && list.first?["os"] as? String == evil && !Self.hasTerminalControls(jOut))
    }
}

/// The audit listing over more than two pages. Its own suite for its own time limit: it writes
/// 2 300 chained audit records one by one, which on the PostgreSQL catalog, beside the whole
/// suite, took 231 to 285 s in CI runs (30 s on SQLite).
@Suite(.serialized, .timeLimit(.minutes(10))) struct AuditListCLITests {
    @Test func auditListPagesThroughEveryRecordAndFollows() async throws {
        let server = try await TestServer.start()
        defer { Task { await server.stop() } }
        let catalog = server.service.catalog
        for i in 0..<2_300 {
            try await catalog.audit(time: Date(), actor: "test", role: "-", credential: "-", source: "local",
                    action: "probe",
                              object: "record \(i)", outcome: "ok")
        }
        let total = Int(try await catalog.auditChainHead().seq)
        let cred = server.home.adminCredentialPath
        let (s, out, err) = try await UntrustedInputCLITests.run(["audit", "list", "--credential", cred])
        let lines = out.split(separator: "\n")
        #expect(s == 0 && lines.count == total, "audit list printed \(lines.count) of \(total) records: \(err)")
        #expect(lines.last?.hasPrefix("\(total) ") == true)

        let (j, jOut, jErr) = try await UntrustedInputCLITests.run(["audit", "list", "--credential", cred, "--json"])
        let all = try #require(try JSONSerialization.jsonObject(with: Data(jOut.utf8)) as? [[String: Any]],
                               "--json: \(jErr)")
        #expect(j == 0 && all.count == total && (all.last?["seq"] as? Int) == total)

        let (p, pOut, pErr) = try await UntrustedInputCLITests.run(["audit", "list", "--credential", cred,
                                                                    "--after", "2000", "--limit", "10", "--json"])
        let page = try #require(try JSONSerialization.jsonObject(with: Data(pOut.utf8)) as? [[String: Any]],
                                "page: \(pErr)")
        #expect(p == 0 && page.compactMap { $0["seq"] as? Int } == Array(2001...2010))

        // --follow: prints what is there, then each new record as it comes (JSON Lines with --json).
        let follow = Process()
        follow.executableURL = CrashTests.binary
        follow.arguments = ["audit", "list", "--credential", cred, "--after", "\(total - 1)", "--follow", "--json",
                            "--interval", "0.2"]
        let outFile = server.dir.appendingPathComponent("follow.out")
        FileManager.default.createFile(atPath: outFile.path, contents: nil)
        follow.standardOutput = try FileHandle(forWritingTo: outFile)
        try follow.run()
        defer { if follow.isRunning { follow.terminate() } }
        for i in 0..<3 {
            try await catalog.audit(time: Date(), actor: "test", role: "-", credential: "-", source: "local",
                    action: "probe",
                              object: "late \(i)", outcome: "ok")
        }
        var seqs: [Int] = []
        for _ in 0..<100 where seqs.count < 4 {
            try await Task.sleep(nanoseconds: 100_000_000)
            seqs = (try String(contentsOf: outFile, encoding: .utf8)).split(separator: "\n").compactMap {
                (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["seq"] as? Int
            }
        }
        #expect(seqs == Array(total...(total + 3)), "followed \(seqs)")
        #expect(follow.isRunning, "--follow exited")
    }
}

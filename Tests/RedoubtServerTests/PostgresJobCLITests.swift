import Foundation
import Testing
import RedoubtCore

/// A database dump job against the real PostgreSQL of scripts/peers: `command = "pg_dump -Fc …"`
/// backed up through the binary, restored, loaded with pg_restore into a fresh database,
/// and compared with the original by pg_dump.
@Suite(.serialized) struct PostgresJobCLITests {
    /// `host:port` and the server's bin directory, or nil (then the test says why it skips).
    static func peer() throws -> (host: String, port: String, bin: String)? {
        let env = ProcessInfo.processInfo.environment
        guard let address = env["REDOUBT_TEST_POSTGRES"], let bin = env["REDOUBT_TEST_POSTGRES_BIN"] else {
            try #require(env["REDOUBT_PEERS_REQUIRED"] != "1",
                "REDOUBT_TEST_POSTGRES is not set: run scripts/peers start and source its env file")
            print("skipping: no PostgreSQL peer (REDOUBT_TEST_POSTGRES; scripts/peers start postgres)")
            return nil
        }
        let parts = address.split(separator: ":").map(String.init)
        guard parts.count == 2 else { return nil }
        return (parts[0], parts[1], bin)
    }

    /// Runs a shell command; returns its status and what it printed (stdout and stderr).
    static func sh(_ command: String, in dir: URL) async -> (Int32, String) {
        let out = dir.appendingPathComponent("sh-\(UUID().uuidString).out").path
        let raw = await runShell("\(command) >'\(out)' 2>&1")
        defer { unlink(out) }
        return (Int32((raw >> 8) & 0xff), (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }

    @Test func aPgDumpJobRestoresIntoAFreshDatabaseIdenticalByPgDump() async throws {
        guard let pg = try Self.peer() else { return }
        let s = try await HostCLITests.Setup()
        let dir = s.e.dir
        let suffix = UUID().uuidString.prefix(8).lowercased()
        let source = "redoubt_src_\(suffix)", copy = "redoubt_copy_\(suffix)"
        let conn = "-h \(pg.host) -p \(pg.port) -U postgres"
        func psql(_ db: String, _ sql: String) async throws -> String {
            let file = dir.appendingPathComponent("q-\(UUID().uuidString).sql")
            try Data(sql.utf8).write(to: file)
            let (rc, out) = await Self.sh("'\(pg.bin)/psql' \(conn) -v ON_ERROR_STOP=1 -qAt -d \(db) -f '\(file.path)'",
                in: dir)
            try #require(rc == 0, "psql: \(out)")
            return out
        }
        _ = try await psql("postgres", "CREATE DATABASE \(source); CREATE DATABASE \(copy);")
        // A defer cannot await: the drop is one short psql run, blocking.
        defer { _ = system("'\(pg.bin)/psql' \(conn) -qAt -d postgres -c 'DROP DATABASE IF EXISTS \(source)' "
                           + "-c 'DROP DATABASE IF EXISTS \(copy)' >/dev/null 2>&1") }
        _ = try await psql(source, """
            CREATE TABLE accounts (id bigserial PRIMARY KEY, name text NOT NULL, balance numeric(20,4),
                photo bytea, attrs jsonb, opened timestamptz DEFAULT '2031-02-03 04:05:06.789+00');
            CREATE INDEX accounts_name ON accounts (name);
            INSERT INTO accounts (name, balance, photo, attrs)
                SELECT 'account ' || g || ' é漢字', g * 1.2345, decode(md5(g::text), 'hex'),
                       jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g % 7))
                FROM generate_series(1, 20000) g;
            CREATE VIEW rich AS SELECT id, name FROM accounts WHERE balance > 1000;
            COMMENT ON TABLE accounts IS 'backed up by a redoubt job';
            """)

        try Data("""
            [jobs.db]
            command = "'\(pg.bin)/pg_dump' -Fc \(conn) \(source)"
            stdin-filename = "\(source).dump"
            tag = ["postgres"]
            """.utf8).write(to: URL(fileURLWithPath: s.host + "/jobs.toml"))
        let done = try await JobsCLITests.backup(s, ["--job", "db"])
        #expect(done.bytesRead > 100_000 && done.warnings.isEmpty, "\(done)")

        let target = dir.appendingPathComponent("restored").path
        try await s.e.run(["restore", done.snapshot, "--target", target, "--config", s.restorer])
        let dump = try #require(s.files(target).first { $0.hasSuffix("\(source).dump") }, "\(s.files(target))")
        let (rc, said) = await Self.sh("'\(pg.bin)/pg_restore' \(conn) --exit-on-error -d \(copy) '\(target)/\(dump)'",
            in: dir)
        #expect(rc == 0, "pg_restore: \(said)")

        // Why drop \restrict lines: recent pg_dump guards a plain dump with a random key per run.
        func plain(_ db: String) async -> String {
            await Self.sh("'\(pg.bin)/pg_dump' \(conn) --no-owner \(db)", in: dir).1.split(separator: "\n")
                .filter { !$0.hasPrefix("\\restrict ") && !$0.hasPrefix("\\unrestrict ") }.joined(separator: "\n")
        }
        let original = await plain(source), restored = await plain(copy)
        #expect(original.contains("account 20000 é漢字") && original.contains("backed up by a redoubt job"))
        #expect(original == restored, "the restored database differs from the original")
        await #expect(try psql(copy, "SELECT count(*), sum(balance) FROM accounts;").trimmingCharacters(in: .newlines)
            == "20000|246912345.0000")

        // pg_dump failing (no such database) commits nothing and says so.
        try Data("""
            [jobs.db]
            command = "'\(pg.bin)/pg_dump' -Fc \(conn) redoubt_no_such_db_\(suffix)"
            """.utf8).write(to: URL(fileURLWithPath: s.host + "/jobs.toml"))
        let failed = try await s.e.run(["backup", "--job", "db", "--config", s.host], check: false)
        #expect(failed.status == 1 && failed.err.contains("exited with status 1")
            && failed.out.hasPrefix("job db: failed, exit 1"), "\(failed.status) \(failed.err) \(failed.out)")
        await #expect(try s.snapshots().count == 1)
    }
}

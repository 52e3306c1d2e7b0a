import Foundation
import RedoubtStore
import Testing

/// `redoubt quickstart` in a temporary directory with its server run again in the
/// background, for end-to-end tests of admin and restore commands through the built
/// binary. Secrets and peer settings go in `env`, prefixed to every command: never into
/// this process's environment (suites run in parallel in one process). Call ``stop()``.
final class QuickstartServer {
    let dir: String
    /// The quickstart run's directory: `server/`, `host/`, `restorer/`, `sample/`.
    let base: String
    /// `ENV… 'redoubt'`: prefix of every command.
    let bin: String
    /// `--credential …` of the server's admin.
    let admin: String
    /// `--config …` of the restorer.
    let restorer: String
    /// The snapshot the quickstart took.
    let snapshot: String
    private let out: String
    private var restores = 0

    /// Runs the quickstart (`quickstartArgs`, e.g. `--key-provider URI`), starts its server
    /// and waits until it answers.
    /// `quickstartEnv` goes to the quickstart only (e.g. its passphrase).
    static func start(_ name: String, env: String = "", quickstartEnv: String = "",
        quickstartArgs: String = "") async throws -> QuickstartServer {
        let binary = CrashTests.binary.path
        try #require(FileManager.default.isExecutableFile(atPath: binary), "build the redoubt executable first")
        let dir =
            FileManager.default.temporaryDirectory.appendingPathComponent("redoubt-\(name)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let bin = "\(env) '\(binary)'"
        let (qs, qsOut) = await Self.sh("\(quickstartEnv) \(bin) quickstart --dir '\(dir)/qs' \(quickstartArgs)",
            out: "\(dir)/out.txt")
        guard qs == 0, let run = try? FileManager.default.contentsOfDirectory(atPath: "\(dir)/qs").first else {
            Self.remove(dir)
            throw QuickstartError("quickstart failed (\(qs)): \(qsOut)")
        }
        let base = "\(dir)/qs/\(run)"
        // The quickstart's own server stopped with it: run it again, in the background.
        _ =
            system("""
                '\(binary)' server run --data '\(base)/server' > '\(dir)/server.log' 2>&1 & echo $! > \
                '\(dir)/server.pid'
                """)
        let q = QuickstartServer(dir: dir, base: base, bin: bin, snapshot: "")
        var up = false
        for _ in 0..<150 where !up {
            up = await q.sh("admin \(q.admin) tenant list").0 == 0
            if !up { try await Task.sleep(nanoseconds: 200_000_000) }
        }
        let (ls, lsOut) = await q.sh("snapshots \(q.restorer) --json")
        guard up, ls == 0,
            let snapshot = lsOut.split(separator: "\"").first(where: { $0.count == 64 }).map(String.init) else {
            q.stop()
            throw QuickstartError("""
                server did not come up or list its snapshot: \(lsOut) \
                \((try? String(contentsOfFile: "\(dir)/server.log", encoding: .utf8)) ?? "")
                """)
        }
        return QuickstartServer(dir: dir, base: base, bin: bin, snapshot: snapshot)
    }

    private init(dir: String, base: String, bin: String, snapshot: String) {
        self.dir = dir
        self.base = base
        self.bin = bin
        self.admin = "--credential '\(base)/server/admin.credential'"
        self.restorer = "--config '\(base)/restorer'"
        self.snapshot = snapshot
        self.out = "\(dir)/out.txt"
    }

    /// Runs `redoubt ARGS` (with `env` before the common prefix): exit status and output.
    func sh(_ args: String, env: String = "") async -> (Int32, String) {
        await Self.sh("\(env) \(bin) \(args)", out: out)
    }

    /// Runs any shell command (no binary prefix).
    func shell(_ cmd: String) async -> (Int32, String) { await Self.sh(cmd, out: out) }

    /// Restores the snapshot into a fresh directory and compares it with the sample:
    /// the command's status and output, or 99 if the tree differs.
    func restore(_ extra: String = "", env: String = "") async -> (Int32, String) {
        restores += 1
        let target = "\(dir)/restored-\(restores)"
        let r = await sh("restore \(snapshot) --target '\(target)' \(restorer) \(extra)", env: env)
        guard r.0 == 0 else { return r }
        let diff = await Self.sh("diff -r '\(base)/sample' '\(target)\(base)/sample'", out: "\(dir)/diff.txt")
        return diff.0 == 0 ? r : (99, "restored tree differs: \(diff.1)")
    }

    /// Stops the server and removes everything (clearing immutable flags first).
    func stop() {
        if let pid = (try? String(contentsOfFile: "\(dir)/server.pid",
            encoding: .utf8)).flatMap({ Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) {
            kill(pid, SIGTERM)
        }
        Self.remove(dir)
    }

    private static func remove(_ dir: String) {
        _ = system("chattr -R -i '\(dir)' 2>/dev/null")
        try? FileManager.default.removeItem(atPath: dir)
    }

    private static func sh(_ cmd: String, out: String) async -> (Int32, String) {
        let raw = await runShell(cmd + " > '\(out)' 2>&1")
        return (Int32((raw >> 8) & 0xff), (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }
}

struct QuickstartError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Rewrites a quickstart run's tenant descriptor as servers before descriptor format 2 wrote
/// it, with the write material in the clear (taken from the host's `write-material.bin`);
/// returns the store and the descriptor's key.
func storeDescriptorInFormat1(quickstart base: String, tenant: String = "quickstart") async throws -> (LocalStore,
    ObjectKey) {
    let store = try LocalStore(root: URL(fileURLWithPath: "\(base)/server/store"))
    let key = try #require(ObjectKey("t/\(tenant)/tenant-v1.json"))
    var d = try #require(try JSONSerialization.jsonObject(with: Data(try await store.get(key))) as? [String: Any])
    d["format"] = 1
    d["writeMaterial"] =
        try Data(contentsOf: URL(fileURLWithPath: "\(base)/host/write-material.bin")).base64EncodedString()
    d["sealedWriteMaterial"] = nil
    d["writeMaterialCheck"] = nil
    try await store.delete(key, now: Date())
    _ = try await store.put(key, Array(try JSONSerialization.data(withJSONObject: d)), retainUntil: nil)
    return (store, key)
}

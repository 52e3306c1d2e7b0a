import ArgumentParser
import Crypto
import Foundation
import Logging
import NIOHTTP1
import RedoubtClient
import RedoubtCore
import RedoubtKMS
import RedoubtServer

/// The embedded default, end to end on loopback: a server, a tenant, a host and a
/// restorer; a backup, a listing, a restore compared with the source, and the host's
/// own credential refused when it tries to delete, overwrite and read back.
struct QuickstartCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "quickstart",
        abstract: "Run the embedded default end to end on this machine, on loopback.")
    @Argument(help: "What to back up (a small sample tree if omitted).") var path: String?
    @Option(name: .long,
        help: "Where to keep the server's data and the clients' configuration.") var dir = "redoubt-quickstart"
    @Option(name: .long,
        help: """
            Key provider for the tenant's read key: passphrase: (default), \
            kmip://HOST:PORT/new?ca=FILE&cert=FILE&key=FILE, awskms://REGION/new[?endpoint=URL] or \
            pkcs11:token=LABEL;object=LABEL?module-path=FILE&pin-source=FILE.
            """)
    var keyProvider = "passphrase:"

    func run() async throws {
        try await RedoubtCLI.run { try await Quickstart(base: dir, path: path, keyProvider: keyProvider).run() }
    }
}

struct Quickstart {
    let base: String
    let path: String?
    var keyProvider = "passphrase:"

    func step(_ s: String) { print("==> \(s)") }

    func run() async throws -> Exit {
        let root = URL(fileURLWithPath: base).standardizedFileURL
            .appendingPathComponent(ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: ""))
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700])
        let port = try ServerHome.freeLoopbackPort()
        step("server init in \(root.path)/server on 127.0.0.1:\(port)")
        let home = ServerHome(path: root.appendingPathComponent("server").path)
        let (settings, adminPath) = try await home.initialize(listen: "127.0.0.1:\(port)", minRetention: 30 * 86400,
            now: Date())
        var logger = Logger(label: "redoubt.quickstart")
        // The in-process server stops by cancellation at the end; its shutdown chatter is noise here.
        logger.logLevel = .critical
        let service = try await home.openService(logger: logger)
        let (started, cont) = AsyncStream<Int>.makeStream()
        let app = try RedoubtHTTP.application(service: service, home: home, host: "127.0.0.1", port: port,
            logger: logger) {
            p in cont.yield(p)
        }
        let server = Task { try await app.runService(gracefulShutdownSignals: [.sigterm, .sigint]) }
        for await _ in started { break }
        step("server running at \(settings.url) (TLS 1.3, client certificates)")
        do {
            let exit = try await scenario(root: root, adminPath: adminPath)
            server.cancel()
            _ = try? await server.value
            return exit
        } catch {
            server.cancel()
            _ = try? await server.value
            throw error
        }
    }

    func scenario(root: URL, adminPath: String) async throws -> Exit {
        // The passphrase that wraps the read key: from the environment, or made here.
        let passFile = root.appendingPathComponent("passphrase")
        if ProcessInfo.processInfo.environment["REDOUBT_PASSPHRASE"] == nil {
            let pw = (0..<24).map { _ in "abcdefghijkmnpqrstuvwxyz23456789".randomElement()! }
            FileManager.default.createFile(atPath: passFile.path, contents: Data(String(pw).utf8),
                attributes: [.posixPermissions: 0o600])
        }
        let passArg: String? = FileManager.default.fileExists(atPath: passFile.path) ? passFile.path : nil
        let provider = try await makeKeyProvider(uri: keyProvider,
            passphraseFile: passArg).preparingKEK(tenant: "quickstart")
        let wrapper = provider is PassphraseKeyProvider
            ? "passphrase: scrypt" : "a KEK held by \(provider.uri.prefix { $0 != ":" })"
        step("tenant create quickstart (read key X-Wing, wrapped by \(wrapper))")
        let keys = try TenantKeys.generate()
        let wrapped = try await provider.wrapChecked(keys.readKey, context: KeyContext(tenant: "quickstart",
            keyVersion: 1))
        // The admin client comes after the key provider, so a KMS error is reported rather
        // than tripping AsyncHTTPClient's shutdown-before-deinit assertion.
        let admin = try APIClient(credential: loadCredential(adminPath))
        _ = try await admin.createTenant(Wire.CreateTenantRequest(
            name: "quickstart", readPublicKey: Data(keys.readKey.publicKey.rawRepresentation).base64EncodedString(),
            writeMaterial: keys.sharedWriteMaterial.encode().withUnsafeBytes { Data($0).base64EncodedString() },
            wrappedReadKey: String(decoding: try wrapped.encoded(), as: UTF8.self), minRetentionSeconds: nil))
        step("enroll host 'this-host' (writer) and 'vault' (restorer)")
        let hostCfg = ClientConfig(path: root.appendingPathComponent("host").path)
        let restorerCfg = ClientConfig(path: root.appendingPathComponent("restorer").path)
        _ = try await ClientConfig.enroll(token: try await admin.createEnrollment(tenant: "quickstart", role: "writer",
            name: "this-host", ttlSeconds: 600).token,
                                          into: hostCfg, os: osPrettyName())
        _ = try await ClientConfig.enroll(token: try await admin.createEnrollment(tenant: "quickstart",
            role: "restorer", name: "vault", ttlSeconds: 600).token,
                                          into: restorerCfg, os: osPrettyName())
        await admin.shutdown()

        let source = try path.map { URL(fileURLWithPath: $0).standardizedFileURL }
            ?? makeSample(root.appendingPathComponent("sample"))
        step("backup \(source.path)")
        let summary = try await runBackup(config: hostCfg, paths: [source.path], tags: ["quickstart"], excludes: [],
            quiet: false)
        step("snapshots (as the host)")
        let host = try APIClient(credential: hostCfg.credential())
        for s in try await host.snapshots() {
            print("""
                  \(s.id.prefix(8))  \(s.time)  \(s.host)  \(s.statistics.files) files  \
                \(formatBytes(s.statistics.bytesTotal))  retain until \(s.retainUntil)
                """)
        }

        step("restore (as the restorer, read key unwrapped in memory) and compare")
        let target = root.appendingPathComponent("restored")
        let restorer = try APIClient(credential: restorerCfg.credential())
        let readKey = try await RestoreSupport.resolver(config: restorerCfg, passphraseFile: passArg)
            .resolve(server: ReadKeyResolver.fetch(config: restorerCfg))
        let manifest = try Manifest.parse(try await restorer.manifestBytes(summary.snapshot),
            expectedID: SnapshotID(hex: summary.snapshot))
        let result = try await Restorer().restore(manifest: manifest, readKey: readKey,
            chunkIDKey: try restorerCfg.sharedMaterial().chunkIDKey,
                                                  source: restorer, target: target.path)
        // The snapshot keeps the path whole: it is restored at the same path below the target.
        let restoredRoot = URL(fileURLWithPath: target.path + source.path)
        let differences = try compareTrees(source, restoredRoot)
        print("  restored \(result.files) files into \(restoredRoot.path): "
            + (differences.isEmpty ? "identical to the source" : "\(differences.count) difference(s)"))
        for d in differences.prefix(20) { print("    \(d)") }

        step("attacks with the host's own credential")
        let pack = manifest.header.packs[0]
        var failures = 0
        func attempt(_ what: String, _ method: HTTPMethod, _ path: String, body: [UInt8]? = nil) async {
            do {
                _ = try await host.send(method, path, body: body)
                print("  \(what): ALLOWED  <-- this must not happen")
                failures += 1
            } catch let e as APIError where e.isRefusal {
                print("  \(what): refused (\(e.status) \(e.code))")
            } catch {
                print("  \(what): failed (\(error))")
            }
        }
        await attempt("delete a pack       ", .DELETE, "/v1/packs/\(pack)")
        await attempt("delete the snapshot ", .DELETE, "/v1/snapshots/\(manifest.id)")
        await attempt("read back a pack    ", .GET, "/v1/packs/\(pack)")
        await attempt("read the manifest   ", .GET, "/v1/snapshots/\(manifest.id)/manifest")
        await attempt("shorten retention   ", .PATCH, "/v1/snapshots/\(manifest.id)",
            body: Array(#"{"retainUntil":"2000-01-01T00:00:00Z"}"#.utf8))
        await attempt("collect garbage     ", .POST, "/v1/tenants/quickstart/gc",
            body: Array(#"{"dryRun":false}"#.utf8))
        let hostID = try hostCfg.credential().principalID
        await attempt("revoke a credential ", .POST, "/v1/principals/\(hostID)/revoke", body: Array("{}".utf8))
        let original = try await restorer.packBytes(pack)
        let overwrite = try await host.uploadPack(id: pack, bytes: [UInt8](repeating: 0, count: 1024))
        let after = try await restorer.packBytes(pack)
        let intact = after == original && !overwrite.created
        print("  overwrite a pack    : "
            + (intact ? """
                no effect (the stored pack is unchanged, \(original.count) bytes)
                """ : "CHANGED  <-- this must not happen"))
        if !intact { failures += 1 }
        let verify = try await restorer.verify(manifest.id.description)
        print("  verify afterwards   : \(verify.packsChecked) packs re-hashed, " + (verify.damaged.isEmpty
            && verify.missing.isEmpty ? "all intact" : "DAMAGED"))
        await host.shutdown()
        await restorer.shutdown()

        print("")
        print("""
            Data in \(root.path): server/ (catalog, immutable store, CA), host/ and restorer/ (client configurations)
            """ + (passArg != nil ? ", passphrase" : ""))
        if !differences.isEmpty || failures > 0 || !verify.damaged.isEmpty { return .integrity }
        print("Quickstart passed: backup, restore bit-for-bit, and every attack refused.")
        return .ok
    }

    /// A small tree with the kinds of entries a restore must get right.
    func makeSample(_ dir: URL) throws -> URL {
        let fm = FileManager.default
        try fm.createDirectory(at: dir.appendingPathComponent("docs/empty"), withIntermediateDirectories: true)
        try Data("Redoubt quickstart sample\n".utf8).write(to: dir.appendingPathComponent("README.txt"))
        try Data(String(repeating: "compressible line of text for the sample\n",
            count: 20000).utf8).write(to: dir.appendingPathComponent("docs/report.txt"))
        var rng = SystemRandomNumberGenerator()
        try Data((0..<(3 << 20)).map { _ in UInt8.random(in: 0...255,
            using: &rng) }).write(to: dir.appendingPathComponent("random.bin"))
        fm.createFile(atPath: dir.appendingPathComponent("empty.txt").path, contents: Data())
        try fm.createSymbolicLink(atPath: dir.appendingPathComponent("link-to-readme").path,
            withDestinationPath: "README.txt")
        try fm.setAttributes([.posixPermissions: 0o600],
            ofItemAtPath: dir.appendingPathComponent("docs/report.txt").path)
        return dir
    }
}

/// Differences between two trees: entries, types, modes, contents, link targets.
func compareTrees(_ a: URL, _ b: URL) throws -> [String] {
    func entries(_ root: URL) -> [String: (type: mode_t, mode: mode_t, size: off_t)] {
        var out: [String: (mode_t, mode_t, off_t)] = [:]
        func walk(_ rel: String) {
            let full = rel.isEmpty ? root.path : root.path + "/" + rel
            var st = stat()
            guard lstat(full, &st) == 0 else { return }
            out[rel] = (st.st_mode & S_IFMT, st.st_mode & 0o7777, st.st_size)
            if st.st_mode & S_IFMT == S_IFDIR, let names = try? FileManager.default.contentsOfDirectory(atPath: full) {
                for n in names { walk(rel.isEmpty ? n : rel + "/" + n) }
            }
        }
        walk("")
        return out
    }
    let ea = entries(a), eb = entries(b)
    var diffs: [String] = []
    for (k, va) in ea.sorted(by: { $0.key < $1.key }) {
        guard let vb = eb[k] else { diffs.append("missing: \(k)"); continue }
        if va.type != vb.type { diffs.append("type differs: \(k)"); continue }
        if va.mode != vb.mode && va.type != S_IFLNK {
            diffs.append("mode differs: \(k) \(String(va.mode, radix: 8)) vs \(String(vb.mode, radix: 8))")
        }
        if va.type == S_IFREG {
            let da = FileManager.default.contents(atPath: a.path + "/" + k),
                db = FileManager.default.contents(atPath: b.path + "/" + k)
            if da != db { diffs.append("content differs: \(k)") }
        } else if va.type == S_IFLNK {
            let la = try? FileManager.default.destinationOfSymbolicLink(atPath: a.path + "/" + k)
            let lb = try? FileManager.default.destinationOfSymbolicLink(atPath: b.path + "/" + k)
            if la != lb { diffs.append("link target differs: \(k)") }
        }
    }
    for k in eb.keys where ea[k] == nil { diffs.append("extra: \(k)") }
    return diffs
}

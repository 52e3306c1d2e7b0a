import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore
import RedoubtKMS
import RedoubtServer
import RedoubtStore

/// The CLI's exit codes: RedoubtCore's one table, which README "Exit codes" and `--help` follow.
typealias Exit = ExitCategory

/// Prints an error that names the object, the cause and the fix, and returns the exit code.
/// Every module's public error is a `RedoubtError`, which carries its own exit category.
func report(_ error: Error) -> Exit {
    FileHandle.standardError.write(Data("error: \(reportText(error))\n".utf8))
    return exitCode(for: error)
}

/// The exit code `error` leaves the CLI with (README "Exit codes").
func exitCode(for error: Error) -> Exit {
    error is ValidationError ? .usage : ExitCategory.of(error)
}

/// The text printed after `error:` for `error`.
func reportText(_ error: Error) -> String {
    switch error {
    case let e as ValidationError: e.message
    // The enum's own description omits its code; scripts read it in brackets.
    case let e as KeyProviderError: "\(e) [\(e.code)]"
    default: "\(error)"
    }
}

enum RedoubtCLI {
    /// Runs a command body, mapping errors to documented exit codes.
    static func run(_ body: () async throws -> Exit) async throws {
        let code: Exit
        do { code = try await body() } catch let e as ExitCode {
            throw e
        } catch {
            code = report(error)
        }
        if code != .ok { throw ExitCode(code.rawValue) }
    }

    /// Runs `body` with `client`, shutting the client down afterwards either way.
    static func with<T>(_ client: APIClient, _ body: (APIClient) async throws -> T) async throws -> T {
        do {
            let r = try await body(client)
            await client.shutdown()
            return r
        } catch {
            await client.shutdown()
            throw error
        }
    }

    static func keyProvider(uri: String, passphraseFile: String?) throws -> any KeyProvider {
        try makeKeyProvider(uri: uri, passphraseFile: passphraseFile)
    }
}

/// Parses `30d`, `12h`, `90m`, `45s`, `2w`, `1y` into seconds.
func parseDuration(_ s: String) throws -> TimeInterval {
    let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400]
    guard let u = s.last, let mult = units[u], let n = Double(s.dropLast()), n > 0 else {
        throw ValidationError("""
            duration \(s.debugDescription) must be a number and a unit: s, m, h, d, w or y (e.g. 30d)
            """)
    }
    return n * mult
}

/// Reads a secret from a file, else the environment variable `env` (`REDOUBT_PASSPHRASE`
/// unless told), else a prompt on a terminal. Never from argv.
func readPassphrase(file: String?, env envName: String = "REDOUBT_PASSPHRASE", prompt: String) throws -> SecretBytes {
    if let file {
        guard var d = FileManager.default.contents(atPath: file) else {
            throw ValidationError("cannot read passphrase file \(file)")
        }
        defer { d.resetBytes(in: 0..<d.count) }
        while d.last == 0x0a || d.last == 0x0d { d.removeLast() }
        return SecretBytes(copying: d)
    }
    if let env = ProcessInfo.processInfo.environment[envName], !env.isEmpty {
        return SecretBytes(copying: Array(env.utf8))
    }
    if isatty(0) != 0, let p = getpass(prompt) {
        let s = SecretBytes(copying: UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self),
            count: strlen(p)))
        memset(p, 0, strlen(p))
        return s
    }
    throw KeyProviderError.secretMissing(provider: "passphrase:",
        how: "set \(envName), pass the passphrase file option, or run on a terminal")
}

/// The key provider a URI names: `passphrase:`, `kmip://HOST:PORT/KEY-ID?ca=&cert=&key=`,
/// `awskms://REGION/KEY-ID[?endpoint=URL]` or `pkcs11:token=…;object=…?module-path=…&pin-source=…`.
/// `passphraseEnv` names the variable a passphrase may come from when no file is given.
func makeKeyProvider(uri: String, passphraseFile: String?, passphraseEnv: String = "REDOUBT_PASSPHRASE",
                     prompt: String = "Passphrase for the tenant's read key: ") throws -> any KeyProvider {
    try KeyProviderRegistry.make(uri: uri) {
        try readPassphrase(file: passphraseFile, env: passphraseEnv, prompt: prompt)
    }
}

func loadCredential(_ path: String) throws -> ClientCredential {
    guard let d = FileManager.default.contents(atPath: path) else {
        throw ValidationError("cannot read credential file \(path)")
    }
    do { return try JSONDecoder().decode(ClientCredential.self, from: d) } catch {
        throw ValidationError("\(path) is not a Redoubt credential: \(error)")
    }
}

/// A value from the server, a catalog or a store as a terminal shows it: control, bidi and
/// other invisible characters escaped (`SafeText.escaped`), so no listing can move the
/// cursor, retitle the window or forge a line. Every text listing prints server-held strings
/// through it; JSON output is escaped by its encoder.
func shown(_ s: String) -> String { SafeText.escaped(s) }

func printJSON<T: Encodable>(_ value: T) throws {
    let e = WireDate.encoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    print(SafeText.terminalSafeJSON(String(decoding: try e.encode(value), as: UTF8.self)))
}

func osPrettyName() -> String? {
    guard let s = try? String(contentsOfFile: "/etc/os-release", encoding: .utf8) else { return nil }
    for line in s.split(separator: "\n") where line.hasPrefix("PRETTY_NAME=") {
        return String(line.dropFirst("PRETTY_NAME=".count)).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
    }
    return nil
}

/// Human-readable byte counts.
func formatBytes(_ n: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n)
    var i = 0
    while v >= 1024 && i < units.count - 1 {
        v /= 1024
        i += 1
    }
    return i == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[i])
}

/// Progress: a line redrawn in place on a terminal (stderr); elsewhere (cron, systemd,
/// a pipe) or with `--progress-fd`, one plain line every ``ProgressOptions`` interval.
final class ProgressLine: @unchecked Sendable {
    // Why @unchecked: updated from one task at a time (the job's progress callback).
    /// Set once by the command from its options, before any progress is made.
    nonisolated(unsafe) static var interval: Double = 10
    nonisolated(unsafe) static var fd: Int32? = nil

    let terminal: Bool
    let fd: Int32
    let interval: Double
    private var last = Date.distantPast
    private let start = Date()

    init() {
        fd = Self.fd ?? 2
        terminal = Self.fd == nil && isatty(2) != 0
        interval = Self.interval
        // Lines on a non-terminal start one interval in, not at once.
        if !terminal { last = start }
    }

    func update(files: UInt64, bytes: UInt64, totalBytes: UInt64?, current: String) {
        if terminal {
            guard Date().timeIntervalSince(last) > 0.2 else { return }
        } else {
            guard interval > 0, Date().timeIntervalSince(last) >= interval else { return }
        }
        last = Date()
        let elapsed = max(Date().timeIntervalSince(start), 0.001)
        let rate = Double(bytes) / elapsed
        var line = "\(files) files  \(formatBytes(bytes))  \(formatBytes(UInt64(rate)))/s"
        if let t = totalBytes, t > 0, rate > 0 {
            let eta = Double(t > bytes ? t - bytes : 0) / rate
            line += String(format: "  %d%%  ETA %ds", Int(Double(bytes) * 100 / Double(t)), Int(eta))
        }
        if terminal {
            line += "  " + String(current.suffix(40))
            FileHandle.standardError.write(Data(("\r\u{1b}[K" + line).utf8))
        } else {
            // One whole line each time, so a journal or log file keeps each report.
            let text = "progress: \(Int(elapsed)) s  \(line)  \(SafeText.escaped(current))\n"
            _ = Array(text.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        }
    }

    func finish() {
        if terminal { FileHandle.standardError.write(Data("\r\u{1b}[K".utf8)) }
    }
}

/// How a long command reports progress when nobody watches a terminal.
struct ProgressOptions: ParsableArguments {
    @Option(name: .long, help: """
        Seconds between progress lines when stderr is not a terminal or with --progress-fd (default 10; 0: none).
        """)
    var progressInterval: Double = 10
    @Option(name: .long, help: "Write progress lines to this open file descriptor (e.g. 3) instead of stderr.")
    var progressFd: Int32?

    func validate() throws {
        guard progressInterval >= 0, progressInterval.isFinite else {
            throw ValidationError("--progress-interval \(progressInterval): give seconds, 0 or more")
        }
        if let progressFd, fcntl(progressFd, F_GETFD) < 0 {
            throw ValidationError("--progress-fd \(progressFd) is not open: open it in the shell (3>FILE)")
        }
    }

    /// Makes every ``ProgressLine`` of this run follow these options.
    func apply() {
        ProgressLine.interval = progressInterval
        ProgressLine.fd = progressFd
    }
}

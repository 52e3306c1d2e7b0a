import Foundation
import Glibc
import RedoubtCore

/// A program a job runs (a hook, or a command whose output is backed up), in its own
/// process group so that a timeout or a failed backup stops everything it started, not
/// only the shell.
final class ChildProcess: Sendable {
    let pid: pid_t
    let shown: String

    enum Ending: Equatable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)
        case timedOut(TimeInterval)

        var succeeded: Bool { self == .exited(0) }

        var description: String {
            switch self {
            case .exited(let c): "exited with status \(c)"
            case .signaled(let s): "was killed by signal \(s)"
            case .timedOut(let t): "did not finish within \(Int(t)) s and was killed"
            }
        }
    }

    private init(pid: pid_t, shown: String) {
        self.pid = pid
        self.shown = shown
    }

    /// Starts `argv` (searched in PATH) with standard input from /dev/null, standard output
    /// to `stdout` (or this process's), standard error shared, and `environment` added.
    static func spawn(_ argv: [String], stdout: Int32? = nil, environment: [String: String] = [:],
                      shown: String) throws -> ChildProcess {
        guard let program = argv.first else { throw JobRunError("empty command", fix: "give a program to run") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        if let stdout { posix_spawn_file_actions_adddup2(&actions, stdout, 1) }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // Its own process group (pgid = its pid), so kill(-pid) reaches its children too.
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attr, 0)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attr, &none)
        // Why: this process ignores SIGPIPE (its sockets), and an ignored signal stays ignored
        // across exec; a hook's `cmd | head` must end as in a shell.
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for p in cArgs { free(p) }
            for p in cEnv { free(p) }
        }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, program, &actions, &attr, cArgs, cEnv)
        guard rc == 0 else {
            throw JobRunError("cannot start \(shown.debugDescription): \(String(cString: strerror(rc)))",
                fix: "check that the program exists and is executable for this user")
        }
        return ChildProcess(pid: pid, shown: shown)
    }

    /// Waits for the process to end; past `timeout` its process group gets SIGTERM, and
    /// SIGKILL 10 s later.
    func wait(timeout: TimeInterval? = nil) async -> Ending {
        let clock = ContinuousClock()
        let deadline = timeout.map { clock.now + .seconds($0) }
        var terminatedAt: ContinuousClock.Instant? = nil
        while true {
            var status: Int32 = 0
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid {
                if let timeout, terminatedAt != nil { return .timedOut(timeout) }
                // WIFEXITED / WEXITSTATUS / WTERMSIG spelled out: Swift does not import the macros.
                if status & 0x7f == 0 { return .exited((status >> 8) & 0xff) }
                return .signaled(status & 0x7f)
            }
            if r < 0 && errno != EINTR { return .exited(-1) }
            if let deadline, clock.now >= deadline {
                if let t = terminatedAt {
                    if clock.now - t > .seconds(10) { kill(-pid, SIGKILL) }
                } else {
                    kill(-pid, SIGTERM)
                    terminatedAt = clock.now
                }
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Stops the process group now (a backup that failed while the command still wrote).
    func stop() async {
        kill(-pid, SIGTERM)
        _ = await wait(timeout: 10)
    }
}

/// A job step that failed: a hook, or the command whose output was being backed up.
struct JobRunError: RedoubtError {
    let message: String
    let fix: String
    init(_ message: String, fix: String) {
        self.message = message
        self.fix = fix
    }
    var description: String { "\(message): \(fix) [E_JOB]" }
    var errorCode: String { "E_JOB" }
    var exitCategory: ExitCategory { .failure }
}

import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore

// `admin schedule show|set` and `admin jobs list`: the server's own jobs (docs/PROTOCOL.md §4.8).

struct AdminScheduleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schedule",
        abstract: "The server's own jobs: how often each runs, which are off, and the maintenance window.",
        subcommands: [AdminScheduleShow.self, AdminScheduleSet.self])
}

/// `1d`, `12h`, `90m`, `45s`: the largest unit that divides the interval.
/// `30d`, `6h`, `15m` or `45s`: the largest whole unit, as `parseDuration` and
/// `--expected-interval` read it.
func formatInterval(_ t: TimeInterval) -> String {
    let s = Int(t.rounded())
    for (unit, n) in [("d", 86400), ("h", 3600), ("m", 60)] where s >= n && s % n == 0 { return "\(s / n)\(unit)" }
    return "\(s)s"
}

func printSchedule(_ s: Wire.ScheduleInfo) {
    print("JOB           EVERY      DEFAULT    STATE  WINDOWED")
    for j in s.jobs {
        print(j.job.rightPadded(to: 12) + "  " + formatInterval(j.intervalSeconds).rightPadded(to: 9) + "  "
              + formatInterval(j.defaultIntervalSeconds).rightPadded(to: 9) + "  "
              + (j.off ? "off" : "on").rightPadded(to: 5)
              + "  " + (j.windowed ? "yes" : "no"))
    }
    print("maintenance window: " + (s.window.map { "\($0) \(s.windowZone)" } ?? "none (windowed jobs run when due)"))
}

struct AdminScheduleShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show the jobs' schedule.")
    @OptionGroup var admin: AdminOptions
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let s = try await RedoubtCLI.with(try admin.client()) { try await $0.schedule() }
            if json { try printJSON(s) } else { printSchedule(s) }
            return .ok
        }
    }
}

struct AdminScheduleSet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set", abstract: "Change a job's interval, turn it off or on, or set the maintenance window.",
        discussion: """
            Jobs: policy-apply, gc, copy-sync, lock-probe, legal-holds, scrub. Turning off, or running less often, \
            any job but gc weakens protection and needs other admins' approval: file it, have them approve, repeat \
            with --request ID.
            """)
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The job (omit to change only the window).") var job: String?
    @Argument(help: "`off` or `on` (optional).") var state: String?
    @Option(name: .long, help: "How often the job runs (e.g. 12h, 1d; 5m to 30d).") var interval: String?
    @Option(name: .long, help: "Maintenance window HH:MM-HH:MM (e.g. 01:00-05:00), or off.") var window: String?
    @Option(name: .long, help: "IANA time zone of the window (default UTC).") var zone: String?
    @Option(name: .long, help: "An approved request's ID.") var request: String?
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        if let state, !["off", "on"].contains(state) {
            throw ValidationError("the job's state is off or on, not \(state.debugDescription)")
        }
        let seconds = try interval.map(parseDuration)
        try await RedoubtCLI.run {
            let s = try await RedoubtCLI.with(try admin.client()) {
                try await $0.setSchedule(Wire.SetScheduleRequest(job: job, intervalSeconds: seconds,
                                                                 off: state.map { $0 == "off" }, window: window,
                                                                 windowZone: zone, requestID: request))
            }
            if json { try printJSON(s) } else { printSchedule(s) }
            return .ok
        }
    }
}

struct AdminJobsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "jobs", abstract: "The server's own job runs.",
                                                    subcommands: [AdminJobsList.self])
}

struct AdminJobsList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "Each job of each tenant: last run, duration, outcome, next run.")
    @OptionGroup var admin: AdminOptions
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            let list = try await RedoubtCLI.with(try admin.client()) { try await $0.jobs() }
            if json { try printJSON(list); return .ok }
            guard !list.isEmpty else {
                FileHandle.standardError.write(Data("no jobs: create a tenant first\n".utf8))
                return .ok
            }
            let f = ISO8601DateFormatter()
            print("JOB           TENANT                LAST RUN              DURATION  OUTCOME   NEXT RUN")
            for j in list {
                let outcome = j.runningOn != nil ? "running" : j.outcome.map {
                    j.failures > 0 ? "\($0) ×\(j.failures)" : $0
                } ?? "never"
                print(j.job.rightPadded(to: 12) + "  " + shown(j.tenant).rightPadded(to: 20) + "  "
                      + (j.lastStartedAt.map { f.string(from: $0) } ?? "-").rightPadded(to: 20) + "  "
                      + (j.durationSeconds.map { String(format: "%.0fs", $0) } ?? "-").rightPadded(to: 8) + "  "
                      + outcome.rightPadded(to: 8) + "  " + (j.nextRunAt.map { f.string(from: $0) } ?? "off"))
                if let e = j.error { print("    error: \(shown(e))") }
            }
            return .ok
        }
    }
}

import ArgumentParser
import Foundation
import Glibc
import RedoubtClient
import RedoubtCore

/// `redoubt schedule`: systemd timers that run backups unattended (README "Schedules").
struct ScheduleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "schedule",
        abstract: "Run backups unattended: systemd timer and service units, sandboxed.",
        subcommands: [Install.self, List.self, Remove.self])

    /// Where units go: systemd's directory for the administrator's units.
    static let systemUnitDirectory = "/etc/systemd/system"

    struct UnitDirectory: ParsableArguments {
        @Option(name: .long, help: "Where the unit files are (default /etc/systemd/system; another is not enabled).")
        var unitDir: String = ScheduleCommand.systemUnitDirectory
    }

    struct Install: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "install",
            abstract: "Write and enable a timer that runs `redoubt backup` (a job, or the paths given).",
            discussion: """
                --every takes 15m, 1h, 6h, 1d, 1w (a period that divides an hour, a day or a week), hourly, \
                daily, weekly, monthly, or a systemd calendar expression such as 'Mon..Fri 02:30'. The run \
                passes the longest gap between two runs to the server (--expected-interval), so the server \
                knows when this host is late.
                """)
        @Option(name: .long, help: "The job to run (from the jobs file); without it, the paths given.") var job: String?
        @Option(name: .long, help: "The jobs file (default: jobs.toml in the configuration directory).")
        var jobsFile: String?
        @Option(name: .long, help: "How often: 1h, daily, or a systemd calendar expression.") var every: String
        @Argument(help: "Paths to back up, when no --job is given.") var paths: [String] = []
        @Option(name: .long, help: "Run as this user (default root, which keeps only CAP_DAC_READ_SEARCH).")
        var user: String = "root"
        @Option(name: .long, help: "Also allow connections to this address or prefix (repeatable).")
        var allowAddress: [String] = []
        @Option(name: .long, help: "Override the interval passed to the server (e.g. 26h).")
        var expectedInterval: String?
        @Flag(name: .long, help: "Write the units but do not enable or start the timer.") var noEnable = false
        @OptionGroup var config: ConfigOption
        @OptionGroup var units: UnitDirectory

        func run() async throws {
            try await RedoubtCLI.run {
                let cfg = config.resolved
                if let job {
                    _ = try JobsFile.load(path: jobsFile ?? JobsFile.defaultPath(configDirectory: cfg.directory))
                        .job(job)
                    guard paths.isEmpty else { throw ValidationError("give --job or paths, not both") }
                } else if paths.isEmpty {
                    throw ValidationError("give --job NAME or the paths to back up")
                }
                // Why here: a unit naming a user that does not exist fails only at its first run.
                guard getpwnam(user) != nil else {
                    throw ValidationError("there is no user \(user) here: create it (useradd --system \(user)) "
                        + "or leave out --user")
                }
                let plan = try SchedulePlan(every: every)
                let interval = try expectedInterval.map(parseDuration) ?? plan.interval
                let unitPaths = BackupJobRunner.absolute(paths)
                let units = try ScheduleUnits(name: ScheduleUnits.unitName(job: job), job: job, paths: unitPaths,
                    jobsFile: jobsFile.map { URL(fileURLWithPath: $0).standardizedFileURL.path },
                    calendar: plan.calendar, every: every, expectedInterval: interval, user: user,
                    configDirectory: cfg.directory.standardizedFileURL.path, binary: Self.binaryPath(),
                    allowed: try ScheduleUnits.allowedAddresses(credential: cfg.credential()) + allowAddress)
                try units.write(to: self.units.unitDir)
                print("wrote \(self.units.unitDir)/\(units.name).service and .timer: \(plan.calendar), "
                      + "expected interval \(formatInterval(interval))")
                if noEnable || self.units.unitDir != ScheduleCommand.systemUnitDirectory || !Systemd.isRunning {
                    print("not enabled: run `systemctl daemon-reload && systemctl enable --now \(units.name).timer`")
                    return .ok
                }
                try Systemd.run(["daemon-reload"])
                try Systemd.run(["enable", "--now", units.name + ".timer"])
                print("enabled \(units.name).timer")
                return .ok
            }
        }

        /// This executable, resolved: the unit runs exactly the binary that wrote it.
        static func binaryPath() -> String {
            var buf = [CChar](repeating: 0, count: 4097)
            let n = readlink("/proc/self/exe", &buf, 4096)
            guard n > 0 else { return CommandLine.arguments[0] }
            return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list",
            abstract: "List the backup timers `schedule install` wrote.")
        @Flag(name: .long, help: "Print a JSON array.") var json = false
        @OptionGroup var units: UnitDirectory

        func run() async throws {
            try await RedoubtCLI.run {
                let found = ScheduleUnits.installed(in: units.unitDir)
                if json {
                    try printJSON(found)
                } else if found.isEmpty {
                    print("no backup schedules in \(units.unitDir)")
                } else {
                    for s in found {
                        let state = Systemd.isRunning && units.unitDir == ScheduleCommand.systemUnitDirectory
                            ? "  " + Systemd.state(s.unit + ".timer") : ""
                        print("\(s.unit)  every \(s.every)  (\(s.calendar))  \(s.job.map { "job " + $0 } ?? "paths")"
                              + state)
                    }
                }
                return .ok
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "remove",
            abstract: "Stop, disable and delete a backup timer and its service.")
        @Option(name: .long, help: "The job whose schedule to remove; without it, the schedule of paths.")
        var job: String?
        @OptionGroup var units: UnitDirectory

        func run() async throws {
            try await RedoubtCLI.run {
                let name = try ScheduleUnits.unitName(job: job)
                let dir = URL(fileURLWithPath: units.unitDir)
                let timer = dir.appendingPathComponent(name + ".timer").path
                guard ScheduleUnits.isOurs(timer) else {
                    throw JobsFileError(file: timer, line: nil, key: nil,
                        problem: "no schedule written by redoubt here", fix: "see `redoubt schedule list`",
                        exitCategory: .notFound)
                }
                let system = units.unitDir == ScheduleCommand.systemUnitDirectory && Systemd.isRunning
                if system { try Systemd.run(["disable", "--now", name + ".timer"]) }
                for ext in ["timer", "service"] {
                    try? FileManager.default.removeItem(at: dir.appendingPathComponent("\(name).\(ext)"))
                }
                if system { try Systemd.run(["daemon-reload"]) }
                print("removed \(name).timer and \(name).service")
                return .ok
            }
        }
    }
}

/// What `--every` means: the timer's calendar and the longest gap between two runs.
struct SchedulePlan: Equatable {
    let calendar: String
    let interval: TimeInterval

    init(every: String) throws {
        let named: [String: (String, TimeInterval)] = ["hourly": ("hourly", 3600), "daily": ("daily", 86400),
            "weekly": ("weekly", 7 * 86400), "monthly": ("monthly", 31 * 86400)]
        if let n = named[every] {
            (calendar, interval) = n
            return
        }
        if let d = try? parseDuration(every) {
            let s = Int(d)
            // Why only whole divisions: a calendar timer (the kind Persistent=true catches up)
            // fires at fixed times, so the period must tile an hour, a day or a week.
            if s >= 60, s < 3600, s % 60 == 0, 3600 % s == 0 {
                calendar = "*:00/\(s / 60)"
            } else if s >= 3600, s < 86400, s % 3600 == 0, 86400 % s == 0 {
                calendar = s == 3600 ? "hourly" : "*-*-* 00/\(s / 3600):00:00"
            } else if s == 86400 {
                calendar = "daily"
            } else if s == 7 * 86400 {
                calendar = "weekly"
            } else {
                throw ValidationError("""
                    --every \(every) does not divide an hour, a day or a week: use 15m, 1h, 6h, 1d, 1w, or a \
                    calendar expression (man systemd.time), e.g. '*-*-* 02,14:00'
                    """)
            }
            interval = TimeInterval(s)
            return
        }
        guard let gap = Systemd.longestGap(calendar: every) else {
            throw ValidationError("""
                --every \(every.debugDescription) is neither a period (1h, 1d), hourly/daily/weekly/monthly, nor a \
                calendar expression systemd-analyze accepts (man systemd.time)
                """)
        }
        calendar = every
        interval = gap
    }
}

/// The two units of one schedule, and the files that hold them.
struct ScheduleUnits {
    let name: String
    let job: String?
    let paths: [String]
    let jobsFile: String?
    let calendar: String
    let every: String
    let expectedInterval: TimeInterval
    let user: String
    let configDirectory: String
    let binary: String
    let allowed: [String]

    static let marker = "# Written by `redoubt schedule install`"

    /// `redoubt-backup-JOB`, or `redoubt-backup` for the schedule of paths.
    static func unitName(job: String?) throws -> String {
        guard let job else { return "redoubt-backup" }
        guard BackupJob.isValidName(job) else {
            throw ValidationError("\(job.debugDescription) is not a job name: letters, digits, '.', '_', '-'")
        }
        return "redoubt-backup-" + job
    }

    /// Loopback (a local DNS stub, a database dumped by a job), the server's addresses, and
    /// when the server is named rather than numbered, the resolvers of /etc/resolv.conf.
    static func allowedAddresses(credential: ClientCredential) throws -> [String] {
        guard let host = URLComponents(string: credential.url)?.host, !host.isEmpty else {
            throw ValidationError("the credential's server URL \(credential.url) names no host: re-enroll")
        }
        let bare = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        var out = ["localhost"]
        var probe = in6_addr()
        if inet_pton(AF_INET, bare, &probe) == 1 || inet_pton(AF_INET6, bare, &probe) == 1 { return out + [bare] }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var res: UnsafeMutablePointer<addrinfo>? = nil
        if getaddrinfo(bare, nil, &hints, &res) == 0 {
            var p = res
            while let a = p {
                var buf = [CChar](repeating: 0, count: Int(NI_MAXHOST))
                if getnameinfo(a.pointee.ai_addr, a.pointee.ai_addrlen, &buf, socklen_t(buf.count), nil, 0,
                               NI_NUMERICHOST) == 0 {
                    let s = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                    if !out.contains(s) { out.append(s) }
                }
                p = a.pointee.ai_next
            }
            freeaddrinfo(res)
        }
        if out.count == 1 {
            FileHandle.standardError.write(Data("""
                warning: \(bare) does not resolve here, so the unit allows only loopback and the resolvers: give \
                the server's address with --allow-address

                """.utf8))
        }
        let resolv = (try? String(contentsOfFile: "/etc/resolv.conf", encoding: .utf8)) ?? ""
        for line in resolv.split(separator: "\n") where line.hasPrefix("nameserver") {
            if let ns = line.split(separator: " ").dropFirst().first.map(String.init), !out.contains(ns) {
                out.append(ns)
            }
        }
        return out
    }

    var command: String {
        let what = job.map { ["--job", $0] } ?? (["--"] + paths)
        let args = ["backup", "--config", configDirectory, "--expected-interval", formatInterval(expectedInterval)]
            + (jobsFile.map { ["--jobs-file", $0] } ?? []) + what
        return ([binary] + args).map(Self.quoted).joined(separator: " ")
    }

    /// systemd's quoting: double quotes with `\\` and `\"` escaped; `%` doubled (specifiers).
    static func quoted(_ s: String) -> String {
        let plain = !s.isEmpty && s.allSatisfy { $0.isLetter || $0.isNumber || "/._-=:@+,".contains($0) }
        let body = s.replacingOccurrences(of: "%", with: "%%")
        if plain { return body }
        return "\"" + body.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "$", with: "$$") + "\""
    }

    var service: String {
        let what = job.map { "job \($0)" } ?? paths.joined(separator: " ")
        let ambient = user == "root" ? "" : "AmbientCapabilities=CAP_DAC_READ_SEARCH\n"
        return """
            \(Self.marker) (job=\(job ?? "-"); every=\(every)); `redoubt schedule remove` deletes it.
            # Reads every file through CAP_DAC_READ_SEARCH and nothing else; writes only its
            # configuration directory (the metadata caches); talks only to loopback and the server.
            [Unit]
            Description=Redoubt backup (\(what))
            Documentation=file:///usr/share/doc/redoubt/README.md
            After=network-online.target time-sync.target
            Wants=network-online.target

            [Service]
            Type=oneshot
            User=\(user)
            ExecStart=\(command)
            # The run's summary line and its warnings go to the journal; the exit code is README's
            # (8: finished with warnings, which fails the unit so that `systemctl --failed` shows it).
            UMask=0077
            Nice=10
            IOSchedulingClass=best-effort
            IOSchedulingPriority=7

            CapabilityBoundingSet=CAP_DAC_READ_SEARCH
            \(ambient)NoNewPrivileges=yes
            ProtectSystem=strict
            ProtectHome=read-only
            ReadWritePaths=\(Self.quoted(configDirectory))
            PrivateTmp=yes
            PrivateDevices=yes
            ProtectKernelTunables=yes
            ProtectKernelModules=yes
            ProtectKernelLogs=yes
            ProtectControlGroups=yes
            ProtectClock=yes
            ProtectHostname=yes
            RestrictNamespaces=yes
            RestrictRealtime=yes
            RestrictSUIDSGID=yes
            LockPersonality=yes
            RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
            IPAddressDeny=any
            IPAddressAllow=\(allowed.joined(separator: " "))
            SystemCallArchitectures=native
            SystemCallFilter=@system-service
            SystemCallFilter=~@mount @swap @reboot @module @raw-io @obsolete @debug @cpu-emulation
            SystemCallErrorNumber=EPERM

            """
    }

    var timer: String {
        // Spreads hosts that share a schedule over a tenth of the period (30 min at most).
        let spread = formatInterval(max(60, min(expectedInterval / 10, 1800)).rounded(.down))
        return """
            \(Self.marker) (job=\(job ?? "-"); every=\(every)); `redoubt schedule remove` deletes it.
            # Persistent=true: a run missed while the machine was off runs at the next boot.
            [Unit]
            Description=Redoubt backup \(job.map { "job " + $0 } ?? "of paths"), every \(every)
            Documentation=file:///usr/share/doc/redoubt/README.md

            [Timer]
            OnCalendar=\(calendar)
            Persistent=true
            RandomizedDelaySec=\(spread)
            Unit=\(name).service

            [Install]
            WantedBy=timers.target

            """
    }

    func write(to directory: String) throws {
        let dir = URL(fileURLWithPath: directory)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (ext, text) in [("service", service), ("timer", timer)] {
            let url = dir.appendingPathComponent("\(name).\(ext)")
            if FileManager.default.fileExists(atPath: url.path) && !Self.isOurs(url.path) {
                throw ValidationError("\(url.path) exists and was not written by redoubt: move it away first")
            }
            try Data(text.utf8).write(to: url, options: .atomic)
            chmod(url.path, 0o644)
        }
    }

    static func isOurs(_ path: String) -> Bool {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").hasPrefix(marker)
    }

    /// One installed schedule, as `schedule list` shows it.
    struct Installed: Codable {
        let unit: String
        let job: String?
        let every: String
        let calendar: String
    }

    static func installed(in directory: String) -> [Installed] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasPrefix("redoubt-backup") && $0.hasSuffix(".timer") }.sorted().compactMap { n in
            let path = directory + "/" + n
            guard isOurs(path), let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
            let first = text.split(separator: "\n").first.map(String.init) ?? ""
            func field(_ key: String) -> String? {
                guard let r = first.range(of: key + "=") else { return nil }
                let rest = first[r.upperBound...]
                return String(rest.prefix { $0 != ";" && $0 != ")" })
            }
            let calendar = text.split(separator: "\n").first { $0.hasPrefix("OnCalendar=") }
                .map { String($0.dropFirst("OnCalendar=".count)) } ?? ""
            let job = field("job")
            return Installed(unit: String(n.dropLast(".timer".count)), job: job == "-" ? nil : job,
                             every: field("every") ?? "", calendar: calendar)
        }
    }
}

/// The few things asked of systemd itself.
enum Systemd {
    /// Whether systemd is this machine's init (sd_booted(3)'s test).
    static var isRunning: Bool { FileManager.default.fileExists(atPath: "/run/systemd/system") }

    static func tool(_ name: String) -> String? {
        ["/usr/bin/" + name, "/bin/" + name].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Runs `systemctl ARGS`; a failure names the command.
    static func run(_ args: [String]) throws {
        guard let systemctl = tool("systemctl") else {
            throw JobRunError("systemctl is not installed", fix: "install systemd, or use --unit-dir and --no-enable")
        }
        let (status, _) = capture([systemctl] + args)
        guard status == 0 else {
            throw JobRunError("systemctl \(args.joined(separator: " ")) exited with status \(status)",
                fix: "see its message above")
        }
    }

    static func state(_ unit: String) -> String {
        guard let systemctl = tool("systemctl") else { return "" }
        return capture([systemctl, "is-active", unit]).1.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The longest gap between the next 12 elapses of a calendar expression, from
    /// `systemd-analyze calendar` (nil if it rejects the expression or is missing).
    static func longestGap(calendar: String) -> TimeInterval? {
        guard let analyze = tool("systemd-analyze") else { return nil }
        let (status, out) = capture([analyze, "calendar", "--iterations=12", calendar], environment: ["TZ": "UTC"])
        guard status == 0 else { return nil }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "EEE yyyy-MM-dd HH:mm:ss 'UTC'"
        let dates = out.split(separator: "\n").compactMap { line -> Date? in
            let t = line.trimmingCharacters(in: .whitespaces)
            guard t.hasPrefix("Next elapse:") || t.hasPrefix("Iter. #") else { return nil }
            guard let colon = t.firstIndex(of: ":") else { return nil }
            return f.date(from: t[t.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        guard dates.count >= 2 else { return nil }
        return zip(dates, dates.dropFirst()).map { $1.timeIntervalSince($0) }.max()
    }

    /// Runs a program to its end; returns its status and standard output.
    static func capture(_ argv: [String], environment: [String: String] = [:]) -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: argv[0])
        p.arguments = Array(argv.dropFirst())
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let pipe = Pipe()
        p.standardOutput = pipe
        do { try p.run() } catch { return (-1, "") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

import ArgumentParser
import Foundation
import Glibc
import RedoubtClient
import RedoubtCore

/// `redoubt backup`'s options beyond paths, tags and excludes: every one also a key of a
/// job in the jobs file (README "Jobs").
struct BackupCLIOptions: ParsableArguments {
    @Option(name: .long, help: "Run this job of the jobs file; options given here add to it.") var job: String?
    @Option(name: .long, help: "The jobs file (default: jobs.toml in the configuration directory).")
    var jobsFile: String?
    @Option(name: .long, help: "Read exclude patterns from this file, one a line, # comments (repeatable).")
    var excludeFile: [String] = []
    @Flag(name: .long, help: "Keep only the CACHEDIR.TAG file of directories tagged as caches.")
    var excludeCaches = false
    @Flag(name: .long, help: "Do not descend into directories on other filesystems (mount points stay, empty).")
    var oneFileSystem = false
    @Option(name: .long, help: "Read paths to back up from this file, one a line, # comments (repeatable).")
    var filesFrom: [String] = []
    @Flag(name: .long, help: "Walk and compare with the cache; read, upload and commit nothing.") var dryRun = false
    @Option(name: .long, help: "Upload at most this many bytes per second (K, M, G; a bare number is KiB/s).")
    var limitUpload: String?
    @Flag(name: .long,
        help: "Back up the standard output of the command given as arguments (after --); fails if it fails.")
    var stdinFromCommand = false
    @Option(name: .long, help: "The file name of the command's output in the snapshot (default: stdin).")
    var stdinFilename: String?
    @Option(name: .long,
            help: """
                How often this host backs up (e.g. 1d, 6h; 1m to 366d), sent with the commit: \
                `redoubt admin host list` shows the host late once its newest snapshot is older.
                """)
    var expectedInterval: String?
}

/// One backup as the job and the command line together ask for it.
struct BackupSpec: Sendable {
    var job: String? = nil
    var paths: [String] = []
    var excludes: [String] = []
    var tags: [String] = []
    var excludeCaches = false
    var oneFileSystem = false
    var dryRun = false
    var command: JobCommand? = nil
    var stdinFilename = "stdin"
    /// Bytes per second.
    var limitUpload: UInt64? = nil
    var pre: JobHook? = nil
    var post: JobHook? = nil
    /// Sent with the commit, so the server can tell when this host is late.
    var expectedInterval: TimeInterval? = nil

    /// Joins a job (if named) and the command line: lists add up, flags are set by either,
    /// a value on the command line wins.
    static func resolve(config: ClientConfig, paths: [String], tags: [String], excludes: [String],
                        options o: BackupCLIOptions) throws -> BackupSpec {
        var spec = BackupSpec()
        var job = BackupJob(name: "")
        if let name = o.job {
            job = try JobsFile.load(path: o.jobsFile ?? JobsFile.defaultPath(configDirectory: config.directory))
                .job(name)
            spec.job = name
        }
        spec.paths = job.paths
        if o.stdinFromCommand {
            guard !paths.isEmpty else {
                throw ValidationError("--stdin-from-command needs the command after --, e.g. -- pg_dump -Fc app")
            }
            spec.command = .argv(paths)
        } else {
            spec.command = job.command
            spec.paths += paths
        }
        for file in job.filesFrom + o.filesFrom { spec.paths += try listFile(file, what: "--files-from") }
        spec.excludes = job.exclude + excludes
        for file in job.excludeFile + o.excludeFile { spec.excludes += try listFile(file, what: "--exclude-file") }
        spec.tags = job.tag + tags
        spec.excludeCaches = job.excludeCaches || o.excludeCaches
        spec.oneFileSystem = job.oneFileSystem || o.oneFileSystem
        spec.dryRun = o.dryRun
        spec.stdinFilename = o.stdinFilename ?? job.stdinFilename ?? "stdin"
        spec.limitUpload = try o.limitUpload.map(parseRate) ?? job.limitUpload
        spec.pre = job.pre
        spec.post = job.post
        spec.expectedInterval = try o.expectedInterval.map(parseDuration)
        if let interval = spec.expectedInterval, !Wire.expectedIntervalRange.contains(interval.rounded()) {
            throw ValidationError("--expected-interval must be between 1m and 366d")
        }
        if spec.command != nil {
            guard spec.paths.isEmpty else {
                throw ValidationError("a command's output is backed up alone: give paths or a command, not both")
            }
            guard !spec.dryRun else {
                throw ValidationError("--dry-run does not run the command: run the command itself to check it")
            }
        } else if spec.paths.isEmpty {
            throw ValidationError("nothing to back up: give paths, --files-from, --job NAME or --stdin-from-command")
        }
        return spec
    }

    /// The lines of a paths or patterns file: blank lines and lines starting with `#` are
    /// skipped, surrounding spaces and tabs trimmed.
    static func listFile(_ path: String, what: String) throws -> [String] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("cannot read \(what) file \(path): check the path and that this user may read it")
        }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { line in
            let t = line.trimmingCharacters(in: CharacterSet(charactersIn: " \t\r"))
            return t.isEmpty || t.hasPrefix("#") ? nil : t
        }
    }
}

/// What `redoubt backup --dry-run --json` prints (docs/CLI-JSON.md).
struct BackupPreviewJSON: Codable {
    let dryRun: Bool
    let job: String?
    let filesNew: UInt64
    let filesChanged: UInt64
    let filesUnchanged: UInt64
    let bytesTotal: UInt64
    let bytesToRead: UInt64
    let warnings: [String]
}

enum BackupJobRunner {
    /// Runs a backup with its hooks and returns the exit code. A job run, and any run whose
    /// stdout is not a terminal (a timer's, into the journal), ends with one summary line.
    static func run(config cfg: ClientConfig, spec: BackupSpec, json: Bool) async -> Exit {
        let oneLine = spec.job != nil || isatty(1) == 0
        var env = ["REDOUBT_JOB": spec.job ?? ""]
        var code: Exit = .ok
        var summary: BackupSummary? = nil
        var failure: String? = nil
        var preRan = false
        do {
            // Why not on a dry run: hooks act (stop services, dump databases); a dry run acts on nothing.
            if let pre = spec.pre, !spec.dryRun {
                preRan = true
                try await runHook(pre, kind: "pre", environment: env)
            }
            if spec.dryRun {
                code = try preview(config: cfg, spec: spec, json: json)
            } else {
                let s = try await performBackup(config: cfg, spec: spec, quiet: json || oneLine)
                summary = s
                code = s.warnings.isEmpty ? .ok : .partial
                if json { try printJSON(s) }
            }
        } catch {
            code = report(error)
            failure = reportText(error)
        }
        if let post = spec.post, spec.pre == nil || preRan, !spec.dryRun {
            env["REDOUBT_EXIT_CODE"] = String(code.rawValue)
            env["REDOUBT_SNAPSHOT"] = summary?.snapshot ?? ""
            do { try await runHook(post, kind: "post", environment: env) } catch {
                _ = report(error)
                // The snapshot is committed whatever the post hook did: warnings, not failure.
                if code == .ok { code = summary != nil ? .partial : .failure }
                failure = failure ?? reportText(error)
            }
        }
        if oneLine, !json, !spec.dryRun {
            print(summaryLine(job: spec.job, summary: summary, failure: failure, code: code))
            if let s = summary { for w in s.warnings { print("  warning: \(w)") } }
        }
        return code
    }

    /// One line per run: what a sysadmin greps in the journal.
    static func summaryLine(job: String?, summary s: BackupSummary?, failure: String?, code: Exit) -> String {
        let what = job.map { "job " + $0 } ?? "backup"
        guard let s else { return "\(what): failed, exit \(code.rawValue): \(failure ?? "see above")" }
        return """
            \(what): snapshot \(s.snapshot.prefix(8)) saved, \(s.filesNew) new, \(s.filesChanged) changed, \
            \(s.filesUnchanged) unchanged files, read \(formatBytes(s.bytesRead)) of \(formatBytes(s.bytesTotal)), \
            uploaded \(formatBytes(s.bytesUploaded)), \(String(format: "%.1f", s.seconds)) s, \
            \(s.warnings.count) warnings, exit \(code.rawValue)
            """
    }

    static func runHook(_ hook: JobHook, kind: String, environment: [String: String]) async throws {
        // Why stdout to stderr: a hook's chatter must not break `--json` on stdout.
        let child = try ChildProcess.spawn(["/bin/sh", "-c", hook.command], stdout: 2, environment: environment,
            shown: hook.command)
        let end = await child.wait(timeout: hook.timeout)
        guard end.succeeded else {
            throw JobRunError("the \(kind) hook \(hook.command.debugDescription) \(end)",
                fix: kind == "pre"
                    ? "nothing was backed up; fix the hook (its messages are above) or raise \(kind)-timeout"
                    : "the backup itself is as reported; fix the hook (its messages are above)")
        }
    }

    static func preview(config cfg: ClientConfig, spec: BackupSpec, json: Bool) throws -> Exit {
        let material = try cfg.sharedMaterial()
        var options = BackupOptions(paths: spec.paths, excludes: spec.excludes, tags: spec.tags,
            cachePath: cfg.cachePath(job: spec.job, paths: absolute(spec.paths)))
        options.excludeCaches = spec.excludeCaches
        options.oneFileSystem = spec.oneFileSystem
        let p = try Archiver().preview(options: options, chunkIDKey: material.chunkIDKey)
        if json {
            try printJSON(BackupPreviewJSON(dryRun: true, job: spec.job, filesNew: p.filesNew,
                filesChanged: p.filesChanged, filesUnchanged: p.filesUnchanged, bytesTotal: p.bytesTotal,
                bytesToRead: p.bytesToRead, warnings: p.warnings.map(\.description)))
        } else {
            let files = p.filesNew + p.filesChanged + p.filesUnchanged
            print("""
                dry run\(spec.job.map { " of job \($0)" } ?? ""): \(files) files, \(formatBytes(p.bytesTotal)); \
                would read \(p.filesNew) new and \(p.filesChanged) changed files (\(formatBytes(p.bytesToRead))), \
                \(p.filesUnchanged) unchanged; nothing was read, uploaded or committed
                """)
            for w in p.warnings { print("  warning: \(w)") }
        }
        return p.warnings.isEmpty ? .ok : .partial
    }

    static func absolute(_ paths: [String]) -> [String] {
        paths.map { URL(fileURLWithPath: $0).standardizedFileURL.path }
    }
}

/// Runs one backup with progress, prints the human summary unless `quiet`.
func performBackup(config cfg: ClientConfig, spec: BackupSpec, quiet: Bool) async throws -> BackupSummary {
    let keys = try cfg.writeKeySet()
    let absolute = BackupJobRunner.absolute(spec.paths)
    let progress = ProgressLine()
    let start = Date()
    let now = Date().timeIntervalSince1970
    var options = BackupOptions(paths: absolute, excludes: spec.excludes, tags: spec.tags)
    options.excludeCaches = spec.excludeCaches
    options.oneFileSystem = spec.oneFileSystem
    if let rate = spec.limitUpload {
        // Why smaller packs: pacing is per pack, so a pack of about 4 s at the limit keeps bursts short.
        options.packSize = Int(min(max(rate * 4, 1 << 20), UInt64(options.packSize)))
    }
    // Finished packs wait for their upload in unnamed files there, not in memory.
    try cfg.prepareCaches()
    options.spoolDirectory = cfg.cachesDirectory.path
    var child: ChildProcess? = nil
    var readEnd: Int32 = -1
    defer { if readEnd >= 0 { close(readEnd) } }
    if let command = spec.command {
        var fds: [Int32] = [-1, -1]
        // Why close-on-exec: only the command's stdout (a dup2'd copy) may hold the write end,
        // or the read would never see end of file.
        guard pipe(&fds) == 0, fcntl(fds[0], F_SETFD, FD_CLOEXEC) == 0, fcntl(fds[1], F_SETFD, FD_CLOEXEC) == 0 else {
            throw JobRunError("cannot make a pipe: \(String(cString: strerror(errno)))", fix: "check the host's limits")
        }
        readEnd = fds[0]
        do {
            child = try ChildProcess.spawn(command.argv, stdout: fds[1], shown: command.shown)
        } catch {
            close(fds[1])
            throw error
        }
        close(fds[1])
        let started = child!
        options.stream = BackupStream(name: spec.stdinFilename, fd: fds[0]) {
            let end = await started.wait()
            guard end.succeeded else {
                throw JobRunError("the command \(command.shown.debugDescription) \(end)",
                    fix: "no snapshot was committed; fix the command (its messages are above) and run again")
            }
        }
    } else {
        options.cachePath = cfg.cachePath(job: spec.job, paths: absolute)
    }
    let result: BackupResult
    do {
        result = try await RedoubtCLI.with(try APIClient(credential: cfg.credential())) { client in
            let server = ServerBackupTarget(client: client, expectedInterval: spec.expectedInterval)
            let target: any PackLocatingBackupTarget = spec.limitUpload.map {
                RateLimitedBackupTarget(base: server, bytesPerSecond: $0)
            } ?? server
            return try await Archiver().run(options: options, keys: keys, target: target,
                now: Timestamp(seconds: Int64(now), nanoseconds: UInt32((now - now.rounded(.down)) * 1e9))) { p in
                progress.update(files: p.filesDone, bytes: p.bytesDone, totalBytes: p.bytesTotal,
                    current: p.currentPath)
            }
        }
    } catch {
        // A command still writing into a backup that failed is stopped with its children.
        await child?.stop()
        throw error
    }
    progress.finish()
    // The server accepted what these keys made: record them, so later damage is found first.
    if !cfg.hasKeyCheck { try? cfg.recordKeyCheck() }
    let s = BackupSummary(snapshot: result.manifest.id.description, filesNew: result.filesNew,
        filesChanged: result.filesChanged, filesUnchanged: result.filesUnchanged,
        bytesTotal: result.statistics.bytesTotal, bytesRead: result.bytesRead, bytesUploaded: result.bytesUploaded,
        packsUploaded: result.packsUploaded, seconds: Date().timeIntervalSince(start),
        warnings: result.warnings.map(\.description))
    if !quiet {
        print("snapshot \(s.snapshot.prefix(8)) saved (\(s.snapshot))")
        print("  files: \(s.filesNew) new, \(s.filesChanged) changed, \(s.filesUnchanged) unchanged")
        print("""
              read \(formatBytes(s.bytesRead)) of \(formatBytes(s.bytesTotal)), uploaded \
            \(formatBytes(s.bytesUploaded)) in \(s.packsUploaded) packs after dedup and compression, \
            \(String(format: "%.1f", s.seconds)) s
            """)
        for w in s.warnings { print("  warning: \(w)") }
    }
    return s
}

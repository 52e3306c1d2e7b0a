import ArgumentParser
import Foundation
import RedoubtCore
import TOMLKit

/// What a job runs instead of walking paths: a command whose standard output is backed up
/// as one file. A string runs with `/bin/sh -c` (pipes, variables); an array runs that
/// program with those arguments, no shell.
enum JobCommand: Sendable, Equatable {
    case shell(String)
    case argv([String])

    var argv: [String] {
        switch self {
        case .shell(let s): ["/bin/sh", "-c", s]
        case .argv(let a): a
        }
    }

    var shown: String {
        switch self {
        case .shell(let s): s
        case .argv(let a): a.joined(separator: " ")
        }
    }
}

/// A command run before or after a job, with `/bin/sh -c`, killed (its whole process
/// group) when it outlives its timeout.
struct JobHook: Sendable, Equatable {
    var command: String
    var timeout: TimeInterval
    static let defaultTimeout: TimeInterval = 15 * 60
}

/// One backup job: what `redoubt backup` takes on its command line, named and kept in the
/// jobs file (README "Jobs"). Every key is the long option of the same name.
struct BackupJob: Sendable, Equatable {
    var name: String
    var paths: [String] = []
    var exclude: [String] = []
    var excludeFile: [String] = []
    var excludeCaches = false
    var oneFileSystem = false
    var filesFrom: [String] = []
    var tag: [String] = []
    var command: JobCommand? = nil
    var stdinFilename: String? = nil
    /// Bytes per second.
    var limitUpload: UInt64? = nil
    var pre: JobHook? = nil
    var post: JobHook? = nil

    /// Job names become file and systemd unit names: letters, digits, `.`, `_`, `-`.
    static func isValidName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.unicodeScalars.count <= 64,
              CharacterSet.alphanumerics.contains(first), first.isASCII else { return false }
        return name.unicodeScalars.allSatisfy {
            $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "._-".unicodeScalars.contains($0))
        }
    }
}

/// A problem in the jobs file: names the file, the line and key where known, and the fix.
struct JobsFileError: RedoubtError {
    let file: String
    let line: Int?
    let key: String?
    let problem: String
    let fix: String
    var exitCategory: ExitCategory = .usage

    var errorCode: String { exitCategory == .notFound ? "E_NOT_FOUND" : "E_JOBS_FILE" }
    var description: String {
        let place = file + (line.map { ":\($0)" } ?? "") + (key.map { ": \($0)" } ?? "")
        return "\(place): \(problem); \(fix) [\(errorCode)]"
    }
}

/// The jobs file: TOML, one table per job under `jobs` (README "Jobs").
///
/// ```toml
/// [jobs.etc]
/// paths = ["/etc"]
/// exclude = ["*.swp"]
/// one-file-system = true
/// ```
struct JobsFile: Sendable {
    let path: String
    let jobs: [String: BackupJob]

    /// The keys a job may hold, with what each takes (the message of an unknown key lists them).
    static let keys: [String: String] = [
        "paths": "an array of paths", "exclude": "an array of glob patterns", "exclude-file": "an array of files",
        "exclude-caches": "true or false", "one-file-system": "true or false", "files-from": "an array of files",
        "tag": "an array of tags", "command": "a command line (a string, run by /bin/sh -c, or an array)",
        "stdin-filename": "a file name", "limit-upload": "a rate such as \"2M\" (bytes per second)",
        "pre": "a command line run before the backup", "pre-timeout": "a duration such as \"5m\"",
        "post": "a command line run after the backup", "post-timeout": "a duration such as \"5m\"",
    ]

    /// The default place: `jobs.toml` in the client's configuration directory.
    static func defaultPath(configDirectory: URL) -> String {
        configDirectory.appendingPathComponent("jobs.toml").path
    }

    static func load(path: String) throws -> JobsFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw JobsFileError(file: path, line: nil, key: nil, problem: "cannot read the jobs file",
                fix: "create it (README \"Jobs\") or name another with --jobs-file", exitCategory: .notFound)
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw JobsFileError(file: path, line: nil, key: nil, problem: "not UTF-8 text", fix: "save it as UTF-8")
        }
        return try parse(text, path: path)
    }

    static func parse(_ text: String, path: String) throws -> JobsFile {
        let root: TOMLTable
        do { root = try TOMLTable(string: text) } catch let e as TOMLParseError {
            throw JobsFileError(file: path, line: e.source.begin.line, key: nil,
                problem: "not valid TOML: \(e.description)", fix: "correct the syntax at that line (toml.io)")
        }
        let locate = KeyLocator(text: text)
        for key in root.keys where key != "jobs" {
            throw JobsFileError(file: path, line: locate.line(job: nil, key: key), key: key,
                problem: "unknown top-level key", fix: "put each job in a [jobs.NAME] table")
        }
        guard let jobsValue = root["jobs"] else { return JobsFile(path: path, jobs: [:]) }
        guard let jobsTable = jobsValue.table else {
            throw JobsFileError(file: path, line: locate.line(job: nil, key: "jobs"), key: "jobs",
                problem: "must be a table of jobs", fix: "write each job as [jobs.NAME]")
        }
        var jobs: [String: BackupJob] = [:]
        for name in jobsTable.keys {
            guard let table = jobsTable[name]?.table else {
                throw JobsFileError(file: path, line: locate.line(job: nil, key: "jobs"), key: "jobs.\(name)",
                    problem: "must be a table", fix: "write the job as [jobs.\(name)] followed by its keys")
            }
            guard BackupJob.isValidName(name) else {
                throw JobsFileError(file: path, line: locate.line(job: name, key: nil), key: "jobs.\(name)",
                    problem: "not a usable job name", fix: "use letters, digits, '.', '_' and '-' (64 at most)")
            }
            jobs[name] = try JobReader(file: path, job: name, table: table, locate: locate).read()
        }
        return JobsFile(path: path, jobs: jobs)
    }

    func job(_ name: String) throws -> BackupJob {
        guard let job = jobs[name] else {
            let known = jobs.keys.sorted().joined(separator: ", ")
            throw JobsFileError(file: path, line: nil, key: nil, problem: "no job named '\(name)'",
                fix: known.isEmpty ? "add a [jobs.\(name)] table" : "the jobs defined are: \(known)",
                exitCategory: .notFound)
        }
        return job
    }
}

/// Finds the line of a job's table or of a key in it, for messages (TOMLKit keeps no
/// positions of values). Best effort: nil when the text spells it unusually.
struct KeyLocator {
    let lines: [Substring]

    init(text: String) { lines = text.split(separator: "\n", omittingEmptySubsequences: false) }

    func line(job: String?, key: String?) -> Int? {
        var start = 0
        if let job {
            let headers = ["[jobs.\(job)]", "[jobs.\"\(job)\"]", "[ jobs.\(job) ]"]
            guard let h = lines.firstIndex(where: { l in headers.contains(l.trimmingCharacters(in: .whitespaces)) })
            else { return nil }
            guard let key else { return h + 1 }
            start = h + 1
        }
        guard let key else { return nil }
        for i in start..<lines.count {
            let l = lines[i].trimmingCharacters(in: .whitespaces)
            if job != nil && l.hasPrefix("[") { return nil }
            if l.hasPrefix(key) {
                let rest = l.dropFirst(key.count).trimmingCharacters(in: .whitespaces)
                if rest.hasPrefix("=") || rest.hasPrefix(".") { return i + 1 }
            }
        }
        return nil
    }
}

/// Reads one job's table, checking each value's type.
private struct JobReader {
    let file: String
    let job: String
    let table: TOMLTable
    let locate: KeyLocator

    func fail(_ key: String, _ problem: String, _ fix: String) -> JobsFileError {
        JobsFileError(file: file, line: locate.line(job: job, key: key), key: "jobs.\(job).\(key)", problem: problem,
            fix: fix)
    }

    func read() throws -> BackupJob {
        var j = BackupJob(name: job)
        for key in table.keys {
            guard let what = JobsFile.keys[key] else {
                throw fail(key, "unknown key", "the keys a job takes are: " + JobsFile.keys.keys.sorted()
                    .joined(separator: ", "))
            }
            guard let value = table[key] else { continue }
            switch key {
            case "paths": j.paths = try strings(key, value, what)
            case "exclude": j.exclude = try strings(key, value, what)
            case "exclude-file": j.excludeFile = try strings(key, value, what)
            case "files-from": j.filesFrom = try strings(key, value, what)
            case "tag": j.tag = try strings(key, value, what)
            case "exclude-caches": j.excludeCaches = try bool(key, value)
            case "one-file-system": j.oneFileSystem = try bool(key, value)
            case "stdin-filename": j.stdinFilename = try string(key, value, what)
            case "command":
                if let s = value.string {
                    guard !s.trimmingCharacters(in: .whitespaces).isEmpty else {
                        throw fail(key, "is empty", "give the command whose output to back up")
                    }
                    j.command = .shell(s)
                } else {
                    let argv = try strings(key, value, what)
                    guard !argv.isEmpty else { throw fail(key, "is empty", "give the program and its arguments") }
                    j.command = .argv(argv)
                }
            case "limit-upload":
                let text = value.string ?? value.int.map(String.init)
                guard let text, let rate = try? parseRate(text) else {
                    throw fail(key, "is not a rate", "write a number of bytes per second with K, M or G, e.g. \"2M\"")
                }
                j.limitUpload = rate
            case "pre": j.pre = JobHook(command: try string(key, value, what), timeout: JobHook.defaultTimeout)
            case "post": j.post = JobHook(command: try string(key, value, what), timeout: JobHook.defaultTimeout)
            case "pre-timeout", "post-timeout": break
            default: break
            }
        }
        for (hookKey, timeoutKey) in [("pre", "pre-timeout"), ("post", "post-timeout")] {
            guard let value = table[timeoutKey] else { continue }
            let seconds: TimeInterval
            if let n = value.int, n > 0 {
                seconds = TimeInterval(n)
            } else if let s = value.string, let d = try? parseDuration(s) {
                seconds = d
            } else {
                throw fail(timeoutKey, "is not a duration", "write a number and a unit: s, m, h or d, e.g. \"5m\"")
            }
            if hookKey == "pre" {
                guard j.pre != nil else { throw fail(timeoutKey, "has no pre command", "add pre = \"…\" or remove it") }
                j.pre?.timeout = seconds
            } else {
                guard j.post != nil else {
                    throw fail(timeoutKey, "has no post command", "add post = \"…\" or remove it")
                }
                j.post?.timeout = seconds
            }
        }
        for (key, list) in [("paths", j.paths), ("exclude-file", j.excludeFile), ("files-from", j.filesFrom)] {
            // Why absolute: a timer runs the job from /, a shell from anywhere; one meaning for both.
            if let relative = list.first(where: { !$0.hasPrefix("/") }) {
                throw fail(key, "\(relative.debugDescription) is not an absolute path", "write it from / on")
            }
        }
        if j.command != nil && !(j.paths.isEmpty && j.filesFrom.isEmpty) {
            throw fail("command", "a job backs up either a command's output or paths, not both",
                "split it into two jobs")
        }
        if j.command == nil && j.paths.isEmpty && j.filesFrom.isEmpty {
            throw JobsFileError(file: file, line: locate.line(job: job, key: nil), key: "jobs.\(job)",
                problem: "backs up nothing", fix: "give paths = [\"/some/dir\"], files-from or command")
        }
        return j
    }

    func string(_ key: String, _ v: TOMLValueConvertible, _ what: String) throws -> String {
        guard let s = v.string else { throw fail(key, "must be \(what)", "write it as a quoted string") }
        return s
    }

    func bool(_ key: String, _ v: TOMLValueConvertible) throws -> Bool {
        guard let b = v.bool else { throw fail(key, "must be true or false", "write \(key) = true") }
        return b
    }

    /// A string or an array of strings.
    func strings(_ key: String, _ v: TOMLValueConvertible, _ what: String) throws -> [String] {
        if let s = v.string { return [s] }
        guard let a = v.array else {
            throw fail(key, "must be \(what)", "write it as [\"…\", \"…\"]")
        }
        return try a.map { e in
            guard let s = e.string else { throw fail(key, "must be \(what)", "write every element as a quoted string") }
            return s
        }
    }
}

/// Parses an upload rate: a number of bytes per second with an optional K, M or G (powers
/// of 1024; `KiB`, `MB/s` and the like are read alike), or a bare number as KiB/s, which is
/// what restic's `--limit-upload` takes.
func parseRate(_ text: String) throws -> UInt64 {
    var s = text.trimmingCharacters(in: .whitespaces).uppercased()
    for suffix in ["/S", "PS", "B", "I"] where s.hasSuffix(suffix) { s.removeLast(suffix.count) }
    let units: [Character: Double] = ["K": 1024, "M": 1024 * 1024, "G": 1024 * 1024 * 1024]
    var mult = 1024.0
    if let u = s.last, let m = units[u] {
        mult = m
        s.removeLast()
    }
    guard let n = Double(s), n > 0, n * mult >= 1, n * mult < 1e15 else {
        throw ValidationError("""
            upload rate \(text.debugDescription) is not a rate: give bytes per second with K, M or G (e.g. 2M), \
            or a bare number of KiB/s
            """)
    }
    return UInt64(n * mult)
}

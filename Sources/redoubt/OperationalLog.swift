import ArgumentParser
import Foundation
import Logging
import RedoubtCore

/// The server's operational log on stderr (`server run --log-format`): one line per event
/// (start, stop, failed requests with their request ID, low disk space), as logfmt or JSON,
/// for journald, a log shipper or a human.
enum OperationalLog {
    enum Format: String, CaseIterable, ExpressibleByArgument {
        case logfmt, json
    }

    /// Chosen by `server run` before it makes its loggers; nil: swift-log's plain lines.
    nonisolated(unsafe) static var format: Format? = nil
    /// The level with a format chosen: REDOUBT_LOG, else info (start and stop are info).
    nonisolated(unsafe) static var level: Logger.Level = .info

    /// The handler the process's logging system makes for `label`.
    static func handler(label: String, plainLevel: Logger.Level) -> any LogHandler {
        guard let format else {
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = plainLevel
            return h
        }
        var h = LineLogHandler(label: label, format: format)
        h.logLevel = level
        return h
    }
}

/// Writes each record as one line on stderr: `time=… level=… logger=… msg=… key=value…`
/// (logfmt, values quoted when needed) or one JSON object with the same keys.
struct LineLogHandler: LogHandler {
    let label: String
    let format: OperationalLog.Format
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields: [(String, String)] = [("time", Self.time(Date())), ("level", event.level.rawValue),
                                          ("logger", label), ("msg", "\(event.message)")]
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        for key in merged.keys.sorted() { fields.append((key, "\(merged[key]!)")) }
        let line: String
        switch format {
        case .logfmt: line = fields.map { "\($0.0)=\(Self.logfmtValue($0.1))" }.joined(separator: " ")
        case .json:
            var object: [String: String] = [:]
            for (k, v) in fields { object[k] = v }
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            line = (try? e.encode(object)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    static func time(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: d)
    }

    /// A logfmt value: bare if it has no space, quote, `=` or control character; else
    /// quoted with `\"`, `\\` and control characters escaped (one event is one line).
    static func logfmtValue(_ v: String) -> String {
        let plain = !v.isEmpty && !v.unicodeScalars.contains {
            $0 == " " || $0 == "\"" || $0 == "=" || $0 == "\\" || SafeText.needsEscape($0)
        }
        if plain { return v }
        var out = "\""
        for s in v.unicodeScalars {
            switch s {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case _ where SafeText.needsEscape(s): out += String(format: "\\u%04x", s.value)
            default: out.unicodeScalars.append(s)
            }
        }
        return out + "\""
    }
}

/// Free space of the server's data directory, checked at start and then every few minutes.
enum DiskSpace {
    /// Free bytes on the filesystem holding `path`, if it can be read.
    static func free(_ path: String) -> UInt64? {
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { return nil }
        return UInt64(s.f_bavail) * UInt64(s.f_frsize)
    }

    /// Logs a warning when less than `threshold` bytes are free under `path`.
    static func check(_ path: String, threshold: UInt64, logger: Logger) {
        guard let free = free(path), free < threshold else { return }
        logger.warning("low disk space", metadata: ["path": "\(path)", "free_bytes": "\(free)",
                                                    "threshold_bytes": "\(threshold)"])
    }
}

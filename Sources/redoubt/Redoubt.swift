import ArgumentParser
import CMallocTune
import Foundation
import Logging
import RedoubtCore

/// `redoubt`: one binary for the server, the admin, the client and the media.
struct Redoubt: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redoubt",
        abstract: "Backups that a compromised host can neither read, change nor delete.",
        discussion: ExitCategory.helpText,
        version: "redoubt \(RedoubtVersion.string)",
        subcommands: [QuickstartCommand.self, ServerCommand.self, CopyCommand.self, AdminCommand.self, EnrollCommand.self, BackupCommand.self, SnapshotsCommand.self,
                      RestoreCommand.self, LsCommand.self, VerifyCommand.self, AuditCommand.self, MediaCommand.self, DoctorCommand.self])
}

@main
enum Main {
    static func main() async {
        // Large seal buffers otherwise come from mmap and page-fault on every chunk.
        redoubt_tune_malloc()
        // Logs go to stderr at warning and above; REDOUBT_LOG=info|debug|trace for more.
        let level = ProcessInfo.processInfo.environment["REDOUBT_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        await Redoubt.main()
    }
}

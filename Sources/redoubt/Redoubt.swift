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
        subcommands: [QuickstartCommand.self, ServerCommand.self, CopyCommand.self, AdminCommand.self,
            EnrollCommand.self, BackupCommand.self, ScheduleCommand.self, SnapshotsCommand.self,
                      RestoreCommand.self, LsCommand.self, DumpCommand.self, DiffCommand.self, FindCommand.self,
                      VerifyCommand.self, AuditCommand.self, MediaCommand.self,
                          DoctorCommand.self])
}

@main
enum Main {
    static func main() async {
        // Large seal buffers otherwise come from mmap and page-fault on every chunk.
        redoubt_tune_malloc()
        // Logs go to stderr at warning and above; REDOUBT_LOG=info|debug|trace for more.
        let level = ProcessInfo.processInfo.environment["REDOUBT_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        if let l = ProcessInfo.processInfo.environment["REDOUBT_LOG"].flatMap(Logger.Level.init(rawValue:)) {
            OperationalLog.level = l
        }
        LoggingSystem.bootstrap { label in OperationalLog.handler(label: label, plainLevel: level) }
        // Why by hand: `admin`'s required --credential fails `admin tenant create --help`
        // into the generic admin help before ArgumentParser reaches the subcommand.
        let args = Array(CommandLine.arguments.dropFirst())
        if args.first == "admin", args.contains("--help") || args.contains("-h") {
            var type: ParsableCommand.Type = AdminCommand.self
            var skipValue = false
            for a in args.dropFirst() {
                if skipValue { skipValue = false; continue }
                if a == "--credential" { skipValue = true; continue }
                if a.hasPrefix("-") { continue }
                guard let sub =
                    type.configuration.subcommands.first(where: { $0.configuration.commandName == a }) else {
                    break
                }
                type = sub
            }
            print(Redoubt.helpMessage(for: type))
            exit(0)
        }
        do {
            var command = try Redoubt.parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            // ArgumentParser exits 64 (EX_USAGE) on a usage error; README's table says 2.
            let code = Redoubt.exitCode(for: error)
            let message = Redoubt.fullMessage(for: error)
            if !message.isEmpty {
                if code == .success {
                    print(message)
                } else {
                    FileHandle.standardError.write(Data((message + "\n").utf8))
                }
            }
            exit(code == .validationFailure ? ExitCategory.usage.rawValue : code.rawValue)
        }
    }
}

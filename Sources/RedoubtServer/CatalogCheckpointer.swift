import GRDB

/// Copies the SQLite catalog's write-ahead log into its database file on a connection of
/// its own: beside the writer, not inside its commits.
///
/// Why: a pack's upload inserts one chunk row per chunk, and chunk IDs are uniformly random,
/// so a pack of a thousand chunks dirties about a thousand pages of the chunk table. SQLite's
/// own checkpoint runs in the commit that takes the log past its mark (1000 pages by
/// default), and that pack's answer waited while the pages were copied and the file synced:
/// in a 2%-changed backup of the kernel tree, 1151 to 1977 pages and 13 to 16 ms of sync
/// for each of its packs, about half of each pack's time in the catalog. In WAL mode a
/// checkpoint runs beside a writer, and a page that several commits rewrote is copied once.
/// What a commit answered is durable in the log already; the checkpoint only moves it.
final class CatalogCheckpointer: Sendable {
    /// SQLite's own checkpoint stays as the bound on the log should this one fall behind:
    /// 16384 pages of 4 KiB, 64 MiB. One pack's commit measured at most 2305 pages.
    static let ceilingPages = 16384

    private let connection: DatabaseQueue
    private let wake: AsyncStream<Void>.Continuation

    init(path: String) throws {
        var config = Configuration()
        config.busyMode = .timeout(10)
        connection = try DatabaseQueue(path: path, configuration: config)
        // Wakes that come while a checkpoint runs fold into one more run after it.
        let (requests, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.wake = wake
        // Why weakly: the connection must close with the catalog. The last connection to
        // close checkpoints the log into the file and removes it, so a command that opened
        // the catalog (`server init`, an admin command) leaves the file whole, as before.
        Task.detached(priority: .utility) { [weak self] in
            for await _ in requests {
                guard let self else { return }
                // A passive checkpoint copies what no reader still needs and waits for no
                // one. One that fails leaves the pages in the log, where they are durable
                // and read as before; the next wake, or SQLite's own ceiling, moves them.
                _ = try? await self.connection.writeWithoutTransaction { try $0.checkpoint(.passive) }
            }
        }
    }

    /// Asks for a checkpoint after a write that added many pages to the log.
    func written() { wake.yield() }

    deinit { wake.finish() }
}

import DequeModule
import Foundation

/// A walk run on a thread of its own, listing directories ahead of whoever takes its
/// events. Listing (a directory's read, then an lstat of each entry) was over a quarter of
/// the client's time in a backup of an unchanged tree, all of it in the task that builds
/// the snapshot, and it needs nothing from that task: on a core of its own it overlaps
/// with everything else.
///
/// A directory belongs to the walk until its event is taken, and to the taker after; the
/// walk reads nothing of a directory it has handed over. At most ``limit`` entries wait,
/// listed and not taken, so what the walk holds stays bounded whatever the tree's size.
final class WalkAhead: @unchecked Sendable {
    /// Entries listed ahead beyond which the walk waits. Measured on the kernel tree's
    /// unchanged run (warm, release, two runs each): 1024, 4096, 8192 and 32 768 took the
    /// same time (0.62 to 0.68 s), and each step up held more (62 to 63, 63, 64.5 and 69 to
    /// 70 MiB at peak); a listing may pass the bound by one directory (2545 entries there).
    static let defaultLimit = 2048

    let limit: Int
    private let condition = NSCondition()
    // Everything below is guarded by `condition`.
    private var walker: Walker?
    private var events: Deque<(event: WalkEvent, entries: Int)> = []
    private var waitingEntries = 0
    private var mostWaiting = 0
    private var taker: CheckedContinuation<Void, Never>?
    private var outcome: Result<Walker, ArchiveError>?
    private var stopped = false

    /// Starts walking at once.
    init(_ walker: Walker, limit: Int = WalkAhead.defaultLimit) {
        self.walker = walker
        self.limit = max(1, limit)
        let thread = Thread { [self] in walk() }
        thread.name = "redoubt-walk"
        thread.start()
    }

    /// The next event, or nil once the walk has ended; throws what the walk threw.
    func next() async throws(ArchiveError) -> WalkEvent? {
        while true {
            switch take() {
            case .event(let e): return e
            case .ended(.success): return nil
            case .ended(.failure(let e)): throw e
            case .none:
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in waitForMore(c) }
            }
        }
    }

    private enum Taken {
        case event(WalkEvent)
        case ended(Result<Walker, ArchiveError>)
        case none
    }

    private func take() -> Taken {
        condition.lock()
        defer { condition.unlock() }
        if let taken = events.popFirst() {
            waitingEntries -= taken.entries
            condition.signal()
            return .event(taken.event)
        }
        return outcome.map { .ended($0) } ?? .none
    }

    private func waitForMore(_ c: CheckedContinuation<Void, Never>) {
        condition.lock()
        if !events.isEmpty || outcome != nil {
            condition.unlock()
            c.resume()
        } else {
            taker = c
            condition.unlock()
        }
    }

    /// The walk once ``next()`` has returned nil: its warnings and counts, and the user and
    /// group names it looked up (for the ancestors' nodes).
    var finished: Walker? {
        condition.lock()
        defer { condition.unlock() }
        guard case .success(let w) = outcome else { return nil }
        return w
    }

    /// The most entries that waited at once: under ``limit`` plus one directory's.
    var peakWaiting: Int {
        condition.lock()
        defer { condition.unlock() }
        return mostWaiting
    }

    /// Ends the walk early (the backup stopped): it lists nothing more and closes what it
    /// holds open.
    func stop() {
        condition.lock()
        stopped = true
        condition.signal()
        condition.unlock()
    }

    private func walk() {
        condition.lock()
        guard var walker = walker.take() else {
            condition.unlock()
            return
        }
        condition.unlock()
        let result: Result<Walker, ArchiveError>
        do throws(ArchiveError) {
            while let event = try walker.next() {
                if !hand(event) {
                    walker.abandon()
                    break
                }
            }
            result = .success(walker)
        } catch {
            walker.abandon()
            result = .failure(error)
        }
        condition.lock()
        outcome = result
        let waiting = taker.take()
        condition.unlock()
        waiting?.resume()
    }

    /// Queues one event, first waiting while too many entries wait; false once stopped.
    private func hand(_ event: WalkEvent) -> Bool {
        let entries: Int
        switch event {
        case .listed(let d): entries = d.entries.count + 1
        case .closed: entries = 0
        }
        condition.lock()
        while waitingEntries >= limit && !stopped { condition.wait() }
        if stopped {
            condition.unlock()
            return false
        }
        events.append((event, entries))
        waitingEntries += entries
        mostWaiting = max(mostWaiting, waitingEntries)
        let waiting = taker.take()
        condition.unlock()
        waiting?.resume()
        return true
    }
}

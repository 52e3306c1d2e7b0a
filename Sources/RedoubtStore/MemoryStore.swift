import Foundation

/// An `ObjectStore` in memory, for tests of everything above the store: the same contract
/// as `LocalStore` and `S3Store` (the conformance suite runs against all three), with
/// retention locks and legal holds, and no disk, xattrs or network. Locks are judged at the
/// `now` each call is given, as LocalStore does; `clock` is what the store reports as its
/// own time (`StoreClock.now`) and decides nothing else. `faults` makes chosen operations
/// fail, as a disk or a remote store would, so that callers' error paths can be tested.
public actor MemoryStore: ObjectStore, LegalHoldStore, ImmutabilityReporting {
    /// An operation a fault can be injected into.
    public enum Operation: String, Sendable, CaseIterable {
        case put, get, head, list, delete, extendRetention, setLegalHold
    }

    /// When to fail: `operation` on keys starting with `prefix`, the next `times` calls
    /// (nil: every call), with `error`.
    public struct Fault: Sendable {
        public var operation: Operation
        public var prefix: String
        public var times: Int?
        public var error: StoreError.Code
        public init(_ operation: Operation, prefix: String = "", times: Int? = nil, error: StoreError.Code = .io) {
            self.operation = operation
            self.prefix = prefix
            self.times = times
            self.error = error
        }
    }

    struct Object {
        var key: ObjectKey
        var bytes: [UInt8]
        var retainUntil: Date?
        var legalHold = false
    }

    private var objects: [String: Object] = [:]
    private var faults: [Fault] = []
    private let clock: @Sendable () -> Date

    /// An empty store. `clock` is its own time (a manual clock in tests); it decides no lock.
    public init(clock: @escaping @Sendable () -> Date = { Date() }) {
        self.clock = clock
    }

    /// The store's own time.
    public func now() -> Date { clock() }

    /// Makes operations fail from now on (see `Fault`).
    public func inject(_ fault: Fault) { faults.append(fault) }

    /// Removes every injected fault.
    public func clearFaults() { faults.removeAll() }

    /// Keys of every object, sorted: for tests that look at what was written.
    public var keys: [String] { objects.keys.sorted() }

    /// Why nil: a memory store enforces its locks itself, against every caller.
    public nonisolated var immutabilityWarning: String? { nil }

    private func check(_ op: Operation, _ key: String) throws {
        guard let i = faults.firstIndex(where: { $0.operation == op && key.hasPrefix($0.prefix) }) else { return }
        let f = faults[i]
        if let t = f.times {
            if t <= 1 { faults.remove(at: i) } else { faults[i].times = t - 1 }
        }
        throw StoreError(f.error, key: key, "injected \(op.rawValue) fault")
    }

    /// Lock dates are kept in whole seconds, as every real store records them.
    private static func whole(_ d: Date?) -> Date? {
        d.map { Date(timeIntervalSince1970: $0.timeIntervalSince1970.rounded(.up)) }
    }

    public func put(_ key: ObjectKey, _ data: [UInt8], retainUntil: Date?) async throws -> PutResult {
        try check(.put, key.path)
        if let o = objects[key.path] {
            guard o.bytes == data else {
                throw StoreError(.conflict, key: key.path,
                    "an object with other bytes exists under this key; objects are never overwritten")
            }
            return .alreadyPresent
        }
        // A directory store cannot hold a key that is also another key's directory; nor does this.
        let asDir = key.path + "/"
        if objects.keys.contains(where: { $0.hasPrefix(asDir) || key.path.hasPrefix($0 + "/") }) {
            throw StoreError(.io, key: key.path, "another object's name is a directory of this key (or the reverse)")
        }
        objects[key.path] = Object(key: key, bytes: data, retainUntil: Self.whole(retainUntil))
        return .created
    }

    public func get(_ key: ObjectKey, range: Range<Int>?) async throws -> [UInt8] {
        try check(.get, key.path)
        guard let o = objects[key.path] else { throw StoreError(.notFound, key: key.path, "no such object") }
        guard let range else { return o.bytes }
        guard range.lowerBound >= 0, range.upperBound <= o.bytes.count else {
            throw StoreError(.badRange, key: key.path, "range \(range) is outside the object's \(o.bytes.count) bytes")
        }
        return Array(o.bytes[range])
    }

    public func head(_ key: ObjectKey) async throws -> ObjectInfo? {
        try check(.head, key.path)
        return objects[key.path].map(Self.info)
    }

    public func list(prefix: String) async throws -> [ObjectInfo] {
        try check(.list, prefix)
        return objects.filter { $0.key.hasPrefix(prefix) }.sorted { $0.key < $1.key }.map { Self.info($0.value) }
    }

    public func delete(_ key: ObjectKey, now: Date) async throws {
        try check(.delete, key.path)
        guard let o = objects[key.path] else { throw StoreError(.notFound, key: key.path, "no such object") }
        if o.legalHold { throw StoreError(.locked, key: key.path, "the object is under a legal hold") }
        if let until = o.retainUntil, now < until {
            throw StoreError(.locked, key: key.path, "the object is locked until \(until)")
        }
        objects[key.path] = nil
    }

    public func extendRetention(_ key: ObjectKey, until: Date) async throws {
        try check(.extendRetention, key.path)
        guard var o = objects[key.path] else { throw StoreError(.notFound, key: key.path, "no such object") }
        // Only ever later: an earlier date is a no-op.
        let u = Self.whole(until)
        if let current = o.retainUntil, let u, u <= current { return }
        o.retainUntil = u
        objects[key.path] = o
    }

    public func setLegalHold(_ key: ObjectKey, on: Bool) async throws {
        try check(.setLegalHold, key.path)
        guard var o = objects[key.path] else { throw StoreError(.notFound, key: key.path, "no such object") }
        o.legalHold = on
        objects[key.path] = o
    }

    public func legalHold(_ key: ObjectKey) async throws -> Bool? {
        objects[key.path]?.legalHold
    }

    private static func info(_ o: Object) -> ObjectInfo {
        ObjectInfo(key: o.key, size: o.bytes.count, retainUntil: o.retainUntil, enforced: true)
    }
}

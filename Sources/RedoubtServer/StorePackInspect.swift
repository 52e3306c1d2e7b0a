import Dispatch
import Foundation
import RedoubtCore
import RedoubtStore

// The scrub checks a stored pack by range, with the same code that checks an upload
// (`PackReader.inspect(size:expectedID:read:)`), so a pack of any size costs the server its
// public list plus one piece of memory, never the whole pack. That check reads through a
// synchronous closure; the store reads asynchronously. The check therefore runs on a thread
// of its own, outside Swift's cooperative pool, and each range it asks for is fetched by a
// task while that thread alone waits: the pool is never blocked, so the wait cannot starve it.

/// What checking one stored pack found.
enum StoredPackCheck {
    case ok(bytes: Int)
    /// The store has no such object.
    case missing
    /// The bytes are wrong (hash, structure, a short read the store reported).
    case damaged(String)
}

extension RepositoryService {
    /// Checks the stored pack `id` of `tenant` by range, as at upload. A store failure other
    /// than a missing object or an integrity error is thrown (the job is retried), never a finding.
    func checkStoredPack(tenant: String, id: PackID) async throws -> StoredPackCheck {
        let key = Self.packKey(tenant: tenant, id: id)
        guard let info = try await store.head(key) else { return .missing }
        let reader = StoreRangeReader(store: store, key: key)
        let size = info.size
        let result: Result<PackSummary, CoreError> = await withCheckedContinuation { cont in
            let thread = Thread {
                do throws(CoreError) {
                    cont.resume(returning: .success(try PackReader.inspect(size: size, expectedID: id,
                                                                           read: reader.read)))
                } catch { cont.resume(returning: .failure(error)) }
            }
            thread.name = "redoubt-scrub"
            thread.start()
        }
        if let failure = reader.failure {
            if let e = failure as? StoreError {
                if e.code == .notFound { return .missing }
                // A range outside the object: it changed size under the check.
                if e.code == .integrity || e.code == .badRange { return .damaged(e.detail) }
            }
            throw failure
        }
        switch result {
        case .success: return .ok(bytes: size)
        case .failure(let error): return .damaged(error.detail)
        }
    }
}

/// Ranges of one stored object for `PackReader.inspect(size:expectedID:read:)`, called from
/// the checking thread only. A store failure is kept aside, so that it is told apart from
/// a damaged pack.
final class StoreRangeReader: @unchecked Sendable {
    let store: any ObjectStore
    let key: ObjectKey
    /// The store's error, if a read failed (set on the checking thread, read after it ended).
    private(set) var failure: (any Error)?

    init(store: any ObjectStore, key: ObjectKey) {
        self.store = store
        self.key = key
    }

    func read(_ range: Range<Int>) throws(CoreError) -> [UInt8] {
        final class Slot: @unchecked Sendable { var result: Result<[UInt8], any Error> = .success([]) }
        let slot = Slot()
        let done = DispatchSemaphore(value: 0)
        let (store, key) = (store, key)
        Task {
            do { slot.result = .success(try await store.get(key, range: range)) } catch {
                slot.result = .failure(error)
            }
            done.signal()
        }
        done.wait()
        switch slot.result {
        case .success(let bytes) where bytes.count == range.count:
            return bytes
        case .success(let bytes):
            failure = StoreError(.integrity, key: key.path,
                                 "read \(bytes.count) bytes of range \(range) of \(range.count): the object is short")
            throw CoreError(.missing, object: key.path, "short read")
        case .failure(let error):
            failure = error
            throw CoreError(.missing, object: key.path, "\(error)")
        }
    }
}

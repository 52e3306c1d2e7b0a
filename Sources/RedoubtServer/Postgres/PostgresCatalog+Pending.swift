import Foundation
import RedoubtCore

// Repositories the PostgreSQL catalog does not implement yet. Each method refuses with an
// error that names it, never an empty answer: a server on this catalog must not mistake
// "not written yet" for "nothing there". `server init` does not offer this catalog while any
// method here is left.

extension PostgresCatalog: ScrubRepository {
    public func scrubSlice(tenant: String, now: Date, period: TimeInterval,
            interval: TimeInterval) async throws -> [(id: String, size: Int64)] {
        throw PostgresCatalogError.notImplemented("ScrubRepository.scrubSlice")
    }
    public func recordScrub(tenant: String, pack: String, result: String, at: Date) async throws {
        throw PostgresCatalogError.notImplemented("ScrubRepository.recordScrub")
    }
}

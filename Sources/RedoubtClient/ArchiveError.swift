import Glibc
import RedoubtCore

/// The error of the client's filesystem side (backup walk, metadata cache, restore).
///
/// `code` is stable; `object` names the path or snapshot being processed; `detail` says
/// what went wrong and, where there is one, the fix. Integrity failures of stored data
/// are not wrapped: they arrive as `CoreError`, which already names the pack, chunk or
/// tree that holds them.
public struct ArchiveError: Error, Sendable, CustomStringConvertible {
    /// Stable error codes. Raw values never change meaning.
    public enum Code: String, Sendable, Equatable {
        /// A system call on a local file failed (`errno` is in `errno`).
        case io = "E_IO"
        /// A path to back up or a subpath to restore does not exist.
        case notFound = "E_NOT_FOUND"
        /// Restoring an entry would write outside the restore target, or replace a
        /// directory that is in the way.
        case unsafePath = "E_UNSAFE_PATH"
        /// The caller passed something unusable (no paths, a bad pattern).
        case invalidArgument = "E_ARGUMENT"
        /// The snapshot refers to something it does not contain (a hard link to a
        /// missing file, a chunk in no listed pack).
        case inconsistentSnapshot = "E_SNAPSHOT"
    }

    public let code: Code
    /// What was being processed: a path (printable), a snapshot ID.
    public let object: String
    /// What is wrong, and the fix where there is one.
    public let detail: String
    /// The `errno` of a failed system call, or 0.
    public let errno: Int32

    public init(_ code: Code, object: String, _ detail: String, errno: Int32 = 0) {
        self.code = code
        self.object = object
        self.detail = detail
        self.errno = errno
    }

    /// An `.io` error for a failed call, with the system's message.
    static func system(_ call: String, object: String, errno e: Int32) -> ArchiveError {
        ArchiveError(.io, object: object, "\(call) failed: \(ArchiveSys.describe(errno: e))", errno: e)
    }

    public var description: String { "\(object): \(detail) [\(code.rawValue)]" }
}

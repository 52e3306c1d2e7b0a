import Foundation
import Hummingbird
import NIOCore
import RedoubtCore

/// Where pack bodies wait, as files, while they are checked and stored
/// (docs/PROTOCOL.md §3.2.1): `<home>/uploads`, on the same filesystem as the local store.
/// A body is held as a file, never as one array, so an upload costs the server a bounded
/// amount of memory whatever its size.
struct UploadSpool: Sendable {
    let directory: URL

    /// The spool directory, created private, emptied of the files a crash left behind.
    static func open(_ directory: URL) throws -> UploadSpool {
        let fm = FileManager.default
        try fm.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        for name in try fm.contentsOfDirectory(atPath: directory.path) where name.hasPrefix("upload-") {
            try? fm.removeItem(at: directory.appendingPathComponent(name))
        }
        return UploadSpool(directory: directory)
    }

    /// Writes the request's body to a new file, with the same limit and rate floor as
    /// `Request.bytes(limit:)`, and runs `body` on it; the file's name in the spool is removed
    /// whatever happens (refusal, error, success, a client that goes away mid-body). On
    /// success the file itself may live on as the stored object: `body` may hand it to the
    /// store with `put(_:movingFile:retainUntil:)`.
    func receive<T>(_ request: Request, limit: Int, _ body: (URL, Int) async throws -> T) async throws -> T {
        let url = directory.appendingPathComponent("upload-\(UUID().uuidString.lowercased())")
        let fd = Glibc.open(url.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            throw ServerError(500, "E_IO",
                "cannot create upload file \(url.path): \(String(cString: strerror(errno))); "
                              + "check that the server's data directory is writable and not full")
        }
        defer { unlink(url.path) }
        var isOpen = true
        defer { if isOpen { close(fd) } }
        let declared = request.headers[.contentLength].flatMap { Int($0) }
        if let declared, declared > limit { throw NIOTooManyBytesError(maxBytes: limit) }
        let floor = BodyRateFloor.current
        var meter = floor?.meter()
        var received = 0
        for try await part in request.body {
            guard part.readableBytes <= limit - received else { throw NIOTooManyBytesError(maxBytes: limit) }
            try part.withUnsafeReadableBytes { raw in
                var done = 0
                while done < raw.count {
                    let n = write(fd, raw.baseAddress! + done, raw.count - done)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw ServerError(500, "E_IO",
                            "cannot write upload file \(url.path): \(String(cString: strerror(errno))); "
                                          + "check free space in the server's data directory")
                    }
                    done += n
                }
            }
            received += part.readableBytes
            if let floor, let rate = meter?.add(part.readableBytes, now: BodyRateFloor.now(),
                                                completes: received == declared) {
                throw floor.cut(rate: rate, received: received)
            }
        }
        close(fd)
        isOpen = false
        return try await body(url, received)
    }
}

/// Reads ranges of a spooled pack for ``PackReader/inspect(size:expectedID:read:)``; an I/O
/// failure is kept aside so that it is reported as the server's fault, not the pack's.
final class SpooledPackReader {
    let fd: Int32
    let url: URL
    private(set) var failure: ServerError?

    init(_ url: URL) throws {
        fd = Glibc.open(url.path, O_RDONLY | O_CLOEXEC)
        self.url = url
        guard fd >= 0 else {
            throw ServerError(500, "E_IO", "cannot open upload file \(url.path): \(String(cString: strerror(errno)))")
        }
    }

    deinit { close(fd) }

    func read(_ range: Range<Int>) throws(CoreError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: range.count)
        var done = 0
        while done < range.count {
            let n = out.withUnsafeMutableBytes {
                pread(fd, $0.baseAddress! + done, range.count - done, off_t(range.lowerBound + done))
            }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let why = n < 0 ? String(cString: strerror(errno)) : "file shorter than expected"
                failure = ServerError(500, "E_IO", "cannot read upload file \(url.path): \(why)")
                throw CoreError(.missing, object: "upload file", why)
            }
            done += n
        }
        return out
    }
}

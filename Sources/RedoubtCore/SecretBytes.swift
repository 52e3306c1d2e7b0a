#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Secret key bytes in one heap allocation that is zeroed when released.
///
/// Swift arrays may be copied by the runtime where we cannot zero them, so secrets live
/// here instead, and are handed to crypto APIs through `withUnsafeBytes`. Never prints
/// its contents.
public final class SecretBytes: @unchecked Sendable, CustomStringConvertible {
    // Why @unchecked: the buffer is written once in init and only read afterwards.
    private let buffer: UnsafeMutableRawBufferPointer

    /// Copies `bytes` into a fresh zero-on-free allocation.
    public init<C: Collection>(copying bytes: C) where C.Element == UInt8 {
        buffer = .allocate(byteCount: max(bytes.count, 1), alignment: 16)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        UnsafeMutableRawBufferPointer(rebasing: buffer[0..<bytes.count]).copyBytes(from: bytes)
        count = bytes.count
    }

    /// The number of secret bytes.
    public let count: Int

    /// Calls `body` with the secret bytes; do not let them escape.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
    }

    /// Constant-time comparison.
    public func equals(_ other: SecretBytes) -> Bool {
        guard count == other.count else { return false }
        return withUnsafeBytes { a in
            other.withUnsafeBytes { b in
                var diff: UInt8 = 0
                for i in 0..<count { diff |= a[i] ^ b[i] }
                return diff == 0
            }
        }
    }

    deinit {
        #if canImport(Glibc)
        explicit_bzero(buffer.baseAddress!, buffer.count)
        #else
        memset_s(buffer.baseAddress!, buffer.count, 0, buffer.count)
        #endif
        buffer.deallocate()
    }

    public var description: String { "SecretBytes(\(count) bytes, redacted)" }
}

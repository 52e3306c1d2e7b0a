/// The one public error of RedoubtCore.
///
/// `code` is stable and documented in docs/FORMAT.md §9; `object` names what was being
/// read (a pack ID, a snapshot ID, a tree chunk); `detail` says what is wrong and, where
/// there is one, the fix. Integrity failures (`.corrupt`, `.authenticationFailed`,
/// `.wrongTenant`, `.badSignature`) must never be retried and must reach the user.
public struct CoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Stable error codes. Raw values never change meaning.
    public enum Code: String, Sendable, Equatable {
        /// Bytes do not parse as the format they claim to be (truncated, bad magic, bad length).
        case corrupt = "E_CORRUPT"
        /// An AEAD tag, HMAC or hash did not verify: the bytes were modified or moved.
        case authenticationFailed = "E_AUTH"
        /// The object is sealed to a different tenant's read key.
        case wrongTenant = "E_WRONG_TENANT"
        /// A manifest's signature does not verify, or names another tenant or host.
        case badSignature = "E_SIGNATURE"
        /// A format version this build cannot read.
        case unsupportedVersion = "E_VERSION"
        /// A caller asked for something the format forbids (too many chunks, oversize chunk).
        case limitExceeded = "E_LIMIT"
        /// Key material is malformed or cannot be unwrapped.
        case badKey = "E_KEY"
        /// Compression library failure.
        case compression = "E_COMPRESSION"
        /// A referenced chunk or object is not present.
        case missing = "E_MISSING"
        /// Local storage the caller gave failed (a pack's spill file: disk full, I/O error).
        case io = "E_IO"
    }

    public let code: Code
    /// What was being processed, e.g. `pack 3fa1…` or `tree chunk 9c2e…`.
    public let object: String
    /// What is wrong, and the fix where there is one.
    public let detail: String

    public init(_ code: Code, object: String, _ detail: String) {
        self.code = code
        self.object = object
        self.detail = detail
    }

    public var description: String { "\(object): \(detail) [\(code.rawValue)]" }

    /// True for errors that mean stored bytes cannot be trusted.
    public var isIntegrityFailure: Bool {
        switch code {
        case .corrupt, .authenticationFailed, .wrongTenant, .badSignature, .missing: true
        default: false
        }
    }
}

extension ByteReader.Failure {
    /// Wraps a parse failure as a `.corrupt` error naming `object`.
    func corrupt(_ object: String, _ what: String) -> CoreError {
        CoreError(.corrupt, object: object, "\(what): \(self)")
    }
}

/// Runs `body`, which only throws CoreError in fact but goes through a `rethrows` API
/// (such as `Array.withUnsafeBytes`) that erases the type.
@inline(__always)
func narrow<R>(_ body: () throws -> R) throws(CoreError) -> R {
    do { return try body() } catch let e as CoreError { throw e } catch {
        throw CoreError(.corrupt, object: "internal", "unexpected error \(error)")
    }
}

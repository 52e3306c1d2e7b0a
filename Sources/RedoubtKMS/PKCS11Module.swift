import CP11Kit
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One loaded PKCS#11 module (a shared library), initialized once per process.
///
/// Modules are `dlopen`ed on first use and cached by path; they are never unloaded or
/// finalized, because other code in the process may hold sessions. Every call into the
/// module goes through ``serialized(_:)``: one operation at a time per module, so that a
/// login, the work and the logout of one operation never interleave with another's.
final class PKCS11Module: @unchecked Sendable {
    // @unchecked: `functions` is written once in init; all calls hold `callLock`.
    let path: String
    let functions: UnsafeMutablePointer<CK_FUNCTION_LIST>
    private let callLock = Mutex(())

    private static let loaded = Mutex<[String: PKCS11Module]>([:])

    private init(path: String, functions: UnsafeMutablePointer<CK_FUNCTION_LIST>) {
        self.path = path
        self.functions = functions
    }

    /// The module at `path`, loaded and initialized on first use. A failed load is not
    /// cached, so fixing the module or its configuration and retrying works.
    static func load(_ path: String, provider: String) throws(KeyProviderError) -> PKCS11Module {
        let result: Result<PKCS11Module, KeyProviderError> = loaded.withLock { modules in
            if let m = modules[path] { return .success(m) }
            do throws(KeyProviderError) {
                let m = try open(path, provider: provider)
                modules[path] = m
                return .success(m)
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    private static func open(_ path: String, provider: String) throws(KeyProviderError) -> PKCS11Module {
        guard path.hasPrefix("/") else {
            throw .unsupported(provider: provider,
                detail: "PKCS#11 module-path \(path) is relative: give the module's absolute path")
        }
        guard FileManager.default.fileExists(atPath: path) else {
            throw .unreachable(provider: provider,
                detail: """
                    PKCS#11 module \(path) does not exist: install the HSM's PKCS#11 library or correct module-path=
                    """)
        }
        // Load the resolved file that was checked, not a symlink that could be re-pointed.
        let real = try checkTrusted(path, provider: provider)
        guard let handle = dlopen(real, RTLD_NOW | RTLD_LOCAL) else {
            let why = dlerror().map { String(cString: $0) } ?? "unknown error"
            throw .unreachable(provider: provider, detail: "cannot load PKCS#11 module \(path): \(why)")
        }
        guard let symbol = dlsym(handle, "C_GetFunctionList") else {
            dlclose(handle)
            throw .unreachable(provider: provider, detail: "\(path) is not a PKCS#11 module (no C_GetFunctionList)")
        }
        let getFunctionList = unsafeBitCast(symbol, to: CK_C_GetFunctionList.self)
        var list: UnsafeMutablePointer<CK_FUNCTION_LIST>?
        let rv = getFunctionList(&list)
        guard rv == CKR_OK, let list, let initialize = list.pointee.C_Initialize else {
            throw .unreachable(provider: provider,
                detail: "PKCS#11 module \(path): C_GetFunctionList returned \(PKCS11Module.name(rv))")
        }
        // OS locking: the module may be used from several threads (we also serialize).
        var args = CK_C_INITIALIZE_ARGS()
        args.flags = CKF_OS_LOCKING_OK
        let initRV = initialize(&args)
        // Already initialized by other code in this process: that is fine, use it.
        guard initRV == CKR_OK || initRV == CKR_CRYPTOKI_ALREADY_INITIALIZED else {
            throw .unreachable(provider: provider,
                detail: """
                    PKCS#11 module \(path) failed to initialize (C_Initialize: \(PKCS11Module.name(initRV))); check \
                    its configuration (for SoftHSM2, SOFTHSM2_CONF and its tokendir)
                    """)
        }
        return PKCS11Module(path: path, functions: list)
    }

    /// Refuses a module that someone other than root or this user could have replaced.
    ///
    /// Why: loading a module runs its code in the process that is about to unwrap the read
    /// key, and at restore the URI comes with the wrapped key from the server. A module
    /// path is only accepted when it is absolute and the file and every directory above it
    /// are owned by root or this user and writable by no one else (as sudo and sshd check).
    /// Returns the module's resolved path.
    static func checkTrusted(_ path: String, provider: String) throws(KeyProviderError) -> String {
        guard let resolved = realpath(path, nil) else {
            throw .unreachable(provider: provider,
                detail: "PKCS#11 module \(path) cannot be resolved: \(String(cString: strerror(errno)))")
        }
        let real = String(cString: resolved)
        free(resolved)
        let me = geteuid()
        var current = real
        var isFile = true
        while true {
            var st = stat()
            guard stat(current, &st) == 0 else {
                throw .unreachable(provider: provider,
                    detail: "cannot inspect \(current) for PKCS#11 module \(path): \(String(cString: strerror(errno)))")
            }
            if isFile, (st.st_mode & S_IFMT) != S_IFREG {
                throw .unsupported(provider: provider, detail: "PKCS#11 module \(path) is not a regular file")
            }
            guard st.st_uid == 0 || st.st_uid == me, st.st_mode & (S_IWGRP | S_IWOTH) == 0 else {
                throw .unsupported(provider: provider,
                    detail: """
                        refusing to load PKCS#11 module \(path): \(current) is owned by uid \(st.st_uid) or writable \
                        by group or others; install the module where only root can change it
                        """)
            }
            if current == "/" { return real }
            isFile = false
            current = (current as NSString).deletingLastPathComponent
            if current.isEmpty { current = "/" }
        }
    }

    /// Runs `body` while holding this module's call lock.
    func serialized<T>(_ body: () throws(KeyProviderError) -> T) throws(KeyProviderError) -> T {
        let r: Result<T, KeyProviderError> = callLock.withLock { _ in
            do throws(KeyProviderError) { return .success(try body()) } catch { return .failure(error) }
        }
        return try r.get()
    }

    /// A readable name for a PKCS#11 return value: `CKR_PIN_INCORRECT (0xa0)`.
    static func name(_ rv: CK_RV) -> String {
        let hex = "0x" + String(rv, radix: 16)
        return names[rv].map { "\($0) (\(hex))" } ?? "CKR \(hex)"
    }

    static let names: [CK_RV: String] = [
        CKR_OK: "CKR_OK", CKR_CANCEL: "CKR_CANCEL", CKR_HOST_MEMORY: "CKR_HOST_MEMORY",
        CKR_SLOT_ID_INVALID: "CKR_SLOT_ID_INVALID", CKR_GENERAL_ERROR: "CKR_GENERAL_ERROR",
        CKR_FUNCTION_FAILED: "CKR_FUNCTION_FAILED", CKR_ARGUMENTS_BAD: "CKR_ARGUMENTS_BAD",
        CKR_ATTRIBUTE_SENSITIVE: "CKR_ATTRIBUTE_SENSITIVE", CKR_ATTRIBUTE_TYPE_INVALID: "CKR_ATTRIBUTE_TYPE_INVALID",
        CKR_ATTRIBUTE_VALUE_INVALID: "CKR_ATTRIBUTE_VALUE_INVALID", CKR_DATA_INVALID: "CKR_DATA_INVALID",
        CKR_DATA_LEN_RANGE: "CKR_DATA_LEN_RANGE", CKR_DEVICE_ERROR: "CKR_DEVICE_ERROR",
        CKR_DEVICE_MEMORY: "CKR_DEVICE_MEMORY", CKR_DEVICE_REMOVED: "CKR_DEVICE_REMOVED",
        CKR_ENCRYPTED_DATA_INVALID: "CKR_ENCRYPTED_DATA_INVALID",
            CKR_ENCRYPTED_DATA_LEN_RANGE: "CKR_ENCRYPTED_DATA_LEN_RANGE",
        CKR_FUNCTION_NOT_SUPPORTED: "CKR_FUNCTION_NOT_SUPPORTED", CKR_KEY_HANDLE_INVALID: "CKR_KEY_HANDLE_INVALID",
        CKR_KEY_SIZE_RANGE: "CKR_KEY_SIZE_RANGE", CKR_KEY_TYPE_INCONSISTENT: "CKR_KEY_TYPE_INCONSISTENT",
        CKR_KEY_FUNCTION_NOT_PERMITTED: "CKR_KEY_FUNCTION_NOT_PERMITTED",
            CKR_MECHANISM_INVALID: "CKR_MECHANISM_INVALID",
        CKR_MECHANISM_PARAM_INVALID: "CKR_MECHANISM_PARAM_INVALID",
            CKR_OBJECT_HANDLE_INVALID: "CKR_OBJECT_HANDLE_INVALID",
        CKR_OPERATION_ACTIVE: "CKR_OPERATION_ACTIVE", CKR_OPERATION_NOT_INITIALIZED: "CKR_OPERATION_NOT_INITIALIZED",
        CKR_PIN_INCORRECT: "CKR_PIN_INCORRECT", CKR_PIN_INVALID: "CKR_PIN_INVALID",
            CKR_PIN_LEN_RANGE: "CKR_PIN_LEN_RANGE",
        CKR_PIN_EXPIRED: "CKR_PIN_EXPIRED", CKR_PIN_LOCKED: "CKR_PIN_LOCKED", CKR_SESSION_CLOSED: "CKR_SESSION_CLOSED",
        CKR_SESSION_COUNT: "CKR_SESSION_COUNT", CKR_SESSION_HANDLE_INVALID: "CKR_SESSION_HANDLE_INVALID",
        CKR_SESSION_READ_ONLY: "CKR_SESSION_READ_ONLY", CKR_TEMPLATE_INCOMPLETE: "CKR_TEMPLATE_INCOMPLETE",
        CKR_TEMPLATE_INCONSISTENT: "CKR_TEMPLATE_INCONSISTENT", CKR_TOKEN_NOT_PRESENT: "CKR_TOKEN_NOT_PRESENT",
        CKR_TOKEN_NOT_RECOGNIZED: "CKR_TOKEN_NOT_RECOGNIZED", CKR_TOKEN_WRITE_PROTECTED: "CKR_TOKEN_WRITE_PROTECTED",
        CKR_USER_ALREADY_LOGGED_IN: "CKR_USER_ALREADY_LOGGED_IN", CKR_USER_NOT_LOGGED_IN: "CKR_USER_NOT_LOGGED_IN",
        CKR_USER_PIN_NOT_INITIALIZED: "CKR_USER_PIN_NOT_INITIALIZED", CKR_USER_TYPE_INVALID: "CKR_USER_TYPE_INVALID",
        CKR_BUFFER_TOO_SMALL: "CKR_BUFFER_TOO_SMALL", CKR_CRYPTOKI_NOT_INITIALIZED: "CKR_CRYPTOKI_NOT_INITIALIZED",
        CKR_CRYPTOKI_ALREADY_INITIALIZED: "CKR_CRYPTOKI_ALREADY_INITIALIZED",
    ]
}

/// An attribute template whose values live as long as the template.
final class PKCS11Template {
    private(set) var attributes: [CK_ATTRIBUTE] = []
    private var buffers: [UnsafeMutableRawBufferPointer] = []

    init() {}

    deinit {
        for b in buffers {
            b.initializeMemory(as: UInt8.self, repeating: 0)
            b.deallocate()
        }
    }

    @discardableResult
    func bytes(_ type: CK_ATTRIBUTE_TYPE, _ value: [UInt8]) -> PKCS11Template {
        let b = UnsafeMutableRawBufferPointer.allocate(byteCount: max(value.count, 1), alignment: 8)
        b.initializeMemory(as: UInt8.self, repeating: 0)
        value.withUnsafeBytes { b.copyMemory(from: $0) }
        buffers.append(b)
        attributes.append(CK_ATTRIBUTE(type: type, pValue: b.baseAddress, ulValueLen: CK_ULONG(value.count)))
        return self
    }

    @discardableResult
    func bool(_ type: CK_ATTRIBUTE_TYPE, _ value: Bool) -> PKCS11Template {
        bytes(type, [value ? UInt8(CK_TRUE) : UInt8(CK_FALSE)])
    }

    @discardableResult
    func ulong(_ type: CK_ATTRIBUTE_TYPE, _ value: CK_ULONG) -> PKCS11Template {
        bytes(type, withUnsafeBytes(of: value) { Array($0) })
    }

    /// Room for the module to write an attribute of up to `capacity` bytes.
    @discardableResult
    func slot(_ type: CK_ATTRIBUTE_TYPE, capacity: Int) -> PKCS11Template {
        bytes(type, [UInt8](repeating: 0, count: capacity))
    }

    /// The bytes the module wrote into attribute `index`, or nil when it said unavailable.
    func value(at index: Int) -> [UInt8]? {
        let a = attributes[index]
        // CK_UNAVAILABLE_INFORMATION (~0): sensitive, unknown or too long for the slot.
        guard a.ulValueLen != CK_ULONG.max, let p = a.pValue, Int(a.ulValueLen) <= buffers[index].count else {
            return nil
        }
        return Array(UnsafeRawBufferPointer(start: p, count: Int(a.ulValueLen)))
    }

    func with<T>(_ body: (UnsafeMutablePointer<CK_ATTRIBUTE>?, CK_ULONG) -> T) -> T {
        let n = CK_ULONG(attributes.count)
        return attributes.withUnsafeMutableBufferPointer { body($0.baseAddress, n) }
    }
}

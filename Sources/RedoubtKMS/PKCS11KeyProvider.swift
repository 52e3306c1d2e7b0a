import CP11Kit
import Crypto
import Foundation
import NIOPosix
import RedoubtCore

/// Wraps the read key with a non-extractable AES-256 key on a PKCS#11 token (an HSM, a
/// smart card, SoftHSM2): the token's own `CKM_AES_GCM` with the key context as associated
/// data, so the KEK never leaves the token.
///
/// URI (RFC 7512): `pkcs11:token=LABEL;object=LABEL?module-path=FILE&pin-source=FILE`. The
/// module is loaded with `dlopen`; the user PIN comes from the `pin-source` file or from
/// `REDOUBT_PKCS11_PIN`, is never printed, and its buffer is zeroed after login. At tenant
/// creation ``preparingKEK(tenant:)`` generates the key when the token has none with that
/// label, or adopts an operator-provisioned one (which must be AES-256, and sensitive and
/// non-extractable since it was made); the provider it returns pins the key's CKA_ID in its URI.
public struct PKCS11KeyProvider: KeyProvider {
    public let target: PKCS11URI

    public var uri: String { target.description }

    public init(target: PKCS11URI) {
        self.target = target
    }

    /// Parses a `pkcs11:` URI.
    public init(uri: String) throws(KeyProviderError) {
        guard isWellFormedProviderURI(uri) else {
            throw .malformed("\(uri.debugDescription): not a well-formed pkcs11: URI (printable ASCII, no '#')")
        }
        self.init(target: try PKCS11URI(parsing: uri))
    }

    // MARK: KeyProvider

    /// Creates the KEK on the token if no AES key carries the URI's object label, else
    /// adopts the one that does; returns a provider whose URI pins its CKA_ID.
    public func preparingKEK(tenant: String) async throws -> any KeyProvider {
        let id: [UInt8] = try await offloaded { s throws(KeyProviderError) in
            if let key = try s.findKey(label: target.object, id: target.id, required: false) {
                return try s.checkedKEK(key, label: target.object).id
            }
            // Why a random CKA_ID: a key later created under the same label (after a
            // shred) is a different key, and old wrapped copies must not find it. Its first
            // half names the tenant, for ``checkKEKOwner(of:tenant:)``.
            let id = target.id ?? Self.kekID(tenant: tenant)
            _ = try s.generateAES256(label: target.object, id: id, extractable: false)
            return id
        }
        var pinned = target
        pinned.id = id
        return PKCS11KeyProvider(target: pinned)
    }

    public func wrap(_ key: ReadPrivateKey, context: KeyContext) async throws -> WrappedReadKey {
        let nonce = Array(AES.GCM.Nonce())
        let seed = key.exportSeed()
        let aad = context.associatedData
        let (sealed, id): ([UInt8], [UInt8]) = try await offloaded { s throws(KeyProviderError) in
            guard let handle = try s.findKey(label: target.object, id: target.id, required: true) else {
                throw s.destroyed(label: target.object, id: target.id)
            }
            // Why: wrapping under an extractable or short key would give less than the
            // URI promises; refuse rather than wrap.
            let kek = try s.checkedKEK(handle, label: target.object)
            let sealed = try s.gcm(encrypt: true, key: handle, nonce: nonce, aad: aad, input: seed)
            return (sealed.withUnsafeBytes { Array($0) }, kek.id)
        }
        var parameters = [
            "pkcs11-token": target.token, "pkcs11-object": target.object,
            "algorithm": "AES-256-GCM", "nonce": Data(nonce).base64EncodedString(),
        ]
        if !id.isEmpty { parameters["pkcs11-id"] = id.map { String(format: "%02x", $0) }.joined() }
        return WrappedReadKey(provider: uri, context: context, publicKey: key.publicKey, parameters: parameters,
            wrapped: sealed)
    }

    public func unwrap(_ wrapped: WrappedReadKey, context: KeyContext) async throws -> ReadPrivateKey {
        try checkContext(wrapped, context)
        guard let nonceText = wrapped.parameters["nonce"], let nonce = Data(base64Encoded: nonceText),
            nonce.count == 12 else {
            throw KeyProviderError.malformed("PKCS#11-wrapped key has no 12-byte nonce")
        }
        let sealed = try wrapped.wrappedBytes()
        guard sealed.count == 32 + 16 else {
            throw KeyProviderError.malformed("""
                PKCS#11-wrapped key is \(sealed.count) bytes, not a 32-byte seed and a 16-byte tag
                """)
        }
        let (label, id) = try kek(of: wrapped)
        let aad = context.associatedData
        let nonceBytes = Array(nonce)
        let seed: SecretBytes = try await offloaded { s throws(KeyProviderError) in
            guard let handle = try s.findKey(label: label, id: id, required: true) else {
                throw s.destroyed(label: label, id: id)
            }
            return try s.gcm(encrypt: false, key: handle, nonce: nonceBytes, aad: aad,
                input: SecretBytes(copying: sealed))
        }
        guard seed.count == 32 else { throw KeyProviderError.keyMismatch(provider: uri, readKeyID: wrapped.readKeyID) }
        let key = try ReadPrivateKey(seed: seed)
        return try checkUnwrapped(key, wrapped)
    }

    /// The CKA_ID of a KEK Redoubt generates for `tenant`: eight bytes that name the tenant
    /// (SHA-256 of `redoubt-kek-tenant`, a zero byte and the name), then eight random ones.
    static func kekID(tenant: String) -> [UInt8] {
        tenantTag(tenant) + (0..<8).map { _ in UInt8.random(in: 0...255) }
    }

    static func tenantTag(_ tenant: String) -> [UInt8] {
        Array(SHA256.hash(data: Array("redoubt-kek-tenant".utf8) + [0] + Array(tenant.utf8)).prefix(8))
    }

    /// Checks the KEK's CKA_ID on the token: a KEK Redoubt generated names its tenant there
    /// (``kekID(tenant:)``); labels are the operator's and prove nothing.
    public func checkKEKOwner(of wrapped: WrappedReadKey, tenant: String) async throws {
        let (label, id) = try kek(of: wrapped)
        let actual: [UInt8]? = try await offloaded { s throws(KeyProviderError) in
            guard let handle = try s.findKey(label: label, id: id, required: false) else { return nil }
            return try s.facts(handle).id
        }
        guard let actual else { return }
        guard actual.count == 16, Array(actual.prefix(8)) == Self.tenantTag(tenant) else {
            throw KeyProviderError.foreignKEK(provider: uri,
                detail: "the key labelled \(label.debugDescription) (CKA_ID \(hexString(actual))) on token "
                    + "\(target.token.debugDescription) does not carry tenant \(tenant)'s mark in its CKA_ID, as the "
                    + "KEKs Redoubt generates for it do. Nothing was destroyed. If it really is this tenant's (a key "
                    + "adopted at tenant creation), destroy it on the token yourself (e.g. pkcs11-tool "
                    + "--delete-object --type secrkey --label \(label)) and repeat")
        }
    }

    /// Destroys (C_DestroyObject) the KEK that sealed `wrapped`; a key already gone counts
    /// as done.
    public func destroyKEK(of wrapped: WrappedReadKey) async throws {
        let (label, id) = try kek(of: wrapped)
        try await offloaded { s throws(KeyProviderError) in
            guard let handle = try s.findKey(label: label, id: id, required: false) else { return }
            try s.destroy(handle)
        }
    }

    /// The KEK a wrapped key names: rotation may have moved this URI on since it was sealed.
    func kek(of wrapped: WrappedReadKey) throws(KeyProviderError) -> (label: String, id: [UInt8]?) {
        let label = wrapped.parameters["pkcs11-object"] ?? target.object
        guard let hex = wrapped.parameters["pkcs11-id"] else {
            return (label, label == target.object ? target.id : nil)
        }
        guard let id = Self.bytes(hex: hex) else { throw .malformed("PKCS#11-wrapped key's pkcs11-id is not hex") }
        return (label, id)
    }

    static func bytes(hex: String) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        for i in stride(from: 0, to: digits.count, by: 2) {
            guard let hi = PKCS11URI.hexValue(digits[i]), let lo = PKCS11URI.hexValue(digits[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
        }
        return out
    }

    // MARK: Sessions

    /// ``withSession(_:)`` on NIO's blocking-I/O thread pool: a PKCS#11 call may block for as
    /// long as the HSM takes (a network HSM, a slow card), which must not hold up a thread
    /// of Swift's cooperative pool.
    func offloaded<T: Sendable>(_ body: @escaping @Sendable (PKCS11Session) throws(KeyProviderError) -> T) async throws
        -> T {
        try await NIOThreadPool.singleton.runIfActive { try self.withSession(body) }
    }

    /// Loads the module, finds the token, opens a R/W session and logs in; runs `body`;
    /// always logs out and closes the session. One operation at a time per module.
    func withSession<T>(_ body: (PKCS11Session) throws(KeyProviderError) -> T) throws(KeyProviderError) -> T {
        let module = try PKCS11Module.load(target.modulePath, provider: uri)
        return try module.serialized { () throws(KeyProviderError) -> T in
            let f = module.functions.pointee
            let slot = try findSlot(f)
            var handle: CK_SESSION_HANDLE = 0
            let opened = f.C_OpenSession?(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nil, nil, &handle)
                ?? CKR_FUNCTION_NOT_SUPPORTED
            let session = PKCS11Session(functions: f, handle: handle, provider: uri, token: target.token)
            try session.check(opened, "C_OpenSession")
            defer { _ = f.C_CloseSession?(handle) }
            let loggedIn = try login(session)
            // Logout ends every session's login in this process: only undo our own.
            defer { if loggedIn { _ = f.C_Logout?(handle) } }
            return try body(session)
        }
    }

    func findSlot(_ f: CK_FUNCTION_LIST) throws(KeyProviderError) -> CK_SLOT_ID {
        guard let getSlots = f.C_GetSlotList, let getInfo = f.C_GetTokenInfo else {
            throw .kmsProtocol(provider: uri,
                detail: "PKCS#11 module \(target.modulePath) lacks C_GetSlotList or C_GetTokenInfo")
        }
        var count: CK_ULONG = 0
        var rv = getSlots(CK_BBOOL(CK_TRUE), nil, &count)
        var slots = [CK_SLOT_ID](repeating: 0, count: Int(count))
        if rv == CKR_OK, count > 0 {
            rv = slots.withUnsafeMutableBufferPointer { getSlots(CK_BBOOL(CK_TRUE), $0.baseAddress, &count) }
        }
        guard rv == CKR_OK else {
            throw .unreachable(provider: uri,
                detail: """
                    PKCS#11 module \(target.modulePath) cannot list its tokens: C_GetSlotList returned \
                    \(PKCS11Module.name(rv))
                    """)
        }
        var labels: [String] = []
        for slot in slots.prefix(Int(count)) {
            var info = CK_TOKEN_INFO()
            guard getInfo(slot, &info) == CKR_OK else { continue }
            let label = withUnsafeBytes(of: info.label) { String(decoding: $0, as: UTF8.self) }
                .trimmingCharacters(in: CharacterSet(charactersIn: " \0"))
            if label == target.token { return slot }
            labels.append(label.isEmpty ? "(uninitialized)" : label.debugDescription)
        }
        throw .unreachable(provider: uri,
            detail: """
                no token labelled \(target.token.debugDescription) in PKCS#11 module \(target.modulePath) (tokens \
                present: \(labels.isEmpty ? "none" : labels.joined(separator: ", "))): connect the HSM, check the \
                module's configuration, or correct token=
                """)
    }

    /// Logs in as the user with the PIN from `pin-source` or `REDOUBT_PKCS11_PIN`; zeroes it.
    /// Returns false when the process was already logged in (by other code).
    func login(_ s: PKCS11Session) throws(KeyProviderError) -> Bool {
        var pin = try readPIN()
        defer { for i in pin.indices { pin[i] = 0 } }
        let rv = pin.withUnsafeMutableBufferPointer { p in
            s.functions.C_Login?(s.handle, CKU_USER, p.baseAddress, CK_ULONG(p.count)) ?? CKR_FUNCTION_NOT_SUPPORTED
        }
        if rv == CKR_USER_ALREADY_LOGGED_IN { return false }
        switch rv {
        case CKR_OK: return true
        // Why name the source and never the PIN: the message reaches logs and terminals.
        case CKR_PIN_INCORRECT, CKR_PIN_INVALID, CKR_PIN_LEN_RANGE, CKR_PIN_EXPIRED:
            throw .credentialRejected(provider: uri,
                detail: """
                    token \(target.token.debugDescription) refused the PIN from \(pinSourceName) \
                    (\(PKCS11Module.name(rv))): check that it holds the token's user PIN
                    """)
        case CKR_PIN_LOCKED:
            throw .credentialRejected(provider: uri,
                detail: """
                    token \(target.token.debugDescription) has locked its user PIN after failed logins \
                    (CKR_PIN_LOCKED): its security officer must reset it
                    """)
        case CKR_USER_PIN_NOT_INITIALIZED:
            throw .credentialRejected(provider: uri,
                detail: """
                    token \(target.token.debugDescription) has no user PIN yet (CKR_USER_PIN_NOT_INITIALIZED): \
                    initialize it with the security officer PIN
                    """)
        default:
            try s.check(rv, "C_Login")
            return true
        }
    }

    var pinSourceName: String { target.pinSource.map { "pin-source \($0)" } ?? "REDOUBT_PKCS11_PIN" }

    func readPIN() throws(KeyProviderError) -> [UInt8] {
        var pin: [UInt8]
        if let file = target.pinSource {
            guard var data = FileManager.default.contents(atPath: file) else {
                throw .secretMissing(provider: uri,
                    how: "cannot read the PIN file \(file) named by pin-source=: check that it exists and that this "
                        + "user may read it")
            }
            pin = Array(data)
            data.resetBytes(in: 0..<data.count)
        } else if let env = ProcessInfo.processInfo.environment["REDOUBT_PKCS11_PIN"], !env.isEmpty {
            pin = Array(env.utf8)
        } else {
            throw .secretMissing(provider: uri,
                how: """
                    add pin-source=FILE to the pkcs11: URI (a file readable only by this user) or set \
                    REDOUBT_PKCS11_PIN
                    """)
        }
        while pin.last == 0x0a || pin.last == 0x0d { pin.removeLast() }
        guard !pin.isEmpty else { throw .secretMissing(provider: uri, how: "the PIN from \(pinSourceName) is empty") }
        return pin
    }
}

/// One open, logged-in session on the token. Used only inside ``PKCS11KeyProvider/withSession(_:)``.
struct PKCS11Session {
    let functions: CK_FUNCTION_LIST
    let handle: CK_SESSION_HANDLE
    let provider: String
    let token: String

    /// Maps a PKCS#11 failure to the provider's error, naming the call and the CKR.
    func check(_ rv: CK_RV, _ call: String) throws(KeyProviderError) {
        switch rv {
        case CKR_OK: return
        case CKR_TOKEN_NOT_PRESENT, CKR_DEVICE_REMOVED, CKR_DEVICE_ERROR, CKR_SLOT_ID_INVALID, CKR_TOKEN_NOT_RECOGNIZED,
            CKR_SESSION_COUNT:
            throw .unreachable(provider: provider,
                detail: """
                    token \(token.debugDescription): \(call) returned \(PKCS11Module.name(rv)): check that the HSM is \
                    connected and has this token
                    """)
        case CKR_KEY_HANDLE_INVALID, CKR_OBJECT_HANDLE_INVALID:
            throw .keyDestroyed(provider: provider,
                detail: """
                    the key vanished from token \(token.debugDescription) during \(call) (\(PKCS11Module.name(rv)))
                    """)
        case CKR_KEY_FUNCTION_NOT_PERMITTED:
            throw .keyDisabled(provider: provider,
                detail: """
                    the key on token \(token.debugDescription) may not be used for this (\(call): \
                    CKR_KEY_FUNCTION_NOT_PERMITTED): it needs CKA_ENCRYPT and CKA_DECRYPT
                    """)
        default:
            throw .kmsProtocol(provider: provider,
                detail: "\(call) on token \(token.debugDescription) returned \(PKCS11Module.name(rv))")
        }
    }

    func destroyed(label: String, id: [UInt8]?) -> KeyProviderError {
        let which = id.map { " with CKA_ID \($0.map { String(format: "%02x", $0) }.joined())" } ?? ""
        return .keyDestroyed(provider: provider,
            detail: "no AES key labelled \(label.debugDescription)\(which) on token \(token.debugDescription): "
                + "destroyed or never created")
    }

    /// The secret AES key labelled `label` (and with CKA_ID `id` when given). More than one
    /// match is an error: wrapping under a key picked at random would be unrecoverable.
    func findKey(label: String, id: [UInt8]?, required: Bool) throws(KeyProviderError) -> CK_OBJECT_HANDLE? {
        let t = PKCS11Template()
            .ulong(CKA_CLASS, CKO_SECRET_KEY).ulong(CKA_KEY_TYPE, CKK_AES).bytes(CKA_LABEL, Array(label.utf8))
        if let id { t.bytes(CKA_ID, id) }
        guard let initFind = functions.C_FindObjectsInit, let find = functions.C_FindObjects,
            let final = functions.C_FindObjectsFinal else {
            throw .kmsProtocol(provider: provider, detail: "the PKCS#11 module lacks C_FindObjects")
        }
        try check(t.with { initFind(handle, $0, $1) }, "C_FindObjectsInit")
        var found = [CK_OBJECT_HANDLE](repeating: 0, count: 2)
        var count: CK_ULONG = 0
        let rv = found.withUnsafeMutableBufferPointer { find(handle, $0.baseAddress, 2, &count) }
        _ = final(handle)
        try check(rv, "C_FindObjects")
        switch count {
        case 0: return nil
        case 1: return found[0]
        default:
            throw .unsupported(provider: provider,
                detail: """
                    several AES keys on token \(token.debugDescription) are labelled \(label.debugDescription); \
                    Redoubt needs exactly one: relabel or remove the others
                    """)
        }
    }

    /// What Redoubt needs to know of a key, read with C_GetAttributeValue.
    struct KeyFacts {
        var id: [UInt8]
        var extractable: Bool?
        var sensitive: Bool?
        /// CKA_NEVER_EXTRACTABLE and CKA_ALWAYS_SENSITIVE: false for a key imported with a
        /// known value, or once extractable (a copy may exist outside the token).
        var neverExtractable: Bool?
        var alwaysSensitive: Bool?
        var valueLength: Int?
        /// Whether the token handed out CKA_VALUE, the key itself.
        var valueReadable: Bool
    }

    func facts(_ key: CK_OBJECT_HANDLE) throws(KeyProviderError) -> KeyFacts {
        guard let get = functions.C_GetAttributeValue else {
            throw .kmsProtocol(provider: provider, detail: "the PKCS#11 module lacks C_GetAttributeValue")
        }
        let t = PKCS11Template()
            .slot(CKA_ID, capacity: 256).slot(CKA_EXTRACTABLE, capacity: 1).slot(CKA_SENSITIVE, capacity: 1)
            .slot(CKA_VALUE_LEN, capacity: MemoryLayout<CK_ULONG>.size)
            .slot(CKA_NEVER_EXTRACTABLE, capacity: 1).slot(CKA_ALWAYS_SENSITIVE, capacity: 1)
        let rv = t.with { get(handle, key, $0, $1) }
        // Sensitive or unknown attributes come back per attribute as unavailable.
        guard rv == CKR_OK || rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID
            || rv == CKR_BUFFER_TOO_SMALL else {
            try check(rv, "C_GetAttributeValue")
            return KeyFacts(id: [], valueReadable: false)
        }
        let value = PKCS11Template().slot(CKA_VALUE, capacity: 64)
        let valueRV = value.with { get(handle, key, $0, $1) }
        let length = t.value(at: 3).flatMap {
            $0.count == MemoryLayout<CK_ULONG>.size
                ? $0.withUnsafeBytes { Int($0.loadUnaligned(as: CK_ULONG.self)) } : nil
        }
        return KeyFacts(
            id: t.value(at: 0) ?? [], extractable: t.value(at: 1).map { $0.first != 0 },
                sensitive: t.value(at: 2).map { $0.first != 0 },
            neverExtractable: t.value(at: 4).map { $0.first != 0 },
                alwaysSensitive: t.value(at: 5).map { $0.first != 0 },
            valueLength: length, valueReadable: valueRV == CKR_OK && value.value(at: 0) != nil)
    }

    /// The key's facts, after refusing anything but a sensitive, non-extractable AES-256 key.
    func checkedKEK(_ key: CK_OBJECT_HANDLE, label: String) throws(KeyProviderError) -> KeyFacts {
        let f = try facts(key)
        // Why: the KEK must never leave the token; a key that can be read out or exported
        // would let whoever holds the PIN copy it and defeat crypto-shredding.
        guard f.extractable == false, f.sensitive == true, !f.valueReadable else {
            throw .unsupported(provider: provider,
                detail: """
                    the key labelled \(label.debugDescription) on token \(token.debugDescription) is extractable or \
                    not sensitive; Redoubt wraps only under a key created with CKA_EXTRACTABLE=false and \
                    CKA_SENSITIVE=true
                    """)
        }
        // Why: a key that was ever extractable or not sensitive (or imported with a known
        // value) may have a copy outside the token that no C_DestroyObject reaches.
        guard f.neverExtractable == true, f.alwaysSensitive == true else {
            throw .unsupported(provider: provider,
                detail: """
                    the key labelled \(label.debugDescription) on token \(token.debugDescription) has not been \
                    sensitive and non-extractable since it was made (CKA_NEVER_EXTRACTABLE or CKA_ALWAYS_SENSITIVE is \
                    not true: it was imported, or extractable once), so a copy may exist outside the token; let \
                    Redoubt generate the KEK on the token instead
                    """)
        }
        guard f.valueLength == 32 else {
            throw .unsupported(provider: provider,
                detail: """
                    the key labelled \(label.debugDescription) on token \(token.debugDescription) is \
                    \(f.valueLength.map { "\($0 * 8)-bit" } ?? "of unknown size"); Redoubt needs AES-256
                    """)
        }
        return f
    }

    /// C_GenerateKey: a token-resident, private, sensitive AES-256 key that may only encrypt
    /// and decrypt. `extractable` exists for tests that check Redoubt refuses such keys.
    func generateAES256(label: String, id: [UInt8], extractable: Bool) throws(KeyProviderError) -> CK_OBJECT_HANDLE {
        guard let generate = functions.C_GenerateKey else {
            throw .kmsProtocol(provider: provider, detail: "the PKCS#11 module lacks C_GenerateKey")
        }
        let t = PKCS11Template()
            .ulong(CKA_CLASS, CKO_SECRET_KEY).ulong(CKA_KEY_TYPE, CKK_AES).ulong(CKA_VALUE_LEN, 32)
            .bool(CKA_TOKEN, true).bool(CKA_PRIVATE, true).bool(CKA_SENSITIVE, true).bool(CKA_EXTRACTABLE, extractable)
            .bool(CKA_ENCRYPT, true).bool(CKA_DECRYPT, true).bool(CKA_WRAP, false).bool(CKA_UNWRAP, false)
            .bytes(CKA_LABEL, Array(label.utf8)).bytes(CKA_ID, id)
        var mechanism = CK_MECHANISM(mechanism: CKM_AES_KEY_GEN, pParameter: nil, ulParameterLen: 0)
        var key: CK_OBJECT_HANDLE = 0
        try check(t.with { generate(handle, &mechanism, $0, $1, &key) }, "C_GenerateKey")
        return key
    }

    /// C_CreateObject: imports a known AES-256 value as a sensitive, non-extractable token
    /// key. Only the golden-fixture tests use it, to pin the format against a known KEK;
    /// Redoubt itself generates KEKs on the token.
    func importAES256(label: String, id: [UInt8], value: [UInt8]) throws(KeyProviderError) -> CK_OBJECT_HANDLE {
        guard let create = functions.C_CreateObject else {
            throw .kmsProtocol(provider: provider, detail: "the PKCS#11 module lacks C_CreateObject")
        }
        let t = PKCS11Template()
            .ulong(CKA_CLASS, CKO_SECRET_KEY).ulong(CKA_KEY_TYPE, CKK_AES).bytes(CKA_VALUE, value)
            .bool(CKA_TOKEN, true).bool(CKA_PRIVATE, true).bool(CKA_SENSITIVE, true).bool(CKA_EXTRACTABLE, false)
            .bool(CKA_ENCRYPT, true).bool(CKA_DECRYPT, true).bytes(CKA_LABEL, Array(label.utf8)).bytes(CKA_ID, id)
        var key: CK_OBJECT_HANDLE = 0
        try check(t.with { create(handle, $0, $1, &key) }, "C_CreateObject")
        return key
    }

    /// One-shot CKM_AES_GCM (96-bit nonce, 128-bit tag). Output is ciphertext ‖ tag.
    /// Input and output are ``SecretBytes``: the seed goes in when sealing and comes out when
    /// opening, and neither leaves an unzeroed copy behind.
    func gcm(encrypt: Bool, key: CK_OBJECT_HANDLE, nonce: [UInt8], aad: [UInt8],
        input: SecretBytes) throws(KeyProviderError) -> SecretBytes {
        let call = encrypt ? "C_Encrypt" : "C_Decrypt"
        guard let initOp = encrypt ? functions.C_EncryptInit : functions.C_DecryptInit,
              let op = encrypt ? functions.C_Encrypt : functions.C_Decrypt
        else { throw .kmsProtocol(provider: provider, detail: "the PKCS#11 module lacks \(call)") }
        var nonce = nonce, aad = aad
        var output = [UInt8](repeating: 0, count: input.count + 32)
        var outLen = CK_ULONG(output.count)
        let (initRV, rv): (CK_RV, CK_RV) = nonce.withUnsafeMutableBufferPointer { n in
            aad.withUnsafeMutableBufferPointer { a in
                var params = CK_GCM_PARAMS(pIv: n.baseAddress, ulIvLen: CK_ULONG(n.count),
                    ulIvBits: CK_ULONG(n.count * 8),
                                           pAAD: a.baseAddress, ulAADLen: CK_ULONG(a.count), ulTagBits: 128)
                return withUnsafeMutablePointer(to: &params) { p in
                    var mechanism = CK_MECHANISM(mechanism: CKM_AES_GCM, pParameter: UnsafeMutableRawPointer(p),
                                                 ulParameterLen: CK_ULONG(MemoryLayout<CK_GCM_PARAMS>.size))
                    let initRV = initOp(handle, &mechanism, key)
                    guard initRV == CKR_OK else { return (initRV, initRV) }
                    // C_Encrypt/C_Decrypt take a non-const pointer but do not write the input.
                    let rv = input.withUnsafeBytes { i in
                        output.withUnsafeMutableBufferPointer { o in
                            op(handle, UnsafeMutablePointer(mutating: i.bindMemory(to: UInt8.self).baseAddress),
                                CK_ULONG(i.count), o.baseAddress, &outLen)
                        }
                    }
                    return (initRV, rv)
                }
            }
        }
        try check(initRV, encrypt ? "C_EncryptInit" : "C_DecryptInit")
        if !encrypt, rv == CKR_ENCRYPTED_DATA_INVALID || rv == CKR_GENERAL_ERROR || rv == CKR_ENCRYPTED_DATA_LEN_RANGE
            || rv == CKR_FUNCTION_FAILED {
            // Why one answer for these: a GCM tag that does not verify means the wrapped key
            // was altered or sealed under another key (SoftHSM reports CKR_GENERAL_ERROR).
            for i in output.indices { output[i] = 0 }
            throw .wrongSecret(provider: provider)
        }
        try check(rv, call)
        defer { for i in output.indices { output[i] = 0 } }
        guard Int(outLen) <= output.count else {
            throw .kmsProtocol(provider: provider, detail: "\(call) claims \(outLen) bytes of output")
        }
        return SecretBytes(copying: output.prefix(Int(outLen)))
    }

    func destroy(_ key: CK_OBJECT_HANDLE) throws(KeyProviderError) {
        guard let destroy = functions.C_DestroyObject else {
            throw .kmsProtocol(provider: provider, detail: "the PKCS#11 module lacks C_DestroyObject")
        }
        let rv = destroy(handle, key)
        // Raced with another destroy: the key is gone, which is what was asked.
        if rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_KEY_HANDLE_INVALID { return }
        try check(rv, "C_DestroyObject")
    }
}

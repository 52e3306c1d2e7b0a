import Foundation

/// A `pkcs11:` key-provider URI (RFC 7512): which token, which key object on it, which
/// module to load and where the PIN comes from.
///
/// `pkcs11:token=LABEL;object=LABEL[;id=%XX…][;type=secret-key]?module-path=FILE[&pin-source=FILE]`
///
/// Path attribute values are percent-decoded. `pin-source` may be a plain path or a
/// `file:` URI; without it the PIN comes from `REDOUBT_PKCS11_PIN`. A `pin-value` is
/// refused: the URI is recorded beside the wrapped key and printed in messages, so it must
/// never hold a secret. Unknown attributes are refused rather than ignored, so that a URI
/// meant to pick one key can never silently pick another.
public struct PKCS11URI: Sendable, Equatable, CustomStringConvertible {
    /// The token's label (CKA_LABEL of the token, `CK_TOKEN_INFO.label` without padding).
    public var token: String
    /// The key object's CKA_LABEL.
    public var object: String
    /// The key object's CKA_ID, when the URI pins one (set once the KEK exists).
    public var id: [UInt8]?
    /// The PKCS#11 module (shared library) to load.
    public var modulePath: String
    /// A file holding the user PIN; `nil` means `REDOUBT_PKCS11_PIN`.
    public var pinSource: String?

    public init(token: String, object: String, id: [UInt8]? = nil, modulePath: String, pinSource: String?) {
        self.token = token
        self.object = object
        self.id = id
        self.modulePath = modulePath
        self.pinSource = pinSource
    }

    static let usage = "pkcs11:token=LABEL;object=LABEL?module-path=FILE&pin-source=FILE"

    /// Parses a `pkcs11:` URI; throws ``KeyProviderError/malformed(_:)`` naming what is wrong.
    public init(parsing text: String) throws(KeyProviderError) {
        guard text.hasPrefix("pkcs11:") else { throw .unknownProvider(text) }
        let body = text.dropFirst("pkcs11:".count)
        let (pathPart, queryPart): (Substring, Substring?) = {
            guard let q = body.firstIndex(of: "?") else { return (body, nil) }
            return (body[..<q], body[body.index(after: q)...])
        }()
        if body.contains("#") { throw .malformed("PKCS#11 URI has a fragment ('#'); use \(Self.usage)") }
        let path = try Self.attributes(pathPart, separator: ";", part: "path")
        let query = try Self.attributes(queryPart ?? "", separator: "&", part: "query")

        for name in path.keys where !["token", "object", "id", "type"].contains(name) {
            throw .malformed("""
                PKCS#11 URI path attribute \(name.debugDescription) is not supported; Redoubt reads token, object, id \
                and type
                """)
        }
        for name in query.keys where !["module-path", "pin-source"].contains(name) {
            // Why: a PIN in the URI would be stored beside the wrapped key and shown in errors.
            if name == "pin-value" {
                throw .malformed("""
                    PKCS#11 URI must not carry pin-value: put the PIN in a file and name it with pin-source=FILE, or \
                    set REDOUBT_PKCS11_PIN
                    """)
            }
            if name == "module-name" {
                throw .malformed("""
                    PKCS#11 URI module-name is not supported; give the module's file with module-path=FILE
                    """)
            }
            throw .malformed("""
                PKCS#11 URI query attribute \(name.debugDescription) is not supported; Redoubt reads module-path and \
                pin-source
                """)
        }
        if let type = path["type"], type != "secret-key" {
            throw .malformed("PKCS#11 URI type=\(type) cannot wrap keys: the KEK is an AES key, type=secret-key")
        }
        guard let token = path["token"], !token.isEmpty else {
            throw .malformed("PKCS#11 URI names no token: add token=LABEL (\(Self.usage))")
        }
        guard let object = path["object"], !object.isEmpty else {
            throw .malformed("PKCS#11 URI names no key object: add object=LABEL (\(Self.usage))")
        }
        guard let module = query["module-path"], !module.isEmpty else {
            throw .malformed("""
                PKCS#11 URI names no module: add ?module-path=FILE, e.g. /usr/lib/softhsm/libsofthsm2.so \
                (\(Self.usage))
                """)
        }
        var pinSource: String?
        if let source = query["pin-source"] {
            if source.hasPrefix("|") {
                throw .malformed("""
                    PKCS#11 URI pin-source runs a command (\"|…\"); Redoubt reads the PIN from a file only
                    """)
            }
            let file = source.hasPrefix("file://") ? String(source.dropFirst("file://".count))
                : source.hasPrefix("file:") ? String(source.dropFirst("file:".count)) : source
            guard !file.isEmpty else { throw .malformed("PKCS#11 URI pin-source is empty: give the PIN file's path") }
            pinSource = file
        }
        // `id` is binary (CKA_ID): decoded as bytes, not as UTF-8 text.
        let id = path["id"] == nil ? nil : try Self.rawAttribute(pathPart, name: "id")
        self.init(token: token, object: object, id: id, modulePath: module, pinSource: pinSource)
    }

    /// Splits `a=b<sep>c=d` and percent-decodes each value as UTF-8.
    static func attributes(_ s: Substring, separator: Character,
        part: String) throws(KeyProviderError) -> [String: String] {
        var out: [String: String] = [:]
        for item in s.split(separator: separator, omittingEmptySubsequences: true) {
            guard let eq = item.firstIndex(of: "=") else {
                throw .malformed("""
                    PKCS#11 URI \(part) attribute \(String(item).debugDescription) has no '=': use name=value
                    """)
            }
            let name = String(item[..<eq])
            let raw = item[item.index(after: eq)...]
            // `id` holds arbitrary bytes; it is decoded separately by rawAttribute.
            let value: String
            if name == "id" {
                _ = try percentDecodedBytes(raw, name: name)
                value = String(raw)
            } else {
                guard let v = String(bytes: try percentDecodedBytes(raw, name: name), encoding: .utf8) else {
                    throw .malformed("PKCS#11 URI attribute \(name) is not UTF-8 after percent-decoding")
                }
                value = v
            }
            guard out[name] == nil else {
                throw .malformed("PKCS#11 URI repeats the attribute \(name) (RFC 7512 allows each once)")
            }
            out[name] = value
        }
        return out
    }

    /// The bytes of path attribute `name`, percent-decoded.
    static func rawAttribute(_ s: Substring, name: String) throws(KeyProviderError) -> [UInt8]? {
        for item in s.split(separator: ";") where item.hasPrefix("\(name)=") {
            let bytes = try percentDecodedBytes(item.dropFirst(name.count + 1), name: name)
            return bytes.isEmpty ? nil : bytes
        }
        return nil
    }

    static func percentDecodedBytes(_ s: Substring, name: String) throws(KeyProviderError) -> [UInt8] {
        var out: [UInt8] = []
        var bytes = Array(s.utf8)[...]
        while let b = bytes.popFirst() {
            guard b == UInt8(ascii: "%") else { out.append(b); continue }
            guard bytes.count >= 2, let hi = hexValue(bytes[bytes.startIndex]), let lo = hexValue(bytes[bytes.startIndex
                + 1]) else {
                throw .malformed("PKCS#11 URI attribute \(name) has a '%' not followed by two hex digits")
            }
            out.append(hi << 4 | lo)
            bytes = bytes.dropFirst(2)
        }
        return out
    }

    static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// Percent-encodes everything but RFC 3986 unreserved characters (and `/` in paths).
    static func encode(_ bytes: [UInt8], keepSlash: Bool = false) -> String {
        var s = ""
        for b in bytes {
            let c = Character(Unicode.Scalar(b))
            if b < 0x80, c.isLetter || c.isNumber || "-._~".contains(c) || (keepSlash && c == "/") {
                s.append(c)
            } else {
                s += String(format: "%%%02X", b)
            }
        }
        return s
    }

    /// The canonical URI: recorded in the wrapped key, parsed again at restore. No secret.
    public var description: String {
        var s = "pkcs11:token=\(Self.encode(Array(token.utf8)));object=\(Self.encode(Array(object.utf8)))"
        if let id { s += ";id=" + id.map { String(format: "%%%02X", $0) }.joined() }
        s += "?module-path=\(Self.encode(Array(modulePath.utf8), keepSlash: true))"
        if let pinSource { s += "&pin-source=\(Self.encode(Array(pinSource.utf8), keepSlash: true))" }
        return s
    }
}

/// Strings from outside (a request, a host's claim, an older catalog) made safe to store,
/// hash and print: the one escaping rule for the audit log and for every text listing,
/// and the one rule for free-text fields. Pure; no I/O.
///
/// Escaping is injective, so distinct inputs stay distinct and the original can be read
/// back: `\` becomes `\\`; C0 controls and DEL become `\xNN`; C1 controls, format
/// characters (bidi overrides and isolates, zero-width characters, BOM), line and paragraph
/// separators, private-use and unassigned scalars become `\u{N…}`; bytes that are not
/// UTF-8 (``escaped(bytes:)`` only) become `\xNN` with NN ≥ 80. Everything else, any
/// printable character of any script, is kept as it is.
public enum SafeText {
    /// Longest audited field in UTF-8 bytes after escaping; longer ones are cut at a
    /// character boundary and end with `…[+N bytes]`.
    public static let maxAuditFieldBytes = 4096

    /// Whether `c` must be escaped before it reaches a terminal or the audit log.
    public static func needsEscape(_ c: Unicode.Scalar) -> Bool {
        if c.value < 0x20 || c.value == 0x7f || c == "\\" { return true }
        if c.value < 0x7f { return false }
        switch c.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator, .privateUse, .unassigned, .surrogate: return true
        default: return false
        }
    }

    /// `s` with every scalar that ``needsEscape(_:)`` escaped.
    public static func escaped(_ s: String) -> String {
        guard s.unicodeScalars.contains(where: needsEscape) else { return s }
        var out = ""
        out.reserveCapacity(s.utf8.count + 16)
        for c in s.unicodeScalars { append(c, to: &out) }
        return out
    }

    /// Raw bytes for humans: UTF-8 as ``escaped(_:)`` renders it, each byte of an invalid
    /// sequence as `\xNN`.
    public static func escaped<B: Collection>(bytes: B) -> String where B.Element == UInt8 {
        let raw = Array(bytes)
        var out = ""
        var i = 0
        while i < raw.count {
            // One scalar at a time; each byte of a sequence that does not decode is escaped alone.
            let n = utf8SequenceLength(raw, at: i)
            if n > 0, let s = String(validating: raw[i..<(i + n)], as: UTF8.self), let c = s.unicodeScalars.first {
                append(c, to: &out)
                i += n
            } else {
                out += "\\x" + hex2(raw[i])
                i += 1
            }
        }
        return out
    }

    /// An audited field as stored and hashed: escaped, then bounded to
    /// ``maxAuditFieldBytes``.
    public static func auditField(_ s: String) -> String {
        bounded(escaped(s), maxBytes: maxAuditFieldBytes)
    }

    /// `s` escaped and bounded: an untrusted value as an error message echoes it.
    public static func echo(_ s: String, maxBytes: Int = 80) -> String { bounded(escaped(s), maxBytes: maxBytes) }

    /// `s` cut to at most `maxBytes` UTF-8 bytes at a character boundary, with a marker
    /// saying how much was left out (the marker fits in the bound).
    public static func bounded(_ s: String, maxBytes: Int) -> String {
        let total = s.utf8.count
        guard total > maxBytes else { return s }
        var kept = ""
        var used = 0
        let budget = max(0, maxBytes - 32)
        for c in s.unicodeScalars {
            let n = String(c).utf8.count
            if used + n > budget { break }
            kept.unicodeScalars.append(c)
            used += n
        }
        return kept + "…[+\(total - used) bytes]"
    }

    /// The free-text rule (a host's OS name, a hold's reason): 1 to `maxBytes` UTF-8 bytes,
    /// no leading or trailing space, and nothing ``needsEscape(_:)`` flags but `\` (which is
    /// printable: it is only doubled when shown). Callers drop surrounding blanks first
    /// where a claim may carry them.
    public static func isValidFreeText(_ s: String, maxBytes: Int = 128) -> Bool {
        guard (1...maxBytes).contains(s.utf8.count), s.first != " ", s.last != " " else { return false }
        return !s.unicodeScalars.contains { needsEscape($0) && $0 != "\\" }
    }

    /// JSON text with every scalar that ``needsEscape(_:)`` flags (but `\`, which JSON
    /// escapes itself) written as a `\uXXXX` escape: the same JSON value, safe on a
    /// terminal. Encoders escape C0 controls but leave DEL, C1 and bidi controls raw, and
    /// such scalars can only occur inside strings, where the escape means the same.
    public static func terminalSafeJSON(_ json: String) -> String {
        guard json.unicodeScalars.contains(where: { needsEscape($0) && $0 != "\\" && $0 != "\n" }) else { return json }
        var out = ""
        out.reserveCapacity(json.utf8.count + 16)
        for c in json.unicodeScalars {
            guard needsEscape(c), c != "\\", c != "\n" else { out.unicodeScalars.append(c); continue }
            for unit in String(c).utf16 {
                let h = String(unit, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
            }
        }
        return out
    }

    private static func append(_ c: Unicode.Scalar, to out: inout String) {
        if !needsEscape(c) {
            out.unicodeScalars.append(c)
        } else if c == "\\" {
            out += "\\\\"
        } else if c.value < 0x80 {
            out += "\\x" + hex2(UInt8(c.value))
        } else {
            out += "\\u{" + String(c.value, radix: 16) + "}"
        }
    }

    private static func hex2(_ b: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(b >> 4)], digits[Int(b & 0xf)]])
    }

    /// Length of the UTF-8 sequence a lead byte announces (0 for a byte that cannot lead).
    private static func utf8SequenceLength(_ b: [UInt8], at i: Int) -> Int {
        let n: Int
        switch b[i] {
        case 0x00...0x7f: n = 1
        case 0xc2...0xdf: n = 2
        case 0xe0...0xef: n = 3
        case 0xf0...0xf4: n = 4
        default: return 0
        }
        return i + n <= b.count ? n : 0
    }
}

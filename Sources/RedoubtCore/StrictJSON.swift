/// A strict check of a JSON text (RFC 8259) before it is decoded, for request bodies from
/// untrusted callers. Foundation's decoder keeps one of two equal keys silently, so
/// `{"dryRun":true,"dryRun":false}` would mean whatever the decoder picks; this check
/// refuses it, and with it everything else two readers could read differently.
///
/// Refused, each with the byte offset and, for keys, the key's name: a key that appears
/// twice in one object at any depth (compared after unescaping, so `"a"` and `"\u0061"` are
/// the same key); nesting deeper than ``maxDepth``; any byte after the value but
/// whitespace; an integer outside Int64 or a number that is not finite as a Double; a
/// string that is not UTF-8, holds a raw control character or a lone surrogate escape; and
/// everything that is not JSON at all. Pure and bounded: recursion never goes deeper than
/// `maxDepth + 1` frames, whatever the input.
public enum StrictJSON {
    /// Deepest nesting of objects and arrays accepted (the API's bodies need 3).
    public static let maxDepth = 32

    /// Throws `CoreError` (`E_CORRUPT`, or `E_LIMIT` for depth) naming the first problem.
    public static func validate(_ bytes: [UInt8], maxDepth: Int = StrictJSON.maxDepth) throws(CoreError) {
        var p = Parser(b: bytes, maxDepth: maxDepth)
        p.whitespace()
        guard p.i < bytes.count else { throw p.fail("the body holds no JSON value") }
        try p.value(depth: 0)
        p.whitespace()
        guard p.i == bytes.count else { throw p.fail("trailing bytes after the JSON value") }
    }

    struct Parser {
        let b: [UInt8]
        let maxDepth: Int
        var i = 0
        /// The keys leading to the value being read, to name it in an error.
        var keyPath: [String] = []

        init(b: [UInt8], maxDepth: Int) {
            self.b = b
            self.maxDepth = maxDepth
        }

        func fail(_ what: String, at offset: Int? = nil, limit: Bool = false) -> CoreError {
            let key = keyPath.isEmpty ? "" : " (in \(SafeText.echo(keyPath.joined(separator: "."), maxBytes: 120)))"
            let code: CoreError.Code = limit ? .limitExceeded : .corrupt
            return CoreError(code, object: "JSON body", "\(what)\(key) at byte \(offset ?? i)")
        }

        mutating func whitespace() {
            while i < b.count, b[i] == 0x20 || b[i] == 0x09 || b[i] == 0x0a || b[i] == 0x0d { i += 1 }
        }

        mutating func value(depth: Int) throws(CoreError) {
            guard i < b.count else { throw fail("the JSON value ends early") }
            switch b[i] {
            case UInt8(ascii: "{"): try object(depth: depth + 1)
            case UInt8(ascii: "["): try array(depth: depth + 1)
            case UInt8(ascii: "\""): _ = try string()
            case UInt8(ascii: "t"): try literal("true")
            case UInt8(ascii: "f"): try literal("false")
            case UInt8(ascii: "n"): try literal("null")
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try number()
            default: throw fail("unexpected byte 0x\(String(b[i], radix: 16)) where a JSON value should start")
            }
        }

        mutating func literal(_ word: String) throws(CoreError) {
            let w = Array(word.utf8)
            guard i + w.count <= b.count, Array(b[i..<(i + w.count)]) == w else {
                throw fail("not a JSON value (expected \(word))")
            }
            i += w.count
        }

        mutating func object(depth: Int) throws(CoreError) {
            guard depth <= maxDepth else { throw fail("nesting deeper than \(maxDepth) levels", limit: true) }
            i += 1
            var keys = Set<String>()
            whitespace()
            if i < b.count, b[i] == UInt8(ascii: "}") { i += 1; return }
            while true {
                whitespace()
                let at = i
                guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw fail("an object key must be a string") }
                let key = try string()
                // Why: two readers may keep different ones of two equal keys; neither may be trusted.
                guard keys.insert(key).inserted else {
                    throw fail("duplicate key \"\(SafeText.echo(key))\"", at: at)
                }
                whitespace()
                guard i < b.count, b[i] == UInt8(ascii: ":") else { throw fail("expected ':' after an object key") }
                i += 1
                whitespace()
                keyPath.append(key)
                try value(depth: depth)
                keyPath.removeLast()
                whitespace()
                guard i < b.count else { throw fail("the object is not closed") }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "}") { i += 1; return }
                throw fail("expected ',' or '}' in an object")
            }
        }

        mutating func array(depth: Int) throws(CoreError) {
            guard depth <= maxDepth else { throw fail("nesting deeper than \(maxDepth) levels", limit: true) }
            i += 1
            whitespace()
            if i < b.count, b[i] == UInt8(ascii: "]") { i += 1; return }
            while true {
                whitespace()
                try value(depth: depth)
                whitespace()
                guard i < b.count else { throw fail("the array is not closed") }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "]") { i += 1; return }
                throw fail("expected ',' or ']' in an array")
            }
        }

        /// A string token, unescaped. `i` is at the opening quote.
        mutating func string() throws(CoreError) -> String {
            let start = i
            i += 1
            var out: [UInt8] = []
            while true {
                guard i < b.count else { throw fail("the string is not closed", at: start) }
                let c = b[i]
                if c == UInt8(ascii: "\"") { i += 1; break }
                if c < 0x20 { throw fail("a raw control character (0x\(String(c, radix: 16))) in a string; escape it") }
                if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
                guard i + 1 < b.count else { throw fail("the string is not closed", at: start) }
                let e = b[i + 1]
                i += 2
                switch e {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0c)
                case UInt8(ascii: "n"): out.append(0x0a)
                case UInt8(ascii: "r"): out.append(0x0d)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"): out += try unicodeEscape()
                default: throw fail("an unknown escape \\\(Unicode.Scalar(e)) in a string", at: i - 2)
                }
            }
            guard let s = String(validating: out, as: UTF8.self) else {
                throw fail("a string that is not UTF-8", at: start)
            }
            return s
        }

        /// The scalar of `\uXXXX` (and its low surrogate when it is a high one), as UTF-8.
        /// `i` is just after the `u`.
        mutating func unicodeEscape() throws(CoreError) -> [UInt8] {
            let at = i - 2
            var v = try hex4()
            if (0xdc00...0xdfff).contains(v) { throw fail("a lone low surrogate escape", at: at) }
            if (0xd800...0xdbff).contains(v) {
                guard i + 1 < b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else {
                    throw fail("a lone high surrogate escape", at: at)
                }
                i += 2
                let low = try hex4()
                guard (0xdc00...0xdfff).contains(low) else {
                    throw fail("a high surrogate escape without its low half", at: at)
                }
                v = 0x10000 + ((v - 0xd800) << 10) + (low - 0xdc00)
            }
            guard let scalar = Unicode.Scalar(v) else { throw fail("an escape that is no Unicode scalar", at: at) }
            return Array(String(scalar).utf8)
        }

        mutating func hex4() throws(CoreError) -> UInt32 {
            guard i + 4 <= b.count else { throw fail("a \\u escape needs four hex digits") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = b[i]
                let d: UInt32
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
                default: throw fail("a \\u escape needs four hex digits")
                }
                v = v << 4 | d
                i += 1
            }
            return v
        }

        /// A number token, checked against RFC 8259's grammar and for range.
        mutating func number() throws(CoreError) {
            let start = i
            var integral = true
            if b[i] == UInt8(ascii: "-") { i += 1 }
            guard i < b.count, isDigit(b[i]) else { throw fail("a number needs a digit", at: start) }
            if b[i] == UInt8(ascii: "0") {
                i += 1
                if i < b.count, isDigit(b[i]) { throw fail("a number with a leading zero", at: start) }
            } else {
                while i < b.count, isDigit(b[i]) { i += 1 }
            }
            if i < b.count, b[i] == UInt8(ascii: ".") {
                integral = false
                i += 1
                guard i < b.count, isDigit(b[i]) else { throw fail("a number needs a digit after '.'", at: start) }
                while i < b.count, isDigit(b[i]) { i += 1 }
            }
            if i < b.count, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
                integral = false
                i += 1
                if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") { i += 1 }
                guard i < b.count, isDigit(b[i]) else {
                    throw fail("a number needs a digit in its exponent", at: start)
                }
                while i < b.count, isDigit(b[i]) { i += 1 }
            }
            let text = String(decoding: b[start..<i], as: UTF8.self)
            // Why: a decoder may round, clamp or wrap a value that does not fit; refuse instead.
            if integral {
                guard Int64(text) != nil else {
                    throw fail("number \(text.prefix(40)) out of range (integers fit in 64 bits)", at: start)
                }
            } else {
                guard let d = Double(text), d.isFinite else {
                    throw fail("number \(text.prefix(40)) out of range", at: start)
                }
            }
        }

        func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
    }
}

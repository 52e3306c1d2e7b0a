import Foundation
import Testing
@testable import RedoubtCore

/// The one escaping rule for the audit log and terminals, and the free-text rule.
@Suite struct SafeTextTests {
    /// Reads `SafeText.escaped` output back: `\\`, `\xNN` (< 0x80) and `\u{N…}`.
    static func unescape(_ s: String) -> String? {
        var out = String.UnicodeScalarView()
        var it = Array(s.unicodeScalars)[...]
        while let c = it.popFirst() {
            guard c == "\\" else { out.append(c); continue }
            switch it.popFirst() {
            case "\\": out.append("\\")
            case "x":
                let digits = String(String.UnicodeScalarView(it.prefix(2)))
                guard it.count >= 2, let v = UInt8(digits, radix: 16), v < 0x80 else { return nil }
                it = it.dropFirst(2)
                out.append(Unicode.Scalar(v))
            case "u":
                guard it.popFirst() == "{", let end = it.firstIndex(of: "}"),
                      let v = UInt32(String(String.UnicodeScalarView(it[..<end])), radix: 16),
                      let sc = Unicode.Scalar(v) else { return nil }
                it = it[(end + 1)...]
                out.append(sc)
            default: return nil
            }
        }
        return String(out)
    }

    static func isTerminalSafe(_ s: String) -> Bool {
        !s.unicodeScalars.contains { SafeText.needsEscape($0) && $0 != "\\" }
    }

    @Test func everyScalarIsEscapedOrKeptAndReadsBack() {
        var all = String.UnicodeScalarView()
        for v in UInt32(0)...0x10ffff { if let c = Unicode.Scalar(v) { all.append(c) } }
        let s = String(all)
        let e = SafeText.escaped(s)
        #expect(Self.isTerminalSafe(e))
        #expect(Self.unescape(e) == s)
        for v: UInt32 in [0, 0x1b, 0x7f, 0x85, 0x9b, 0x200b, 0x202e, 0x2066, 0x2028, 0x2029, 0xfeff, 0xe000] {
            let c = String(Unicode.Scalar(v)!)
            #expect(SafeText.escaped(c) != c, "U+\(String(v, radix: 16)) kept raw")
        }
        for kept in ["héllo wörld", "日本語", "Ελληνικά", "emoji 🙂", "a/b-c_d.e:f=g", "Debian GNU/Linux 12 (bookworm)"] {
            #expect(SafeText.escaped(kept) == kept)
        }
        #expect(SafeText.escaped("a\\x1b") == "a\\\\x1b" && SafeText.escaped("a\u{1b}") == "a\\x1b")
    }

    @Test func randomStringsRoundTripAndDistinctInputsStayDistinct() {
        var rng = SplitMix64(seed: 7)
        var seen: [String: String] = [:]
        for _ in 0..<20_000 {
            var v = String.UnicodeScalarView()
            for _ in 0..<Int.random(in: 0...8, using: &rng) {
                // Mostly the interesting ranges: ASCII, C1, and the escapes' own characters.
                let own = Array("\\xu{}".unicodeScalars).randomElement(using: &rng)!.value
                let pick = [UInt32.random(in: 0...0x7f, using: &rng), UInt32.random(in: 0x80...0xff, using: &rng),
                            UInt32.random(in: 0x2000...0x206f, using: &rng), own,
                            UInt32.random(in: 0...0x10ffff, using: &rng)].randomElement(using: &rng)!
                if let c = Unicode.Scalar(pick) { v.append(c) }
            }
            let s = String(v)
            let e = SafeText.escaped(s)
            #expect(Self.isTerminalSafe(e) && Self.unescape(e) == s, "\(s.debugDescription) → \(e.debugDescription)")
            // Compared as scalars: Swift's String equality would merge canonically equivalent inputs.
            let key = e.unicodeScalars.map { String($0.value) }.joined(separator: ",")
            if let other = seen[key] { #expect(other.unicodeScalars.elementsEqual(s.unicodeScalars)) }
            seen[key] = s
        }
    }

    @Test func bytesThatAreNotUTF8AreEscapedByteByByte() {
        #expect(SafeText.escaped(bytes: [0x61, 0xff, 0x62]) == "a\\xff" + "b")
        #expect(SafeText.escaped(bytes: [0xc0, 0x80]) == "\\xc0\\x80")
        #expect(SafeText.escaped(bytes: [0xed, 0xa0, 0x80]) == "\\xed\\xa0\\x80")
        #expect(SafeText.escaped(bytes: Array("ok é 🙂".utf8)) == "ok é 🙂")
        for a in 0...255 {
            for b in stride(from: 0, through: 255, by: 3) {
                let e = SafeText.escaped(bytes: [UInt8(a), UInt8(b)])
                #expect(Self.isTerminalSafe(e), "\(a) \(b): \(e.debugDescription)")
                if let s = String(validating: [UInt8(a), UInt8(b)], as: UTF8.self) { #expect(e == SafeText.escaped(s)) }
            }
        }
    }

    @Test func printablePathsHideNothingATerminalWouldActOn() {
        for name in ["a\u{1b}[2J", "a\u{9b}31m", "invoice\u{202e}fdp.exe", "a\u{2028}b", "a\u{200b}b"] {
            let p = printable(Array(name.utf8))
            #expect(Self.isTerminalSafe(p), "\(name.debugDescription) → \(p.debugDescription)")
        }
        #expect(printable(Array("plain/é/日本".utf8)) == "plain/é/日本")
        #expect(printable([0x61, 0xff]) == "a\\xff")
    }

    @Test func auditFieldsAreBoundedAtACharacterBoundary() {
        let long = String(repeating: "é", count: 10_000)
        let f = SafeText.auditField(long)
        #expect(f.utf8.count <= SafeText.maxAuditFieldBytes && f.hasSuffix("bytes]") && f.hasPrefix("éé"))
        let nuls = SafeText.auditField(String(repeating: "\u{0}", count: 5000))
        #expect(nuls.utf8.count <= SafeText.maxAuditFieldBytes && !nuls.contains("\u{0}"))
        #expect(SafeText.auditField("short") == "short")
    }

    @Test func freeTextRuleAllowsPrintableTextOnly() {
        #expect(SafeText.isValidFreeText("Debian GNU/Linux 12 (bookworm)"))
        #expect(SafeText.isValidFreeText("Ubuntu 24.04 LTS — 日本語 \\ ok"))
        for bad in ["", "a\u{0}", "a\u{1b}[2J", "a\nb", "a\u{7f}", "a\u{9b}", "a\u{202e}", "a\u{2028}", "a\u{200b}",
                    String(repeating: "x", count: 129), " lead", "trail "] {
            #expect(!SafeText.isValidFreeText(bad), "\(bad.debugDescription) accepted")
        }
        #expect(SafeText.isValidFreeText(String(repeating: "x", count: 128)))
    }

    @Test func terminalSafeJSONKeepsTheValue() throws {
        var rng = SplitMix64(seed: 11)
        for _ in 0..<2000 {
            let s = String(String.UnicodeScalarView((0..<6).compactMap { _ in
                Unicode.Scalar([UInt32.random(in: 0...0x3000, using: &rng),
                                UInt32.random(in: 0x10000...0x10ffff, using: &rng)].randomElement(using: &rng)!)
            }))
            let json = String(decoding: try JSONEncoder().encode(["k": s]), as: UTF8.self)
            let safe = SafeText.terminalSafeJSON(json)
            #expect(Self.isTerminalSafe(safe.replacingOccurrences(of: "\n", with: "")))
            let back = try JSONDecoder().decode([String: String].self, from: Data(safe.utf8))
            #expect(back["k"].map { Array($0.unicodeScalars) } == Array(s.unicodeScalars),
                    "\(s.debugDescription) → \(safe)")
        }
    }
}

import Foundation
import Testing
@testable import RedoubtCore

/// The strict pre-check of request JSON: what it refuses, that it accepts what encoders
/// write, and that no input crashes it or gets past it that Foundation would not parse.
@Suite struct StrictJSONTests {
    func problem(_ s: String) -> String? {
        do { try StrictJSON.validate(Array(s.utf8)); return nil } catch { return error.detail }
    }

    @Test func refusesWhatTwoReadersCouldReadDifferently() {
        let cases: [(String, String)] = [
            (#"{"dryRun":true,"dryRun":false}"#, #"duplicate key "dryRun" at byte 15"#),
            (#"{"dryRun":true,"dry\u0052un":false}"#, #"duplicate key "dryRun""#),
            (#"{"a":[{"b":1},{"b":2,"c":{"d":1,"d":1}}]}"#, #"duplicate key "d" (in a.c)"#),
            (#"{"a":1} {"a":2}"#, "trailing bytes after the JSON value at byte 8"),
            (#"{"a":1}x"#, "trailing bytes"),
            (String(repeating: "[", count: 33) + String(repeating: "]", count: 33), "nesting deeper than 32 levels"),
            (#"{"n":1e400}"#, "number 1e400 out of range (in n)"),
            (#"{"n":-9223372036854775809}"#, "out of range (integers fit in 64 bits)"),
            (#"{"n":01}"#, "leading zero"),
            (#"{"n":1.}"#, "digit after '.'"),
            (#"{"n":NaN}"#, "unexpected byte"),
            (#"{"s":"a\u0000"#, "not closed"),
            ("{\"s\":\"a\u{1}\"}", "raw control character"),
            (#"{"s":"\ud800"}"#, "lone high surrogate"),
            (#"{"s":"\udc00"}"#, "lone low surrogate"),
            (#"{"s":"\x41"}"#, "unknown escape"),
            (#"{'s':1}"#, "key must be a string"),
            (#"{"s":1,}"#, "key must be a string"),
            (#"[1,]"#, "unexpected byte"),
            ("", "no JSON value"),
            ("   ", "no JSON value"),
            ("{\"a\":tru}", "expected true"),
        ]
        for (json, expected) in cases {
            let p = problem(json)
            #expect(p?.contains(expected) == true, "\(json.prefix(60)): \(p ?? "accepted")")
        }
        do { try StrictJSON.validate([0x22, 0xff, 0x22]); Issue.record("invalid UTF-8 accepted") } catch {
            #expect(error.detail.contains("not UTF-8"))
        }
        do { try StrictJSON.validate(Array(String(repeating: "[", count: 100).utf8)) } catch {
            #expect(error.code == .limitExceeded)
        }
    }

    @Test func acceptsWhatEncodersWrite() {
        for json in [#"{}"#, #"[]"#, #"{"a":{"a":{"a":1}}}"#, " {\"dryRun\" : true}\n",
                     #"{"s":"\ud83d\ude00 \u00e9 \" \\ \/"}"#,
                     #"{"n":[0,-0,1.5e-3,9223372036854775807,-9223372036854775808,1E+2,1e-400]}"#,
                     "null", "\"x\"", "12",
                     String(repeating: "[", count: 32) + String(repeating: "]", count: 32), #"{"a":1,"A":2,"a ":3}"#] {
            #expect(problem(json) == nil, "\(json.prefix(60)): \(problem(json) ?? "")")
        }
    }

    /// A random JSON value with distinct keys per object, `depth` levels at most.
    func randomValue(_ rng: inout SplitMix64, depth: Int) -> Any {
        switch Int.random(in: 0..<(depth > 0 ? 7 : 5), using: &rng) {
        case 0: return NSNull()
        case 1: return Bool.random(using: &rng)
        case 2: return Int64.random(in: Int64.min...Int64.max, using: &rng)
        case 3: return Double.random(in: -1e300...1e300, using: &rng)
        case 4: return String(String.UnicodeScalarView((0..<Int.random(in: 0...6, using: &rng)).compactMap { _ in
            Unicode.Scalar(UInt32.random(in: 0...0x1_0000, using: &rng)) }))
        case 5: return (0..<Int.random(in: 0...4, using: &rng)).map { _ in randomValue(&rng, depth: depth - 1) }
        default:
            var o: [String: Any] = [:]
            for i in 0..<Int.random(in: 0...4, using: &rng) {
                o["k\(i)\(Int.random(in: 0...9, using: &rng))"] = randomValue(&rng, depth: depth - 1)
            }
            return o
        }
    }

    @Test func acceptsRandomDocumentsFoundationWrites() throws {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<3000 {
            let doc = ["root": randomValue(&rng, depth: 6)]
            let data = try JSONSerialization.data(withJSONObject: doc, options: [.fragmentsAllowed])
            let text = String(decoding: data, as: UTF8.self)
            #expect(problem(text) == nil, "\(text.prefix(200))")
        }
    }

    /// Mutated documents: never a crash, and nothing accepted that Foundation cannot parse.
    @Test func mutatedDocumentsNeverCrashAndAcceptedOnesParse() throws {
        var rng = SplitMix64(seed: 99)
        let alphabet = Array(#"{}[]",:"\u0061 01-.eE+truefalsenull"#.utf8) + [0x00, 0x0a, 0xff, 0xc3, 0xa9]
        var accepted = 0
        for _ in 0..<20_000 {
            let doc = ["root": randomValue(&rng, depth: 4), "dup": 1] as [String: Any]
            var b = Array(try JSONSerialization.data(withJSONObject: doc))
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                guard !b.isEmpty else { break }
                let at = Int.random(in: 0..<b.count, using: &rng)
                switch Int.random(in: 0..<4, using: &rng) {
                case 0: b[at] = alphabet.randomElement(using: &rng)!
                case 1: b.remove(at: at)
                case 2: b.insert(alphabet.randomElement(using: &rng)!, at: at)
                default: b = Array(b[..<at])
                }
            }
            if (try? StrictJSON.validate(b)) != nil {
                accepted += 1
                let parsed = try? JSONSerialization.jsonObject(with: Data(b), options: [.fragmentsAllowed])
                #expect(parsed != nil,
                        "accepted but Foundation refuses: \(String(decoding: b, as: UTF8.self).prefix(200))")
            }
        }
        #expect(accepted > 100)
    }

    @Test func deepInputCannotExhaustTheStack() {
        for open in ["[", "{\"a\":"] {
            let b = Array(String(repeating: open, count: 200_000).utf8)
            do { try StrictJSON.validate(b); Issue.record("accepted") } catch { #expect(error.code == .limitExceeded) }
        }
    }
}

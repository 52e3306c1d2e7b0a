import Foundation
import RedoubtCore

/// The one way a JSON request body becomes a value: `StrictJSON` first, so that nothing
/// two readers could read differently (a repeated key, trailing bytes, a number that does
/// not fit) reaches `JSONDecoder`; then decoding, with errors that name the field.
enum RequestJSON {
    /// Decodes `bytes` as `T`, or throws a 400 `E_BAD_REQUEST` that names the problem.
    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        do { try StrictJSON.validate(bytes) } catch {
            throw ServerError.badRequest("request body refused: \(error.detail) (docs/PROTOCOL.md §3.1)")
        }
        do { return try JSONDecoder().decode(T.self, from: Data(bytes)) } catch let e as DecodingError {
            throw ServerError.badRequest("request body is not a valid \(T.self): \(describe(e))")
        } catch {
            throw ServerError.badRequest("request body is not a valid \(T.self): \(error)")
        }
    }

    /// A decoding error in a line, naming the field by its path (`a.b[2]`).
    static func describe(_ e: DecodingError) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            let p = keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return p.isEmpty ? "the body" : String(p.drop { $0 == "." })
        }
        let text: String
        switch e {
        case .keyNotFound(let key, let c): text = "\(path(c.codingPath + [key])) is missing"
        case .typeMismatch(let t, let c): text = "\(path(c.codingPath)) must be \(t)"
        case .valueNotFound(let t, let c): text = "\(path(c.codingPath)) must be \(t), not null"
        case .dataCorrupted(let c): text = "\(path(c.codingPath)): \(c.debugDescription)"
        @unknown default: text = "\(e)"
        }
        return SafeText.bounded(SafeText.escaped(text), maxBytes: 300)
    }
}

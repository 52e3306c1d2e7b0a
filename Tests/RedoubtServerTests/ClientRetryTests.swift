import Foundation
import NIOSSL
@testable import RedoubtClient
import Testing

/// What the client does when a connection closes before any answer, as when a server's
/// idle timeout closes it just as the pool hands it out. The Redoubt server cannot be
/// made to lose that race on demand, so a plain-HTTP listener of the test's own plays the
/// network: it closes the first connection once it has read a whole request, and answers
/// on the next.
@Suite struct ClientRetryTests {
    /// A loopback listener: the first connection is closed unanswered once its request
    /// has arrived; each later one gets `200` and `answer`. Keeps each request's first line.
    final class DroppingListener: @unchecked Sendable {
        let port: Int
        private let fd: Int32
        private let lock = NSLock()
        private var requests: [String] = []

        init(answer: String) throws {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = 0
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p in
                    bind(fd, p, len) == 0 && listen(fd, 8) == 0 && getsockname(fd, p, &len) == 0
                }
            }
            guard bound else {
                close(fd)
                throw POSIXError(.EADDRNOTAVAIL)
            }
            self.fd = fd
            port = Int(UInt16(bigEndian: addr.sin_port))
            Thread.detachNewThread { [self] in
                var first = true
                while true {
                    let c = accept(fd, nil, nil)
                    guard c >= 0 else { return }
                    let request = Self.readRequest(c)
                    lock.withLock { requests.append(request) }
                    if !first {
                        let reply = "HTTP/1.1 200 OK\r\ncontent-length: \(answer.utf8.count)\r\n"
                            + "connection: close\r\n\r\n\(answer)"
                        _ = Array(reply.utf8).withUnsafeBytes { write(c, $0.baseAddress, $0.count) }
                    }
                    first = false
                    close(c)
                }
            }
        }

        /// The request line of what arrived on `c`, read up to the end of its declared body.
        static func readRequest(_ c: Int32) -> String {
            var got: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(c, &buf, buf.count)
                guard n > 0 else { break }
                got += buf[0..<n]
                let text = String(decoding: got, as: UTF8.self)
                guard let end = text.range(of: "\r\n\r\n") else { continue }
                let length = text[..<end.lowerBound].split(separator: "\r\n")
                    .first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                if text[end.upperBound...].utf8.count >= length { break }
            }
            return String(String(decoding: got, as: UTF8.self).split(separator: "\r\n").first ?? "")
        }

        var requestLines: [String] { lock.withLock { requests } }

        func stop() {
            shutdown(fd, Int32(SHUT_RDWR))
            close(fd)
        }
    }

    func client(_ port: Int) throws -> APIClient {
        try APIClient(url: "http://127.0.0.1:\(port)", tls: .makeClientConfiguration(), credential: nil,
            poolIdleSeconds: 1)
    }

    @Test func anIdempotentPostIsSentAgainWhenItsConnectionClosesUnanswered() async throws {
        let listener = try DroppingListener(answer: "done")
        defer { listener.stop() }
        let c = try client(listener.port)
        let r = try await c.send(.POST, "/v1/snapshots", body: Array("manifest".utf8), idempotent: true)
        await c.shutdown()
        #expect(String(decoding: r.body, as: UTF8.self) == "done")
        #expect(listener.requestLines == ["POST /v1/snapshots HTTP/1.1", "POST /v1/snapshots HTTP/1.1"])
    }

    @Test func anyOtherPostIsNotSentAgainAndTheErrorNamesIt() async throws {
        let listener = try DroppingListener(answer: "done")
        defer { listener.stop() }
        let c = try client(listener.port)
        do {
            _ = try await c.send(.POST, "/v1/enroll", body: Array("token".utf8))
            Issue.record("a POST whose connection closed unanswered succeeded")
        } catch let e as APIError {
            #expect(e.code == "E_CONNECT")
            #expect(e.message.contains("POST /v1/enroll"), "the error does not name the request: \(e.message)")
        }
        await c.shutdown()
        #expect(listener.requestLines == ["POST /v1/enroll HTTP/1.1"], "an enrollment was sent twice")
    }
}

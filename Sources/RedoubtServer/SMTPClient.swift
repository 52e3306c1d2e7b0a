import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import RedoubtCore

/// A minimal SMTP client for notifications: RFC 5321 submission, STARTTLS (RFC 3207) and
/// AUTH PLAIN (RFC 4954). It sends one message per connection and says which step failed.
enum SMTPClient {
    struct Settings: Sendable {
        var host: String
        var port: Int
        var starttls: Bool
        /// User and password, sent only inside TLS.
        var credentials: (user: String, password: String)?
        /// A PEM file of CAs to trust for STARTTLS (nil: the system's).
        var caFile: String?
    }

    struct Message: Sendable {
        var from: String
        var to: [String]
        var subject: String
        var body: String
    }

    /// HOST:PORT, checked.
    static func address(_ s: String) throws -> (host: String, port: Int) {
        guard let (h, p) = ServerHome.splitHostPort(s), !h.isEmpty, (1...65535).contains(p) else {
            throw ServerError.badRequest("--smtp \(SafeText.echo(s)) is not HOST:PORT (e.g. mail.example.org:587)")
        }
        return (h, p)
    }

    /// An address for a MAIL FROM/RCPT TO command and a header: no line breaks, no brackets.
    static func checkMailbox(_ s: String) throws {
        let bad = s.unicodeScalars.contains { $0.value < 0x21 || $0 == "<" || $0 == ">" || $0.value == 0x7f }
        guard !bad, s.contains("@"), s.utf8.count <= 254 else {
            throw ServerError.badRequest("\(SafeText.echo(s)) is not a mail address (user@example.org)")
        }
    }

    static func send(_ m: Message, _ s: Settings) async throws {
        let (stream, cont) = AsyncStream<String>.makeStream()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(30))
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture { try ch.pipeline.syncOperations.addHandler(LineHandler(cont)) }
            }
            .connect(host: s.host, port: s.port).get()
        defer { channel.close(promise: nil) }
        var lines = stream.makeAsyncIterator()

        func reply(_ step: String, _ ok: Set<Int>) async throws -> [String] {
            var got: [String] = []
            while let line = await lines.next() {
                got.append(line)
                let chars = Array(line)
                if chars.count < 4 || chars[3] == " " { break }
            }
            guard let last = got.last, let code = Int(last.prefix(3)), ok.contains(code) else {
                throw ServerError(502, "E_NOTIFY", "SMTP \(s.host):\(s.port) refused \(step): "
                                  + (got.last.map { SafeText.echo($0, maxBytes: 200) } ?? "connection closed"))
            }
            return got
        }
        func command(_ line: String) async throws {
            try await channel.writeAndFlush(ByteBuffer(string: line + "\r\n"))
        }

        _ = try await reply("the connection", [220])
        try await command("EHLO redoubt")
        var ehlo = try await reply("EHLO", [250])
        if s.starttls {
            guard ehlo.contains(where: { $0.dropFirst(4).uppercased().hasPrefix("STARTTLS") }) else {
                throw ServerError(502, "E_NOTIFY", "SMTP \(s.host):\(s.port) does not offer STARTTLS")
            }
            try await command("STARTTLS")
            _ = try await reply("STARTTLS", [220])
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.minimumTLSVersion = .tlsv12
            if let ca = s.caFile { tls.trustRoots = .file(ca) }
            let context = try NIOSSLContext(configuration: tls)
            let host = s.host
            try await channel.eventLoop.submit {
                let ssl = try NIOSSLClientHandler(context: context,
                                                  serverHostname: MetricsListener.isIPAddress(host) ? nil : host)
                try channel.pipeline.syncOperations.addHandler(ssl, position: .first)
            }.get()
            try await command("EHLO redoubt")
            ehlo = try await reply("EHLO after STARTTLS", [250])
        }
        if let c = s.credentials {
            // Why: a password is never sent outside TLS.
            guard s.starttls else {
                throw ServerError.badRequest("SMTP credentials need --starttls: a password is never sent in the clear")
            }
            let token = Data(([0] + Array(c.user.utf8) + [0] + Array(c.password.utf8))).base64EncodedString()
            try await command("AUTH PLAIN \(token)")
            _ = try await reply("AUTH PLAIN (check the credentials file)", [235])
        }
        try await command("MAIL FROM:<\(m.from)>")
        _ = try await reply("MAIL FROM", [250])
        for r in m.to {
            try await command("RCPT TO:<\(r)>")
            _ = try await reply("RCPT TO \(r)", [250, 251])
        }
        try await command("DATA")
        _ = try await reply("DATA", [354])
        try await channel.writeAndFlush(ByteBuffer(string: Self.data(m)))
        _ = try await reply("the message", [250])
        try? await command("QUIT")
    }

    /// The message as sent after DATA: headers, body with lines starting "." doubled, and
    /// the terminating ".".
    static func data(_ m: Message) -> String {
        func clean(_ s: String) -> String {
            String(s.unicodeScalars.map { $0.value < 0x20 ? " " : Character($0) })
        }
        let date = DateFormatter()
        date.locale = Locale(identifier: "en_US_POSIX")
        date.timeZone = TimeZone(identifier: "UTC")
        date.dateFormat = "EEE, dd MMM yyyy HH:mm:ss +0000"
        let headers = [
            "From: <\(m.from)>", "To: " + m.to.map { "<\($0)>" }.joined(separator: ", "),
            "Subject: \(clean(m.subject))", "Date: \(date.string(from: Date()))",
            "Message-ID: <\(UUID().uuidString.lowercased())@redoubt>", "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit",
        ]
        let body = m.body.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            let l = String(line).replacingOccurrences(of: "\r", with: "")
            return l.hasPrefix(".") ? "." + l : l
        }
        return (headers + [""] + body + ["."]).joined(separator: "\r\n") + "\r\n"
    }

    /// Splits what the server sends into lines.
    final class LineHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let cont: AsyncStream<String>.Continuation
        var pending: [UInt8] = []
        init(_ cont: AsyncStream<String>.Continuation) { self.cont = cont }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var buf = unwrapInboundIn(data)
            pending += buf.readBytes(length: buf.readableBytes) ?? []
            while let i = pending.firstIndex(of: 0x0a) {
                var line = Array(pending[..<i])
                if line.last == 0x0d { line.removeLast() }
                pending.removeSubrange(...i)
                cont.yield(String(decoding: line, as: UTF8.self))
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            cont.finish()
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            cont.finish()
            context.close(promise: nil)
        }
    }
}

import Foundation
import Testing
@testable import RedoubtServer

/// The body rate floor (docs/PROTOCOL.md §3.2.1): a body that trickles is cut however long
/// it could keep the idle timer from firing; an honest slow upload is not.
@Suite(.serialized) struct BodyRateFloorTests {
    @Test func theMeterJudgesEachWindowOnlyAfterTheGrace() {
        var m = BodyRateMeter(floor: 100, window: 2, grace: 5, now: 0)
        // One byte a second: nothing is judged during the grace period.
        for t in 1...4 { #expect(m.add(1, now: Double(t)) == nil) }
        // The first arrival past the grace judges the window so far (5 bytes in 5 s).
        #expect(m.add(1, now: 5) == 1)

        var honest = BodyRateMeter(floor: 100, window: 2, grace: 1, now: 0)
        for t in 1...20 { #expect(honest.add(101, now: Double(t)) == nil, "second \(t)") }
        // One slow window after many fast ones is judged on its own.
        #expect(honest.add(10, now: 22.5) == 4)
        // A short body whose client stalled is not cut by the bytes that complete it.
        var short = BodyRateMeter(floor: 500, window: 3, grace: 1, now: 0)
        #expect(short.add(6, now: 3.5, completes: true) == nil)
        var unfinished = BodyRateMeter(floor: 500, window: 3, grace: 1, now: 0)
        #expect(unfinished.add(6, now: 3.5) == 6 / 3.5)
    }

    @Test func aTrickleBelowTheFloorIsCutAndAnUploadAboveIsNot() async throws {
        var limits = RequestLimitsTests.testLimits()
        limits.minBodyBytesPerSecond = 500
        limits.bodyRateWindowSeconds = 3
        limits.bodyRateGraceSeconds = 1
        // The other timeouts are not under test: generous, so that a machine loaded by the whole
        // suite in parallel cannot close a connection before the floor does.
        limits.idleTimeoutSeconds = 60
        limits.handshakeTimeoutSeconds = 60
        let suite = RequestLimitsTests()
        let w = try await suite.world(limits)
        // Why the catch: a world not stopped takes the whole test process down with it.
        do {
            let rss = vmRSS()
            let id = String(repeating: "ab", count: 32)
            let piece = 0.25

            // The taken host trickles a pack body at a tenth of the floor, with its own credential.
            let slow = try await RawConnection.open(port: w.port, tls: try suite.tls(w, asWriter: true))
            let head = "PUT /v1/packs/\(id) HTTP/1.1\r\nhost: localhost\r\ncontent-length: "
            try await slow.send(Array("\(head)\(1 << 20)\r\n\r\n".utf8))
            // One window is 3 s (3.3 s measured alone). The suites running alongside have held the
            // cut back to 22 s on PostgreSQL: the meter starts when the handler starts reading, after
            // the handshake and the caller's lookup in a catalog the whole suite shares. The bound tells a
            // floor at work from a trickle that is never cut (this body would take 5.8 hours).
            let started = Date()
            while slow.isOpen, Date().timeIntervalSince(started) < 90 {
                try? await slow.send([UInt8](repeating: 0x41, count: Int(500 * 0.1 * piece)))
                try await Task.sleep(nanoseconds: UInt64(piece * 1e9))
            }
            let cutAfter = Date().timeIntervalSince(started)
            let answer = await slow.response(within: 15)
            #expect(answer?.status == 408 && answer?.body.contains("E_TOO_SLOW") == true,
                "\(String(describing: answer))")
            #expect(await slow.waitClosed(within: 15), "the trickling connection stayed open")
            #expect(cutAfter < 80, "cut only after \(cutAfter) s")
            #expect(try await w.server.service.catalog.pack(tenant: "acme", id: id) == nil)

            // An honest slow upload above the floor, for longer than a window, is read whole (and,
            // being random bytes, refused as no pack: 422, not 408). It paces itself by the clock
            // at 32 times the floor: a window is judged at its first arrival, so after a stall of the
            // loaded machine one TLS record of a quarter second's bytes must still clear the floor.
            let rate = 500.0 * 32, duration = 8.0
            let size = Int(rate * duration)
            let ok = try await RawConnection.open(port: w.port, tls: try suite.tls(w, asWriter: true))
            try await ok.send(Array("\(head)\(size)\r\n\r\n".utf8))
            let begun = Date()
            var sent = 0
            while sent < size {
                let due = min(size, Int(rate * (Date().timeIntervalSince(begun) + piece)))
                if due > sent {
                    try await ok.send((sent..<due).map { _ in UInt8.random(in: 0...255) })
                    sent = due
                }
                try await Task.sleep(nanoseconds: UInt64(piece * 1e9))
            }
            // Why 60 s: the answer follows the caller's lookup in the catalog the suites alongside
            // share, which has held a handler back by over 20 s on PostgreSQL.
            let honest = await ok.response(within: 60)
            #expect(honest?.status == 422,
                """
                    an upload above the floor was answered \(String(describing: honest)), its connection \
                    \(ok.isOpen ? "still open" : "closed")
                    """)
            await ok.close()
            print("server RSS: before \(rss >> 10) KiB, after \(vmRSS() >> 10) KiB (in-process server); trickle cut "
                + "after "
                  + String(format: "%.2f", cutAfter) + " s")

            // The cut is in the audit log, under the host that trickled.
            let audit = try await w.server.admin.audit()
            #expect(audit.contains {
                        $0.action == "upload-pack" && $0.actor.contains("web1") && $0.detail.contains("E_TOO_SLOW")
                    },
                    "\(audit.suffix(3).map { "\($0.action) \($0.outcome) \($0.detail)" })")
            try await w.victimRestores()
        } catch {
            await w.stop()
            throw error
        }
        await w.stop()
    }

    @Test func theFloorIsALimitWithUnits() throws {
        let l = try ServerLimits().applying(["body-rate-floor=2K", "body-rate-window=1m", "body-rate-grace=5s"])
        #expect(l.minBodyBytesPerSecond == 2048 && l.bodyRateWindowSeconds == 60 && l.bodyRateGraceSeconds == 5)
        #expect(ServerLimits().minBodyBytesPerSecond == 1024 && ServerLimits().bodyRateWindowSeconds == 30)
        #expect(throws: ServerError.self) { try ServerLimits().applying(["body-rate-floor=0"]) }
    }
}

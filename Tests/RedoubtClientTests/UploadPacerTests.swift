import Testing
@testable import RedoubtClient

/// `--limit-upload`'s pacing, with the time given: no clock, no sleep.
@Suite struct UploadPacerTests {
    @Test func uploadsWaitUntilTheEarlierOnesHaveUsedTheirShareOfTheRate() {
        var p = UploadPacer(bytesPerSecond: 1_000_000)
        #expect(p.delay(bytes: 4_000_000, now: .zero) == .zero)
        // The first upload's budget lasts 4 s: one asked for at 1 s waits 3 s.
        #expect(p.delay(bytes: 2_000_000, now: .seconds(1)) == .seconds(3))
        // That one ends at 6 s; one asked for later starts at once.
        #expect(p.delay(bytes: 1_000_000, now: .seconds(10)) == .zero)
        // Idle time is not saved up: right after, the next waits for the last one's 1 s.
        #expect(p.delay(bytes: 1, now: .seconds(10)) == .seconds(1))
    }

    @Test func theAverageRateOverManyUploadsStaysAtTheLimit() {
        var p = UploadPacer(bytesPerSecond: 2 << 20)
        var now = Duration.zero
        for _ in 0..<100 { now += p.delay(bytes: 4 << 20, now: now) }
        // 100 packs of 4 MiB at 2 MiB/s: the last starts after 99 × 2 s.
        #expect(now == .seconds(198))
    }
}

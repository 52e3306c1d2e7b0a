import Foundation
import Glibc
@testable import RedoubtClient
import RedoubtCore
import Testing

/// The walk runs on its own thread ahead of the snapshot builder. What the builder sees
/// must be exactly what a walk in its own task would give, in the same order; the walk
/// must stay within its bound, hand errors over, and close what it opened when stopped.
@Suite struct WalkAheadTests {
    /// A tree with directories of very different widths, nested several deep, with a
    /// symlink and a hard link (whose first name the walk order decides).
    static func makeTree(_ root: String) throws {
        try Fixture.check(mkdir(root, 0o755), "mkdir")
        for d in 0..<12 {
            var dir = root + "/d\(d)"
            try Fixture.check(mkdir(dir, 0o755), "mkdir")
            for f in 0..<(d * 7) { try Fixture.write(dir + "/f\(f)", Fixture.bytes("file \(d) \(f)\n")) }
            for level in 0..<(d % 4) {
                dir += "/sub\(level)"
                try Fixture.check(mkdir(dir, 0o750), "mkdir")
                try Fixture.write(dir + "/leaf", Fixture.bytes("leaf \(d) \(level)\n"))
            }
        }
        try Fixture.check(symlink("d3/f1", root + "/link"), "symlink")
        try Fixture.check(link(root + "/d5/f2", root + "/d1/hard"), "link")
    }

    static func walker(_ root: String) -> Walker {
        var w = Walker(paths: [Array(root.utf8)], names: [Array("src".utf8)],
                       snapshotPaths: [Array(root.dropFirst().utf8)], excludes: ["*.skip"])
        w.fileXattrsFromReader = true
        return w
    }

    /// One line per event: what a builder can see of it.
    static func describe(_ event: WalkEvent) -> String {
        switch event {
        case .listed(let d):
            let entries = d.entries.map { e in
                "\(String(decoding: e.node.name, as: UTF8.self)):\(e.node.type):\(e.node.size):"
                    + String(decoding: e.node.linkTarget, as: UTF8.self)
            }
            let path = String(decoding: d.fullPath, as: UTF8.self)
            return "listed \(path) slot \(d.slot) [\(entries.joined(separator: " "))]"
        case .closed(let d): return "closed \(String(decoding: d.fullPath, as: UTF8.self))"
        }
    }

    @Test func theBuilderSeesWhatAWalkInItsOwnTaskGives() async throws {
        let work = try Fixture.tempDirectory("walkahead")
        defer { Fixture.remove(work) }
        let root = work + "/src"
        try Self.makeTree(root)
        var direct = Self.walker(root)
        var expected: [String] = []
        while let e = try direct.next() { expected.append(Self.describe(e)) }
        #expect(expected.count > 40)

        for limit in [1, 5, 64, WalkAhead.defaultLimit] {
            let ahead = WalkAhead(Self.walker(root), limit: limit)
            var got: [String] = []
            while let e = try await ahead.next() {
                got.append(Self.describe(e))
                // A slow taker: the walk must wait at its bound, not run on.
                if limit == 5 { try await Task.sleep(for: .milliseconds(1)) }
            }
            #expect(got == expected, "limit \(limit)")
            let walked = try #require(ahead.finished)
            #expect(walked.filesFound == direct.filesFound)
            #expect(walked.bytesFound == direct.bytesFound)
            #expect(walked.warnings.count == direct.warnings.count)
            // The widest directory holds 77 files; the walk may pass its bound by one listing.
            #expect(ahead.peakWaiting <= limit + 80, "limit \(limit): \(ahead.peakWaiting) waited")
        }
    }

    @Test func aStoppedWalkClosesTheDirectoriesItHeldOpen() async throws {
        let work = try Fixture.tempDirectory("walkahead-stop")
        defer { Fixture.remove(work) }
        var dir = work + "/src"
        let root = dir
        try Fixture.check(mkdir(dir, 0o755), "mkdir")
        for level in 0..<30 {
            dir += "/l\(level)"
            try Fixture.check(mkdir(dir, 0o755), "mkdir")
            try Fixture.write(dir + "/f", Fixture.bytes("\(level)\n"))
        }
        let ahead = WalkAhead(Self.walker(root), limit: 1)
        for _ in 0..<5 { _ = try await ahead.next() }
        #expect(Self.openBelow(work) > 0, "the walk holds the directories on its way down")
        ahead.stop()
        var waited = 0
        while ahead.finished == nil && waited < 500 {
            try await Task.sleep(for: .milliseconds(10))
            waited += 1
        }
        #expect(ahead.finished != nil, "the walk ended once stopped")
        #expect(Self.openBelow(work) == 0)
    }

    @Test func aWalkThatFindsNothingThrowsToItsTaker() async throws {
        let work = try Fixture.tempDirectory("walkahead-none")
        defer { Fixture.remove(work) }
        let ahead = WalkAhead(Self.walker(work + "/absent"))
        await #expect(throws: ArchiveError.self) { _ = try await ahead.next() }
        #expect(ahead.finished == nil)
    }

    /// Descriptors of this process open on something below `path`.
    static func openBelow(_ path: String) -> Int {
        let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return fds.filter { fd in
            ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd)) ?? "")
                .hasPrefix(path)
        }.count
    }
}

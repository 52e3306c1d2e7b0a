import Foundation
import RedoubtStore
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct LocalStoreTests {
    // MARK: The shared contract

    @Test(arguments: StoreConformance.Check.allCases)
    func conformance(_ check: StoreConformance.Check) async throws {
        try await withTempDirectory { base in
            let suite = StoreConformance(makeStore: {
                try LocalStore(root: base.appending(path: "store-" + String(UInt32.random(in: 0 ... .max), radix: 16)))
            })
            try await suite.run(check)
        }
    }

    // MARK: Immutability an attacker with filesystem access meets

    @Test func sealedObjectCarriesTheImmutableFlagPerLsattr() async throws {
        try await withTempDirectory { base in
            let store = try LocalStore(root: base.appending(path: "store"))
            try requireFlagSupport(store)
            let key = try #require(ObjectKey("packs/3f/3fa1"))
            _ = try await store.put(key, [1, 2, 3], retainUntil: Date().addingTimeInterval(3600))
            let flags = try lsattrFlags(store.rootPath + "/packs/3f/3fa1")
            #expect(flags.contains("i"), "lsattr flags: \(flags)")
            #expect(try await store.head(key)?.enforced == true)
        }
    }

    @Test func sealedObjectRefusesDirectUnlinkWriteAndRename() async throws {
        try await withTempDirectory { base in
            let store = try LocalStore(root: base.appending(path: "store"))
            try requireFlagSupport(store)
            let key = try #require(ObjectKey("packs/ab/abcd"))
            // No retention at all: the flag alone must stop a direct attack on the file.
            _ = try await store.put(key, [9, 9, 9], retainUntil: nil)
            let path = store.rootPath + "/packs/ab/abcd"

            #expect(unlink(path) == -1 && errno == EPERM, "unlink of a sealed object must fail with EPERM")
            let writer = open(path, O_WRONLY)
            let writeErrno = errno
            if writer >= 0 { close(writer) }
            #expect(writer == -1 && writeErrno == EPERM, "open for write must fail with EPERM")
            let appender = open(path, O_WRONLY | O_APPEND)
            let appendErrno = errno
            if appender >= 0 { close(appender) }
            #expect(appender == -1 && appendErrno == EPERM, "open for append must fail with EPERM")
            #expect(truncate(path, 0) == -1 && errno == EPERM, "truncate must fail with EPERM")
            #expect(rename(path, path + "-moved") == -1 && errno == EPERM, "rename must fail with EPERM")
            #expect(try await store.get(key) == [9, 9, 9])
        }
    }

    @Test func extendRetentionKeepsTheFlagSet() async throws {
        try await withTempDirectory { base in
            let store = try LocalStore(root: base.appending(path: "store"))
            try requireFlagSupport(store)
            let key = try #require(ObjectKey("snapshots/acme/9c2e"))
            let first = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 + 3600).rounded(.up))
            _ = try await store.put(key, [7], retainUntil: first)
            let path = store.rootPath + "/snapshots/acme/9c2e"
            #expect(try lsattrFlags(path).contains("i"))
            try await store.extendRetention(key, until: first.addingTimeInterval(86400))
            #expect(try lsattrFlags(path).contains("i"))
            #expect(try await store.head(key) == ObjectInfo(key: key, size: 1,
                retainUntil: first.addingTimeInterval(86400), enforced: true))
            // And a no-op extension leaves it sealed too.
            try await store.extendRetention(key, until: first)
            #expect(try lsattrFlags(path).contains("i"))
        }
    }

    @Test func retriedPutResealsAnObjectACrashLeftUnsealed() async throws {
        try await withTempDirectory { base in
            let store = try LocalStore(root: base.appending(path: "store"))
            try requireFlagSupport(store)
            let key = try #require(ObjectKey("packs/00/0001"))
            _ = try await store.put(key, [1, 2], retainUntil: nil)
            // A crash between rename and seal leaves exactly this state.
            try run("/usr/bin/chattr", "-i", store.rootPath + "/packs/00/0001")
            #expect(try await store.head(key)?.enforced == false)
            #expect(try await store.put(key, [1, 2], retainUntil: nil) == .alreadyPresent)
            #expect(try await store.head(key)?.enforced == true)
        }
    }

    /// A put from a file gets exactly a put's lock: the flag, the retain-until, and a retry
    /// that re-seals what a crash left unsealed.
    @Test func putFromFileIsSealedLikeAPut() async throws {
        try await withTempDirectory { base in
            let store = try LocalStore(root: base.appending(path: "store"))
            try requireFlagSupport(store)
            let key = try #require(ObjectKey("packs/fe/fe01"))
            let data = (0..<((2 << 20) + 3)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let file = base.appending(path: "spooled")
            try Data(data).write(to: file)
            let until = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 + 3600).rounded(.up))
            #expect(try await store.put(key, contentsOf: file, retainUntil: until) == .created)
            let path = store.rootPath + "/packs/fe/fe01"
            #expect(try lsattrFlags(path).contains("i"))
            #expect(try await store.head(key) == ObjectInfo(key: key, size: data.count, retainUntil: until,
                enforced: true))
            #expect(unlink(path) == -1 && errno == EPERM, "unlink of an object put from a file must fail with EPERM")
            try run("/usr/bin/chattr", "-i", path)
            #expect(try await store.put(key, contentsOf: file, retainUntil: until) == .alreadyPresent)
            #expect(try await store.head(key)?.enforced == true)
            #expect(try await store.get(key) == data)
            // The source file is the caller's: left in place.
            #expect(FileManager.default.fileExists(atPath: file.path))
        }
    }

    /// A file given up to the store on its own filesystem becomes the object: the same inode,
    /// no name of it left outside the store, the store's mode, and any put's flag and lock. A
    /// file with a second name, or on another filesystem, is copied and left to the caller.
    @Test func aMovedFileBecomesTheObjectOnlyWhereNothingElseReachesIt() async throws {
        try await withTempDirectory { base in
            let store = try LocalStore(root: base.appending(path: "store"))
            try requireFlagSupport(store)
            let data = (0..<((1 << 20) + 5)).map { UInt8(truncatingIfNeeded: $0 &* 13) }
            let until = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 + 3600).rounded(.up))
            func status(_ path: String) -> stat? { var st = stat(); return lstat(path, &st) == 0 ? st : nil }

            let spooled = base.appending(path: "upload-1")
            try Data(data).write(to: spooled)
            chmod(spooled.path, 0o644)
            let inode = try #require(status(spooled.path)).st_ino
            let key = try #require(ObjectKey("packs/ad/ad01"))
            #expect(try await store.put(key, movingFile: spooled, retainUntil: until) == .created)
            let path = store.rootPath + "/packs/ad/ad01"
            let stored = try #require(status(path))
            #expect(stored.st_ino == inode, "the object is a copy, not the moved file")
            #expect(stored.st_nlink == 1 && stored.st_mode & 0o7777 == 0o600, "\(stored.st_nlink) \(stored.st_mode)")
            #expect(!FileManager.default.fileExists(atPath: spooled.path))
            #expect(try lsattrFlags(path).contains("i"))
            #expect(try await store.head(key) == ObjectInfo(key: key, size: data.count, retainUntil: until,
                enforced: true))
            #expect(try await store.get(key) == data)
            #expect(unlink(path) == -1 && errno == EPERM, "unlink of a moved-in object must fail with EPERM")

            // The same bytes again: already present; the file is left to the caller.
            let again = base.appending(path: "upload-2")
            try Data(data).write(to: again)
            #expect(try await store.put(key, movingFile: again, retainUntil: until) == .alreadyPresent)
            #expect(FileManager.default.fileExists(atPath: again.path))

            // A second name could change the object after it is stored: copied instead.
            let linked = base.appending(path: "upload-3"), other = base.appending(path: "other-name")
            let reversed = Array(data.reversed())
            try Data(reversed).write(to: linked)
            #expect(link(linked.path, other.path) == 0)
            let key3 = try #require(ObjectKey("packs/ad/ad03"))
            #expect(try await store.put(key3, movingFile: linked, retainUntil: until) == .created)
            #expect(status(store.rootPath + "/packs/ad/ad03")?.st_ino != status(other.path)?.st_ino)
            #expect(FileManager.default.fileExists(atPath: linked.path))
            #expect(try await store.get(key3) == reversed)

            // Another filesystem (tmpfs): copied.
            let elsewhere = URL(fileURLWithPath: "/dev/shm/redoubt-store-test-\(UInt64.random(in: 1 ... .max))")
            try Data(reversed.prefix(4096)).write(to: elsewhere)
            defer { unlink(elsewhere.path) }
            let key4 = try #require(ObjectKey("packs/ad/ad04"))
            #expect(try await store.put(key4, movingFile: elsewhere, retainUntil: until) == .created)
            #expect(FileManager.default.fileExists(atPath: elsewhere.path))
            #expect(try await store.get(key4) == Array(reversed.prefix(4096)))
            #expect(try await store.head(key4)?.enforced == true)
        }
    }

    @Test func deleteUsesTheCallersClockAtTheLockBoundary() async throws {
        try await withTempDirectory { base in
            let store = try LocalStore(root: base.appending(path: "store"))
            let key = try #require(ObjectKey("packs/ff/ff00"))
            let until = Date(timeIntervalSince1970: 4_000_000_000)
            _ = try await store.put(key, [1], retainUntil: until)
            await #expect(throws: StoreError.self) { try await store.delete(key, now: until.addingTimeInterval(-1)) }
            try await store.delete(key, now: until)
            #expect(try await store.head(key) == nil)
            #expect(!FileManager.default.fileExists(atPath: store.rootPath + "/packs/ff/ff00"))
        }
    }

    @Test func retainUntilIsRoundedUpToAWholeSecond() async throws {
        try await withTempDirectory { base in
            let store = try LocalStore(root: base.appending(path: "store"))
            let key = try #require(ObjectKey("a"))
            _ = try await store.put(key, [1], retainUntil: Date(timeIntervalSince1970: 4_000_000_000.25))
            #expect(try await store.head(key)?.retainUntil == Date(timeIntervalSince1970: 4_000_000_001))
        }
    }

    // MARK: Crash leftovers

    @Test func crashLeftoverTempFilesAreNeverListedAndAreCleanedAtInit() async throws {
        try await withTempDirectory { base in
            let rootURL = base.appending(path: "store")
            let store = try LocalStore(root: rootURL)
            let key = try #require(ObjectKey("packs/12/1234"))
            _ = try await store.put(key, [1, 2, 3], retainUntil: nil)
            let leftovers = [
                store.rootPath + "/.tmp-00112233445566778899aabbccddeeff~",
                store.rootPath + "/packs/12/.tmp-ffeeddccbbaa99887766554433221100~",
            ]
            for path in leftovers {
                #expect(FileManager.default.createFile(atPath: path, contents: Data([0xde, 0xad])))
            }
            if store.immutableFlagSupported {
                // A probe interrupted while sealed must be cleanable too.
                try run("/usr/bin/chattr", "+i", leftovers[0])
            }
            #expect(try await store.list(prefix: "").map(\.key.path) == ["packs/12/1234"])
            #expect(try await store.list(prefix: "packs/12/").map(\.key.path) == ["packs/12/1234"])

            let reopened = try LocalStore(root: rootURL)
            for path in leftovers {
                #expect(!FileManager.default.fileExists(atPath: path), "\(path) should be removed at init")
            }
            #expect(try await reopened.get(key) == [1, 2, 3])
        }
    }

    @Test func foreignFilesAndSymlinksAreNotObjects() async throws {
        try await withTempDirectory { base in
            let store = try LocalStore(root: base.appending(path: "store"))
            let key = try #require(ObjectKey("real"))
            _ = try await store.put(key, [1], retainUntil: nil)
            #expect(FileManager.default.createFile(atPath: store.rootPath + "/Not A Key", contents: Data([1])))
            #expect(symlink("/etc/passwd", store.rootPath + "/link") == 0)
            #expect(try await store.list(prefix: "").map(\.key.path) == ["real"])
            let link = try #require(ObjectKey("link"))
            await #expect(throws: StoreError.self) { _ = try await store.get(link) }
        }
    }

    // MARK: Root directory

    @Test func createsAMissingRootAndItsDirectoriesWithMode0700() async throws {
        try await withTempDirectory { base in
            let rootURL = base.appending(path: "deeper/store")
            let store = try LocalStore(root: rootURL)
            #expect(try mode(of: store.rootPath) == 0o700)
            #expect(try mode(of: base.path + "/deeper") == 0o700)
            _ = try await store.put(try #require(ObjectKey("packs/3f/3fa1")), [1], retainUntil: nil)
            #expect(try mode(of: store.rootPath + "/packs") == 0o700)
            #expect(try mode(of: store.rootPath + "/packs/3f") == 0o700)
        }
    }

    @Test(arguments: [0o755, 0o750, 0o701, 0o770])
    func refusesARootThatGroupOrOthersCanAccess(_ permissions: Int) throws {
        try withTempDirectorySync { base in
            let root = base.appending(path: "open")
            try FileManager.default.createDirectory(at: root, withIntermediateDirectories: false)
            #expect(chmod(root.path, mode_t(permissions)) == 0)
            let error = try #require(throws: StoreError.self) { try LocalStore(root: root) }
            #expect(error.code == .io)
            #expect(error.detail.contains("chmod 700"), "the error must say how to fix it: \(error)")
            #expect(error.key == root.path)
        }
    }

    @Test func refusesARootThatIsAFile() throws {
        try withTempDirectorySync { base in
            let file = base.appending(path: "file")
            #expect(FileManager.default.createFile(atPath: file.path, contents: Data()))
            let error = try #require(throws: StoreError.self) { try LocalStore(root: file) }
            #expect(error.code == .io)
        }
    }

    @Test func aKeyUnderAnExistingObjectIsAnIOErrorNamingTheKey() async throws {
        try await withTempDirectory { base in
            let store = try LocalStore(root: base.appending(path: "store"))
            _ = try await store.put(try #require(ObjectKey("a")), [1], retainUntil: nil)
            let nested = try #require(ObjectKey("a/b"))
            let error = await #expect(throws: StoreError.self) {
                _ = try await store.put(nested, [2], retainUntil: nil)
            }
            #expect(error?.code == .io)
            #expect(error?.key == "a/b")
        }
    }

    // MARK: What this machine supports

    @Test func immutabilityWarningMatchesSupport() throws {
        try withTempDirectorySync { base in
            let store = try LocalStore(root: base.appending(path: "store"))
            #expect(store.immutableFlagSupported == (store.immutabilityWarning == nil))
            if let warning = store.immutabilityWarning {
                #expect(warning.contains("Fix:"), "\(warning)")
            }
            // Nothing of the probe is left behind.
            #expect(try FileManager.default.contentsOfDirectory(atPath: store.rootPath).isEmpty)
        }
    }

    // MARK: Helpers

    /// Cancels (skips, with the store's own reason) a test that needs the flag.
    private func requireFlagSupport(_ store: LocalStore) throws {
        if !store.immutableFlagSupported {
            try Test.cancel("""
                immutable flag unsupported where the tests run: \(store.immutabilityWarning ?? "no reason given")
                """)
        }
    }

    /// The attribute field of `lsattr -d path` (e.g. `----i---------e-------`).
    private func lsattrFlags(_ path: String) throws -> String {
        let output = try run("/usr/bin/lsattr", "-d", path)
        return String(output.split(separator: " ", maxSplits: 1).first ?? "")
    }

    @discardableResult
    private func run(_ tool: String, _ arguments: String...) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "\(tool) \(arguments.joined(separator: " ")) failed: \(output)")
        return output
    }

    private func mode(of path: String) throws -> Int {
        var st = stat()
        try #require(stat(path, &st) == 0, "stat \(path)")
        return Int(st.st_mode & 0o7777)
    }
}

/// A fresh directory under the system temp dir, removed afterwards (immutable flags
/// cleared first, or the removal would fail).
func withTempDirectory(_ body: (URL) async throws -> Void) async throws {
    let base = try makeTempDirectory()
    defer { removeTempDirectory(base) }
    try await body(base)
}

func withTempDirectorySync(_ body: (URL) throws -> Void) throws {
    let base = try makeTempDirectory()
    defer { removeTempDirectory(base) }
    try body(base)
}

private func makeTempDirectory() throws -> URL {
    let base = FileManager.default.temporaryDirectory
        .appending(path: "redoubt-store-tests-" + String(UInt64.random(in: 1 ... .max), radix: 16))
    try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
    return base
}

private func removeTempDirectory(_ base: URL) {
    let chattr = Process()
    chattr.executableURL = URL(fileURLWithPath: "/usr/bin/chattr")
    chattr.arguments = ["-R", "-f", "-i", base.path]
    chattr.standardOutput = FileHandle.nullDevice
    chattr.standardError = FileHandle.nullDevice
    if (try? chattr.run()) != nil { chattr.waitUntilExit() }
    try? FileManager.default.removeItem(at: base)
}

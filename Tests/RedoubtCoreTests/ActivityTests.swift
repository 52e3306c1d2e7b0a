import Crypto
import Foundation
import Testing
@testable import RedoubtCore

/// The host-side ransomware signals (docs/FORMAT.md §6.5), each on its own, and the
/// activity section in a signed manifest.
struct ActivityTests {
    static func sample(_ bytes: [UInt8]) -> HeadSample? { bytes.withUnsafeBytes { HeadSample.measure($0) } }

    static func random(_ n: Int) -> [UInt8] {
        var rng = SystemRandomNumberGenerator()
        return (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    static let prose = Array(String(repeating: "The backup keeps what ransomware cannot reach. ", count: 200).utf8)

    @Test func randomHeadsMeasureNearEightBitsAndTextFarBelow() throws {
        let r = try #require(Self.sample(Self.random(4096)))
        #expect(r.entropy > 7.8)
        #expect(r.unexplainedHighEntropy)
        #expect(!r.textLike)
        let t = try #require(Self.sample(Self.prose))
        #expect(t.entropy < 5)
        #expect(t.textLike)
        #expect(!t.unexplainedHighEntropy)
        #expect(Self.sample(Array(Self.prose.prefix(100))) == nil, "too short to judge")
    }

    @Test func compressedFormatsExplainTheirEntropy() throws {
        let gz = [0x1f, 0x8b, 0x08, 0x00] + Self.random(4092)
        let s = try #require(Self.sample(gz))
        #expect(s.kind == .gzip)
        #expect(s.entropy > 7.5)
        #expect(!s.unexplainedHighEntropy)
        #expect(!s.mismatches(extension: "gz"))
        #expect(s.mismatches(extension: "jpg"), "a gzip stream named .jpg is not a JPEG")
        let pack = Array("PACK".utf8) + Self.random(4000)
        #expect(try #require(Self.sample(pack)).kind == .gitPack)
    }

    @Test func encryptedDocumentsMismatchTheirExtension() throws {
        let encrypted = try #require(Self.sample(Self.random(4096)))
        for ext in ["docx", "jpg", "png", "pdf", "txt", "c"] { #expect(encrypted.mismatches(extension: ext), "\(ext)") }
        #expect(!encrypted.mismatches(extension: "bin"), "an unknown extension promises nothing")
        let png = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a] + Self.random(2000)
        #expect(!(try #require(Self.sample(png))).mismatches(extension: "png"))
        #expect(!(try #require(Self.sample(Self.prose))).mismatches(extension: "txt"))
        // An ELF binary's head is not random: a package upgrade is not flagged.
        let elf = [0x7f, 0x45, 0x4c, 0x46, 2, 1, 1] + [UInt8](repeating: 0, count: 2000)
        let e = try #require(Self.sample(elf))
        #expect(e.kind == .elf)
        #expect(!e.unexplainedHighEntropy)
    }

    @Test func extensionsAndRansomNotes() {
        #expect(ActivityNames.fileExtension(Array("Report.DOCX".utf8)) == "docx")
        #expect(ActivityNames.fileExtension(Array("a.docx.locked".utf8)) == "locked")
        #expect(ActivityNames.fileExtension(Array(".bashrc".utf8)) == "")
        #expect(ActivityNames.fileExtension(Array("noext".utf8)) == "")
        #expect(ActivityNames.fileExtension(Array("x.tar.gz~".utf8)) == "")
        for note in ["HOW_TO_DECRYPT.txt", "_readme.txt", "RESTORE-FILES.html", "!!!READ_ME_TO_DECRYPT!!!.txt",
                     "ransom_note.txt"] {
            #expect(ActivityNames.isRansomNote(Array(note.utf8)), "\(note)")
        }
        for plain in ["README.txt", "readme.md", "restore.c", "notes.txt", "INSTALL"] {
            #expect(!ActivityNames.isRansomNote(Array(plain.utf8)), "\(plain)")
        }
    }

    static func file(_ path: String, inode: UInt64, _ change: ActivityFile.Change,
                     head: HeadSample? = nil) -> ActivityFile {
        ActivityFile(path: Array(path.utf8), device: 1, inode: inode, change: change, head: head)
    }

    @Test func countsAddedChangedDeletedAndRenamedAgainstThePreviousSnapshot() throws {
        let previous = [("/d/a.txt", 1), ("/d/b.txt", 2), ("/d/c.docx", 3), ("/d/gone.txt", 4)].map {
            PreviousFile(path: Array($0.0.utf8), device: 1, inode: UInt64($0.1))
        }
        let text = Self.sample(Self.prose)
        let files = [
            Self.file("/d/a.txt", inode: 1, .unchanged),
            Self.file("/d/b.txt", inode: 2, .changed, head: text),
            Self.file("/d/c.docx.locked", inode: 3, .added, head: Self.sample(Self.random(4096))),
            Self.file("/d/new.txt", inode: 9, .added, head: text),
            Self.file("/d/HOW_TO_DECRYPT.txt", inode: 10, .added),
            Self.file("/e/HOW_TO_DECRYPT.txt", inode: 11, .added),
        ]
        let a = ActivityAnalysis.analyze(files: files, previous: previous, sealedBytesRaw: 1000,
                                         sealedBytesStored: 400)
        #expect(a.hasBaseline)
        #expect(a.filesAdded == 4)
        #expect(a.filesChanged == 1)
        #expect(a.filesDeleted == 2, "c.docx moved away and gone.txt deleted")
        #expect(a.filesRenamed == 1)
        #expect(a.extensionChanged == 1)
        #expect(a.knownRansomExtension == 1)
        #expect(a.topNewExtension == "locked")
        #expect(a.topNewExtensionFiles == 1)
        #expect(a.ransomNoteDirectories == 2)
        #expect(a.sampledFiles == 3)
        #expect(a.highEntropyFiles == 1)
        #expect(a.suspiciousContentFiles == 1)
        #expect(a.sealedBytesRaw == 1000 && a.sealedBytesStored == 400)
    }

    @Test func manyFilesSharingOneNewExtensionAreCounted() {
        let previous = (0..<50).map { PreviousFile(path: Array("/d/f\($0).jpg".utf8), device: 1, inode: UInt64($0)) }
        var files = (0..<50).map { Self.file("/d/f\($0).jpg.xq7", inode: UInt64(100 + $0), .added) }
        files += [Self.file("/d/other.md", inode: 500, .added)]
        let a = ActivityAnalysis.analyze(files: files, previous: previous, sealedBytesRaw: 0, sealedBytesStored: 0)
        #expect(a.topNewExtension == "xq7")
        #expect(a.topNewExtensionFiles == 50)
        #expect(a.filesDeleted == 50)
        #expect(a.filesRenamed == 0, "copies encrypted into new files, originals deleted: new inodes")
        #expect(a.knownRansomExtension == 0)
    }

    @Test func aNewDirectoryOfANewTypeIsNoNewExtension() {
        let previous = [PreviousFile(path: Array("/d/a.txt".utf8), device: 1, inode: 1)]
        let files = (0..<100).map { Self.file("/d/photos/p\($0).heic", inode: UInt64(10 + $0), .added) }
            + [Self.file("/d/a.txt", inode: 1, .unchanged)]
        let a = ActivityAnalysis.analyze(files: files, previous: previous, sealedBytesRaw: 0, sealedBytesStored: 0)
        #expect(a.topNewExtension.isEmpty && a.topNewExtensionFiles == 0)
        #expect(a.filesAdded == 100)
    }

    @Test func withoutAPreviousSnapshotNothingIsCompared() {
        let a = ActivityAnalysis.analyze(files: [Self.file("/d/x.locked", inode: 1, .added)], previous: nil,
                                         sealedBytesRaw: 0, sealedBytesStored: 0)
        #expect(!a.hasBaseline)
        #expect(a.filesAdded == 1)
        #expect(a.knownRansomExtension == 0 && a.topNewExtension.isEmpty && a.filesDeleted == 0)
    }

    @Test func theSectionRoundTripsAndALaterVersionIsSkipped() throws {
        var a = SnapshotActivity()
        a.hasBaseline = true
        a.filesAdded = 3; a.filesDeleted = 300; a.topNewExtension = "locked"; a.topNewExtensionFiles = 299
        a.sealedBytesRaw = 1 << 40; a.sealedBytesStored = 12345
        #expect(try SnapshotActivity.decode(a.encode(), object: "t") == a)
        var later = a.encode()
        later[0] = 2
        #expect(try SnapshotActivity.decode(later, object: "t") == nil)
        var bad = a.encode()
        bad.append(0)
        #expect(throws: CoreError.self) { try SnapshotActivity.decode(bad, object: "t") }
        #expect(throws: CoreError.self) { try SnapshotActivity.decode(Array(a.encode().dropLast()), object: "t") }
    }

    @Test func aManifestWithActivityIsFormatFourSignedAndParsed() throws {
        let keys = TenantKeys.fixedForTests(seed: 1)
        let hostKey = HostSigningKey.fixedForTests(seed: 2)
        var a = SnapshotActivity()
        a.hasBaseline = true
        a.suspiciousContentFiles = 42
        let header = ManifestHeader(tenant: "t", readKeyID: keys.readKey.publicKey.keyID, host: "h",
                                    hostKey: hostKey.publicKey, time: Timestamp(seconds: 1, nanoseconds: 0),
                                    nonce: [UInt8](repeating: 1, count: 16), paths: [Array("/d".utf8)], tags: [],
                                    statistics: SnapshotStatistics(), packs: [], clientVersion: "test",
                                    activity: a)
        let chunk = try #require(ChunkID(bytes: [UInt8](repeating: 7, count: 32)))
        let seal = try #require(ChunkSeal(key: [UInt8](repeating: 8, count: 32), rawLength: 10))
        let m = try Manifest.create(header: header, root: [chunk], rootSeals: [seal], version: 4,
                                    readPublicKey: keys.readKey.publicKey, signingKey: hostKey)
        #expect(m.version == 4)
        let parsed = try Manifest.parse(m.bytes)
        try parsed.verify(tenant: "t", host: "h", hostKey: hostKey.publicKey, readKeyID: keys.readKey.publicKey.keyID)
        #expect(parsed.header.activity == a)
        #expect(try parsed.openRootRefs(readKey: keys.readKey).seals == [seal])
        // Why it is signed: changing a count in the public header breaks the signature.
        var forged = m.bytes
        let at = try #require(forged.indices.reversed().first { forged[$0] == 42 })
        forged[at] = 0
        let reparsed = try Manifest.parse(forged)
        #expect(throws: CoreError.self) {
            try reparsed.verify(tenant: "t", host: "h", hostKey: hostKey.publicKey,
                                readKeyID: keys.readKey.publicKey.keyID)
        }
        // Without root seals there is no format that carries the section.
        #expect(throws: CoreError.self) {
            try Manifest.create(header: header, root: [chunk], readPublicKey: keys.readKey.publicKey,
                                signingKey: hostKey)
        }
    }
}

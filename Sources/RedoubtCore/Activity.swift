/// What changed on the host between its previous snapshot and this one, as the host saw it
/// while it read the changed files: the manifest's `activity` section (docs/FORMAT.md §6.5).
///
/// Public and signed, so the server can score a commit without a key. It is the host's own
/// account: a host whose root is taken can write any numbers here, so the server weighs it
/// beside what it measures itself (docs/PROTOCOL.md §4.9).
public struct SnapshotActivity: Sendable, Hashable, Codable {
    /// The version of this section's encoding that this build writes.
    public static let version: UInt8 = 1
    /// Longest extension kept in ``topNewExtension`` (bytes of UTF-8).
    public static let maxExtensionBytes = 32

    /// Whether the host compared against a previous snapshot (its metadata cache). Without
    /// one every file counts as added and the extension signals are zero.
    public var hasBaseline = false
    public var filesAdded: UInt64 = 0
    public var filesChanged: UInt64 = 0
    public var filesDeleted: UInt64 = 0
    /// Added paths that are a deleted path's file moved (same device and inode).
    public var filesRenamed: UInt64 = 0
    /// Renamed files whose extension changed (`a.docx` → `a.docx.locked` included).
    public var extensionChanged: UInt64 = 0
    /// Added or renamed files whose extension is one ransomware is known to use.
    public var knownRansomExtension: UInt64 = 0
    /// The extension (lowercase, without the dot) that the most files gained while no file of
    /// the previous snapshot had it; empty if none. A file gained it if it was renamed to it
    /// (same inode, other extension) or its name is a previous snapshot's path plus it
    /// (`a.docx` → `a.docx.locked`).
    public var topNewExtension = ""
    /// How many files gained ``topNewExtension``.
    public var topNewExtensionFiles: UInt64 = 0
    /// Directories that gained a file named like a ransom note.
    public var ransomNoteDirectories: UInt64 = 0
    /// Added or changed files whose head was sampled (at least 512 bytes read from offset 0).
    public var sampledFiles: UInt64 = 0
    /// Sampled files whose head looks random (entropy ≥ 7.2 bits per byte) and starts with
    /// no magic number of a compressed or encrypted-by-design format.
    public var highEntropyFiles: UInt64 = 0
    /// Sampled files whose head does not match the content type their extension names.
    public var typeMismatchFiles: UInt64 = 0
    /// Sampled files counted in either of the two above (each file once).
    public var suspiciousContentFiles: UInt64 = 0
    /// Plaintext bytes of the file chunks this backup compressed and sealed.
    public var sealedBytesRaw: UInt64 = 0
    /// What those chunks took once compressed and sealed.
    public var sealedBytesStored: UInt64 = 0

    public init() {}

    /// Encodes the section: `version u8` then the fields in declaration order (§6.5).
    public func encode() -> [UInt8] {
        var w = ByteWriter(capacity: 96)
        w.u8(Self.version)
        w.u8(hasBaseline ? 1 : 0)
        for v in [filesAdded, filesChanged, filesDeleted, filesRenamed, extensionChanged, knownRansomExtension] {
            w.uvarint(v)
        }
        w.string(topNewExtension)
        for v in [topNewExtensionFiles, ransomNoteDirectories, sampledFiles, highEntropyFiles, typeMismatchFiles,
                  suspiciousContentFiles, sealedBytesRaw, sealedBytesStored] {
            w.uvarint(v)
        }
        return w.bytes
    }

    /// Decodes a section from untrusted bytes. Returns nil for a later version of the
    /// section, which this build does not know how to read (the manifest is still valid).
    public static func decode(_ bytes: [UInt8], object: String) throws(CoreError) -> SnapshotActivity? {
        var r = ByteReader(bytes)
        do {
            let v = try r.u8()
            guard v == version else { return nil }
            var a = SnapshotActivity()
            let baseline = try r.u8()
            guard baseline <= 1 else {
                throw CoreError(.corrupt, object: object, "activity: baseline flag \(baseline)")
            }
            a.hasBaseline = baseline == 1
            a.filesAdded = try r.uvarint(); a.filesChanged = try r.uvarint(); a.filesDeleted = try r.uvarint()
            a.filesRenamed = try r.uvarint(); a.extensionChanged = try r.uvarint()
            a.knownRansomExtension = try r.uvarint()
            a.topNewExtension = try r.string(limit: maxExtensionBytes)
            a.topNewExtensionFiles = try r.uvarint(); a.ransomNoteDirectories = try r.uvarint()
            a.sampledFiles = try r.uvarint(); a.highEntropyFiles = try r.uvarint()
            a.typeMismatchFiles = try r.uvarint(); a.suspiciousContentFiles = try r.uvarint()
            a.sealedBytesRaw = try r.uvarint(); a.sealedBytesStored = try r.uvarint()
            guard r.isAtEnd else { throw CoreError(.corrupt, object: object, "trailing bytes in the activity section") }
            return a
        } catch let e as CoreError { throw e } catch let e as ByteReader.Failure { throw e.corrupt(object,
            "malformed activity section") } catch {
            throw CoreError(.corrupt, object: object, "\(error)")
        }
    }
}

import Crypto
import Foundation

/// What a format-2 tree or manifest root keeps beside a chunk ID: the chunk's key and its
/// plaintext length. With it a reader opens the chunk from its sealed bytes alone, so
/// nothing it trusts comes from the pack's uploader (docs/FORMAT.md §3.4). Never prints.
public struct ChunkSeal: Sendable, Hashable, CustomStringConvertible {
    /// The 32-byte AES-256-GCM key of the chunk.
    public var key: [UInt8] { keyWords.bytes }
    /// The key, held inline: as an array each seal of a tree or a restore plan cost one
    /// more allocation.
    private let keyWords: Words32
    /// The chunk's plaintext length.
    public let rawLength: UInt32

    /// Nil unless `key` is 32 bytes and `rawLength` within the format's limit.
    public init?(key: [UInt8], rawLength: UInt32) {
        guard let words = Words32(key), rawLength <= UInt32(PackFormat.maxRawChunk) else { return nil }
        keyWords = words
        self.rawLength = rawLength
    }

    public var description: String { "ChunkSeal(redacted, \(rawLength) bytes)" }
}

/// A chunk sealed the format-2 way: its content-addressed ID, its seal and the bytes to store.
public struct SealedChunk: Sendable {
    public let id: ChunkID
    public let seal: ChunkSeal
    /// Ciphertext ‖ 16-byte tag, exactly as stored in a pack.
    public let bytes: [UInt8]

    /// Takes the three as given, unchecked: ``ConvergentSealing/seal(_:compressor:chunkIDKey:scratch:)``
    /// makes consistent ones. (Tests forge inconsistent ones; every reader and the server
    /// check what they rely on.)
    public init(id: ChunkID, seal: ChunkSeal, bytes: [UInt8]) {
        self.id = id
        self.seal = seal
        self.bytes = bytes
    }
}

/// Convergent sealing (format 2, docs/FORMAT.md §3.4).
///
/// `payload = kind u8 ‖ rawLength u32le ‖ data`, `key = HMAC-SHA256(chunk-ID key,
/// "redoubt/v2/chunk-key" ‖ payload)`, `sealed = AES-256-GCM(key, nonce 0, payload, AAD
/// "redoubt/v2/chunk")`, `chunk ID = SHA-256(sealed)`. Deterministic: every host of a
/// tenant that seals the same payload gets the same bytes, so the server, which holds no
/// key, can check that stored bytes are what their ID names, and nobody can make another
/// host reuse bytes it would not have written itself.
public enum ConvergentSealing {
    static let keyLabel = Array("redoubt/v2/chunk-key".utf8)
    static let aad = Array("redoubt/v2/chunk".utf8)
    /// kind u8 ‖ rawLength u32.
    static let payloadHeader = 5

    /// The all-zero nonce. Why it is safe: a key is derived from the whole payload, so a
    /// key seals exactly one payload (sealing it again gives the same bytes, which is the
    /// point); no key ever meets two different messages.
    static func zeroNonce() throws(CoreError) -> AES.GCM.Nonce {
        do { return try AES.GCM.Nonce(data: [UInt8](repeating: 0, count: 12)) } catch {
            throw CoreError(.badKey, object: "nonce", "AES-GCM refused a 12-byte nonce: \(error)")
        }
    }

    /// Seals a payload that `compressor` decided (compressed or raw). `scratch` is reused.
    public static func seal(kind: CompressionKind, rawLength: Int, data: UnsafeRawBufferPointer, chunkIDKey: ChunkIDKey,
                            scratch: inout [UInt8]) throws(CoreError) -> SealedChunk {
        guard rawLength <= PackFormat.maxRawChunk, data.count <= PackFormat.maxRawChunk + 1024 else {
            throw CoreError(.limitExceeded, object: "chunk",
                            "chunk of \(rawLength) bytes exceeds the \(PackFormat.maxRawChunk)-byte limit")
        }
        scratch.removeAll(keepingCapacity: true)
        scratch.reserveCapacity(payloadHeader + data.count)
        scratch.append(kind.rawValue)
        for i in 0..<4 { scratch.append(UInt8(truncatingIfNeeded: UInt32(rawLength) >> UInt32(8 * i))) }
        scratch.append(contentsOf: data)
        let key = scratch.withUnsafeBytes { chunkIDKey.mac(label: keyLabel, $0) }
        let box: AES.GCM.SealedBox
        do {
            box = try AES.GCM.seal(scratch, using: SymmetricKey(data: key), nonce: try zeroNonce(), authenticating: aad)
        } catch let e as CoreError { throw e } catch {
            throw CoreError(.badKey, object: "chunk", "AES-GCM seal failed: \(error)")
        }
        var bytes = [UInt8]()
        bytes.reserveCapacity(box.ciphertext.count + PackFormat.tagSize)
        bytes.append(contentsOf: box.ciphertext)
        bytes.append(contentsOf: box.tag)
        var h = SHA256Stream()
        h.update(bytes)
        // Both unwraps hold by construction: a digest is 32 bytes, and rawLength was checked above.
        return SealedChunk(id: ChunkID(bytes: h.finalize())!, seal: ChunkSeal(key: key, rawLength: UInt32(rawLength))!,
                           bytes: bytes)
    }

    /// Compresses (by the rule of §3.3) and seals one plaintext chunk.
    public static func seal(_ plaintext: UnsafeRawBufferPointer, compressor: ChunkCompressor, chunkIDKey: ChunkIDKey,
                            scratch: inout [UInt8]) throws(CoreError) -> SealedChunk {
        try narrow {
            try compressor.compress(plaintext) { kind, payload in
                try seal(kind: kind, rawLength: plaintext.count, data: payload, chunkIDKey: chunkIDKey,
                         scratch: &scratch)
            }
        }
    }

    /// Checks that `sealed` is what `id` names (SHA-256), opens it with `seal` (from the
    /// reader's own tree, never from the pack) and returns the plaintext, which must be
    /// `seal.rawLength` bytes. `object` names the chunk and where it was read in errors.
    /// `hashChecked`: the caller has already checked these very bytes against `id` (a
    /// format-2 pack's chunks are, all of them, when ``PackReader/open(_:expectedID:readKey:)``
    /// opens it), so they are not hashed twice.
    public static func open(_ sealed: UnsafeRawBufferPointer, id: ChunkID, seal: ChunkSeal,
                            decompressor: ChunkDecompressor, object: String,
                            hashChecked: Bool = false) throws(CoreError) -> [UInt8] {
        guard sealed.count >= PackFormat.tagSize else {
            throw CoreError(.corrupt, object: object, "sealed bytes are shorter than a tag")
        }
        if !hashChecked {
            var h = SHA256Stream()
            h.update(sealed)
            guard h.finalize() == id.bytes else {
                throw CoreError(.authenticationFailed, object: object,
                                "sealed bytes do not hash to the chunk ID: modified, or another chunk")
            }
        }
        let payload: Data
        do {
            let ciphertext = UnsafeRawBufferPointer(rebasing: sealed.dropLast(PackFormat.tagSize))
            let tag = UnsafeRawBufferPointer(rebasing: sealed.suffix(PackFormat.tagSize))
            let box = try AES.GCM.SealedBox(nonce: try zeroNonce(), ciphertext: ciphertext, tag: tag)
            payload = try AES.GCM.open(box, using: SymmetricKey(data: seal.key), authenticating: aad)
        } catch {
            throw CoreError(.authenticationFailed, object: object, "does not open with the key its tree gives "
                            + "(the tree and the chunk were written with different keys)")
        }
        return try narrow { try payload.withUnsafeBytes { (p: UnsafeRawBufferPointer) throws -> [UInt8] in
            guard p.count >= payloadHeader, let kind = CompressionKind(rawValue: p[0]) else {
                throw CoreError(.corrupt, object: object, "payload has no valid compression kind")
            }
            var raw: UInt32 = 0
            for i in 0..<4 { raw |= UInt32(p[1 + i]) << UInt32(8 * i) }
            guard raw == seal.rawLength else {
                throw CoreError(.corrupt, object: object, "holds \(raw) bytes, its tree says \(seal.rawLength)")
            }
            let data = UnsafeRawBufferPointer(rebasing: p[payloadHeader...])
            switch kind {
            case .none:
                guard data.count == Int(raw) else {
                    throw CoreError(.corrupt, object: object, "length differs from the payload header")
                }
                return Array(data)
            case .zstd:
                return try decompressor.decompress(data, rawLength: Int(raw), object: object)
            }
        } }
    }
}

extension ChunkIDKey {
    /// HMAC-SHA256 under this key of `label ‖ message`.
    func mac(label: [UInt8], _ message: UnsafeRawBufferPointer) -> [UInt8] {
        if let pads {
            var inner = pads.start()
            inner.update(label)
            inner.update(message)
            return pads.finish(inner)
        }
        var h = HMAC<SHA256>(key: key)
        h.update(data: label)
        h.update(data: message)
        return Array(h.finalize())
    }
}

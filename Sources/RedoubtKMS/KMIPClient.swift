import Foundation
import NIOCore
import NIOPosix
import NIOSSL

/// Where a KMIP server is and how to authenticate to it: TLS 1.2+ with a client
/// certificate, as KMIP's profiles require.
public struct KMIPEndpoint: Sendable, Equatable {
    public var host: String
    public var port: Int
    /// PEM file of the CA that issued the server's certificate.
    public var caFile: String
    /// PEM files of this client's certificate and private key. The certificate's identity
    /// (PyKMIP: its CN) owns the keys it creates.
    public var certificateFile: String
    public var privateKeyFile: String

    public init(host: String, port: Int, caFile: String, certificateFile: String, privateKeyFile: String) {
        self.host = host
        self.port = port
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.privateKeyFile = privateKeyFile
    }
}

/// The handful of KMIP 1.4 operations Redoubt needs: create and activate an AES-256 KEK,
/// encrypt and decrypt with it in AES-GCM (the KEK never leaves the KMS), and revoke and
/// destroy it to crypto-shred a tenant.
///
/// One request per TLS connection: simple, and a server that drops idle sessions costs
/// nothing. Every failure is a ``KeyProviderError`` that names the KMS and the fix.
public struct KMIPClient: Sendable {
    public let endpoint: KMIPEndpoint
    /// Names the KMS in errors (`kmip://host:port`).
    public var provider: String { "kmip://\(endpoint.host):\(endpoint.port)" }
    /// How long one request (connect, TLS handshake, answer) may take: 30 s, or
    /// `REDOUBT_KMIP_TIMEOUT` seconds (the test script raises it: its KMS shares two cores
    /// with the whole suite, and its TLS handshakes have taken 13 s there).
    public var timeout: TimeAmount = Self.defaultTimeout

    public static var defaultTimeout: TimeAmount {
        if let s = ProcessInfo.processInfo.environment["REDOUBT_KMIP_TIMEOUT"], let n = Int64(s), n > 0, n <= 3600 {
            return .seconds(n)
        }
        return .seconds(30)
    }

    public init(endpoint: KMIPEndpoint) { self.endpoint = endpoint }

    enum Tag {
        static let attribute = TTLV.Tag(rawValue: 0x420008), attributeName = TTLV.Tag(rawValue: 0x42000A)
        static let attributeValue = TTLV.Tag(rawValue: 0x42000B), batchCount = TTLV.Tag(rawValue: 0x42000D)
        static let batchItem = TTLV.Tag(rawValue: 0x42000F), blockCipherMode = TTLV.Tag(rawValue: 0x420011)
        static let cryptographicAlgorithm = TTLV.Tag(rawValue: 0x420028),
            cryptographicParameters = TTLV.Tag(rawValue: 0x42002B)
        static let ivCounterNonce = TTLV.Tag(rawValue: 0x42003D), name = TTLV.Tag(rawValue: 0x420053)
        static let nameType = TTLV.Tag(rawValue: 0x420054), nameValue = TTLV.Tag(rawValue: 0x420055)
        static let objectType = TTLV.Tag(rawValue: 0x420057), operation = TTLV.Tag(rawValue: 0x42005C)
        static let protocolVersion = TTLV.Tag(rawValue: 0x420069), protocolVersionMajor = TTLV.Tag(rawValue: 0x42006A)
        static let protocolVersionMinor = TTLV.Tag(rawValue: 0x42006B), requestHeader = TTLV.Tag(rawValue: 0x420077)
        static let requestMessage = TTLV.Tag(rawValue: 0x420078), requestPayload = TTLV.Tag(rawValue: 0x420079)
        static let responsePayload = TTLV.Tag(rawValue: 0x42007C), resultMessage = TTLV.Tag(rawValue: 0x42007D)
        static let resultReason = TTLV.Tag(rawValue: 0x42007E), resultStatus = TTLV.Tag(rawValue: 0x42007F)
        static let revocationReason = TTLV.Tag(rawValue: 0x420081), revocationReasonCode = TTLV.Tag(rawValue: 0x420082)
        static let templateAttribute = TTLV.Tag(rawValue: 0x420091), uniqueIdentifier = TTLV.Tag(rawValue: 0x420094)
        static let data = TTLV.Tag(rawValue: 0x4200C2), tagLength = TTLV.Tag(rawValue: 0x4200CE)
        static let aeadData = TTLV.Tag(rawValue: 0x4200FE), aeadTag = TTLV.Tag(rawValue: 0x4200FF)
    }

    enum Operation: UInt32 {
        case create = 0x01, getAttributes = 0x0B, activate = 0x12, revoke = 0x13, destroy = 0x14, encrypt = 0x1F,
            decrypt = 0x20
    }

    enum ResultReason: UInt32 {
        case itemNotFound = 0x01, authenticationNotSuccessful = 0x03, cryptographicFailure = 0x0A,
            illegalOperation = 0x0B
        case permissionDenied = 0x0C
    }

    // MARK: Operations

    /// Creates an AES-256 key for encrypt/decrypt, named `name`, and activates it.
    /// Returns its unique identifier.
    public func createActiveAESKey(name: String) async throws(KeyProviderError) -> String {
        func attribute(_ name: String, _ value: TTLV.Value) -> TTLV {
            TTLV(Tag.attribute, .structure([TTLV(Tag.attributeName, .textString(name)), TTLV(Tag.attributeValue,
                value)]))
        }
        let payload = try await call(.create, keyID: nil, [
            TTLV(Tag.objectType, .enumeration(0x02)),  // Symmetric Key
            TTLV(Tag.templateAttribute, .structure([
                attribute("Cryptographic Algorithm", .enumeration(0x03)),  // AES
                attribute("Cryptographic Length", .integer(256)),
                attribute("Cryptographic Usage Mask", .integer(0x04 | 0x08)),  // Encrypt | Decrypt
                attribute("Name", .structure([TTLV(Tag.nameValue, .textString(name)), TTLV(Tag.nameType,
                    .enumeration(0x01))])),
            ])),
        ])
        guard case .textString(let id)? = payload[Tag.uniqueIdentifier]?.value else {
            throw .kmsProtocol(provider: provider, detail: "Create response has no unique identifier")
        }
        _ = try await call(.activate, keyID: id, [TTLV(Tag.uniqueIdentifier, .textString(id))])
        return id
    }

    /// AES-256-GCM under the KMS key `keyID` with a caller-chosen 12-byte nonce; returns
    /// ciphertext ‖ 16-byte tag, the same bytes software AES-GCM would produce.
    public func encrypt(keyID: String, plaintext: [UInt8], nonce: [UInt8],
        associatedData: [UInt8]) async throws(KeyProviderError) -> [UInt8] {
        let payload = try await call(.encrypt, keyID: keyID, [
            TTLV(Tag.uniqueIdentifier, .textString(keyID)), Self.gcmParameters,
            TTLV(Tag.data, .byteString(plaintext)), TTLV(Tag.ivCounterNonce, .byteString(nonce)),
            TTLV(Tag.aeadData, .byteString(associatedData)),
        ])
        guard case .byteString(let ciphertext)? = payload[Tag.data]?.value,
            case .byteString(let tag)? = payload[Tag.aeadTag]?.value, tag.count == 16
        else { throw .kmsProtocol(provider: provider, detail: "Encrypt response lacks data or a 16-byte GCM tag") }
        return ciphertext + tag
    }

    /// Opens what ``encrypt(keyID:plaintext:nonce:associatedData:)`` sealed.
    public func decrypt(keyID: String, sealed: [UInt8], nonce: [UInt8],
        associatedData: [UInt8]) async throws(KeyProviderError) -> [UInt8] {
        guard sealed.count >= 16 else { throw .malformed("KMIP-wrapped key is shorter than a GCM tag") }
        let payload = try await call(.decrypt, keyID: keyID, [
            TTLV(Tag.uniqueIdentifier, .textString(keyID)), Self.gcmParameters,
            TTLV(Tag.data, .byteString(Array(sealed.dropLast(16)))), TTLV(Tag.ivCounterNonce, .byteString(nonce)),
            TTLV(Tag.aeadData, .byteString(associatedData)), TTLV(Tag.aeadTag, .byteString(Array(sealed.suffix(16)))),
        ])
        guard case .byteString(let plaintext)? = payload[Tag.data]?.value else {
            throw .kmsProtocol(provider: provider, detail: "Decrypt response has no data")
        }
        return plaintext
    }

    /// The key's Name attributes (a key may carry none or several) and whether it is
    /// destroyed (State Destroyed or Destroyed Compromised: some servers keep a destroyed
    /// object's attributes), from one KMIP GetAttributes.
    public func namesAndState(keyID: String) async throws(KeyProviderError) -> (names: [String], destroyed: Bool) {
        let payload = try await call(.getAttributes, keyID: keyID, [
            TTLV(Tag.uniqueIdentifier, .textString(keyID)), TTLV(Tag.attributeName, .textString("Name")),
                TTLV(Tag.attributeName, .textString("State")),
        ])
        var names: [String] = [], destroyed = false
        for attribute in payload.all(Tag.attribute) {
            switch (attribute[Tag.attributeName]?.value, attribute[Tag.attributeValue]) {
            case (.textString("Name")?, let value?):
                if case .textString(let name)? = value[Tag.nameValue]?.value { names.append(name) }
            case (.textString("State")?, let value?):
                if case .enumeration(let state) = value.value, state == 5 || state == 6 { destroyed = true }
            default: break
            }
        }
        return (names, destroyed)
    }

    /// Revokes the key (reason: cessation of operation), then destroys it. KMIP refuses
    /// to destroy an active key, hence the two steps; a key already revoked is destroyed.
    public func revokeAndDestroy(keyID: String) async throws(KeyProviderError) {
        do {
            _ = try await call(.revoke, keyID: keyID, [
                TTLV(Tag.uniqueIdentifier, .textString(keyID)),
                TTLV(Tag.revocationReason, .structure([TTLV(Tag.revocationReasonCode, .enumeration(0x06))])),
            ])
        } catch .keyDisabled {
            // Already revoked or deactivated: destroy it anyway.
        }
        _ = try await call(.destroy, keyID: keyID, [TTLV(Tag.uniqueIdentifier, .textString(keyID))])
    }

    /// Revokes the key without destroying it (a disabled KEK: restores fail until an
    /// operator acts; backups are unaffected because hosts seal to the public key).
    public func revoke(keyID: String) async throws(KeyProviderError) {
        _ = try await call(.revoke, keyID: keyID, [
            TTLV(Tag.uniqueIdentifier, .textString(keyID)),
            TTLV(Tag.revocationReason, .structure([TTLV(Tag.revocationReasonCode, .enumeration(0x06))])),
        ])
    }

    static let gcmParameters = TTLV(Tag.cryptographicParameters, .structure([
        TTLV(Tag.blockCipherMode, .enumeration(0x09)),  // GCM
        TTLV(Tag.cryptographicAlgorithm, .enumeration(0x03)),  // AES
        TTLV(Tag.tagLength, .integer(16)),
    ]))

    // MARK: Messages

    func call(_ operation: Operation, keyID: String?, _ payload: [TTLV]) async throws(KeyProviderError) -> TTLV {
        let request = TTLV(Tag.requestMessage, .structure([
            TTLV(Tag.requestHeader, .structure([
                TTLV(Tag.protocolVersion, .structure([
                    TTLV(Tag.protocolVersionMajor, .integer(1)), TTLV(Tag.protocolVersionMinor, .integer(4)),
                ])),
                TTLV(Tag.batchCount, .integer(1)),
            ])),
            TTLV(Tag.batchItem, .structure([
                TTLV(Tag.operation, .enumeration(operation.rawValue)),
                TTLV(Tag.requestPayload, .structure(payload)),
            ])),
        ]))
        let response = try TTLV.decode(try await exchange(request.encoded()), provider: provider)
        guard let item = response[Tag.batchItem], case .enumeration(let status)? = item[Tag.resultStatus]?.value else {
            throw .kmsProtocol(provider: provider, detail: "response has no batch item or result status")
        }
        guard status == 0 else {
            var reason: UInt32 = 0
            if case .enumeration(let r)? = item[Tag.resultReason]?.value { reason = r }
            var message = ""
            if case .textString(let m)? = item[Tag.resultMessage]?.value { message = m }
            throw classify(operation: operation, keyID: keyID, reason: reason, message: message)
        }
        return item[Tag.responsePayload] ?? TTLV(Tag.responsePayload, .structure([]))
    }

    /// Turns a KMIP failure into the error a restorer can act on.
    func classify(operation: Operation, keyID: String?, reason: UInt32, message: String) -> KeyProviderError {
        let key = keyID.map { "key \($0)" } ?? "the KMS"
        let said = message.isEmpty ? "" : " (KMS says: \(message))"
        switch ResultReason(rawValue: reason) {
        case .itemNotFound:
            // A destroyed KEK is gone from the KMS: this is what crypto-shredding looks like.
            return .keyDestroyed(provider: provider,
                detail: """
                    \(key) does not exist at the KMS\(said): it was destroyed, so data wrapped under it cannot be \
                    recovered except from an escrowed copy
                    """)
        case .illegalOperation where operation == .revoke,
            .permissionDenied where message.localizedCaseInsensitiveContains("state"):
            return .keyDisabled(provider: provider,
                detail: "\(key) is not active (revoked or deactivated)\(said): reactivate it in the KMS, or restore "
                    + "with an escrowed copy")
        case .permissionDenied, .authenticationNotSuccessful:
            // PyKMIP feigns ignorance of keys another identity owns; either way this
            // certificate may not use the key.
            return .credentialRejected(provider: provider,
                detail: """
                    the KMS refused this client certificate for \(key)\(said): use the certificate of the identity \
                    that owns the key
                    """)
        case .cryptographicFailure:
            return .wrongSecret(provider: provider)
        case .illegalOperation, nil:
            return .kmsProtocol(provider: provider, detail: "\(operation) failed with result reason \(reason)\(said)")
        }
    }

    /// Sends one request over a fresh mTLS connection and reads one whole response.
    func exchange(_ request: [UInt8]) async throws(KeyProviderError) -> [UInt8] {
        let context: NIOSSLContext
        do {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.minimumTLSVersion = .tlsv12
            tls.trustRoots = .file(endpoint.caFile)
            tls.certificateChain = try NIOSSLCertificate.fromPEMFile(endpoint.certificateFile).map { .certificate($0) }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: endpoint.privateKeyFile, format: .pem))
            context = try NIOSSLContext(configuration: tls)
        } catch {
            throw .credentialRejected(provider: provider,
                detail: """
                    cannot load the KMIP client certificate, key or CA (\(endpoint.certificateFile), \
                    \(endpoint.caFile)): \(error)
                    """)
        }
        // An IP address is checked against the certificate's IP SANs, not sent as SNI.
        let isAddress = (try? SocketAddress(ipAddress: endpoint.host, port: 0)) != nil
        let hostname: String? = isAddress ? nil : endpoint.host
        let limit = TTLV.Limits().maxBytes
        let provider = self.provider
        do {
            return try await withThrowingTaskGroup(of: [UInt8].self) { group in
                group.addTask {
                    let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                        .connectTimeout(.seconds(5))
                        .connect(host: endpoint.host, port: endpoint.port) { channel in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context,
                                    serverHostname: hostname))
                                return try NIOAsyncChannel<ByteBuffer,
                                    ByteBuffer>(wrappingChannelSynchronously: channel)
                            }
                        }
                    var received: [UInt8] = []
                    do {
                        try await channel.executeThenClose { inbound, outbound in
                            try await outbound.write(ByteBuffer(bytes: request))
                            for try await chunk in inbound {
                                received += chunk.readableBytesView
                                if let total = TTLV.messageLength(header: received), received.count >= total { break }
                                if received.count > limit { break }
                            }
                        }
                    } catch let error as NIOSSLError where error == .uncleanShutdown {
                        // Some servers (PyKMIP) close without close_notify after answering.
                    }
                    guard let total = TTLV.messageLength(header: received), received.count >= total else {
                        throw KeyProviderError.kmsProtocol(provider: provider,
                            detail: """
                                the KMS closed the connection after \(received.count) bytes, before a whole response
                                """)
                    }
                    return Array(received.prefix(total))
                }
                group.addTask {
                    try await Task.sleep(for: .nanoseconds(timeout.nanoseconds))
                    throw KeyProviderError.unreachable(provider: provider,
                        detail: "no answer within \(timeout.nanoseconds / 1_000_000_000) s")
                }
                defer { group.cancelAll() }
                guard let first = try await group.next() else {
                    throw KeyProviderError.unreachable(provider: provider, detail: "no answer")
                }
                return first
            }
        } catch let error as KeyProviderError {
            throw error
        } catch let error as NIOSSLError {
            throw .credentialRejected(provider: provider,
                detail: """
                    TLS with the KMS failed (\(error)): check that --key-provider's ca= issued the KMS's certificate \
                    and that the KMS trusts cert=
                    """)
        } catch let error as BoringSSLError {
            throw .credentialRejected(provider: provider,
                detail: "TLS with the KMS failed (\(error)): check the CA, client certificate and key files")
        } catch {
            throw .unreachable(provider: provider,
                detail: """
                    cannot reach the KMS at \(endpoint.host):\(endpoint.port) (\(error)): check that it runs and that \
                    this host may connect; backups continue meanwhile
                    """)
        }
    }
}

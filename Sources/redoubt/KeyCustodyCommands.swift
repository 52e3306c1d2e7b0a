import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore
import RedoubtKMS

// `redoubt admin tenant rotate-key | shred | escrow`: what happens to the key that
// decrypts a tenant's backups. Each runs on the admin's machine: the read key is
// unwrapped there, in memory, and never reaches the server.

/// Fetches the tenant's current wrapped read key as an admin.
private func currentReadKey(_ client: APIClient, tenant: String) async throws -> (Wire.ReadKeyInfo, WrappedReadKey) {
    let info = try await client.readKey(tenant: tenant)
    guard let json = info.wrappedReadKey else {
        throw KeyProviderError.keyDestroyed(provider: "redoubt server", detail: "tenant \(tenant) was crypto-shredded\(info.shreddedAt.map { " at \($0)" } ?? "")")
    }
    return (info, try WrappedReadKey.decode(Data(json.utf8)))
}

/// Unwraps the current read key with the provider it names.
private func unwrapCurrent(_ wrapped: WrappedReadKey, tenant: String, passphraseFile: String?) async throws -> ReadPrivateKey {
    let provider = try makeKeyProvider(uri: wrapped.provider, passphraseFile: passphraseFile,
                                       prompt: "Current passphrase of tenant \(tenant)'s read key: ")
    return try await provider.unwrap(wrapped, context: KeyContext(tenant: tenant, keyVersion: wrapped.context.keyVersion))
}

struct TenantRotateKey: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate-key",
        abstract: "Re-wrap a tenant's read key under a new KEK or another provider; no pack is rewritten.",
        discussion: """
            The read key is unwrapped here with its current provider, wrapped by the new one as the next key version, \
            checked to unwrap again, and only then handed to the server, which keeps the old KEK's name (never its \
            wrapped copy) so that `shred` can destroy it later. --destroy-old destroys the old KEK at its KMS or HSM \
            right away: copies wrapped under it (older bucket copies and media) then need the new wrapped key, which \
            restorers fetch from the server, or an escrow copy.
            """)
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The tenant.") var tenant: String
    @Option(name: .long, help: "The new key provider URI (kmip://…/new, passphrase:, …); not with --request.") var keyProvider: String?
    @Option(name: .long, help: "Carry out this approved rotation request (it holds the new wrapping made when it was filed).") var request: String?
    @Option(name: .long, help: "File with the CURRENT passphrase, if the key is passphrase-wrapped now (else REDOUBT_PASSPHRASE or a prompt).") var oldPassphraseFile: String?
    @Option(name: .long, help: "File with the NEW passphrase, if rotating to passphrase: (else REDOUBT_NEW_PASSPHRASE or a prompt).") var passphraseFile: String?
    @Flag(name: .long, help: "Destroy the old KEK at its KMS or HSM once the new wrapping is in place.") var destroyOld = false
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            try await RedoubtCLI.with(try admin.client()) { client in
                let (info, old) = try await currentReadKey(client, tenant: tenant)
                if destroyOld && old.provider.hasPrefix("passphrase") {
                    throw ValidationError("the current wrapping is a passphrase, which cannot be destroyed: drop --destroy-old (nothing was changed)")
                }
                // Before anything changes: the KMS must show the old KEK as this tenant's.
                let oldKEK = destroyOld ? try makeKeyProvider(uri: old.provider, passphraseFile: nil) : nil
                try await oldKEK?.checkKEKOwner(of: old, tenant: tenant)
                let after: Wire.ReadKeyInfo
                let wrapped: WrappedReadKey
                if let request {
                    // The approvers approved the wrapping made (and checked to open) when the
                    // request was filed; the server applies exactly that one.
                    guard keyProvider == nil else { throw ValidationError("--request applies the wrapping the request holds: drop --key-provider") }
                    after = try await client.rotateReadKey(tenant: tenant, wrappedReadKey: "", requestID: request)
                    wrapped = try WrappedReadKey.decode(Data((after.wrappedReadKey ?? "").utf8))
                } else {
                    guard let keyProvider else { throw ValidationError("give --key-provider URI (or --request ID for an approved rotation)") }
                    let key = try await unwrapCurrent(old, tenant: tenant, passphraseFile: oldPassphraseFile)
                    let provider = try await makeKeyProvider(uri: keyProvider, passphraseFile: passphraseFile, passphraseEnv: "REDOUBT_NEW_PASSPHRASE",
                                                             prompt: "New passphrase for tenant \(tenant)'s read key: ").preparingKEK(tenant: tenant)
                    let context = KeyContext(tenant: tenant, keyVersion: info.keyVersion + 1)
                    // Checked to open: the server cannot check that, we can, before anything depends on it.
                    wrapped = try await provider.wrapChecked(key, context: context)
                    // With two admins or more this files a request (E_APPROVAL_REQUIRED, exit
                    // 13) holding this wrapping; once approved: `rotate-key T --request ID`.
                    after = try await client.rotateReadKey(tenant: tenant, wrappedReadKey: String(decoding: try wrapped.encoded(), as: UTF8.self))
                }
                var destroyed = false
                if let oldKEK {
                    guard old.provider != wrapped.provider else {
                        throw ValidationError("the new wrapping uses the same KEK as the old (\(old.provider)); it was not destroyed. The rotation itself is done.")
                    }
                    try await oldKEK.destroyKEK(of: old)
                    _ = try await client.markKEKsDestroyed(tenant: tenant, versions: [info.keyVersion])
                    destroyed = true
                }
                if json {
                    try printJSON(["tenant": tenant, "keyVersion": "\(after.keyVersion)", "provider": wrapped.provider,
                                   "previousProvider": old.provider, "previousKEKDestroyed": "\(destroyed)"])
                } else {
                    print("Tenant \(tenant): read key \(wrapped.readKeyID) re-wrapped by \(wrapped.provider) as key version \(after.keyVersion).")
                    print(destroyed ? "The old KEK (\(old.provider), version \(info.keyVersion)) is destroyed."
                        : "The old KEK (\(old.provider), version \(info.keyVersion)) still exists: copies wrapped under it stay readable until it is destroyed (`--destroy-old`, or `redoubt admin tenant shred`).")
                }
                return .ok
            }
        }
    }
}

struct TenantShred: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shred",
        abstract: "Crypto-shred a tenant: destroy its KEKs at the KMS or HSM and every wrapped copy the server holds.",
        discussion: """
            Irreversible. Packs, manifests and their locks stay exactly as they are, but nothing can decrypt them again, \
            and the server refuses further backups to the tenant. Every KEK the tenant's read key was ever wrapped under \
            (the current one and those rotated away from) is destroyed first; if any KMS cannot be reached nothing is \
            changed on the server. Each KEK must first show at its KMS or HSM that it was made for this tenant (AWS tag, \
            KMIP name, PKCS#11 CKA_ID): one that does not (another tenant's, or a key adopted at tenant creation) is not \
            destroyed, and neither is any other. Copies wrapped under a passphrase cannot be destroyed by anyone: they are listed.
            """)
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The tenant.") var tenant: String
    @Option(name: .long, help: "Repeat the tenant's name to confirm without a prompt (for scripts).") var confirm: String?
    @Option(name: .long, help: "An approved request for this shred (`redoubt admin request list`).") var request: String?
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            try await RedoubtCLI.with(try admin.client()) { client in
                let (info, current) = try await currentReadKey(client, tenant: tenant)
                guard !isPassphrase(current.provider) else {
                    throw KeyProviderError.unsupported(provider: current.provider, detail: "tenant \(tenant)'s read key is wrapped by a passphrase, which no one can destroy: rotate it to a KMS or HSM first (`redoubt admin tenant rotate-key \(tenant) --key-provider kmip://…/new --destroy-old`), then shred")
                }
                try confirmShred()
                // Authorised? (Files an approval request if the quorum needs one.) Nothing
                // is destroyed at the KMS before the server says yes.
                _ = try await client.shredTenant(tenant: tenant, confirm: tenant, destroyedVersions: [], requestID: request, check: true)
                // Every KEK that ever wrapped this read key, newest first.
                var keks: [(version: Int, wrapped: WrappedReadKey)] = [(info.keyVersion, current)]
                for r in info.retired.reversed() where r.destroyedAt == nil {
                    keks.append((r.version, try WrappedReadKey.decode(Data(r.stub.utf8))))
                }
                var destroyed: [Int] = []
                var undestroyable: [String] = []
                // A wrapping the server says belongs to another tenant is not destroyed here.
                for (_, w) in keks where w.context.tenant != tenant {
                    throw KeyProviderError.wrongContext(provider: w.provider, expected: KeyContext(tenant: tenant, keyVersion: w.context.keyVersion), found: w.context)
                }
                // A server that forges the context too is caught at the KMS or HSM: each KEK
                // must show there that it was made for this tenant, before any is destroyed.
                let providers = try keks.map { isPassphrase($0.wrapped.provider) ? nil : try makeKeyProvider(uri: $0.wrapped.provider, passphraseFile: nil) }
                for (kek, provider) in zip(keks, providers) { try await provider?.checkKEKOwner(of: kek.wrapped, tenant: tenant) }
                for ((version, w), provider) in zip(keks, providers) {
                    guard let provider else {
                        undestroyable.append("key version \(version) (\(w.provider)): copies wrapped under it before its rotation (bucket copies, media, escrow files) stay readable to whoever knows that passphrase")
                        continue
                    }
                    do {
                        try await provider.destroyKEK(of: w)
                        destroyed.append(version)
                        progressNote("destroyed the KEK of key version \(version) at \(w.provider)")
                    } catch {
                        // Record what is already gone, change nothing else, and say why.
                        let retired = destroyed.filter { $0 != info.keyVersion }
                        if !retired.isEmpty { _ = try? await client.markKEKsDestroyed(tenant: tenant, versions: retired) }
                        throw error
                    }
                }
                let after = try await client.shredTenant(tenant: tenant, confirm: tenant, destroyedVersions: destroyed, requestID: request)
                if json {
                    try printJSON(ShredReport(tenant: tenant, shreddedAt: after.shreddedAt, destroyedKeyVersions: destroyed, notDestroyable: undestroyable))
                } else {
                    print("Tenant \(tenant) is crypto-shredded: \(destroyed.count) KEK(s) destroyed, the server's wrapped copies deleted; its backups and their locks remain as ciphertext that nothing can open.")
                    for u in undestroyable { print("WARNING: \(u)") }
                    print("Escrow copies made with `redoubt admin tenant escrow` (the audit log's get-read-key records show when) must be destroyed by hand.")
                }
                return undestroyable.isEmpty ? .ok : .partial
            }
        }
    }

    private func isPassphrase(_ uri: String) -> Bool { uri.hasPrefix("passphrase") }

    private func confirmShred() throws {
        if let confirm {
            guard confirm == tenant else { throw ValidationError("--confirm \(confirm.debugDescription) does not match the tenant \(tenant.debugDescription); nothing was shredded") }
            return
        }
        guard isatty(0) != 0 else { throw ValidationError("shredding is irreversible: pass --confirm \(tenant) or run on a terminal") }
        FileHandle.standardError.write(Data("This destroys tenant \(tenant)'s read key for ever: no backup of it can be restored again.\nType the tenant's name to confirm: ".utf8))
        guard readLine(strippingNewline: true) == tenant else { throw ValidationError("not confirmed; nothing was shredded") }
    }

    private func progressNote(_ s: String) {
        if !json { FileHandle.standardError.write(Data("  \(s)\n".utf8)) }
    }

    struct ShredReport: Encodable {
        var tenant: String
        var shreddedAt: Date?
        var destroyedKeyVersions: [Int]
        var notDestroyable: [String]
    }
}

struct TenantEscrow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "escrow",
        abstract: "Write an escrow copy of a tenant's read key, wrapped under a passphrase, for when the KMS is lost.",
        discussion: """
            Made on purpose and kept offline (a safe, split between officers): whoever holds the file and its \
            passphrase can read every backup of the tenant, and a later shred cannot reach it. Use it with \
            `redoubt restore … --read-key FILE` (also `media restore`, `copy restore`, `verify --deep`).
            """)
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The tenant.") var tenant: String
    @Option(name: .long, help: "Where to write the escrow copy (created, mode 0600; never overwritten).") var out: String
    @Option(name: .long, help: "File with the escrow passphrase (else REDOUBT_ESCROW_PASSPHRASE or a prompt).") var escrowPassphraseFile: String?
    @Option(name: .long, help: "File with the current passphrase, if the key is passphrase-wrapped now.") var passphraseFile: String?

    func run() async throws {
        try await RedoubtCLI.run {
            guard !FileManager.default.fileExists(atPath: out) else { throw ValidationError("\(out) exists; an escrow copy is never overwritten: choose another path") }
            return try await RedoubtCLI.with(try admin.client()) { client in
                let (_, current) = try await currentReadKey(client, tenant: tenant)
                let key = try await unwrapCurrent(current, tenant: tenant, passphraseFile: passphraseFile)
                let escrow = try makeKeyProvider(uri: "passphrase:", passphraseFile: escrowPassphraseFile, passphraseEnv: "REDOUBT_ESCROW_PASSPHRASE",
                                                 prompt: "Escrow passphrase (keep it apart from the file): ")
                let wrapped = try await escrow.wrap(key, context: current.context)
                guard FileManager.default.createFile(atPath: out, contents: try wrapped.encoded(), attributes: [.posixPermissions: 0o600]) else {
                    throw ValidationError("cannot write \(out)")
                }
                print("Escrow copy of tenant \(tenant)'s read key \(wrapped.readKeyID) (key version \(current.context.keyVersion)) written to \(out), wrapped under the escrow passphrase.")
                return .ok
            }
        }
    }
}

struct TenantRestoreMaterial: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore-material",
        abstract: "Give a server back a tenant's write material after its catalog was rebuilt from the store or media.",
        discussion: """
            The store, bucket copies and media hold the write material (chunk-ID key, chunker seed) sealed to the \
            tenant's read key, so a catalog rebuilt from them alone cannot enroll hosts or restorers. This opens the \
            sealed copy here, with the read key unwrapped in memory as for an escrow, and gives the server the \
            material; or takes it from --from FILE, the write-material.bin of a host or restorer enrolled before.
            """)
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The tenant.") var tenant: String
    @Option(name: .long, help: "An enrolled host's or restorer's write-material.bin, instead of unwrapping the read key.") var from: String?
    @Option(name: .long, help: "File with the current passphrase, if the key is passphrase-wrapped.") var passphraseFile: String?

    func run() async throws {
        try await RedoubtCLI.run {
            try await RedoubtCLI.with(try admin.client()) { client in
                let material: [UInt8]
                if let from {
                    // The server checks it against the descriptor's public check.
                    guard let d = FileManager.default.contents(atPath: from) else { throw ValidationError("cannot read \(from)") }
                    material = Array(d)
                } else {
                    let info = try await client.writeMaterial(tenant: tenant)
                    if info.present {
                        print("The server has tenant \(tenant)'s write material already; nothing to do.")
                        return .ok
                    }
                    guard let sealed = Data(base64Encoded: info.sealedWriteMaterial) else { throw ValidationError("the server sent no sealed write material for tenant \(tenant)") }
                    let (_, current) = try await currentReadKey(client, tenant: tenant)
                    let key = try await unwrapCurrent(current, tenant: tenant, passphraseFile: passphraseFile)
                    material = try SharedWriteMaterial.open(sealed: Array(sealed), tenant: tenant, readKey: key).encode().withUnsafeBytes { Array($0) }
                }
                _ = try await client.restoreWriteMaterial(tenant: tenant, material: Data(material).base64EncodedString())
                print("Tenant \(tenant)'s write material is back on the server: hosts and restorers can enroll again.")
                return .ok
            }
        }
    }
}

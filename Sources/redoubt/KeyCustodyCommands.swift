import ArgumentParser
import Foundation
import RedoubtClient
import RedoubtCore
import RedoubtKMS

// `redoubt admin tenant rotate-key | shred | escrow`: what happens to the key that
// decrypts a tenant's backups. Each runs on the admin's machine: the read key is
// unwrapped there, in memory, and never reaches the server.

/// The key-custody steps for `tenant` with `client`; each provider's secret read from its
/// own file, variable or prompt (`current` is also the secret of a `restore-material` unwrap).
private func custody(_ client: APIClient, tenant: String, current: String?, new: String? = nil,
                     escrow: String? = nil) -> KeyCustody {
    KeyCustody(client: client, tenant: tenant) { uri, secret in
        switch secret {
        case .current:
            try makeKeyProvider(uri: uri, passphraseFile: current,
                prompt: "Current passphrase of tenant \(tenant)'s read key: ")
        case .new:
            try makeKeyProvider(uri: uri, passphraseFile: new, passphraseEnv: "REDOUBT_NEW_PASSPHRASE",
                                prompt: "New passphrase for tenant \(tenant)'s read key: ")
        case .escrow:
            try makeKeyProvider(uri: uri, passphraseFile: escrow, passphraseEnv: "REDOUBT_ESCROW_PASSPHRASE",
                                prompt: "Escrow passphrase (keep it apart from the file): ")
        case .none:
            try makeKeyProvider(uri: uri, passphraseFile: nil)
        }
    }
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
    @Option(name: .long,
        help: "The new key provider URI (kmip://…/new, passphrase:, …); not with --request.") var keyProvider: String?
    @Option(name: .long,
        help: """
            Carry out this approved rotation request (it holds the new wrapping made when it was filed).
            """) var request: String?
    @Option(name: .long,
        help: """
            File with the CURRENT passphrase, if the key is passphrase-wrapped now (else REDOUBT_PASSPHRASE or a \
            prompt).
            """) var oldPassphraseFile: String?
    @Option(name: .long,
        help: """
            File with the NEW passphrase, if rotating to passphrase: (else REDOUBT_NEW_PASSPHRASE or a prompt).
            """) var passphraseFile: String?
    @Flag(name: .long,
        help: "Destroy the old KEK at its KMS or HSM once the new wrapping is in place.") var destroyOld = false
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            try await RedoubtCLI.with(try admin.client()) { client in
                let r = try await custody(client, tenant: tenant, current: oldPassphraseFile, new: passphraseFile)
                    .rotate(to: keyProvider, requestID: request, destroyOld: destroyOld)
                let (wrapped, old, after, info, destroyed) = (r.wrapped, r.previous, r.keyVersion, r.previousKeyVersion,
                                                               r.previousKEKDestroyed)
                if json {
                    try printJSON(["tenant": tenant, "keyVersion": "\(after)", "provider": wrapped.provider,
                                   "previousProvider": old.provider, "previousKEKDestroyed": "\(destroyed)"])
                } else {
                    print("""
                        Tenant \(tenant): read key \(wrapped.readKeyID) re-wrapped by \(wrapped.provider) as key \
                        version \(after).
                        """)
                    print(destroyed ? "The old KEK (\(old.provider), version \(info)) is destroyed."
                        : """
                            The old KEK (\(old.provider), version \(info)) still exists: copies wrapped under it stay \
                            readable until it is destroyed (`--destroy-old`, or `redoubt admin tenant shred`).
                            """)
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
            Irreversible. Packs, manifests and their locks stay exactly as they are, but nothing can decrypt them \
            again, \
            and the server refuses further backups to the tenant. Every KEK the tenant's read key was ever wrapped \
            under \
            (the current one and those rotated away from) is destroyed first; if any KMS cannot be reached nothing is \
            changed on the server. Each KEK must first show at its KMS or HSM that it was made for this tenant (AWS \
            tag, \
            KMIP name, PKCS#11 CKA_ID): one that does not (another tenant's, or a key adopted at tenant creation) is \
            not \
            destroyed, and neither is any other. Copies wrapped under a passphrase cannot be destroyed by anyone: they \
            are listed.
            """)
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The tenant.") var tenant: String
    @Option(name: .long,
        help: "Repeat the tenant's name to confirm without a prompt (for scripts).") var confirm: String?
    @Option(name: .long,
        help: "An approved request for this shred (`redoubt admin request list`).") var request: String?
    @Flag(name: .long, help: "Print JSON.") var json = false

    func run() async throws {
        try await RedoubtCLI.run {
            try await RedoubtCLI.with(try admin.client()) { client in
                let r = try await custody(client, tenant: tenant, current: nil)
                    .shred(requestID: request, confirm: confirmShred, progress: progressNote)
                if json {
                    try printJSON(r)
                } else {
                    print("Tenant \(tenant) is crypto-shredded: \(r.destroyedKeyVersions.count) KEK(s) destroyed, the "
                        + "server's wrapped copies deleted; its backups and their locks remain as ciphertext that "
                        + "nothing can open.")
                    for u in r.notDestroyable { print("WARNING: \(u)") }
                    print("""
                        Escrow copies made with `redoubt admin tenant escrow` (the audit log's get-read-key records \
                        show when) must be destroyed by hand.
                        """)
                }
                return r.notDestroyable.isEmpty ? .ok : .partial
            }
        }
    }

    private func confirmShred() throws {
        if let confirm {
            guard confirm == tenant else {
                throw ValidationError("""
                    --confirm \(confirm.debugDescription) does not match the tenant \(tenant.debugDescription); \
                    nothing was shredded
                    """)
            }
            return
        }
        guard isatty(0) != 0 else {
            throw ValidationError("shredding is irreversible: pass --confirm \(tenant) or run on a terminal")
        }
        FileHandle.standardError.write(Data("""
            This destroys tenant \(tenant)'s read key for ever: no backup of it can be restored again.\nType the \
            tenant's name to confirm: 
            """.utf8))
        guard readLine(strippingNewline: true) == tenant else {
            throw ValidationError("not confirmed; nothing was shredded")
        }
    }

    private func progressNote(_ s: String) {
        if !json { FileHandle.standardError.write(Data("  \(s)\n".utf8)) }
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
    @Option(name: .long,
        help: "Where to write the escrow copy (created, mode 0600; never overwritten).") var out: String
    @Option(name: .long,
        help: """
            File with the escrow passphrase (else REDOUBT_ESCROW_PASSPHRASE or a prompt).
            """) var escrowPassphraseFile: String?
    @Option(name: .long,
        help: "File with the current passphrase, if the key is passphrase-wrapped now.") var passphraseFile: String?

    func run() async throws {
        try await RedoubtCLI.run {
            try await RedoubtCLI.with(try admin.client()) { client in
                let wrapped = try await custody(client, tenant: tenant, current: passphraseFile,
                    escrow: escrowPassphraseFile)
                    .escrow(to: out)
                print("""
                    Escrow copy of tenant \(tenant)'s read key \(wrapped.readKeyID) (key version \
                    \(wrapped.context.keyVersion)) written to \(out), wrapped under the escrow passphrase.
                    """)
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
    @Option(name: .long,
        help: """
            An enrolled host's or restorer's write-material.bin, instead of unwrapping the read key.
            """) var from: String?
    @Option(name: .long,
        help: "File with the current passphrase, if the key is passphrase-wrapped.") var passphraseFile: String?

    func run() async throws {
        try await RedoubtCLI.run {
            try await RedoubtCLI.with(try admin.client()) { client in
                var material: [UInt8]?
                if let from {
                    // The server checks it against the descriptor's public check.
                    guard let d = FileManager.default.contents(atPath: from) else {
                        throw ValidationError("cannot read \(from)")
                    }
                    material = Array(d)
                }
                guard try await custody(client, tenant: tenant,
                    current: passphraseFile).restoreWriteMaterial(material) else {
                    print("The server has tenant \(tenant)'s write material already; nothing to do.")
                    return .ok
                }
                print("Tenant \(tenant)'s write material is back on the server: hosts and restorers can enroll again.")
                return .ok
            }
        }
    }
}

public import Custody
import CustosModel
import Crypto
import Foundation
import HSM
import SecureMemory
import Storage

// The escrow of Ed25519 webhook seeds (docs/key-hierarchy.md, "Replica tokens"): the escrow key
// pair is made here, its private half split at once into custodian shares and never stored;
// the service seals each new seed to the public half; a restored token gets every escrowed
// key back from M shares.
extension KeyCeremony {
    /// The label of the escrow key in its share files and the transcript.
    public static let escrowKeyLabel = "custos/escrow/webhook-ed25519"

    /// The check value of an escrow private key: the first 3 bytes of SHA-256 of its X25519
    /// public key (what the share files record and officers compare).
    static func escrowCheckValue(_ privateKey: SecretBytes) throws(CeremonyError) -> [UInt8] {
        do {
            return Array(SHA256.hash(data: try SeedEscrow.escrowPublicKey(of: privateKey)).prefix(3))
        } catch {
            throw .unsupportedKeyType("\(escrowKeyLabel) (not an X25519 key)")
        }
    }

    /// What ``generateEscrow(threshold:shares:outputDirectory:transcript:keyring:)`` made.
    public struct EscrowOutcome: Sendable {
        public let ceremonyID: String
        public let sharePaths: [String]
        /// The version the database pinned the public key as.
        public let escrowKeyVersion: Int
        /// Hex of the first 3 bytes of SHA-256 of the public key.
        public let checkValue: String
        /// What config.json's `webhookEscrowKeys` must list on every instance before seeds are
        /// sealed to this key.
        public let fingerprint: EscrowKeyFingerprint
    }

    /// Makes the escrow key pair: 32 bytes from the HSM RNG as an X25519 private key, split
    /// M-of-N into share files (written first), its public key recorded in the database with an
    /// HSM MAC (``TenantKeyring/recordEscrowKey(publicKey:ceremonyID:)``), the step
    /// transcribed. The private key is wiped when this returns; nothing but the shares holds it.
    /// A crash before the record leaves share files of a key nobody seals to: run it again.
    /// - Throws: ``CeremonyError``.
    public func generateEscrow(
        threshold: Int, shares: Int, outputDirectory: String, transcript: CeremonyTranscript, keyring: TenantKeyring
    ) async throws -> EscrowOutcome {
        try await ceremony {
            try Shamir.validate(threshold: threshold, count: shares)
            let privateKey = try await random.randomSecret(count: SeedEscrow.keyLength)
            let publicKey = try SeedEscrow.escrowPublicKey(of: privateKey)
            let checkValue = try Self.escrowCheckValue(privateKey)
            let key = ShareFile.Key(escrowLabel: Self.escrowKeyLabel, offset: 0, length: SeedEscrow.keyLength, checkValue: checkValue)
            let token = try await pool.tokenInfo()
            let (ceremonyID, files, paths) = try await splitAndWrite(
                secret: privateKey, keys: [key], threshold: threshold, shares: shares, outputDirectory: outputDirectory, token: token
            )
            let recorded = try await keyring.recordEscrowKey(publicKey: publicKey, ceremonyID: ceremonyID)
            var draft = draft("generate-escrow", token: token)
            draft.ceremonyID = ceremonyID
            draft.keys = [.init(label: Self.escrowKeyLabel, id: "v\(recorded.version)", checkValue: Hex.encode(checkValue))]
            draft.threshold = threshold
            draft.shareCount = shares
            draft.shares = zip(files, paths).map { .init(index: $0.header.index, file: Self.fileName($1), checkValue: $0.header.shareCheckValue) }
            draft.details = ["escrowKeyVersion": "\(recorded.version)"]
            _ = try await transcript.append(draft, macKey: try await RootKeyInventory.read(from: pool).newestMACLabel, pool: pool)
            logger.notice("escrow key split into shares and pinned", metadata: [
                "ceremony": "\(ceremonyID)", "version": "\(recorded.version)", "threshold": "\(threshold)", "shares": "\(shares)",
            ])
            return EscrowOutcome(ceremonyID: ceremonyID, sharePaths: paths, escrowKeyVersion: recorded.version, checkValue: Hex.encode(checkValue),
                fingerprint: EscrowKeyFingerprint(publicKey: publicKey)
            )
        }
    }

    /// What ``restoreWebhookKeys(sharePaths:transcript:keyring:actor:)`` did.
    public struct WebhookKeyRestoreReport: Sendable, Codable, Hashable {
        /// Versions whose key pair was imported on at least one token now.
        public var imported: [String] = []
        /// Versions every token already held (a second run, or a token that was not lost).
        public var alreadyPresent: [String] = []
        /// Versions escrowed to another escrow key (give that key's shares too).
        public var otherEscrowKey: [String] = []
        /// Versions refused, with the reason (a row failing its MAC, a ciphertext that does not
        /// open or gives another public key: nothing imported for them; an object under the
        /// label on a token that signs for another key: that token only, named).
        public var refused: [String] = []
    }

    /// Combines M shares of an escrow key, checks it is one the database pinned (MAC-valid),
    /// and for every tenant's live Ed25519 version escrowed to it: checks the row's MAC and that
    /// the HSM's list of key states does not name it destroyed, opens
    /// the escrow, checks the seed gives the row's public key, and imports the key pair on
    /// every configured token that lacks it (sensitive, non-extractable; each token checked to
    /// sign for the public key), one `webhook.ed25519.restore` audit entry per version
    /// imported. Each seed is wiped after its import. Idempotent: a version already on a token
    /// is left as it is (after checking it signs for the row's key); an import a killed run did
    /// before its audit entry is recorded now (listed before the import).
    /// - Throws: ``CeremonyError``; ``CeremonyError/invalidArgument(_:)`` for shares that are not
    ///   of an escrow key or of one the database never pinned.
    public func restoreWebhookKeys(
        sharePaths: [String], transcript: CeremonyTranscript, keyring: TenantKeyring, actor: String
    ) async throws -> WebhookKeyRestoreReport {
        try await ceremony {
            let set = try ShareSet(paths: sharePaths)
            let secret = try set.combine()
            guard let header = set.header, header.keys.count == 1, let key = header.keys.first, key.isEscrowKey else {
                throw CeremonyError.invalidArgument("these share files are not of an escrow key (`ceremony generate-escrow` makes those); root keys are restored with `ceremony restore`")
            }
            let privateKey = ShareSet.slice(secret, key)
            let publicKey = try SeedEscrow.escrowPublicKey(of: privateKey)
            guard let escrowKey = try await keyring.verifiedEscrowKeys().first(where: { $0.publicKey == publicKey }) else {
                throw CeremonyError.invalidArgument("the shares of ceremony \(header.ceremonyID) rebuild an escrow key the database never pinned: nothing restored")
            }
            var report = WebhookKeyRestoreReport()
            for tenant in try await keyring.listTenants() {
                try await restoreWebhookKeys(of: tenant, escrowKey: escrowKey, privateKey: privateKey, keyring: keyring, actor: actor, into: &report)
            }
            let token = try await pool.tokenInfo()
            var draft = draft("restore-webhook-keys", token: token)
            draft.ceremonyID = header.ceremonyID
            draft.threshold = header.threshold
            draft.shareCount = header.shares
            draft.shares = set.files.map { .init(index: $0.file.header.index, file: Self.fileName($0.path), checkValue: $0.file.header.shareCheckValue) }
            draft.details = [
                "escrowKeyVersion": "\(escrowKey.version)", "imported": "\(report.imported.count)",
                "alreadyPresent": "\(report.alreadyPresent.count)", "refused": "\(report.refused.count)",
            ]
            _ = try await transcript.append(draft, macKey: try await RootKeyInventory.read(from: pool).newestMACLabel, pool: pool)
            logger.notice("escrowed webhook keys restored", metadata: [
                "imported": "\(report.imported.count)", "alreadyPresent": "\(report.alreadyPresent.count)", "refused": "\(report.refused.count)",
            ])
            return report
        }
    }

    private func restoreWebhookKeys(
        of tenant: TenantID, escrowKey: EscrowKeyRecord, privateKey: SecretBytes, keyring: TenantKeyring, actor: String,
        into report: inout WebhookKeyRestoreReport
    ) async throws {
        let records = try await keyring.versions(tenant)
        for escrow in try await keyring.seedEscrows(tenant) {
            let name = "\(tenant.rawValue)/\(escrow.purpose.rawValue)/v\(escrow.version)"
            guard let record = records.first(where: { $0.purpose == escrow.purpose && $0.version == escrow.version }),
                  record.purpose == .webhookEd25519, record.state != .destroyed,
                  let label = record.tokenLabel, let recordedPublicKey = record.publicKey else { continue }
            guard escrow.escrowKeyVersion == escrowKey.version else {
                report.otherEscrowKey.append(name)
                continue
            }
            // The row names the label and the public key: only a row custody sealed may.
            guard try await keyring.isRowAuthentic(record) else {
                report.refused.append("\(name): \(CustodyError.rowTampered(tenant, record.purpose, record.version))")
                continue
            }
            guard try await !keyring.isAnchoredAsDestroyed(record) else {
                report.refused.append("\(name): the HSM's list of key states names it destroyed (a row put back from a backup)")
                continue
            }
            var lacking = [SessionPool](), refusedOn = [String]()
            do {
                let seed = try SeedEscrow.open(escrow, record: record, escrowPrivateKey: privateKey)
                guard try SeedEscrow.ed25519PublicKey(of: seed) == recordedPublicKey else {
                    throw SeedEscrowError.publicKeyMismatch(tenant, record.purpose, record.version)
                }
                for token in pool.tokenPools {
                    do {
                        if try await !TenantKeyring.holdsEd25519(label: label, publicKey: recordedPublicKey, in: token) { lacking.append(token) }
                    } catch HSMError.configuration(let reason) {
                        // An object under the label that signs for another key (planted with
                        // the user PIN): that token is refused this version; the other tokens,
                        // and every other version, are still restored.
                        refusedOn.append("token \(token.configuration.token): \(reason)")
                    }
                }
                if !lacking.isEmpty {
                    // Listed first: a run killed before the audit entry leaves it to the next.
                    try await keyring.listWebhookKeyRestore(record, tokens: lacking.map { String(describing: $0.configuration.token) })
                    let id = try await pool.random(count: 16)
                    for token in lacking {
                        _ = try await TenantKeyring.importEd25519(seed: seed, publicKey: recordedPublicKey, label: label, id: id, into: token)
                    }
                    try stepFault?.reached("restore-webhook-keys.imported")
                }
            } catch let error as SeedEscrowError {
                report.refused.append("\(name): \(error)")
                continue
            }
            if !refusedOn.isEmpty { report.refused.append("\(name): \(refusedOn.joined(separator: "; "))") }
            // The tokens imported onto now, or by a run killed before its audit entry.
            let importedOn = lacking.isEmpty
                ? try await keyring.interruptedWebhookKeyRestore(record) ?? []
                : lacking.map { String(describing: $0.configuration.token) }
            guard !importedOn.isEmpty else {
                if refusedOn.isEmpty { report.alreadyPresent.append(name) }
                continue
            }
            try await keyring.recordWebhookKeyRestore(record, tokens: importedOn, escrowKeyVersion: escrowKey.version, actor: actor)
            report.imported.append(name)
        }
    }
}

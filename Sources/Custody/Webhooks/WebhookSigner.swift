public import CustosModel
import Crypto
import Foundation
public import HSM
public import SecureMemory
import Storage

/// Signs webhook deliveries per Standard Webhooks 1.0 (DESIGN §8) with keys held in the HSM:
/// `v1` HMAC-SHA256 under the tenant's `webhook` secret (shown to the tenant once, then held
/// only wrapped), `v1a` Ed25519 under a private key no token lets out (on every token, its
/// seed escrowed to the custodians). During a rotation's overlap window every usable version
/// signs, space-separated.
///
/// Not an open oracle: the RPC layer lets a tenant's key sign only events Custos emits for
/// that tenant (issue #5); this type signs what internal callers give it.
public final class WebhookSigner: Sendable {
    let pool: SessionPool
    let keyring: TenantKeyring
    let audit: AuditLog
    /// How many live Ed25519 token objects (versions not destroyed) one tenant may hold.
    public let tokenObjectLimit: Int
    let ed25519Available: Bool
    /// The custodians' escrow keys (config.json's `webhookEscrowKeys`): the only ones a seed is
    /// sealed to.
    let trustedEscrowKeys: Set<EscrowKeyFingerprint>
    /// One Ed25519 creation at a time per tenant in this instance: two at once would pick the
    /// same version number and one would fail after making its key pair.
    private let ed25519Creation = KeyedSerializer<TenantID>()

    /// Live Ed25519 token objects a tenant may hold unless configured otherwise: an active and a
    /// retiring version plus retired ones awaiting their two-officer destruction.
    public static let defaultTokenObjectLimit = 8

    /// - Parameter tokenObjectLimit: see ``defaultTokenObjectLimit``.
    /// - Parameter ed25519Available: `false` on a module without Ed25519 (``SelfTest``): new
    ///   `v1a` keys are then refused with ``CustodyError/featureUnavailable(_:)``; v1 is unaffected.
    /// - Parameter trustedEscrowKeys: the escrow keys seeds may be sealed to; empty: no `v1a`
    ///   key is made (``CustodyError/escrowKeysNotConfigured``), v1 is unaffected.
    public init(
        pool: SessionPool, keyring: TenantKeyring, audit: AuditLog, trustedEscrowKeys: Set<EscrowKeyFingerprint>,
        tokenObjectLimit: Int = WebhookSigner.defaultTokenObjectLimit, ed25519Available: Bool = true
    ) {
        self.pool = pool
        self.keyring = keyring
        self.audit = audit
        self.tokenObjectLimit = tokenObjectLimit
        self.ed25519Available = ed25519Available
        self.trustedEscrowKeys = trustedEscrowKeys
    }

    /// A new v1 secret for `tenant` — the first, or a rotation in which the previous one keeps
    /// signing for `overlap` (default 24 h; 0 after a leak).
    /// - Returns: the version and the secret as `whsec_…`, to be shown once.
    public func createSecret(tenant: TenantID, overlap: Duration = .seconds(86_400), actor: String) async throws -> (version: Int, secret: SecretBytes) {
        try await custody {
            let secret = try await pool.randomSecret(count: 32)
            let versions = try await keyring.versions(tenant).filter { $0.purpose == .webhook }
            let next = try await keyring.nextVersion(tenant, .webhook, after: versions)
            let hasActive = versions.contains { $0.state == .active }
            let record = try await keyring.underNewestRootKEKs {
                let record = try await keyring.makeVersion(tenant, .webhook, version: next, state: .pending, importing: secret)
                try await keyring.storePending(record)
                return record
            }
            let entry = AuditEntry(
                tenant: tenant, actor: actor, action: .webhookSecret, target: "webhook/v\(next)",
                details: ["kcv": Hex.encode(record.checkValue), "overlap_seconds": "\(overlap.components.seconds)"]
            )
            _ = try await keyring.completeOrRollBack(record, entry: entry) {
                try await keyring.complete(record, overlap: hasActive ? overlap : .zero, entry: entry)
            }
            return (next, StandardWebhooks.encodeSecret(secret))
        }
    }

    /// A new v1a Ed25519 key: its seed drawn from the HSM RNG, imported on every configured
    /// token as a sensitive, non-extractable token object (SoftHSM cannot wrap Ed25519 private
    /// keys) and escrowed to the custodians' escrow key, so it survives the loss of any token.
    /// - Returns: the version and the public key as `whpk_…`.
    /// - Throws: ``CustodyError/tokenObjectLimit(_:limit:)`` when the tenant already holds
    ///   ``tokenObjectLimit`` live versions; ``CustodyError/featureUnavailable(_:)`` before the
    ///   ceremony made an escrow key; ``CustodyError/escrowKeysNotConfigured``;
    ///   ``CustodyError/escrowKeyTampered(version:)``;
    ///   ``CustodyError/escrowKeyNotTrusted(version:fingerprint:)``; other ``CustodyError``s.
    public func createEd25519Key(tenant: TenantID, overlap: Duration = .seconds(86_400), actor: String) async throws -> (version: Int, publicKey: String) {
        guard ed25519Available else {
            throw CustodyError.featureUnavailable("v1a (Ed25519) webhook keys: the HSM module of at least one configured token has no Ed25519 (see `custos hsm selftest`); v1 secrets work")
        }
        guard !trustedEscrowKeys.isEmpty else { throw CustodyError.escrowKeysNotConfigured }
        return try await custody {
            try await ed25519Creation.run(tenant) {
                try await createEd25519KeyAlone(tenant: tenant, overlap: overlap, actor: actor)
            }
        }
    }

    private func createEd25519KeyAlone(tenant: TenantID, overlap: Duration, actor: String) async throws -> (version: Int, publicKey: String) {
        let all = try await keyring.versions(tenant)
        // Checked again, authoritatively, in the insert's transaction; this early check keeps a
        // tenant at its limit from making (and discarding) a key pair on every call.
        guard all.filter({ $0.tokenLabel != nil && $0.state != .destroyed }).count < tokenObjectLimit else {
            throw CustodyError.tokenObjectLimit(tenant, limit: tokenObjectLimit)
        }
        let versions = all.filter { $0.purpose == .webhookEd25519 }
        let next = try await keyring.nextVersion(tenant, .webhookEd25519, after: versions)
        let hasActive = versions.contains { $0.state == .active }
        // No key that a token's loss could take: without a MAC-valid escrow key config.json trusts, none is made.
        guard let escrowKey = try await keyring.pinnedEscrowKey(trusting: trustedEscrowKeys) else {
            throw CustodyError.featureUnavailable(
                "v1a (Ed25519) webhook keys need the custodians' escrow key first: run `custos ceremony generate-escrow` (docs/ceremony.md)"
            )
        }
        // A random part makes the label unique even if another instance picks the same version
        // number at the same moment: signing finds keys by label and refuses a label held twice.
        let unique = Hex.encode(try await pool.random(count: 8))
        let label = TenantKeyring.tokenObjectLabelPrefix(tenant, version: next) + unique
        try await keyring.listBeforeImport(PendingTokenDestructionStore.Entry(label: label, tenant: tenant, purpose: .webhookEd25519, version: next))
        let record: KeyVersionRecord
        do {
            let (sealed, escrow) = try await makeEscrowedKeyPair(
                tenant: tenant, version: next, label: label, escrowKey: escrowKey, replacedUntil: hasActive ? TenantKeyring.end(of: overlap) : nil
            )
            try keyring.keyringStepHook?(.tokenObjectImported)
            record = sealed
            try await keyring.storePendingTokenObject(record, escrow: escrow, limit: tokenObjectLimit)
        } catch {
            // Without its row nothing would ever find or destroy this key pair. In a task of its
            // own: a cancelled caller's check would fail at once and keep the pair (helper-93).
            let keyring = keyring
            await Task { await keyring.discardUnstoredTokenObjects(label: label, tenant: tenant, purpose: .webhookEd25519, version: next) }.value
            throw error
        }
        let entry = AuditEntry(
            tenant: tenant, actor: actor, action: .webhookEd25519, target: "webhook-ed25519/v\(next)",
            details: ["public_key_sha256_prefix": Hex.encode(record.checkValue)]
        )
        // A failure gives the version back, key pair included, so the next creation is not
        // refused by its listing until a restart (helper-68, session 19).
        _ = try await keyring.completeOrRollBack(record, entry: entry) {
            try await keyring.complete(record, overlap: hasActive ? overlap : .zero, entry: entry)
        }
        return (next, StandardWebhooks.encodePublicKey(record.publicKey ?? []))
    }

    /// The seed of a new v1a key: 32 bytes from the HSM RNG into protected memory, imported on
    /// every configured token (each checked to sign for the seed's public key), sealed to the
    /// escrow key, and wiped when this returns — the only moment the seed is outside a token.
    /// - Returns: the sealed pending row and the escrow that goes with it.
    private func makeEscrowedKeyPair(
        tenant: TenantID, version: Int, label: String, escrowKey: EscrowKeyRecord, replacedUntil: Date?
    ) async throws -> (record: KeyVersionRecord, escrow: SeedEscrowRecord) {
        let seed = try await pool.randomSecret(count: SeedEscrow.keyLength)
        let publicKey = try SeedEscrow.ed25519PublicKey(of: seed)
        try await keyring.importEd25519OnEveryToken(seed: seed, publicKey: publicKey, label: label)
        let unsealed = KeyVersionRecord(
            tenant: tenant, purpose: .webhookEd25519, version: version, state: .pending, wrappedKey: nil,
            wrapMechanism: "none (token object)", rootKEKVersion: keyring.rootKeys.kekVersion,
            checkValue: TenantKeyring.fingerprint(publicKey), publicKey: publicKey, tokenLabel: label, rowMAC: [], retiringUntil: replacedUntil
        )
        let escrow = try SeedEscrow.seal(seed, to: escrowKey, for: unsealed)
        return (try await keyring.authenticator.sealed(unsealed, pool: pool), escrow)
    }

    /// The `webhook-signature` header for one delivery: one entry per usable version.
    /// - Throws: ``CustodyError/noActiveKey(_:_:)`` when the tenant has no webhook key.
    public func signatureHeader(tenant: TenantID, id: String, timestamp: Int64, body: [UInt8]) async throws -> String {
        try await custody {
            let content = StandardWebhooks.signedContent(id: id, timestamp: timestamp, body: body)
            var entries = [(version: String, signature: [UInt8])]()
            for record in try await keyring.cachedSigningVersions(tenant, .webhook) {
                let signature = try await keyring.keyUses.counting(tenant, .webhook, version: record.version, .webhookSign) {
                    try await pool.hmacSHA256(key: keyring.hsmKey(for: record), data: content)
                }
                entries.append((StandardWebhooks.hmacVersion, signature))
            }
            for record in try await keyring.cachedSigningVersions(tenant, .webhookEd25519) {
                let signature = try await keyring.keyUses.counting(tenant, .webhookEd25519, version: record.version, .webhookSign) {
                    try await signEd25519(record, message: content)
                }
                entries.append((StandardWebhooks.ed25519Version, signature))
            }
            guard !entries.isEmpty else { throw CustodyError.noActiveKey(tenant, .webhook) }
            return StandardWebhooks.signatureHeader(entries)
        }
    }

    /// An Ed25519 signature that verifies under the row's (MAC-checked) public key: from the
    /// first token or, when it fails, lacks the key, or its object under the row's label signs
    /// for another key, from the next token that gives one. The object on a token is not bound
    /// to the row: whoever holds a token's user PIN can destroy it (versions must be
    /// destroyable) and put a key of their own under the label, so every signature is checked
    /// in software before it leaves (one verification per signature; not yet benchmarked) and a token that
    /// gives another key's is passed over, logged. Trying the next token is safe: a signature
    /// changes nothing on the token, and Ed25519 is deterministic (every token gives the same).
    /// A key made before escrow is on the first token only; it then stays unavailable. A token
    /// out of service is not asked (``SessionPool/tokenPoolsInService``): re-made meanwhile, it
    /// may hold another root's MAC key, which would refuse the row as tampered (a false alarm
    /// that stopped the loop), or one that accepts a row a database writer forged.
    /// - Throws: the first token's failure when no token gives a valid signature, or
    ///   ``HSMError/configuration(_:)`` naming the token whose object signs for another key.
    private func signEd25519(_ record: KeyVersionRecord, message: [UInt8]) async throws -> [UInt8] {
        guard let publicKey = record.publicKey, let expected = try? Curve25519.Signing.PublicKey(rawRepresentation: publicKey) else {
            throw CustodyError.rowTampered(record.tenant, record.purpose, record.version)
        }
        let key = keyring.hsmKey(for: record)
        var failure: (any Error)?
        for token in pool.tokenPoolsInService {
            do {
                let signature = try await token.signEd25519(key: key, message: message)
                if expected.isValidSignature(signature, for: message) { return signature }
                let mismatch = HSMError.configuration(
                    "token \(token.configuration.token): the object labelled \(record.tokenLabel ?? "") does not sign for the public key of \(record.purpose.rawValue) v\(record.version) of tenant \(record.tenant) (replaced with the user PIN?)"
                )
                keyring.logger.error("a token's Ed25519 object does not sign for its row's public key: not used", metadata: ["error": "\(mismatch)"])
                failure = failure ?? mismatch
            } catch let error as HSMError {
                // Down, lacking the key (a replacement token before `restore-webhook-keys`), or
                // holding the label twice: the next token may serve.
                failure = failure ?? error
            }
        }
        throw failure ?? HSMError.unavailable(reason: "no token with trusted keys is configured or in service", retryAfterNanoseconds: nil)
    }

    /// The tenant's usable v1a public keys (`whpk_…`), newest first.
    public func publicKeys(tenant: TenantID) async throws -> [String] {
        try await custody {
            let records = (try? await keyring.signingVersions(tenant, .webhookEd25519)) ?? []
            return records.compactMap { $0.publicKey.map(StandardWebhooks.encodePublicKey) }
        }
    }
}

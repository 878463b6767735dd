import Crypto
public import CustosModel
import Foundation
import HSM
import PKCS11
import SecureMemory
public import Storage

// The escrow of Ed25519 seeds (docs/key-hierarchy.md, "Replica tokens"): the escrow public key
// pinned in the database under an HSM MAC, and the keys that are on one token only because
// they were made before escrow existed.
extension TenantKeyring {
    static let escrowKeyDomain = "custos/escrow_keys/v1"

    static func escrowKeyMessage(version: Int, publicKey: [UInt8], ceremonyID: String) -> [UInt8] {
        var encoding = CanonicalEncoding(domain: escrowKeyDomain)
        encoding.append(version)
        encoding.append(publicKey)
        encoding.append(ceremonyID)
        return encoding.bytes
    }

    /// Records a new escrow public key (the ceremony's `generate-escrow`, which holds the only
    /// copy of its private half as shares) with an HSM MAC under the newest root MAC key. The
    /// ceremony's transcript records the step (the key is not tenant data, like root keys).
    /// - Returns: the record, with its version (one more than the newest recorded).
    /// - Throws: ``CustodyError``.
    public func recordEscrowKey(publicKey: [UInt8], ceremonyID: String) async throws -> EscrowKeyRecord {
        try await custody {
            // Above the tokens' pin too: after the database was restored from a backup older
            // than the newest escrow key, a new key must not take that key's version.
            let anchored = try await escrowKeyAnchor.read()?.version ?? 0
            let record = try await database.withTransaction(context: "record escrow key") { connection in
                let version = max(try await EscrowKeyStore.all(on: connection).map(\.version).max() ?? 0, anchored) + 1
                let mac = try await self.pool.hmacSHA256(
                    key: self.rootKeys.mac, data: Self.escrowKeyMessage(version: version, publicKey: publicKey, ceremonyID: ceremonyID)
                )
                let record = EscrowKeyRecord(version: version, publicKey: publicKey, ceremonyID: ceremonyID, mac: mac, macKeyVersion: self.rootKeys.macVersion)
                try await EscrowKeyStore.insert(record, on: connection)
                return record
            }
            // After the commit: a crash or token failure before this leaves the pin behind,
            // and the next seal raises it (``pinnedEscrowKey()``).
            do {
                try await escrowKeyAnchor.raise(to: EscrowKeyAnchor.Pin(record))
            } catch {
                logger.warning("escrow key recorded but not yet pinned on the tokens; the next v1a key creation pins it", metadata: ["error": "\(error)"])
            }
            return record
        }
    }

    /// The escrow key new Ed25519 seeds are sealed to: the newest recorded one, after every
    /// recorded key's MAC is checked in the HSM, the tokens' pin (``EscrowKeyAnchor``) is found
    /// among them and the newest is among `trusted` (config.json's `webhookEscrowKeys`); the pin
    /// is then raised to it. `nil` when the ceremony has made none yet.
    /// - Throws: ``CustodyError/escrowKeyTampered(version:)`` when any recorded key fails its
    ///   MAC (a database writer put a key of their own there, or edited one), or the database
    ///   lacks the key the tokens pinned (the owner role deleted the newest, so that seeds go to
    ///   an older one); ``CustodyError/escrowKeyNotTrusted(version:fingerprint:)`` when the
    ///   newest is not in `trusted`: nothing is sealed until officers look.
    public func pinnedEscrowKey(trusting trusted: Set<EscrowKeyFingerprint>) async throws -> EscrowKeyRecord? {
        let records = try await verifiedEscrowKeys()
        return try await custody {
            let anchor = escrowKeyAnchor
            if let pin = try await anchor.read(), !records.contains(where: { EscrowKeyAnchor.Pin($0) == pin }) {
                throw CustodyError.escrowKeyTampered(version: pin.version)
            }
            guard let newest = records.max(by: { $0.version < $1.version }) else { return nil }
            // The MAC proves only that the service or a holder of the user PIN wrote the row;
            // the custodians' word is the configuration. The newest, not the newest trusted: a
            // fallback to an older key is what deleting the newest tries to get. Checked before
            // the pin is raised, so a planted key never becomes the tokens' pin either.
            let fingerprint = EscrowKeyFingerprint(publicKey: newest.publicKey)
            guard trusted.contains(fingerprint) else {
                throw CustodyError.escrowKeyNotTrusted(version: newest.version, fingerprint: fingerprint)
            }
            try await anchor.raise(to: EscrowKeyAnchor.Pin(newest))
            return newest
        }
    }

    var escrowKeyAnchor: EscrowKeyAnchor {
        EscrowKeyAnchor(pool: pool, logIdentity: keyStateAnchor.identity)
    }

    /// Every recorded escrow key, each checked against its HSM MAC.
    /// - Throws: ``CustodyError/escrowKeyTampered(version:)`` when any fails.
    public func verifiedEscrowKeys() async throws -> [EscrowKeyRecord] {
        try await custody {
            let records = try await database.withTransaction(context: "read escrow keys") { connection in
                try await EscrowKeyStore.all(on: connection)
            }
            for record in records {
                let expected = try await pool.hmacSHA256(
                    key: .tokenObject(label: RootKeys.macLabel(version: record.macKeyVersion)),
                    data: Self.escrowKeyMessage(version: record.version, publicKey: record.publicKey, ceremonyID: record.ceremonyID)
                )
                guard record.publicKey.count == SeedEscrow.keyLength, constantTimeEqual(expected, record.mac) else {
                    throw CustodyError.escrowKeyTampered(version: record.version)
                }
            }
            return records
        }
    }

    /// Every escrow of `tenant` (ciphertexts only).
    public func seedEscrows(_ tenant: TenantID) async throws -> [SeedEscrowRecord] {
        try await custody {
            try await database.withTenant(tenant, context: "read seed escrows") { connection in
                try await SeedEscrowStore.all(on: connection)
            }
        }
    }

    /// A live Ed25519 version with no escrow: made before escrow existed (its seed was
    /// generated inside the token and never left it), so it lives on one token only and is lost
    /// with that token. Operators rotate such tenants to a new v1a key.
    public struct SingleTokenKey: Sendable, Hashable, Codable {
        public let tenant: TenantID
        public let version: Int
        public let state: KeyState
        public let tokenLabel: String
    }

    /// The live (not destroyed) Ed25519 versions of every tenant that have no escrow.
    /// - Throws: ``CustodyError``.
    public func singleTokenKeys() async throws -> [SingleTokenKey] {
        try await custody {
            var found = [SingleTokenKey]()
            // One query per tenant (row-level security keeps tenants apart); run at start-up in
            // the background and by `custos hsm status`, never on a request path.
            for tenant in try await TenantStore(database).list() {
                let unescrowed = try await database.withTenant(tenant.id, context: "find unescrowed token objects") { connection in
                    try await SeedEscrowStore.unescrowedTokenObjects(on: connection)
                }
                found += unescrowed.map { SingleTokenKey(tenant: tenant.id, version: $0.version, state: $0.state, tokenLabel: $0.label) }
            }
            return found
        }
    }

    /// An escrowed, live Ed25519 version that a configured token lacks: a replacement token
    /// before `custos ceremony restore-webhook-keys` ran on it.
    public struct MissingTokenKey: Sendable, Hashable, Codable {
        public let tenant: TenantID
        public let version: Int
        public let tokenLabel: String
        /// The token's selector (label or serial), as configured.
        public let token: String
    }

    /// The escrowed, live Ed25519 versions each configured token lacks. Reads every private-key
    /// label of every token (`C_FindObjects`): for `custos hsm status`, not for a request path.
    /// - Throws: ``CustodyError``.
    public func webhookKeysMissingOnTokens() async throws -> [MissingTokenKey] {
        try await custody {
            var escrowed = [(tenant: TenantID, version: Int, label: String)]()
            for tenant in try await TenantStore(database).list() {
                let (records, escrows) = try await database.withTenant(tenant.id, context: "list escrowed token objects") { connection in
                    (try await KeyVersionStore.all(on: connection), try await SeedEscrowStore.all(on: connection))
                }
                let versions = Set(escrows.filter { $0.purpose == .webhookEd25519 }.map(\.version))
                for record in records where record.purpose == .webhookEd25519 && record.state != .destroyed && versions.contains(record.version) {
                    if let label = record.tokenLabel { escrowed.append((tenant.id, record.version, label)) }
                }
            }
            var missing = [MissingTokenKey]()
            for token in pool.tokenPools {
                let present = try await token.withPersistentSession { session in
                    Set(try session.findObjects([.class(.privateKey)], limit: 1_000_000).map { String(decoding: try session.attribute(.label, of: $0), as: UTF8.self) })
                }
                for key in escrowed where !present.contains(key.label) {
                    missing.append(MissingTokenKey(tenant: key.tenant, version: key.version, tokenLabel: key.label, token: String(describing: token.configuration.token)))
                }
            }
            return missing
        }
    }

    /// Logs (once, at start-up) every Ed25519 key that lives on one token only, by tenant,
    /// version and label: losing that token loses it; rotating the tenant's v1a key fixes it.
    public func warnAboutSingleTokenKeys() async {
        do {
            let keys = try await singleTokenKeys()
            guard !keys.isEmpty else { return }
            logger.warning("Ed25519 webhook keys made before escrow live on one token only: rotate these tenants' v1a keys (custos webhook ed25519 --tenant …)", metadata: [
                "keys": "\(keys.map { "\($0.tenant.rawValue)/v\($0.version) (\($0.state.rawValue)) \($0.tokenLabel)" })",
            ])
        } catch {
            logger.warning("could not list Ed25519 webhook keys without escrow", metadata: ["error": "\(error)"])
        }
    }

    /// The first 3 bytes of SHA-256 of a public key (what audit entries and KCV columns show).
    static func fingerprint(_ publicKey: [UInt8]) -> [UInt8] {
        Array(SHA256.hash(data: publicKey).prefix(3))
    }

    // MARK: For the ceremony's restore of escrowed keys

    /// Every tenant's id.
    public func listTenants() async throws -> [TenantID] {
        try await custody { try await TenantStore(database).list().map(\.id) }
    }

    /// Whether `record`'s row MAC verifies (in the HSM).
    public func isRowAuthentic(_ record: KeyVersionRecord) async throws -> Bool {
        try await custody { try await authenticator.isAuthentic(record, pool: pool) }
    }

    /// Whether the HSM's list of key states (read fresh from the tokens) names `record`'s
    /// version destroyed: a row put back from a backup is not a key to restore.
    public func isAnchoredAsDestroyed(_ record: KeyVersionRecord) async throws -> Bool {
        try await custody { try await anchoredStates(fresh: true).destroyed.contains(KeyStateAnchor.Entry(record)) }
    }

    /// The audit entry of an escrowed Ed25519 version restored onto `tokens` (their selectors),
    /// which takes the restore off the list (``listWebhookKeyRestore(_:tokens:)``) in the same
    /// transaction.
    public func recordWebhookKeyRestore(_ record: KeyVersionRecord, tokens: [String], escrowKeyVersion: Int, actor: String) async throws {
        let entry = AuditEntry(
            tenant: record.tenant, actor: actor, action: .webhookEd25519Restore, target: "webhook-ed25519/v\(record.version)",
            details: ["tokens": tokens.joined(separator: ","), "escrow_key": "v\(escrowKeyVersion)", "public_key_sha256_prefix": Hex.encode(record.checkValue)]
        )
        let audit = audit, label = record.tokenLabel ?? ""
        try await custody {
            try await database.withTransaction(context: "record webhook key restore") { connection in
                try await PendingWebhookKeyRestoreStore.clear(label: label, on: connection)
                try await entry.append(to: audit, on: connection)
            }
        }
    }

    /// Lists the restore of `record`'s key pair onto `tokens` before it is imported there: a
    /// run killed before ``recordWebhookKeyRestore(_:tokens:escrowKeyVersion:actor:)`` leaves
    /// it for the next run (``interruptedWebhookKeyRestore(_:)``).
    public func listWebhookKeyRestore(_ record: KeyVersionRecord, tokens: [String]) async throws {
        guard let label = record.tokenLabel else { return }
        try await custody {
            try await database.withTransaction(context: "list webhook key restore") { connection in
                try await PendingWebhookKeyRestoreStore.list(label: label, tenant: record.tenant, version: record.version, tokens: tokens, on: connection)
            }
        }
    }

    /// The tokens a run that was killed before its audit entry was restoring `record`'s key
    /// pair onto (`nil`: no such run).
    public func interruptedWebhookKeyRestore(_ record: KeyVersionRecord) async throws -> [String]? {
        guard let label = record.tokenLabel else { return nil }
        return try await custody {
            try await database.withTransaction(context: "read webhook key restore") { connection in
                try await PendingWebhookKeyRestoreStore.tokens(label: label, on: connection)
            }
        }
    }
}

import Crypto
import CustosModel
public import HSM
import PKCS11
public import SecureMemory
import Storage

extension TenantKeyring {
    /// The start of the label of a tenant's Ed25519 version `version`; a random part follows,
    /// so that two creations that pick the same version never share a label.
    static func tokenObjectLabelPrefix(_ tenant: TenantID, version: Int) -> String {
        "custos/tenant/\(tenant.rawValue)/webhook-ed25519/v\(version)/"
    }

    /// Step (1) of a rotation for a version held as a token object: under a per-tenant
    /// advisory lock, refuses when the tenant already holds `limit` live token objects, then
    /// stores the row as pending — one transaction, so two instances cannot both pass the count.
    /// `escrow` (the seed sealed to the escrow key) is stored in the same transaction: no row
    /// of a new version without it.
    /// - Throws: ``CustodyError/tokenObjectLimit(_:limit:)``; storage errors.
    func storePendingTokenObject(_ pending: KeyVersionRecord, escrow: SeedEscrowRecord? = nil, limit: Int) async throws {
        try await storingPending(pending, context: "store pending token-object key version") { connection in
            // Listed before its import (``listBeforeImport(_:)``): off the list with its row. Gone
            // already means start-up reconciliation (another instance's) destroyed the objects.
            guard let label = pending.tokenLabel, try await PendingTokenDestructionStore.claim(label: label, on: connection) else {
                throw CustodyError.changedConcurrently(pending.tenant, pending.purpose, pending.version)
            }
            try await KeyVersionStore.lockTokenObjects(pending.tenant, on: connection)
            try await self.refuseIfOffboarding(pending.tenant, on: connection)
            guard try await KeyVersionStore.liveTokenObjectCount(on: connection) < limit else {
                throw CustodyError.tokenObjectLimit(pending.tenant, limit: limit)
            }
            try await KeyVersionStore.insert(pending, on: connection)
            if let escrow { try await SeedEscrowStore.insert(escrow, on: connection) }
            try await KeyVersionStore.markPending(pending.tenant, pending.purpose, version: pending.version, on: connection)
        }
    }

    /// Lists a new key pair's label for destruction before it is imported: a crash before its
    /// row commits (which claims the entry) leaves objects that start-up reconciliation destroys,
    /// not key material no row names.
    func listBeforeImport(_ entry: PendingTokenDestructionStore.Entry) async throws {
        try await database.withTransaction(context: "list new token objects") { connection in
            try await PendingTokenDestructionStore.insert(entry, on: connection)
        }
    }

    /// Destroys the objects labelled `label` after their row failed to be stored — unless the
    /// row is there after all (a failure reported after COMMIT was sent): a stored row must
    /// never name a missing key, so when that cannot be read the objects are kept and logged.
    func discardUnstoredTokenObjects(label: String, tenant: TenantID, purpose: KeyPurpose, version: Int) async {
        let stored: Bool
        do {
            stored = try await database.withTenant(tenant, context: "check token-object key version") { connection in
                try await KeyVersionStore.get(tenant, purpose, version: version, on: connection)?.tokenLabel == label
            }
        } catch {
            logger.warning("kept a token object whose row may be stored; check it by label", metadata: ["label": "\(label)", "error": "\(error)"])
            return
        }
        guard !stored else { return }
        do {
            // Through the list (``listBeforeImport(_:)``), under its lock, and off it.
            try await destroyTokenObjects(PendingTokenDestructionStore.Entry(label: label, tenant: tenant, purpose: purpose, version: version))
        } catch {
            logger.warning("could not destroy an unstored token object; destroy it by label", metadata: ["label": "\(label)", "error": "\(error)"])
        }
    }

    /// Whether a listed entry read back from `pending_token_destructions` names objects that
    /// may go: the table has no MAC and the service role inserts into it, so an entry is only a
    /// claim. It is believed when its label is an Ed25519 key pair's label of the entry's own
    /// tenant and version (never an anchor, a root key or another tenant's key), and that
    /// version is not live under that label: the HSM's list of key states names it destroyed,
    /// or no row of it was ever stored (a creation that crashed before its commit), or its
    /// MAC-valid row names another label (the loser of two creations that picked one version).
    /// A row that fails its MAC is not believed either way: the objects stay.
    func isDisposable(_ entry: PendingTokenDestructionStore.Entry) async throws -> Bool {
        guard entry.purpose == .webhookEd25519,
              entry.label.hasPrefix(Self.tokenObjectLabelPrefix(entry.tenant, version: entry.version)) else { return false }
        if try await anchoredStates(fresh: true).destroyed.contains(KeyStateAnchor.Entry(tenant: entry.tenant, purpose: entry.purpose, version: entry.version)) {
            return true
        }
        let row = try await database.withTenant(entry.tenant, context: "check a token object listed for destruction") { connection in
            try await KeyVersionStore.get(entry.tenant, entry.purpose, version: entry.version, on: connection)
        }
        guard let row else { return true }
        guard row.tokenLabel != entry.label else { return false }
        return try await authenticator.isAuthentic(row, pool: pool)
    }

    /// Takes an entry ``isDisposable(_:)`` refused off the list without destroying anything, and
    /// says so: whoever wrote it can write the database.
    func dropListedTokenObjects(_ entry: PendingTokenDestructionStore.Entry) async throws {
        try await database.withTransaction(context: "drop a refused token-object listing") { connection in
            _ = try await PendingTokenDestructionStore.claim(label: entry.label, on: connection)
        }
        logger.error("a label listed for destruction names objects that are not a disposable key pair of its tenant and version: not destroyed, taken off the list (a database writer's entry)", metadata: [
            "label": "\(entry.label)", "tenant": "\(entry.tenant)", "version": "\(entry.version)",
        ])
    }

    /// Destroys the key pair of a pending Ed25519 version that reconciliation just deleted
    /// (its row failed its MAC). The label comes from that untrusted row, so it is used only
    /// with this tenant's and this version's prefix: no other stored row can name such a label.
    func discardRolledBackTokenObjects(_ row: KeyVersionRecord) async {
        guard row.purpose == .webhookEd25519, let label = row.tokenLabel,
              label.hasPrefix(Self.tokenObjectLabelPrefix(row.tenant, version: row.version)) else { return }
        do {
            try await destroyTokenObjectsOnEveryToken(label: label)
        } catch {
            logger.warning("could not destroy a rolled-back token object; destroy it by label", metadata: ["label": "\(label)", "error": "\(error)"])
        }
    }

    /// Destroys the objects labelled `label` on every configured token (an Ed25519 key is on
    /// all of them; one made before escrow only on the first). Every token is tried; the first
    /// failure is thrown afterwards, so the caller keeps the destruction listed and retries.
    func destroyTokenObjectsOnEveryToken(label: String) async throws {
        var failure: (any Error)?
        for token in pool.tokenPools {
            do {
                _ = try await token.withPersistentSession { session in
                    for handle in try session.findObjects([.label(label)], limit: 4) { try session.destroyObject(handle) }
                }
            } catch {
                failure = failure ?? error
            }
        }
        if let failure { throw failure }
    }

    /// Imports the Ed25519 key pair of `seed` under `label` on every configured token and
    /// checks that each signs for `publicKey`. A token that cannot take it fails the creation
    /// (the caller destroys what the others got): a new key is on every token or on none.
    ///
    /// Never onto a token out of service: it may have been re-made meanwhile (its keys are checked
    /// only before its return), and a seed imported there is its re-maker's. Such a token fails
    /// the creation before anything is imported, as an unreachable one would.
    func importEd25519OnEveryToken(seed: SecretBytes, publicKey: [UInt8], label: String) async throws {
        if let out = pool.tokenStatuses.first(where: { !$0.inService }) {
            throw HSMError.unavailable(
                reason: "token \(out.token) is out of service (\(out.lastErrorClass ?? "failing")): a new v1a key must be on every token",
                retryAfterNanoseconds: nil
            )
        }
        let id = try await pool.random(count: 16)
        for token in pool.tokenPools {
            _ = try await Self.importEd25519(seed: seed, publicKey: publicKey, label: label, id: id, into: token)
        }
    }

    /// Whether `token` holds a private key labelled `label` (one) that signs for `publicKey`.
    /// - Throws: ``HSMError/configuration(_:)`` when the label names several objects or a key
    ///   that signs for another public key.
    public static func holdsEd25519(label: String, publicKey: [UInt8], in token: SessionPool) async throws -> Bool {
        let challenge = Array("custos/webhook-ed25519/holds-check/v1".utf8) + (try await token.random(count: 16))
        let expected = try Curve25519.Signing.PublicKey(rawRepresentation: publicKey)
        // A worker's session, not the persistent one: the key is a token object, and a signature
        // that fails there leaves nothing active in the session that owns the unwrapped keys.
        return try await token.withSession { hsm in
            let session = hsm.pkcs11
            let existing = try session.findObjects([.class(.privateKey), .label(label)], limit: 2)
            guard let handle = existing.first else { return false }
            guard existing.count == 1, expected.isValidSignature(try session.sign(.eddsa, key: handle, data: challenge), for: challenge) else {
                throw HSMError.configuration("the token's object labelled \(label) does not sign for the key's recorded public key")
            }
            return true
        }
    }

    /// Imports the key pair of `seed` into `token` as a private, sensitive, non-extractable
    /// object and its public key, both labelled `label` — unless the token holds a private key
    /// of that label already (a restore run twice) — then has the token sign a challenge and
    /// checks the signature against `publicKey` in software.
    /// - Returns: whether objects were imported (false: they were there and sign for `publicKey`).
    /// - Throws: ``HSMError/configuration(_:)`` when the token's key does not sign for
    ///   `publicKey` (a module that reads the seed otherwise; a foreign object under the label).
    public static func importEd25519(seed: SecretBytes, publicKey: [UInt8], label: String, id: [UInt8], into token: SessionPool) async throws -> Bool {
        let challenge = Array("custos/webhook-ed25519/import-check/v1".utf8) + id
        let expected = try Curve25519.Signing.PublicKey(rawRepresentation: publicKey)
        // Token objects, made and checked in a worker's session (see ``holdsEd25519``).
        return try await token.withSession { hsm in
            let session = hsm.pkcs11
            let existing = try session.findObjects([.class(.privateKey), .label(label)], limit: 2)
            if let handle = existing.first {
                guard existing.count == 1, expected.isValidSignature(try session.sign(.eddsa, key: handle, data: challenge), for: challenge) else {
                    throw HSMError.configuration("the token's object labelled \(label) does not sign for the key's recorded public key")
                }
                return false
            }
            let templates = KeyTemplate.ed25519Imported(label: label, id: id, seed: seed, publicKey: publicKey)
            let publicHandle = try session.createObject(templates.public)
            let privateHandle: ObjectHandle
            do {
                privateHandle = try session.createObject(templates.private)
            } catch {
                try? session.destroyObject(publicHandle)
                throw error
            }
            do {
                guard expected.isValidSignature(try session.sign(.eddsa, key: privateHandle, data: challenge), for: challenge) else {
                    throw HSMError.configuration("the token's Ed25519 key imported as \(label) does not sign for the seed's public key")
                }
            } catch {
                try? session.destroyObject(privateHandle)
                try? session.destroyObject(publicHandle)
                throw error
            }
            return true
        }
    }
}

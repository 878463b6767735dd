import CustosModel
import PKCS11
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
    /// - Throws: ``CustodyError/tokenObjectLimit(_:limit:)``; storage errors.
    func storePendingTokenObject(_ pending: KeyVersionRecord, limit: Int) async throws {
        try await database.withTenant(pending.tenant, context: "store pending token-object key version") { connection in
            try await KeyVersionStore.lockTokenObjects(pending.tenant, on: connection)
            try await self.refuseIfOffboarding(pending.tenant, on: connection)
            guard try await KeyVersionStore.liveTokenObjectCount(on: connection) < limit else {
                throw CustodyError.tokenObjectLimit(pending.tenant, limit: limit)
            }
            try await KeyVersionStore.insert(pending, on: connection)
            try await KeyVersionStore.markPending(pending.tenant, pending.purpose, version: pending.version, on: connection)
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
            _ = try await pool.withPersistentSession { session in
                for handle in try session.findObjects([.label(label)], limit: 4) { try session.destroyObject(handle) }
            }
        } catch {
            logger.warning("could not destroy an unstored token object; destroy it by label", metadata: ["label": "\(label)", "error": "\(error)"])
        }
    }

    /// Destroys the key pair of a pending Ed25519 version that reconciliation just deleted
    /// (its row failed its MAC). The label comes from that untrusted row, so it is used only
    /// with this tenant's and this version's prefix: no other stored row can name such a label.
    func discardRolledBackTokenObjects(_ row: KeyVersionRecord) async {
        guard row.purpose == .webhookEd25519, let label = row.tokenLabel,
              label.hasPrefix(Self.tokenObjectLabelPrefix(row.tenant, version: row.version)) else { return }
        do {
            _ = try await pool.withPersistentSession { session in
                for handle in try session.findObjects([.label(label)], limit: 4) { try session.destroyObject(handle) }
            }
        } catch {
            logger.warning("could not destroy a rolled-back token object; destroy it by label", metadata: ["label": "\(label)", "error": "\(error)"])
        }
    }
}

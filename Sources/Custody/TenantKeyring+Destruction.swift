public import CustosModel
import Foundation
import HSM
import SecureMemory
import Storage

// The end of a version's life: retire (overlap over) and destroy (after the waiting period,
// only when nothing stored still needs it).
extension TenantKeyring {
    /// Ends a `retiring` version's overlap now: it may only verify or decrypt from here on.
    public func retire(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int, actor: String) async throws {
        try await custody {
            var row = try await database.withTenant(tenant, context: "read key version") { connection in
                try await KeyVersionStore.get(tenant, purpose, version: version, on: connection)
            }.orThrow(CustodyError.unknownKeyVersion(tenant, purpose, version))
            try await authenticator.verify(row, pool: pool)
            guard row.state == .retiring else {
                throw CustodyError.invalidTransition(tenant, purpose, version, from: row.state, to: .retired)
            }
            if purpose.isBiometric {
                // Retiring a biometric version drops the templates still under it: inside the
                // window that is an early end (two officers), after it the closer's job.
                if let until = row.retiringUntil, until > Date() {
                    throw CustodyError.biometricOverlapOpen(tenant, purpose, version, until: until)
                }
                try await closeBiometricOverlap(tenant, version: version, actor: actor, reason: .windowEnded)
                return
            }
            let expectedMAC = row.rowMAC
            row.state = .retired
            row.retiringUntil = nil
            let sealed = try await authenticator.sealed(row, pool: pool)
            let audit = audit
            try await database.withTenant(tenant, context: "retire key version") { connection in
                guard try await KeyVersionStore.update(sealed, expectedMAC: expectedMAC, on: connection) else {
                    throw CustodyError.changedConcurrently(tenant, purpose, version)
                }
                try await KeyVersionStore.notifyStateChange(tenant, purpose, on: connection)
                try await AuditEntry(tenant: tenant, actor: actor, action: .keyRetire, target: "\(purpose.rawValue)/v\(version)")
                    .append(to: audit, on: connection)
            }
            invalidate(tenant, purpose)
        }
    }

    /// Destroys a retired version's material (metadata and version number stay). Refused
    /// before `waitingPeriod` has passed since retirement, and while live data still needs it.
    public func destroy(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int, waitingPeriod: Duration, actor: String) async throws {
        try await custody {
            let rows = try await database.withTenant(tenant, context: "read key versions") { connection in
                try await KeyVersionStore.versions(tenant, purpose, on: connection)
            }
            guard var row = rows.first(where: { $0.version == version }) else { throw CustodyError.unknownKeyVersion(tenant, purpose, version) }
            // The waiting period is read from the row: only a MAC-valid row is believed.
            try await authenticator.verify(row, pool: pool)
            let expectedMAC = row.rowMAC
            guard row.state == .retired else { throw CustodyError.invalidTransition(tenant, purpose, version, from: row.state, to: .destroyed) }
            let retiredAt = row.retiredAt ?? .distantFuture
            if Date().timeIntervalSince(retiredAt) < Double(waitingPeriod.components.seconds) {
                throw CustodyError.stillNeeded(tenant, purpose, version, reason: "retired less than \(waitingPeriod.components.seconds) s ago")
            }
            let references = try await self.references(tenant, purpose, version: version)
            if references > 0 {
                throw CustodyError.stillNeeded(tenant, purpose, version, reason: "\(references) stored values still use it; re-key them first")
            }
            let tokenLabel = purpose == .webhookEd25519 ? row.tokenLabel : nil
            row.state = .destroyed
            row.wrappedKey = nil
            row.tokenLabel = nil
            row.destroyedAt = .wholeSecondsNow
            let sealed = try await authenticator.sealed(row, pool: pool)
            let audit = audit, checkValue = row.checkValue
            // The HSM lists the version as destroyed before the row and its audit entry commit
            // (together, with the token objects listed in `pending_token_destructions`): a crash
            // in between leaves a list ahead of the database, which refuses the version and
            // which ``reconcile()`` rolls forward — never a committed destruction a replayed
            // row could undo, a destroyed key without its entry, or material no row names.
            let pending = tokenLabel.map { PendingTokenDestructionStore.Entry(label: $0, tenant: tenant, purpose: purpose, version: version) }
            let entry = KeyStateAnchor.Entry(row)
            try await database.withTenant(tenant, context: "destroy key version") { connection in
                guard try await KeyVersionStore.update(sealed, expectedMAC: expectedMAC, on: connection) else {
                    throw CustodyError.changedConcurrently(tenant, purpose, version)
                }
                if let pending { try await PendingTokenDestructionStore.insert(pending, on: connection) }
                try await KeyVersionStore.notifyStateChange(tenant, purpose, on: connection)
                try await self.changeAnchoredStates(on: connection, scopedTo: tenant, actor: actor) { $0.destroy(entry) }
                try self.keyringStepHook?(.destructionAnchored)
                try await AuditEntry(tenant: tenant, actor: actor, action: .keyDestroy, target: "\(purpose.rawValue)/v\(version)", details: ["kcv": Hex.encode(checkValue)])
                    .append(to: audit, on: connection)
            }
            invalidate(tenant, purpose)
            await discardUnwrapped(row)
            try keyringStepHook?(.destructionRecorded)
            if let pending { try await destroyTokenObjects(pending) }
            try keyringStepHook?(.destructionTokenObjectsDestroyed)
        }
    }

    /// Destroys now this process's unwrapped session object of a destroyed version, on every
    /// token (a call may have unwrapped it on a replica), rather than at its eviction or the next
    /// re-login: no call reaches it (a destroyed row is refused before its key is looked up), but
    /// a destroyed key should not stay usable in the HSM. Other instances' copies go at their
    /// eviction or re-login. A failure leaves the object until then.
    func discardUnwrapped(_ row: KeyVersionRecord) async {
        let key = hsmKey(for: row)
        for token in pool.tokenPools {
            do {
                try await token.discard([key])
            } catch {
                logger.warning("could not destroy a destroyed key version's session object", metadata: [
                    "purpose": "\(row.purpose.rawValue)", "version": "\(row.version)", "error": "\(error)",
                ])
            }
        }
    }

    /// Destroys the token objects of a listed label (a destroyed version, or a new key pair whose
    /// row never committed), in the transaction that takes the label off the list: a creation
    /// storing its row claims the same entry in its transaction, so it either commits first (the
    /// entry is gone and nothing is destroyed here) or waits for this one and finds the entry
    /// gone — it never commits a row naming objects destroyed here.
    /// - Throws: the token's error (the transaction rolls back: the entry stays listed and the
    ///   next reconciliation retries).
    func destroyTokenObjects(_ pending: PendingTokenDestructionStore.Entry) async throws {
        try await database.withTransaction(context: "destroy listed token objects") { connection in
            guard try await PendingTokenDestructionStore.claim(label: pending.label, on: connection) else { return }
            do {
                try await self.destroyTokenObjectsOnEveryToken(label: pending.label)
            } catch {
                self.logger.error("token objects listed for destruction remain; start-up reconciliation retries", metadata: [
                    "label": "\(pending.label)", "error": "\(error)",
                ])
                throw error
            }
        }
    }

    /// How many stored values still need `version` (the count destruction checks).
    /// - Throws: ``CustodyError``.
    public func storedReferences(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int) async throws -> Int {
        try await custody { try await references(tenant, purpose, version: version) }
    }

    /// How many stored values still need `version`: API-key hashes (pepper), enrolled tokens
    /// (both biometric keys: one version covers the pair), sealed names and emails (data), and
    /// stored subject references (pii). Webhook keys sign outgoing messages only: nothing
    /// stored depends on them.
    func references(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int) async throws -> Int {
        try await database.withTenant(tenant, context: "count references to a key version") { connection in
            switch purpose {
            case .apiKeyPepper:
                try await APIKeyStore.count(pepperVersion: version, at: Date(), on: connection)
            case .bioSeed, .bioPRF:
                try await TemplateStore.count(keyVersion: version, on: connection)
            case .data:
                try await SessionStore.count(dataKeyVersion: version, on: connection)
            case .pii:
                try await TemplateStore.count(piiVersion: version, on: connection)
                    + SessionStore.count(piiVersion: version, on: connection)
            case .webhook, .webhookEd25519:
                0
            }
        }
    }
}

public import CustosModel
import Foundation
import HSM
import SecureMemory
public import Storage

// Rotation of one purpose's key, crash-safe in two committed steps, and the give-back of a
// rotation whose second step failed (start-up reconciliation, for crashes, is
// `+Reconciliation`).
extension TenantKeyring {
    /// Rotates `purpose`: a new version becomes active; the old one becomes `retiring` for
    /// `overlap` (still usable for signing, e.g. webhooks) or, with no overlap, `retired`
    /// (verify/decrypt only).
    ///
    /// Crash-safe in two committed steps: (1) the new version is stored `pending` and listed in
    /// `pending_rotations`; (2) one transaction retires the old version, activates the new one and
    /// clears the listing. A crash after (1) is completed by ``reconcile()``; the unique index
    /// on active versions makes two active versions impossible.
    @discardableResult
    public func rotate(_ tenant: TenantID, _ purpose: KeyPurpose, overlap: Duration = .zero, actor: String) async throws -> KeyVersionRecord {
        try await rotate(tenant, purpose, retiringUntil: Self.end(of: overlap), overlapSeconds: overlap.components.seconds, actor: actor)
    }

    /// The end of an overlap that starts now; `nil` for none.
    static func end(of overlap: Duration) -> Date? {
        overlap > .zero ? Date.wholeSecondsNow.addingTimeInterval(Double(overlap.components.seconds)) : nil
    }

    /// ``rotate(_:_:overlap:actor:)`` with the old version's overlap ending at a given time, so
    /// the two biometric keys can be given the same end.
    /// - Parameter overlapSeconds: the overlap as audited (by default, from now to `retiringUntil`).
    func rotate(_ tenant: TenantID, _ purpose: KeyPurpose, retiringUntil: Date?, overlapSeconds: Int64? = nil, actor: String) async throws -> KeyVersionRecord {
        try await custody {
            let pending = try await storeNextPending(tenant, purpose, retiringUntil: retiringUntil)
            try keyringStepHook?(.pendingStored)
            let entry = rotationEntry(pending, retiringUntil: retiringUntil, overlapSeconds: overlapSeconds, actor: actor)
            return try await completeOrRollBack(pending, entry: entry) {
                try await complete(pending, retiringUntil: retiringUntil, entry: entry)
            }
        }
    }

    /// Runs step (2) of `pending`'s rotation; if it fails, the version is given back: another
    /// instance's reconciliation that completed this very key (as listed: same overlap) makes
    /// this a success, otherwise the pending row this rotation stored and its listing go (best
    /// effort), so the rotation can be asked for again at once — a listing left behind refused
    /// every later rotation of the purpose until a restart reconciled it (attack review, session
    /// 19). Version numbers can be taken again once a pending row is gone, so a row is this
    /// rotation's only if it holds this rotation's key (helper-68).
    /// - Parameter entry: the rotation's own audit entry, which step (2) writes; when another
    ///   instance completed it, written here (marked so), or the log would name only `custos`.
    func completeOrRollBack(_ pending: KeyVersionRecord, entry: AuditEntry, _ step: () async throws -> KeyVersionRecord) async throws -> KeyVersionRecord {
        do {
            return try await step()
        } catch {
            // In a task of its own: a rotation failed by its caller's cancellation (a deadline)
            // would otherwise fail its give-back at once too, and leave its listing to refuse
            // every later rotation of the purpose until a reconciliation (helper-92).
            let givenBack = Task { await self.givenBackOrCompletedElsewhere(pending, entry: entry) }
            if let completed = await givenBack.value { return completed }
            throw error
        }
    }

    /// After step (2) of `pending`'s rotation failed: gives it back (`nil`), or — when another
    /// instance's reconciliation completed this very key — writes the rotation's own entry and
    /// returns the completed row. Best effort: what cannot be looked at is logged, and counts as
    /// given back (start-up or `custos key reconcile` finishes it).
    private func givenBackOrCompletedElsewhere(_ pending: KeyVersionRecord, entry: AuditEntry) async -> KeyVersionRecord? {
        let tenant = pending.tenant, purpose = pending.purpose, version = pending.version
        do {
            if try await giveBack(pending) { return nil }
            let now = try await database.withTenant(tenant, context: "read key version given back") { connection in
                try await KeyVersionStore.get(tenant, purpose, version: version, on: connection)
            }
            guard let now, now.state != .pending, now.activatedAt != nil, Self.holdsSameKey(now, pending),
                  try await authenticator.mac(now, pool: pool) == now.rowMAC else { return nil }
            invalidate(tenant, purpose)
            // Completed by another instance — or by this call's own commit whose answer was lost:
            // then its entry is there already (helper-70). Best effort: the rotation is done.
            var own = entry
            own.details["completed_by"] = "reconciliation"
            let audit = audit, record = own
            do {
                try await database.withTenant(tenant, context: "record rotation completed elsewhere") { connection in
                    guard try await !AuditLogStore.contains(tenant: tenant, action: record.action.rawValue, target: record.target, on: connection) else { return }
                    try await record.append(to: audit, on: connection)
                }
            } catch {
                logger.warning("a rotation completed by reconciliation has no entry under its requester", metadata: [
                    "tenant": "\(tenant)", "target": "\(record.target)", "error": "\(error)",
                ])
            }
            return now
        } catch {
            logger.warning("a failed rotation's pending version could not be given back; start-up or `custos key reconcile` will", metadata: [
                "tenant": "\(tenant)", "purpose": "\(purpose.rawValue)", "version": "\(version)", "error": "\(error)",
            ])
            return nil
        }
    }

    /// Deletes `pending`'s row — only while it is the row that was stored (its MAC) and still
    /// pending — with its listing, and an Ed25519 version's key pair (its escrow row goes with
    /// the row; the pair is listed for destruction in the same transaction, so a crash before
    /// it is gone leaves it to reconciliation, not orphaned: helper-70). - Returns: whether it
    /// was deleted.
    func giveBack(_ pending: KeyVersionRecord) async throws -> Bool {
        let tenant = pending.tenant, purpose = pending.purpose, version = pending.version, mac = pending.rowMAC
        let keyPair: PendingTokenDestructionStore.Entry? = if purpose == .webhookEd25519, let label = pending.tokenLabel,
            label.hasPrefix(Self.tokenObjectLabelPrefix(tenant, version: version)) {
            PendingTokenDestructionStore.Entry(label: label, tenant: tenant, purpose: purpose, version: version)
        } else {
            nil
        }
        let deleted = try await database.withTenant(tenant, context: "give back pending key version") { connection -> Bool in
            guard try await KeyVersionStore.deletePending(tenant, purpose, version: version, rowMAC: mac, on: connection) else { return false }
            try await KeyVersionStore.clearPending(tenant, purpose, version: version, on: connection)
            if let keyPair { try await PendingTokenDestructionStore.insert(keyPair, on: connection) }
            return true
        }
        if deleted, let keyPair { try? await destroyTokenObjects(keyPair) }
        return deleted
    }

    /// Whether `row` holds the key `pending` was stored with: the same check value, and the same
    /// blob or token objects (a re-wrap since makes it look foreign: the caller then sees the
    /// failure and asks again, never a key that is not its own).
    static func holdsSameKey(_ row: KeyVersionRecord, _ pending: KeyVersionRecord) -> Bool {
        row.checkValue == pending.checkValue && row.wrappedKey == pending.wrappedKey
            && row.publicKey == pending.publicKey && row.tokenLabel == pending.tokenLabel
    }

    /// Step (1) of a rotation: the next version, made in the HSM, stored `pending` and listed
    /// with the end of the overlap asked for.
    func storeNextPending(_ tenant: TenantID, _ purpose: KeyPurpose, retiringUntil: Date?) async throws -> KeyVersionRecord {
        let existing = try await database.withTenant(tenant, context: "read key versions") { connection in
            try await KeyVersionStore.versions(tenant, purpose, on: connection)
        }
        guard existing.contains(where: { $0.state == .active }) else { throw CustodyError.noActiveKey(tenant, purpose) }
        let next = try await nextVersion(tenant, purpose, after: existing)
        return try await underNewestRootKEKs {
            let pending = try await makeVersion(tenant, purpose, version: next, state: .pending, replacedUntil: retiringUntil)
            try await storePending(pending)
            return pending
        }
    }

    /// Step (2) of a rotation, audited as `key.rotate`.
    func complete(_ pending: KeyVersionRecord, retiringUntil: Date?, overlapSeconds: Int64?, actor: String) async throws -> KeyVersionRecord {
        try await complete(pending, retiringUntil: retiringUntil, entry: rotationEntry(pending, retiringUntil: retiringUntil, overlapSeconds: overlapSeconds, actor: actor))
    }

    /// The `key.rotate` entry of `pending`'s rotation.
    func rotationEntry(_ pending: KeyVersionRecord, retiringUntil: Date?, overlapSeconds: Int64?, actor: String) -> AuditEntry {
        let overlapSeconds = overlapSeconds ?? retiringUntil.map { max(0, Int64($0.timeIntervalSince(Date.wholeSecondsNow).rounded())) } ?? 0
        return AuditEntry(
            tenant: pending.tenant, actor: actor, action: .keyRotate, target: "\(pending.purpose.rawValue)/v\(pending.version)",
            details: ["kcv": Hex.encode(pending.checkValue), "overlap_seconds": "\(overlapSeconds)"]
        )
    }

    func storePending(_ pending: KeyVersionRecord) async throws {
        try await storingPending(pending, context: "store pending key version") { connection in
            try await self.refuseIfOffboarding(pending.tenant, on: connection)
            try await Self.requireNewestRootKEKs([pending], on: connection)
            try await KeyVersionStore.insert(pending, on: connection)
            try await KeyVersionStore.markPending(pending.tenant, pending.purpose, version: pending.version, on: connection)
        }
    }

    /// Runs `body`, which stores `pending` and lists its rotation, in one transaction.
    ///
    /// A unique violation means another rotation of the purpose got there first (until session
    /// 24 it answered ALREADY_EXISTS, as if the caller had asked for a version that exists:
    /// helper-91). Which rotation decides the answer: one that took this version number →
    /// `changedConcurrently` (nothing stored; sent again, the call takes the next number); one of
    /// another version still listed as pending → `rotationPending`, since the call sent again
    /// would meet the same listing until that rotation completes or is rolled back (helper-92).
    /// That is also the answer while the other rotation is merely finishing: two rotations of
    /// one purpose at once are two officers' (or automations') mistake, and told so.
    func storingPending(
        _ pending: KeyVersionRecord, context: String, _ body: @escaping @Sendable (DatabaseTransaction) async throws -> Void
    ) async throws {
        do {
            try await database.withTenant(pending.tenant, context: context, body)
        } catch StorageError.conflict {
            let listed = try await database.withTenant(pending.tenant, context: "read pending rotation") { connection in
                try await KeyVersionStore.pendingRotation(pending.tenant, pending.purpose, on: connection)
            }
            if let listed, listed != pending.version { throw CustodyError.rotationPending(pending.tenant, pending.purpose, listed) }
            throw CustodyError.changedConcurrently(pending.tenant, pending.purpose, pending.version)
        } catch let error where Self.mayHaveCommitted(error) {
            // The caller was told of a failure (its cancellation, or the operation timeout)
            // while the COMMIT may still have landed: give the version back, in a task its
            // cancellation does not reach, or its listing would refuse every later rotation of
            // the purpose until a reconciliation (helper-93). Nothing stored: the delete, which
            // needs this row's MAC, finds nothing.
            let pending = pending
            _ = await Task { try? await self.giveBack(pending) }.value
            throw error
        }
    }

    /// Whether a transaction that failed with `error` may have committed all the same.
    static func mayHaveCommitted(_ error: any Error) -> Bool {
        if error is CancellationError { return true }
        if case StorageError.unavailable = error { return true }
        return false
    }

    /// Rotates `bio-seed` and `bio-prf` together: one biometric key version covers both
    /// (DESIGN §5), so tokens of version n are made with seed n and PRF n. If an earlier call was
    /// interrupted between the two, this brings the lagging one up instead of moving both.
    ///
    /// The previous version stays `retiring` — still matching, so subjects migrate on their next
    /// GREEN verification — until the overlap ends, the same moment for both keys; then
    /// ``closeEndedBiometricOverlaps(now:actor:)`` drops what did not migrate and retires it.
    /// - Parameter overlap: `nil` (what officers get): the tenant's policy, `bio_overlap_days`.
    /// - Returns: the biometric version now active.
    @discardableResult
    public func rotateBiometric(_ tenant: TenantID, overlap: Duration? = nil, actor: String) async throws -> Int {
        try await custody {
            let seed = try await record(tenant, .bioSeed, version: nil).version
            let prf = try await record(tenant, .bioPRF, version: nil).version
            let target = seed == prf ? seed + 1 : max(seed, prf)
            let fixedEnd = overlap.map(Self.end(of:))
            // Both new versions are stored (and listed as pending) before either is activated:
            // a crash between the two activations leaves the second listed, and start-up
            // reconciliation completes it, so tokens never need a seed without its PRF.
            var pending = [KeyVersionRecord]()
            for (purpose, active) in [(KeyPurpose.bioSeed, seed), (.bioPRF, prf)] where active < target {
                // An earlier call that failed before completing left its pending version: completed
                // now, not made again (helper-68: a new one was numbered past the target, and
                // every retry refused). Not given back and remade: with the other key already
                // moved, a failure between the two would leave the pair uneven and unlisted, which
                // nothing levels (helper-70). A key made before a root-KEK rotation is no more
                // exposed than every other key that existed then (the rotation re-wraps, it does
                // not renew), and the re-wrap moved its blob with the rest.
                if let left = try await authenticPending(tenant, purpose, version: target) {
                    pending.append(left)
                    continue
                }
                let stored = try await storeNextPending(tenant, purpose, retiringUntil: fixedEnd ?? nil)
                guard stored.version == target else {
                    // Another call moved the pair meanwhile: this version is not wanted, and left
                    // listed a restart would activate it alone (helper-69).
                    _ = try? await giveBack(stored)
                    throw CustodyError.invalidTransition(tenant, purpose, stored.version, from: .pending, to: .active)
                }
                pending.append(stored)
            }
            try keyringStepHook?(.pendingStored)
            for stored in pending {
                let until = if let fixedEnd { fixedEnd } else { try await biometricOverlapEnd(tenant, rotating: stored.purpose, from: target - 1) }
                _ = try await complete(stored, retiringUntil: until, overlapSeconds: nil, actor: actor)
                try keyringStepHook?(.completed(stored.purpose))
            }
            return target
        }
    }

    /// The pending row of `purpose` v`version`, if there is one and its MAC holds.
    private func authenticPending(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int) async throws -> KeyVersionRecord? {
        let row = try await database.withTenant(tenant, context: "read pending key version") { connection in
            try await KeyVersionStore.get(tenant, purpose, version: version, on: connection)
        }
        guard let row, row.state == .pending, try await authenticator.mac(row, pool: pool) == row.rowMAC else { return nil }
        return row
    }

    /// Step (2) of a rotation: one transaction.
    /// - Parameter entry: the audit entry of the action, written in the same transaction.
    func complete(_ pending: KeyVersionRecord, overlap: Duration, entry: AuditEntry) async throws -> KeyVersionRecord {
        try await complete(pending, retiringUntil: Self.end(of: overlap), entry: entry)
    }

    /// Step (2) of a rotation, the old version `retiring` until `retiringUntil` (`nil`: retired).
    func complete(_ pending: KeyVersionRecord, retiringUntil: Date?, entry: AuditEntry) async throws -> KeyVersionRecord {
        let tenant = pending.tenant, purpose = pending.purpose
        let current = try await database.withTenant(tenant, context: "read key versions") { connection in
            try await KeyVersionStore.versions(tenant, purpose, on: connection)
        }
        let now = Date.wholeSecondsNow
        var updates = [(record: KeyVersionRecord, expectedMAC: [UInt8])]()
        for var old in current where old.state == .active && old.version != pending.version {
            try await authenticator.verify(old, pool: pool)
            let expectedMAC = old.rowMAC
            if let retiringUntil {
                old.state = .retiring
                old.retiringUntil = retiringUntil
            } else {
                old.state = .retired
                old.retiringUntil = nil
            }
            old.retiredAt = old.retiredAt ?? now
            updates.append((try await authenticator.sealed(old, pool: pool), expectedMAC))
        }
        var activated = pending
        activated.state = .active
        activated.activatedAt = now
        // While pending it held the overlap asked for (for reconciliation); active, none.
        activated.retiringUntil = nil
        activated = try await authenticator.sealed(activated, pool: pool)
        let oldVersions = updates
        let newVersion = activated
        let pendingMAC = pending.rowMAC
        try await database.withTenant(tenant, context: "activate key version") { connection in
            for old in oldVersions {
                guard try await KeyVersionStore.update(old.record, expectedMAC: old.expectedMAC, on: connection) else {
                    throw CustodyError.changedConcurrently(tenant, purpose, old.record.version)
                }
            }
            guard try await KeyVersionStore.update(newVersion, expectedMAC: pendingMAC, on: connection) else {
                throw CustodyError.changedConcurrently(tenant, purpose, newVersion.version)
            }
            try await KeyVersionStore.clearPending(tenant, purpose, version: newVersion.version, on: connection)
            try await entry.append(to: self.audit, on: connection)
            // Other instances forget their cached versions now, not when their cache expires:
            // until then they would seal, sign and make subject references with the version
            // just retired (attack review, session 19).
            try await KeyVersionStore.notifyStateChange(tenant, purpose, on: connection)
        }
        invalidate(tenant, purpose)
        return activated
    }
}

public import CustosModel
import Foundation
import HSM
import SecureMemory
public import Storage

// Rotation of one purpose's key, crash-safe in two committed steps, and the start-up
// reconciliation that finishes or undoes an interrupted one.
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
            if let completed = await givenBackOrCompletedElsewhere(pending, entry: entry) { return completed }
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
        try await database.withTenant(pending.tenant, context: "store pending key version") { connection in
            try await self.refuseIfOffboarding(pending.tenant, on: connection)
            try await Self.requireNewestRootKEKs([pending], on: connection)
            try await KeyVersionStore.insert(pending, on: connection)
            try await KeyVersionStore.markPending(pending.tenant, pending.purpose, version: pending.version, on: connection)
        }
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

    /// Completes or rolls back one listed rotation; `nil` when it was done already (another
    /// instance's reconciliation, or the rotation itself, completed it since the list was read).
    private func reconcileRotation(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int) async throws -> Reconciliation? {
        let row = try await database.withTenant(tenant, context: "read pending key version") { connection in
            try await KeyVersionStore.get(tenant, purpose, version: version, on: connection)
        }
        func entry(_ outcome: String) -> AuditEntry {
            AuditEntry(tenant: tenant, actor: "custos", action: .keyReconcile, target: "\(purpose.rawValue)/v\(version)", details: ["outcome": outcome])
        }
        let authentic = if let row { try await authenticator.mac(row, pool: pool) == row.rowMAC } else { false }
        if let row, authentic, row.state != .pending {
            // Completed meanwhile: only this version's listing, if still there, goes.
            try await database.withTenant(tenant, context: "clear completed rotation") { connection in
                try await KeyVersionStore.clearPending(tenant, purpose, version: version, on: connection)
            }
            return nil
        }
        // A v1 webhook secret is shown only to the caller of the call that made it, and that
        // call failed: activated, it would sign every webhook with a secret nobody has, and
        // retire the one the tenant checks against (attack review, session 19).
        if let row, authentic, purpose != .webhook {
            // The overlap the rotation asked for, under the row MAC. A biometric rotation keeps
            // its overlap, or the crash would strand every subject enrolled under the old
            // version (the cliff the overlap removes).
            let until = purpose.isBiometric
                ? try await biometricOverlapEnd(tenant, rotating: purpose, from: version - 1)
                : row.retiringUntil.flatMap { $0 > Date.wholeSecondsNow ? $0 : nil }
            _ = try await complete(row, retiringUntil: until, entry: entry("completed"))
            return .completed(tenant, purpose, version: version)
        }
        guard try await rollBackRotation(tenant, purpose, version: version, read: row) else { return nil }
        return .rolledBack(tenant, purpose, version: version)
    }

    /// Rolls back the listed rotation of `version`, whose row read `row` (`nil`: none): the
    /// pending row goes — only if it is still the one read — with the listing, under a `rolled
    /// back` entry, and an Ed25519 version's key pair with it. A row that changed since it was
    /// read (its rotation completed meanwhile, or its number was given back and taken again) is
    /// left alone, unrecorded: `false` (helper-68: the entry, and the destruction of a live v1a
    /// key's objects on every token, went ahead).
    func rollBackRotation(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int, read row: KeyVersionRecord?) async throws -> Bool {
        let rolledBack = AuditEntry(
            tenant: tenant, actor: "custos", action: .keyReconcile, target: "\(purpose.rawValue)/v\(version)", details: ["outcome": "rolled back"]
        )
        let audit = audit
        let done = try await database.withTenant(tenant, context: "roll back pending key version") { connection -> Bool in
            var expected = row?.rowMAC
            if let row, row.state == .pending {
                guard try await KeyVersionStore.deletePending(tenant, purpose, version: version, rowMAC: row.rowMAC, on: connection) else { return false }
                expected = nil
            }
            // The row as read (none, the same MAC, or none now that it is deleted) must still be
            // what is there, checked in the listing's own delete: a version number given back and
            // taken again since is another rotation's, and so is its listing (helper-69, -70).
            guard try await KeyVersionStore.clearPending(tenant, purpose, version: version, ifRowMAC: expected, on: connection) else { return false }
            try await rolledBack.append(to: audit, on: connection)
            return true
        }
        guard done else { return false }
        // An Ed25519 version's key pair is a token object: without its row it would be orphaned.
        if let row, row.state == .pending { await discardRolledBackTokenObjects(row) }
        return true
    }

    /// What start-up reconciliation did with one interrupted rotation.
    public enum Reconciliation: Sendable, Equatable {
        case completed(TenantID, KeyPurpose, version: Int)
        case rolledBack(TenantID, KeyPurpose, version: Int)
        /// A destroyed version's token objects, or a new key pair whose row never committed, left
        /// on the token by a crash, destroyed.
        case tokenObjectsDestroyed(TenantID, KeyPurpose, version: Int)
        /// A version the HSM lists as destroyed whose row was not (a crash between the list and
        /// the commit, or a destroyed row put back from a backup), destroyed.
        case destructionCompleted(TenantID, KeyPurpose, version: Int)
    }

    /// Finishes or undoes every rotation interrupted by a crash: a pending version whose row
    /// MAC is intact is activated (its material is stored, nothing is lost), the version it
    /// replaces kept for the overlap the rotation asked for; one that fails its check is deleted,
    /// and so is a v1 webhook secret (shown only to the caller of the call that failed). A
    /// rotation another instance completes meanwhile is left to it. Run at start-up; safe beside
    /// another instance's run and beside rotations in progress.
    public func reconcile() async throws -> [Reconciliation] {
        try await custody {
            let pending = try await database.withTransaction(context: "list pending rotations") { connection in
                try await KeyVersionStore.pendingRotations(on: connection)
            }
            // First: a failure further down (a tampered pending row) must not leave a token
            // without the HSM's list of key states while the service keeps serving.
            var actions = try await reconcileKeyStateAnchor()
            for (tenant, purpose, version) in pending {
                do {
                    if let action = try await reconcileRotation(tenant, purpose, version: version) { actions.append(action) }
                } catch CustodyError.changedConcurrently {
                    // Another instance's reconciliation (or the rotation itself) got there first:
                    // the rest of the list still needs this one.
                    logger.notice("an interrupted rotation changed while it was reconciled; left to whoever changed it", metadata: [
                        "tenant": "\(tenant)", "purpose": "\(purpose.rawValue)", "version": "\(version)",
                    ])
                }
            }
            // Token objects of versions whose destruction committed before a crash, and new key
            // pairs whose row never committed.
            let leftovers = try await database.withTransaction(context: "list pending token destructions") { connection in
                try await PendingTokenDestructionStore.all(on: connection)
            }
            for entry in leftovers {
                // The list is writable by the service role: an entry is believed only when it
                // can name nothing but one of custody's own disposable key pairs.
                guard try await isDisposable(entry) else {
                    try await dropListedTokenObjects(entry)
                    continue
                }
                try await destroyTokenObjects(entry)
                actions.append(.tokenObjectsDestroyed(entry.tenant, entry.purpose, version: entry.version))
            }
            // One biometric version covers both keys: a crash before the second key's pending row
            // was stored leaves the pair apart after the loop above; bring the lagging one up
            // (with the same overlap end), or no token could be made until an officer rotated.
            for tenant in Set(pending.filter { $0.1.isBiometric }.map(\.0)) {
                for purpose in KeyPurpose.biometric { invalidate(tenant, purpose) }
                let seed = try await record(tenant, .bioSeed, version: nil).version
                let prf = try await record(tenant, .bioPRF, version: nil).version
                guard seed != prf else { continue }
                let target = try await rotateBiometric(tenant, actor: "custos")
                actions.append(.completed(tenant, seed < prf ? .bioSeed : .bioPRF, version: target))
            }
            if !actions.isEmpty { logger.notice("reconciled interrupted rotations", metadata: ["count": "\(actions.count)"]) }
            return actions
        }
    }
}

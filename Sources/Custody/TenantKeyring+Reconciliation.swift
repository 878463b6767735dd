public import CustosModel
import Foundation
import HSM
import Storage

// Start-up reconciliation: finishes or undoes the rotations a crash (or another instance's
// failure) left listed in `pending_rotations`, one by one, beside other instances doing the
// same and beside rotations still in progress; then the destructions and biometric pairs a
// crash left half done.
extension TenantKeyring {
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

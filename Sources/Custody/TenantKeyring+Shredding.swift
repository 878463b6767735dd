import CustosModel
import Foundation
import HSM
import SecureMemory
import Storage

// Crypto-shredding for offboarding: every version of a tenant's keys destroyed, whatever its
// state or references (the tenant's data goes with them), each step re-runnable.
extension TenantKeyring {
    /// Disables every version of `tenant` not yet destroyed (offboarding approved), on the
    /// caller's transaction: refused on every instance from its commit on. The HSM's list marks
    /// the tenant as offboarding before the commit, so clearing the approval (or replaying the
    /// rows) in the database neither enables a key nor lets one officer enable it.
    func disableAll(_ tenant: TenantID, actor: String, on connection: DatabaseTransaction) async throws {
        try await connection.scope(to: tenant)
        let now = Date.wholeSecondsNow
        for var row in try await KeyVersionStore.all(on: connection) where row.state != .destroyed && row.disabledAt == nil {
            try await authenticator.verify(row, pool: pool)
            let expectedMAC = row.rowMAC
            row.disabledAt = now
            let sealed = try await authenticator.sealed(row, pool: pool)
            guard try await KeyVersionStore.update(sealed, expectedMAC: expectedMAC, on: connection) else {
                throw CustodyError.changedConcurrently(tenant, row.purpose, row.version)
            }
            try await KeyVersionStore.notifyStateChange(tenant, row.purpose, on: connection)
        }
        try await changeAnchoredStates(on: connection, scopedTo: tenant, actor: actor) { $0.offboarding.insert(tenant) }
    }

    /// Throws ``CustodyError/tenantOffboarding(_:)`` once two officers approved the tenant's
    /// offboarding: one officer must not enable the keys it disabled, nor add a fresh one
    /// (rotation, webhook secret or key pair: every new version is stored through here).
    func refuseIfOffboarding(_ tenant: TenantID, on connection: DatabaseTransaction) async throws {
        if try await TenantOffboardingStore.isApproved(tenant, on: connection) { throw CustodyError.tenantOffboarding(tenant) }
        // The approval's row may be cleared by a database writer; the HSM's mark may not.
        if try await anchoredStates().offboarding.contains(tenant) { throw CustodyError.tenantOffboarding(tenant) }
    }

    func refuseIfOffboarding(_ tenant: TenantID) async throws {
        try await database.withTransaction(context: "check tenant offboarding") { connection in
            try await self.refuseIfOffboarding(tenant, on: connection)
        }
    }

    /// Destroys the material of every version of `tenant` (offboarding): each one in its own
    /// step — its Ed25519 token object first (a crash after that leaves a row whose material is
    /// already gone, which the next run destroys), then the row (destroyed, blob gone, metadata
    /// kept) with its audit entry in one transaction. Versions already destroyed are skipped,
    /// so re-running after a crash finishes the job. Pending versions (a rotation in flight)
    /// are deleted, as reconciliation would.
    /// - Parameter afterEach: for crash-injection tests: runs after each version is destroyed.
    /// - Returns: how many versions this run destroyed.
    func shredAll(_ tenant: TenantID, actor: String, request: UUID, afterEach: (@Sendable () throws -> Void)? = nil) async throws -> Int {
        let rows = try await database.withTenant(tenant, context: "read key versions") { connection in
            try await KeyVersionStore.all(on: connection)
        }
        var destroyed = 0
        for var row in rows where row.state != .destroyed {
            try await authenticator.verify(row, pool: pool)
            let (purpose, version) = (row.purpose, row.version)
            if row.state == .pending {
                try await database.withTenant(tenant, context: "delete pending key version") { connection in
                    try await KeyVersionStore.deletePending(tenant, purpose, version: version, on: connection)
                    try await KeyVersionStore.clearPending(tenant, purpose, on: connection)
                }
                continue
            }
            if let label = row.tokenLabel {
                try await destroyTokenObjectsOnEveryToken(label: label)
            }
            let expectedMAC = row.rowMAC
            row.state = .destroyed
            row.wrappedKey = nil
            row.tokenLabel = nil
            row.destroyedAt = .wholeSecondsNow
            let sealed = try await authenticator.sealed(row, pool: pool)
            let (audit, checkValue, entry) = (audit, row.checkValue, KeyStateAnchor.Entry(row))
            try await database.withTenant(tenant, context: "destroy key version (offboarding)") { connection in
                guard try await KeyVersionStore.update(sealed, expectedMAC: expectedMAC, on: connection) else {
                    throw CustodyError.changedConcurrently(tenant, purpose, version)
                }
                try await KeyVersionStore.notifyStateChange(tenant, purpose, on: connection)
                // On the HSM's list before the commit, as in ``destroy(_:_:version:waitingPeriod:actor:)``.
                try await self.changeAnchoredStates(on: connection, scopedTo: tenant, actor: actor) { $0.destroy(entry) }
                try await AuditEntry(tenant: tenant, actor: actor, action: .keyDestroy, target: "\(purpose.rawValue)/v\(version)", details: [
                    "kcv": Hex.encode(checkValue), "offboarding": request.uuidString.lowercased(),
                ]).append(to: audit, on: connection)
            }
            invalidate(tenant, purpose)
            await discardUnwrapped(row)
            destroyed += 1
            try afterEach?()
        }
        return destroyed
    }

    /// Whether every version of `tenant` is destroyed, by MAC-valid rows: offboarding's proof
    /// that the shredding is done (its completion mark carries no MAC).
    /// - Throws: ``CustodyError/rowTampered(_:_:_:)`` for a row that fails its MAC.
    func allVersionsDestroyed(_ tenant: TenantID) async throws -> Bool {
        let rows = try await database.withTenant(tenant, context: "read key versions") { connection in
            try await KeyVersionStore.all(on: connection)
        }
        // Every tenant has key versions, and destroyed ones are kept: none at all is the
        // database writer's deletion, not a shredding done (helper-86: it held an approved
        // offboarding off for good, and made the sweep vouch for a live tenant).
        guard !rows.isEmpty else { return false }
        for row in rows {
            guard row.state == .destroyed else { return false }
            try await authenticator.verify(row, pool: pool)
        }
        return true
    }
}

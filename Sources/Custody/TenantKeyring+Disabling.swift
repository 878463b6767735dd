public import CustosModel
import Foundation
public import Storage

// Disabling: a version officers stop at once (every use refused, on every instance within a
// second) and may enable again, and the same stop while an approved destruction waits.
extension TenantKeyring {
    /// Disables one version: from the commit on, every use of it (seal, open, HMAC, PRF, sign)
    /// is refused with ``CustodyError/keyDisabled(_:_:_:)``, here at once and on every other
    /// instance as soon as the notification arrives. Its lifecycle state is untouched, so
    /// ``enable(_:_:version:actor:)`` restores exactly what it was.
    /// - Returns: the version as stored now (unchanged if it was already disabled).
    /// - Throws: ``CustodyError`` (`unknownKeyVersion`, `keyDestroyed`, `rowTampered`, `changedConcurrently`).
    @discardableResult
    public func disable(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int, actor: String) async throws -> KeyVersionRecord {
        try await setDisabled(true, tenant, purpose, version: version, actor: actor)
    }

    /// Enables a disabled version again: it is usable exactly as its lifecycle state allows.
    /// - Returns: the version as stored now (unchanged if it was not disabled).
    /// - Throws: ``CustodyError``.
    @discardableResult
    public func enable(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int, actor: String) async throws -> KeyVersionRecord {
        try await setDisabled(false, tenant, purpose, version: version, actor: actor)
    }

    private func setDisabled(_ disabled: Bool, _ tenant: TenantID, _ purpose: KeyPurpose, version: Int, actor: String) async throws -> KeyVersionRecord {
        try await custody {
            var row = try await database.withTenant(tenant, context: "read key version") { connection in
                try await KeyVersionStore.get(tenant, purpose, version: version, on: connection)
            }.orThrow(CustodyError.unknownKeyVersion(tenant, purpose, version))
            try await authenticator.verify(row, pool: pool)
            guard row.state != .destroyed else { throw CustodyError.keyDestroyed(tenant, purpose, version) }
            let entry = KeyStateAnchor.Entry(row)
            // The HSM's list is the one a replayed row cannot undo; it may also be ahead of the
            // row (a disable whose commit failed): either one out of step is brought in line.
            let anchored = try await anchoredStates()
            guard (row.disabledAt != nil) != disabled || anchored.disabled.contains(entry) != disabled else { return row }
            if !disabled { try await refuseIfOffboarding(tenant) }
            let expectedMAC = row.rowMAC
            row.disabledAt = disabled ? row.disabledAt ?? .wholeSecondsNow : nil
            let sealed = try await authenticator.sealed(row, pool: pool)
            let audit = audit
            try await database.withTenant(tenant, context: disabled ? "disable key version" : "enable key version") { connection in
                guard try await KeyVersionStore.update(sealed, expectedMAC: expectedMAC, on: connection) else {
                    throw CustodyError.changedConcurrently(tenant, purpose, version)
                }
                try await KeyVersionStore.notifyStateChange(tenant, purpose, on: connection)
                // Before the commit: a crash in between leaves the version disabled by one of
                // the two (fail closed), never enabled by the list and disabled by the row.
                try await self.changeAnchoredStates(on: connection, scopedTo: tenant, actor: actor) { states in
                    if disabled { states.disabled.insert(entry) } else { states.disabled.remove(entry) }
                }
                try await AuditEntry(tenant: tenant, actor: actor, action: disabled ? .keyDisable : .keyEnable, target: "\(purpose.rawValue)/v\(version)")
                    .append(to: audit, on: connection)
            }
            invalidate(tenant, purpose)
            return sealed
        }
    }

    /// Marks (or, with `due` nil, unmarks) a retired version as awaiting its scheduled
    /// destruction, on the caller's transaction (the approval or the cancellation of the
    /// request, so the two commit together). The caller invalidates after the commit.
    /// - Throws: ``CustodyError``.
    func setDestructionDue(
        _ due: Date?, _ tenant: TenantID, _ purpose: KeyPurpose, version: Int, actor: String, on connection: DatabaseTransaction
    ) async throws {
        try await connection.scope(to: tenant)
        var row = try await KeyVersionStore.get(tenant, purpose, version: version, on: connection)
            .orThrow(CustodyError.unknownKeyVersion(tenant, purpose, version))
        try await authenticator.verify(row, pool: pool)
        guard row.state != .destroyed else { throw CustodyError.keyDestroyed(tenant, purpose, version) }
        // One schedule at a time: a second would overwrite the first's due time, and cancelling
        // either would then unmark the version while the other still counts on the mark.
        if due != nil, let scheduled = row.destructionDueAt {
            throw CustodyError.keyDestructionScheduled(tenant, purpose, version, due: scheduled)
        }
        let expectedMAC = row.rowMAC
        row.destructionDueAt = due.map { Date(timeIntervalSince1970: $0.timeIntervalSince1970.rounded(.down)) }
        let sealed = try await authenticator.sealed(row, pool: pool)
        guard try await KeyVersionStore.update(sealed, expectedMAC: expectedMAC, on: connection) else {
            throw CustodyError.changedConcurrently(tenant, purpose, version)
        }
        try await KeyVersionStore.notifyStateChange(tenant, purpose, on: connection)
        // The mark is also on the HSM's list, before the commit, so a replayed row from before
        // the approval neither makes the version usable nor stops its destruction.
        let entry = KeyStateAnchor.Entry(row), seconds = row.destructionDueAt.map { Int64($0.timeIntervalSince1970) }
        try await changeAnchoredStates(on: connection, scopedTo: tenant, actor: actor) { $0.scheduled[entry] = seconds }
    }

    /// Whether the HSM's list still carries `version`'s destruction mark `due` (set by the
    /// approval of the request being carried out, cleared by its cancellation); a version
    /// destroyed by its row or by the list counts, for an execution that stopped before
    /// recording itself (or before its commit, which leaves only the list's `destroyed`).
    ///
    /// Only the list decides, never the row's mark: the list is written before every approval
    /// and cancellation commits, so it is never behind the row, while a row MAC proves only that
    /// custody wrote the row once — a row from a backup taken while the version was scheduled
    /// carries the mark after officers cancelled, and would otherwise let a database writer
    /// un-cancel the request and have the sweep destroy the version.
    func isScheduledForDestruction(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int, due: Date) async throws -> Bool {
        let row = try await database.withTenant(tenant, context: "read key version") { connection in
            try await KeyVersionStore.get(tenant, purpose, version: version, on: connection)
        }.orThrow(CustodyError.unknownKeyVersion(tenant, purpose, version))
        try await authenticator.verify(row, pool: pool)
        if row.state == .destroyed { return true }
        let seconds = { (date: Date) in Int64(date.timeIntervalSince1970.rounded(.down)) }
        let anchored = try await anchoredStates(fresh: true), entry = KeyStateAnchor.Entry(row)
        return anchored.destroyed.contains(entry) || anchored.scheduled[entry] == seconds(due)
    }
}

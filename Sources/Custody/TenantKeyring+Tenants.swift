public import CustosModel
import SecureMemory
public import Storage

// Tenants: creation with version 1 of every key, and disabling/re-enabling.
extension TenantKeyring {
    /// Creates a tenant and version 1 of each of its keys, in one transaction.
    /// - Throws: ``CustodyError``; `.storage(.conflict)` when the label is taken.
    public func createTenant(label: String, actor: String) async throws -> TenantRecord {
        try await custody {
            let tenant = TenantID.random()
            return try await underNewestRootKEKs {
                var records = [KeyVersionRecord]()
                for purpose in KeyPurpose.createdWithTenant {
                    records.append(try await makeVersion(tenant, purpose, version: 1, state: .active))
                }
                let stored = records
                let entry = AuditEntry(
                    tenant: tenant, actor: actor, action: .tenantCreate, target: tenant.rawValue,
                    details: ["label": label, "keys": stored.map { "\($0.purpose.rawValue)/v1 kcv=\(Hex.encode($0.checkValue))" }.joined(separator: ",")]
                )
                let audit = audit
                return try await database.withTenant(tenant, context: "create tenant") { connection in
                    try await Self.requireNewestRootKEKs(stored, on: connection)
                    let tenantRecord = try await TenantStore.insert(id: tenant, label: label, on: connection)
                    for record in stored { try await KeyVersionStore.insert(record, on: connection) }
                    try await entry.append(to: audit, on: connection)
                    return tenantRecord
                }
            }
        }
    }

    /// Disables or re-enables a tenant; its API keys stop (or start) verifying on every
    /// instance once the announcement arrives. A disabled tenant is also on the HSM's list of key
    /// states, which ``isTenantDisabled(_:)`` reads: its callers stay refused whatever
    /// `tenants.status` says.
    /// - Returns: whether the tenant exists (and so was set).
    public func setTenantActive(_ tenant: TenantID, _ active: Bool, actor: String) async throws -> Bool {
        try await custody {
            let changed = try await database.withTransaction(context: "set tenant status") { connection in
                let changed = try await TenantStore.setActive(tenant, active, on: connection)
                if changed {
                    // The HSM's list too (also when the status was already so: a disable repeated
                    // brings the list in line): a status the database's writer alone set back to
                    // active still leaves the tenant's callers refused.
                    try await self.changeAnchoredStates(on: connection, scopedTo: nil, actor: actor) { states in
                        if active { states.disabledTenants.remove(tenant) } else { states.disabledTenants.insert(tenant) }
                    }
                    // Every instance reads the list again.
                    try await KeyVersionStore.notifyStateChange(tenant, .data, on: connection)
                    try await APIKeyStore.announceFlush(on: connection)
                    try await CacheChange.tenantStatus(tenant).announce(on: connection)
                    try await AuditEntry(tenant: tenant, actor: actor, action: active ? .tenantEnable : .tenantDisable, target: tenant.rawValue)
                        .append(to: self.audit, on: connection)
                }
                return changed
            }
            invalidate(prefix: tenant.rawValue + "/")
            return changed
        }
    }

    /// Whether the HSM's list of key states names `tenant` disabled or offboarding (cached as the
    /// list is, and read again on every key-state notice). Callers are refused for it as for
    /// `tenants.status`, which the database's writer alone could set back to active.
    /// - Throws: ``CustodyError``.
    public func isTenantDisabled(_ tenant: TenantID) async throws -> Bool {
        try await custody {
            let states = try await anchoredStates()
            return states.disabledTenants.contains(tenant) || states.offboarding.contains(tenant)
        }
    }

    /// Every tenant, active or disabled (`tenants` holds nothing secret).
    /// - Throws: ``CustodyError``.
    public func tenants() async throws -> [TenantRecord] {
        try await custody { try await TenantStore(database).list() }
    }

    /// - Returns: `nil` for a tenant that does not exist.
    /// - Throws: ``CustodyError``.
    public func tenant(_ id: TenantID) async throws -> TenantRecord? {
        try await custody { try await TenantStore(database).get(id) }
    }
}

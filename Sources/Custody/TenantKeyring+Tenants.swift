public import CustosModel
public import Storage

extension TenantKeyring {
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

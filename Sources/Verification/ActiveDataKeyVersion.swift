public import CustosModel

/// Which `data` key version seals new values now: the version a re-seal moves every sealed
/// field to. Implemented by the composition root over the tenant keyring.
public protocol ActiveDataKeyVersion: Sendable {
    /// - Throws: when the tenant has no active `data` version.
    func activeDataKeyVersion(tenant: TenantID) async throws -> Int
}

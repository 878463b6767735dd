import Custody
public import CustosModel
public import Verification

extension CustodyPersonalDataSealer: ActiveDataKeyVersion {
    /// The tenant's active `data` version (as cached by the keyring: a rotation made by
    /// another instance is seen within its active-version lifetime; a re-seal to the version
    /// just retired is picked up by the next run).
    public func activeDataKeyVersion(tenant: TenantID) async throws -> Int {
        try await keyring.key(tenant, .data).version
    }
}

public import CustosModel
import PostgresNIO

extension TemplateStore {
    /// The SQLSTATE with which `templates` refuses a row that carries a withdrawn MAC
    /// (migration 34): the MAC of a row that was deleted, or whose token, subject, version or
    /// MAC changed, can never be written again — so a copy of a row taken before an erasure, a
    /// retention run or a replacement cannot be put back. This build meets it only when the very
    /// same token is enrolled again for the same subject and version
    /// (``StorageError/withdrawnTemplateMAC(_:)``); the previous build's `pii` move meets it too.
    public static let withdrawnMACState = "CS001"

    /// Drops the withdrawn MACs of `keyVersions` of `tenant` (versions whose `bio-prf` key is
    /// destroyed: none of their templates can be compared again). Only the owner role may:
    /// the service role, the database's writer, has no privilege on the list. Runs in a
    /// transaction of the owner's connection. - Returns: entries dropped.
    public static func dropWithdrawnMACs(tenant: TenantID, keyVersions: [Int], on connection: DatabaseTransaction) async throws -> Int {
        try await scalar("""
            WITH dropped AS (
                DELETE FROM withdrawn_template_macs WHERE tenant_id = \(tenant.rawValue)::uuid AND key_version = ANY(\(keyVersions)) RETURNING 1
            ) SELECT count(*)::int FROM dropped
            """, on: connection)
    }
}

public import CustosModel
import PostgresNIO

/// Key versions whose material is a persistent HSM token object (Ed25519 webhook keys): the
/// token's storage is shared by every tenant, so each tenant gets a bounded number of them.
extension KeyVersionStore {
    /// Serialises token-object creation for `tenant` across instances until the transaction ends.
    public static func lockTokenObjects(_ tenant: TenantID, on connection: DatabaseTransaction) async throws {
        let lockName = "custos/token-objects/" + tenant.rawValue
        try await connection.run("SELECT pg_advisory_xact_lock(hashtextextended(\(lockName), 0))")
    }

    /// Versions of the tenant in scope that still name a token object (not destroyed).
    public static func liveTokenObjectCount(on connection: DatabaseTransaction) async throws -> Int {
        let rows = try await connection.query(
            "SELECT count(*)::integer FROM key_versions WHERE token_label IS NOT NULL AND state <> 'destroyed'", logger: Database.quiet
        )
        for try await count in rows.decode(Int.self) { return count }
        return 0
    }
}

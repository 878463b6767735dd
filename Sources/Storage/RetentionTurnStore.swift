public import CustosModel
import PostgresNIO

/// `retention_turns`: when a retention run last began each tenant, so that the next run begins
/// with the tenants the last one did not reach. Listed by creation alone, a run its caller cut
/// off (the CLI's deadline, a restart) went through the oldest tenants again every time, and
/// the newest never had their retention; ordered by the last *finished* turn, a tenant too large
/// to finish within one deadline went first at every run and kept every other tenant waiting
/// (helper-61). By the last start, the tenant a run was cut off in goes after those it did not
/// reach. Times from the database's clock, so instances' clocks cannot reorder them.
/// Timestamps only; not per tenant, like `tenants`.
public enum RetentionTurnStore {
    /// Every tenant: never begun first, then by their last turn's start, oldest first.
    public static func order(on connection: DatabaseTransaction) async throws -> [TenantID] {
        let rows = try await connection.query("""
            SELECT t.id::text FROM tenants t LEFT JOIN retention_turns r ON r.tenant_id = t.id
            ORDER BY r.started_at ASC NULLS FIRST, t.created_at, t.id
            """, logger: Database.quiet)
        var tenants = [TenantID]()
        for try await id in rows.decode(String.self) { tenants.append(TenantID(id)!) }
        return tenants
    }

    /// Records that a run begins `tenant`'s turn now.
    public static func begin(_ tenant: TenantID, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO retention_turns (tenant_id, started_at) VALUES (\(tenant.rawValue)::uuid, clock_timestamp())
            ON CONFLICT (tenant_id) DO UPDATE SET started_at = EXCLUDED.started_at
            """, logger: Database.quiet)
    }
}

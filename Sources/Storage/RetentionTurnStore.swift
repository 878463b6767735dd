public import CustosModel
public import Foundation
import PostgresNIO

/// `retention_turns`: when a retention run last finished each tenant, so that the next run
/// begins with the tenants the last one did not reach. Listed by creation alone, a run the
/// caller cut off (the CLI's deadline, a restart) went through the oldest tenants again every
/// time, and the newest never had their retention. Timestamps only; not per tenant, like
/// `tenants`.
public enum RetentionTurnStore {
    /// Every tenant, those never finished first, then by their last finish, oldest first.
    public static func order(on connection: DatabaseTransaction) async throws -> [TenantID] {
        let rows = try await connection.query("""
            SELECT t.id::text FROM tenants t LEFT JOIN retention_turns r ON r.tenant_id = t.id
            ORDER BY r.finished_at ASC NULLS FIRST, t.created_at, t.id
            """, logger: Database.quiet)
        var tenants = [TenantID]()
        for try await id in rows.decode(String.self) { tenants.append(TenantID(id)!) }
        return tenants
    }

    /// Records that a run finished `tenant` at `time`.
    public static func finished(_ tenant: TenantID, at time: Date, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO retention_turns (tenant_id, finished_at) VALUES (\(tenant.rawValue)::uuid, \(time))
            ON CONFLICT (tenant_id) DO UPDATE SET finished_at = EXCLUDED.finished_at
            """, logger: Database.quiet)
    }
}

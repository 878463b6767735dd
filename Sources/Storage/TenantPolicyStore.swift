public import CustosModel
import PostgresNIO

/// `tenant_policies`: one row per tenant that changed a default. Values are checked by the
/// caller (and again by the table's CHECK constraints).
public enum TenantPolicyStore {
    public struct Row: Sendable, Hashable {
        public let green: Double
        public let amber: Double
        public let retentionDays: Int
        public let tokenizationsPerMinute: Int

        public init(green: Double, amber: Double, retentionDays: Int, tokenizationsPerMinute: Int) {
            self.green = green
            self.amber = amber
            self.retentionDays = retentionDays
            self.tokenizationsPerMinute = tokenizationsPerMinute
        }
    }

    public static func get(on connection: DatabaseTransaction) async throws -> Row? {
        let rows = try await connection.query("""
            SELECT green_threshold, amber_threshold, retention_days, tokenizations_per_minute FROM tenant_policies
            """, logger: Database.quiet)
        for try await row in rows.decode((Double, Double, Int, Int).self) {
            return Row(green: row.0, amber: row.1, retentionDays: row.2, tokenizationsPerMinute: row.3)
        }
        return nil
    }

    /// Serialises policy changes of the caller's tenant until its transaction ends, so a partial
    /// update reads and writes a policy nobody changes meanwhile (the row may not exist yet,
    /// hence a lock on the tenant rather than on the row).
    public static func lockForChange(tenant: TenantID, on connection: DatabaseTransaction) async throws {
        try await connection.query(
            "SELECT pg_advisory_xact_lock(hashtextextended(\("custos-tenant-policy:" + tenant.rawValue), 0))", logger: Database.quiet
        )
    }

    public static func put(_ row: Row, tenant: TenantID, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO tenant_policies (tenant_id, green_threshold, amber_threshold, retention_days, tokenizations_per_minute)
            VALUES (\(tenant.rawValue)::uuid, \(row.green), \(row.amber), \(row.retentionDays), \(row.tokenizationsPerMinute))
            ON CONFLICT (tenant_id) DO UPDATE SET green_threshold = EXCLUDED.green_threshold,
                amber_threshold = EXCLUDED.amber_threshold, retention_days = EXCLUDED.retention_days,
                tokenizations_per_minute = EXCLUDED.tokenizations_per_minute, updated_at = now()
            """, logger: Database.quiet)
    }
}

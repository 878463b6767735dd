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
        /// Days the previous biometric version keeps matching after a rotation.
        public let bioOverlapDays: Int
        /// The token format `green` and `amber` were set for (nil: the tenant never set them).
        public let thresholdsFormat: BiometricTokenFormat?

        public init(
            green: Double, amber: Double, retentionDays: Int, tokenizationsPerMinute: Int,
            bioOverlapDays: Int = TenantPolicyStore.defaultBioOverlapDays, thresholdsFormat: BiometricTokenFormat? = nil
        ) {
            self.green = green
            self.amber = amber
            self.retentionDays = retentionDays
            self.tokenizationsPerMinute = tokenizationsPerMinute
            self.bioOverlapDays = bioOverlapDays
            self.thresholdsFormat = thresholdsFormat
        }
    }

    /// The biometric overlap of a tenant without a policy row (and the column's default):
    /// custody reads it when it rotates, so it lives here, below both custody and the core.
    public static let defaultBioOverlapDays = 30

    public static func get(on connection: DatabaseTransaction) async throws -> Row? {
        let rows = try await connection.query("""
            SELECT green_threshold, amber_threshold, retention_days, tokenizations_per_minute, bio_overlap_days, thresholds_format::int FROM tenant_policies
            """, logger: Database.quiet)
        for try await row in rows.decode((Double, Double, Int, Int, Int, Int?).self) {
            // An unknown format (a database writer's) reads as none: the derived defaults apply.
            return Row(
                green: row.0, amber: row.1, retentionDays: row.2, tokenizationsPerMinute: row.3, bioOverlapDays: row.4,
                thresholdsFormat: row.5.flatMap(BiometricTokenFormat.init(rawValue:))
            )
        }
        return nil
    }

    /// Serialises policy changes of the caller's tenant until its transaction ends, so a partial
    /// update reads and writes a policy nobody changes meanwhile (the row may not exist yet,
    /// hence a lock on the tenant rather than on the row).
    public static func lockForChange(tenant: TenantID, on connection: DatabaseTransaction) async throws {
        try await connection.run("SELECT pg_advisory_xact_lock(hashtextextended(\("custos-tenant-policy:" + tenant.rawValue), 0))")
    }

    public static func put(_ row: Row, tenant: TenantID, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO tenant_policies (tenant_id, green_threshold, amber_threshold, retention_days, tokenizations_per_minute, bio_overlap_days, thresholds_format)
            VALUES (\(tenant.rawValue)::uuid, \(row.green), \(row.amber), \(row.retentionDays), \(row.tokenizationsPerMinute), \(row.bioOverlapDays), \(row.thresholdsFormat?.rawValue)::smallint)
            ON CONFLICT (tenant_id) DO UPDATE SET green_threshold = EXCLUDED.green_threshold,
                amber_threshold = EXCLUDED.amber_threshold, retention_days = EXCLUDED.retention_days,
                tokenizations_per_minute = EXCLUDED.tokenizations_per_minute, bio_overlap_days = EXCLUDED.bio_overlap_days,
                thresholds_format = EXCLUDED.thresholds_format, updated_at = now()
            """, logger: Database.quiet)
    }
}

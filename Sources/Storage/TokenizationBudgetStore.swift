public import CustosModel
import PostgresNIO

/// `tokenization_budgets`: one token bucket per tenant, shared by every instance (DESIGN §6: the
/// PRF is reachable only at a budgeted rate). Functions run inside
/// ``Database/withTenant(_:context:timeout:_:)``; times are the database's clock, in Unix seconds, so
/// instances with skewed clocks still agree.
public enum TokenizationBudgetStore {
    /// The tenant's bucket as stored, and the database's clock when it was read.
    public struct Row: Sendable, Hashable {
        public let tokens: Double
        public let refilledAt: Double
        public let refusalAuditedAt: Double?
        public let now: Double
    }

    /// Locks the tenant's bucket for the rest of the transaction (creating it full, at `burst`,
    /// on first use) and reads it.
    public static func lock(tenant: TenantID, burst: Double, on connection: DatabaseTransaction) async throws -> Row {
        try await connection.query("""
            INSERT INTO tokenization_budgets (tenant_id, tokens, refilled_at)
            VALUES (\(tenant.rawValue)::uuid, \(burst), clock_timestamp())
            ON CONFLICT (tenant_id) DO NOTHING
            """, logger: Database.quiet)
        let rows = try await connection.query("""
            SELECT tokens, extract(epoch FROM refilled_at)::float8, extract(epoch FROM refusal_audited_at)::float8,
                extract(epoch FROM clock_timestamp())::float8
            FROM tokenization_budgets WHERE tenant_id = \(tenant.rawValue)::uuid FOR UPDATE
            """, logger: Database.quiet)
        for try await (tokens, refilledAt, audited, now) in rows.decode((Double, Double, Double?, Double).self) {
            return Row(tokens: tokens, refilledAt: refilledAt, refusalAuditedAt: audited, now: now)
        }
        throw StorageError.notFound("tokenization budget row")
    }

    /// Writes the bucket back (same transaction as ``lock(tenant:burst:on:)``).
    public static func update(
        tenant: TenantID, tokens: Double, refilledAt: Double, refusalAuditedAt: Double?, on connection: DatabaseTransaction
    ) async throws {
        try await connection.query("""
            UPDATE tokenization_budgets SET tokens = \(max(0, tokens)), refilled_at = to_timestamp(\(refilledAt)),
                refusal_audited_at = to_timestamp(\(refusalAuditedAt))
            WHERE tenant_id = \(tenant.rawValue)::uuid
            """, logger: Database.quiet)
    }
}

public import CustosModel
import PostgresNIO

/// `pending_webhook_key_restores`: Ed25519 webhook key pairs `ceremony restore-webhook-keys` is
/// importing onto tokens that lack them, listed before the import and cleared in the transaction
/// of the restore's audit entry. A run killed in between leaves the entry, so the next run
/// records the import it finds done instead of reporting it as present all along. Labels and
/// token selectors only: nothing secret. Not per tenant, like `pending_token_destructions`.
public enum PendingWebhookKeyRestoreStore {
    /// Lists (or lists again, with `tokens`) the restore of `label`.
    public static func list(label: String, tenant: TenantID, version: Int, tokens: [String], on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO pending_webhook_key_restores (label, tenant_id, version, tokens)
            VALUES (\(label), \(tenant.rawValue)::uuid, \(version), \(tokens))
            ON CONFLICT (label) DO UPDATE SET tokens = EXCLUDED.tokens
            """, logger: Database.quiet)
    }

    /// The tokens a listed restore of `label` was importing onto (`nil`: none listed).
    public static func tokens(label: String, on connection: DatabaseTransaction) async throws -> [String]? {
        let rows = try await connection.query("SELECT tokens FROM pending_webhook_key_restores WHERE label = \(label)", logger: Database.quiet)
        for try await tokens in rows.decode([String].self) { return tokens }
        return nil
    }

    /// Takes the restore of `label` off the list.
    public static func clear(label: String, on connection: DatabaseTransaction) async throws {
        try await connection.query("DELETE FROM pending_webhook_key_restores WHERE label = \(label)", logger: Database.quiet)
    }
}

public import CustosModel
import Foundation
public import PostgresNIO

/// `templates`: enrolled biometric tokens (never features), tenant-scoped by row-level
/// security. Functions run inside ``Database/withTenant(_:context:_:)``.
public enum TemplateStore {
    /// Stores (or replaces) the subject's token of its key version.
    public static func upsert(subject: String, token: BiometricToken, tenant: TenantID, on connection: PostgresConnection) async throws {
        try await connection.query("""
            INSERT INTO templates (tenant_id, subject_ref, key_version, token)
            VALUES (\(tenant.rawValue)::uuid, \(subject), \(token.keyVersion), \(Data(token.bytes)))
            ON CONFLICT (tenant_id, subject_ref, key_version)
            DO UPDATE SET token = EXCLUDED.token, enrolled_at = now(), last_used_at = now()
            """, logger: Database.quiet)
    }

    public static func get(subject: String, keyVersion: Int, on connection: PostgresConnection) async throws -> BiometricToken? {
        let rows = try await connection.query("""
            SELECT token FROM templates WHERE subject_ref = \(subject) AND key_version = \(keyVersion)
            """, logger: Database.quiet)
        for try await bytes in rows.decode(Data.self) { return BiometricToken(keyVersion: keyVersion, bytes: Array(bytes)) }
        return nil
    }

    /// Every token of one key version of the tenant in scope (to load the 1:N gallery).
    public static func all(keyVersion: Int, on connection: PostgresConnection) async throws -> [(subject: String, token: BiometricToken)] {
        var result = [(subject: String, token: BiometricToken)]()
        let rows = try await connection.query("""
            SELECT subject_ref, token FROM templates WHERE key_version = \(keyVersion)
            """, logger: Database.quiet)
        for try await (subject, bytes) in rows.decode((String, Data).self) {
            if let token = BiometricToken(keyVersion: keyVersion, bytes: Array(bytes)) { result.append((subject, token)) }
        }
        return result
    }

    public static func touch(subject: String, on connection: PostgresConnection) async throws {
        try await connection.query("UPDATE templates SET last_used_at = now() WHERE subject_ref = \(subject)", logger: Database.quiet)
    }

    /// Deletes every template of the subject (erasure). - Returns: rows deleted.
    @discardableResult
    public static func delete(subject: String, on connection: PostgresConnection) async throws -> Int {
        try await connection.query("DELETE FROM templates WHERE subject_ref = \(subject) RETURNING 1", logger: Database.quiet).collect().count
    }
}

public import CustosModel
public import Foundation
import PostgresNIO

/// An API key as stored: its public id and an HSM-keyed HMAC of the whole key, never the key.
public struct APIKeyRecord: Sendable, Hashable {
    public let keyID: String
    public let tenant: TenantID
    public var hash: [UInt8]
    public var pepperVersion: Int
    public let scopes: [String]
    public let label: String
    public let expiresAt: Date?
    public let createdAt: Date?
    public var lastUsedAt: Date?
    public var revokedAt: Date?
    /// What `hash` is the HMAC of: 1, the whole key alone (keys issued before migration 32); 2,
    /// the key with its tenant, scopes and expiry (``APIKeyHashFormat``).
    public let hashFormat: Int

    public init(
        keyID: String, tenant: TenantID, hash: [UInt8], pepperVersion: Int, scopes: [String], label: String,
        expiresAt: Date?, createdAt: Date? = nil, lastUsedAt: Date? = nil, revokedAt: Date? = nil, hashFormat: Int
    ) {
        self.keyID = keyID
        self.tenant = tenant
        self.hash = hash
        self.pepperVersion = pepperVersion
        self.scopes = scopes
        self.label = label
        self.expiresAt = expiresAt
        self.createdAt = createdAt
        self.lastUsedAt = lastUsedAt
        self.revokedAt = revokedAt
        self.hashFormat = hashFormat
    }
}

/// `api_key_index` (key id → tenant, readable before the tenant is known) and `api_keys`
/// (tenant-scoped by row-level security).
public enum APIKeyStore {
    /// The channel on which revocations are announced to every instance.
    public static let revocationChannel = "custos_apikey_revoked"

    /// Key rows with their revocation: revoked if `api_keys` says so or `api_key_revocations`
    /// (insert-only for the service role, migration 32) has a row — the column alone can be set
    /// back to NULL with the service role's password.
    private static let selectKeys = """
        SELECT k.key_id, k.tenant_id::text, k.hash, k.pepper_version, k.scopes, k.label, k.expires_at, k.created_at, k.last_used_at,
            coalesce(r.revoked_at, k.revoked_at), k.hash_format::int8
        FROM api_keys k LEFT JOIN api_key_revocations r ON r.tenant_id = k.tenant_id AND r.key_id = k.key_id
        """

    /// Inserts the index row and the key row; run inside the tenant's transaction.
    public static func insert(_ record: APIKeyRecord, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO api_key_index (key_id, tenant_id) VALUES (\(record.keyID), \(record.tenant.rawValue)::uuid)
            """, logger: Database.quiet)
        try await connection.query("""
            INSERT INTO api_keys (key_id, tenant_id, hash, pepper_version, scopes, label, expires_at, hash_format)
            VALUES (\(record.keyID), \(record.tenant.rawValue)::uuid, \(Data(record.hash)), \(record.pepperVersion),
                \(record.scopes), \(record.label), \(record.expiresAt), \(Int16(record.hashFormat)))
            """, logger: Database.quiet)
    }

    /// The tenant a key id belongs to, looked up without a tenant in scope, and whether that
    /// tenant is active.
    public static func tenant(forKeyID keyID: String, on connection: DatabaseTransaction) async throws -> (tenant: TenantID, active: Bool)? {
        let rows = try await connection.query("""
            SELECT i.tenant_id::text, t.status = 'active' FROM api_key_index i JOIN tenants t ON t.id = i.tenant_id
            WHERE i.key_id = \(keyID)
            """, logger: Database.quiet)
        for try await (tenant, active) in rows.decode((String, Bool).self) {
            guard let id = TenantID(tenant) else { return nil }
            return (id, active)
        }
        return nil
    }

    /// Tells every instance to forget all cached keys (a tenant was disabled).
    public static func announceFlush(on connection: DatabaseTransaction) async throws {
        try await connection.run("SELECT pg_notify(\(revocationChannel), '*')")
    }

    public static func get(keyID: String, on connection: DatabaseTransaction) async throws -> APIKeyRecord? {
        try await decode(connection.query("\(unescaped: selectKeys) WHERE k.key_id = \(keyID)", logger: Database.quiet)).first
    }

    public static func list(on connection: DatabaseTransaction) async throws -> [APIKeyRecord] {
        try await decode(connection.query("\(unescaped: selectKeys) ORDER BY k.created_at, k.key_id", logger: Database.quiet))
    }

    /// Marks the key revoked and announces it (the notification is delivered at commit); the
    /// trigger of migration 32 records it in `api_key_revocations` in the same statement.
    /// - Returns: whether a live key was revoked.
    public static func revoke(keyID: String, on connection: DatabaseTransaction) async throws -> Bool {
        let rows = try await connection.query("""
            UPDATE api_keys SET revoked_at = now() WHERE key_id = \(keyID) AND revoked_at IS NULL RETURNING key_id
            """, logger: Database.quiet)
        var revoked = false
        for try await _ in rows { revoked = true }
        if revoked {
            try await connection.run("SELECT pg_notify(\(revocationChannel), \(keyID))")
        }
        return revoked
    }

    /// Replaces the hash after a pepper rotation (the key itself was just presented).
    public static func rehash(keyID: String, hash: [UInt8], pepperVersion: Int, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            UPDATE api_keys SET hash = \(Data(hash)), pepper_version = \(pepperVersion) WHERE key_id = \(keyID)
            """, logger: Database.quiet)
    }

    public static func touch(keyID: String, on connection: DatabaseTransaction) async throws {
        try await connection.query("UPDATE api_keys SET last_used_at = now() WHERE key_id = \(keyID)", logger: Database.quiet)
    }

    /// How many live keys still need pepper `version` (a version they need is never destroyed).
    /// Revoked and expired keys never verify again, so they need no pepper.
    public static func count(pepperVersion version: Int, at now: Date, on connection: DatabaseTransaction) async throws -> Int {
        let rows = try await connection.query("""
            SELECT count(*)::int FROM api_keys k
            WHERE pepper_version = \(version) AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > \(now))
                AND NOT EXISTS (SELECT 1 FROM api_key_revocations r WHERE r.tenant_id = k.tenant_id AND r.key_id = k.key_id)
            """, logger: Database.quiet)
        for try await count in rows.decode(Int.self) { return count }
        return 0
    }

    private static func decode(_ rows: PostgresRowSequence) async throws -> [APIKeyRecord] {
        var records = [APIKeyRecord]()
        for try await row in rows {
            let (keyID, tenant, hash, pepper, scopes, label, expires, created, lastUsed, revoked, format) =
                try row.decode((String, String, Data, Int, [String], String, Date?, Date, Date?, Date?, Int).self)
            guard let tenantID = TenantID(tenant) else { continue }
            records.append(APIKeyRecord(
                keyID: keyID, tenant: tenantID, hash: Array(hash), pepperVersion: pepper, scopes: scopes, label: label,
                expiresAt: expires, createdAt: created, lastUsedAt: lastUsed, revokedAt: revoked, hashFormat: format
            ))
        }
        return records
    }
}

import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage
import Testing

/// The service role's database password alone, against API-key revocation, scopes and expiry
/// (helper-71, session 20): `api_keys.revoked_at` is granted for the revocation itself, so it
/// could be set back to NULL — or the row deleted and inserted again without it, with wider scopes
/// or no expiry — and, after a notice that empties every instance's cache, the key verified
/// again. Migration 32 keeps every revocation in `api_key_revocations` too, where the service role
/// can add rows and never change or remove one, and new keys' hashes bind tenant, scopes and expiry.
@Suite("API keys against the service role's password", .serialized)
struct APIKeyRevocationAttackTests {
    /// SQL as the service role in the tenant's scope, as a database writer holding its password.
    private func asServiceRole(_ harness: CustodyHarness, _ tenant: TenantID, _ query: PostgresQuery) async throws {
        _ = try await harness.service.withTenant(tenant, context: "database writer") { connection in
            try await connection.query(query, logger: Database.quiet)
        }
    }

    /// Tells every instance to forget the key's cached row (any role that can connect may).
    private func announce(_ harness: CustodyHarness, _ tenant: TenantID, _ keyID: String) async throws {
        try await asServiceRole(harness, tenant, "SELECT pg_notify(\(APIKeyStore.revocationChannel), \(keyID))")
    }

    /// The writer deletes the key's row and inserts it again, live, with `scopes` and `expires`
    /// (SQL over the old row), then announces it.
    private func rewriteRow(_ harness: CustodyHarness, _ tenant: TenantID, _ keyID: String, scopes: String, expires: String) async throws {
        try await asServiceRole(harness, tenant, """
            WITH old AS (DELETE FROM api_keys WHERE key_id = \(keyID) RETURNING *)
            INSERT INTO api_keys (key_id, tenant_id, hash, pepper_version, scopes, label, expires_at, created_at, hash_format)
            SELECT key_id, tenant_id, hash, pepper_version, \(unescaped: scopes), label, \(unescaped: expires), created_at, hash_format FROM old
            """)
        try await announce(harness, tenant, keyID)
    }

    @Test("a revoked key set back to live in api_keys (revoked_at NULL, or the row deleted and inserted again) and announced stays refused")
    func revokedKeyStaysRevoked() async throws {
        let harness = try await CustodyHarness.make("apikeyunrevoke")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let issued = try await harness.apiKeys.issue(tenant: tenant, scopes: ["verification"], label: "ats", actor: "officer")
        #expect(try await harness.apiKeys.verify(issued.key).keyID == issued.keyID)
        #expect(try await harness.apiKeys.revoke(tenant: tenant, keyID: issued.keyID, actor: "officer"))
        await #expect(throws: APIKeyError.invalid) { _ = try await harness.apiKeys.verify(issued.key) }

        // The column back to NULL, and every instance told to forget the key.
        try await asServiceRole(harness, tenant, "UPDATE api_keys SET revoked_at = NULL WHERE key_id = \(issued.keyID)")
        try await announce(harness, tenant, issued.keyID)
        await #expect(throws: APIKeyError.invalid) { _ = try await harness.apiKeys.verify(issued.key) }

        // The row deleted and inserted again, live, with wider scopes.
        try await rewriteRow(harness, tenant, issued.keyID, scopes: "ARRAY['verification', 'keys']", expires: "NULL")
        await #expect(throws: APIKeyError.invalid) { _ = try await harness.apiKeys.verify(issued.key) }
        #expect(try await harness.apiKeys.list(tenant: tenant).first { $0.keyID == issued.keyID }?.revokedAt != nil, "listed as revoked")

        // The revocation itself is out of the service role's reach.
        for query: PostgresQuery in [
            "DELETE FROM api_key_revocations WHERE key_id = \(issued.keyID)",
            "UPDATE api_key_revocations SET key_id = 'x' WHERE key_id = \(issued.keyID)",
        ] {
            await #expect(throws: (any Error).self) { try await asServiceRole(harness, tenant, query) }
        }
        await harness.shutdown()
    }

    @Test("a revocation written straight to api_keys (an instance of the previous version, mid-upgrade) is recorded by the trigger; another tenant's scope sees none of it")
    func columnRevocationRecorded() async throws {
        let harness = try await CustodyHarness.make("apikeytrigger")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let other = try await harness.keyring.createTenant(label: "globex", actor: "officer").id
        let issued = try await harness.apiKeys.issue(tenant: tenant, scopes: [], actor: "officer")
        try await asServiceRole(harness, tenant, "UPDATE api_keys SET revoked_at = now() WHERE key_id = \(issued.keyID)")
        try await asServiceRole(harness, tenant, "UPDATE api_keys SET revoked_at = NULL WHERE key_id = \(issued.keyID)")
        try await announce(harness, tenant, issued.keyID)
        await #expect(throws: APIKeyError.invalid) { _ = try await harness.apiKeys.verify(issued.key) }
        func revocations(_ scope: TenantID) async throws -> Int {
            try await harness.service.withTenant(scope, context: "count") { connection in
                try await connection.query("SELECT count(*)::int8 FROM api_key_revocations", logger: Database.quiet).collect().first?.decode(Int.self) ?? -1
            }
        }
        #expect(try await revocations(tenant) == 1)
        #expect(try await revocations(other) == 0, "row-level security")
        await harness.shutdown()
    }

    @Test("a live key's row written again with wider scopes or without its expiry no longer verifies (its hash binds them); unchanged, it verifies with an expiry of any precision")
    func widenedRowRefused() async throws {
        let harness = try await CustodyHarness.make("apikeywiden")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        // An expiry with a fraction of a millisecond: stored in microseconds, hashed in milliseconds.
        let expiry = Date().addingTimeInterval(3_600.123_456_7)
        let storedExpiry = Date(timeIntervalSince1970: (expiry.timeIntervalSince1970 * 1000).rounded() / 1000)
        let issued = try await harness.apiKeys.issue(tenant: tenant, scopes: ["verification"], expiresAt: expiry, actor: "officer")
        #expect(try await harness.apiKeys.verify(issued.key).scopes == ["verification"])
        #expect(try await harness.apiKeys.verify(issued.key).scopes == ["verification"], "twice (the verified-key cache)")

        for (scopes, expires): (String, String) in [("ARRAY['verification', 'keys']", "expires_at"), ("scopes", "NULL")] {
            try await rewriteRow(harness, tenant, issued.keyID, scopes: scopes, expires: expires)
            await #expect(throws: APIKeyError.invalid) { _ = try await harness.apiKeys.verify(issued.key) }
            // Or claiming the unbound format for it: its hash is not the key's alone.
            try await harness.ownerSQL(tenant: tenant, "UPDATE api_keys SET hash_format = 1 WHERE key_id = \(issued.keyID)")
            await #expect(throws: APIKeyError.invalid) { _ = try await harness.apiKeys.verify(issued.key) }
            try await harness.ownerSQL(tenant: tenant, """
                UPDATE api_keys SET hash_format = 2, scopes = ARRAY['verification'], expires_at = \(storedExpiry)
                WHERE key_id = \(issued.keyID)
                """)
            try await announce(harness, tenant, issued.keyID)
            #expect(try await harness.apiKeys.verify(issued.key).scopes == ["verification"], "put back, it verifies again")
        }
        await harness.shutdown()
    }

    @Test("a key hashed before migration 32 (the key alone, format 1) still verifies, and keeps its format through a pepper re-hash")
    func unboundKeysStillVerify() async throws {
        let harness = try await CustodyHarness.make("apikeyformat1")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let issued = try await harness.apiKeys.issue(tenant: tenant, scopes: ["verification"], actor: "officer")
        // As an earlier build stored it: HMAC of the whole key, format 1.
        let (pepper, _) = try await harness.keyring.key(tenant, .apiKeyPepper)
        let unbound = try await harness.pool.hmacSHA256(key: pepper, data: issued.key)
        try await harness.ownerSQL(tenant: tenant, "UPDATE api_keys SET hash = \(Data(unbound)), hash_format = 1 WHERE key_id = \(issued.keyID)")
        try await announce(harness, tenant, issued.keyID)
        #expect(try await harness.apiKeys.verify(issued.key).scopes == ["verification"])
        _ = try await harness.keyring.rotate(tenant, .apiKeyPepper, actor: "officer")
        #expect(try await harness.apiKeys.verify(issued.key).keyID == issued.keyID, "re-hashed under the new pepper")
        let row = try #require(try await harness.apiKeys.list(tenant: tenant).first { $0.keyID == issued.keyID })
        #expect(row.pepperVersion == 2 && row.hashFormat == 1)
        #expect(try await harness.apiKeys.verify(issued.key).keyID == issued.keyID)
        await harness.shutdown()
    }

    @Test("a disabled tenant set back to active in `tenants` by the database's writer: its API keys stay refused, the HSM's list holds the disable (helper-77); its keys stay usable to officers")
    func reenabledTenantKeysStayRefused() async throws {
        let harness = try await CustodyHarness.make("tenantreenable")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let issued = try await harness.apiKeys.issue(tenant: tenant, scopes: [], actor: "officer")
        #expect(try await harness.apiKeys.verify(issued.key).tenant == tenant)
        #expect(try await harness.keyring.setTenantActive(tenant, false, actor: "officer"))
        await #expect(throws: APIKeyError.invalid) { _ = try await harness.apiKeys.verify(issued.key) }
        try await asServiceRole(harness, tenant, "UPDATE tenants SET status = 'active' WHERE id = \(tenant.rawValue)::uuid")
        try await asServiceRole(harness, tenant, "SELECT pg_notify(\(APIKeyStore.revocationChannel), '*')")
        #expect(try await harness.keyring.tenant(tenant)?.status == "active", "the row says active")
        await #expect(throws: APIKeyError.invalid) { _ = try await harness.apiKeys.verify(issued.key) }
        // An officer's erasure or export still computes with the tenant's keys.
        let (pii, _) = try await harness.keyring.key(tenant, .pii)
        #expect(try await harness.pool.hmacSHA256(key: pii, data: Array("subject".utf8)).count == 32)
        #expect(try await harness.keyring.setTenantActive(tenant, true, actor: "officer"))
        #expect(try await harness.apiKeys.verify(issued.key).tenant == tenant)
        await harness.shutdown()
    }

    @Test("a revocation row planted in advance under another tenant does not take the key's own revocation (helper-75)")
    func revocationPlantedElsewhere() async throws {
        let harness = try await CustodyHarness.make("apikeyplanted")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let elsewhere = try await harness.keyring.createTenant(label: "globex", actor: "officer").id
        let issued = try await harness.apiKeys.issue(tenant: tenant, scopes: [], actor: "officer")
        // Key ids are readable in api_key_index (no tenant scope): planted before the revocation.
        try await asServiceRole(harness, elsewhere, "INSERT INTO api_key_revocations (tenant_id, key_id, revoked_at) VALUES (\(elsewhere.rawValue)::uuid, \(issued.keyID), now())")
        #expect(try await harness.apiKeys.verify(issued.key).tenant == tenant, "another tenant's row revokes nothing here")
        #expect(try await harness.apiKeys.revoke(tenant: tenant, keyID: issued.keyID, actor: "officer"))
        try await asServiceRole(harness, tenant, "UPDATE api_keys SET revoked_at = NULL WHERE key_id = \(issued.keyID)")
        try await announce(harness, tenant, issued.keyID)
        await #expect(throws: APIKeyError.invalid) { _ = try await harness.apiKeys.verify(issued.key) }
        await harness.shutdown()
    }

    @Test("migration 32 copies the revocations made before it, though row-level security is forced on its owner too (helper-75)")
    func migrationCopiesEarlierRevocations() async throws {
        let harness = try await CustodyHarness.make("apikeybackfill")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let issued = try await harness.apiKeys.issue(tenant: tenant, scopes: [], actor: "officer")
        // Back to schema 31, then a revocation as a build of then wrote it: the column alone.
        for statement: PostgresQuery in [
            "DROP TRIGGER record_api_key_revocation ON api_keys", "DROP FUNCTION record_api_key_revocation()",
            "DROP TABLE api_key_revocations", "DELETE FROM schema_migrations WHERE version = 32",
        ] {
            try await harness.ownerSQL(tenant: nil, statement)
        }
        try await asServiceRole(harness, tenant, "UPDATE api_keys SET revoked_at = now() WHERE key_id = \(issued.keyID)")
        try await harness.ownerSQL(tenant: nil, "ALTER TABLE api_keys DROP COLUMN hash_format")
        #expect(try await Migrations.migrate(harness.owner, serviceRole: harness.settings.serviceUser, logger: harness.logs.logger) == [32])
        // The key's hash is format 2 (issued by this build): its row says so again.
        try await harness.ownerSQL(tenant: tenant, "UPDATE api_keys SET hash_format = 2 WHERE key_id = \(issued.keyID)")
        let copied = try await harness.service.withTenant(tenant, context: "count") { connection in
            try await connection.query("SELECT count(*)::int8 FROM api_key_revocations WHERE key_id = \(issued.keyID)", logger: Database.quiet)
                .collect().first?.decode(Int.self) ?? -1
        }
        #expect(copied == 1, "the earlier revocation is in the insert-only table")
        try await asServiceRole(harness, tenant, "UPDATE api_keys SET revoked_at = NULL WHERE key_id = \(issued.keyID)")
        try await announce(harness, tenant, issued.keyID)
        await #expect(throws: APIKeyError.invalid) { _ = try await harness.apiKeys.verify(issued.key) }
        await harness.shutdown()
    }
}

import Ceremony
import Composition
import Custody
import CustosModel
import Foundation
import HSM
import Logging
import Storage

/// The HSM pool, the database and the custody services, built from the configuration for a
/// local command, and torn down after it.
struct CustodyContext {
    let pool: SessionPool
    let database: Database
    let audit: AuditLog
    let keyring: TenantKeyring
    let apiKeys: APIKeyService
    let webhooks: WebhookSigner

    /// - Parameter verifyRootKeys: refuse a token whose root keys the database does not know
    ///   (``RootKeyCheck``); only the root-KEK ceremony, which migrates and records them, skips it.
    static func withContext<R>(
        _ configuration: CustosConfiguration, verifyRootKeys: Bool = true, _ body: (CustodyContext) async throws -> R
    ) async throws -> R {
        let logger = makeLogger()
        let pool = try SessionPool(configuration: try configuration.poolConfiguration(), logger: logger)
        try await pool.start()
        let database = try Database(configuration: try configuration.databaseConfiguration(role: .service), logger: logger)
        database.start()
        // The newest root keys on the token: after a root-KEK rotation, new tenant keys are
        // wrapped under the new KEKs (older ones stay for rows that still name them).
        let inventory: RootKeyInventory
        do {
            inventory = verifyRootKeys ? try await RootKeyCheck.verify(pool: pool, database: database, logger: logger) : try await RootKeyInventory.read(from: pool)
        } catch {
            await database.shutdown()
            await pool.shutdown()
            throw error
        }
        let rootKeys = RootKeys(inventory: inventory)
        let audit = AuditLog(pool: pool, database: database, rootKeys: rootKeys, anchorPath: configuration.auditAnchorPath)
        let keyring = TenantKeyring(pool: pool, database: database, rootKeys: rootKeys, audit: audit, logger: logger)
        let context = CustodyContext(
            pool: pool, database: database, audit: audit, keyring: keyring,
            apiKeys: APIKeyService(pool: pool, database: database, keyring: keyring, audit: audit, environment: configuration.environment, logger: logger),
            webhooks: WebhookSigner(
                pool: pool, keyring: keyring, audit: audit,
                tokenObjectLimit: configuration.hsm.tokenObjectsPerTenant ?? WebhookSigner.defaultTokenObjectLimit
            )
        )
        do {
            let result = try await body(context)
            await database.shutdown()
            await pool.shutdown()
            return result
        } catch {
            await database.shutdown()
            await pool.shutdown()
            throw error
        }
    }
}

/// Turns a tenant argument into a ``TenantID`` or a clear local error.
func tenantID(_ text: String) throws -> TenantID {
    guard let id = TenantID(text) else { throw LocalError.failed("not a tenant id (a UUID): \(text)") }
    return id
}

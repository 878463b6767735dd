public import CustosModel
import PostgresNIO

/// `pending_destruction_anchors`: key versions whose destruction is committed but which the
/// HSM's list of destroyed versions may not hold yet. Written in the destruction's transaction
/// and cleared once the list holds them, so a crash in between leaves work for start-up
/// reconciliation rather than a destroyed version a replayed row could bring back. Ids only;
/// like `pending_token_destructions`, not per tenant (read at start-up).
public enum PendingDestructionAnchorStore {
    public struct Entry: Sendable, Hashable {
        public let tenant: TenantID
        public let purpose: KeyPurpose
        public let version: Int

        public init(tenant: TenantID, purpose: KeyPurpose, version: Int) {
            self.tenant = tenant
            self.purpose = purpose
            self.version = version
        }
    }

    public static func insert(_ entry: Entry, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO pending_destruction_anchors (tenant_id, purpose, version)
            VALUES (\(entry.tenant.rawValue)::uuid, \(entry.purpose.rawValue), \(entry.version))
            ON CONFLICT DO NOTHING
            """, logger: Database.quiet)
    }

    public static func delete(_ entry: Entry, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            DELETE FROM pending_destruction_anchors
            WHERE tenant_id = \(entry.tenant.rawValue)::uuid AND purpose = \(entry.purpose.rawValue) AND version = \(entry.version)
            """, logger: Database.quiet)
    }

    public static func all(on connection: DatabaseTransaction) async throws -> [Entry] {
        var entries = [Entry]()
        let rows = try await connection.query(
            "SELECT tenant_id::text, purpose, version FROM pending_destruction_anchors ORDER BY tenant_id, purpose, version",
            logger: Database.quiet
        )
        for try await (tenant, purpose, version) in rows.decode((String, String, Int).self) {
            guard let tenant = TenantID(tenant), let purpose = KeyPurpose(rawValue: purpose) else { continue }
            entries.append(Entry(tenant: tenant, purpose: purpose, version: version))
        }
        return entries
    }

    /// Serialises changes to the HSM's list of destroyed versions across instances (one
    /// read-modify-write at a time, so none loses another's addition).
    public static func lockAnchor(on connection: DatabaseTransaction) async throws {
        try await connection.query("SELECT pg_advisory_xact_lock(hashtextextended('custos/keys/destroyed', 0))", logger: Database.quiet)
    }
}

extension PendingDestructionAnchorStore {
    /// Every destroyed row of every tenant, as the database holds them: one transaction,
    /// scoped to each tenant in turn (row-level security stays on). Read only to rebuild a
    /// missing anchor; the caller believes only the rows whose MAC verifies.
    public static func allDestroyedRows(on connection: DatabaseTransaction) async throws -> [KeyVersionRecord] {
        var tenants = [TenantID]()
        for try await id in try await connection.query("SELECT id::text FROM tenants ORDER BY id", logger: Database.quiet).decode(String.self) {
            if let tenant = TenantID(id) { tenants.append(tenant) }
        }
        var rows = [KeyVersionRecord]()
        for tenant in tenants {
            try await connection.scope(to: tenant)
            rows += try await KeyVersionStore.all(on: connection).filter { $0.state == .destroyed }
        }
        return rows
    }
}

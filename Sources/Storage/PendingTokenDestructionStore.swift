public import CustosModel
import PostgresNIO

/// `pending_token_destructions`: token objects (Ed25519 key pairs) of key versions whose
/// destruction is committed but whose objects may still be on the token. Written in the
/// destruction's transaction and cleared once the objects are gone, so a crash in between leaves
/// a list start-up reconciliation works through, rather than key material no row names. A new
/// key pair is listed too, before its import, and claimed off the list in the transaction that
/// stores its row: a crash before that commit leaves it listed for destruction. Labels
/// and ids only: nothing secret. Like `pending_rotations`, not per tenant (read at start-up).
public enum PendingTokenDestructionStore {
    public struct Entry: Sendable, Hashable {
        public let label: String
        public let tenant: TenantID
        public let purpose: KeyPurpose
        public let version: Int

        public init(label: String, tenant: TenantID, purpose: KeyPurpose, version: Int) {
            self.label = label
            self.tenant = tenant
            self.purpose = purpose
            self.version = version
        }
    }

    public static func insert(_ entry: Entry, on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO pending_token_destructions (label, tenant_id, purpose, version)
            VALUES (\(entry.label), \(entry.tenant.rawValue)::uuid, \(entry.purpose.rawValue), \(entry.version))
            ON CONFLICT (label) DO NOTHING
            """, logger: Database.quiet)
    }

    /// Takes the entry off the list; the deleted row stays locked until the transaction ends,
    /// so a concurrent claim waits for it and then finds it gone (or back, after a rollback).
    /// - Returns: whether it was listed.
    public static func claim(label: String, on connection: DatabaseTransaction) async throws -> Bool {
        let rows = try await connection.query("DELETE FROM pending_token_destructions WHERE label = \(label) RETURNING label", logger: Database.quiet)
        for try await _ in rows.decode(String.self) { return true }
        return false
    }

    public static func all(on connection: DatabaseTransaction) async throws -> [Entry] {
        var entries = [Entry]()
        let rows = try await connection.query(
            "SELECT label, tenant_id::text, purpose, version FROM pending_token_destructions ORDER BY label", logger: Database.quiet
        )
        for try await (label, tenant, purpose, version) in rows.decode((String, String, String, Int).self) {
            guard let tenant = TenantID(tenant), let purpose = KeyPurpose(rawValue: purpose) else { continue }
            entries.append(Entry(label: label, tenant: tenant, purpose: purpose, version: version))
        }
        return entries
    }
}

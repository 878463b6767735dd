import CustosModel
import PostgresNIO

/// What the HSM's list of anchored key states (custody's `KeyStateAnchor`) needs from the
/// database: a lock that serialises its read-modify-writes across instances, and the rows it is
/// rebuilt from when a token has none.
public enum KeyStateAnchorStore {
    /// Serialises changes to the HSM's list across instances until the transaction ends (one
    /// read-modify-write at a time, so none loses another's change). One lock per schema, as
    /// there is one list per database and schema: installations sharing a database (or test
    /// schemas) do not queue behind each other's changes.
    public static func lock(on connection: DatabaseTransaction) async throws {
        try await connection.run("SELECT pg_advisory_xact_lock(hashtextextended('custos/keys/states:' || current_schema(), 0))")
    }

    /// Every key version row of every tenant, as the database holds them: scoped to each tenant
    /// in turn (row-level security stays on), so the caller must scope `connection` again before
    /// any tenant statement. Read only to rebuild a missing list; the caller believes only the
    /// rows whose MAC verifies.
    public static func allRows(on connection: DatabaseTransaction) async throws -> [KeyVersionRecord] {
        var tenants = [TenantID]()
        for try await id in try await connection.query("SELECT id::text FROM tenants ORDER BY id", logger: Database.quiet).decode(String.self) {
            if let tenant = TenantID(id) { tenants.append(tenant) }
        }
        var rows = [KeyVersionRecord]()
        for tenant in tenants {
            try await connection.scope(to: tenant)
            rows += try await KeyVersionStore.all(on: connection)
        }
        return rows
    }
}

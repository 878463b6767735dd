import Foundation
import PostgresNIO

/// `root_keys`: the check value of every root key this database's blobs and MACs were made
/// under (no key material). Not tenant data: no row-level security.
public enum RootKeyStore {
    /// Label → check value, as recorded.
    public static func all(on connection: DatabaseTransaction) async throws -> [String: [UInt8]] {
        var recorded = [String: [UInt8]]()
        let rows = try await connection.query("SELECT label, check_value FROM root_keys", logger: Database.quiet)
        for try await (label, checkValue) in rows.decode((String, Data).self) { recorded[label] = Array(checkValue) }
        return recorded
    }

    /// Holds the record against new root keys until the transaction ends, shared with every
    /// other transaction that stores a wrapped tenant key: a ceremony recording a new root KEK
    /// set (``lockExclusive(on:)``) waits for those in flight, and those that start after it
    /// see the new set. So no blob wrapped under the superseded set commits after the set that
    /// supersedes it, where a rotation's re-wrap, which reads its rows only then, would miss it.
    public static func lockShared(on connection: DatabaseTransaction) async throws {
        try await connection.run("SELECT pg_advisory_xact_lock_shared(hashtextextended('custos/root-keys:' || current_schema(), 0))")
    }

    /// The ceremony's side of ``lockShared(on:)``.
    public static func lockExclusive(on connection: DatabaseTransaction) async throws {
        try await connection.run("SELECT pg_advisory_xact_lock(hashtextextended('custos/root-keys:' || current_schema(), 0))")
    }

    /// Records `label` unless it is recorded already (a recorded value is never replaced).
    public static func record(label: String, checkValue: [UInt8], on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO root_keys (label, check_value) VALUES (\(label), \(Data(checkValue))) ON CONFLICT (label) DO NOTHING
            """, logger: Database.quiet)
    }
}

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

    /// The first record of an installation, as the service role may make it: `entries` go in
    /// only if nothing is recorded yet (`false` otherwise, nothing written). Every later record is
    /// the owner role's (``record(label:checkValue:on:)``, the key ceremony).
    public static func recordFirst(_ entries: [(label: String, checkValue: [UInt8])], on connection: DatabaseTransaction) async throws -> Bool {
        let labels = entries.map(\.label)
        let checkValues = entries.map { $0.checkValue.map { String(format: "%02x", $0) }.joined() }
        let rows = try await connection.query("SELECT record_first_root_keys(\(labels), \(checkValues))", logger: Database.quiet)
        for try await recorded in rows.decode(Bool.self) { return recorded }
        return false
    }

    /// Records `label` unless it is recorded already (a recorded value is never replaced). The
    /// owner role's (migration 31): the service role may only make the first record.
    public static func record(label: String, checkValue: [UInt8], on connection: DatabaseTransaction) async throws {
        try await connection.query("""
            INSERT INTO root_keys (label, check_value) VALUES (\(label), \(Data(checkValue))) ON CONFLICT (label) DO NOTHING
            """, logger: Database.quiet)
    }
}

import PostgresNIO

/// `record_seal_origin` (migration 33): whether the database was created with record MACs, so
/// that no row of it was ever written without one. The service role reads it and cannot change it.
public enum RecordSealOrigin {
    public static func createdWithRecordMACs(on connection: DatabaseTransaction) async throws -> Bool {
        for try await created in try await connection.query(
            "SELECT created_with_record_macs FROM record_seal_origin LIMIT 1", logger: Database.quiet
        ).decode(Bool.self) {
            return created
        }
        return false
    }
}

import Foundation
import PostgresNIO

extension KeyVersionStore {
    /// Replaces a version's wrapped blob after a root-KEK rotation: the blob, the root KEK
    /// version and the row MAC (which covers both) change together, and only while the row's
    /// MAC is still `expectedMAC` (a concurrent retire or destroy, or a repeated run, wins; this
    /// changes nothing then). Needs migration 4 (`UPDATE (root_kek_version)` for the service role).
    /// - Returns: whether the row was changed.
    public static func rewrap(_ record: KeyVersionRecord, expectedMAC: [UInt8], on connection: DatabaseTransaction) async throws -> Bool {
        let rows = try await connection.query("""
            UPDATE key_versions SET wrapped_key = \(record.wrappedKey.map { Data($0) }), root_kek_version = \(record.rootKEKVersion),
                row_mac = \(Data(record.rowMAC))
            WHERE tenant_id = \(record.tenant.rawValue)::uuid AND purpose = \(record.purpose.rawValue) AND version = \(record.version)
                AND row_mac = \(Data(expectedMAC))
            RETURNING version
            """, logger: Database.quiet)
        for try await _ in rows { return true }
        return false
    }
}

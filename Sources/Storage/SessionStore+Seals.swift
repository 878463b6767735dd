public import Foundation
import PostgresNIO

// Session MACs (migration 33): rows consented or completed before it carry none until an
// officer seals them (`custos db seal-records`). Functions run inside
// ``Database/withTenant(_:context:_:)``.
extension SessionStore {
    /// Rows without a subject MAC, or that record something (``SessionRecord/needsSeal``) without
    /// a record MAC: the partial index `verification_sessions_unsealed` has the same condition.
    static let unsealedCondition = """
        (subject_mac IS NULL OR (record_mac IS NULL AND (notice_version IS NOT NULL OR consented_at IS NOT NULL OR outcome IS NOT NULL
            OR confidence IS NOT NULL OR biometric_key_version IS NOT NULL OR completed_at IS NOT NULL)))
        """

    /// Whether the tenant in scope has a session missing a MAC it needs.
    public static func hasUnsealed(on connection: DatabaseTransaction) async throws -> Bool {
        try await !connection.query(
            "SELECT 1 FROM verification_sessions WHERE \(unescaped: unsealedCondition) LIMIT 1", logger: Database.quiet
        ).collect().isEmpty
    }

    /// At most `limit` of the tenant's sessions missing a MAC they need.
    public static func unsealed(limit: Int, on connection: DatabaseTransaction) async throws -> [Row] {
        var rows = [Row]()
        for try await row in try await connection.query("""
            SELECT \(unescaped: columns) FROM verification_sessions WHERE \(unescaped: unsealedCondition) ORDER BY id LIMIT \(limit)
            """, logger: Database.quiet) {
            rows.append(try decode(row))
        }
        return rows
    }

    /// Stores `seal` as the session's record MAC if it still records exactly `record` (times to
    /// the whole second, as the MAC covers them) and still has none. - Returns: whether it was sealed here.
    public static func sealUnsealed(_ record: SessionRecord, seal: RecordSeal, on connection: DatabaseTransaction) async throws -> Bool {
        func seconds(_ date: Date?) -> Int64? { date.map { Int64($0.timeIntervalSince1970.rounded(.down)) } }
        return try await !connection.query("""
            UPDATE verification_sessions SET record_mac = \(Data(seal.mac)), record_mac_version = \(seal.macVersion)
            WHERE id = \(record.id) AND record_mac IS NULL
                AND notice_version IS NOT DISTINCT FROM \(record.noticeVersion)
                AND floor(extract(epoch FROM consented_at))::int8 IS NOT DISTINCT FROM \(seconds(record.consentedAt))::int8
                AND outcome IS NOT DISTINCT FROM \(record.outcome) AND confidence IS NOT DISTINCT FROM \(record.confidence)
                AND biometric_key_version IS NOT DISTINCT FROM \(record.biometricKeyVersion)::int4
                AND floor(extract(epoch FROM completed_at))::int8 IS NOT DISTINCT FROM \(seconds(record.completedAt))::int8
            RETURNING 1
            """, logger: Database.quiet).collect().isEmpty
    }

    /// Stores `seal` as the session's subject MAC if it is still `subject`'s with that expiry
    /// (whole seconds) and has none. - Returns: whether it was sealed here.
    public static func sealUnsealed(_ binding: SessionSubject, seal: RecordSeal, on connection: DatabaseTransaction) async throws -> Bool {
        try await !connection.query("""
            UPDATE verification_sessions SET subject_mac = \(Data(seal.mac)), subject_mac_version = \(seal.macVersion)
            WHERE id = \(binding.id) AND subject_mac IS NULL AND subject_ref = \(binding.subject)
                AND floor(extract(epoch FROM expires_at))::int8 = \(Int64(binding.expiresAt.timeIntervalSince1970.rounded(.down)))
            RETURNING 1
            """, logger: Database.quiet).collect().isEmpty
    }

    /// Replaces the subject MAC of a session moved to another reference, if it still holds the
    /// MAC it was moved with. - Returns: whether the row was changed.
    @discardableResult
    public static func replaceSubjectSeal(_ id: UUID, expected: RecordSeal, with seal: RecordSeal, on connection: DatabaseTransaction) async throws -> Bool {
        try await !connection.query("""
            UPDATE verification_sessions SET subject_mac = \(Data(seal.mac)), subject_mac_version = \(seal.macVersion)
            WHERE id = \(id) AND subject_mac = \(Data(expected.mac)) AND subject_mac_version = \(expected.macVersion)
            RETURNING 1
            """, logger: Database.quiet).collect().isEmpty
    }
}

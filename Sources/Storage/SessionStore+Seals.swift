public import Foundation
import PostgresNIO

// Session MACs (migration 33): rows written before it carry none until an officer seals them
// (`custos db seal-records`). Functions run inside ``Database/withTenant(_:context:timeout:_:)``.
extension SessionStore {
    /// Rows without a subject MAC, or that record something (``SessionRecord/needsSeal``) without
    /// a record MAC: the partial index `verification_sessions_unsealed` has the same condition.
    static let unsealedCondition = """
        (subject_mac IS NULL OR (record_mac IS NULL AND (notice_version IS NOT NULL OR consented_at IS NOT NULL OR outcome IS NOT NULL
            OR confidence IS NOT NULL OR biometric_key_version IS NOT NULL OR completed_at IS NOT NULL)))
        """

    /// A session the sealing read, with its row version (`xmin`): sealed only if unchanged since.
    public struct Unsealed: Sendable {
        public let row: Row
        public let rowVersion: String
    }

    /// Whether the tenant in scope has a session missing a MAC it needs.
    public static func hasUnsealed(on connection: DatabaseTransaction) async throws -> Bool {
        try await !connection.query(
            "SELECT 1 FROM verification_sessions WHERE \(unescaped: unsealedCondition) LIMIT 1", logger: Database.quiet
        ).collect().isEmpty
    }

    /// At most `limit` of the tenant's sessions missing a MAC they need, in id order after `after`.
    public static func unsealed(after: UUID?, limit: Int, on connection: DatabaseTransaction) async throws -> [Unsealed] {
        var found = [Unsealed]()
        let after = after ?? UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
        for try await row in try await connection.query("""
            SELECT \(unescaped: columns), xmin::text FROM verification_sessions
            WHERE \(unescaped: unsealedCondition) AND id > \(after) ORDER BY id LIMIT \(limit)
            """, logger: Database.quiet) {
            found.append(Unsealed(row: try decode(row), rowVersion: try row.makeRandomAccess()[columnCount].decode(String.self)))
        }
        return found
    }

    /// Stores the MACs the session lacks (`record`: its record MAC, `subject`: its subject MAC)
    /// if the row is the version the sealing read: any write since (a completion, a move)
    /// changed it, and that writer's MACs stand. - Returns: whether it was sealed here.
    public static func sealUnsealed(
        _ unsealed: Unsealed, record: RecordSeal?, subject: RecordSeal?, on connection: DatabaseTransaction
    ) async throws -> Bool {
        guard record != nil || subject != nil else { return false }
        return try await !connection.query("""
            UPDATE verification_sessions SET
                record_mac = coalesce(record_mac, \(record.map { Data($0.mac) })),
                record_mac_version = coalesce(record_mac_version, \(record?.macVersion)::int4),
                subject_mac = coalesce(subject_mac, \(subject.map { Data($0.mac) })),
                subject_mac_version = coalesce(subject_mac_version, \(subject?.macVersion)::int4)
            WHERE id = \(unsealed.row.id) AND xmin::text = \(unsealed.rowVersion)
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

    /// Which of `ids` have a completion recorded (`session_completions`, which the service role
    /// cannot change): a row showing none for one of them was changed by the database's writer.
    public static func completed(_ ids: [UUID], on connection: DatabaseTransaction) async throws -> Set<UUID> {
        guard !ids.isEmpty else { return [] }
        var found = Set<UUID>()
        for try await id in try await connection.query(
            "SELECT session_id FROM session_completions WHERE session_id = ANY(\(ids))", logger: Database.quiet
        ).decode(UUID.self) {
            found.insert(id)
        }
        return found
    }
}

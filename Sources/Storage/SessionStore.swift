public import CustosModel
public import Foundation
import PostgresNIO

/// `verification_sessions`, tenant-scoped by row-level security, and `gateway_links`, the
/// non-secret index that resolves a candidate's link (by its SHA-256) to tenant and session
/// before any tenant is in scope.
public enum SessionStore {
    public struct Row: Sendable, Hashable {
        public let id: UUID
        public let subject: SubjectReference
        public let sealedName: [UInt8]?
        public let sealedEmail: [UInt8]?
        public let dataKeyVersion: Int?
        public let expiresAt: Date
        public let linkOpenedAt: Date?
        public let noticeVersion: String?
        public let consentedAt: Date?
        public let outcome: String?
        public let confidence: String?
        public let biometricKeyVersion: Int?
        public let completedAt: Date?
        public let createdAt: Date
        /// The MAC of ``record`` (migration 33); `nil` on a row that records nothing yet, or
        /// one written before.
        public let seal: RecordSeal?
        /// The MAC of ``subjectBinding`` (migration 33), written at creation; `nil` on a row
        /// written before.
        public let subjectSeal: RecordSeal?
    }

    /// What a new session stores.
    public struct New: Sendable {
        public let id: UUID
        public let subject: SubjectReference
        public let sealedName: [UInt8]?
        public let sealedEmail: [UInt8]?
        public let dataKeyVersion: Int?
        public let expiresAt: Date
        public let linkHash: [UInt8]
        /// The MAC of the session's ``SessionSubject``.
        public let subjectSeal: RecordSeal

        public init(
            id: UUID, subject: SubjectReference, sealedName: [UInt8]?, sealedEmail: [UInt8]?, dataKeyVersion: Int?, expiresAt: Date,
            linkHash: [UInt8], subjectSeal: RecordSeal
        ) {
            self.id = id
            self.subject = subject
            self.sealedName = sealedName
            self.sealedEmail = sealedEmail
            self.dataKeyVersion = dataKeyVersion
            self.expiresAt = expiresAt
            self.linkHash = linkHash
            self.subjectSeal = subjectSeal
        }
    }

    /// Why a gateway link did not open.
    public enum LinkRefusal: Error, Sendable, Equatable {
        case unknown, alreadyUsed, expired
    }

    /// A row's columns, ``decode(_:)``'s order; statements that read more put theirs after
    /// (from ``columnCount`` on).
    static let columns = """
        id, subject_ref, pii_version, sealed_name, sealed_email, data_key_version, expires_at, link_opened_at,
        notice_version, consented_at, outcome, confidence, biometric_key_version, completed_at, created_at,
        record_mac, record_mac_version, subject_mac, subject_mac_version
        """
    static let columnCount = 19

    /// Inserts the session and its link index row (the caller's tenant transaction).
    public static func insert(_ new: New, tenant: TenantID, on connection: DatabaseTransaction) async throws {
        for try await _ in try await connection.execute(InsertSession(new: new, tenant: tenant)) {}
        for try await _ in try await connection.execute(InsertLink(new: new, tenant: tenant)) {}
    }

    /// The session, locked against concurrent completion when `forUpdate`.
    public static func get(_ id: UUID, forUpdate: Bool = false, on connection: DatabaseTransaction) async throws -> Row? {
        let rows = forUpdate ? try await connection.execute(LockSession(id: id)) : try await connection.execute(ReadSession(id: id))
        for try await row in rows { return try decode(row) }
        return nil
    }

    /// The session locked against concurrent completion, and the key versions its subject has
    /// templates of, ascending (what Enrol reads, in one round trip).
    public static func lockWithEnrolledVersions(_ id: UUID, on connection: DatabaseTransaction) async throws -> (row: Row, enrolledVersions: [Int])? {
        for try await row in try await connection.execute(LockSessionWithEnrolledVersions(id: id)) {
            return (try decode(row), try row.makeRandomAccess()[columnCount].decode([Int].self))
        }
        return nil
    }

    /// Writes the outcome, with the MAC of the completed record, if none is written yet and
    /// none was ever (`session_completions`, migration 33). - Returns: whether it was written.
    public static func complete(
        _ id: UUID, outcome: String, confidence: String?, biometricKeyVersion: Int, at now: Date, seal: RecordSeal,
        on connection: DatabaseTransaction
    ) async throws -> Bool {
        let rows = try await connection.query("""
            UPDATE verification_sessions SET outcome = \(outcome), confidence = \(confidence),
                biometric_key_version = \(biometricKeyVersion), completed_at = \(now),
                record_mac = \(Data(seal.mac)), record_mac_version = \(seal.macVersion)
            WHERE id = \(id) AND outcome IS NULL AND consented_at IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM session_completions c WHERE c.session_id = \(id))
            RETURNING 1
            """, logger: Database.quiet)
        return try await rows.collect().count == 1
    }

    public static func bySubjects(_ subjects: [String], on connection: DatabaseTransaction) async throws -> [Row] {
        try await decode(try await connection.query("""
            SELECT \(unescaped: columns) FROM verification_sessions WHERE subject_ref = ANY(\(subjects)) ORDER BY created_at, id
            """, logger: Database.quiet))
    }

    /// A place in the order of ``bySubjects(_:after:limit:on:)``: a session's creation time, in
    /// whole microseconds as PostgreSQL stores it, and its id. Pages compare that same expression
    /// (a `Date` round trip could move a time by one microsecond and repeat or skip a session);
    /// the subject's sessions are found by the subject index, so the expression costs no index.
    public struct Position: Sendable, Hashable {
        public let createdAtMicroseconds: Int64
        public let id: UUID

        public init(createdAtMicroseconds: Int64, id: UUID) {
            self.createdAtMicroseconds = createdAtMicroseconds
            self.id = id
        }
    }

    /// At most `limit` of the subjects' sessions after `position` (from the first when nil),
    /// oldest first, and the position of the last one when more follow. The position is a value,
    /// not a row: a session deleted since it was read does not end the paging.
    public static func bySubjects(
        _ subjects: [String], after position: Position?, limit: Int, on connection: DatabaseTransaction
    ) async throws -> (rows: [Row], next: Position?) {
        precondition(limit > 0, "a page holds at least one session")
        let rows: PostgresRowSequence
        let micros = "(extract(epoch FROM created_at) * 1000000)::int8"
        if let position {
            rows = try await connection.query("""
                SELECT \(unescaped: columns), \(unescaped: micros) FROM verification_sessions
                WHERE subject_ref = ANY(\(subjects))
                    AND (\(unescaped: micros), id) > (\(position.createdAtMicroseconds), \(position.id))
                ORDER BY created_at, id LIMIT \(limit + 1)
                """, logger: Database.quiet)
        } else {
            rows = try await connection.query("""
                SELECT \(unescaped: columns), \(unescaped: micros) FROM verification_sessions
                WHERE subject_ref = ANY(\(subjects)) ORDER BY created_at, id LIMIT \(limit + 1)
                """, logger: Database.quiet)
        }
        var page = [(row: Row, micros: Int64)]()
        for try await row in rows {
            page.append((try decode(row), try row.makeRandomAccess()[columnCount].decode(Int64.self)))
        }
        guard page.count > limit else { return (page.map(\.row), nil) }
        let last = page[limit - 1]
        return (page.prefix(limit).map(\.row), Position(createdAtMicroseconds: last.micros, id: last.row.id))
    }

    /// Deletes the subjects' sessions (their gateway links go with them). - Returns: sessions deleted.
    public static func delete(subjects: [String], on connection: DatabaseTransaction) async throws -> Int {
        try await connection.query("DELETE FROM verification_sessions WHERE subject_ref = ANY(\(subjects)) RETURNING 1", logger: Database.quiet).collect().count
    }

    /// Retention: deletes at most `limit` sessions completed before `cutoff`, or never completed
    /// and expired before it (their gateway links go with them); a batch, as
    /// ``TemplateStore/deleteInactive(since:limit:on:)``. - Returns: sessions deleted.
    public static func deleteEnded(before cutoff: Date, limit: Int, on connection: DatabaseTransaction) async throws -> Int {
        try await connection.query("""
            WITH ended AS (
                SELECT ctid FROM verification_sessions
                WHERE completed_at < \(cutoff) OR (completed_at IS NULL AND expires_at < \(cutoff)) LIMIT \(limit)
            )
            DELETE FROM verification_sessions
            WHERE (completed_at < \(cutoff) OR (completed_at IS NULL AND expires_at < \(cutoff))) AND ctid IN (SELECT ctid FROM ended)
            RETURNING 1
            """, logger: Database.quiet).collect().count
    }

    /// Sessions whose name or email is sealed under a `data` key version.
    public static func count(dataKeyVersion: Int, on connection: DatabaseTransaction) async throws -> Int {
        try await TemplateStore.scalar("SELECT count(*)::int FROM verification_sessions WHERE data_key_version = \(dataKeyVersion)", on: connection)
    }

    /// Sessions whose subject reference was made under a `pii` key version.
    public static func count(piiVersion: Int, on connection: DatabaseTransaction) async throws -> Int {
        try await TemplateStore.scalar("SELECT count(*)::int FROM verification_sessions WHERE pii_version = \(piiVersion)", on: connection)
    }

    private static func decode(_ rows: PostgresRowSequence) async throws -> [Row] {
        var result = [Row]()
        for try await row in rows { result.append(try decode(row)) }
        return result
    }

    /// The first ``columnCount`` columns of `row`: ``columns``.
    static func decode(_ row: PostgresRow) throws -> Row {
        // A tuple decodes at most 15 columns: the MAC's two are read by position.
        let cells = try row.decode(
            (UUID, String, Int, Data?, Data?, Int?, Date, Date?, String?, Date?, String?, String?, Int?, Date?, Date).self
        )
        let more = row.makeRandomAccess()
        return Row(
            id: cells.0, subject: SubjectReference(value: cells.1, piiVersion: cells.2),
            sealedName: cells.3.map { Array($0) }, sealedEmail: cells.4.map { Array($0) }, dataKeyVersion: cells.5,
            expiresAt: cells.6, linkOpenedAt: cells.7, noticeVersion: cells.8, consentedAt: cells.9,
            outcome: cells.10, confidence: cells.11, biometricKeyVersion: cells.12, completedAt: cells.13, createdAt: cells.14,
            seal: RecordSeal(mac: try more[15].decode(Data?.self), macVersion: try more[16].decode(Int?.self)),
            subjectSeal: RecordSeal(mac: try more[17].decode(Data?.self), macVersion: try more[18].decode(Int?.self))
        )
    }
}

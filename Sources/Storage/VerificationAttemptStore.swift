public import Foundation
import PostgresNIO

/// `verification_attempts`: 1:1 verification attempts per subject in a fixed window, counted in
/// the transaction that records the verification itself (no commit of its own), by Verify's
/// opening statement (``SessionStore/openForVerify(_:tenant:now:cutoff:on:)``). Functions run
/// inside ``Database/withTenant(_:context:timeout:_:)``.
public enum VerificationAttemptStore {
    /// Forgets counters whose window started at or before `cutoff` (ended windows: the limit no
    /// longer needs them, and each names a subject). - Returns: rows deleted.
    @discardableResult
    public static func deleteEnded(windowStartedBy cutoff: Date, limit: Int, on connection: DatabaseTransaction) async throws -> Int {
        try await connection.query("""
            WITH ended AS (SELECT ctid FROM verification_attempts WHERE window_start <= \(cutoff) LIMIT \(limit))
            DELETE FROM verification_attempts WHERE window_start <= \(cutoff) AND ctid IN (SELECT ctid FROM ended)
            RETURNING 1
            """, logger: Database.quiet).collect().count
    }

    /// Forgets the subjects' counters (erasure).
    @discardableResult
    public static func delete(subjects: [String], on connection: DatabaseTransaction) async throws -> Int {
        guard !subjects.isEmpty else { return 0 }
        return try await connection.query(
            "DELETE FROM verification_attempts WHERE subject_ref = ANY(\(subjects)) RETURNING 1", logger: Database.quiet
        ).collect().count
    }
}

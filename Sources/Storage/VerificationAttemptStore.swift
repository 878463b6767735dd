public import CustosModel
public import Foundation
import PostgresNIO

/// `verification_attempts`: 1:1 verification attempts per subject in a fixed window, counted in
/// the transaction that records the verification itself (no commit of its own). Functions run
/// inside ``Database/withTenant(_:context:_:)``.
public enum VerificationAttemptStore {
    /// Counts one attempt against `subject`: a window older than `window` starts afresh at
    /// `now`. The row stays locked until the transaction ends, so concurrent attempts count one
    /// after the other.
    /// - Returns: the attempts in the current window, this one included, and when it started.
    public static func count(
        subject: String, tenant: TenantID, now: Date, window: Duration, on connection: DatabaseTransaction
    ) async throws -> (attempts: Int, windowStart: Date) {
        let cutoff = now.addingTimeInterval(-Double(window.components.seconds))
        for try await row in try await connection.execute(CountAttempt(subject: subject, tenant: tenant, now: now, cutoff: cutoff)) {
            return try row.decode((Int, Date).self)
        }
        throw StorageError.notFound("verification attempt row")
    }

    /// Verify's attempt count, prepared (``PreparedStatement``).
    struct CountAttempt: PreparedStatement {
        static let name = "custos_count_verification_attempt"
        static let bindingDataTypes: [PostgresDataType] = [.text, .text, .timestamptz, .timestamptz]
        static let sql = """
            INSERT INTO verification_attempts AS a (tenant_id, subject_ref, window_start, attempts)
            VALUES ($1::uuid, $2, $3, 1)
            ON CONFLICT (tenant_id, subject_ref) DO UPDATE SET
                attempts = CASE WHEN a.window_start <= $4 THEN 1 ELSE a.attempts + 1 END,
                window_start = CASE WHEN a.window_start <= $4 THEN EXCLUDED.window_start ELSE a.window_start END
            RETURNING attempts, window_start
            """
        let subject: String
        let tenant: TenantID
        let now: Date
        let cutoff: Date

        func makeBindings() -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 4)
            bindings.append(tenant.rawValue)
            bindings.append(subject)
            bindings.append(now)
            bindings.append(cutoff)
            return bindings
        }
    }

    /// Forgets counters whose window started at or before `cutoff` (ended windows: the limit no
    /// longer needs them, and each names a subject). - Returns: rows deleted.
    @discardableResult
    public static func deleteEnded(windowStartedBy cutoff: Date, on connection: DatabaseTransaction) async throws -> Int {
        try await connection.query(
            "DELETE FROM verification_attempts WHERE window_start <= \(cutoff) RETURNING 1", logger: Database.quiet
        ).collect().count
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

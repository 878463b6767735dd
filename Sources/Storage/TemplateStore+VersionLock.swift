public import CustosModel
public import Foundation
import PostgresNIO

/// A template is written under the biometric version its token was made under, which was the
/// active one when the call began, not necessarily when it writes. A rotation's overlap that
/// closed meanwhile has dropped that version's templates and retired it: a template stored
/// after the drop outlives it, matching nothing (Verify: not enrolled) yet blocking a fresh
/// Enrol (already enrolled). Template writes take the version's lock shared and find the
/// version still matching; the close takes it exclusively before it retires the keys and
/// drops the templates. Either the close waits for the write and drops its template with the
/// rest, or it committed first and the write sees the version retired. An advisory lock, not a
/// share lock on the key's row: that would dirty the row and make a MultiXact per concurrent
/// Enrol. Enrol's single-statement write does the same inside `complete_enrolment`
/// (migration 25), with the same key.
extension TemplateStore {
    /// Takes `keyVersion`'s lock shared for the rest of the transaction, then tells whether the
    /// version still matches: its `bio-prf` key active, or retiring inside its window at `now`.
    /// Two statements: a check in the lock's own statement would read a snapshot from before
    /// the wait.
    public static func lockMatchingBiometricVersion(_ keyVersion: Int, tenant: TenantID, now: Date, on connection: DatabaseTransaction) async throws -> Bool {
        try await connection.run("""
            SELECT pg_advisory_xact_lock_shared(hashtextextended('custos-bio-version:' || \(tenant.rawValue)::uuid::text || '/' || \(keyVersion)::text, 0))
            """)
        return try await scalar("""
            SELECT count(*)::int FROM key_versions k
            WHERE k.tenant_id = \(tenant.rawValue)::uuid AND k.purpose = 'bio-prf' AND k.version = \(keyVersion)
                AND (k.state = 'active' OR (k.state = 'retiring' AND k.retiring_until > \(now)))
            """, on: connection) > 0
    }

    /// Takes `keyVersion`'s lock exclusively for the rest of the transaction (the close of its
    /// overlap, before the keys are retired and the templates dropped): template writes under
    /// it in flight commit first, later ones see the version retired.
    public static func lockBiometricVersionForClose(_ keyVersion: Int, tenant: TenantID, on connection: DatabaseTransaction) async throws {
        try await connection.run("""
            SELECT pg_advisory_xact_lock(hashtextextended('custos-bio-version:' || \(tenant.rawValue)::uuid::text || '/' || \(keyVersion)::text, 0))
            """)
    }
}

public import CustosModel
public import Foundation
import PostgresNIO

/// A data-plane call's closing writes as one statement (data-modifying CTEs): what used to be
/// two or three round trips inside the call's one transaction. Every statement costs a round
/// trip, a parse and a plan in PostgreSQL and two thread hops in the service; under load the
/// Enrol and Verify rates follow the statements per call.
extension SessionStore {
    /// Enrol's writes: the subject's token of its key version stored (or replaced, as
    /// ``TemplateStore/upsert(subject:token:tenant:on:)``), the session completed as
    /// `enrolled` (as ``complete(_:outcome:confidence:biometricKeyVersion:at:on:)``), and the
    /// gallery change announced (as ``TemplateStore/notify(_:on:)``).
    /// - Returns: whether the session was completed here (false: it was completed already).
    public static func completeEnrolment(
        _ id: UUID, subject: SubjectReference, token: BiometricToken, tenant: TenantID, at now: Date,
        announcing change: GalleryChange, on connection: DatabaseTransaction
    ) async throws -> Bool {
        // Data-modifying CTEs run to completion whether or not the outer query reads them.
        let rows = try await connection.query("""
            WITH stored AS (
                INSERT INTO templates (tenant_id, subject_ref, pii_version, key_version, token)
                VALUES (\(tenant.rawValue)::uuid, \(subject.value), \(subject.piiVersion), \(token.keyVersion), \(Data(token.bytes)))
                ON CONFLICT (tenant_id, subject_ref, key_version)
                DO UPDATE SET token = EXCLUDED.token, enrolled_at = now(), last_used_at = now()
                RETURNING 1
            ), completed AS (
                UPDATE verification_sessions SET outcome = 'enrolled', confidence = NULL,
                    biometric_key_version = \(token.keyVersion), completed_at = \(now)
                WHERE id = \(id) AND outcome IS NULL AND consented_at IS NOT NULL RETURNING 1
            )
            SELECT (SELECT count(*) FROM completed)::int
            FROM (SELECT pg_notify(\(TemplateStore.galleryChannel), \(change.payload))) AS announced
            """, logger: Database.quiet)
        for try await completed in rows.decode(Int.self) { return completed == 1 }
        return false
    }

    /// Verify's writes: the subject's templates marked used (as
    /// ``TemplateStore/touch(subject:on:)``) and the session completed with the decision (as
    /// ``complete(_:outcome:confidence:biometricKeyVersion:at:on:)``).
    /// - Returns: whether the session was completed here (false: it was completed already).
    public static func completeVerification(
        _ id: UUID, subject: String, outcome: String, confidence: String?, biometricKeyVersion: Int, at now: Date,
        on connection: DatabaseTransaction
    ) async throws -> Bool {
        let rows = try await connection.query("""
            WITH touched AS (
                UPDATE templates SET last_used_at = now() WHERE subject_ref = \(subject) RETURNING 1
            )
            UPDATE verification_sessions SET outcome = \(outcome), confidence = \(confidence),
                biometric_key_version = \(biometricKeyVersion), completed_at = \(now)
            WHERE id = \(id) AND outcome IS NULL AND consented_at IS NOT NULL RETURNING 1
            """, logger: Database.quiet)
        return try await rows.collect().count == 1
    }
}

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
    /// `enrolled` (as ``complete(_:outcome:confidence:biometricKeyVersion:at:on:)``). No NOTIFY:
    /// the caller announces the change after the commit (``TemplateStore/galleryChannel``).
    /// - Returns: whether the session was completed here (false: it was completed already).
    public static func completeEnrolment(
        _ id: UUID, subject: SubjectReference, token: BiometricToken, seal: RecordSeal, sessionSeal: RecordSeal, tenant: TenantID,
        at now: Date, on connection: DatabaseTransaction
    ) async throws -> Bool {
        let statement = CompleteEnrolment(id: id, subject: subject, token: token, seal: seal, sessionSeal: sessionSeal, tenant: tenant, now: now)
        for try await row in try await connection.execute(statement) { return try row.decode(Int.self) == 1 }
        return false
    }

    /// Verify's writes: the subject's templates marked used (at most once an hour, as migration
    /// 24's `complete_verification`) and the session completed with the decision (as
    /// ``complete(_:outcome:confidence:biometricKeyVersion:at:on:)``).
    /// - Returns: whether the session was completed here (false: it was completed already).
    public static func completeVerification(
        _ id: UUID, subject: String, outcome: String, confidence: String?, biometricKeyVersion: Int, at now: Date,
        seal: RecordSeal, on connection: DatabaseTransaction
    ) async throws -> Bool {
        let statement = CompleteVerification(
            id: id, subject: subject, outcome: outcome, confidence: confidence, biometricKeyVersion: biometricKeyVersion, now: now, seal: seal
        )
        var completed = 0
        for try await _ in try await connection.execute(statement) { completed += 1 }
        return completed == 1
    }

    struct CompleteEnrolment: PreparedStatement {
        static let name = "custos_complete_sealed_enrolment"
        static let bindingDataTypes: [PostgresDataType] = [.text, .text, .int8, .int8, .bytea, .uuid, .timestamptz, .bytea, .int8, .bytea, .int8]
        // Data-modifying CTEs run to completion whether or not the outer query reads them.
        static let sql = """
            WITH stored AS (
                INSERT INTO templates (tenant_id, subject_ref, pii_version, key_version, token, record_mac, record_mac_version)
                VALUES ($1::uuid, $2, $3, $4, $5, $8, $9)
                ON CONFLICT (tenant_id, subject_ref, key_version)
                DO UPDATE SET token = EXCLUDED.token, record_mac = EXCLUDED.record_mac, record_mac_version = EXCLUDED.record_mac_version,
                    enrolled_at = now(), last_used_at = now(), changed_xid = pg_current_xact_id()
                RETURNING 1
            ), completed AS (
                UPDATE verification_sessions SET outcome = 'enrolled', confidence = NULL,
                    biometric_key_version = $4, completed_at = $7, record_mac = $10, record_mac_version = $11
                WHERE id = $6 AND outcome IS NULL AND consented_at IS NOT NULL
                    AND NOT EXISTS (SELECT 1 FROM session_completions c WHERE c.session_id = $6)
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM completed)::int
            """
        let id: UUID
        let subject: SubjectReference
        let token: BiometricToken
        let seal: RecordSeal
        let sessionSeal: RecordSeal
        let tenant: TenantID
        let now: Date

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 11)
            bindings.append(tenant.rawValue)
            bindings.append(subject.value)
            bindings.append(subject.piiVersion)
            bindings.append(token.keyVersion)
            try bindings.append(Data(token.bytes))
            bindings.append(id)
            bindings.append(now)
            try bindings.append(Data(seal.mac))
            bindings.append(seal.macVersion)
            try bindings.append(Data(sessionSeal.mac))
            bindings.append(sessionSeal.macVersion)
            return bindings
        }
    }

    struct CompleteVerification: PreparedStatement {
        static let name = "custos_complete_sealed_verification"
        static let bindingDataTypes: [PostgresDataType] = [.text, .text, .text, .int8, .timestamptz, .uuid, .bytea, .int8]
        static let sql = """
            WITH touched AS (
                UPDATE templates SET last_used_at = now()
                WHERE subject_ref = $1 AND last_used_at < now() - interval '1 hour' RETURNING 1
            )
            UPDATE verification_sessions SET outcome = $2, confidence = $3,
                biometric_key_version = $4, completed_at = $5, record_mac = $7, record_mac_version = $8
            WHERE id = $6 AND outcome IS NULL AND consented_at IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM session_completions c WHERE c.session_id = $6)
            RETURNING 1
            """
        let id: UUID
        let subject: String
        let outcome: String
        let confidence: String?
        let biometricKeyVersion: Int
        let now: Date
        let seal: RecordSeal

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 8)
            bindings.append(subject)
            bindings.append(outcome)
            bindings.append(confidence)
            bindings.append(biometricKeyVersion)
            bindings.append(now)
            bindings.append(id)
            try bindings.append(Data(seal.mac))
            bindings.append(seal.macVersion)
            return bindings
        }
    }
}

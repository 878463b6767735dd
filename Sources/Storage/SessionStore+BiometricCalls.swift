public import CustosModel
public import Foundation
import PostgresNIO

/// Enrol and Verify as one read and one write, each a single statement outside BEGIN and
/// COMMIT: a function of migration 23 that scopes itself to the tenant. The read takes a
/// snapshot and commits nothing; the write locks the session, checks again everything the read
/// let through and writes all or nothing, one commit. Five round trips per call became two,
/// and the features are tokenized between them without a connection held (issue 12).
///
/// What a transaction spanning the call guaranteed, the write re-checks under the session's
/// lock: still open, consented and unexpired; for Enrol, the same subject and still no
/// template; for Verify, the attempt limit. A write that finds the session changed writes
/// nothing and says so (``BiometricWrite/sessionChanged``): the caller runs the call again in a
/// transaction, which names the exact refusal.
extension SessionStore {
    /// How a data-plane write ended.
    public enum BiometricWrite: Sendable, Equatable {
        /// The template (Enrol) or the decision (Verify) and the session's completion committed.
        case completed
        /// Nothing written: the session is no longer open, consented and unexpired, or (Enrol)
        /// names another subject reference than the read did.
        case sessionChanged
        /// Nothing written (Enrol): the subject has a template, enrolled since the read.
        case alreadyEnrolled
        /// Nothing written (Verify): the subject's attempts in the window that started at
        /// `windowStart` reached the limit since the read.
        case tooManyAttempts(windowStart: Date)
        /// Nothing written, no attempt counted: the token's biometric version (Enrol's token,
        /// the version Verify compared under) no longer matches (its overlap closed, or a
        /// rotation without overlap retired it) since the token was made.
        case keyVersionRetired
    }

    /// The session, the attempt this call would count against its subject (this one included;
    /// a window that started at or before `cutoff` starts afresh at `now`) and the subject's
    /// templates, from one snapshot. Writes nothing: run it on a connection outside a
    /// transaction (``Database/withConnection(context:_:)``).
    /// - Returns: `nil` when there is no such session in the tenant's scope.
    public static func readForBiometrics(
        _ id: UUID, tenant: TenantID, now: Date, cutoff: Date, on connection: DatabaseTransaction
    ) async throws -> VerifyOpening? {
        try await VerifyOpening.decode(try await connection.execute(ReadForBiometrics(id: id, tenant: tenant, now: now, cutoff: cutoff)))
    }

    /// Enrol's write: the template of `subject` stored and the session completed as `enrolled`,
    /// if the session is still open for `subject`, the token's biometric version still matches
    /// (``TemplateStore/lockMatchingBiometricVersions(_:tenant:now:on:)``, in the function) and
    /// the subject still has no template, looked for under the subject's lock (two first
    /// enrolments under two versions are serialised: migration 26).
    /// Run it outside a transaction (``Database/withAutocommit(context:_:)``): it is one.
    public static func completeEnrolmentIfOpen(
        _ id: UUID, subject: SubjectReference, token: BiometricToken, seal: RecordSeal, sessionSeal: RecordSeal, tenant: TenantID,
        at now: Date, on connection: DatabaseTransaction
    ) async throws -> BiometricWrite {
        let statement = CompleteEnrolmentIfOpen(
            id: id, subject: subject, token: token, seal: seal, sessionSeal: sessionSeal, tenant: tenant, now: now
        )
        for try await row in try await connection.execute(statement) {
            switch try row.decode(String.self) {
            case "completed": return .completed
            case "already_enrolled": return .alreadyEnrolled
            case "key_version_retired": return .keyVersionRetired
            default: return .sessionChanged
            }
        }
        return .sessionChanged
    }

    /// Verify's write: one attempt counted against the session's subject (refused at
    /// `attemptLimit` within the window after `cutoff`), its templates marked used and the
    /// session completed with the decision, if the session is still open and
    /// `biometricKeyVersion` (the version compared under) still matches, checked under its
    /// lock as Enrol's (migration 26).
    /// Run it outside a transaction (``Database/withAutocommit(context:_:)``): it is one.
    public static func completeVerificationIfOpen(
        _ id: UUID, tenant: TenantID, outcome: String, confidence: String?, biometricKeyVersion: Int,
        at now: Date, cutoff: Date, attemptLimit: Int, seal: RecordSeal, on connection: DatabaseTransaction
    ) async throws -> BiometricWrite {
        let statement = CompleteVerificationIfOpen(
            id: id, tenant: tenant, outcome: outcome, confidence: confidence, biometricKeyVersion: biometricKeyVersion,
            now: now, cutoff: cutoff, attemptLimit: attemptLimit, seal: seal
        )
        for try await row in try await connection.execute(statement) {
            let (status, windowStart) = try row.decode((String, Date?).self)
            switch status {
            case "completed": return .completed
            case "too_many_attempts": return .tooManyAttempts(windowStart: windowStart ?? now)
            case "key_version_retired": return .keyVersionRetired
            default: return .sessionChanged
            }
        }
        return .sessionChanged
    }

    struct ReadForBiometrics: PreparedStatement {
        static let name = "custos_session_and_sealed_templates"
        static let sql = "SELECT * FROM session_and_sealed_templates($1::uuid, $2, $3, $4)"
        static let bindingDataTypes: [PostgresDataType] = [.text, .uuid, .timestamptz, .timestamptz]
        let id: UUID
        let tenant: TenantID
        let now: Date
        let cutoff: Date

        func makeBindings() -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 4)
            bindings.append(tenant.rawValue)
            bindings.append(id)
            bindings.append(now)
            bindings.append(cutoff)
            return bindings
        }
    }

    struct CompleteEnrolmentIfOpen: PreparedStatement {
        static let name = "custos_complete_sealed_enrolment_if_open"
        static let sql = "SELECT complete_enrolment($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        static let bindingDataTypes: [PostgresDataType] = [.text, .uuid, .text, .int8, .int8, .bytea, .timestamptz, .bytea, .int8, .bytea, .int8]
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
            bindings.append(id)
            bindings.append(subject.value)
            bindings.append(subject.piiVersion)
            bindings.append(token.keyVersion)
            try bindings.append(Data(token.bytes))
            bindings.append(now)
            try bindings.append(Data(seal.mac))
            bindings.append(seal.macVersion)
            try bindings.append(Data(sessionSeal.mac))
            bindings.append(sessionSeal.macVersion)
            return bindings
        }
    }

    struct CompleteVerificationIfOpen: PreparedStatement {
        static let name = "custos_complete_sealed_verification_if_open"
        static let sql = "SELECT * FROM complete_verification($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        static let bindingDataTypes: [PostgresDataType] = [.text, .uuid, .text, .text, .int8, .timestamptz, .timestamptz, .int8, .bytea, .int8]
        let id: UUID
        let tenant: TenantID
        let outcome: String
        let confidence: String?
        let biometricKeyVersion: Int
        let now: Date
        let cutoff: Date
        let attemptLimit: Int
        let seal: RecordSeal

        func makeBindings() throws -> PostgresBindings {
            var bindings = PostgresBindings(capacity: 10)
            bindings.append(tenant.rawValue)
            bindings.append(id)
            bindings.append(outcome)
            bindings.append(confidence)
            bindings.append(biometricKeyVersion)
            bindings.append(now)
            bindings.append(cutoff)
            bindings.append(attemptLimit)
            try bindings.append(Data(seal.mac))
            bindings.append(seal.macVersion)
            return bindings
        }
    }
}

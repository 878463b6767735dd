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
/// (migrations 25, 26), with the same key; Verify's inside `complete_verification` (26), since
/// a decision compared against a template the close dropped must not be recorded either.
///
/// A first enrolment also takes its subject's lock exclusively before it looks for the
/// subject's templates: two first enrolments under two versions (the primary key includes the
/// version, so they do not conflict on it) would otherwise both find none and both commit.
/// Every path takes the locks in one order — the session's row, the subject, the version — so
/// a close queued for the version cannot close a cycle.
///
/// The keys are spelled here once for Swift (``subjectLockKey(_:_:)``, ``versionLockKey(_:_:)``);
/// the SQL functions of migrations 25 and 26 spell them the same way and must keep doing so.
extension TemplateStore {
    /// What a template write finds once it holds its locks (``lockForTemplateWrite(subject:keyVersion:tenant:now:on:)``).
    public struct TemplateWriteCheck: Sendable, Equatable {
        /// The version's `bio-prf` key is active, or retiring inside its window.
        public let versionMatches: Bool
        /// The versions the subject has templates under, committed before the locks were granted.
        public let enrolledVersions: [Int]
    }

    /// The subject lock's key (hashed with `hashtextextended(_, 0)`): `complete_enrolment` spells it
    /// `'custos-subject:' || p_tenant::text || '/' || v_subject`.
    static func subjectLockKey(_ tenant: TenantID, _ subject: String) -> String {
        "custos-subject:\(tenant.rawValue)/\(subject)"
    }

    /// The version lock's key (hashed with `hashtextextended(_, 0)`): the SQL functions spell it
    /// `'custos-bio-version:' || p_tenant::text || '/' || p_key_version::text`.
    static func versionLockKey(_ tenant: TenantID, _ version: Int) -> String {
        "custos-bio-version:\(tenant.rawValue)/\(version)"
    }

    /// For an erasure (attack review, session 12): waits for every call that holds one of the
    /// subjects' sessions or subject locks — an Enrol or a Verify that moves a template between
    /// versions, both of which lock the session row, tokenize, then write — and holds both until
    /// the erasure commits, so a template such a call writes is seen and deleted, not left
    /// behind an erasure that counted none. Session rows first (in id order), then the subject
    /// locks (sorted): the order every template write takes them in, so neither waits on the other
    /// in a cycle.
    public static func lockSubjectsForErasure(_ subjects: [String], tenant: TenantID, on connection: DatabaseTransaction) async throws {
        try await connection.run("SELECT 1 FROM verification_sessions WHERE subject_ref = ANY(\(subjects)) ORDER BY id FOR UPDATE")
        let keys = subjects.sorted().map { subjectLockKey(tenant, $0) }
        try await connection.run("""
            SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(\(keys)::text[]) WITH ORDINALITY AS u(k, n) ORDER BY n
            """)
    }

    /// For a template write in a transaction (Enrol's transaction path, the token-level enrol):
    /// takes `subject`'s lock exclusively, then `keyVersion`'s shared, for the rest of the
    /// transaction, and reads what the write must re-check in a snapshot taken after both were
    /// granted. Two statements: a check in the lock's own statement would read a snapshot from before the wait.
    public static func lockForTemplateWrite(
        subject: String, keyVersion: Int, tenant: TenantID, now: Date, on connection: DatabaseTransaction
    ) async throws -> TemplateWriteCheck {
        // OFFSET 0 keeps the subquery from being flattened: its lock is taken before the outer one.
        try await connection.run("""
            SELECT pg_advisory_xact_lock_shared(hashtextextended(\(versionLockKey(tenant, keyVersion)), 0))
            FROM (SELECT pg_advisory_xact_lock(hashtextextended(\(subjectLockKey(tenant, subject)), 0)) OFFSET 0) AS subject_lock
            """)
        let query: PostgresQuery = """
            SELECT (SELECT count(*) FROM key_versions k
                    WHERE k.tenant_id = \(tenant.rawValue)::uuid AND k.purpose = 'bio-prf' AND k.version = \(keyVersion)
                        AND (k.state = 'active' OR (k.state = 'retiring' AND k.retiring_until > \(now))))::int,
                coalesce((SELECT array_agg(t.key_version::int8 ORDER BY t.key_version) FROM templates t
                    WHERE t.tenant_id = \(tenant.rawValue)::uuid AND t.subject_ref = \(subject)), '{}')
            """
        for try await (matching, versions) in try await connection.query(query, logger: Database.quiet).decode((Int, [Int]).self) {
            return TemplateWriteCheck(versionMatches: matching > 0, enrolledVersions: versions)
        }
        return TemplateWriteCheck(versionMatches: false, enrolledVersions: [])
    }

    /// Takes the locks of `versions` shared (ascending) for the rest of the transaction, then
    /// tells which of them still match: their `bio-prf` key active, or retiring inside its
    /// window at `now`. One call (migration 28's function, whose check reads a snapshot taken
    /// after the waits): the overlap Verify locks the version it compared under and the one it
    /// moves the subject to together.
    public static func lockMatchingBiometricVersions(_ versions: [Int], tenant: TenantID, now: Date, on connection: DatabaseTransaction) async throws -> Set<Int> {
        let query: PostgresQuery = "SELECT lock_matching_biometric_versions(\(tenant.rawValue)::uuid, \(versions)::int8[], \(now))"
        for try await matching in try await connection.query(query, logger: Database.quiet).decode([Int].self) {
            return Set(matching)
        }
        return []
    }

    /// Takes `keyVersion`'s lock exclusively for the rest of the transaction (the close of its
    /// overlap, before the keys are retired and the templates dropped): template writes under
    /// it in flight commit first, later ones see the version retired.
    public static func lockBiometricVersionForClose(_ keyVersion: Int, tenant: TenantID, on connection: DatabaseTransaction) async throws {
        try await connection.run("SELECT pg_advisory_xact_lock(hashtextextended(\(versionLockKey(tenant, keyVersion)), 0))")
    }
}

public import CustosModel
public import Foundation
import PostgresNIO

/// Moves a subject's stored references to another reference (the active `pii` version's), in
/// the caller's tenant transaction: `templates` (subject_ref, pii_version: read and locked here,
/// moved by the caller with their new MACs), `verification_sessions`
/// (subject_ref, pii_version) and `verification_attempts` (merged). Every table keyed by a
/// subject reference is here; `gateway_links` name sessions, the audit log names no subject.
public enum SubjectReferenceStore {
    /// What a move changed.
    public struct Moved: Sendable {
        /// Templates to move to the new reference (``templatesToMove``).
        public let templates: Int
        /// Templates dropped because the subject had one of the same biometric version under a
        /// newer reference (a primary key allows one per subject and version).
        public let duplicateTemplates: Int
        public let sessions: Int
        /// Attempt counters merged into the new reference's.
        public let attemptCounters: Int
        /// The biometric versions of the templates to move (to announce to the 1:N galleries).
        public let keyVersions: [Int]
        /// The templates still to move, each with the reference it is under, locked: their MACs
        /// cover it, so the caller checks each, seals it under the new reference and moves it
        /// with its new MAC in one statement (``TemplateStore/move(_:from:to:seal:on:)``).
        public let templatesToMove: [(from: String, template: StoredTemplate)]
        /// The sessions moved, with the reference each was under (their subject MACs cover it).
        public let movedSessions: [(from: String, id: UUID, expiresAt: Date, seal: RecordSeal?)]

        public var isEmpty: Bool { templates + duplicateTemplates + sessions + attemptCounters == 0 }
    }

    /// Moves every session and attempt counter stored under one of `old` to `new`, drops the
    /// templates a move would duplicate, and reads and locks the others for the caller to move
    /// (``Moved/templatesToMove``).
    ///
    /// Concurrent moves of one subject are serialised by an advisory lock on the new reference,
    /// so they cannot deadlock on each other's rows; the second finds nothing left to move.
    public static func move(from old: [String], to new: SubjectReference, tenant: TenantID, on connection: DatabaseTransaction) async throws -> Moved {
        let old = old.filter { $0 != new.value }
        guard !old.isEmpty else { return Moved(templates: 0, duplicateTemplates: 0, sessions: 0, attemptCounters: 0, keyVersions: [], templatesToMove: [], movedSessions: []) }
        try await connection.run("SELECT pg_advisory_xact_lock(hashtextextended(\("custos-subject-move:" + tenant.rawValue + "/" + new.value), 0))")
        // Sessions first: a verification locks its session, then touches the template, so a
        // move taking the template first and then waiting for that session would deadlock.
        var movedSessions = [(from: String, id: UUID, expiresAt: Date, seal: RecordSeal?)]()
        let sessionRows = try await connection.query("""
            UPDATE verification_sessions s SET subject_ref = \(new.value), pii_version = \(new.piiVersion)
            FROM (SELECT id, subject_ref FROM verification_sessions WHERE subject_ref = ANY(\(old))) AS o
            WHERE s.id = o.id
            RETURNING o.subject_ref, s.id, s.expires_at, s.subject_mac, s.subject_mac_version
            """, logger: Database.quiet)
        for try await (from, id, expiresAt, mac, macVersion) in sessionRows.decode((String, UUID, Date, Data?, Int?).self) {
            movedSessions.append((from, id, expiresAt, RecordSeal(mac: mac, macVersion: macVersion)))
        }
        let sessions = movedSessions.count
        // One template per subject and biometric version: the newest enrolment wins (the new
        // reference's first, else the most recently enrolled old one).
        let duplicates = try await connection.query("""
            DELETE FROM templates o WHERE o.subject_ref = ANY(\(old)) AND EXISTS (
                SELECT 1 FROM templates x WHERE x.key_version = o.key_version AND (
                    x.subject_ref = \(new.value)
                    OR (x.subject_ref = ANY(\(old)) AND (x.enrolled_at, x.subject_ref) > (o.enrolled_at, o.subject_ref))))
            RETURNING 1
            """, logger: Database.quiet).collect().count
        var templatesToMove = [(from: String, template: StoredTemplate)]()
        let toMove = try await connection.query("""
            SELECT subject_ref, key_version, token, record_mac, record_mac_version FROM templates
            WHERE subject_ref = ANY(\(old)) ORDER BY subject_ref, key_version FOR UPDATE
            """, logger: Database.quiet)
        for try await (from, version, bytes, mac, macVersion) in toMove.decode((String, Int, Data, Data?, Int?).self) {
            templatesToMove.append((from, StoredTemplate(keyVersion: version, bytes: Array(bytes), seal: RecordSeal(mac: mac, macVersion: macVersion))))
        }
        let keyVersions = templatesToMove.map(\.template.keyVersion)
        // Counters add up (a move must not hand a subject a fresh attempt window), from the
        // earliest window.
        try await connection.query("""
            INSERT INTO verification_attempts AS a (tenant_id, subject_ref, window_start, attempts)
            SELECT tenant_id, \(new.value), min(window_start), sum(attempts)::int FROM verification_attempts
            WHERE subject_ref = ANY(\(old)) GROUP BY tenant_id
            ON CONFLICT (tenant_id, subject_ref) DO UPDATE SET
                attempts = a.attempts + EXCLUDED.attempts, window_start = LEAST(a.window_start, EXCLUDED.window_start)
            """, logger: Database.quiet)
        let counters = try await VerificationAttemptStore.delete(subjects: old, on: connection)
        return Moved(
            templates: keyVersions.count, duplicateTemplates: duplicates, sessions: sessions, attemptCounters: counters,
            keyVersions: keyVersions.sorted(), templatesToMove: templatesToMove, movedSessions: movedSessions
        )
    }
}

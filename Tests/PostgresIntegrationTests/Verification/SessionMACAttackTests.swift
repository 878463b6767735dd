import Composition
@testable import Custody  // KeyStateAnchor.label: the list a restored token lacks
import CustosModel
import Foundation
import HSM
import PKCS11
import PostgresNIO
@testable import Storage  // DatabaseTransaction.query: the database writer's statements
import Testing
import Tokenization
import Verification

/// helper-71 F3 (second half) and helper-80 F1, F2: with the service role's password alone, a
/// session's consent or outcome could be written directly (GetSession then showed GREEN and
/// SignDelivery signed it), and an open session pointed at another subject made Enrol seal an
/// impostor's token under that subject. Sessions now carry two MACs (migration 33): one over
/// subject and expiry from creation, one over consent and outcome.
@Suite("Session MACs: a consent, an outcome or a subject the database's writer set is never relied on")
struct SessionMACAttackTests {
    static let face = PIIReferenceMigrationTests.face
    static let impostorFace = PIIReferenceMigrationTests.otherFace

    static func asDatabaseWriter(_ verification: VerificationHarness, _ tenant: TenantID, _ sql: PostgresQuery) async throws {
        try await TemplateMACAttackTests.asDatabaseWriter(verification, tenant, sql)
    }

    /// A harness whose list is marked as `serve` marks it at start (the database was created
    /// with record MACs), and one tenant.
    static func marked(_ name: String, operationTimeout: Duration? = nil) async throws -> (VerificationHarness, TenantID) {
        let verification = try await VerificationHarness.make(name, operationTimeout: operationTimeout)
        try await verification.custody.keyring.reconcileRecordSeals()
        return (verification, try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id)
    }

    static func expectSessionRefused(_ session: UUID, _ comment: Comment, _ body: () async throws -> Void) async {
        do {
            try await body()
            Issue.record("relied on a session the database's writer changed: \(comment)")
        } catch let error as RecordIntegrityError {
            #expect(error == .session(session), "\(comment)")
        } catch {
            Issue.record("refused for another reason (\(error)): \(comment)")
        }
    }

    @Test("A session pointed at another subject is refused: Enrol seals no impostor's token under it, Verify compares nothing")
    func redirectedSession() async throws {
        let (verification, tenant) = try await Self.marked("smac_redirect")
        let victim = try await verification.flow.enrol(
            tenant: tenant, session: try await verification.consentedSession(tenant, "victim"), features: try FeatureVector(Self.face)
        ).subject.value
        // Enrol: a throwaway's session pointed at the victim, whose template the writer deleted.
        let throwaway = try await verification.consentedSession(tenant, "throwaway")
        try await Self.asDatabaseWriter(verification, tenant, """
            UPDATE verification_sessions SET subject_ref = \(victim) WHERE id = \(throwaway)
            """)
        try await Self.asDatabaseWriter(verification, tenant, "DELETE FROM templates WHERE subject_ref = \(victim)")
        await Self.expectSessionRefused(throwaway, "Enrol on a redirected session") {
            _ = try await verification.flow.enrol(tenant: tenant, session: throwaway, features: try FeatureVector(Self.impostorFace))
        }
        #expect(try await verification.count("templates", tenant: tenant) == 0, "a template was written for the victim")

        // Verify: the victim's session pointed at the impostor, enrolled meanwhile.
        let impostor = try await verification.flow.enrol(
            tenant: tenant, session: try await verification.consentedSession(tenant, "impostor"), features: try FeatureVector(Self.impostorFace)
        ).subject.value
        let session = try await verification.consentedSession(tenant, "victim-2")
        try await Self.asDatabaseWriter(verification, tenant, "UPDATE verification_sessions SET subject_ref = \(impostor) WHERE id = \(session)")
        await Self.expectSessionRefused(session, "Verify on a redirected session") {
            _ = try await verification.flow.verify(tenant: tenant, session: session, features: try FeatureVector(Self.impostorFace))
        }
        await verification.custody.shutdown()
    }

    @Test("An outcome written by the database's writer is neither shown (GetSession, SignDelivery's source) nor exported")
    func forgedOutcome() async throws {
        let (verification, tenant) = try await Self.marked("smac_outcome")
        _ = try await verification.flow.enrol(
            tenant: tenant, session: try await verification.consentedSession(tenant, "cand"), features: try FeatureVector(Self.face)
        )
        let session = try await verification.consentedSession(tenant, "cand")
        let decision = try await verification.flow.verify(tenant: tenant, session: session, features: try FeatureVector(Self.impostorFace))
        #expect(decision.color != .green, "precondition: the other face is not the candidate's")
        #expect(try await verification.sessions.status(tenant: tenant, session: session).outcome?.rawValue == decision.color.rawValue)

        try await Self.asDatabaseWriter(verification, tenant, """
            UPDATE verification_sessions SET outcome = 'green', confidence = 'high' WHERE id = \(session)
            """)
        await Self.expectSessionRefused(session, "GetSession of a forged GREEN") {
            _ = try await verification.sessions.status(tenant: tenant, session: session)
        }
        await Self.expectSessionRefused(session, "an export holding a forged GREEN") {
            _ = try await verification.rights.export(tenant: tenant, externalID: PersonalText("cand"), actor: "dpo")
        }
        await verification.custody.shutdown()
    }

    @Test("A consent written by the database's writer lets no features in: Enrol refuses before tokenizing, nothing is written")
    func forgedConsent() async throws {
        let (verification, tenant) = try await Self.marked("smac_consent")
        let created = try await verification.sessions.create(tenant: tenant, externalID: PersonalText("cand"), name: nil, email: nil)
        let session = try await verification.sessions.openGateway(tenant: tenant, link: created.gatewayLink)
        try await Self.asDatabaseWriter(verification, tenant, """
            UPDATE verification_sessions SET notice_version = 'custos-notice-1', consented_at = now() WHERE id = \(session)
            """)
        await Self.expectSessionRefused(session, "Enrol after a forged consent") {
            _ = try await verification.flow.enrol(tenant: tenant, session: session, features: try FeatureVector(Self.face))
        }
        #expect(try await verification.count("templates", tenant: tenant) == 0)
        await verification.custody.shutdown()
    }

    @Test("A list that lost its mark gets it back from the officer's audited sealing: a row without a MAC planted meanwhile stays refused")
    func markRestoredFromAudit() async throws {
        let verification = try await VerificationHarness.make("smac_restore")
        let keyring = verification.custody.keyring
        // An upgraded database (not created with record MACs): its officer sealed it.
        try await verification.custody.ownerSQL(tenant: nil, "UPDATE record_seal_origin SET created_with_record_macs = false")
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let pair = try await TemplateMACAttackTests.enrolPair(verification, tenant)
        _ = try await keyring.sealUnsealedRecords(actor: "officer")

        // The list lost (a token restored from shares has none) and rebuilt without the mark;
        // the writer plants the impostor's token without a MAC on the victim's row.
        _ = try await verification.custody.pool.tokenPools[0].withPersistentSession { session in
            for handle in try session.findObjects([.class(.data), .label(KeyStateAnchor.label)]) { try session.destroyObject(handle) }
        }
        _ = try await keyring.reconcile()
        try await TemplateMACAttackTests.copyImpostorToken(verification, tenant, pair, mac: .dropped)
        try await keyring.reconcileRecordSeals()
        TemplateMACAttackTests.expectRefused(
            try await TemplateMACAttackTests.impostorVerifiesAsVictim(verification, tenant).1, "a row without a MAC passed after the list was rebuilt"
        )
        await verification.custody.shutdown()
    }

    static func recordMAC(_ verification: VerificationHarness, _ tenant: TenantID, _ session: UUID) async throws -> Data? {
        try await verification.custody.service.withTenant(tenant, context: "test: read record MAC") { connection in
            try await connection.query("SELECT record_mac FROM verification_sessions WHERE id = \(session)", logger: Database.quiet)
                .collect().first!.decode(Data?.self)
        }
    }

    @Test("A completed session stays completed: with its outcome cleared, or set back to its consented state and MAC, it is neither consented nor completed again")
    func reopenedSessionStaysCompleted() async throws {
        let (verification, tenant) = try await Self.marked("smac_reopen")
        _ = try await verification.flow.enrol(
            tenant: tenant, session: try await verification.consentedSession(tenant, "carol"), features: try FeatureVector(Self.face)
        )
        let session = try await verification.consentedSession(tenant, "carol")
        let consentedMAC = try #require(try await Self.recordMAC(verification, tenant, session))
        let red = try await verification.flow.verify(tenant: tenant, session: session, features: try FeatureVector(Self.impostorFace))
        #expect(red.color != .green, "precondition")

        // Outcome cleared: a fresh consent is refused as the completion it is.
        try await Self.asDatabaseWriter(verification, tenant, """
            UPDATE verification_sessions SET outcome = NULL, confidence = NULL, biometric_key_version = NULL, completed_at = NULL WHERE id = \(session)
            """)
        await #expect(throws: VerificationError.sessionCompleted(session)) {
            _ = try await verification.sessions.recordConsent(tenant: tenant, session: session, noticeVersion: "custos-notice-1")
        }
        // Set back to its consented state with that state's own, genuine MAC: Verify compares
        // (the row is as Custos once wrote it) but records nothing, and answers that it is completed.
        try await Self.asDatabaseWriter(verification, tenant, """
            UPDATE verification_sessions SET record_mac = \(consentedMAC) WHERE id = \(session)
            """)
        await #expect(throws: VerificationError.sessionCompleted(session)) {
            _ = try await verification.flow.verify(tenant: tenant, session: session, features: try FeatureVector(Self.face))
        }
        // Nor shown as open (helper-82): GetSession and SignDelivery see the completion it lost.
        await Self.expectSessionRefused(session, "GetSession of a completed session shown as consented") {
            _ = try await verification.sessions.status(tenant: tenant, session: session)
        }
        #expect(try await TemplateMACAttackTests.outcome(verification, tenant, session) == nil, "a second outcome was recorded for a completed session")
        await verification.custody.shutdown()
    }

    @Test("The officer's sealing reads every row once, past rows the writer planted ahead of the real ones: the real ones are sealed, not refused")
    func sealingReadsEveryRow() async throws {
        let verification = try await VerificationHarness.make("smac_sealpass")
        let keyring = verification.custody.keyring
        try await verification.custody.ownerSQL(tenant: nil, "UPDATE record_seal_origin SET created_with_record_macs = false")
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await verification.flow.enrol(
            tenant: tenant, session: try await verification.consentedSession(tenant, "erin"), features: try FeatureVector(Self.face)
        )
        let session = try await verification.consentedSession(tenant, "erin")
        _ = try await verification.flow.verify(tenant: tenant, session: session, features: try FeatureVector(Self.face))
        // As a session completed before migration 33 (the owner strips its MACs).
        try await verification.custody.ownerSQL(tenant: tenant, """
            UPDATE verification_sessions SET record_mac = NULL, record_mac_version = NULL, subject_mac = NULL, subject_mac_version = NULL WHERE id = \(session)
            """)
        // The writer plants 500 rows without MACs that sort first, with far-future times (helper-82).
        try await Self.asDatabaseWriter(verification, tenant, """
            INSERT INTO verification_sessions (id, tenant_id, subject_ref, pii_version, expires_at, link_opened_at, consented_at)
            SELECT ('00000000-0000-0000-0000-' || lpad(g::text, 12, '0'))::uuid, \(tenant.rawValue)::uuid, 'planted', 1,
                '5000-01-01 00:00:00.999999+00', '5000-01-01 00:00:00.999999+00', '5000-01-01 00:00:00.999999+00'
            FROM generate_series(1, 500) AS g
            """)
        _ = try await keyring.sealUnsealedRecords(actor: "officer")
        #expect(try await verification.sessions.status(tenant: tenant, session: session).outcome == .green, "the real session was left unsealed")
        await verification.custody.shutdown()
    }

    @Test("Identify checks the session again when it records the outcome: a consent changed while the gallery was read is not sealed")
    func identifyRechecksConsent() async throws {
        let (verification, tenant) = try await Self.marked("smac_identify")
        _ = try await verification.flow.enrol(
            tenant: tenant, session: try await verification.consentedSession(tenant, "dora"), features: try FeatureVector(Self.face)
        )
        let session = try await verification.consentedSession(tenant, "walk-in")
        let identify = try await verification.custody.service.withTenant(tenant, context: "test: writer holding templates") { connection in
            // The writer holds the templates (it may: it can delete from them) while Identify reads the gallery.
            try await connection.query("LOCK TABLE templates IN ACCESS EXCLUSIVE MODE", logger: Database.quiet)
            let identify = Task {
                try await Database.allowingSecondConnection {
                    try await verification.flow.identify(tenant: tenant, session: session, features: try FeatureVector(Self.face), top: 1)
                }
            }
            #expect(try await verification.someoneWaitsOnALock(), "Identify never waited for the templates")
            try await connection.query("""
                UPDATE verification_sessions SET notice_version = 'forged-notice', consented_at = '2001-02-03 04:05:06+00' WHERE id = \(session)
                """, logger: Database.quiet)
            return identify
        }
        await Self.expectSessionRefused(session, "Identify sealed a consent the writer changed") { _ = try await identify.value }
        await Self.expectSessionRefused(session, "GetSession after it") { _ = try await verification.sessions.status(tenant: tenant, session: session) }
        await verification.custody.shutdown()
    }

    static func sealEntries(_ verification: VerificationHarness) async throws -> Int {
        try await verification.custody.service.withTransaction(context: "test: count entries") { connection in
            try await connection.query("SELECT count(*)::int8 FROM audit_log WHERE action = 'records.seal'", logger: Database.quiet)
                .collect().first!.decode(Int.self)
        }
    }

    @Test("Once every record is sealed, the officer's sealing seals nothing: rows without a MAC planted since stay refused")
    func sealingAfterTheMarkSealsNothing() async throws {
        let (verification, tenant) = try await Self.marked("smac_aftermark")
        let pair = try await TemplateMACAttackTests.enrolPair(verification, tenant)
        try await TemplateMACAttackTests.copyImpostorToken(verification, tenant, pair, mac: .dropped)

        let sealed = try await verification.custody.keyring.sealUnsealedRecords(actor: "officer")
        #expect(sealed.alreadySealed && sealed.templates == 0 && sealed.sessions == 0, "rows were sealed after the mark: \(sealed)")
        #expect(sealed.tenantsLeft == 1, "the planted row is reported")
        TemplateMACAttackTests.expectRefused(
            try await TemplateMACAttackTests.impostorVerifiesAsVictim(verification, tenant).1, "a planted row was sealed after the mark"
        )
        await verification.custody.shutdown()
    }

    @Test("A marked list without its audit entry (a crash between the list and the commit) gets the entry at the next start")
    func missingEntryWrittenAgain() async throws {
        let verification = try await VerificationHarness.make("smac_entry")
        let keyring = verification.custody.keyring
        try await verification.custody.ownerSQL(tenant: nil, "UPDATE record_seal_origin SET created_with_record_macs = false")
        // The list marked, and the transaction that was to append the entry never committed.
        try await verification.custody.service.withTransaction(context: "test: list only") { connection in
            try await keyring.changeAnchoredStates(on: connection, scopedTo: nil, actor: "test") { $0.recordsSealed = true }
        }
        #expect(try await Self.sealEntries(verification) == 0)
        try await keyring.reconcileRecordSeals()
        #expect(try await keyring.audit.hasAuthenticEntry(action: .recordsSeal), "the mark still has no entry to be restored from")
        await verification.custody.shutdown()
    }

    @Test("Two instances marking a new database at once write one audit entry")
    func oneEntryForTwoStarts() async throws {
        let verification = try await VerificationHarness.make("smac_twostarts")
        let keyring = verification.custody.keyring
        async let first: Void = keyring.reconcileRecordSeals()
        async let second: Void = keyring.reconcileRecordSeals()
        _ = try await (first, second)
        #expect(try await Self.sealEntries(verification) == 1)
        await verification.custody.shutdown()
    }
}

import Composition
import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage  // DatabaseTransaction.query: the database writer's statements
import Testing
import Tokenization
import Verification

/// helper-71 F3: with the service role's password alone, one subject's token could be copied
/// onto another's row, and the impostor enrolled under the first then verified GREEN as the
/// second. Each template now carries an HSM MAC over tenant, subject reference, version and
/// token (migration 33), checked before every comparison.
@Suite("Template MACs: a token the database's writer moved or changed is never compared")
struct TemplateMACAttackTests {
    static let face = PIIReferenceMigrationTests.face
    static let impostorFace = PIIReferenceMigrationTests.otherFace

    /// The victim and the impostor enrolled through the session flow.
    static func enrolPair(_ verification: VerificationHarness, _ tenant: TenantID) async throws -> (victim: String, impostor: String) {
        let victim = try await verification.flow.enrol(
            tenant: tenant, session: try await verification.consentedSession(tenant, "victim"), features: try FeatureVector(face)
        ).subject.value
        let impostor = try await verification.flow.enrol(
            tenant: tenant, session: try await verification.consentedSession(tenant, "impostor"), features: try FeatureVector(impostorFace)
        ).subject.value
        return (victim, impostor)
    }

    /// `sql` as the service role in the tenant's scope: its password is all the attack has.
    static func asDatabaseWriter(_ verification: VerificationHarness, _ tenant: TenantID, _ sql: PostgresQuery) async throws {
        _ = try await verification.custody.service.withTenant(tenant, context: "test: database writer") { connection in
            try await connection.query(sql, logger: Database.quiet)
        }
    }

    /// What becomes of the victim's MAC when the impostor's token is written onto its row.
    enum CopiedMAC {
        /// The impostor's MAC comes along.
        case impostors
        /// The row is left without a MAC.
        case dropped
        /// The victim's MAC stays: the table refuses that change since migration 34 (it
        /// withdraws the MAC it keeps), unless its triggers are off.
        case kept
    }

    /// The impostor's token written onto the victim's row, with `mac`.
    static func copyImpostorToken(
        _ verification: VerificationHarness, _ tenant: TenantID, _ pair: (victim: String, impostor: String), mac: CopiedMAC,
        triggersOff: Bool = false
    ) async throws {
        let sql: PostgresQuery = switch mac {
        case .impostors: """
            UPDATE templates v SET token = i.token, record_mac = i.record_mac, record_mac_version = i.record_mac_version
            FROM templates i WHERE v.subject_ref = \(pair.victim) AND i.subject_ref = \(pair.impostor) AND i.key_version = v.key_version
            """
        case .dropped: """
            UPDATE templates v SET token = i.token, record_mac = NULL, record_mac_version = NULL
            FROM templates i WHERE v.subject_ref = \(pair.victim) AND i.subject_ref = \(pair.impostor) AND i.key_version = v.key_version
            """
        case .kept: """
            UPDATE templates v SET token = i.token
            FROM templates i WHERE v.subject_ref = \(pair.victim) AND i.subject_ref = \(pair.impostor) AND i.key_version = v.key_version
            """
        }
        if triggersOff {
            try await asOwnerWithoutTriggers(verification, tenant, sql)
        } else {
            try await asDatabaseWriter(verification, tenant, sql)
        }
    }

    /// `sql` as the schema owner in the tenant's scope with `templates`' triggers off: the
    /// changes the table refuses to the service role (migration 34), to show that the MAC check
    /// behind it refuses them too.
    static func asOwnerWithoutTriggers(_ verification: VerificationHarness, _ tenant: TenantID, _ sql: PostgresQuery) async throws {
        try await verification.custody.owner.withTransaction(context: "test: owner without triggers") { connection in
            try await connection.query("SELECT set_config('app.tenant_id', \(tenant.rawValue), true)", logger: Database.quiet)
            try await connection.query("ALTER TABLE templates DISABLE TRIGGER USER", logger: Database.quiet)
            try await connection.query(sql, logger: Database.quiet)
            try await connection.query("ALTER TABLE templates ENABLE TRIGGER USER", logger: Database.quiet)
        }
    }

    /// The impostor's face sent for a fresh session of the victim.
    static func impostorVerifiesAsVictim(_ verification: VerificationHarness, _ tenant: TenantID) async throws -> (UUID, Result<Decision, any Error>) {
        let session = try await verification.consentedSession(tenant, "victim")
        do {
            return (session, .success(try await verification.flow.verify(tenant: tenant, session: session, features: try FeatureVector(impostorFace))))
        } catch {
            return (session, .failure(error))
        }
    }

    static func outcome(_ verification: VerificationHarness, _ tenant: TenantID, _ session: UUID) async throws -> String? {
        try await verification.custody.owner.withTransaction(context: "test: read outcome") { connection in
            try await connection.query("SELECT set_config('app.tenant_id', \(tenant.rawValue), true)", logger: Database.quiet)
            return try await connection.query(
                "SELECT outcome FROM verification_sessions WHERE id = \(session)", logger: Database.quiet
            ).collect().first!.decode(String?.self)
        }
    }

    static func expectRefused(_ result: Result<Decision, any Error>, _ comment: Comment) {
        switch result {
        case .success(let decision): Issue.record("compared and answered \(decision.color): \(comment)")
        case .failure(let error): #expect(error as? RecordIntegrityError != nil, "refused for another reason (\(error)): \(comment)")
        }
    }

    @Test("A token copied onto another subject's row, MAC and all, is not compared: the impostor does not verify as the subject, and the session stays open")
    func copiedToken() async throws {
        let (verification, tenant) = try await SessionMACAttackTests.marked("tmac_copy")
        let pair = try await Self.enrolPair(verification, tenant)
        let (_, before) = try await Self.impostorVerifiesAsVictim(verification, tenant)
        #expect((try? before.get())?.color != .green, "precondition: the impostor's face is not the victim's")

        try await Self.copyImpostorToken(verification, tenant, pair, mac: .impostors)
        let (session, after) = try await Self.impostorVerifiesAsVictim(verification, tenant)
        Self.expectRefused(after, "the victim's row holds the impostor's token")
        #expect(try await Self.outcome(verification, tenant, session) == nil, "an outcome was recorded for a refused comparison")
        await verification.custody.shutdown()
    }

    @Test("A token changed in place under its own MAC, and a MAC naming a key version the token does not hold, are refused as forged (not as an HSM outage)")
    func changedInPlace() async throws {
        let (verification, tenant) = try await SessionMACAttackTests.marked("tmac_inplace")
        let pair = try await Self.enrolPair(verification, tenant)
        // The table refuses the change to the service role (migration 34); made anyway (its
        // triggers off), the MAC check refuses the row.
        await TemplateReplayAttackTests.expectWithdrawn("a token changed under the MAC it keeps") {
            try await Self.copyImpostorToken(verification, tenant, pair, mac: .kept)
        }
        try await Self.copyImpostorToken(verification, tenant, pair, mac: .kept, triggersOff: true)
        Self.expectRefused(try await Self.impostorVerifiesAsVictim(verification, tenant).1, "the token was changed in place")

        try await Self.copyImpostorToken(verification, tenant, pair, mac: .impostors, triggersOff: true)
        try await Self.asOwnerWithoutTriggers(verification, tenant, "UPDATE templates SET record_mac_version = 999 WHERE subject_ref = \(pair.victim)")
        Self.expectRefused(try await Self.impostorVerifiesAsVictim(verification, tenant).1, "the MAC names root MAC key v999")
        await verification.custody.shutdown()
    }

    @Test("Verify checks the session's MACs and the template's in one HSM round trip, and still names which failed")
    func batchedCheckNamesTheForgery() async throws {
        let (verification, tenant) = try await SessionMACAttackTests.marked("tmac_batch")
        let pair = try await Self.enrolPair(verification, tenant)
        let version = try await verification.custody.service.withTenant(tenant, context: "test: read version") { connection in
            try await connection.query("SELECT key_version FROM templates WHERE subject_ref = \(pair.victim)", logger: Database.quiet)
                .collect().first!.decode(Int.self)
        }
        try await Self.copyImpostorToken(verification, tenant, pair, mac: .impostors)
        let (_, templateForged) = try await Self.impostorVerifiesAsVictim(verification, tenant)
        #expect(throws: RecordIntegrityError.template(keyVersion: version), "the template alone is forged") { try templateForged.get() }

        // Both forged: the session is named (its consent is what the comparison would rely on first).
        let session = try await verification.consentedSession(tenant, "victim")
        try await Self.asDatabaseWriter(verification, tenant, "UPDATE verification_sessions SET record_mac_version = 999 WHERE id = \(session)")
        await #expect(throws: RecordIntegrityError.session(session), "the session's consent is forged too") {
            try await verification.flow.verify(tenant: tenant, session: session, features: try FeatureVector(Self.impostorFace))
        }
        #expect(try await Self.outcome(verification, tenant, session) == nil)
        await verification.custody.shutdown()
    }

    @Test("A forged template of a version never compared refuses nothing: the subject still verifies (helper-85)")
    func forgedUncomparedVersion() async throws {
        let (verification, tenant) = try await SessionMACAttackTests.marked("tmac_uncompared")
        let pair = try await Self.enrolPair(verification, tenant)
        // A copy of the victim's own row, MAC and all, under a version the tenant never had.
        try await Self.asDatabaseWriter(verification, tenant, """
            INSERT INTO templates (tenant_id, subject_ref, pii_version, key_version, token, record_mac, record_mac_version)
            SELECT tenant_id, subject_ref, pii_version, 999, token, record_mac, record_mac_version FROM templates WHERE subject_ref = \(pair.victim)
            """)
        let session = try await verification.consentedSession(tenant, "victim")
        #expect(try await verification.flow.verify(tenant: tenant, session: session, features: try FeatureVector(Self.face)).color == .green)
        await verification.custody.shutdown()
    }

    @Test("Identification does not return a subject whose row holds another subject's token")
    func identifyDropsCopiedToken() async throws {
        let (verification, tenant) = try await SessionMACAttackTests.marked("tmac_identify")
        let pair = try await Self.enrolPair(verification, tenant)
        try await Self.copyImpostorToken(verification, tenant, pair, mac: .impostors)

        let session = try await verification.consentedSession(tenant, "walk-in")
        let found = try await verification.flow.identify(tenant: tenant, session: session, features: try FeatureVector(Self.impostorFace), top: 5)
        #expect(found.first?.subject == pair.impostor, "the impostor's own, authentic template is still found")
        #expect(!found.contains { $0.subject == pair.victim }, "the victim was returned for the impostor's face")
        await verification.custody.shutdown()
    }

    @Test("On an upgraded database, rows without a MAC count until the officer seals them; afterwards a MAC dropped by the database's writer is refused")
    func legacyRowsThenSealed() async throws {
        let verification = try await VerificationHarness.make("tmac_legacy")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        // An upgraded database, whose rows written before migration 33 have no MAC.
        try await verification.custody.ownerSQL(tenant: nil, "UPDATE record_seal_origin SET created_with_record_macs = false")
        let pair = try await Self.enrolPair(verification, tenant)
        try await Self.asDatabaseWriter(verification, tenant, "UPDATE templates SET record_mac = NULL, record_mac_version = NULL")
        // Rows that never had a MAC: nothing of theirs was withdrawn (migration 34).
        try await verification.custody.ownerSQL(tenant: nil, "DELETE FROM withdrawn_template_macs WHERE tenant_id = \(tenant.rawValue)::uuid")
        // Start-up leaves the mark to the officer on an upgraded database: they still verify.
        try await keyring.reconcileRecordSeals()
        let own = try await verification.flow.verify(
            tenant: tenant, session: try await verification.consentedSession(tenant, "victim"), features: try FeatureVector(Self.face)
        )
        #expect(own.color == .green, "a template written before MACs stopped verifying before the officer sealed it")

        let sealed = try await keyring.sealUnsealedRecords(actor: "officer")
        #expect(sealed.templates == 2)
        #expect(sealed.tenantsLeft == 0, "rows without a MAC left after sealing")
        #expect(try await keyring.sealUnsealedRecords(actor: "officer").templates == 0, "sealing twice found rows to seal")
        let afterSealing = try await verification.flow.verify(
            tenant: tenant, session: try await verification.consentedSession(tenant, "victim"), features: try FeatureVector(Self.face)
        )
        #expect(afterSealing.color == .green, "the sealed template no longer verifies")

        try await Self.copyImpostorToken(verification, tenant, pair, mac: .dropped)
        Self.expectRefused(try await Self.impostorVerifiesAsVictim(verification, tenant).1, "a row without a MAC passed after every template was sealed")
        await verification.custody.shutdown()
    }

    @Test("Start-up marks a database created with record MACs: a MAC dropped afterwards is refused, with no officer step")
    func newInstallationMarked() async throws {
        let verification = try await VerificationHarness.make("tmac_fresh")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let pair = try await Self.enrolPair(verification, tenant)
        try await keyring.reconcileRecordSeals()
        try await Self.copyImpostorToken(verification, tenant, pair, mac: .dropped)
        Self.expectRefused(try await Self.impostorVerifiesAsVictim(verification, tenant).1, "a row without a MAC passed on a database that never had one")
        await verification.custody.shutdown()
    }
}

import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage  // DatabaseTransaction.query: the database writer's statements
import Testing
import Tokenization
import Verification

/// helper-80 F3: a template's MAC proves Custos wrote the row once, not that it is still the
/// subject's. A copy taken before an erasure or a replacing re-enrolment, put back with the
/// service role's password, was compared again. Since migration 34 every MAC a row loses is
/// withdrawn, and the table refuses a row that carries one.
@Suite("Template replay: a row Custos removed cannot be put back")
struct TemplateReplayAttackTests {
    static let face = PIIReferenceMigrationTests.face
    static let impostorFace = PIIReferenceMigrationTests.otherFace

    /// A `templates` row as the database's writer can read it.
    struct CapturedRow {
        let subject: String
        let piiVersion: Int
        let keyVersion: Int
        let token: Data
        let mac: Data?
        let macVersion: Int?
    }

    static func capture(_ verification: VerificationHarness, _ tenant: TenantID, subject: String) async throws -> CapturedRow {
        try await verification.custody.service.withTenant(tenant, context: "test: capture row") { connection in
            let rows = try await connection.query("""
                SELECT pii_version, key_version, token, record_mac, record_mac_version FROM templates WHERE subject_ref = \(subject)
                """, logger: Database.quiet).decode((Int, Int, Data, Data?, Int?).self)
            for try await (pii, version, token, mac, macVersion) in rows {
                return CapturedRow(subject: subject, piiVersion: pii, keyVersion: version, token: token, mac: mac, macVersion: macVersion)
            }
            throw VerificationError.notEnrolled
        }
    }

    /// `row` written back by the service role, over the subject's row of its version if there
    /// is one — without its MAC when `withMAC` is false.
    static func putBack(_ verification: VerificationHarness, _ tenant: TenantID, _ row: CapturedRow, withMAC: Bool = true) async throws {
        let mac = withMAC ? row.mac : nil, macVersion = withMAC ? row.macVersion : nil
        try await TemplateMACAttackTests.asDatabaseWriter(verification, tenant, """
            INSERT INTO templates (tenant_id, subject_ref, pii_version, key_version, token, record_mac, record_mac_version)
            VALUES (\(tenant.rawValue)::uuid, \(row.subject), \(row.piiVersion), \(row.keyVersion), \(row.token), \(mac), \(macVersion))
            ON CONFLICT (tenant_id, subject_ref, key_version)
            DO UPDATE SET token = EXCLUDED.token, record_mac = EXCLUDED.record_mac, record_mac_version = EXCLUDED.record_mac_version
            """)
    }

    static func expectWithdrawn(_ comment: Comment, _ write: () async throws -> Void) async {
        do {
            try await write()
            Issue.record("the database took the row back: \(comment)")
        } catch let error as StorageError {
            #expect(error == .withdrawnTemplateMAC("test: database writer"), "\(comment)")
        } catch {
            Issue.record("refused for another reason (\(error)): \(comment)")
        }
    }

    /// What the victim's face gets for a fresh session of the victim: `notEnrolled` once erased.
    static func victimVerifies(_ verification: VerificationHarness, _ tenant: TenantID, features: [Float] = face) async throws -> Result<Decision, any Error> {
        let session = try await verification.consentedSession(tenant, "victim")
        do {
            return .success(try await verification.flow.verify(tenant: tenant, session: session, features: try FeatureVector(features)))
        } catch {
            return .failure(error)
        }
    }

    static func expectNotEnrolled(_ result: Result<Decision, any Error>, _ comment: Comment) {
        switch result {
        case .success(let decision): Issue.record("compared and answered \(decision.color): \(comment)")
        case .failure(let error): #expect(error as? VerificationError == .notEnrolled, "\(error): \(comment)")
        }
    }

    static func enrolVictim(_ verification: VerificationHarness, _ tenant: TenantID, features: [Float] = face) async throws -> String {
        try await verification.flow.enrol(
            tenant: tenant, session: try await verification.consentedSession(tenant, "victim"), features: try FeatureVector(features)
        ).subject.value
    }

    @Test("A template erased under GDPR and put back, MAC and all, is refused by the table: the subject stays erased")
    func erasedRowPutBack() async throws {
        let (verification, tenant) = try await SessionMACAttackTests.marked("treplay_erased")
        let subject = try await Self.enrolVictim(verification, tenant)
        let copy = try await Self.capture(verification, tenant, subject: subject)
        #expect(copy.mac != nil)
        let erased = try await verification.rights.erase(tenant: tenant, externalID: PersonalText("victim"), actor: "dpo")
        #expect(erased.templates == 1)

        await Self.expectWithdrawn("an erased template inserted again") { try await Self.putBack(verification, tenant, copy) }
        Self.expectNotEnrolled(try await Self.victimVerifies(verification, tenant), "the erased subject verified against a copy of its template")
        await verification.custody.shutdown()
    }

    @Test("An impostor's template replaced by the subject's own and put back is refused: the impostor does not verify as the subject")
    func replacedRowPutBack() async throws {
        let (verification, tenant) = try await SessionMACAttackTests.marked("treplay_replaced")
        // An impostor enrolled as the victim; found out, the victim re-enrols with their own face.
        let subject = try await Self.enrolVictim(verification, tenant, features: Self.impostorFace)
        let impostors = try await Self.capture(verification, tenant, subject: subject)
        _ = try await verification.flow.enrol(
            tenant: tenant, session: try await verification.consentedSession(tenant, "victim"), features: try FeatureVector(Self.face), replacing: true
        )
        let own = try await Self.victimVerifies(verification, tenant)
        #expect((try? own.get())?.color == .green, "the re-enrolled subject does not verify")

        await Self.expectWithdrawn("the replaced template written back over the new one") { try await Self.putBack(verification, tenant, impostors) }
        let impostor = try await Self.victimVerifies(verification, tenant, features: Self.impostorFace)
        #expect((try? impostor.get())?.color != .green, "the impostor verified as the subject again")
        #expect((try? (try await Self.victimVerifies(verification, tenant)).get())?.color == .green, "the subject's own template was lost")
        await verification.custody.shutdown()
    }

    @Test("A template moved out of an erasure's way and moved back afterwards is refused on the way back")
    func hiddenFromErasure() async throws {
        let (verification, tenant) = try await SessionMACAttackTests.marked("treplay_hidden")
        let subject = try await Self.enrolVictim(verification, tenant)
        try await TemplateMACAttackTests.asDatabaseWriter(verification, tenant, "UPDATE templates SET subject_ref = subject_ref || '-hidden' WHERE subject_ref = \(subject)")
        let erased = try await verification.rights.erase(tenant: tenant, externalID: PersonalText("victim"), actor: "dpo")
        #expect(erased.templates == 0, "the erasure found the moved row")

        await Self.expectWithdrawn("the hidden template moved back") {
            try await TemplateMACAttackTests.asDatabaseWriter(
                verification, tenant, "UPDATE templates SET subject_ref = \(subject) WHERE subject_ref = \(subject + "-hidden")"
            )
        }
        Self.expectNotEnrolled(try await Self.victimVerifies(verification, tenant), "the erased subject verified against its hidden template")
        await verification.custody.shutdown()
    }

    @Test("On an upgraded database, an erased template put back without its MAC is deleted by the sealing, not sealed")
    func sealingDeletesPutBackRow() async throws {
        let verification = try await VerificationHarness.make("treplay_sealing")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        try await verification.custody.ownerSQL(tenant: nil, "UPDATE record_seal_origin SET created_with_record_macs = false")
        let subject = try await Self.enrolVictim(verification, tenant)
        let copy = try await Self.capture(verification, tenant, subject: subject)
        _ = try await verification.rights.erase(tenant: tenant, externalID: PersonalText("victim"), actor: "dpo")
        // Before the sealing a row without a MAC counts as written before migration 33 (the
        // documented window): the table takes it.
        try await Self.putBack(verification, tenant, copy, withMAC: false)

        let sealing = try await keyring.sealUnsealedRecords(actor: "officer")
        #expect(sealing.templatesDeleted == 1)
        #expect(sealing.templates == 0, "the put-back row was sealed into a genuine one")
        #expect(sealing.tenantsLeft == 0, "the row held the mark off")
        #expect(try await verification.count("templates", tenant: tenant) == 0)
        Self.expectNotEnrolled(try await Self.victimVerifies(verification, tenant), "the erased subject verified after the sealing")
        await verification.custody.shutdown()
    }

    @Test("Features replayed after an erasure are refused with their own error; the session stays open for a new capture")
    func identicalFeaturesAfterErasure() async throws {
        let (verification, tenant) = try await SessionMACAttackTests.marked("treplay_identical")
        _ = try await Self.enrolVictim(verification, tenant)
        _ = try await verification.rights.erase(tenant: tenant, externalID: PersonalText("victim"), actor: "dpo")

        let session = try await verification.consentedSession(tenant, "victim")
        do {
            _ = try await verification.flow.enrol(tenant: tenant, session: session, features: try FeatureVector(Self.face))
            Issue.record("the withdrawn template was enrolled again")
        } catch {
            #expect(error as? VerificationError == .tokenWithdrawn, "\(error)")
        }
        // A new capture enrols in the same session. (A change to one value alone may leave
        // every symbol, and so the token, as it was.)
        let capture = Self.face.enumerated().map { $0.element + ($0.offset % 3 == 0 ? 0.05 : 0) }
        _ = try await verification.flow.enrol(tenant: tenant, session: session, features: try FeatureVector(capture))
        #expect((try? (try await Self.victimVerifies(verification, tenant, features: capture)).get())?.color == .green)
        await verification.custody.shutdown()
    }

    @Test("The service role can neither read nor change the withdrawn MACs, nor turn the table's triggers off")
    func listOutOfReach() async throws {
        let (verification, tenant) = try await SessionMACAttackTests.marked("treplay_list")
        _ = try await Self.enrolVictim(verification, tenant)
        _ = try await verification.rights.erase(tenant: tenant, externalID: PersonalText("victim"), actor: "dpo")
        for statement: PostgresQuery in [
            "SELECT count(*) FROM withdrawn_template_macs",
            "DELETE FROM withdrawn_template_macs",
            "UPDATE withdrawn_template_macs SET record_mac = '\\x00'",
            "TRUNCATE withdrawn_template_macs",
            "ALTER TABLE templates DISABLE TRIGGER templates_refuse_withdrawn_insert",
            "SET session_replication_role = replica",
        ] {
            do {
                try await TemplateMACAttackTests.asDatabaseWriter(verification, tenant, statement)
                Issue.record("the service role ran: \(statement.sql)")
            } catch let error as StorageError {
                switch error {
                case .permissionDenied: break
                default: Issue.record("\(statement.sql) failed for another reason: \(error)")
                }
            }
        }
        let withdrawn = try await verification.custody.owner.withTransaction(context: "test: count withdrawn") { connection in
            try await connection.query("SELECT count(*)::int FROM withdrawn_template_macs", logger: Database.quiet).collect().first!.decode(Int.self)
        }
        #expect(withdrawn == 1, "the erased template's MAC is not on the list")
        await verification.custody.shutdown()
    }
}

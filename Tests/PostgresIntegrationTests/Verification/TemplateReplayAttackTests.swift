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
    /// is one — without a MAC when `withMAC` is false.
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

    @Test("A template cannot be moved out of an erasure's way under its MAC; moved without it, it is refused or deleted on the way back")
    func hiddenFromErasure() async throws {
        let (verification, tenant) = try await SessionMACAttackTests.marked("treplay_hidden")
        let subject = try await Self.enrolVictim(verification, tenant)
        await Self.expectWithdrawn("the template moved to another subject under the MAC it keeps") {
            try await TemplateMACAttackTests.asDatabaseWriter(
                verification, tenant, "UPDATE templates SET subject_ref = subject_ref || '-hidden' WHERE subject_ref = \(subject)"
            )
        }
        // Moved with its MAC dropped (allowed: a row without one is refused once read), then
        // moved back with it after the erasure: the MAC it left with is withdrawn.
        let copy = try await Self.capture(verification, tenant, subject: subject)
        try await TemplateMACAttackTests.asDatabaseWriter(verification, tenant, """
            UPDATE templates SET subject_ref = subject_ref || '-hidden', record_mac = NULL, record_mac_version = NULL WHERE subject_ref = \(subject)
            """)
        let erased = try await verification.rights.erase(tenant: tenant, externalID: PersonalText("victim"), actor: "dpo")
        #expect(erased.templates == 0, "the erasure found the moved row")
        await Self.expectWithdrawn("the hidden template moved back with its MAC") {
            try await TemplateMACAttackTests.asDatabaseWriter(verification, tenant, """
                UPDATE templates SET subject_ref = \(subject), record_mac = \(copy.mac), record_mac_version = \(copy.macVersion)
                WHERE subject_ref = \(subject + "-hidden")
                """)
        }
        Self.expectNotEnrolled(try await Self.victimVerifies(verification, tenant), "the erased subject verified against its hidden template")
        await verification.custody.shutdown()
    }

    @Test("A copy inserted from a repeatable-read snapshot taken before the erasure is refused (helper-88 A)")
    func putBackFromAnOldSnapshot() async throws {
        let (verification, tenant) = try await SessionMACAttackTests.marked("treplay_snapshot")
        let subject = try await Self.enrolVictim(verification, tenant)
        let rights = verification.rights
        let refusal = try await verification.custody.service.withConnection(context: "test: old snapshot") { connection -> String? in
            try await connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ", logger: Database.quiet)
            try await connection.query("SELECT set_config('app.tenant_id', \(tenant.rawValue), true)", logger: Database.quiet)
            _ = try await connection.query("SELECT count(*) FROM templates", logger: Database.quiet).collect()
            let erased = try await Database.allowingSecondConnection {
                try await rights.erase(tenant: tenant, externalID: PersonalText("victim"), actor: "dpo")
            }
            #expect(erased.templates == 1)
            do {
                // The erased row, as this transaction's snapshot still shows it.
                try await connection.query("INSERT INTO templates SELECT * FROM templates WHERE subject_ref = \(subject)", logger: Database.quiet)
                try await connection.query("COMMIT", logger: Database.quiet)
                return nil
            } catch let error as PSQLError {
                try await connection.query("ROLLBACK", logger: Database.quiet)
                return error.serverInfo?[.sqlState]
            }
        }
        #expect(refusal == TemplateStore.withdrawnMACState, "the erased row went back in from an old snapshot")
        Self.expectNotEnrolled(try await Self.victimVerifies(verification, tenant), "the erased subject verified")
        await verification.custody.shutdown()
    }

    @Test("A copy inserted while the erasure's withdrawal waits uncommitted behind a lock the writer holds is refused once it commits (helper-88 B)")
    func putBackBehindAnUncommittedErasure() async throws {
        // The lock's holder spans the erasure's and the copy's steps (HSM lookups included) on
        // a machine running some 40 suites at once: 30 s was not enough in CI once.
        let (verification, tenant) = try await SessionMACAttackTests.marked("treplay_behind", operationTimeout: .seconds(120))
        let subject = try await Self.enrolVictim(verification, tenant)
        let copy = try await Self.capture(verification, tenant, subject: subject)
        let rights = verification.rights
        // The erasure deletes, lists the MAC, then waits for the audit log's lock, held here.
        let (erasure, putBack) = try await verification.custody.service.withTransaction(context: "test: hold the audit lock") { holder in
            try await holder.query("SELECT pg_advisory_xact_lock(hashtext('custos-audit-append:' || current_schema()))", logger: Database.quiet)
            return try await Database.allowingSecondConnection {
                let erasure = Task { try await rights.erase(tenant: tenant, externalID: PersonalText("victim"), actor: "dpo") }
                let erasureWaits = try await verification.someoneWaitsOnALock(running: "custos-audit-append")
                #expect(erasureWaits, "the erasure never waited for the audit lock")
                let putBack = Task { () -> (any Error)? in
                    do {
                        try await Self.putBack(verification, tenant, copy)
                        return nil
                    } catch {
                        return error
                    }
                }
                let insertWaits = try await verification.someoneWaitsOnALock(running: "INSERT INTO templates")
                #expect(insertWaits, "the copy's insert never waited for the erasure")
                return (erasure, putBack)
            }
        }
        #expect(try await erasure.value.templates == 1)
        let error = await putBack.value
        #expect(error as? StorageError == .withdrawnTemplateMAC("test: database writer"), "the copy went in behind the erasure: \(String(describing: error))")
        Self.expectNotEnrolled(try await Self.victimVerifies(verification, tenant), "the erased subject verified")
        await verification.custody.shutdown()
    }

    @Test("A live template's MAC listed through a decoy row does not stop its subject's pii move (helper-88 C)")
    func decoyDoesNotStopTheMove() async throws {
        let (verification, tenant) = try await SessionMACAttackTests.marked("treplay_decoy")
        let subject = try await Self.enrolVictim(verification, tenant)
        try await TemplateMACAttackTests.asDatabaseWriter(verification, tenant, """
            INSERT INTO templates (tenant_id, subject_ref, pii_version, key_version, token, record_mac, record_mac_version)
            SELECT tenant_id, 'decoy', pii_version, key_version, token, record_mac, record_mac_version FROM templates WHERE subject_ref = \(subject)
            """)
        try await TemplateMACAttackTests.asDatabaseWriter(verification, tenant, "DELETE FROM templates WHERE subject_ref = 'decoy'")
        try await verification.custody.keyring.rotate(tenant, .pii, actor: "officer")
        // CreateSession moves the subject to the new pii version's reference, MAC and all.
        let own = try await Self.victimVerifies(verification, tenant)
        #expect((try? own.get())?.color == .green, "the subject could not be moved or verified: \(own)")
        await verification.custody.shutdown()
    }

    @Test(
        "On an upgraded database, an erased template put back without its MAC is deleted by the sealing, not sealed",
        arguments: [true, false]
    )
    func sealingDeletesPutBackRow(sealedWhenErased: Bool) async throws {
        let verification = try await VerificationHarness.make("treplay_sealing_\(sealedWhenErased)")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        try await verification.custody.ownerSQL(tenant: nil, "UPDATE record_seal_origin SET created_with_record_macs = false")
        let subject = try await Self.enrolVictim(verification, tenant)
        if !sealedWhenErased {
            // A row written before migration 33 (helper-88 D): it never had a MAC to withdraw.
            try await TemplateMACAttackTests.asOwnerWithoutTriggers(verification, tenant, "UPDATE templates SET record_mac = NULL, record_mac_version = NULL")
        }
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

    @Test("An overlap's end withdraws the templates it deletes: none can be put back")
    func closedOverlapTemplatesListed() async throws {
        let (verification, tenant) = try await SessionMACAttackTests.marked("treplay_close")
        let keyring = verification.custody.keyring
        let subject = try await Self.enrolVictim(verification, tenant)
        let copy = try await Self.capture(verification, tenant, subject: subject)
        try await keyring.rotateBiometric(tenant, actor: "officer")
        #expect(try await keyring.closeBiometricOverlap(tenant, version: copy.keyVersion, actor: "officer") == 1)
        let listed = try await verification.custody.owner.withTransaction(context: "test: count withdrawn") { connection in
            try await connection.query("SELECT count(*)::int FROM withdrawn_template_macs", logger: Database.quiet).collect().first!.decode(Int.self)
        }
        #expect(listed == 1, "the closed version's template was not listed")
        await Self.expectWithdrawn("a template of the closed version put back") { try await Self.putBack(verification, tenant, copy) }
        await verification.custody.shutdown()
    }

    @Test("Once every record is sealed, a pii move deletes a template without a MAC under an old reference instead of moving it")
    func moveDeletesUnsealedAfterTheMark() async throws {
        let (verification, tenant) = try await SessionMACAttackTests.marked("treplay_moveunsealed")
        _ = try await Self.enrolVictim(verification, tenant)
        try await verification.custody.keyring.rotate(tenant, .pii, actor: "officer")
        // The victim's template, still under the old pii version's reference, stripped of its MAC.
        try await TemplateMACAttackTests.asDatabaseWriter(verification, tenant, "UPDATE templates SET record_mac = NULL, record_mac_version = NULL")
        // CreateSession moves the subject to the active pii version.
        Self.expectNotEnrolled(try await Self.victimVerifies(verification, tenant), "the row without a MAC was moved and compared")
        #expect(try await verification.count("templates", tenant: tenant) == 0, "the row without a MAC was moved, not deleted")
        await verification.custody.shutdown()
    }

    @Test("The withdrawn MACs of a version whose bio-prf key the HSM's list records as destroyed are dropped by the owner; a live version's stay")
    func destroyedVersionsDropped() async throws {
        let (verification, tenant) = try await SessionMACAttackTests.marked("treplay_drop")
        let keyring = verification.custody.keyring
        _ = try await Self.enrolVictim(verification, tenant)
        _ = try await verification.rights.erase(tenant: tenant, externalID: PersonalText("victim"), actor: "dpo")
        try await keyring.rotateBiometric(tenant, actor: "officer")
        try await keyring.closeBiometricOverlap(tenant, version: 1, actor: "officer")
        // A version-2 entry: a template replaced.
        for features in [Self.face, Self.impostorFace] {
            _ = try await verification.flow.enrol(
                tenant: tenant, session: try await verification.consentedSession(tenant, "other"), features: try FeatureVector(features),
                replacing: features == Self.impostorFace
            )
        }
        #expect(try await keyring.destroyedBiometricVersions()[tenant] == nil)
        try await keyring.destroy(tenant, .bioSeed, version: 1, waitingPeriod: .zero, actor: "officer")
        try await keyring.destroy(tenant, .bioPRF, version: 1, waitingPeriod: .zero, actor: "officer")
        // A row that says destroyed is not the HSM's list: version 2 still compares.
        try await verification.custody.ownerSQL(tenant: tenant, "UPDATE key_versions SET state = 'destroyed' WHERE purpose = 'bio-prf' AND version = 2")
        let destroyed = try await keyring.destroyedBiometricVersions()
        #expect(destroyed[tenant] == [1])

        let owner = verification.custody.owner
        let dropped = try await owner.withTransaction(context: "test: drop withdrawn") { connection in
            try await TemplateStore.dropWithdrawnMACs(tenant: tenant, keyVersions: destroyed[tenant] ?? [], on: connection)
        }
        #expect(dropped == 1)
        let left = try await owner.withTransaction(context: "test: count withdrawn") { connection in
            try await connection.query("SELECT key_version FROM withdrawn_template_macs WHERE tenant_id = \(tenant.rawValue)::uuid", logger: Database.quiet)
                .collect().map { try $0.decode(Int.self) }
        }
        #expect(left == [2], "the live version's entry went, or the destroyed one's stayed")
        await #expect(throws: StorageError.permissionDenied("test: writer drops withdrawn")) {
            try await verification.custody.service.withTransaction(context: "test: writer drops withdrawn") { connection in
                try await TemplateStore.dropWithdrawnMACs(tenant: tenant, keyVersions: [2], on: connection)
            }
        }
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

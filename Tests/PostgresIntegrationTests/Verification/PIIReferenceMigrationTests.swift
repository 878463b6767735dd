import Composition
import Custody
import CustosModel
import Foundation
@testable import Storage
import Testing
import Tokenization
import Verification

/// `pii` references move on use (issue 11 §2): a lookup by external id that finds a subject
/// under an older `pii` version moves everything stored under that reference — templates,
/// sessions, attempt counters — to the active version's reference in the lookup's
/// transaction, so the old version's references drop to zero.
@Suite("pii references move to the active version on lookup")
struct PIIReferenceMigrationTests {
    static let face: [Float] = (0..<128).map { Float(sin(Double($0) * 0.61)) }
    static let otherFace: [Float] = (0..<128).map { Float(cos(Double($0) * 1.37)) }

    static func piiStatus(_ keyring: TenantKeyring, _ tenant: TenantID, version: Int) async throws -> KeyVersionStatus? {
        try await keyring.status(tenant).versions.first { $0.record.purpose == .pii && $0.record.version == version }
    }

    /// Rows of `table` under `reference`, read as the owner under the tenant's row-level security.
    static func rows(_ verification: VerificationHarness, _ table: String, _ tenant: TenantID, reference: String) async throws -> Int {
        try await verification.custody.owner.withTransaction(context: "count") { connection in
            try await connection.query("SELECT set_config('app.tenant_id', \(tenant.rawValue), true)", logger: Database.quiet)
            return try await connection.query(
                "SELECT count(*)::int FROM \(unescaped: table) WHERE subject_ref = \(reference)", logger: Database.quiet
            ).collect().first!.decode(Int.self)
        }
    }

    @Test("Creating a session for a subject stored under an old pii version moves its templates, sessions and attempt counter; it still verifies")
    func sessionCreationMoves() async throws {
        let verification = try await VerificationHarness.make("piimove")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let neighbour = try await keyring.createTenant(label: "neighbour", actor: "officer").id
        let features = try FeatureVector(Self.face)

        let enrolment = try await verification.consentedSession(tenant, "p-1", name: "Ada")
        let (old, _) = try await verification.flow.enrol(tenant: tenant, session: enrolment, features: features)
        #expect(old.piiVersion == 1)
        let check = try await verification.consentedSession(tenant, "p-1")
        #expect(try await verification.flow.verify(tenant: tenant, session: check, features: features).color == .green)
        // The same external id in another tenant: another subject, never touched.
        let theirs = try await verification.consentedSession(neighbour, "p-1")
        _ = try await verification.flow.enrol(tenant: neighbour, session: theirs, features: features)

        try await keyring.rotate(tenant, .pii, actor: "officer")
        try await keyring.rotate(neighbour, .pii, actor: "officer")
        let stale = try #require(try await Self.piiStatus(keyring, tenant, version: 1))
        #expect(stale.templates == 1 && stale.sessions == 2 && stale.references == 3)

        let created = try await verification.sessions.create(tenant: tenant, externalID: PersonalText("p-1"), name: nil, email: nil)
        #expect(created.subject.piiVersion == 2 && created.subject != old)
        let moved = try #require(try await Self.piiStatus(keyring, tenant, version: 1))
        #expect(moved.references == 0, "v1 still referenced after the lookup")
        #expect(try await Self.piiStatus(keyring, tenant, version: 2)?.references == 4)
        #expect(try await keyring.status(tenant).purposes.first { $0.purpose == .pii }?.percentMigrated == 100)
        for table in ["templates", "verification_sessions", "verification_attempts"] {
            #expect(try await Self.rows(verification, table, tenant, reference: old.value) == 0, "\(table) still holds the old reference")
        }
        #expect(try await Self.rows(verification, "templates", tenant, reference: created.subject.value) == 1)
        #expect(try await Self.rows(verification, "verification_attempts", tenant, reference: created.subject.value) == 1, "the attempt counter moved")
        // The neighbour's subject was not looked up: still under its v1.
        #expect(try await Self.piiStatus(keyring, neighbour, version: 1)?.references == 2)

        // The moved template is the one the subject verifies against, under its new reference.
        let session = try await verification.sessions.openGateway(tenant: tenant, link: created.gatewayLink)
        _ = try await verification.sessions.recordConsent(tenant: tenant, session: session, noticeVersion: "notice-2026-01")
        #expect(try await verification.flow.verify(tenant: tenant, session: session, features: features).color == .green)
        #expect(try await verification.flow.verify(tenant: tenant, session: try await verification.consentedSession(tenant, "p-1"),
                                                   features: try FeatureVector(Self.otherFace)).color != .green)
        // The old version can now go: nothing stored needs it.
        try await keyring.destroy(tenant, .pii, version: 1, waitingPeriod: .zero, actor: "officer")
        #expect(try await verification.flow.verify(tenant: tenant, session: try await verification.consentedSession(tenant, "p-1"), features: features).color == .green)
        await verification.custody.shutdown()
    }

    @Test("A warm 1:N gallery on another instance follows a move: identification names the new reference")
    func galleriesFollowTheMove() async throws {
        let first = try await VerificationHarness.make("piigallery")
        let second = VerificationHarness(first.custody, database: try first.custody.secondServiceDatabase())
        let keyring = first.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let listener = Task { await first.core.runGalleryListener() }
        defer { listener.cancel() }
        for _ in 0..<1_000 where !first.core.isListening { try await Task.sleep(for: .milliseconds(10)) }
        #expect(first.core.isListening)
        let features = try FeatureVector(Self.face)
        let (old, _) = try await first.flow.enrol(tenant: tenant, session: try await first.consentedSession(tenant, "p-4"), features: features)
        let probe = try await first.tokenizer.tokenize(features, tenant: tenant)
        #expect(try await first.core.identify(tenant: tenant, probe: probe, top: 1).first?.subject == old.value, "gallery warm")

        try await keyring.rotate(tenant, .pii, actor: "officer")
        let moved = try await second.sessions.create(tenant: tenant, externalID: PersonalText("p-4"), name: nil, email: nil).subject
        #expect(moved.piiVersion == 2)
        var found = [IdentifiedCandidate]()
        for _ in 0..<200 {
            found = try await first.core.identify(tenant: tenant, probe: probe, top: 1)
            if found.first?.subject == moved.value { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(found.first?.subject == moved.value, "the warm gallery names the subject by its new reference")
        #expect(found.first?.decision.color == .green)
        await first.custody.shutdown()
    }

    @Test("An export by external id moves the subject too; a template under both references keeps the active one's")
    func exportMovesAndMergesDuplicates() async throws {
        let verification = try await VerificationHarness.make("piiexport")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let features = try FeatureVector(Self.face)
        let first = try await verification.consentedSession(tenant, "p-2", name: "Grace", email: "grace@example.test")
        let (old, _) = try await verification.flow.enrol(tenant: tenant, session: first, features: features)
        try await keyring.rotate(tenant, .pii, actor: "officer")
        // The same subject enrolled under its v2 reference too (e.g. by an instance that had not
        // yet seen the move): one template per subject and biometric version must remain.
        let references = try await verification.referencer.references(for: PersonalText("p-2"), tenant: tenant)
        let active = try #require(references.first)
        #expect(active.piiVersion == 2)
        let token = try await verification.tokenizer.tokenize(features, tenant: tenant)
        try await verification.core.enrol(tenant: tenant, subject: active, token: token)

        let export = try await verification.rights.export(tenant: tenant, externalID: PersonalText("p-2"), actor: "dpo")
        #expect(export.subjectReferences == [active.value], "the export shows the reference it is stored under now")
        #expect(export.biometricTemplates.count == 1)
        #expect(export.sessions.first?.candidateName == "Grace")
        #expect(try await Self.rows(verification, "templates", tenant, reference: old.value) == 0)
        #expect(try await Self.piiStatus(keyring, tenant, version: 1)?.references == 0)
        let session = try await verification.consentedSession(tenant, "p-2")
        #expect(try await verification.flow.verify(tenant: tenant, session: session, features: features).color == .green)
        await verification.custody.shutdown()
    }
}

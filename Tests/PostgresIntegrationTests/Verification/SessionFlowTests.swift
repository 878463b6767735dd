import Composition
import Custody
import CustosModel
import Foundation
import PostgresNIO
import Storage
import Testing
import Tokenization
import Verification

@Suite("Verification sessions: gateway link, consent, outcome written once, sealed personal data")
struct SessionFlowTests {
    static let face: [Float] = (0..<256).map { Float(cos(Double($0) * 0.37)) }

    @Test("Features are refused until the candidate opened the link and consented; then the outcome is written once")
    func consentGatesFeatures() async throws {
        let verification = try await VerificationHarness.make("consent")
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        let features = try FeatureVector(Self.face)
        let created = try await verification.sessions.create(tenant: tenant, externalID: PersonalText("cand-1"), name: nil, email: nil)
        #expect(try await verification.sessions.status(tenant: tenant, session: created.id).state == .created)

        for attempt in 0..<3 {
            await #expect(throws: VerificationError.consentRequired(created.id)) {
                switch attempt {
                case 0: _ = try await verification.flow.enrol(tenant: tenant, session: created.id, features: features)
                case 1: _ = try await verification.flow.verify(tenant: tenant, session: created.id, features: features)
                default: _ = try await verification.flow.identify(tenant: tenant, session: created.id, features: features, top: 3)
                }
            }
        }
        await #expect(throws: VerificationError.linkNotOpened(created.id), "consent comes from the candidate, after opening the link") {
            _ = try await verification.sessions.recordConsent(tenant: tenant, session: created.id, noticeVersion: "n1")
        }
        #expect(try await verification.count("templates", tenant: tenant) == 0, "nothing was enrolled without consent")

        let opened = try await verification.sessions.openGateway(tenant: tenant, link: created.gatewayLink)
        #expect(opened == created.id)
        #expect(try await verification.sessions.status(tenant: tenant, session: created.id).state == .opened)
        await #expect(throws: VerificationError.invalidArgument(field: "notice_version", reason: "1 to 64 printable ASCII characters")) {
            _ = try await verification.sessions.recordConsent(tenant: tenant, session: created.id, noticeVersion: "")
        }
        let consentedAt = try await verification.sessions.recordConsent(tenant: tenant, session: created.id, noticeVersion: "notice-7")
        let consented = try await verification.sessions.status(tenant: tenant, session: created.id)
        #expect(consented.state == .consented && consented.noticeVersion == "notice-7")
        #expect(abs(consented.consentedAt!.timeIntervalSince(consentedAt)) < 0.001)

        let (subject, keyVersion) = try await verification.flow.enrol(tenant: tenant, session: created.id, features: features)
        #expect(keyVersion == 1)
        let done = try await verification.sessions.status(tenant: tenant, session: created.id)
        #expect(done.state == .completed && done.outcome == .enrolled && done.biometricKeyVersion == 1)
        await #expect(throws: VerificationError.sessionCompleted(created.id), "the outcome is written once") {
            _ = try await verification.flow.verify(tenant: tenant, session: created.id, features: features)
        }
        let after = try await verification.sessions.status(tenant: tenant, session: created.id)
        #expect(after.outcome == .enrolled && after.completedAt == done.completedAt, "the recorded outcome did not change")

        // A verification session for the same external id finds the same subject.
        let check = try await verification.consentedSession(tenant, "cand-1")
        #expect(try await verification.flow.verify(tenant: tenant, session: check, features: features).color == .green)
        let checked = try await verification.sessions.status(tenant: tenant, session: check)
        #expect(checked.outcome == .green && checked.confidence == .high)
        #expect(subject.piiVersion == 1)
        await verification.custody.shutdown()
    }

    @Test("A gateway link opens once, for its own tenant, within 24 hours; sessions expire")
    func gatewayLink() async throws {
        let verification = try await VerificationHarness.make("gateway")
        let a = try await verification.custody.keyring.createTenant(label: "tenant-a", actor: "officer").id
        let b = try await verification.custody.keyring.createTenant(label: "tenant-b", actor: "officer").id
        let sessions = verification.sessions

        let first = try await sessions.create(tenant: a, externalID: PersonalText("x"), name: nil, email: nil)
        await #expect(throws: VerificationError.gatewayLinkUnknown, "another tenant's link is unknown to B") {
            _ = try await sessions.openGateway(tenant: b, link: first.gatewayLink)
        }
        #expect(try await sessions.openGateway(tenant: a, link: first.gatewayLink) == first.id, "B's attempt did not use it up")
        await #expect(throws: VerificationError.gatewayLinkUsed) { _ = try await sessions.openGateway(tenant: a, link: first.gatewayLink) }
        await #expect(throws: VerificationError.gatewayLinkUnknown) {
            _ = try await sessions.openGateway(tenant: a, link: try GatewayLink("cgl_" + String(repeating: "A", count: 43)))
        }
        #expect(throws: VerificationError.self, "malformed links are refused before any lookup") { _ = try GatewayLink("cgl_short") }
        #expect("\(first.gatewayLink)" == "cgl_<redacted>")

        let second = try await sessions.create(tenant: a, externalID: PersonalText("y"), name: nil, email: nil)
        verification.clock.advance(hours: 24.01)
        await #expect(throws: VerificationError.gatewayLinkExpired) { _ = try await sessions.openGateway(tenant: a, link: second.gatewayLink) }
        #expect(try await sessions.status(tenant: a, session: second.id).state == .expired)
        await #expect(throws: VerificationError.sessionExpired(first.id), "an expired session takes no consent") {
            _ = try await sessions.recordConsent(tenant: a, session: first.id, noticeVersion: "n1")
        }
        await verification.custody.shutdown()
    }

    @Test("Names and emails are stored only sealed under the data key; a ciphertext moved to another row does not open")
    func sealedPersonalData() async throws {
        let verification = try await VerificationHarness.make("sealed")
        let harness = verification.custody
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let one = try await verification.sessions.create(
            tenant: tenant, externalID: PersonalText("ext-1"), name: PersonalText("Katherine Johnson"), email: PersonalText("kj@example.org")
        )
        let two = try await verification.sessions.create(
            tenant: tenant, externalID: PersonalText("ext-2"), name: PersonalText("Dorothy Vaughan"), email: nil
        )
        let dump = try harness.dump()
        for clear in ["Katherine", "Johnson", "kj@example.org", "Dorothy", "ext-1"] {
            #expect(!dump.contains(clear), "in clear in the dump: \(clear)")
        }
        await #expect(throws: VerificationError.invalidArgument(field: "email", reason: "at most 320 bytes")) {
            _ = try await verification.sessions.create(
                tenant: tenant, externalID: PersonalText("ext-3"), name: nil, email: PersonalText(String(repeating: "e", count: 400))
            )
        }
        await #expect(throws: VerificationError.invalidArgument(field: "external_id", reason: "required")) {
            _ = try await verification.sessions.create(tenant: tenant, externalID: PersonalText(""), name: nil, email: nil)
        }

        let exported = try await verification.rights.export(tenant: tenant, externalID: PersonalText("ext-1"), actor: "dpo")
        #expect(exported.sessions.map(\.candidateName) == ["Katherine Johnson"])
        #expect(exported.sessions.map(\.candidateEmail) == ["kj@example.org"])
        #expect(exported.sessions.first?.dataKeyVersion == 1)

        // Whoever can write to the database moves session two's sealed name onto session one.
        try await harness.ownerSQL(tenant: tenant, """
            UPDATE verification_sessions SET sealed_name = (SELECT sealed_name FROM verification_sessions WHERE id = \(two.id))
            WHERE id = \(one.id)
            """)
        await #expect(throws: CustodyError.self, "bound to its row and field by the associated data") {
            _ = try await verification.rights.export(tenant: tenant, externalID: PersonalText("ext-1"), actor: "dpo")
        }
        await harness.shutdown()
    }
}

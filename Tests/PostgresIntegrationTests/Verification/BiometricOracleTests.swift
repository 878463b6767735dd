import Composition
import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage  // DatabaseTransaction.query: the database writer's statements
import Testing
import Tokenization
import Verification

/// The decision a verification returns is an oracle answer: who may ask it how often, and
/// what may replace the face it is asked about.
@Suite("Biometric oracle: attempt limits, explicit re-enrolment, normalised external ids")
struct BiometricOracleTests {
    static let face: [Float] = (0..<128).map { Float(sin(Double($0) * 0.61)) }
    static let otherFace: [Float] = (0..<128).map { Float(cos(Double($0) * 1.37 + 0.4)) }

    /// A tenant with `cand-1` enrolled (``face``), its verifications limited to `attempts` an hour.
    static func enrolledUnderLimit(
        _ name: String, attempts: Int
    ) async throws -> (CustodyHarness, VerificationHarness, TenantID, FeatureVector) {
        let custody = try await CustodyHarness.make(name)
        let verification = VerificationHarness(custody) { $0.verificationAttempts = VerificationAttemptLimit(attempts: attempts, window: .seconds(3_600)) }
        let tenant = try await custody.keyring.createTenant(label: "acme", actor: "officer").id
        let face = try FeatureVector(Self.face)
        _ = try await verification.flow.enrol(tenant: tenant, session: try await verification.consentedSession(tenant, "cand-1"), features: face)
        return (custody, verification, tenant, face)
    }

    @Test("A subject's 1:1 attempts are limited per window in the verification's own transaction; others are unaffected; erasure and retention forget counters")
    func attemptLimit() async throws {
        let (custody, verification, tenant, face) = try await Self.enrolledUnderLimit("attempts", attempts: 2)
        for _ in 0..<2 {
            let session = try await verification.consentedSession(tenant, "cand-1")
            #expect(try await verification.flow.verify(tenant: tenant, session: session, features: face).color == .green)
        }
        let third = try await verification.consentedSession(tenant, "cand-1")
        do {
            _ = try await verification.flow.verify(tenant: tenant, session: third, features: face)
            Issue.record("a third attempt within the window was compared")
        } catch let error as VerificationError {
            guard case .tooManyAttempts(let limit, let window, let retryAfter) = error else { Issue.record("got \(error)"); return }
            #expect(limit == 2 && window == .seconds(3_600))
            #expect(retryAfter > verification.clock.now())
            #expect("\(error)".contains("too many verification attempts"))
        }
        #expect(try await verification.sessions.status(tenant: tenant, session: third).outcome == nil, "the refused attempt wrote nothing")

        // Another subject of the same tenant has its own count.
        _ = try await verification.flow.enrol(tenant: tenant, session: try await verification.consentedSession(tenant, "cand-2"), features: face)
        let other = try await verification.consentedSession(tenant, "cand-2")
        #expect(try await verification.flow.verify(tenant: tenant, session: other, features: face).color == .green)

        // Once the window has passed, the subject may be verified again.
        verification.clock.advance(hours: 1.5)
        let later = try await verification.consentedSession(tenant, "cand-1")
        #expect(try await verification.flow.verify(tenant: tenant, session: later, features: face).color == .green)

        #expect(try await verification.count("verification_attempts", tenant: tenant) == 2)
        _ = try await verification.rights.erase(tenant: tenant, externalID: PersonalText("cand-1"), actor: "dpo")
        #expect(try await verification.count("verification_attempts", tenant: tenant) == 1, "erasure removes the subject's counter")
        _ = try await verification.retention.run(tenant: tenant)
        #expect(try await verification.count("verification_attempts", tenant: tenant) == 0, "retention removes counters of ended windows")
        await custody.shutdown()
    }

    @Test("The database's writer resetting the shared attempt counter gets a subject no more decisions from an instance (helper-85)")
    func resetCounterStillLimited() async throws {
        let (custody, verification, tenant, face) = try await Self.enrolledUnderLimit("attempts_reset", attempts: 2)
        var decisions = 0
        for _ in 0..<4 {
            // As the service role: the subject's counter gone before each attempt.
            _ = try await custody.service.withTenant(tenant, context: "test: database writer") { connection in
                try await connection.query("DELETE FROM verification_attempts", logger: Database.quiet)
            }
            let session = try await verification.consentedSession(tenant, "cand-1")
            do {
                _ = try await verification.flow.verify(tenant: tenant, session: session, features: face)
                decisions += 1
            } catch VerificationError.tooManyAttempts {}
        }
        #expect(decisions == 2, "\(decisions) decisions with the counter reset each time")
        // The window over, the subject may be verified again.
        verification.clock.advance(hours: 1.5)
        #expect(try await verification.flow.verify(tenant: tenant, session: try await verification.consentedSession(tenant, "cand-1"), features: face).color == .green)
        await custody.shutdown()
    }

    @Test("Enrolling over an enrolled subject is refused without the explicit flag; with it, the template is replaced and audited")
    func reenrolment() async throws {
        let verification = try await VerificationHarness.make("reenrol")
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        let subject = try await verification.flow.enrol(
            tenant: tenant, session: try await verification.consentedSession(tenant, "cand-1"), features: try FeatureVector(Self.face)
        ).subject
        let second = try await verification.consentedSession(tenant, "cand-1")
        await #expect(throws: VerificationError.alreadyEnrolled) {
            _ = try await verification.flow.enrol(tenant: tenant, session: second, features: try FeatureVector(Self.otherFace))
        }
        #expect(try await verification.sessions.status(tenant: tenant, session: second).outcome == nil)
        #expect(try await verification.auditEntries("subject.reenrol").isEmpty)
        let probe = try await verification.consentedSession(tenant, "cand-1")
        #expect(try await verification.flow.verify(tenant: tenant, session: probe, features: try FeatureVector(Self.face)).color == .green,
                "the refused enrolment left the original face in place")

        let replaced = try await verification.flow.enrol(tenant: tenant, session: second, features: try FeatureVector(Self.otherFace), replacing: true)
        #expect(replaced.subject == subject)
        let entries = try await verification.auditEntries("subject.reenrol")
        #expect(entries.count == 1)
        #expect(entries.first?.target == "session:" + second.uuidString.lowercased())
        #expect(entries.allSatisfy { !$0.target.contains(subject.value) && !$0.details.contains(subject.value) }, "no subject reference in the log")
        let after = try await verification.consentedSession(tenant, "cand-1")
        #expect(try await verification.flow.verify(tenant: tenant, session: after, features: try FeatureVector(Self.otherFace)).color == .green)
        await verification.custody.shutdown()
    }

    @Test("An external id written composed (U+00E9) or decomposed (e + U+0301) is one subject: sessions, export and erasure find it")
    func normalisedExternalIDs() async throws {
        let composed = "Jos\u{E9}-7731"
        let decomposed = "Jose\u{301}-7731"
        #expect(Array(composed.utf8) != Array(decomposed.utf8))
        #expect(CustodySubjectReferencer.lookupForms(decomposed) == [Array(composed.utf8), Array(decomposed.utf8)],
                "NFC first; the as-sent form is still looked up for references made before normalisation")
        #expect(CustodySubjectReferencer.lookupForms("cand-1").count == 1, "ASCII ids cost one HMAC")

        let verification = try await VerificationHarness.make("nfc")
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        let subject = try await verification.flow.enrol(
            tenant: tenant, session: try await verification.consentedSession(tenant, decomposed), features: try FeatureVector(Self.face)
        ).subject
        let again = try await verification.sessions.create(tenant: tenant, externalID: PersonalText(composed), name: nil, email: nil)
        #expect(again.subject == subject)
        let exported = try await verification.rights.export(tenant: tenant, externalID: PersonalText(composed), actor: "dpo")
        #expect(exported.biometricTemplates.count == 1)
        #expect(exported.sessions.count == 2)
        let erased = try await verification.rights.erase(tenant: tenant, externalID: PersonalText(composed), actor: "dpo")
        #expect(erased.templates == 1 && erased.sessions == 2)
        #expect(try await verification.count("templates", tenant: tenant) == 0)
        await verification.custody.shutdown()
    }
}

@Suite("1:N galleries under one memory limit across tenants")
struct GalleryMemoryLimitTests {
    static func token(_ seed: UInt32) -> BiometricToken {
        var state = seed &* 2_654_435_761 | 1
        return BiometricToken(keyVersion: 1, values: (0..<1024).map { _ in
            state ^= state << 13; state ^= state >> 17; state ^= state << 5
            return state
        })
    }

    @Test("Past the global limit the least recently used tenant's gallery is dropped; a tenant larger than it keeps its most recent subjects; answers stay exact")
    func globalLimit() async throws {
        let custody = try await CustodyHarness.make("gallerylimit")
        #expect(VerificationService.defaultGalleryMemoryLimit / TokenGallery.bytesPerSubject >= 1_000_000, "the default holds a million subjects")
        // Serve's core (auditing, as in production), with a limit of three subjects.
        var settings = VerificationGraph.Settings()
        settings.galleryMemoryLimit = 3 * TokenGallery.bytesPerSubject
        let core = custody.started.runtime.verification(settings).core
        #expect(core.gallerySubjectCapacity == 3)
        var tokens = [String: BiometricToken]()
        var tenants = [TenantID]()
        for (index, label) in ["tenant-a", "tenant-b", "tenant-c"].enumerated() {
            let tenant = try await custody.keyring.createTenant(label: label, actor: "officer").id
            tenants.append(tenant)
            for subject in 0..<(index == 2 ? 5 : 2) {
                let reference = SubjectReference(value: "v1:\(label)-\(subject)", piiVersion: 1)
                tokens[reference.value] = Self.token(UInt32(index * 100 + subject + 1))
                try await core.enrol(tenant: tenant, subject: reference, token: tokens[reference.value]!)
            }
        }
        let (a, b, c) = (tenants[0], tenants[1], tenants[2])
        #expect(try await core.identify(tenant: a, probe: tokens["v1:tenant-a-1"]!, top: 1).first?.subject == "v1:tenant-a-1")
        #expect(core.gallerySubjectsInMemory == 2)
        _ = try await core.identify(tenant: b, probe: tokens["v1:tenant-b-0"]!, top: 1)
        #expect(core.gallerySubjectsInMemory == 2, "A's gallery was dropped to make room for B's")
        let found = try await core.identify(tenant: c, probe: tokens["v1:tenant-c-4"]!, top: 3)
        #expect(core.gallerySubjectsInMemory == 3, "C alone fills the limit: its 3 most recent subjects")
        #expect(found.first?.subject == "v1:tenant-c-4")
        #expect(found.first?.decision.color == .green, "decided on the exact token score (1.0), not the fingerprint's")
        // A dropped gallery comes back from PostgreSQL at its tenant's next identification.
        #expect(try await core.identify(tenant: a, probe: tokens["v1:tenant-a-0"]!, top: 1).first?.subject == "v1:tenant-a-0")
        #expect(core.gallerySubjectsInMemory <= 3)
        await custody.shutdown()
    }
}

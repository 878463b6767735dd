import Composition
import Custody
import CustosModel
import Foundation
import HSM
import Storage
import Testing
import Tokenization
import Verification

/// The composition the service will make: custody makes subject references and keys, the
/// tokenizer turns features into tokens, the verification core sees tokens only.
@Suite("Enrolment, verification and what a stolen database holds")
struct EnrolmentFlowTests {
    /// A distinctive embedding: every value easy to search for in a dump or a log.
    static let canary: [Float] = (0..<512).map { index in Float(0.0123456 + Double(index % 97) * 0.0007123) * (index % 2 == 0 ? 1 : -1) }

    @Test("Enrol a canary face, verify it (green) and an impostor (red); neither pg_dump nor any log holds a feature value")
    func canary() async throws {
        let verification = try await VerificationHarness.make("canary")
        let harness = verification.custody
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        let flow = verification.flow
        let session = try await verification.consentedSession(tenant.id, "candidate-7731", name: "Ada Lovelace", email: "ada@example.com")
        let subject = try await flow.enrol(tenant: tenant.id, session: session, features: try FeatureVector(Self.canary)).subject.value

        let probe = Self.canary.enumerated().map { $0.element + ($0.offset % 5 == 0 ? 0.001 : 0) }
        let second = try await verification.consentedSession(tenant.id, "candidate-7731")
        #expect(try await flow.verify(tenant: tenant.id, session: second, features: try FeatureVector(probe)).color == .green)
        let impostor = (0..<512).map { Float(sin(Double($0) * 1.7)) }
        let third = try await verification.consentedSession(tenant.id, "candidate-7731")
        #expect(try await flow.verify(tenant: tenant.id, session: third, features: try FeatureVector(impostor)).color == .red)
        let fourth = try await verification.consentedSession(tenant.id, "someone-else")
        let found = try await flow.identify(tenant: tenant.id, session: fourth, features: try FeatureVector(probe), top: 3)
        #expect(found.first?.subject == subject)
        #expect(found.first?.decision.color == .green)

        let dump = try harness.dump()
        #expect(dump.contains(subject), "the dump does hold the enrolment (as a token and a reference)")
        let norm = sqrt(Self.canary.reduce(0) { $0 + Double($1) * Double($1) })
        var needles = Set<String>()
        for (index, value) in Self.canary.prefix(64).enumerated() {
            for candidate in [Double(value), Double(value) / norm] {
                needles.insert(String(format: "%.6f", abs(candidate)))
                needles.insert(String(format: "%.5e", abs(candidate)))
            }
            // Binary forms, as bytea hex would show them: two consecutive floats' bytes, in
            // either byte order (16 hex digits cannot occur by chance in a dump this size).
            let next = Self.canary[index + 1]
            let little = [value.bitPattern, next.bitPattern].map { String(format: "%08x", $0.byteSwapped) }.joined()
            let big = [value.bitPattern, next.bitPattern].map { String(format: "%08x", $0) }.joined()
            needles.insert(little)
            needles.insert(big)
        }
        let logs = harness.logs.text
        for needle in needles {
            #expect(!dump.contains(needle), "a feature value is in the dump: \(needle)")
            #expect(!logs.contains(needle), "a feature value is in a log line: \(needle)")
        }
        for personal in ["candidate-7731", "Ada Lovelace", "Lovelace", "ada@example.com"] {
            #expect(!dump.contains(personal), "personal data is stored only sealed or as an HMAC: \(personal)")
            #expect(!logs.contains(personal), "personal data is in a log line: \(personal)")
        }
        await harness.shutdown()
    }

    @Test("Tenant B cannot verify against, identify in, export or erase tenant A's subjects; erasure deletes the rows")
    func crossTenantAndErasure() async throws {
        let verification = try await VerificationHarness.make("crosstenant")
        let harness = verification.custody
        let a = try await harness.keyring.createTenant(label: "tenant-a", actor: "officer")
        let b = try await harness.keyring.createTenant(label: "tenant-b", actor: "officer")
        let flow = verification.flow
        let face = try FeatureVector(Self.canary)
        let enrolment = try await verification.consentedSession(a.id, "candidate-1", name: "Grace Hopper")
        _ = try await flow.enrol(tenant: a.id, session: enrolment, features: face)

        // B knows the external id, and even A's session id: neither reaches A's data.
        await #expect(throws: VerificationError.sessionNotFound(enrolment)) {
            _ = try await verification.sessions.status(tenant: b.id, session: enrolment)
        }
        let bSession = try await verification.consentedSession(b.id, "candidate-1")
        await #expect(throws: VerificationError.notEnrolled) {
            _ = try await flow.verify(tenant: b.id, session: bSession, features: face)
        }
        let bSearch = try await verification.consentedSession(b.id, "searcher")
        #expect(try await flow.identify(tenant: b.id, session: bSearch, features: face, top: 5).isEmpty)
        let bExport = try await verification.rights.export(tenant: b.id, externalID: PersonalText("candidate-1"), actor: "dpo")
        #expect(bExport.biometricTemplates.isEmpty && bExport.sessions.count == 1, "B sees only its own session")
        #expect(bExport.sessions.allSatisfy { $0.candidateName == nil })
        let bErase = try await verification.rights.erase(tenant: b.id, externalID: PersonalText("candidate-1"), actor: "dpo")
        #expect(bErase == ErasureCounts(templates: 0, sessions: 1), "B's erase reaches only B's own rows")
        #expect(try await verification.count("templates", tenant: a.id) == 1)
        #expect(try await verification.count("verification_sessions", tenant: a.id) == 1)

        let aVerify = try await verification.consentedSession(a.id, "candidate-1")
        #expect(try await flow.verify(tenant: a.id, session: aVerify, features: face).color == .green)
        let erased = try await verification.rights.erase(tenant: a.id, externalID: PersonalText("candidate-1"), actor: "dpo")
        #expect(erased == ErasureCounts(templates: 1, sessions: 2))
        #expect(try await verification.count("templates", tenant: a.id) == 0, "erasure deletes the rows")
        #expect(try await verification.count("verification_sessions", tenant: a.id) == 0)
        let aSearch = try await verification.consentedSession(a.id, "searcher")
        #expect(try await flow.identify(tenant: a.id, session: aSearch, features: face, top: 5).isEmpty)
        await harness.shutdown()
    }

    @Test("After a biometric key rotation old tokens no longer match: subjects are re-enrolled")
    func reEnrolAfterRotation() async throws {
        let verification = try await VerificationHarness.make("reenrol")
        let harness = verification.custody
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        let tokenizer = verification.tokenizer
        let core = verification.core
        let s1 = SubjectReference(value: "v1:" + String(repeating: "ab", count: 32), piiVersion: 1)
        let face = try FeatureVector(Self.canary)
        let old = try await tokenizer.tokenize(face, tenant: tenant.id)
        try await core.enrol(tenant: tenant.id, subject: s1, token: old)
        try await harness.keyring.rotateBiometric(tenant.id, actor: "officer")
        let fresh = try await tokenizer.tokenize(face, tenant: tenant.id)
        #expect(fresh.keyVersion == old.keyVersion + 1)
        // Quaternary values of unrelated keys agree by chance at 1 position in 4 (about 1,024 of
        // 4,096, σ ≈ 28): below chance + 5σ, the old token says nothing about the new one.
        #expect(old.matchingPositions(with: fresh) < 1_163, "renewed: the old token says nothing about the new one")
        await #expect(throws: VerificationError.notEnrolled) { _ = try await core.verify(tenant: tenant.id, subject: s1, probe: fresh) }
        try await core.enrol(tenant: tenant.id, subject: s1, token: fresh)
        #expect(try await core.verify(tenant: tenant.id, subject: s1, probe: fresh).color == .green)
        await harness.shutdown()
    }
}

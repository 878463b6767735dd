import Composition
import Custody
import CustosModel
import Foundation
import Storage
import Testing
import Tokenization
import Verification

@Suite("Tokenization budget and key versions still in use")
struct RateLimitAndReferenceTests {
    static let face: [Float] = (0..<128).map { Float(sin(Double($0) * 0.61)) }

    @Test("A tenant over its tokenization budget is refused with a clear error and an audit entry; others are not")
    func budget() async throws {
        let custody = try await CustodyHarness.make("budget")
        let verification = VerificationHarness(custody) { $0.tokenizationBudget = TokenizationBudget(perSecond: 1_000, burst: 1_000) }
        let a = try await custody.keyring.createTenant(label: "tenant-a", actor: "officer").id
        let b = try await custody.keyring.createTenant(label: "tenant-b", actor: "officer").id
        // One a minute: a burst of one, the next token a minute later (12 a minute refilled one
        // within 5 s, which a loaded CI machine can take between the two calls).
        try await verification.policies.set(try TenantPolicy(green: 0.6, amber: 0.5, retentionDays: 90, tokenizationsPerMinute: 1), for: a, actor: "officer")
        let features = try FeatureVector(Self.face)

        let first = try await verification.consentedSession(a, "c1")
        _ = try await verification.flow.enrol(tenant: a, session: first, features: features)
        let second = try await verification.consentedSession(a, "c1")
        do {
            _ = try await verification.flow.verify(tenant: a, session: second, features: features)
            Issue.record("a second tokenization within the burst was allowed")
        } catch let error as TokenizationError {
            #expect(error == .rateLimited(a))
            #expect("\(error)".contains("over its tokenization budget"))
        }
        #expect(try await verification.sessions.status(tenant: a, session: second).outcome == nil, "the refused call wrote no outcome")
        let entries = try await verification.auditEntries("tokenization.rate_limited")
        #expect(entries.count == 1)
        #expect(entries.first?.tenant == a)

        // Tenant B keeps the default budget.
        for index in 0..<3 {
            let session = try await verification.consentedSession(b, "b\(index)")
            _ = try await verification.flow.enrol(tenant: b, session: session, features: features)
        }
        await custody.shutdown()
    }

    @Test("Biometric, data and pii versions are not destroyed while stored values need them")
    func referencesBlockDestruction() async throws {
        let verification = try await VerificationHarness.make("references")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let session = try await verification.consentedSession(tenant, "ref-1", name: "Mary Jackson")
        _ = try await verification.flow.enrol(tenant: tenant, session: session, features: try FeatureVector(Self.face))

        // No overlap: v1 retires at once, the case where references alone block destruction.
        try await keyring.rotateBiometric(tenant, overlap: .zero, actor: "officer")
        try await keyring.rotate(tenant, .data, actor: "officer")
        try await keyring.rotate(tenant, .pii, actor: "officer")
        for purpose in [KeyPurpose.bioSeed, .bioPRF, .data, .pii] {
            do {
                try await keyring.destroy(tenant, purpose, version: 1, waitingPeriod: .zero, actor: "officer")
                Issue.record("destroyed \(purpose.rawValue) v1 while stored values need it")
            } catch let error as CustodyError {
                guard case .stillNeeded(_, let refused, 1, let reason) = error else { Issue.record("got \(error)"); continue }
                #expect(refused == purpose && reason.contains("stored values"))
            }
        }
        // After a pii rotation the same external id still finds its subject, which the lookup
        // moves to its v2 reference; a new external id gets a v2 reference.
        let again = try await verification.sessions.create(tenant: tenant, externalID: PersonalText("ref-1"), name: nil, email: nil)
        #expect(again.subject.piiVersion == 2)
        let fresh = try await verification.sessions.create(tenant: tenant, externalID: PersonalText("ref-2"), name: nil, email: nil)
        #expect(fresh.subject.piiVersion == 2)
        let later = try await verification.consentedSession(tenant, "ref-1")
        await #expect(throws: VerificationError.notEnrolled, "enrolled under biometric v1 only: re-enrol under v2") {
            _ = try await verification.flow.verify(tenant: tenant, session: later, features: try FeatureVector(Self.face))
        }
        _ = try await verification.rights.erase(tenant: tenant, externalID: PersonalText("ref-1"), actor: "dpo")
        for purpose in [KeyPurpose.bioSeed, .bioPRF, .data, .pii] {
            try await keyring.destroy(tenant, purpose, version: 1, waitingPeriod: .zero, actor: "officer")
        }
        let destroyed = try await keyring.versions(tenant).filter { $0.version == 1 && $0.state == .destroyed }.map(\.purpose)
        #expect(Set(destroyed).isSuperset(of: [.bioSeed, .bioPRF, .data, .pii]))
        await verification.custody.shutdown()
    }
}

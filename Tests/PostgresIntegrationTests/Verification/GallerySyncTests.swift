import Composition
import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage
import Testing
import Tokenization
import Verification

@Suite("The 1:N gallery across two instances on one PostgreSQL")
struct GallerySyncTests {
    static func face(_ seed: Double) -> [Float] { (0..<128).map { Float(cos(Double($0) * seed + 1 / seed)) } }

    /// Instance A with its gallery listener running (cancel `listener` at the end), a second
    /// service-role connection (another instance's writes, or a forger's) and one tenant.
    private static func listeningInstance(
        _ name: String
    ) async throws -> (first: VerificationHarness, second: Database, tenant: TenantID, listener: Task<Void, Never>) {
        let first = try await VerificationHarness.make(name)
        let second = try first.custody.secondServiceDatabase()
        let tenant = try await first.custody.keyring.createTenant(label: "acme", actor: "officer").id
        let listener = Task { await first.core.runGalleryListener() }
        for _ in 0..<1_000 where !first.core.isListening { try await Task.sleep(for: .milliseconds(10)) }
        #expect(first.core.isListening)
        return (first, second, tenant, listener)
    }

    /// Enrols `name` with ``face(_:)`` of `seed` on `harness`, whose gallery then finds it GREEN.
    private static func enrolWarm(
        _ harness: VerificationHarness, _ tenant: TenantID, _ name: String, seed: Double
    ) async throws -> (subject: SubjectReference, probe: BiometricToken) {
        let session = try await harness.consentedSession(tenant, name)
        let subject = try await harness.flow.enrol(tenant: tenant, session: session, features: try FeatureVector(face(seed))).subject
        let probe = try await harness.tokenizer.tokenize(try FeatureVector(face(seed)), tenant: tenant)
        let found = try await harness.core.identify(tenant: tenant, probe: probe, top: 1).first
        #expect(found?.subject == subject.value && found?.decision.color == .green, "warm")
        return (subject, probe)
    }

    @Test("An enrolment on instance B is found by instance A's warm gallery; an erasure on B is never returned by A")
    func twoInstances() async throws {
        let first = try await VerificationHarness.make("gallery")
        let second = VerificationHarness(first.custody, database: try first.custody.secondServiceDatabase())
        let tenant = try await first.custody.keyring.createTenant(label: "acme", actor: "officer").id
        let listener = Task { await first.core.runGalleryListener() }
        defer { listener.cancel() }
        for _ in 0..<1_000 where !first.core.isListening { try await Task.sleep(for: .milliseconds(10)) }
        #expect(first.core.isListening)

        // Warm A's gallery with one subject.
        let warm = try await first.consentedSession(tenant, "early")
        _ = try await first.flow.enrol(tenant: tenant, session: warm, features: try FeatureVector(Self.face(0.11)))
        let probeEarly = try await first.tokenizer.tokenize(try FeatureVector(Self.face(0.11)), tenant: tenant)
        #expect(try await first.core.identify(tenant: tenant, probe: probeEarly, top: 1).first?.decision.color == .green)

        // B enrols someone new: A learns it through NOTIFY, without reloading from scratch.
        let late = try await second.consentedSession(tenant, "late")
        let lateSubject = try await second.flow.enrol(tenant: tenant, session: late, features: try FeatureVector(Self.face(0.23))).subject
        let probeLate = try await first.tokenizer.tokenize(try FeatureVector(Self.face(0.23)), tenant: tenant)
        var found = [IdentifiedCandidate]()
        for _ in 0..<200 {
            found = try await first.core.identify(tenant: tenant, probe: probeLate, top: 1)
            if found.first?.subject == lateSubject.value { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(found.first?.subject == lateSubject.value, "A's gallery followed B's enrolment")
        #expect(found.first?.decision.color == .green)

        // B erases: A must not return the subject, not even once, whatever its gallery holds.
        _ = try await second.rights.erase(tenant: tenant, externalID: PersonalText("late"), actor: "dpo")
        let after = try await first.core.identify(tenant: tenant, probe: probeLate, top: 5)
        #expect(!after.contains { $0.subject == lateSubject.value }, "an erased subject is never identified")
        await first.custody.shutdown()
    }

    @Test("Forged erasure and migration notices (pg_notify by any role that can connect) do not hide an enrolled subject from a warm gallery (helper-71)")
    func forgedRemovalNotices() async throws {
        let (first, secondDatabase, tenant, listener) = try await Self.listeningInstance("galleryforged")
        defer { listener.cancel() }
        let (subject, probe) = try await Self.enrolWarm(first, tenant, "ada", seed: 0.11)

        // The service role's password is enough to send these; the payloads name the subject.
        for payload in [
            "forged|\(tenant.rawValue)|x|\(probe.keyVersion)|\(subject.value)",
            "forged|\(tenant.rawValue)|m|\(probe.keyVersion + 1)|\(subject.value)",
        ] {
            _ = try await secondDatabase.withTransaction(context: "forger") { connection in
                try await connection.query("SELECT pg_notify(\(TemplateStore.galleryChannel), \(payload))", logger: Database.quiet)
            }
        }
        // A notice is applied within milliseconds of its commit: a second of identifications
        // covers it (on the code before, the subject was gone from the first or second one on).
        for _ in 0..<20 {
            let found = try await first.core.identify(tenant: tenant, probe: probe, top: 1)
            #expect(found.first?.subject == subject.value, "the enrolled subject is still identified")
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(first.core.isListening)
        await secondDatabase.shutdown()
        await first.custody.shutdown()
    }

    @Test("A template committed with no notice (its writer died before sending one) reaches another instance's warm gallery by the periodic catch-up")
    func withoutNotice() async throws {
        let (first, secondDatabase, tenant, listener) = try await Self.listeningInstance("gallerypoll")
        defer { listener.cancel() }
        // Warm A's gallery with one subject.
        _ = try await Self.enrolWarm(first, tenant, "early", seed: 0.11)

        // Another instance's write through the store alone: committed, and no notice follows.
        let token = try await first.tokenizer.tokenize(try FeatureVector(Self.face(0.37)), tenant: tenant)
        let subject = SubjectReference(value: "v1:" + String(repeating: "7e", count: 32), piiVersion: 1)
        let seal = try await first.recordSeals.seal(token.stored, subject: subject.value, tenant: tenant)
        try await secondDatabase.withTenant(tenant, context: "test writer without notice") { connection in
            try await TemplateStore.upsert(subject: subject, token: token, seal: seal, tenant: tenant, on: connection)
        }
        var found = [IdentifiedCandidate]()
        for _ in 0..<500 {
            found = try await first.core.identify(tenant: tenant, probe: token, top: 1)
            if found.first?.subject == subject.value { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(found.first?.subject == subject.value, "A's kept gallery caught up with a write it was never told of")
        #expect(first.core.isListening, "found by the catch-up, not by a reload after the listener dropped")
        await secondDatabase.shutdown()
        await first.custody.shutdown()
    }
}

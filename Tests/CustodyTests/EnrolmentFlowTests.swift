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

    private func subjectReference(_ harness: CustodyHarness, _ tenant: TenantID, _ externalID: String) async throws -> String {
        let (pii, version) = try await harness.keyring.key(tenant, .pii)
        let mac = try await harness.pool.hmacSHA256(key: pii, data: Array(externalID.utf8))
        return "v\(version):" + mac.map { String(format: "%02x", $0) }.joined()
    }

    @Test("Enrol a canary face, verify it (green) and an impostor (red); neither pg_dump nor any log holds a feature value")
    func canary() async throws {
        let harness = try await CustodyHarness.make("canary")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        let tokenizer = BiometricTokenizer(pool: harness.pool, keyring: harness.keyring)
        let core = VerificationService(database: harness.service)
        let subject = try await subjectReference(harness, tenant.id, "candidate-7731")

        let enrolled = try await tokenizer.tokenize(try FeatureVector(Self.canary), tenant: tenant.id)
        try await core.enrol(tenant: tenant.id, subject: subject, token: enrolled)
        let probe = Self.canary.enumerated().map { $0.element + ($0.offset % 5 == 0 ? 0.001 : 0) }
        let decision = try await core.verify(tenant: tenant.id, subject: subject, probe: try await tokenizer.tokenize(try FeatureVector(probe), tenant: tenant.id))
        #expect(decision.color == .green)
        let impostor = (0..<512).map { Float(sin(Double($0) * 1.7)) }
        let impostorDecision = try await core.verify(tenant: tenant.id, subject: subject, probe: try await tokenizer.tokenize(try FeatureVector(impostor), tenant: tenant.id))
        #expect(impostorDecision.color == .red)
        let found = try await core.identify(tenant: tenant.id, probe: try await tokenizer.tokenize(try FeatureVector(probe), tenant: tenant.id))
        #expect(found.first?.subject == subject)

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
        #expect(!dump.contains("candidate-7731"), "the external id is not stored, only its HMAC")
        await harness.shutdown()
    }

    @Test("Tenant B cannot verify against, identify in, or erase tenant A's subjects; erasure deletes the rows")
    func crossTenantAndErasure() async throws {
        let harness = try await CustodyHarness.make("crosstenant")
        let a = try await harness.keyring.createTenant(label: "tenant-a", actor: "officer")
        let b = try await harness.keyring.createTenant(label: "tenant-b", actor: "officer")
        let tokenizer = BiometricTokenizer(pool: harness.pool, keyring: harness.keyring)
        let core = VerificationService(database: harness.service)
        let face = try FeatureVector(Self.canary)
        let subject = try await subjectReference(harness, a.id, "candidate-1")
        try await core.enrol(tenant: a.id, subject: subject, token: try await tokenizer.tokenize(face, tenant: a.id))

        await #expect(throws: VerificationError.notEnrolled) {
            _ = try await core.verify(tenant: b.id, subject: subject, probe: try await tokenizer.tokenize(face, tenant: b.id))
        }
        #expect(try await core.identify(tenant: b.id, probe: try await tokenizer.tokenize(face, tenant: b.id)).isEmpty)
        #expect(try await core.erase(tenant: b.id, subject: subject) == 0, "B's erase does not reach A's rows")
        #expect(try await core.verify(tenant: a.id, subject: subject, probe: try await tokenizer.tokenize(face, tenant: a.id)).color == .green)

        #expect(try await core.erase(tenant: a.id, subject: subject) == 1)
        let left = try await harness.owner.withTransaction(context: "count") { connection in
            try await connection.query("SELECT set_config('app.tenant_id', \(a.id.rawValue), true)", logger: Database.quiet)
            return try await connection.query("SELECT count(*)::int FROM templates", logger: Database.quiet).collect().first!.decode(Int.self)
        }
        #expect(left == 0, "erasure deletes the rows")
        #expect(try await core.identify(tenant: a.id, probe: try await tokenizer.tokenize(face, tenant: a.id)).isEmpty)
        await harness.shutdown()
    }

    @Test("After a biometric key rotation old tokens no longer match: subjects are re-enrolled")
    func reEnrolAfterRotation() async throws {
        let harness = try await CustodyHarness.make("reenrol")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        let tokenizer = BiometricTokenizer(pool: harness.pool, keyring: harness.keyring)
        let core = VerificationService(database: harness.service)
        let face = try FeatureVector(Self.canary)
        let old = try await tokenizer.tokenize(face, tenant: tenant.id)
        try await core.enrol(tenant: tenant.id, subject: "s1", token: old)
        try await harness.keyring.rotateBiometric(tenant.id, actor: "officer")
        let fresh = try await tokenizer.tokenize(face, tenant: tenant.id)
        #expect(fresh.keyVersion == old.keyVersion + 1)
        #expect(old.matchingPositions(with: fresh) < 8, "renewed: the old token says nothing about the new one")
        await #expect(throws: VerificationError.notEnrolled) { _ = try await core.verify(tenant: tenant.id, subject: "s1", probe: fresh) }
        try await core.enrol(tenant: tenant.id, subject: "s1", token: fresh)
        #expect(try await core.verify(tenant: tenant.id, subject: "s1", probe: fresh).color == .green)
        await harness.shutdown()
    }
}

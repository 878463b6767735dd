import CustosModel
import Foundation
@testable import Storage
import Testing

/// Verify's opening statement (issue 12: one round trip for the session lock, the attempt
/// count and the template read): what each of the three statements it replaced did, together.
@Suite("Storage: Verify's opening statement (session lock, attempt count, templates)")
struct VerifyOpeningTests {
    static func token(_ version: Int, _ value: UInt32) -> BiometricToken {
        BiometricToken(keyVersion: version, format: .compact, values: [UInt32](repeating: value, count: BiometricTokenFormat.compact.shape.positions))
    }

    @Test("It counts one attempt per call, returns the subject's templates by version, and sees nothing of another tenant")
    func opensCountsAndReads() async throws {
        let harness = try await CustodyHarness.make("vopen")
        let a = try await harness.keyring.createTenant(label: "tenant-a", actor: "test").id
        let b = try await harness.keyring.createTenant(label: "tenant-b", actor: "test").id
        let subject = SubjectReference(value: "subject-1", piiVersion: 1)
        let session = UUID()
        let now = Date()
        try await harness.service.withTenant(a, context: "test") { connection in
            try await SessionStore.insert(
                SessionStore.New(id: session, subject: subject, sealedName: nil, sealedEmail: nil, dataKeyVersion: nil,
                                 expiresAt: now.addingTimeInterval(600), linkHash: Array(repeating: 7, count: 32), subjectSeal: .unchecked),
                tenant: a, on: connection
            )
            try await TemplateStore.upsert(subject: subject, token: Self.token(1, 3), seal: .unchecked, tenant: a, on: connection)
            try await TemplateStore.upsert(subject: subject, token: Self.token(2, 5), seal: .unchecked, tenant: a, on: connection)
        }
        func open(_ tenant: TenantID, _ id: UUID, cutoff: Date) async throws -> SessionStore.VerifyOpening? {
            try await harness.service.withTenant(tenant, context: "test") { connection in
                try await SessionStore.openForVerify(id, tenant: tenant, now: now, cutoff: cutoff, on: connection)
            }
        }
        let first = try #require(try await open(a, session, cutoff: now.addingTimeInterval(-60)))
        #expect(first.row.id == session)
        #expect(first.row.subject == subject)
        #expect(first.attempts == 1)
        #expect(first.enrolledVersions == [1, 2])
        #expect(try first.template(keyVersion: 1)?.token(format: .compact) == Self.token(1, 3))
        #expect(try first.template(keyVersion: 2)?.token(format: .compact) == Self.token(2, 5))
        #expect(first.template(keyVersion: 3) == nil)
        let second = try #require(try await open(a, session, cutoff: now.addingTimeInterval(-60)))
        #expect(second.attempts == 2)
        // A window that started at or before the cutoff starts afresh.
        let fresh = try #require(try await open(a, session, cutoff: now))
        #expect(fresh.attempts == 1)
        // Another tenant's scope sees no session, and counts nothing against the subject.
        #expect(try await open(b, session, cutoff: now.addingTimeInterval(-60)) == nil)
        #expect(try await open(a, UUID(), cutoff: now.addingTimeInterval(-60)) == nil)
        let counters = try await harness.service.withTenant(b, context: "test") { connection in
            try await connection.query("SELECT count(*)::int FROM verification_attempts", logger: Database.quiet).collect().first!.decode(Int.self)
        }
        #expect(counters == 0)
        let afterRefusals = try #require(try await open(a, session, cutoff: now.addingTimeInterval(-60)))
        #expect(afterRefusals.attempts == 2)
        await harness.shutdown()
    }

    @Test("A subject without templates opens with none (Verify then refuses: not enrolled)")
    func opensWithoutTemplates() async throws {
        let harness = try await CustodyHarness.make("vopen0")
        let a = try await harness.keyring.createTenant(label: "tenant-a", actor: "test").id
        let session = UUID()
        let now = Date()
        let opened = try await harness.service.withTenant(a, context: "test") { connection in
            try await SessionStore.insert(
                SessionStore.New(id: session, subject: SubjectReference(value: "subject-0", piiVersion: 1), sealedName: nil, sealedEmail: nil,
                                 dataKeyVersion: nil, expiresAt: now.addingTimeInterval(600), linkHash: Array(repeating: 9, count: 32), subjectSeal: .unchecked),
                tenant: a, on: connection
            )
            return try await SessionStore.openForVerify(session, tenant: a, now: now, cutoff: now.addingTimeInterval(-60), on: connection)
        }
        let opening = try #require(opened)
        #expect(opening.attempts == 1)
        #expect(opening.enrolledVersions.isEmpty)
        await harness.shutdown()
    }
}

import Composition
import Custody
import CustosModel
import Foundation
@testable import Storage
import Testing
import Tokenization
import Verification

/// A pii move (session creation or export by external id) and a verification of the same
/// subject lock the same rows — its session and its template — and must take them in the same
/// order, or PostgreSQL aborts one of them as a deadlock (a database error: INTERNAL to the
/// caller, for nothing the caller did wrong).
@Suite("pii move racing a verification of the same subject")
struct PIIMoveConcurrencyTests {
    /// Lock requests waiting in the cluster (the test runs alone under its filter).
    static func waitingLocks(_ owner: Database) async throws -> Int {
        try await owner.withTransaction(context: "count lock waits") { connection in
            try await connection.query("SELECT count(*)::int FROM pg_locks WHERE NOT granted", logger: Database.quiet)
                .collect().first!.decode(Int.self)
        }
    }

    static func waitUntil(_ owner: Database, waiting count: Int) async throws {
        for _ in 0..<1_000 where try await waitingLocks(owner) < count { try await Task.sleep(for: .milliseconds(10)) }
    }

    @Test("Session creation moving a subject while a verification of the subject's old session runs: both complete")
    func moveAndVerifyDoNotDeadlock() async throws {
        let verification = try await VerificationHarness.make("attack_piirace")
        let keyring = verification.custody.keyring
        let owner = verification.custody.owner
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let features = try FeatureVector(PIIReferenceMigrationTests.face)
        let (old, _) = try await verification.flow.enrol(tenant: tenant, session: try await verification.consentedSession(tenant, "p-1"), features: features)
        let pending = try await verification.consentedSession(tenant, "p-1")  // under the v1 reference
        try await keyring.rotate(tenant, .pii, actor: "officer")

        // Hold the subject's template so that the move, then the verification, queue on it in
        // that order: the move has the template next, the verification holds the session.
        let (locked, lockedSignal) = AsyncStream<Void>.makeStream()
        let (release, releaseSignal) = AsyncStream<Void>.makeStream()
        let holder = Task { () async throws -> Void in
            try await owner.withTransaction(context: "hold template") { connection in
                try await connection.query("SELECT set_config('app.tenant_id', \(tenant.rawValue), true)", logger: Database.quiet)
                try await connection.query("SELECT 1 FROM templates WHERE subject_ref = \(old.value) FOR UPDATE", logger: Database.quiet)
                lockedSignal.yield()
                for await _ in release { break }
            }
        }
        for await _ in locked { break }
        let move = Task { try await verification.sessions.create(tenant: tenant, externalID: PersonalText("p-1"), name: nil, email: nil) }
        try await Self.waitUntil(owner, waiting: 1)
        let verify = Task { try await verification.flow.verify(tenant: tenant, session: pending, features: features) }
        try await Self.waitUntil(owner, waiting: 2)
        releaseSignal.yield()
        try await holder.value

        let moved = await move.result
        let verified = await verify.result
        #expect((try? moved.get())?.subject.piiVersion == 2, "session creation failed: \(String(describing: moved))")
        #expect((try? verified.get())?.color == .green, "verification failed: \(String(describing: verified))")
        await verification.custody.shutdown()
    }
}

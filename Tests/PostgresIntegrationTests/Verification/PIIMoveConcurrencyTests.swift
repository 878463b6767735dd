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
    /// Backends waiting, directly or behind another waiter, on the transaction of `holder`
    /// (a backend pid): only this test's calls, though other suites run at the same time.
    static func waitingLocks(_ owner: Database, behind holder: Int32) async throws -> Int {
        try await owner.withTransaction(context: "count lock waits") { connection in
            try await connection.query("""
                WITH RECURSIVE blocked(pid) AS (
                    SELECT pid FROM pg_stat_activity WHERE \(holder)::int = ANY(pg_blocking_pids(pid))
                    UNION
                    SELECT a.pid FROM pg_stat_activity a JOIN blocked b ON b.pid = ANY(pg_blocking_pids(a.pid))
                ) SELECT count(*)::int FROM blocked
                """, logger: Database.quiet).collect().first!.decode(Int.self)
        }
    }

    /// At most 10 s: the move waits behind the holder from its start, and must be released well
    /// within its statement timeout (24 s in the harness). On a loaded machine the verification
    /// may reach its lock later than that; the calls then run one after the other, which this
    /// test cannot tell from a fix, but never fails for it.
    static func waitUntil(_ owner: Database, waiting count: Int, behind holder: Int32) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline, try await waitingLocks(owner, behind: holder) < count {
            try await Task.sleep(for: .milliseconds(10))
        }
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
        let (locked, lockedSignal) = AsyncStream<Int32>.makeStream()
        let (release, releaseSignal) = AsyncStream<Void>.makeStream()
        let holder = Task { () async throws -> Void in
            try await owner.withTransaction(context: "hold template") { connection in
                try await connection.query("SELECT set_config('app.tenant_id', \(tenant.rawValue), true)", logger: Database.quiet)
                try await connection.query("SELECT 1 FROM templates WHERE subject_ref = \(old.value) FOR UPDATE", logger: Database.quiet)
                let pid = try await connection.query("SELECT pg_backend_pid()", logger: Database.quiet).collect().first!.decode(Int32.self)
                lockedSignal.yield(pid)
                for await _ in release { break }
            }
        }
        var holderPID: Int32 = 0
        for await pid in locked { holderPID = pid; break }
        let move = Task { try await verification.sessions.create(tenant: tenant, externalID: PersonalText("p-1"), name: nil, email: nil) }
        try await Self.waitUntil(owner, waiting: 1, behind: holderPID)
        let verify = Task { try await verification.flow.verify(tenant: tenant, session: pending, features: features) }
        try await Self.waitUntil(owner, waiting: 2, behind: holderPID)
        releaseSignal.yield()
        try await holder.value

        let moved = await move.result
        let verified = await verify.result
        #expect((try? moved.get())?.subject.piiVersion == 2, "session creation failed: \(String(describing: moved))")
        #expect((try? verified.get())?.color == .green, "verification failed: \(String(describing: verified))")
        await verification.custody.shutdown()
    }
}

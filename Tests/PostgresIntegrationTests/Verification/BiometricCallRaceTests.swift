import Composition
import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage
import Synchronization
import Testing
import Tokenization
import Verification

/// Enrol and Verify read the session, tokenize with no connection held, then write in one
/// statement that checks the session again under its lock. The tokenize call-back is the
/// moment between the read and the write: each test does there what a concurrent request or an
/// officer could, and checks that the write neither overwrites nor resurrects anything.
@Suite("Enrol and Verify: what happens between the read and the write")
struct BiometricCallRaceTests {
    static let face: [Float] = (0..<128).map { Float(sin(Double($0) * 0.61)) }
    static let otherFace: [Float] = (0..<128).map { Float(cos(Double($0) * 1.37 + 0.4)) }

    @Test("Two first enrolments of one subject: the one that writes second is refused and the first face stays")
    func concurrentFirstEnrolments() async throws {
        let verification = try await VerificationHarness.make("race_enrol")
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        let first = try await verification.consentedSession(tenant, "cand-1")
        let second = try await verification.consentedSession(tenant, "cand-1")
        let token = try await verification.tokenizer.tokenize(try FeatureVector(Self.face), tenant: tenant)
        await #expect(throws: VerificationError.alreadyEnrolled) {
            _ = try await verification.core.enrol(tenant: tenant, session: first) {
                // Another session of the same subject enrols another face meanwhile.
                _ = try await verification.flow.enrol(tenant: tenant, session: second, features: try FeatureVector(Self.otherFace))
                return token
            }
        }
        #expect(try await verification.sessions.status(tenant: tenant, session: first).outcome == nil, "the refused enrolment completed nothing")
        #expect(try await verification.count("templates", tenant: tenant) == 1)
        let probe = try await verification.consentedSession(tenant, "cand-1")
        #expect(try await verification.flow.verify(tenant: tenant, session: probe, features: try FeatureVector(Self.otherFace)).color == .green,
                "the face enrolled first is the one kept")
        await verification.custody.shutdown()
    }

    @Test("A subject erased between Enrol's read and its write gets no template back")
    func erasureBetweenReadAndWrite() async throws {
        let verification = try await VerificationHarness.make("race_erase")
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        let session = try await verification.consentedSession(tenant, "cand-1")
        let token = try await verification.tokenizer.tokenize(try FeatureVector(Self.face), tenant: tenant)
        await #expect(throws: VerificationError.sessionNotFound(session)) {
            _ = try await verification.core.enrol(tenant: tenant, session: session) {
                _ = try await verification.rights.erase(tenant: tenant, externalID: PersonalText("cand-1"), actor: "dpo")
                return token
            }
        }
        #expect(try await verification.count("templates", tenant: tenant) == 0)
        #expect(try await verification.count("verification_sessions", tenant: tenant) == 0)
        await verification.custody.shutdown()
    }

    @Test("An erasure that arrives while a replacing Enrol holds the session waits for it and erases the template it wrote")
    func erasureWhileEnrolHoldsSession() async throws {
        // Attack review, session 12: the erasure deleted the subject's templates first (none
        // yet), then waited for the session row the Enrol held; the Enrol's template survived an
        // erasure that reported `templates: 0`, and galleries loaded it again.
        let verification = try await VerificationHarness.make("race_erase_tx")
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        let session = try await verification.consentedSession(tenant, "cand-1")
        let token = try await verification.tokenizer.tokenize(try FeatureVector(Self.face), tenant: tenant)
        let erasure = Mutex<Task<ErasureCounts, any Error>?>(nil)
        // The transaction path: the session row stays locked while the features are tokenized.
        // The erasure and the watcher take connections while this transaction holds one: on purpose.
        _ = try await verification.core.enrol(tenant: tenant, session: session, replacing: true) { try await Database.allowingSecondConnection {
            erasure.withLock { $0 = Task { try await verification.rights.erase(tenant: tenant, externalID: PersonalText("cand-1"), actor: "dpo") } }
            // Return only once the erasure waits on a lock this transaction holds.
            let waited = try await verification.someoneWaitsOnALock()
            #expect(waited, "the erasure never waited for the Enrol's locks")
            return token
        } }
        let counts = try await #require(erasure.withLock { $0 }).value
        #expect(counts == ErasureCounts(templates: 1, sessions: 1))
        #expect(try await verification.count("templates", tenant: tenant) == 0)
        #expect(try await verification.count("verification_sessions", tenant: tenant) == 0)
        await verification.custody.shutdown()
    }

    @Test("A Verify whose session another request completed meanwhile returns no decision and counts no attempt")
    func verifyOvertaken() async throws {
        let verification = try await VerificationHarness.make("race_verify")
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        let face = try FeatureVector(Self.face)
        _ = try await verification.flow.enrol(tenant: tenant, session: try await verification.consentedSession(tenant, "cand-1"), features: face)
        let session = try await verification.consentedSession(tenant, "cand-1")
        let probe = try await verification.tokenizer.tokenize(try FeatureVector(Self.otherFace), tenant: tenant)
        await #expect(throws: VerificationError.sessionCompleted(session)) {
            _ = try await verification.core.verify(tenant: tenant, session: session) {
                // The same session verified (GREEN) by another request first.
                _ = try await verification.flow.verify(tenant: tenant, session: session, features: face)
                return probe
            }
        }
        #expect(try await verification.sessions.status(tenant: tenant, session: session).outcome == .green, "the first decision stands")
        #expect(try await Self.attempts(verification, tenant) == 1, "only the decision written counted")
        await verification.custody.shutdown()
    }

    @Test("An attempt limit reached between Verify's read and its write refuses the call and writes nothing")
    func limitReachedMeanwhile() async throws {
        let custody = try await CustodyHarness.make("race_limit")
        let verification = VerificationHarness(custody) { $0.verificationAttempts = VerificationAttemptLimit(attempts: 1, window: .seconds(3_600)) }
        let tenant = try await custody.keyring.createTenant(label: "acme", actor: "officer").id
        let face = try FeatureVector(Self.face)
        _ = try await verification.flow.enrol(tenant: tenant, session: try await verification.consentedSession(tenant, "cand-1"), features: face)
        let session = try await verification.consentedSession(tenant, "cand-1")
        let other = try await verification.consentedSession(tenant, "cand-1")
        let probe = try await verification.tokenizer.tokenize(face, tenant: tenant)
        // Another instance (its own count in memory; this one's holds the call's attempt).
        let instance = VerificationHarness(custody) { $0.verificationAttempts = VerificationAttemptLimit(attempts: 1, window: .seconds(3_600)) }
        do {
            _ = try await verification.core.verify(tenant: tenant, session: session) {
                _ = try await instance.flow.verify(tenant: tenant, session: other, features: face)
                return probe
            }
            Issue.record("a second attempt over a limit of one was answered")
        } catch let error as VerificationError {
            guard case .tooManyAttempts(let limit, _, let retryAfter) = error else { Issue.record("got \(error)"); return }
            #expect(limit == 1)
            #expect(retryAfter > verification.clock.now())
        }
        #expect(try await verification.sessions.status(tenant: tenant, session: session).outcome == nil, "the refused attempt completed nothing")
        #expect(try await Self.attempts(verification, tenant) == 1)
        await custody.shutdown()
    }

    @Test("Concurrent Verifies of one subject: exactly the limit's number are answered")
    func concurrentVerifiesStopAtTheLimit() async throws {
        let custody = try await CustodyHarness.make("race_many")
        let verification = VerificationHarness(custody) { $0.verificationAttempts = VerificationAttemptLimit(attempts: 3, window: .seconds(3_600)) }
        let tenant = try await custody.keyring.createTenant(label: "acme", actor: "officer").id
        let face = try FeatureVector(Self.face)
        _ = try await verification.flow.enrol(tenant: tenant, session: try await verification.consentedSession(tenant, "cand-1"), features: face)
        var sessions = [UUID]()
        for _ in 0..<8 { sessions.append(try await verification.consentedSession(tenant, "cand-1")) }
        let answered = try await withThrowingTaskGroup(of: Bool.self) { group in
            for session in sessions {
                group.addTask {
                    do {
                        _ = try await verification.flow.verify(tenant: tenant, session: session, features: face)
                        return true
                    } catch VerificationError.tooManyAttempts {
                        return false
                    }
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(answered == 3)
        #expect(try await Self.attempts(verification, tenant) == 3)
        var completed = 0
        for session in sessions where try await verification.sessions.status(tenant: tenant, session: session).outcome != nil { completed += 1 }
        #expect(completed == 3, "only answered attempts completed their sessions")
        await custody.shutdown()
    }

    @Test("Another tenant's session: the read finds nothing and the writes change nothing, whatever tenant they are given")
    func otherTenantsSession() async throws {
        let verification = try await VerificationHarness.make("race_tenant")
        let acme = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        let hostile = try await verification.custody.keyring.createTenant(label: "hostile", actor: "officer").id
        let face = try FeatureVector(Self.face)
        let session = try await verification.consentedSession(acme, "cand-1")
        await #expect(throws: VerificationError.sessionNotFound(session)) {
            _ = try await verification.flow.enrol(tenant: hostile, session: session, features: face)
        }
        // The write functions straight, as a compromised service role could call them.
        let token = try await verification.tokenizer.tokenize(face, tenant: hostile)
        let database = verification.custody.service
        let seal = try await verification.recordSeals.seal(token.stored, subject: "x", tenant: hostile)
        let enrolled = try await database.withAutocommit(context: "test") { connection in
            try await SessionStore.completeEnrolmentIfOpen(
                session, subject: SubjectReference(value: "x", piiVersion: 1), token: token, seal: seal, sessionSeal: .unchecked, tenant: hostile,
                at: Date(), on: connection
            )
        }
        #expect(enrolled == .sessionChanged)
        let verified = try await database.withAutocommit(context: "test") { connection in
            try await SessionStore.completeVerificationIfOpen(
                session, tenant: hostile, outcome: "green", confidence: "high", biometricKeyVersion: 1,
                at: Date(), cutoff: Date().addingTimeInterval(-60), attemptLimit: 20, seal: .unchecked, on: connection
            )
        }
        #expect(verified == .sessionChanged)
        #expect(try await verification.sessions.status(tenant: acme, session: session).outcome == nil, "acme's session is still open")
        #expect(try await verification.count("templates", tenant: hostile) == 0)
        #expect(try await verification.count("verification_attempts", tenant: hostile) == 0)
        await verification.custody.shutdown()
    }

    @Test("A rotation's overlap closed between Enrol's read and its write: no template under the retired version, and the retry enrols under the new one")
    func overlapClosedBetweenReadAndWrite() async throws {
        let verification = try await VerificationHarness.make("race_close")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let face = try FeatureVector(Self.face)
        let session = try await verification.consentedSession(tenant, "cand-1")
        let token = try await verification.tokenizer.tokenize(face, tenant: tenant)
        #expect(token.keyVersion == 1)
        await #expect(throws: VerificationError.biometricVersionRetired(1)) {
            _ = try await verification.core.enrol(tenant: tenant, session: session) {
                // Made under v1; before the write, v2 is active and v1's overlap closed (its
                // templates dropped). Stored now, v1's template would outlive the drop.
                try await keyring.rotateBiometric(tenant, actor: "officer")
                try await keyring.closeBiometricOverlap(tenant, version: 1, actor: "officer")
                return token
            }
        }
        #expect(try await Self.templateVersions(verification, tenant) == [], "nothing stored under the retired version")
        #expect(try await verification.sessions.status(tenant: tenant, session: session).outcome == nil, "the session stays open")
        // Sent again, the features are tokenized under v2 and enrolled; Verify finds them.
        #expect(try await verification.flow.enrol(tenant: tenant, session: session, features: face).keyVersion == 2)
        #expect(try await Self.templateVersions(verification, tenant) == [2])
        #expect(try await verification.flow.verify(tenant: tenant, session: try await verification.consentedSession(tenant, "cand-1"), features: face).color == .green)
        await verification.custody.shutdown()
    }

    @Test("A replacement (one transaction) whose token's version stopped matching before its write stores nothing")
    func overlapClosedDuringReplacement() async throws {
        // A rotation and an overlap's close (HSM key generation, wrapping, audit entries) inside
        // one enrolment's transaction, on purpose: 0.7 s alone, but beside the whole run's other
        // suites on 2 cores it outlasted the usual 30 s operation timeout (CI and local runs,
        // sessions 16–18). The timeout is not what this test is about.
        let verification = try await VerificationHarness.make("race_close_replace", operationTimeout: .seconds(180))
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await verification.flow.enrol(tenant: tenant, session: try await verification.consentedSession(tenant, "cand-1"), features: try FeatureVector(Self.face))
        let session = try await verification.consentedSession(tenant, "cand-1")
        let token = try await verification.tokenizer.tokenize(try FeatureVector(Self.otherFace), tenant: tenant)
        await #expect(throws: VerificationError.biometricVersionRetired(1)) {
            // The keyring's own transactions, inside the replacement's: on purpose.
            _ = try await verification.core.enrol(tenant: tenant, session: session, replacing: true) { try await Database.allowingSecondConnection {
                try await keyring.rotateBiometric(tenant, actor: "officer")
                try await keyring.closeBiometricOverlap(tenant, version: 1, actor: "officer")
                return token
            } }
        }
        #expect(try await Self.templateVersions(verification, tenant) == [], "the close dropped v1's template and none came back")
        #expect(try await verification.sessions.status(tenant: tenant, session: session).outcome == nil)
        await verification.custody.shutdown()
    }

    /// A first enrolment's write (the statement Enrol sends) run in a transaction the test holds
    /// open: inserted, not committed — a slow commit, as on a loaded primary. `body` runs
    /// meanwhile with the holder's backend pid; the holder commits when it returns.
    static func holdingFirstWrite<T: Sendable>(
        _ verification: VerificationHarness, _ tenant: TenantID, session: UUID, token: BiometricToken,
        _ body: @escaping @Sendable (Int32) async throws -> T
    ) async throws -> (SessionStore.BiometricWrite, T) {
        let now = verification.clock.now()
        return try await verification.custody.service.withTransaction(context: "test: hold a first enrolment") { connection in
            let opened = try await SessionStore.readForBiometrics(session, tenant: tenant, now: now, cutoff: now, on: connection)
            let subject = try #require(opened).row.subject
            let seal = try await verification.recordSeals.seal(token.stored, subject: subject.value, tenant: tenant)
            let sessionSeal = try await verification.recordSeals.seal(
                try #require(opened).row.record.completed(outcome: "enrolled", confidence: nil, biometricKeyVersion: token.keyVersion, at: now),
                tenant: tenant
            )
            let written = try await SessionStore.completeEnrolmentIfOpen(
                session, subject: subject, token: token, seal: seal, sessionSeal: sessionSeal, tenant: tenant, at: now, on: connection
            )
            let pid = try await connection.query("SELECT pg_backend_pid()", logger: Database.quiet).collect().first!.decode(Int32.self)
            // `body` starts calls that take connections while this one is held: on purpose.
            return (written, try await Database.allowingSecondConnection { try await body(pid) })
        }
    }

    /// Runs `call` and returns once it has finished or waits on a lock behind `holder` (at most
    /// 30 s: on a loaded machine the call may reach its write later; it then finds the holder
    /// committed and the test passes whether or not the lock is there — it never fails for it).
    static func startBehind<T: Sendable>(
        _ verification: VerificationHarness, holder: Int32, _ call: @escaping @Sendable () async throws -> T
    ) async throws -> Task<T, any Error> {
        let finished = FinishedFlag()
        let task = Task { () async throws -> T in
            defer { finished.set() }
            return try await call()
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline, !finished.isSet,
              try await PIIMoveConcurrencyTests.waitingLocks(verification.custody.owner, behind: holder) == 0 {
            try await Task.sleep(for: .milliseconds(10))
        }
        return task
    }

    @Test("Two first enrolments of one subject under two biometric versions, the first not yet committed: the second is refused, one template")
    func firstEnrolmentsUnderTwoVersions() async throws {
        let verification = try await VerificationHarness.make("race_two_versions")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let first = try await verification.consentedSession(tenant, "cand-1")
        let second = try await verification.consentedSession(tenant, "cand-1")
        // Right after a rotation one instance still tokenizes under v1, another under v2.
        let underV1 = try await verification.tokenizer.tokenize(try FeatureVector(Self.face), tenant: tenant)
        try await keyring.rotateBiometric(tenant, actor: "officer")
        let underV2 = try await verification.tokenizer.tokenize(try FeatureVector(Self.otherFace), tenant: tenant)
        #expect(underV1.keyVersion == 1 && underV2.keyVersion == 2)
        let core = verification.core
        let (written, secondEnrol) = try await Self.holdingFirstWrite(verification, tenant, session: first, token: underV1) { holder in
            // The second enrolment reads (no template committed), tokenizes, then writes.
            try await Self.startBehind(verification, holder: holder) {
                try await core.enrol(tenant: tenant, session: second) { underV2 }
            }
        }
        #expect(written == .completed)
        // Before migration 26 the second write did not wait: both committed, two templates.
        await #expect(throws: VerificationError.alreadyEnrolled) { _ = try await secondEnrol.value }
        #expect(try await Self.templateVersions(verification, tenant) == [1], "exactly one template: the first enrolment's")
        #expect(try await verification.sessions.status(tenant: tenant, session: second).outcome == nil, "the refused enrolment completed nothing")
        await verification.custody.shutdown()
    }

    @Test("A replacement (the transaction path) racing an uncommitted first enrolment under another version leaves one template")
    func replacementRacingFirstEnrolment() async throws {
        let verification = try await VerificationHarness.make("race_two_versions_tx")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let first = try await verification.consentedSession(tenant, "cand-1")
        let second = try await verification.consentedSession(tenant, "cand-1")
        let underV1 = try await verification.tokenizer.tokenize(try FeatureVector(Self.face), tenant: tenant)
        try await keyring.rotateBiometric(tenant, actor: "officer")
        let underV2 = try await verification.tokenizer.tokenize(try FeatureVector(Self.otherFace), tenant: tenant)
        let core = verification.core
        let (written, replacement) = try await Self.holdingFirstWrite(verification, tenant, session: first, token: underV1) { holder in
            try await Self.startBehind(verification, holder: holder) {
                try await core.enrol(tenant: tenant, session: second, replacing: true) { underV2 }
            }
        }
        #expect(written == .completed)
        // Before the fix the replacement deleted the other versions it could see (none
        // committed) and both templates stayed. Now it waits, then replaces v1's.
        #expect(try await replacement.value.token.keyVersion == 2)
        #expect(try await Self.templateVersions(verification, tenant) == [2], "exactly one template: the replacement's")
        await verification.custody.shutdown()
    }

    @Test("The token-level enrol refuses a token whose version's overlap closed: nothing stored")
    func tokenLevelEnrolUnderRetiredVersion() async throws {
        let verification = try await VerificationHarness.make("race_token_enrol")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let token = try await verification.tokenizer.tokenize(try FeatureVector(Self.face), tenant: tenant)
        try await keyring.rotateBiometric(tenant, actor: "officer")
        try await keyring.closeBiometricOverlap(tenant, version: 1, actor: "officer")
        await #expect(throws: VerificationError.biometricVersionRetired(1)) {
            try await verification.core.enrol(tenant: tenant, subject: SubjectReference(value: "subject-1", piiVersion: 1), token: token)
        }
        #expect(try await Self.templateVersions(verification, tenant) == [], "nothing stored under the retired version")
        // A token of the active version is stored as before.
        let current = try await verification.tokenizer.tokenize(try FeatureVector(Self.face), tenant: tenant)
        try await verification.core.enrol(tenant: tenant, subject: SubjectReference(value: "subject-1", piiVersion: 1), token: current)
        #expect(try await Self.templateVersions(verification, tenant) == [2])
        await verification.custody.shutdown()
    }

    @Test("A rotation's overlap closed between Verify's read and its write: no decision recorded, no attempt counted")
    func verifyOverlapClosedBetweenReadAndWrite() async throws {
        let verification = try await VerificationHarness.make("race_close_verify")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let face = try FeatureVector(Self.face)
        _ = try await verification.flow.enrol(tenant: tenant, session: try await verification.consentedSession(tenant, "cand-1"), features: face)
        let session = try await verification.consentedSession(tenant, "cand-1")
        let probe = try await verification.tokenizer.tokenize(face, tenant: tenant)
        await #expect(throws: VerificationError.biometricVersionRetired(1)) {
            _ = try await verification.core.verify(tenant: tenant, session: session) {
                // Read: the subject's v1 template. Before the write, v1's overlap closes and the
                // template is dropped: a decision recorded now was compared with a template
                // that no longer exists.
                try await keyring.rotateBiometric(tenant, actor: "officer")
                try await keyring.closeBiometricOverlap(tenant, version: 1, actor: "officer")
                return probe
            }
        }
        #expect(try await verification.sessions.status(tenant: tenant, session: session).outcome == nil, "the session stays open")
        #expect(try await Self.attempts(verification, tenant) == 0, "no attempt counted")
        await verification.custody.shutdown()
    }

    @Test("Verify during an overlap (one transaction) whose compared version's overlap closed before its write: nothing recorded, nothing migrated")
    func verifyInTransactionOverlapClosed() async throws {
        let verification = try await VerificationHarness.make("race_close_verify_tx")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let face = try FeatureVector(Self.face)
        _ = try await verification.flow.enrol(tenant: tenant, session: try await verification.consentedSession(tenant, "cand-1"), features: face)
        try await keyring.rotateBiometric(tenant, actor: "officer")
        let session = try await verification.consentedSession(tenant, "cand-1")
        let underV1 = try await verification.tokenizer.tokenize(face, tenant: tenant, version: 1)
        let underV2 = try await verification.tokenizer.tokenize(face, tenant: tenant)
        let older = OlderBiometricProbes(versions: [1]) { _ in underV1 }
        await #expect(throws: VerificationError.biometricVersionRetired(1)) {
            // The close's own transaction, inside the Verify's: on purpose.
            _ = try await verification.core.verify(tenant: tenant, session: session, older: older) { try await Database.allowingSecondConnection {
                try await keyring.closeBiometricOverlap(tenant, version: 1, actor: "officer")
                return underV2
            } }
        }
        #expect(try await verification.sessions.status(tenant: tenant, session: session).outcome == nil, "the session stays open")
        #expect(try await Self.attempts(verification, tenant) == 0, "the attempt rolled back with the refusal")
        #expect(try await Self.templateVersions(verification, tenant) == [], "no migration to v2 from a dropped template")
        await verification.custody.shutdown()
    }

    /// The biometric versions of the tenant's templates, in order.
    static func templateVersions(_ verification: VerificationHarness, _ tenant: TenantID) async throws -> [Int] {
        try await verification.custody.owner.withTenant(tenant, context: "test") { connection in
            try await connection.query("SELECT key_version::int8 FROM templates ORDER BY key_version", logger: Database.quiet)
                .collect().map { try $0.decode(Int.self) }
        }
    }

    /// The tenant's stored attempt count, summed over its subjects.
    static func attempts(_ verification: VerificationHarness, _ tenant: TenantID) async throws -> Int {
        try await verification.custody.owner.withTenant(tenant, context: "test") { connection in
            try await connection.query("SELECT coalesce(sum(attempts), 0)::int8 FROM verification_attempts", logger: Database.quiet).collect().first!.decode(Int.self)
        }
    }
}

/// Set once a call has finished (the wait for a lock stops then).
final class FinishedFlag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}

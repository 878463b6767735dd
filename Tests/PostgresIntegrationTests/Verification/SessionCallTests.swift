import Composition
import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage
import Testing
@testable import Verification

/// CreateSession, OpenGateway and RecordConsent are one statement each (migration 27's
/// functions, sent outside BEGIN and COMMIT). What a transaction spanning the call guaranteed,
/// the function checks as it writes: these tests race it, call it with another tenant's ids,
/// and check the plan of a statement about one session for a tenant newer than the statistics.
@Suite("CreateSession, OpenGateway, RecordConsent: one statement each")
struct SessionCallTests {
    @Test("A gateway link opened by many callers at once opens once; the others are told it was used")
    func concurrentOpens() async throws {
        let verification = try await VerificationHarness.make("open_race")
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        let sessions = verification.sessions
        for round in 0..<3 {
            let created = try await sessions.create(tenant: tenant, externalID: PersonalText("cand-\(round)"), name: nil, email: nil)
            let outcomes = try await withThrowingTaskGroup(of: Result<UUID, VerificationError>.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        do {
                            return .success(try await sessions.openGateway(tenant: tenant, link: created.gatewayLink))
                        } catch let error as VerificationError {
                            return .failure(error)
                        }
                    }
                }
                return try await group.reduce(into: [Result<UUID, VerificationError>]()) { $0.append($1) }
            }
            #expect(outcomes.filter { $0 == .success(created.id) }.count == 1, "round \(round): \(outcomes)")
            #expect(outcomes.filter { $0 == .failure(.gatewayLinkUsed) }.count == 7, "round \(round): \(outcomes)")
            #expect(try await sessions.status(tenant: tenant, session: created.id).state == .opened)
        }
        await verification.custody.shutdown()
    }

    @Test("Consent sent again for the same notice keeps its first time (helper-91: it was overwritten); a first time the database's writer changed is refused, not returned")
    func consentRecordedOnce() async throws {
        let verification = try await VerificationHarness.make("consent_once")
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        let sessions = verification.sessions
        let created = try await sessions.create(tenant: tenant, externalID: PersonalText("cand"), name: nil, email: nil)
        let session = try await sessions.openGateway(tenant: tenant, link: created.gatewayLink)
        let first = try await sessions.recordConsent(tenant: tenant, session: session, noticeVersion: "notice-2026-01")
        verification.clock.advance(hours: 0.05)
        let again = try await sessions.recordConsent(tenant: tenant, session: session, noticeVersion: "notice-2026-01")
        #expect(again == first, "the consent's time moved with the repeat")
        #expect(try await sessions.status(tenant: tenant, session: session).consentedAt == first, "the stored consent is not the first, or its MAC fails")

        try await TemplateMACAttackTests.asDatabaseWriter(verification, tenant, "UPDATE verification_sessions SET consented_at = consented_at - interval '1 day'")
        await #expect(throws: RecordIntegrityError.session(session)) {
            _ = try await sessions.recordConsent(tenant: tenant, session: session, noticeVersion: "notice-2026-01")
        }
        await verification.custody.shutdown()
    }

    @Test("Consent sent while a completion holds the session's lock waits for it, is refused as completed and writes nothing")
    func consentOvertakenByCompletion() async throws {
        let verification = try await VerificationHarness.make("consent_race")
        let custody = verification.custody
        let tenant = try await custody.keyring.createTenant(label: "acme", actor: "officer").id
        let session = try await verification.consentedSession(tenant, "cand-1")
        let sessions = verification.sessions

        let (waited, consent) = try await custody.service.withTenant(tenant, context: "test: complete") { connection -> (Bool, Task<Date, any Error>) in
            let row = try #require(try await SessionStore.get(session, forUpdate: true, on: connection))
            // As the service completes one: whole seconds, sealed (GetSession below checks it).
            let now = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
            let seal = try await verification.recordSeals.seal(
                row.record.completed(outcome: "green", confidence: "high", biometricKeyVersion: 1, at: now), tenant: tenant
            )
            _ = try await SessionStore.complete(session, outcome: "green", confidence: "high", biometricKeyVersion: 1, at: now, seal: seal, on: connection)
            // Started only now that this transaction holds the session's lock: started earlier,
            // under load it could consent before the lock was taken.
            // It takes a connection while this transaction holds one: on purpose.
            let consent = Task {
                try await Database.allowingSecondConnection {
                    try await sessions.recordConsent(tenant: tenant, session: session, noticeVersion: "notice-2")
                }
            }
            // Commit only once the consent's statement waits for this lock.
            return (try await verification.someoneWaitsOnALock(running: "record_consent"), consent)
        }
        #expect(waited, "the consent's statement never waited for the completion's lock")
        await #expect(throws: VerificationError.sessionCompleted(session)) { _ = try await consent.value }
        let status = try await sessions.status(tenant: tenant, session: session)
        #expect(status.outcome == .green)
        #expect(status.noticeVersion == "notice-2026-01", "the refused consent wrote nothing")
        await custody.shutdown()
    }

    @Test("The functions called with one tenant and another tenant's link, session or subject find nothing of it and change nothing")
    func otherTenantsIDs() async throws {
        let verification = try await VerificationHarness.make("session_calls_rls")
        let custody = verification.custody
        let a = try await custody.keyring.createTenant(label: "tenant-a", actor: "officer").id
        let b = try await custody.keyring.createTenant(label: "tenant-b", actor: "officer").id
        let sessions = verification.sessions
        let unopened = try await sessions.create(tenant: b, externalID: PersonalText("cand-b"), name: nil, email: nil)
        let opened = try await sessions.create(tenant: b, externalID: PersonalText("cand-c"), name: nil, email: nil)
        _ = try await sessions.openGateway(tenant: b, link: opened.gatewayLink)
        let now = Date()

        // The same statements the service sends, as the service role, outside any transaction.
        let answers = try await custody.service.withConnection(context: "test: functions") { connection in
            var gateway: (UUID?, String)?
            for try await row in try await connection.execute(SessionStore.OpenGateway(hash: unopened.gatewayLink.hash, tenant: a, now: now)) {
                let cells = row.makeRandomAccess()
                gateway = (try cells[0].decode(UUID?.self), try cells[SessionStore.columnCount].decode(String.self))
            }
            var consent: String?
            for try await row in try await connection.execute(SessionStore.RecordConsentIfOpen(id: opened.id, tenant: a, noticeVersion: "n1", now: now, seal: .unchecked)) {
                consent = try row.decode(String.self)
            }
            // B's subject as an "older reference" of a session of A: B's rows are not A's to move.
            let new = SessionStore.New(
                id: UUID(), subject: SubjectReference(value: "v1:" + String(repeating: "ab", count: 32), piiVersion: 1),
                sealedName: nil, sealedEmail: nil, dataKeyVersion: nil, expiresAt: now.addingTimeInterval(3600), linkHash: Array(repeating: 7, count: 32),
                subjectSeal: .unchecked
            )
            let created = try await SessionStore.insertUnlessStoredUnder([unopened.subject.value], new, tenant: a, on: connection)
            return (gateway, consent, created)
        }
        #expect(answers.0?.0 == nil && answers.0?.1 == "unknown", "B's link is unknown to A, and its session is not named: \(String(describing: answers.0))")
        #expect(answers.1 == "not_found", "B's session is not found for A")
        #expect(answers.2, "A's session was inserted: B's rows under the subject were not seen")

        #expect(try await sessions.status(tenant: b, session: unopened.id).state == .created, "B's link was not used up")
        #expect(try await sessions.status(tenant: b, session: opened.id).state == .opened, "B's session took no consent")
        #expect(try await sessions.openGateway(tenant: b, link: unopened.gatewayLink) == unopened.id)
        #expect(try await verification.count("verification_sessions", tenant: b) == 2)
        #expect(try await verification.count("verification_sessions", tenant: a) == 1)
        await custody.shutdown()
    }

    @Test("For a tenant newer than the planner's statistics, a statement about one session reads it by its primary key")
    func youngTenantPlan() async throws {
        let verification = try await VerificationHarness.make("session_plan")
        let custody = verification.custody
        let old = try await custody.keyring.createTenant(label: "old", actor: "officer").id
        // Sessions of a tenant the statistics know, then the statistics, then a tenant they do not.
        let insert: (TenantID) -> PostgresQuery = { tenant in
            """
            INSERT INTO verification_sessions (id, tenant_id, subject_ref, pii_version, expires_at)
            SELECT gen_random_uuid(), \(tenant.rawValue)::uuid, 'v1:s' || (g % 20), 1, now() + interval '1 day' FROM generate_series(1, 300) g
            """
        }
        try await custody.ownerSQL(tenant: old, insert(old))
        try await custody.ownerSQL(tenant: nil, "ANALYZE verification_sessions")
        let young = try await custody.keyring.createTenant(label: "young", actor: "officer").id
        try await custody.ownerSQL(tenant: young, insert(young))
        let session = try await verification.sessions.create(tenant: young, externalID: PersonalText("cand-1"), name: nil, email: nil).id

        let plans = try await custody.service.withTenant(young, context: "test: explain") { connection in
            var plans = [String]()
            for statement in [SessionStore.LockSession.sql, SessionStore.ReadSession.sql] {
                let sql = "EXPLAIN " + statement.replacingOccurrences(of: "$1", with: "'\(session.uuidString.lowercased())'::uuid")
                var lines = [String]()
                for try await line in try await connection.query(PostgresQuery(unsafeSQL: sql), logger: Database.quiet).decode(String.self) {
                    lines.append(line)
                }
                plans.append(lines.joined(separator: "\n"))
            }
            return plans
        }
        for plan in plans {
            #expect(plan.contains("verification_sessions_pkey"), "\(plan)")
            #expect(!plan.contains("verification_sessions_subject"), "\(plan)")
        }
        await custody.shutdown()
    }
}

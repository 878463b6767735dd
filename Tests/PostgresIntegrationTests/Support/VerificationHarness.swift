import Composition
import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage
import Synchronization
import Tokenization
import Verification

/// A clock the test moves by hand (session expiry, retention).
final class TestClock: Sendable {
    private let current = Mutex(Date())
    var now: @Sendable () -> Date { { [self] in current.withLock { $0 } } }
    func advance(days: Double) { current.withLock { $0 = $0.addingTimeInterval(days * 86_400) } }
    func advance(hours: Double) { current.withLock { $0 = $0.addingTimeInterval(hours * 3_600) } }
}

/// The service's composition over a custody harness: custody behind the verification core's
/// ports, features → tokens → decisions through ``BiometricVerification``.
struct VerificationHarness: Sendable {
    let custody: CustodyHarness
    let clock: TestClock
    let sealer: CustodyPersonalDataSealer
    let referencer: CustodySubjectReferencer
    let recorder: AuditLogRecorder
    let policies: TenantPolicies
    let core: VerificationService
    let sessions: VerificationSessions
    let rights: SubjectRights
    let retention: RetentionJob
    let tokenizer: BiometricTokenizer
    let flow: BiometricVerification

    init(
        _ custody: CustodyHarness, database: Database? = nil, limiter: TokenizationRateLimiter? = nil,
        attemptLimit: VerificationAttemptLimit = .default
    ) {
        let database = database ?? custody.service
        self.custody = custody
        clock = TestClock()
        sealer = CustodyPersonalDataSealer(pool: custody.pool, keyring: custody.keyring)
        referencer = CustodySubjectReferencer(pool: custody.pool, keyring: custody.keyring)
        recorder = AuditLogRecorder(custody.audit)
        policies = TenantPolicies(database: database, audit: recorder, cacheLifetime: .zero)
        core = VerificationService(database: database, policies: policies, attemptLimit: attemptLimit, logger: custody.logs.logger, now: clock.now)
        sessions = VerificationSessions(database: database, sealer: sealer, referencer: referencer, now: clock.now)
        rights = SubjectRights(database: database, core: core, sealer: sealer, referencer: referencer, audit: recorder, now: clock.now)
        retention = RetentionJob(database: database, core: core, audit: recorder, now: clock.now)
        tokenizer = BiometricTokenizer(pool: custody.pool, keyring: custody.keyring, limiter: limiter)
        flow = BiometricVerification(sessions: sessions, core: core, tokenizer: tokenizer)
    }

    static func make(_ name: String) async throws -> VerificationHarness {
        VerificationHarness(try await CustodyHarness.make(name))
    }

    /// A session for `externalID` whose candidate opened the link and consented.
    func consentedSession(_ tenant: TenantID, _ externalID: String, name: String? = nil, email: String? = nil) async throws -> UUID {
        let created = try await sessions.create(
            tenant: tenant, externalID: PersonalText(externalID), name: name.map(PersonalText.init), email: email.map(PersonalText.init)
        )
        let session = try await sessions.openGateway(tenant: tenant, link: created.gatewayLink)
        _ = try await sessions.recordConsent(tenant: tenant, session: session, noticeVersion: "notice-2026-01")
        return session
    }

    /// Rows of `table` visible for `tenant`, counted as the schema owner (under the same
    /// forced row-level security).
    func count(_ table: String, tenant: TenantID) async throws -> Int {
        try await custody.owner.withTransaction(context: "count") { connection in
            try await connection.query("SELECT set_config('app.tenant_id', \(tenant.rawValue), true)", logger: Database.quiet)
            return try await connection.query("SELECT count(*)::int FROM \(unescaped: table)", logger: Database.quiet).collect().first!.decode(Int.self)
        }
    }

    /// The audit entries of one action, as stored.
    func auditEntries(_ action: String) async throws -> [AuditEntryRecord] {
        try await custody.owner.withTransaction(context: "read audit") { connection in
            try await AuditLogStore.entries(after: 0, limit: 10_000, on: connection)
        }.filter { $0.action == action }
    }
}

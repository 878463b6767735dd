@testable import Composition  // a second instance over the first one's checked root keys (CustodyGraph.init is internal)
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

/// The service's verification graph (``VerificationGraph``, what `serve` runs) over a custody
/// harness's runtime, built through the same entry point (``CustosRuntime/verification(_:logger:)``).
/// It differs from `serve` only in settings a test needs: a clock the test moves, policies read
/// afresh on every call (a test changes a policy and acts on it at once), and what a test's
/// `change` sets.
struct VerificationHarness: Sendable {
    let custody: CustodyHarness
    let clock: TestClock
    let graph: VerificationGraph
    var sealer: CustodyPersonalDataSealer { graph.sealer }
    var referencer: CustodySubjectReferencer { graph.referencer }
    var recordSeals: CustodyRecordSealer { graph.recordSeals }
    var recorder: AuditLogRecorder { graph.recorder }
    var policies: TenantPolicies { graph.policies }
    var core: VerificationService { graph.core }
    var sessions: VerificationSessions { graph.sessions }
    var rights: SubjectRights { graph.rights }
    var retention: RetentionJob { graph.retention }
    var tokenizer: BiometricTokenizer { graph.tokenizer }
    var flow: BiometricVerification { graph.flow }

    /// - Parameters:
    ///   - database: a second service database client on the same schema: the graph then runs
    ///     over custody services of its own on it (the same token and root keys), as a second
    ///     instance of the service would.
    ///   - change: adjusts the test settings (a tokenization budget, an attempt limit).
    init(
        _ custody: CustodyHarness, database: Database? = nil, _ change: (inout VerificationGraph.Settings) -> Void = { _ in }
    ) {
        let clock = TestClock()
        var settings = VerificationGraph.Settings()
        settings.now = clock.now
        settings.policyCacheLifetime = .zero
        change(&settings)
        let logger = custody.logs.logger
        self.custody = custody
        self.clock = clock
        if let database {
            // Each instance keeps an audit anchor file of its own (the HSM anchor they share).
            let instance = CustodyGraph(
                pool: custody.pool, database: database, rootKeys: custody.graph.rootKeys,
                settings: CustodyGraph.Settings(
                    auditAnchorPath: custody.anchorPath + ".second", keyEnvironment: "test", trustedEscrowKeys: custody.trustedEscrowKeys
                ), logger: logger
            )
            graph = VerificationGraph(custody: instance, settings: settings, logger: logger)
        } else {
            graph = custody.started.runtime.verification(settings, logger: logger)
        }
    }

    static func make(_ name: String, operationTimeout: Duration? = nil) async throws -> VerificationHarness {
        VerificationHarness(try await CustodyHarness.make(name, operationTimeout: operationTimeout))
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

    /// Whether, within 20 s (the racing call's steps before the lock may wait their turn behind
    /// other suites), another backend of this harness's schema waits on a lock — one running a
    /// statement that contains `statement`, when given. By schema (`application_name`), not by
    /// database: another suite's backend waiting on its own audit lock or insert once passed
    /// for this test's, in CI, and the race ran in the wrong order. Race tests hold a lock until the racing
    /// statement is blocked on it, so they race the statement's own check, not the call's start.
    /// As the service role: pg_stat_activity shows a backend's query to its own role only.
    func someoneWaitsOnALock(running statement: String = "") async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            // Called while the test holds a connection of this pool (the lock's holder): on purpose.
            let waiting = try await Database.allowingSecondConnection { try await custody.service.withConnection(context: "test: lock waits") { watcher in
                try await watcher.query("""
                    SELECT count(*)::int FROM pg_stat_activity
                    WHERE wait_event_type = 'Lock' AND strpos(query, \(statement)) > 0 AND pid <> pg_backend_pid()
                        AND datname = current_database() AND application_name = current_setting('application_name')
                    """, logger: Database.quiet).collect().first!.decode(Int.self)
            } }
            if waiting > 0 { return true }
            try await Task.sleep(for: .milliseconds(25))
        }
        return false
    }

    /// The audit entries of one action, as stored.
    func auditEntries(_ action: String) async throws -> [AuditEntryRecord] {
        try await custody.owner.withTransaction(context: "read audit") { connection in
            try await AuditLogStore.entries(after: 0, limit: 10_000, on: connection)
        }.filter { $0.action == action }
    }
}

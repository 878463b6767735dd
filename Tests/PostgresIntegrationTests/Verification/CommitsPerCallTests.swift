import Composition
import Custody
import CustosModel
import Foundation
import Storage
import Testing
import Tokenization
import Verification

@Suite("One PostgreSQL commit per data-plane call")
struct CommitsPerCallTests {
    static func face(_ seed: Double) -> [Float] { (0..<128).map { Float(sin(Double($0) * seed + seed)) } }
    /// The same face with a little noise (GREEN under the default thresholds).
    static func probe(_ seed: Double) -> [Float] { face(seed).enumerated().map { $0.element + ($0.offset % 7 == 0 ? 0.02 : 0) } }

    /// Contexts of the runtime's own periodic work (audit flushes of key-use counts, re-seal,
    /// retention, key-version cache refreshes), which may commit while a call runs: not the call's.
    /// A gallery notice is sent after an Enrol's commit, at most one per tenant per 50 ms for
    /// all the writes meanwhile (it may land in the next call's window): not the call's either.
    static let periodic: Set<String> = [
        "append audit entry", "audit tail", "read anchored audit entry", "count sealed records to re-seal",
        "re-seal batch", "retention", "read key versions", "list key versions", "gallery notice", "gallery catch-up",
    ]

    /// Commits of the service's database client during `call`, by context, periodic work left out
    /// (but for the contexts in `counting`).
    static func commits(_ database: Database, counting: Set<String> = [], during call: () async throws -> Void) async throws -> [String: Int] {
        let before = database.commits.committedByContext
        try await call()
        let after = database.commits.committedByContext
        var made = [String: Int]()
        for (context, count) in after where !periodic.subtracting(counting).contains(context) {
            let delta = count - (before[context] ?? 0)
            if delta != 0 { made[context] = delta }
        }
        return made
    }

    /// ``commits(_:counting:during:)`` for a call of the running service: a re-read of the
    /// tenant's policy is left out when a notice on the shared cache-change channel arrived since
    /// `seen`, the generation when the policy was last known cached (other suites' changes and
    /// forged payloads share this database, and a notice this version cannot read makes every
    /// cache forget, as it must). A notice between two calls counts too: it empties the cache
    /// before the next call starts. Without one, the call's own commits must be exactly what the
    /// test expects.
    static func callCommits(_ database: Database, changes: CacheChangeListener, since seen: inout UInt64, during call: () async throws -> Void) async throws -> [String: Int] {
        let start = changes.generation
        var made = try await commits(database, during: call)
        // `seen` is the generation from before the previous call: the listener bumps the
        // generation before it empties the caches, so a notice whose bump the previous call saw
        // may empty the policy cache only after it, for this call to read again (one CI run).
        if changes.generation != seen { made["read tenant policy"] = nil }
        seen = start
        return made
    }

    @Test("Enrol and Verify commit one transaction each, also when a Verify migrates a subject during a biometric overlap")
    func oneCommitPerEnrolAndVerify() async throws {
        let custody = try await CustodyHarness.make("commits")
        // Caches as `serve` keeps them (the harness default re-reads the policy on every call),
        // and a budget whose lease lasts the whole test: what remains is what every call pays.
        let verification = VerificationHarness(custody) { settings in
            settings.policyCacheLifetime = .seconds(3_600)
            settings.tokenizationBudget = TokenizationBudget(perSecond: 100_000, burst: 100_000)
            settings.tokenizationLeaseLifetime = .seconds(3_600)
        }
        // `serve` runs the cache-change listener: without it the policy cache lasts only 0.5 s.
        let listener = Task { await verification.graph.changes.run() }
        defer { listener.cancel() }
        for _ in 0..<400 where !verification.graph.changes.isListening { try await Task.sleep(for: .milliseconds(25)) }
        try #require(verification.graph.changes.isListening)
        let tenant = try await custody.keyring.createTenant(label: "acme", actor: "officer").id
        let flow = verification.flow
        let database = custody.service

        // Warm-up: the first call of a tenant reads its policy, key versions and budget lease.
        let warm = try await verification.consentedSession(tenant, "warm")
        _ = try await flow.enrol(tenant: tenant, session: warm, features: try FeatureVector(Self.face(0.2)))
        // A notice on the shared channel while a read runs (another suite's change, in CI) keeps
        // that read out of the cache, as it must: read again until the policy is cached.
        var policyReads = 1
        var seen = verification.graph.changes.generation
        for _ in 0..<50 {
            seen = verification.graph.changes.generation
            let made = try await Self.commits(database) { _ = try await verification.policies.policy(tenant) }
            if made.isEmpty { break }
            policyReads += 1
        }
        try #require(policyReads < 50, "the tenant's policy was never cached")

        for index in 0..<4 {
            let session = try await verification.consentedSession(tenant, "subject-\(index)")
            let made = try await Self.callCommits(database, changes: verification.graph.changes, since: &seen) {
                _ = try await flow.enrol(tenant: tenant, session: session, features: try FeatureVector(Self.face(0.3 + Double(index) / 10)))
            }
            #expect(made == ["enrol in session": 1], "Enrol committed \(made)")
        }
        for index in 0..<4 {
            let session = try await verification.consentedSession(tenant, "subject-\(index)")
            var decision: Decision?
            let made = try await Self.callCommits(database, changes: verification.graph.changes, since: &seen) {
                decision = try await flow.verify(tenant: tenant, session: session, features: try FeatureVector(Self.probe(0.3 + Double(index) / 10)))
            }
            #expect(decision?.color == .green)
            #expect(made == ["verify in session": 1], "Verify committed \(made)")
        }

        // A biometric rotation: subjects enrolled under v1 move to v2 on a GREEN Verify, in the
        // same one transaction (the overlap's version lookup and the migration included).
        try await custody.keyring.rotateBiometric(tenant, actor: "officer")
        let warmOverlap = try await verification.consentedSession(tenant, "warm")
        _ = try await flow.verify(tenant: tenant, session: warmOverlap, features: try FeatureVector(Self.probe(0.2)))
        for index in 0..<2 {
            let session = try await verification.consentedSession(tenant, "subject-\(index)")
            var decision: Decision?
            let made = try await Self.callCommits(database, changes: verification.graph.changes, since: &seen) {
                decision = try await flow.verify(tenant: tenant, session: session, features: try FeatureVector(Self.probe(0.3 + Double(index) / 10)))
            }
            #expect(decision?.color == .green)
            #expect(made == ["verify in session": 1], "Verify during the overlap committed \(made)")
        }
        #expect(verification.core.biometricMigrations == 3, "the warm-up subject and two more moved to v2")
        await custody.shutdown()
    }

    @Test("Callers that miss a cache together share one refresh; CreateSession commits once")
    func concurrentMissesShareOneRefresh() async throws {
        let custody = try await CustodyHarness.make("commits_flight")
        let verification = VerificationHarness(custody) { settings in
            settings.policyCacheLifetime = .seconds(3_600)
            settings.tokenizationBudget = TokenizationBudget(perSecond: 100_000, burst: 100_000)
            settings.tokenizationLeaseLifetime = .seconds(3_600)
        }
        let tenant = try await custody.keyring.createTenant(label: "acme", actor: "officer").id
        let database = custody.service
        let limiter = try #require(verification.tokenizer.limiter)
        let callers = 16

        // The policy and the budget lease are empty for a new tenant: every caller misses at
        // once (the old code read the policy and leased a block once per caller).
        let made = try await Self.commits(database) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<callers {
                    group.addTask { _ = try await verification.policies.policy(tenant) }
                    group.addTask { try await limiter.acquire(tenant) }
                }
                try await group.waitForAll()
            }
        }
        #expect(made == ["read tenant policy": 1, "lease tokenization budget": 1], "\(callers) concurrent misses committed \(made)")

        // CreateSession: the session row only; the subject reference's `pii` versions come from
        // the keyring's cache once warm (the old code listed every key version on each call).
        _ = try await verification.consentedSession(tenant, "warm")
        // An expired entry's refresh ("read key versions") may land here on a slow machine; the
        // old uncached listing ("list key versions") must not.
        let created = try await Self.commits(database, counting: ["list key versions"]) {
            _ = try await verification.sessions.create(tenant: tenant, externalID: PersonalText("subject"), name: nil, email: nil)
        }
        #expect(created == ["create session": 1], "CreateSession committed \(created)")
        await custody.shutdown()
    }

    @Test("CreateSession, OpenGateway and RecordConsent commit one transaction each; their refusals commit none")
    func oneCommitPerSessionCall() async throws {
        let verification = try await VerificationHarness.make("commits_session")
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        let sessions = verification.sessions
        let database = verification.custody.service
        // Warm-up: the first call of a tenant reads its key versions (pii and data).
        _ = try await verification.consentedSession(tenant, "warm", name: "Warm", email: "warm@example.com")

        for index in 0..<3 {
            var created: VerificationSessions.Created?
            let made = try await Self.commits(database) {
                created = try await sessions.create(
                    tenant: tenant, externalID: PersonalText("subject-\(index)"), name: PersonalText("Name \(index)"), email: PersonalText("s\(index)@example.com")
                )
            }
            #expect(made == ["create session": 1], "CreateSession committed \(made)")
            let link = try #require(created).gatewayLink
            var session: UUID?
            let opened = try await Self.commits(database) { session = try await sessions.openGateway(tenant: tenant, link: link) }
            #expect(opened == ["open gateway link": 1], "OpenGateway committed \(opened)")
            let id = try #require(session)
            let consented = try await Self.commits(database) { _ = try await sessions.recordConsent(tenant: tenant, session: id, noticeVersion: "n1") }
            #expect(consented == ["record consent": 1], "RecordConsent committed \(consented)")

            let refused = try await Self.commits(database) {
                await #expect(throws: VerificationError.gatewayLinkUsed) { _ = try await sessions.openGateway(tenant: tenant, link: link) }
                await #expect(throws: VerificationError.sessionNotFound(UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1)))) {
                    _ = try await sessions.recordConsent(tenant: tenant, session: UUID(uuid: (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1)), noticeVersion: "n1")
                }
            }
            #expect(refused.isEmpty, "refusals committed \(refused)")
        }
        await verification.custody.shutdown()
    }
}

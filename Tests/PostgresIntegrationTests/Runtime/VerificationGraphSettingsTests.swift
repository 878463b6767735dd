import Composition
import CustosModel
import Foundation
import Testing
import Tokenization
import Verification

/// The test harnesses build the verification side through ``VerificationGraph`` as `serve`
/// does, differing only in its settings: these must reach the graph's parts, and their
/// defaults must stay what `serve` has always run with.
@Suite("Runtime: the verification graph's settings")
struct VerificationGraphSettingsTests {
    @Test("by default the graph is serve's: a tokenization limiter at the default policy's budget, policies cached 5 s, the wall clock")
    func productionDefaults() async throws {
        let custody = try await CustodyHarness.make("graphdefaults")
        let graph = custody.started.runtime.verification()
        let limiter = try #require(graph.limiter, "serve always limits tokenization")
        #expect(limiter.defaultBudget == TokenizationBudget(perMinute: TenantPolicy.default.tokenizationsPerMinute))
        #expect(graph.tokenizer.limiter === limiter, "the tokenizer spends from the graph's limiter")
        #expect(graph.policies.cacheLifetime == .seconds(5))
        let before = Date()
        let created = try await graph.sessions.create(tenant: try await custody.keyring.createTenant(label: "acme", actor: "officer").id,
                                                      externalID: PersonalText("wall"), name: nil, email: nil)
        // Whole seconds: the session's MAC covers its expiry as PostgreSQL returns it.
        let second = Date(timeIntervalSince1970: before.timeIntervalSince1970.rounded(.down))
        #expect(created.expiresAt >= second.addingTimeInterval(24 * 3_600), "sessions run on the wall clock")
        await custody.shutdown()
    }

    @Test("the settings reach the parts: no budget means no limiter, a zero policy cache sees another instance's change at once, the clock dates sessions")
    func settingsReachTheParts() async throws {
        let custody = try await CustodyHarness.make("graphsettings")
        let clock = TestClock()
        clock.advance(days: 400)
        var settings = VerificationGraph.Settings()
        settings.tokenizationBudget = nil
        settings.policyCacheLifetime = .zero
        settings.now = clock.now
        let graph = custody.started.runtime.verification(settings)
        #expect(graph.limiter == nil && graph.tokenizer.limiter == nil)

        let tenant = try await custody.keyring.createTenant(label: "acme", actor: "officer").id
        #expect(try await graph.policies.policy(tenant).tokenizationsPerMinute == TenantPolicy.default.tokenizationsPerMinute)
        // Another instance's policies: the graph's own cache does not learn of this write.
        let elsewhere = TenantPolicies(database: custody.service, audit: graph.recorder)
        try await elsewhere.set(try TenantPolicy(green: 0.6, amber: 0.5, retentionDays: 30, tokenizationsPerMinute: 12), for: tenant, actor: "officer")
        #expect(try await graph.policies.policy(tenant).tokenizationsPerMinute == 12)

        let created = try await graph.sessions.create(tenant: tenant, externalID: PersonalText("moved"), name: nil, email: nil)
        #expect(created.expiresAt >= clock.now().addingTimeInterval(24 * 3_600 - 1), "the session is dated by the graph's clock")
        #expect(created.expiresAt > Date().addingTimeInterval(300 * 86_400))
        await custody.shutdown()
    }
}

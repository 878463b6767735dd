import CustosModel
import Foundation
import Testing
import Verification

@Suite("Tenant policies: partial changes")
struct TenantPolicyChangeTests {
    @Test("Concurrent partial changes of different fields from two instances all survive (no lost update); a tenant without a row starts from the default")
    func concurrentChanges() async throws {
        let verification = try await VerificationHarness.make("policychanges")
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        let first = verification.policies
        // A second instance: its own database client, no cache.
        let secondDatabase = try verification.custody.secondServiceDatabase()
        // Audited, as every instance is: a change without its entry would read as forged.
        let second = TenantPolicies(database: secondDatabase, audit: verification.recorder, cacheLifetime: .zero)

        let fromDefault = try await first.update(.init(retentionDays: 12), for: tenant, actor: "officer")
        let expected = try TenantPolicy.default.applying(TenantPolicy.Changes(retentionDays: 12))
        #expect(fromDefault == expected)

        for round in 1...8 {
            async let retention = first.update(.init(retentionDays: 20 + round), for: tenant, actor: "officer")
            async let budget = second.update(.init(tokenizationsPerMinute: 500 + round), for: tenant, actor: "officer")
            _ = try await (retention, budget)
            let stored = try await second.policy(tenant)
            #expect(stored.retentionDays == 20 + round && stored.tokenizationsPerMinute == 500 + round, "round \(round): \(stored)")
        }
        await secondDatabase.shutdown()
        await verification.custody.shutdown()
    }
}

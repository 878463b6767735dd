import CustosModel
import Foundation
import GRPCCore
import PostgresNIO
import RPC
@testable import Storage
import SwiftProtobuf
import Testing

/// `SetTenantPolicy` with an update mask changes only the fields it names (what
/// `custos tenant policy --retention-days 30` sends); without one it replaces the policy.
@Suite("Admin: partial tenant-policy updates", .serialized)
struct TenantPolicyUpdateTests {
    @Test("A mask changes only its fields, checks the result as a whole, and refuses unknown paths; no mask replaces the policy")
    func partialUpdates() async throws {
        try await RPCHarness.with("policymask") { rpc in
            try await rpc.withClient(.alice) { client in
                let admin = Custos_V1_Admin.Client(wrapping: client)
                let tenant = try await admin.createTenant(.with { $0.label = "acme" }).tenant.tenantID
                func set(_ mask: [String]?, _ policy: Custos_V1_TenantPolicy) async throws -> Custos_V1_TenantPolicy {
                    try await admin.setTenantPolicy(.with {
                        $0.tenantID = tenant
                        $0.policy = policy
                        if let mask { $0.updateMask = .with { $0.paths = mask } }
                    }).policy
                }
                let full = try await set(nil, .with {
                    $0.greenThreshold = 0.7; $0.amberThreshold = 0.5; $0.retentionDays = 30; $0.tokenizationBudgetPerMinute = 100
                })
                #expect(full.retentionDays == 30 && full.tokenizationBudgetPerMinute == 100)

                // Only retention is named: the zeros sent for the other fields are not applied.
                let retention = try await set(["retention_days"], .with { $0.retentionDays = 60 })
                #expect(retention.greenThreshold == 0.7 && retention.amberThreshold == 0.5)
                #expect(retention.retentionDays == 60 && retention.tokenizationBudgetPerMinute == 100)

                let budget = try await set(["tokenization_budget_per_minute", "amber_threshold"], .with {
                    $0.tokenizationBudgetPerMinute = 250; $0.amberThreshold = 0.45; $0.retentionDays = 1
                })
                #expect(budget.tokenizationBudgetPerMinute == 250 && budget.amberThreshold == 0.45 && budget.retentionDays == 60)

                // The result is checked as a whole: amber 0.8 above the stored green 0.7.
                await #expect { _ = try await set(["amber_threshold"], .with { $0.amberThreshold = 0.8 }) } throws: { error in
                    (error as? RPCError)?.code == .invalidArgument
                }
                await #expect { _ = try await set(["retention_days", "label"], .with { $0.retentionDays = 5 }) } throws: { error in
                    guard let error = error as? RPCError else { return false }
                    return error.code == .invalidArgument && error.message.contains("update_mask")
                }
                let stored = try await admin.listTenants(.init()).tenants.first { $0.tenantID == tenant }?.policy
                #expect(stored == budget, "refused updates wrote nothing")
            }
        }
    }

    @Test("A tenant whose policy row the database's writer planted is listed as refused, the others as usual; setting the whole policy clears it")
    func refusedPolicyListed() async throws {
        try await RPCHarness.with("policylisted") { rpc in
            try await rpc.withClient(.alice) { client in
                let admin = Custos_V1_Admin.Client(wrapping: client)
                let forged = try await admin.createTenant(.with { $0.label = "acme" }).tenant.tenantID
                let other = try await admin.createTenant(.with { $0.label = "globex" }).tenant.tenantID
                let writer = try rpc.custody.secondServiceDatabase()
                _ = try await writer.withTenant(try #require(TenantID(forged)), context: "test: database writer") { connection in
                    try await connection.query("""
                        INSERT INTO tenant_policies (tenant_id, green_threshold, amber_threshold, retention_days, tokenizations_per_minute, thresholds_format)
                        VALUES (\(forged)::uuid, 0.02, 0.01, 90, 1000000, 3)
                        """, logger: Database.quiet)
                }
                await writer.shutdown()

                let listed = try await admin.listTenants(.init()).tenants
                let refused = try #require(listed.first { $0.tenantID == forged }, "the forged tenant was hidden")
                #expect(refused.policyRefused && !refused.hasPolicy, "its planted thresholds were shown as its policy")
                let untouched = try #require(listed.first { $0.tenantID == other })
                #expect(!untouched.policyRefused && untouched.policy.retentionDays == 90)
                #expect(await RPCHarness.code { _ = try await admin.getTenantPolicy(.with { $0.tenantID = forged }) } == .dataLoss)

                _ = try await admin.setTenantPolicy(.with {
                    $0.tenantID = forged
                    $0.policy = .with { $0.greenThreshold = 0.7; $0.amberThreshold = 0.5; $0.retentionDays = 30; $0.tokenizationBudgetPerMinute = 100 }
                })
                let repaired = try #require(try await admin.listTenants(.init()).tenants.first { $0.tenantID == forged })
                #expect(!repaired.policyRefused && repaired.policy.retentionDays == 30)
            }
        }
    }
}

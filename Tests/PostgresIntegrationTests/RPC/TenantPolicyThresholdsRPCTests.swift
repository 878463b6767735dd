import Custody
import CustosModel
import Foundation
import GRPCCore
import RPC
import Testing
import Verification

/// What officers are shown of a tenant's thresholds (`GetTenantPolicy`, and the policy in
/// `CreateTenant`, `ListTenants` and `SetTenantPolicy`) is the pair that decides its comparisons,
/// named with the token format it is a fraction of: a tenant that never set thresholds and whose
/// active biometric version is quaternary was shown compact's defaults (0.170 / 0.138), a pair
/// below every quaternary impostor's score.
@Suite("Admin: the thresholds a tenant policy shows are those that apply", .serialized)
struct TenantPolicyThresholdsRPCTests {
    static let quaternary = DecisionThresholds.default(for: .quaternary)
    static let compact = DecisionThresholds.default(for: .compact)

    @Test("A new (quaternary) tenant shows the quaternary defaults and format everywhere; its own pair once set")
    func newTenantShowsQuaternaryDefaults() async throws {
        try await RPCHarness.with("policyshown") { rpc in
            try await rpc.withClient(.alice) { client in
                let admin = Custos_V1_Admin.Client(wrapping: client)
                let created = try await admin.createTenant(.with { $0.label = "acme" }).tenant
                let tenant = created.tenantID
                let request = Custos_V1_GetTenantPolicyRequest.with { $0.tenantID = tenant }
                func listed() async throws -> Custos_V1_TenantPolicy? { try await admin.listTenants(.init()).tenants.first { $0.tenantID == tenant }?.policy }

                for (what, shown) in [("CreateTenant", created.policy), ("GetTenantPolicy", try await admin.getTenantPolicy(request).policy), ("ListTenants", try await listed())] {
                    #expect(shown?.thresholdsFormat == .quaternary, "\(what)")
                    #expect(shown?.greenThreshold == Self.quaternary.green && shown?.amberThreshold == Self.quaternary.amber, "\(what): 2203/4096 and 2096/4096")
                    #expect(shown?.biometricVersions.map(\.keyVersion) == [1], "\(what)")
                    #expect(shown?.biometricVersions.first?.tenantSet == false, "\(what): defaults")
                }
                #expect(Self.quaternary.green > 0.53 && Self.quaternary.amber > 0.5, "not compact's 0.170 / 0.138")

                // Changing only the retention stores no pair: the defaults still apply.
                let retention = try await admin.setTenantPolicy(.with {
                    $0.tenantID = tenant; $0.policy = .with { $0.retentionDays = 30 }; $0.updateMask = .with { $0.paths = ["retention_days"] }
                }).policy
                #expect(retention.thresholdsFormat == .quaternary && retention.greenThreshold == Self.quaternary.green)
                #expect(retention.amberThreshold == Self.quaternary.amber && retention.retentionDays == 30)

                // The tenant's own pair, set while quaternary is active, is shown as its own.
                let set = try await admin.setTenantPolicy(.with {
                    $0.tenantID = tenant
                    $0.policy = .with { $0.greenThreshold = 0.7; $0.amberThreshold = 0.6 }
                    $0.updateMask = .with { $0.paths = ["green_threshold", "amber_threshold"] }
                }).policy
                for (what, shown) in [("SetTenantPolicy", set), ("GetTenantPolicy", try await admin.getTenantPolicy(request).policy), ("ListTenants", try await listed())] {
                    #expect(shown?.greenThreshold == 0.7 && shown?.amberThreshold == 0.6, "\(what)")
                    #expect(shown?.thresholdsFormat == .quaternary && shown?.biometricVersions.first?.tenantSet == true, "\(what)")
                    #expect(shown?.retentionDays == 30, "\(what)")
                }
                // A whole policy too.
                let whole = try await admin.setTenantPolicy(.with {
                    $0.tenantID = tenant
                    $0.policy = .with { $0.greenThreshold = 0.65; $0.amberThreshold = 0.55; $0.retentionDays = 90; $0.tokenizationBudgetPerMinute = 6_000 }
                }).policy
                #expect(whole.greenThreshold == 0.65 && whole.amberThreshold == 0.55 && whole.thresholdsFormat == .quaternary)
                #expect(whole.biometricVersions.first?.tenantSet == true)

                #expect(await RPCHarness.code { _ = try await admin.getTenantPolicy(.with { $0.tenantID = UUID().uuidString.lowercased() }) } == .notFound)
                #expect(await RPCHarness.code { _ = try await admin.getTenantPolicy(.with { $0.tenantID = "not-a-tenant" }) } == .invalidArgument)
            }
            // Officers only, like every Admin call.
            try await rpc.withClient(.frontend) { client in
                let tenant = try await rpc.custody.keyring.tenants().first?.id.rawValue ?? ""
                let code = await RPCHarness.code { _ = try await Custos_V1_Admin.Client(wrapping: client).getTenantPolicy(.with { $0.tenantID = tenant }) }
                #expect(code == .permissionDenied, "a front-end certificate on Admin")
            }
        }
    }

    @Test("During an overlap from compact to quaternary each version shows the pair Verify decides it with")
    func overlapShowsWhatVerifyApplies() async throws {
        try await RPCHarness.with("policyoverlap") { rpc in
            // A tenant made before the quaternary format: its v1 is compact.
            let custody = rpc.custody
            let legacy = TenantKeyring(
                pool: custody.pool, database: custody.service, rootKeys: custody.keyring.rootKeys, audit: custody.audit,
                logger: custody.logs.logger, biometricTokenFormat: .compact
            )
            let tenantID = try await legacy.createTenant(label: "legacy", actor: "officer").id
            let tenant = tenantID.rawValue
            try await rpc.withClient(.alice) { client in
                let admin = Custos_V1_Admin.Client(wrapping: client)
                let request = Custos_V1_GetTenantPolicyRequest.with { $0.tenantID = tenant }

                let before = try await admin.getTenantPolicy(request).policy
                #expect(before.thresholdsFormat == .compact)
                #expect(before.greenThreshold == Self.compact.green && before.amberThreshold == Self.compact.amber)

                // The tenant's own compact pair, then a rotation: v2 is quaternary, v1 in overlap.
                _ = try await admin.setTenantPolicy(.with {
                    $0.tenantID = tenant
                    $0.policy = .with { $0.greenThreshold = 0.3; $0.amberThreshold = 0.2 }
                    $0.updateMask = .with { $0.paths = ["green_threshold", "amber_threshold"] }
                })
                _ = try await admin.rotateKey(.with { $0.tenantID = tenant; $0.purpose = .bioSeed })

                let during = try await admin.getTenantPolicy(request).policy
                #expect(during.thresholdsFormat == .quaternary, "the active version's format")
                #expect(during.greenThreshold == Self.quaternary.green && during.amberThreshold == Self.quaternary.amber, "a compact pair does not reach quaternary tokens")
                let versions = during.biometricVersions
                #expect(versions.map(\.keyVersion) == [2, 1], "newest first, the old version while it still matches")
                #expect(versions.map(\.tokenFormat) == [.quaternary, .compact])
                #expect(versions.map(\.tenantSet) == [false, true])
                #expect(versions.last?.greenThreshold == 0.3 && versions.last?.amberThreshold == 0.2, "v1's templates are decided by the tenant's compact pair")
                // The same pairs as the policy Verify and Identify decide with (`thresholds(for:)`
                // of the format of the version compared under).
                let policy = try await rpc.services.graph.policies.policy(tenantID)
                for version in versions {
                    let format = try await rpc.custody.keyring.biometricTokenFormat(tenantID, version: Int(version.keyVersion))
                    #expect(version.tokenFormat == format.wire)
                    #expect(policy.thresholds(for: format) == DecisionThresholds(green: version.greenThreshold, amber: version.amberThreshold))
                }
                let listed = try await admin.listTenants(.init()).tenants.first { $0.tenantID == tenant }?.policy
                #expect(listed == during)
            }
        }
    }
}

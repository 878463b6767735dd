import CustosModel
import Foundation
import GRPCCore
import RPC
import SwiftProtobuf
import Testing

/// The biometric overlap as officers reach it: the policy field (`bio_overlap_days`) through
/// `SetTenantPolicy`, whole and partial; `RotateKey(BIO_SEED)` leaving v1 `RETIRING` for that
/// many days; `RetireKey` of a biometric version in overlap refused with a precise message.
@Suite("Admin: biometric rotation overlap", .serialized)
struct BiometricOverlapRPCTests {
    @Test("bio_overlap_days round-trips, partial updates keep it, out-of-range values are refused; rotation and retire follow it")
    func overlapPolicyAndRotation() async throws {
        try await RPCHarness.with("biooverlaprpc") { rpc in
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
                let created = try await admin.listTenants(.init()).tenants.first { $0.tenantID == tenant }?.policy
                #expect(created?.hasBioOverlapDays == true && created?.bioOverlapDays == 30, "the default is shown")

                let overlap = try await set(["bio_overlap_days"], .with { $0.bioOverlapDays = 7 })
                #expect(overlap.bioOverlapDays == 7 && overlap.retentionDays == 90, "only the named field changed")
                let retention = try await set(["retention_days"], .with { $0.retentionDays = 60 })
                #expect(retention.bioOverlapDays == 7, "a partial update of another field keeps the overlap (the zero sent is not applied)")
                await #expect { _ = try await set(["bio_overlap_days"], .with { $0.bioOverlapDays = 366 }) } throws: { error in
                    guard let error = error as? RPCError else { return false }
                    return error.code == .invalidArgument && error.message.contains("bio_overlap_days")
                }
                // A whole policy without the field gets the default, not 0 (the cliff).
                let whole = try await set(nil, .with {
                    $0.greenThreshold = 0.3; $0.amberThreshold = 0.15; $0.retentionDays = 90; $0.tokenizationBudgetPerMinute = 6_000
                })
                #expect(whole.bioOverlapDays == 30)
                _ = try await set(["bio_overlap_days"], .with { $0.bioOverlapDays = 7 })

                let before = Date()
                _ = try await admin.rotateKey(.with { $0.tenantID = tenant; $0.purpose = .bioSeed })
                let keys = try await admin.listKeys(.with { $0.tenantID = tenant }).keys.filter { $0.purpose == .bioSeed || $0.purpose == .bioPrf }
                let old = keys.filter { $0.version == 1 }
                #expect(old.count == 2 && old.allSatisfy { $0.state == .retiring }, "both biometric keys of v1 stay for the overlap")
                let ends = Set(old.map(\.retiringUntil.seconds))
                #expect(ends.count == 1, "bio-seed and bio-prf end together")
                let end = Double(ends.first ?? 0)
                #expect(end >= before.timeIntervalSince1970 + 7 * 86_400 - 2 && end <= Date().timeIntervalSince1970 + 7 * 86_400 + 2)

                await #expect { _ = try await admin.retireKey(.with { $0.tenantID = tenant; $0.purpose = .bioPrf; $0.version = 1 }) } throws: { error in
                    guard let error = error as? RPCError else { return false }
                    return error.code == .failedPrecondition && error.message.contains("two officers") && error.message.contains("overlap")
                }
                let after = try await admin.listKeys(.with { $0.tenantID = tenant }).keys.filter { $0.version == 1 && $0.purpose == .bioPrf }
                #expect(after.first?.state == .retiring, "the refusal changed nothing")
            }
        }
    }
}

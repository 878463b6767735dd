import Composition
import CustosModel
import Foundation
import GRPCCore
import RPC
import SwiftProtobuf
import Testing
import Tokenization
import Verification

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
                    $0.greenThreshold = 0.6; $0.amberThreshold = 0.5; $0.retentionDays = 90; $0.tokenizationBudgetPerMinute = 6_000
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

    @Test("Two officers end an overlap early: the requester cannot approve, the approval drops the templates that did not migrate, a second approval or a version out of its overlap is refused")
    func twoOfficersEndTheOverlapEarly() async throws {
        try await RPCHarness.with("biooverlapend") { rpc in
            let graph = rpc.services.graph
            try await rpc.withClient(.alice) { aliceClient in
                try await rpc.withClient(.bob) { bobClient in
                    let alice = Custos_V1_Admin.Client(wrapping: aliceClient)
                    let bob = Custos_V1_Admin.Client(wrapping: bobClient)
                    let tenantText = try await alice.createTenant(.with { $0.label = "acme" }).tenant.tenantID
                    let tenant = try #require(TenantID(tenantText))
                    // One subject enrolled under v1 who never comes back during the overlap.
                    let created = try await graph.sessions.create(tenant: tenant, externalID: PersonalText("early-end-1"), name: nil, email: nil)
                    let session = try await graph.sessions.openGateway(tenant: tenant, link: created.gatewayLink)
                    _ = try await graph.sessions.recordConsent(tenant: tenant, session: session, noticeVersion: "custos-notice-1")
                    _ = try await graph.flow.enrol(tenant: tenant, session: session, features: try FeatureVector((0..<128).map { Float(sin(Double($0) * 0.37)) }))

                    // Outside an overlap there is nothing to end.
                    await #expect { _ = try await alice.requestBiometricOverlapEnd(.with { $0.tenantID = tenantText; $0.version = 1 }) } throws: { error in
                        (error as? RPCError)?.code == .failedPrecondition
                    }
                    _ = try await alice.rotateKey(.with { $0.tenantID = tenantText; $0.purpose = .bioSeed })
                    await #expect { _ = try await alice.requestBiometricOverlapEnd(.with { $0.tenantID = tenantText; $0.version = 9 }) } throws: { error in
                        (error as? RPCError)?.code == .notFound
                    }
                    let request = try await alice.requestBiometricOverlapEnd(.with { $0.tenantID = tenantText; $0.version = 1 })
                    await #expect { _ = try await alice.approveBiometricOverlapEnd(.with { $0.requestID = request.requestID }) } throws: { error in
                        guard let error = error as? RPCError else { return false }
                        return error.code == .permissionDenied && error.message.contains("different officer")
                    }
                    let stillOpen = try await alice.listKeys(.with { $0.tenantID = tenantText }).keys.filter { $0.version == 1 && ($0.purpose == .bioSeed || $0.purpose == .bioPrf) }
                    #expect(stillOpen.count == 2 && stillOpen.allSatisfy { $0.state == .retiring }, "a refused approval changes nothing")

                    let ended = try await bob.approveBiometricOverlapEnd(.with { $0.requestID = request.requestID })
                    #expect(ended.templatesDropped == 1 && ended.key.state == .retired)
                    let keys = try await alice.listKeys(.with { $0.tenantID = tenantText }).keys.filter { $0.version == 1 && ($0.purpose == .bioSeed || $0.purpose == .bioPrf) }
                    #expect(keys.allSatisfy { $0.state == .retired }, "both biometric keys of v1 retired together")
                    let audit = try await alice.auditTail(.with { $0.limit = 20 }).entries.filter { $0.action == "key.bio_overlap.close" }
                    #expect(audit.count == 1 && audit.first?.details["reason"] == "approved_early" && audit.first?.details["templates_dropped"] == "1")
                    #expect(audit.first?.details["request"] == request.requestID)

                    await #expect { _ = try await bob.approveBiometricOverlapEnd(.with { $0.requestID = request.requestID }) } throws: { error in
                        (error as? RPCError)?.code == .failedPrecondition
                    }
                    await #expect { _ = try await bob.approveBiometricOverlapEnd(.with { $0.requestID = UUID().uuidString }) } throws: { error in
                        (error as? RPCError)?.code == .notFound
                    }
                    // The subject who did not migrate is no longer enrolled.
                    let again = try await graph.sessions.create(tenant: tenant, externalID: PersonalText("early-end-1"), name: nil, email: nil)
                    let next = try await graph.sessions.openGateway(tenant: tenant, link: again.gatewayLink)
                    _ = try await graph.sessions.recordConsent(tenant: tenant, session: next, noticeVersion: "custos-notice-1")
                    await #expect(throws: VerificationError.notEnrolled) {
                        _ = try await graph.flow.verify(tenant: tenant, session: next, features: try FeatureVector((0..<128).map { Float(sin(Double($0) * 0.37)) }))
                    }
                }
            }
        }
    }
}

import CustosModel
import Foundation
import GRPCCore
import RPC
import SwiftProtobuf
import Testing

/// Disable/enable, scheduled destruction and offboarding through the Admin RPC, as `custos key`
/// and `custos tenant` send them, with what a front-end then meets.
@Suite("Admin: disabled keys, scheduled destruction and offboarding over the RPC", .serialized)
struct KeyLifecycleRPCTests {
    static func createSession(_ client: GRPCClient<some ClientTransport>, tenant: String) async -> RPCError.Code? {
        await RPCHarness.code {
            _ = try await Custos_V1_Verification.Client(wrapping: client).createSession(
                .with { $0.subjectExternalID = "candidate-1"; $0.candidateName = "Ada" }, metadata: tenantMetadata(tenant)
            )
        }
    }

    @Test("A disabled data key fails session creation with FAILED_PRECONDITION until enabled; destruction is scheduled for 30 days by default and cancellable")
    func disableScheduleCancel() async throws {
        try await RPCHarness.with("rpclifecycle") { rpc in
            let tenant = try await rpc.withClient(.alice) { client in
                try await Custos_V1_Admin.Client(wrapping: client).createTenant(.with { $0.label = "acme" }).tenant.tenantID
            }
            #expect(try await rpc.withClient(.frontend) { await Self.createSession($0, tenant: tenant) } == nil)
            try await rpc.withClient(.alice) { client in
                let admin = Custos_V1_Admin.Client(wrapping: client)
                let disabled = try await admin.disableKey(.with { $0.tenantID = tenant; $0.purpose = .data; $0.version = 1 })
                #expect(disabled.key.hasDisabledAt && disabled.key.state == .active)
                let listed = try await admin.listKeys(.with { $0.tenantID = tenant }).keys.first { $0.purpose == .data && $0.version == 1 }
                #expect(listed?.hasDisabledAt == true)
            }
            #expect(try await rpc.withClient(.frontend) { await Self.createSession($0, tenant: tenant) } == .failedPrecondition)
            try await rpc.withClient(.alice) { client in
                let enabled = try await Custos_V1_Admin.Client(wrapping: client).enableKey(.with { $0.tenantID = tenant; $0.purpose = .data; $0.version = 1 })
                #expect(!enabled.key.hasDisabledAt)
            }
            #expect(try await rpc.withClient(.frontend) { await Self.createSession($0, tenant: tenant) } == nil)

            let request = try await rpc.withClient(.alice) { client in
                let admin = Custos_V1_Admin.Client(wrapping: client)
                _ = try await admin.rotateKey(.with { $0.tenantID = tenant; $0.purpose = .pii })
                let short = await RPCHarness.code {
                    _ = try await admin.requestKeyDestruction(.with { $0.tenantID = tenant; $0.purpose = .pii; $0.version = 1; $0.waitingDays = 3 })
                }
                #expect(short == .invalidArgument)
                let response = try await admin.requestKeyDestruction(.with { $0.tenantID = tenant; $0.purpose = .pii; $0.version = 1 })
                #expect(response.waitingDays == 30)
                return response.requestID
            }
            try await rpc.withClient(.bob) { client in
                let approved = try await Custos_V1_Admin.Client(wrapping: client).approveKeyDestruction(.with { $0.requestID = request })
                #expect(approved.dueAt.seconds - approved.approvedAt.seconds == 30 * 86_400)
            }
            try await rpc.withClient(.alice) { client in
                let admin = Custos_V1_Admin.Client(wrapping: client)
                let early = await RPCHarness.code { _ = try await admin.destroyKey(.with { $0.requestID = request }) }
                #expect(early == .failedPrecondition, "not due for 30 days")
                var listed = try await admin.listKeys(.with { $0.tenantID = tenant }).keys.first { $0.purpose == .pii && $0.version == 1 }
                #expect(listed?.hasDestructionDueAt == true)
                #expect(try await admin.cancelKeyDestruction(.with { $0.requestID = request }).hasCancelledAt)
                listed = try await admin.listKeys(.with { $0.tenantID = tenant }).keys.first { $0.purpose == .pii && $0.version == 1 }
                #expect(listed?.hasDestructionDueAt == false && listed?.state == .retired)
                let again = await RPCHarness.code { _ = try await admin.cancelKeyDestruction(.with { $0.requestID = request }) }
                #expect(again == .failedPrecondition)
            }
        }
    }

    @Test("Offboarding takes two officers; on approval the tenant's front-end calls stop at once; completion waits for the due date")
    func offboardOverRPC() async throws {
        try await RPCHarness.with("rpcoffboard") { rpc in
            let (tenant, request) = try await rpc.withClient(.alice) { client in
                let admin = Custos_V1_Admin.Client(wrapping: client)
                let tenant = try await admin.createTenant(.with { $0.label = "leaving" }).tenant.tenantID
                let response = try await admin.requestTenantOffboarding(.with { $0.tenantID = tenant; $0.waitingDays = 7 })
                let selfApproval = await RPCHarness.code { _ = try await admin.approveTenantOffboarding(.with { $0.requestID = response.requestID }) }
                #expect(selfApproval == .permissionDenied)
                return (tenant, response.requestID)
            }
            #expect(try await rpc.withClient(.frontend) { await Self.createSession($0, tenant: tenant) } == nil)
            try await rpc.withClient(.bob) { client in
                let approved = try await Custos_V1_Admin.Client(wrapping: client).approveTenantOffboarding(.with { $0.requestID = request })
                #expect(approved.dueAt.seconds - approved.approvedAt.seconds == 7 * 86_400)
            }
            let refused = try await rpc.withClient(.frontend) { await Self.createSession($0, tenant: tenant) }
            #expect(refused != nil && refused != .internalError, "got \(String(describing: refused))")
            try await rpc.withClient(.alice) { client in
                let admin = Custos_V1_Admin.Client(wrapping: client)
                let early = await RPCHarness.code { _ = try await admin.completeTenantOffboarding(.with { $0.requestID = request }) }
                #expect(early == .failedPrecondition)
                let keys = try await admin.listKeys(.with { $0.tenantID = tenant }).keys
                #expect(!keys.isEmpty && keys.allSatisfy(\.hasDisabledAt))
            }
        }
    }

    @Test("PublicKeys shows a disabled Ed25519 version as disabled (it listed it ACTIVE with nothing else while Custos refused to sign with it)")
    func disabledPublicKeyShown() async throws {
        try await RPCHarness.with("rpcpubdisabled") { rpc in
            let tenant = try await rpc.withClient(.alice) { client in
                try await Custos_V1_Admin.Client(wrapping: client).createTenant(.with { $0.label = "acme" }).tenant.tenantID
            }
            let created = try await rpc.withClient(.frontend) { client in
                try await Custos_V1_Webhooks.Client(wrapping: client).createEd25519Key(.init(), metadata: tenantMetadata(tenant))
            }
            func listed() async throws -> Custos_V1_WebhookPublicKey? {
                try await rpc.withClient(.frontend) { client in
                    try await Custos_V1_Webhooks.Client(wrapping: client).publicKeys(.init(), metadata: tenantMetadata(tenant)).keys.first { $0.version == created.version }
                }
            }
            #expect(try await listed()?.hasDisabledAt == false)
            try await rpc.withClient(.alice) { client in
                _ = try await Custos_V1_Admin.Client(wrapping: client).disableKey(.with { $0.tenantID = tenant; $0.purpose = .webhookEd25519; $0.version = created.version })
            }
            let disabled = try #require(try await listed())
            #expect(disabled.hasDisabledAt && disabled.state == .active && !disabled.hasDestructionDueAt)
        }
    }
}

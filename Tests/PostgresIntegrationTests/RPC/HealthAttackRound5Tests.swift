import Foundation
import GRPCCore
import RPC
import Testing

/// Attack review, round 5 (docs/threat-model.md): the health service is exempt from roles, not
/// from revocation.
@Suite("Attack review, round 5: a revoked certificate on the health service", .serialized)
struct HealthAttackRound5Tests {
    @Test("A revoked front-end certificate is refused by Health as by every other service; an unrevoked one is answered")
    func revokedFrontEndRefused() async throws {
        try await RPCHarness.with("atk5health") { rpc in
            let check = { (identity: RPCHarness.Identity) in
                await RPCHarness.code {
                    try await rpc.withClient(identity) { client in
                        _ = try await Grpc_Health_V1_Health.Client(wrapping: client).check(.init(), options: RPCHarness.fast)
                    }
                }
            }
            #expect(await check(.narrow) == nil, "answered before the revocation")
            try await rpc.withClient(.alice) { client in
                _ = try await Custos_V1_Admin.Client(wrapping: client).revokeCertificate(.with {
                    $0.serial = try! RPCAuthTests.serial(rpc.certificates.path("frontend-narrow.pem"))
                    $0.subject = "custos://frontend/narrow"
                })
            }
            // Before the fix the health service answered any certificate of the CA.
            #expect(await check(.narrow) == .unauthenticated, "a revoked front-end")
            #expect(await check(.frontend) == nil, "another front-end is still answered")
        }
    }
}

@testable import Custody
import Foundation
import GRPCCore
import HSMTestSupport
import RPC
import Storage
import Testing

/// A real `kill -9` of `custos serve` while it creates a tenant's Ed25519 webhook key, after the
/// key pair is on the token and before its row commits: the key pair was listed for destruction
/// before its import, so start-up reconciliation destroys it (no usable key that no row names),
/// and the creation asked again works.
@Suite("Ed25519 key creation survives kill -9 between the import and its row", .serialized)
struct WebhookKeyImportKillTests {
    @Test("killed at webhook.ed25519.imported: no row, the key pair listed; reconciliation destroys it; a retry creates v1 and signs")
    func importKilledBeforeRow() async throws {
        let harness = try await CustodyHarness.make("edkill")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let prefix = TenantKeyring.tokenObjectLabelPrefix(tenant, version: 1)

        let directory = try ChildCustos.directory(harness)
        let config = try ChildCustos.writeConfiguration(harness, in: directory)
        let (killed, address) = try await ChildCustos.serve(config: config, in: directory, environment: ["CUSTOS_CRASH_AT": "webhook.ed25519.imported"])
        let certificates = try TestCertificates.get()
        let frontend = RPCClientTLS(
            certificateChain: certificates.path("frontend-demo.pem"), privateKey: certificates.path("frontend-demo.key"), serverCA: certificates.path("ca.pem")
        ).transportSecurity
        let transport = try RoundRobinClient.transport(try ServiceAddresses(parsing: try #require(address)), security: frontend, timeout: .seconds(30))
        let code = try await withGRPCClient(transport: transport) { client in
            await RPCHarness.code {
                _ = try await Custos_V1_Webhooks.Client(wrapping: client).createEd25519Key(Custos_V1_CreateEd25519KeyRequest(), metadata: tenantMetadata(tenant.rawValue))
            }
        }
        try await ChildCustos.waitForExit(killed)
        #expect(ChildCustos.killedItself(killed), "the server stopped at webhook.ed25519.imported")
        #expect(code == .unavailable, "the caller saw the instance die")

        let orphans = try await WebhookTokenObjectTests.tokenObjectLabels(harness.pool, prefix: prefix)
        #expect(orphans.count == 2, "the key pair (private and public) is on the token")
        #expect(try await harness.keyring.versions(tenant).filter { $0.purpose == .webhookEd25519 }.isEmpty, "no row was stored")
        let listed = try await DestructionKillTests.pendingTokenDestructions(harness).map(\.label)
        #expect(Set(listed) == Set(orphans), "the key pair was listed for destruction before its import")

        // What every instance's start-up runs.
        let actions = try await harness.keyring.reconcile()
        #expect(actions.contains(.tokenObjectsDestroyed(tenant, .webhookEd25519, version: 1)))
        #expect(try await WebhookTokenObjectTests.tokenObjectLabels(harness.pool, prefix: prefix).isEmpty, "no key pair that no row names")
        #expect(try await DestructionKillTests.pendingTokenDestructions(harness).isEmpty)

        let created = try await harness.webhooks.createEd25519Key(tenant: tenant, actor: "officer")
        #expect(created.version == 1)
        let row = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .webhookEd25519 })
        #expect(try await WebhookTokenObjectTests.tokenObjectLabels(harness.pool, prefix: prefix).allSatisfy { $0 == row.tokenLabel })
        #expect(try await DestructionKillTests.pendingTokenDestructions(harness).isEmpty, "the stored row claimed its entry")
        _ = try await harness.webhooks.signatureHeader(tenant: tenant, id: "msg_1", timestamp: 1, body: [])
        #expect(try await harness.audit.verify().isIntact)
        await harness.shutdown()
    }
}

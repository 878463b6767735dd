@testable import Custody
import CustosModel
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import HSM
import HSMTestSupport
import RPC
import Storage
import Testing

/// A real `kill -9` of `custos serve` over two tokens while it creates a tenant's Ed25519 webhook
/// key, after the key pair is on both tokens and before its row commits: the key pair was listed
/// for destruction before its import, so the restarted server's start-up reconciliation destroys
/// it on both (no usable key that no row names), and the creation asked again works.
@Suite("Ed25519 key creation survives kill -9 between the import and its row", .serialized)
struct WebhookKeyImportKillTests {
    static func createEd25519Key(at address: String?, tenant: TenantID) async throws -> RPCError.Code? {
        let certificates = try TestCertificates.get()
        let frontend = RPCClientTLS(
            certificateChain: certificates.path("frontend-demo.pem"), privateKey: certificates.path("frontend-demo.key"), serverCA: certificates.path("ca.pem")
        ).transportSecurity
        let transport = try RoundRobinClient.transport(try ServiceAddresses(parsing: try #require(address)), security: frontend, timeout: .seconds(30))
        return try await withGRPCClient(transport: transport) { client in
            await RPCHarness.code {
                _ = try await Custos_V1_Webhooks.Client(wrapping: client).createEd25519Key(Custos_V1_CreateEd25519KeyRequest(), metadata: tenantMetadata(tenant.rawValue))
            }
        }
    }

    /// Labels starting with `prefix` on each token, in pool order.
    static func labels(_ pool: SessionPool, prefix: String) async throws -> [[String]] {
        var labels = [[String]]()
        for token in pool.tokenPools { labels.append(try await WebhookTokenObjectTests.tokenObjectLabels(token, prefix: prefix)) }
        return labels
    }

    @Test("killed at webhook.ed25519.imported with two tokens: no row, the pair on both and listed; the restarted server destroys both; a retry creates v1 on both")
    func importKilledBeforeRow() async throws {
        let harness = try await CustodyHarness.make("edkill")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let prefix = TenantKeyring.tokenObjectLabelPrefix(tenant, version: 1)
        let replica = try await ReplicaTokenPool.restoreReplica(harness, name: "edkillb")
        let replicaModule = try TestToken.isolatedModule()

        let directory = try ChildCustos.directory(harness)
        let config = try ChildCustos.writeConfiguration(harness, in: directory, replica: (replica, replicaModule.path))
        let (killed, address) = try await ChildCustos.serve(config: config, in: directory, environment: ["CUSTOS_CRASH_AT": "webhook.ed25519.imported"])
        let code = try await Self.createEd25519Key(at: address, tenant: tenant)
        try await ChildCustos.waitForExit(killed)
        #expect(ChildCustos.killedItself(killed), "the server stopped at webhook.ed25519.imported")
        #expect(code == .unavailable, "the caller saw the instance die")

        // Both tokens, as the test sees them.
        var configuration = harness.token.configuration()
        configuration.replicas = [TokenEndpoint(modulePath: replicaModule.path, token: .label(replica.label), userPIN: .file(path: replica.pinFile))]
        let pool = try SessionPool(configuration: configuration, module: try TestToken.isolatedModule(), replicaModules: [replicaModule], logger: harness.logs.logger)
        try await pool.start()
        let orphans = try await Self.labels(pool, prefix: prefix)
        #expect(orphans.map(\.count) == [2, 2], "the key pair (private and public) is on both tokens")
        #expect(try await harness.keyring.versions(tenant).filter { $0.purpose == .webhookEd25519 }.isEmpty, "no row was stored")
        #expect(Set(try await DestructionKillTests.pendingTokenDestructions(harness).map(\.label)) == Set(orphans[0]), "listed before its import")

        // The restarted server's start-up reconciliation.
        let (restarted, restartedAddress) = try await ChildCustos.serve(config: config, in: directory)
        let children = ChildProcesses([restarted])
        defer { children.killAll() }
        for _ in 0..<600 {
            if try await DestructionKillTests.pendingTokenDestructions(harness).isEmpty { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(try await Self.labels(pool, prefix: prefix).map(\.count) == [0, 0], "no key pair that no row names, on either token")
        #expect(try await DestructionKillTests.pendingTokenDestructions(harness).isEmpty)

        #expect(try await Self.createEd25519Key(at: restartedAddress, tenant: tenant) == nil, "the creation asked again works")
        let row = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .webhookEd25519 })
        #expect(row.version == 1)
        let created = try await Self.labels(pool, prefix: prefix)
        #expect(created.map(\.count) == [2, 2] && created.allSatisfy { $0.allSatisfy { $0 == row.tokenLabel } })
        #expect(try await DestructionKillTests.pendingTokenDestructions(harness).isEmpty, "the stored row claimed its entry")
        children.killAll()
        await pool.shutdown()
        _ = try await harness.webhooks.signatureHeader(tenant: tenant, id: "msg_1", timestamp: 1, body: [])
        #expect(try await harness.audit.verify().isIntact)
        await harness.shutdown()
    }
}

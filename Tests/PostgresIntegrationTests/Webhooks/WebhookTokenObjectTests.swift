import Custody
import CustosModel
import Foundation
import GRPCCore
import HSM
import Logging
import PKCS11
import RPC
import Storage
import Testing

@Suite("Ed25519 webhook keys: a bounded number of uniquely labelled token objects per tenant")
struct WebhookTokenObjectTests {
    @Test("A new key pair whose version number another instance stored first is ABORTED (try again), not ALREADY_EXISTS; its key pair is not left on the token (helper-92)")
    func versionTakenByAnotherInstance() async throws {
        let harness = try await CustodyHarness.make("tokobjrace")
        let signer = WebhookSigner(pool: harness.pool, keyring: harness.keyring, audit: harness.audit, trustedEscrowKeys: harness.trustedEscrowKeys, tokenObjectLimit: 5)
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await signer.createEd25519Key(tenant: tenant, actor: "officer")
        let creation = try await harness.racingAnotherInstancesVersion(tenant, .webhookEd25519, version: 2, copying: 1) {
            try await signer.createEd25519Key(tenant: tenant, actor: "officer")
        }
        await #expect {
            _ = try await creation.value
        } throws: { error in
            guard case CustodyError.changedConcurrently(tenant, .webhookEd25519, 2) = error else { return false }
            return true
        }
        // Two objects (private and public) for version 1; the refused pair's were destroyed.
        let labels = try await Self.tokenObjectLabels(harness.pool, prefix: "custos/tenant/\(tenant.rawValue)/")
        #expect(labels.count == 2, "\(labels)")
        await harness.shutdown()
    }

    @Test("8 concurrent rotations under a limit of 5: five succeed, three are refused, no orphan objects, signing works")
    func concurrentRotations() async throws {
        let harness = try await CustodyHarness.make("tokobj")
        let signer = WebhookSigner(pool: harness.pool, keyring: harness.keyring, audit: harness.audit, trustedEscrowKeys: harness.trustedEscrowKeys, tokenObjectLimit: 5)
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id

        let outcomes = await withTaskGroup(of: Result<(version: Int, publicKey: String), any Error>.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    do { return .success(try await signer.createEd25519Key(tenant: tenant, actor: "officer")) } catch { return .failure(error) }
                }
            }
            var all = [Result<(version: Int, publicKey: String), any Error>]()
            for await outcome in group { all.append(outcome) }
            return all
        }
        let created = outcomes.compactMap { try? $0.get() }.sorted { $0.version < $1.version }
        #expect(created.map(\.version) == [1, 2, 3, 4, 5])
        let refusals = outcomes.filter { outcome in
            guard case .failure(let error) = outcome, case CustodyError.tokenObjectLimit(let refused, let limit) = error else { return false }
            return refused == tenant && limit == 5
        }
        #expect(refusals.count == 3)

        // Exactly one key pair per stored version, each under its own label: nothing orphaned.
        let labels = try await Self.tokenObjectLabels(harness.pool, prefix: "custos/tenant/\(tenant.rawValue)/")
        let rowLabels = try await harness.keyring.versions(tenant).compactMap(\.tokenLabel)
        #expect(labels.count == 10)
        #expect(Set(labels) == Set(rowLabels) && Set(rowLabels).count == 5)

        // Signing works (every version still in its overlap signs) and verifies with the newest key.
        let body = Array(#"{"type":"key.rotated"}"#.utf8)
        let header = try await signer.signatureHeader(tenant: tenant, id: "msg_1", timestamp: 1_700_000_000, body: body)
        #expect(header.split(separator: " ").count == 5)
        let newest = try StandardWebhooks.decodePublicKey(try #require(created.last).publicKey)
        try WebhookVerifier(publicKeys: [newest]).verify(id: "msg_1", timestamp: "1700000000", signatureHeader: header, body: body, now: 1_700_000_000)

        // Over RPC the refusal is RESOURCE_EXHAUSTED with a message that names the limit.
        let status = StatusMapping.rpcError(for: CustodyError.tokenObjectLimit(tenant, limit: 5), method: "Rotate", logger: harness.logs.logger)
        #expect(status.code == .resourceExhausted && status.message.contains("5"))
        await harness.shutdown()
    }

    @Test("A key pair whose row cannot be stored is destroyed, not left on the token")
    func failedInsertLeavesNoObject() async throws {
        let harness = try await CustodyHarness.make("tokorphan")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        // A rotation "in progress" makes the pending-rotation insert fail after the key pair exists.
        try await harness.ownerSQL(tenant: nil, """
            INSERT INTO pending_rotations (tenant_id, purpose, version) VALUES (\(tenant.rawValue)::uuid, \(KeyPurpose.webhookEd25519.rawValue), 99)
            """)
        await #expect(throws: CustodyError.self) { _ = try await harness.webhooks.createEd25519Key(tenant: tenant, actor: "officer") }
        #expect(try await Self.tokenObjectLabels(harness.pool, prefix: "custos/tenant/\(tenant.rawValue)/").isEmpty)
        #expect(try await harness.keyring.versions(tenant).allSatisfy { $0.tokenLabel == nil })

        // Once the way is clear the same call succeeds and signs.
        try await harness.ownerSQL(tenant: nil, "DELETE FROM pending_rotations WHERE tenant_id = \(tenant.rawValue)::uuid")
        let (version, _) = try await harness.webhooks.createEd25519Key(tenant: tenant, actor: "officer")
        #expect(version == 1)
        #expect(try await Self.tokenObjectLabels(harness.pool, prefix: "custos/tenant/\(tenant.rawValue)/").count == 2)
        _ = try await harness.webhooks.signatureHeader(tenant: tenant, id: "msg_1", timestamp: 1, body: [])
        await harness.shutdown()
    }

    @Test("Reconciliation that rolls back a tampered pending Ed25519 version destroys its key pair")
    func rolledBackPendingVersion() async throws {
        let harness = try await CustodyHarness.make("tokrollback")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await harness.webhooks.createEd25519Key(tenant: tenant, actor: "officer")
        // A crash left v2 pending (key pair made, row stored), and the row was altered since.
        let label = "custos/tenant/\(tenant.rawValue)/webhook-ed25519/v2/00112233aabbccdd"
        let publicKey = try await harness.pool.withPersistentSession { session in
            let templates = KeyTemplate.ed25519(label: label, id: [0x0F, 0x0F], token: true)
            let pair = try session.generateKeyPair(.ecEdwardsKeyPairGen, publicTemplate: templates.public, privateTemplate: templates.private)
            return Array(try session.attribute(.ecPoint, of: pair.publicKey).suffix(32))
        }
        let pending = KeyVersionRecord(
            tenant: tenant, purpose: .webhookEd25519, version: 2, state: .pending, wrappedKey: nil, wrapMechanism: "none (token object)",
            rootKEKVersion: 1, checkValue: [1, 2, 3], publicKey: publicKey, tokenLabel: label, rowMAC: [UInt8](repeating: 0, count: 32)
        )
        try await harness.service.withTenant(tenant, context: "plant a pending version") { connection in
            try await KeyVersionStore.insert(pending, on: connection)
            try await KeyVersionStore.markPending(tenant, .webhookEd25519, version: 2, on: connection)
        }
        #expect(try await Self.tokenObjectLabels(harness.pool, prefix: "custos/tenant/\(tenant.rawValue)/").count == 4)
        #expect(try await harness.keyring.reconcile() == [.rolledBack(tenant, .webhookEd25519, version: 2)])
        let labels = try await Self.tokenObjectLabels(harness.pool, prefix: "custos/tenant/\(tenant.rawValue)/")
        #expect(labels.count == 2 && !labels.contains(label))
        _ = try await harness.webhooks.signatureHeader(tenant: tenant, id: "msg_1", timestamp: 1, body: [])
        await harness.shutdown()
    }

    @Test("Over RPC, Webhooks.Rotate past the tenant's limit answers RESOURCE_EXHAUSTED")
    func rotateOverRPC() async throws {
        try await RPCHarness.with("tokrpc") { rpc in
            let tenant = try await rpc.withClient(.alice) { client in
                try await Custos_V1_Admin.Client(wrapping: client).createTenant(.with { $0.label = "acme" }).tenant.tenantID
            }
            try await rpc.withClient(.frontend) { client in
                let webhooks = Custos_V1_Webhooks.Client(wrapping: client)
                let scope = tenantMetadata(tenant)
                for _ in 0..<WebhookSigner.defaultTokenObjectLimit {
                    _ = try await webhooks.rotate(.with { $0.purpose = .webhookEd25519 }, metadata: scope)
                }
                let code = await RPCHarness.code { _ = try await webhooks.rotate(.with { $0.purpose = .webhookEd25519 }, metadata: scope) }
                #expect(code == .resourceExhausted)
            }
        }
    }

    /// Labels of every token object whose label starts with `prefix` (one per object).
    static func tokenObjectLabels(_ pool: SessionPool, prefix: String) async throws -> [String] {
        try await pool.withPersistentSession { session in
            try session.findObjects([.token(true)], limit: 10_000)
                .map { String(decoding: try session.attribute(.label, of: $0), as: UTF8.self) }
                .filter { $0.hasPrefix(prefix) }
        }
    }
}

extension WebhookTokenObjectTests {
    @Test("a v1a creation whose completion fails gives its version back, key pair included: the next creation is not refused (helper-68)")
    func failedCreationGivesBack() async throws {
        let harness = try await CustodyHarness.make("tokgiveback")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await harness.webhooks.createEd25519Key(tenant: tenant, actor: "officer")
        let prefix = "custos/tenant/\(tenant.rawValue)/"
        #expect(try await Self.tokenObjectLabels(harness.pool, prefix: prefix).count == 2)
        // The active v1's row fails its MAC: the second step (which retires it) refuses.
        let v1 = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .webhookEd25519 && $0.version == 1 })
        try await harness.ownerSQL(tenant: tenant, "UPDATE key_versions SET row_mac = '\\x00'::bytea WHERE purpose = 'webhook-ed25519' AND version = 1")
        await #expect(throws: CustodyError.self) { _ = try await harness.webhooks.createEd25519Key(tenant: tenant, actor: "officer") }
        #expect(!(try await harness.keyring.versions(tenant).contains { $0.purpose == .webhookEd25519 && $0.state == .pending }), "the pending version was given back")
        #expect(try await Self.tokenObjectLabels(harness.pool, prefix: prefix).count == 2, "and its key pair destroyed")
        // Put right, the next creation goes through at once (its listing refused it before).
        try await harness.ownerSQL(tenant: tenant, "UPDATE key_versions SET row_mac = \(Data(v1.rowMAC)) WHERE purpose = 'webhook-ed25519' AND version = 1")
        let created = try await harness.webhooks.createEd25519Key(tenant: tenant, actor: "officer")
        #expect(created.version == 2)
        await harness.shutdown()
    }
}

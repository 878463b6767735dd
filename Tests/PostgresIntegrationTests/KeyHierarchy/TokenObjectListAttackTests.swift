@testable import Custody
import CustosModel
import Foundation
import HSM
import PKCS11
import Storage
import Testing

/// Attack review, round 4 (docs/threat-model.md): `pending_token_destructions` is the list of
/// token objects start-up reconciliation destroys by label. It has no row-level security and
/// the service role may insert into it, so a database writer without the user PIN chooses what
/// is on it. Each test failed on the code before its fix.
@Suite("Attack review, round 4: labels a database writer lists for destruction")
struct TokenObjectListAttackTests {
    static let timestamp: Int64 = 1_700_000_000
    static let body = Array(#"{"type":"verification.completed"}"#.utf8)

    /// How many objects on the harness token carry `label`.
    static func objects(_ label: String, _ pool: SessionPool) async throws -> Int {
        try await pool.withPersistentSession { session in try session.findObjects([.label(label)], limit: 16).count }
    }

    static func list(_ label: String, tenant: TenantID, version: Int = 1, in harness: CustodyHarness) async throws {
        try await harness.service.withTransaction(context: "list a label for destruction") { connection in
            try await PendingTokenDestructionStore.insert(
                PendingTokenDestructionStore.Entry(label: label, tenant: tenant, purpose: .webhookEd25519, version: version), on: connection
            )
        }
    }

    @Test("a live v1a key, another tenant's key, the HSM's anchors and a root key listed by the service role: reconciliation destroys none and still starts")
    func liveObjectsListed() async throws {
        let harness = try await CustodyHarness.make("atk4list")
        // As start-up does: the HSM's list of key states written.
        _ = try await harness.keyring.reconcile()
        let victim = try await harness.keyring.createTenant(label: "victim", actor: "officer").id
        let attacker = try await harness.keyring.createTenant(label: "attacker", actor: "officer").id
        let (_, publicKey) = try await harness.webhooks.createEd25519Key(tenant: victim, actor: "officer")
        let label = try #require(try await harness.keyring.versions(victim).first { $0.purpose == .webhookEd25519 }?.tokenLabel)
        // Every one of these exists on the token now (the anchors were written by the actions above).
        let targets = [label, KeyStateAnchor.label, AuditHSMAnchor.label, EscrowKeyAnchor.label, RootKeys.macLabel(version: 1)]
        for target in targets { #expect(try await Self.objects(target, harness.pool) > 0, "\(target) is not on the token") }

        // The service role (no PIN): the victim's label under its own tenant and version, and
        // every other label under the attacker's own tenant.
        try await Self.list(label, tenant: victim, in: harness)
        for target in targets.dropFirst() { try await Self.list(target, tenant: attacker, in: harness) }
        // Before: C_DestroyObject on every token for each label, and the undestroyable root key
        // made the whole reconciliation (so start-up) fail.
        _ = try await harness.keyring.reconcile()
        for target in targets { #expect(try await Self.objects(target, harness.pool) > 0, "\(target) was destroyed") }
        let header = try await harness.webhooks.signatureHeader(tenant: victim, id: "msg_1", timestamp: Self.timestamp, body: Self.body)
        try WebhookVerifier(publicKeys: [try StandardWebhooks.decodePublicKey(publicKey)]).verify(
            id: "msg_1", timestamp: String(Self.timestamp), signatureHeader: header, body: Self.body, now: Self.timestamp
        )
        #expect(harness.logs.text.contains("not destroyed"))
        // Taken off the list: the next start-up does not meet them again.
        let left = try await harness.service.withTransaction(context: "read the list") { connection in
            try await PendingTokenDestructionStore.all(on: connection)
        }
        #expect(left.isEmpty)
        await harness.shutdown()
    }

    @Test("the list of key states destroyed through the list, then rebuilt from a replayed row: a disabled version usable again")
    func keyStateListDestroyedThenRebuilt() async throws {
        let harness = try await CustodyHarness.make("atk4states")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let before = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .data && $0.version == 1 })
        try await harness.keyring.disable(tenant, .data, version: 1, actor: "officer")
        // A backup's copy of the row put back (RowReplayAttackTests: refused while the list stands).
        try await harness.ownerSQL(tenant: tenant, """
            UPDATE key_versions SET disabled_at = NULL, row_mac = \(Data(before.rowMAC)) WHERE purpose = 'data' AND version = 1
            """)
        try await Self.list(KeyStateAnchor.label, tenant: tenant, in: harness)
        // Two start-ups: the first destroyed the list (before), the second rebuilt it from the
        // MAC-valid rows, the replayed one among them.
        _ = try await harness.keyring.reconcile()
        let restarted = TenantKeyring(pool: harness.pool, database: harness.service, audit: harness.audit, logger: harness.logs.logger)
        _ = try await restarted.reconcile()
        await #expect {
            _ = try await restarted.key(tenant, .data, version: 1)
        } throws: { error in
            if case CustodyError.keyDisabled(tenant, .data, 1) = error { true } else { false }
        }
        await harness.shutdown()
    }

    @Test("what the list is for still works: a destroyed version's key pair and a new pair whose row never committed are destroyed")
    func honestEntriesStillDestroyed() async throws {
        let harness = try await CustodyHarness.make("atk4honest")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await harness.webhooks.createEd25519Key(tenant: tenant, actor: "officer")
        // A key pair imported for v2 whose row never committed (a crash before the insert).
        let orphan = TenantKeyring.tokenObjectLabelPrefix(tenant, version: 2) + "00112233aabbccdd"
        try await harness.pool.withPersistentSession { session in
            let templates = KeyTemplate.ed25519(label: orphan, id: [0x0F, 0x0E], token: true)
            _ = try session.generateKeyPair(.ecEdwardsKeyPairGen, publicTemplate: templates.public, privateTemplate: templates.private)
        }
        try await Self.list(orphan, tenant: tenant, version: 2, in: harness)
        #expect(try await Self.objects(orphan, harness.pool) == 2)
        _ = try await harness.keyring.reconcile()
        #expect(try await Self.objects(orphan, harness.pool) == 0)
        await harness.shutdown()
    }
}

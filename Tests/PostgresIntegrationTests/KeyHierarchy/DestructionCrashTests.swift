import Composition
import Custody
import CustosModel
import Foundation
import HSM
import PKCS11
import Storage
import Testing

/// A destruction commits its row and audit entry first and then destroys the version's token
/// objects (an Ed25519 key pair). A crash in between used to leave the key pair on the token with
/// no row naming it (the row's label was already cleared); now the label stays listed until the
/// objects are gone, and start-up reconciliation destroys them.
@Suite("A crash between a destruction's commit and its token objects' removal")
struct DestructionCrashTests {
    struct InjectedCrash: Error {}

    @Test("The Ed25519 key pair of a destroyed version left on the token by a crash is destroyed by start-up reconciliation")
    func leftoverTokenObjectsAreDestroyed() async throws {
        let harness = try await CustodyHarness.make("destroycrash", keyringStepHook: { step in
            if step == .destructionRecorded { throw InjectedCrash() }
        })
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await harness.webhooks.createEd25519Key(tenant: tenant, actor: "officer")
        _ = try await harness.webhooks.createEd25519Key(tenant: tenant, overlap: .zero, actor: "officer")  // v1 retired
        let label = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .webhookEd25519 && $0.version == 1 }?.tokenLabel)
        func objects() async throws -> Int {
            try await harness.pool.withPersistentSession { session in try session.findObjects([.label(label)], limit: 4).count }
        }
        #expect(try await objects() > 0)

        await #expect(throws: InjectedCrash.self) {
            try await harness.keyring.destroy(tenant, .webhookEd25519, version: 1, waitingPeriod: .zero, actor: "officer")
        }
        let row = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .webhookEd25519 && $0.version == 1 })
        #expect(row.state == .destroyed && row.tokenLabel == nil, "the destruction committed")
        #expect(try await objects() > 0, "the crash left the key pair on the token")

        // Start-up: a keyring of a new process reconciles.
        let restarted = TenantKeyring(pool: harness.pool, database: harness.service, audit: harness.audit, logger: harness.logs.logger)
        #expect(try await restarted.reconcile() == [
            .tokenObjectsDestroyed(tenant, .webhookEd25519, version: 1),
        ])
        #expect(try await objects() == 0, "the leftover key pair is gone")
        #expect(try await restarted.reconcile().isEmpty, "nothing left to do")
        // The tenant's current key still signs.
        _ = try await harness.webhooks.signatureHeader(tenant: tenant, id: "msg_1", timestamp: 1, body: [1])
        await harness.shutdown()
    }
}

import Composition
import Crypto
import Custody
import CustosModel
import Foundation
import HSMTestSupport
import Testing

/// config.json's `webhookEscrowKeys`: the custodians' escrow keys, pinned outside the token and
/// the database (docs/key-hierarchy.md, "Replica tokens"; the database-writer attacks are in
/// ``WebhookKeyAttackRound3Tests``).
@Suite("Webhook escrow keys trusted by configuration")
struct WebhookEscrowKeyTrustTests {
    static func load(_ json: String) throws -> CustosConfiguration {
        let path = TestEnvironment.directory + "/escrow-trust-\(UUID().uuidString.prefix(8)).json"
        try Data(json.utf8).write(to: URL(fileURLWithPath: path))
        return try CustosConfiguration.load(explicitPath: path)
    }

    static let hsm = #""hsm": {"modulePath": "/m.so", "tokenLabel": "t", "userPINFile": "/p"}"#

    @Test("fingerprints parse as `custos ceremony generate-escrow` prints them; a malformed entry is a configuration error naming it (before: no such field)")
    func configuration() throws {
        let publicKey = Array(Curve25519.KeyAgreement.PrivateKey().publicKey.rawRepresentation)
        let fingerprint = EscrowKeyFingerprint(publicKey: publicKey)
        #expect(fingerprint.description.hasPrefix("sha256:") && fingerprint.description.count == 7 + 64)
        #expect(EscrowKeyFingerprint(parsing: fingerprint.description) == fingerprint)
        #expect(EscrowKeyFingerprint(parsing: "sha256:" + fingerprint.description.dropFirst(7).uppercased()) == fingerprint)

        let configured = try Self.load(#"{"webhookEscrowKeys": ["\#(fingerprint)"], \#(Self.hsm)}"#)
        #expect(try configured.trustedEscrowKeys() == [fingerprint])
        #expect(try Self.load("{\(Self.hsm)}").trustedEscrowKeys().isEmpty, "absent: no v1a keys, not an error")

        for malformed in [String(fingerprint.description.dropFirst(7)), "sha256:abc", fingerprint.description + "00", "sha1:" + fingerprint.description.dropFirst(7)] {
            let configuration = try Self.load(#"{"webhookEscrowKeys": ["\#(fingerprint)", "\#(malformed)"], \#(Self.hsm)}"#)
            let error = #expect(throws: ConfigurationError.self) { try configuration.trustedEscrowKeys() }
            #expect(error == .invalid(
                path: configuration.source,
                reason: "webhookEscrowKeys[1] is not an escrow key fingerprint: expected sha256: and 64 hex digits, as `custos ceremony generate-escrow` prints"
            ), "\(malformed)")
        }
    }

    @Test("with no escrow key in the configuration, v1a creation is refused naming the field and nothing is made; v1 secrets still work")
    func emptyList() async throws {
        let harness = try await CustodyHarness.make("escrowtrust")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let signer = WebhookSigner(pool: harness.pool, keyring: harness.keyring, audit: harness.audit, trustedEscrowKeys: [])
        let refused = await #expect(throws: CustodyError.self) { _ = try await signer.createEd25519Key(tenant: tenant, actor: "officer") }
        #expect(refused.map { if case .escrowKeysNotConfigured = $0 { true } else { false } } == true, "\(String(describing: refused))")
        #expect(refused?.description.contains("webhookEscrowKeys") == true)
        #expect(try await harness.keyring.versions(tenant).filter { $0.purpose == .webhookEd25519 }.isEmpty)
        #expect(try await harness.keyring.seedEscrows(tenant).isEmpty)
        _ = try await signer.createSecret(tenant: tenant, actor: "officer")
        #expect(try await harness.keyring.versions(tenant).filter { $0.purpose == .webhook }.count == 1)
        // The harness's runtime, configured as setup configures it, makes them.
        _ = try await harness.webhooks.createEd25519Key(tenant: tenant, actor: "officer")
        #expect(try await harness.keyring.seedEscrows(tenant).count == 1)
        await harness.shutdown()
    }
}

import Crypto
import Custody
import CustosModel
import Foundation
import HSM
import SecureMemory
import Testing

@Suite("Webhook signing in the HSM")
struct WebhookSignerTests {
    @Test("v1 signatures from the HSM verify with the secret shown once; rotation signs with both during the overlap")
    func v1AndRotation() async throws {
        let harness = try await CustodyHarness.make("webhooks")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        await #expect(throws: CustodyError.self) {
            _ = try await harness.webhooks.signatureHeader(tenant: tenant.id, id: "msg_1", timestamp: 1, body: [])
        }
        let (version1, secret1Text) = try await harness.webhooks.createSecret(tenant: tenant.id, actor: "officer")
        #expect(version1 == 1)
        let secret1 = try StandardWebhooks.decodeSecret(String(decoding: secret1Text.withUnsafeBytes { Array($0) }, as: UTF8.self))
        #expect(secret1.count == 32)
        let body = Array(#"{"type":"verification.completed","decision":"green"}"#.utf8)
        let now = Int64(Date().timeIntervalSince1970)
        let header = try await harness.webhooks.signatureHeader(tenant: tenant.id, id: "msg_1", timestamp: now, body: body)
        #expect(header.hasPrefix("v1,"))
        // Independently of Custos: HMAC-SHA256 over "id.timestamp.body" with the secret.
        let expected = secret1.withUnsafeBytes { key in
            Array(HMAC<SHA256>.authenticationCode(for: StandardWebhooks.signedContent(id: "msg_1", timestamp: now, body: body), using: SymmetricKey(data: key)))
        }
        #expect(header == "v1," + StandardWebhooks.base64Encode(expected))
        try WebhookVerifier(secrets: [secret1]).verify(id: "msg_1", timestamp: String(now), signatureHeader: header, body: body, now: now)

        // Rotation with a 1-hour overlap: both secrets sign.
        let (version2, secret2Text) = try await harness.webhooks.createSecret(tenant: tenant.id, overlap: .seconds(3600), actor: "officer")
        #expect(version2 == 2)
        let secret2 = try StandardWebhooks.decodeSecret(String(decoding: secret2Text.withUnsafeBytes { Array($0) }, as: UTF8.self))
        let dual = try await harness.webhooks.signatureHeader(tenant: tenant.id, id: "msg_2", timestamp: now, body: body)
        #expect(dual.split(separator: " ").count == 2)
        try WebhookVerifier(secrets: [secret1]).verify(id: "msg_2", timestamp: String(now), signatureHeader: dual, body: body, now: now)
        try WebhookVerifier(secrets: [secret2]).verify(id: "msg_2", timestamp: String(now), signatureHeader: dual, body: body, now: now)
        // Tampered body, stale timestamp, wrong secret.
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try WebhookVerifier(secrets: [secret2]).verify(id: "msg_2", timestamp: String(now), signatureHeader: dual, body: body + [0x20], now: now)
        }
        #expect(throws: WebhookVerificationError.timestampTooOld) {
            try WebhookVerifier(secrets: [secret2]).verify(id: "msg_2", timestamp: String(now), signatureHeader: dual, body: body, now: now + 301)
        }
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try WebhookVerifier(secrets: [SecretBytes([UInt8](repeating: 1, count: 32))]).verify(id: "msg_2", timestamp: String(now), signatureHeader: dual, body: body, now: now)
        }
        // End the overlap: only the new secret signs.
        try await harness.keyring.retire(tenant.id, .webhook, version: 1, actor: "officer")
        let single = try await harness.webhooks.signatureHeader(tenant: tenant.id, id: "msg_3", timestamp: now, body: body)
        #expect(single.split(separator: " ").count == 1)
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try WebhookVerifier(secrets: [secret1]).verify(id: "msg_3", timestamp: String(now), signatureHeader: single, body: body, now: now)
        }
        try WebhookVerifier(secrets: [secret2]).verify(id: "msg_3", timestamp: String(now), signatureHeader: single, body: body, now: now)
        // Another tenant's key never signs for this tenant.
        let other = try await harness.keyring.createTenant(label: "globex", actor: "officer")
        _ = try await harness.webhooks.createSecret(tenant: other.id, actor: "officer")
        let foreign = try await harness.webhooks.signatureHeader(tenant: other.id, id: "msg_3", timestamp: now, body: body)
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try WebhookVerifier(secrets: [secret2]).verify(id: "msg_3", timestamp: String(now), signatureHeader: foreign, body: body, now: now)
        }
        await harness.shutdown()
    }

    @Test("v1a: Ed25519 in the HSM, private key a sensitive non-extractable token object; verifies with the published key")
    func ed25519() async throws {
        let harness = try await CustodyHarness.make("v1a")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        let (_, publicKeyText) = try await harness.webhooks.createEd25519Key(tenant: tenant.id, actor: "officer")
        #expect(publicKeyText.hasPrefix("whpk_"))
        #expect(try await harness.webhooks.publicKeys(tenant: tenant.id) == [publicKeyText])
        let publicKey = try StandardWebhooks.decodePublicKey(publicKeyText)
        let body = Array(#"{"type":"key.rotated"}"#.utf8)
        let header = try await harness.webhooks.signatureHeader(tenant: tenant.id, id: "msg_9", timestamp: 1_700_000_000, body: body)
        #expect(header.hasPrefix("v1a,"))
        try WebhookVerifier(publicKeys: [publicKey]).verify(id: "msg_9", timestamp: "1700000000", signatureHeader: header, body: body, now: 1_700_000_000)
        #expect(throws: WebhookVerificationError.noMatchingSignature) {
            try WebhookVerifier(publicKeys: [publicKey]).verify(id: "msg_9", timestamp: "1700000000", signatureHeader: header, body: body + [1], now: 1_700_000_000)
        }
        // The label has a random part (two rotations never share one): read it from the row.
        let label = try #require(try await harness.keyring.versions(tenant.id).first { $0.purpose == .webhookEd25519 }?.tokenLabel)
        #expect(label.hasPrefix("custos/tenant/\(tenant.id.rawValue)/webhook-ed25519/v1/"))
        let attributes = try await harness.pool.withPersistentSession { session in
            let handle = try session.findObjects([.class(.privateKey), .label(label)]).first!
            return (try session.boolAttribute(.sensitive, of: handle), try session.boolAttribute(.extractable, of: handle), try session.boolAttribute(.token, of: handle))
        }
        #expect(attributes == (true, false, true))
        await harness.shutdown()
    }
}

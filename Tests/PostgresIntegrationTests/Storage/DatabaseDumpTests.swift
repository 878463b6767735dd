import Custody
import CustosModel
import Foundation
import PKCS11
import Testing

@Suite("A stolen database")
struct DatabaseDumpTests {
    @Test("pg_dump after issuing keys and secrets holds no API key, no webhook secret, no clear key material")
    func dumpHoldsNoSecret() async throws {
        let harness = try await CustodyHarness.make("dump")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        var secrets = [String]()
        for _ in 0..<3 {
            let issued = try await harness.apiKeys.issue(tenant: tenant.id, scopes: ["verify"], actor: "officer")
            let text = String(decoding: issued.key.withUnsafeBytes { Array($0) }, as: UTF8.self)
            secrets.append(text)
            // The secret part alone (43 base62 characters after the key id).
            secrets.append(String(text.dropFirst("custos_test_".count + 12).prefix(43)))
        }
        let (_, webhookSecret) = try await harness.webhooks.createSecret(tenant: tenant.id, actor: "officer")
        let whsec = String(decoding: webhookSecret.withUnsafeBytes { Array($0) }, as: UTF8.self)
        let raw = try StandardWebhooks.decodeSecret(whsec).withUnsafeBytes { Array($0) }
        secrets.append(whsec)
        secrets.append(String(whsec.dropFirst("whsec_".count)))
        secrets.append(raw.map { String(format: "%02x", $0) }.joined())  // how bytea would show it
        let dump = try harness.dump()
        #expect(dump.contains("key_versions") && dump.contains("api_keys"), "the dump covers the tables")
        #expect(dump.contains(tenant.id.rawValue))
        for secret in secrets { #expect(!dump.contains(secret), "a secret is in the dump") }
        // The wrapped blobs are there — and are not the key: unwrapping needs the HSM's root KEK.
        #expect(dump.contains("CKM_AES_KEY_WRAP_PAD"))
        await harness.shutdown()
    }
}

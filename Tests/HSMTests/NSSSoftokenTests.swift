import Crypto
import HSM
import HSMTestSupport
import PKCS11
import SecureMemory
import Testing

/// NSS softokn by configuration alone (module path, `pReserved` init string, token label, PIN
/// file): the pool logs in and computes, and the self-test names what NSS lacks — which is why
/// the service refuses to serve custody on it (CustodyCapabilityTests).
@Suite("NSS softokn as a second PKCS#11 module", .serialized)
struct NSSSoftokenTests {
    static let unfitForCustody: Set<String> = [
        "AES key wrap with padding (RFC 5649 §6, unwrap; 32-byte wrap round trip)",
        "Unwrap templates enforced (CKA_UNWRAP_TEMPLATE)",
        "AES key wrap with padding is RFC 5649 under 0x210A",
        "Key check values readable (CKA_CHECK_VALUE)",
        "Private data objects kept private, unchangeable and uncopyable (key-state list, anchors)",
    ]

    @Test("the pool logs in with the init string and computes HMACs in NSS")
    func poolComputes() async throws {
        let (token, module) = try NSSToken.isolated("compute")
        let pool = try await startedPool(token, module: module)
        let key = try await pool.withSession { session in
            try session.pkcs11.createObject([
                .class(.secretKey), .keyType(.genericSecret), .token(false), .private(true), .sensitive(true), .sign(true),
                .value(SecretBytes([UInt8](repeating: 7, count: 32))),
            ])
        }
        let mac = try await pool.withSession { session in try session.pkcs11.sign(.sha256HMAC, key: key, data: Array("abc".utf8)) }
        let software = HMAC<SHA256>.authenticationCode(for: Array("abc".utf8), using: SymmetricKey(data: [UInt8](repeating: 7, count: 32)))
        #expect(mac == Array(software))
        await pool.shutdown()
    }

    @Test("the self-test names exactly what NSS lacks, and which of it rules out custody")
    func selfTestNamesGaps() async throws {
        let (token, module) = try NSSToken.isolated("selftest")
        let pool = try await startedPool(token, module: module)
        let results = await SelfTest.run(on: pool)
        let failed = Dictionary(uniqueKeysWithValues: results.filter { !$0.passed }.map { ($0.name, $0) })
        #expect(Set(SelfTest.custodyBlockers(results).map(\.name)) == Self.unfitForCustody)
        let ed25519 = try #require(failed["Ed25519 (RFC 8032 §7.1 test 1, and swift-crypto verification)"])
        #expect(ed25519.neededFor == .ed25519Webhooks, "no EdDSA only turns off v1a webhooks")
        #expect(failed.count == Self.unfitForCustody.count + 1, "everything else passes: \(failed.keys.sorted())")
        #expect(failed["AES key wrap with padding is RFC 5649 under 0x210A"]?.detail.contains("PKCS#7") == true)
        #expect(failed["Unwrap templates enforced (CKA_UNWRAP_TEMPLATE)"]?.detail.contains("value is readable") == true)
        let dataObject = try #require(failed["Private data objects kept private, unchangeable and uncopyable (key-state list, anchors)"])
        #expect(dataObject.detail.contains("refuses a private data object"), "\(dataObject.detail)")
        await pool.shutdown()
    }
}

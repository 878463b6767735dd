import Crypto
import PKCS11
import SecureMemory

/// Known-answer tests of every operation Custos uses, run against the configured token with
/// throw-away session keys: against swift-crypto where it has the algorithm, against
/// published vectors where it does not (FIPS-197, NIST SP 800-38B, RFC 5649, RFC 8032).
public enum SelfTest {
    /// One check's outcome. `detail` names what differed or which call failed, never key bytes.
    public struct Result: Sendable, Codable, Equatable {
        public let name: String
        public let passed: Bool
        public let detail: String
        /// What a failure costs: custody as a whole, or only an optional feature.
        public let neededFor: Need
    }

    /// What Custos cannot do on a module that fails a check.
    public enum Need: String, Sendable, Codable, Equatable {
        /// Tenant keys, API keys, tokens, sealing: the service refuses to serve custody.
        case custody
        /// Only `v1a` (Ed25519) webhook signatures.
        case ed25519Webhooks = "ed25519-webhooks"
    }

    /// Runs every check: the known answers and the module's ``capabilityChecks``.
    public static func run(on pool: SessionPool) async -> [Result] {
        await run(checks + capabilityChecks, on: pool)
    }

    /// Runs only ``capabilityChecks`` (what keeps keys unreadable), as `custos serve` does at
    /// start-up.
    public static func capabilities(of pool: SessionPool) async -> [Result] {
        await run(capabilityChecks, on: pool)
    }

    /// Runs `checks` one after another; a failing check does not stop the others.
    private static func run(_ checks: [Check], on pool: SessionPool) async -> [Result] {
        var results = [Result]()
        for check in checks {
            do {
                let detail = try await pool.withSession(.custom) { session in try check.run(session.pkcs11) }
                results.append(Result(name: check.name, passed: detail == nil, detail: detail ?? "ok", neededFor: check.neededFor))
            } catch {
                results.append(Result(name: check.name, passed: false, detail: String(describing: error), neededFor: check.neededFor))
            }
        }
        return results
    }

    struct Check: Sendable {
        let name: String
        var neededFor: Need = .custody
        /// `nil` when the answer is right, else what was wrong.
        let run: @Sendable (PKCS11Session) throws -> String?
    }

    private static let checks: [Check] = [
        Check(name: "SHA-256 (swift-crypto)") { session in
            let message = Array("abc".utf8)
            return expect(try session.digest(.sha256, data: message), Array(SHA256.hash(data: message)))
        },
        Check(name: "HMAC-SHA256 (swift-crypto)") { session in
            let keyBytes = (0..<32).map { UInt8($0 &* 3 &+ 1) }
            let key = try importKey(session, keyBytes, .genericSecret, [.sign(true), .verify(true)])
            defer { try? session.destroyObject(key) }
            let message = [UInt8](repeating: 0xA5, count: 64)
            let mac = try session.sign(.sha256HMAC, key: key, data: message)
            let software = Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: keyBytes)))
            guard try session.verify(.sha256HMAC, key: key, data: message, signature: software) else { return "C_Verify refused a valid MAC" }
            return expect(mac, software)
        },
        Check(name: "AES-256-ECB, 1,024 blocks in one call (FIPS-197 C.3)") { session in
            let key = try importKey(session, (0..<32).map { UInt8($0) }, .aes, [.encrypt(true)])
            defer { try? session.destroyObject(key) }
            let block = hexBytes("00112233445566778899aabbccddeeff")
            let output = try session.encrypt(.aesECB, key: key, data: Array([[UInt8]](repeating: block, count: 1024).joined()))
            let expected = Array([[UInt8]](repeating: hexBytes("8ea2b7ca516745bfeafc49904b496089"), count: 1024).joined())
            return expect(output, expected)
        },
        Check(name: "AES-256-GCM both ways (swift-crypto)") { session in
            let keyBytes = (0..<32).map { UInt8(200 &- $0) }
            let key = try importKey(session, keyBytes, .aes, [.encrypt(true), .decrypt(true)])
            defer { try? session.destroyObject(key) }
            let nonce = try session.generateRandom(count: 12)
            let plaintext = Array("self-test plaintext".utf8)
            let aad = Array("custos/selftest".utf8)
            let sealed = try session.encrypt(.aesGCM(iv: nonce, additionalData: aad), key: key, data: plaintext)
            let box = try AES.GCM.SealedBox(nonce: AES.GCM.Nonce(data: nonce), ciphertext: sealed.dropLast(16), tag: sealed.suffix(16))
            if let problem = expect(Array(try AES.GCM.open(box, using: SymmetricKey(data: keyBytes), authenticating: aad)), plaintext) {
                return "HSM → swift-crypto: " + problem
            }
            let software = try AES.GCM.seal(plaintext, using: SymmetricKey(data: keyBytes), nonce: AES.GCM.Nonce(data: nonce), authenticating: aad)
            let opened = try session.decrypt(.aesGCM(iv: nonce, additionalData: aad), key: key, data: Array(software.ciphertext) + Array(software.tag))
            return expect(opened, plaintext).map { "swift-crypto → HSM: " + $0 }
        },
        Check(name: "AES-256-CMAC (NIST SP 800-38B D.3, example 10)") { session in
            let key = try importKey(session, hexBytes("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4"), .aes, [.sign(true)])
            defer { try? session.destroyObject(key) }
            return expect(try session.sign(.aesCMAC, key: key, data: hexBytes("6bc1bee22e409f96e93d7e117393172a")), hexBytes("28a7023f452e8f82bd4bf28d8c37c35c"))
        },
        Check(name: "AES key wrap with padding (RFC 5649 §6, unwrap; 32-byte wrap round trip)") { session in
            let kek = try importKey(session, hexBytes("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"), .aes, [.wrap(true), .unwrap(true)])
            defer { try? session.destroyObject(kek) }
            let unwrapped = try session.unwrapKey(.aesKeyWrapPad, unwrappingKey: kek, wrapped: hexBytes("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"), template: [
                .class(.secretKey), .keyType(.genericSecret), .token(false), .sensitive(false), .extractable(true),
            ])
            defer { try? session.destroyObject(unwrapped) }
            if let problem = expect(try session.attribute(.value, of: unwrapped), hexBytes("c37b7e6492584340bed12207808941155068f738")) {
                return "RFC 5649 vector: " + problem
            }
            let macBytes = [UInt8](repeating: 0x3C, count: 32)
            let mac = try importKey(session, macBytes, .genericSecret, [.sign(true), .extractable(true)])
            defer { try? session.destroyObject(mac) }
            let blob = try session.wrapKey(.aesKeyWrapPad, wrappingKey: kek, key: mac)
            let back = try session.unwrapKey(.aesKeyWrapPad, unwrappingKey: kek, wrapped: blob, template: KeyTemplate.tenantKeyUnwrapped(.hmac))
            defer { try? session.destroyObject(back) }
            let message = Array("wrap round trip".utf8)
            return expect(try session.sign(.sha256HMAC, key: back, data: message),
                          Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: macBytes))))
        },
        Check(name: "Random (C_GenerateRandom)") { session in
            let first = try session.generateRandom(count: 32)
            let second = try session.generateRandom(count: 32)
            if first == second { return "two draws were equal" }
            if Set(first).count < 8 { return "32 random bytes had fewer than 8 distinct values" }
            return nil
        },
    ]

    static func importKey(_ session: PKCS11Session, _ bytes: [UInt8], _ type: KeyType, _ usage: [Attribute]) throws -> ObjectHandle {
        try session.createObject([
            .class(.secretKey), .keyType(type), .token(false), .private(true), .sensitive(true), .value(SecretBytes(bytes)),
        ] + usage)
    }

    static func expect(_ actual: [UInt8], _ expected: [UInt8]) -> String? {
        if actual == expected { return nil }
        if actual.count != expected.count { return "expected \(expected.count) bytes, got \(actual.count)" }
        let first = zip(actual, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? 0
        return "output differs from the known answer from byte \(first)"
    }
}

/// Hex text to bytes, for the known answers above: constants of this file, so a typo traps in
/// the first self-test run rather than comparing against a wrong answer.
func hexBytes(_ string: String) -> [UInt8] {
    guard let bytes = Hex.decode(string) else { preconditionFailure("a known answer is not hex") }
    return bytes
}

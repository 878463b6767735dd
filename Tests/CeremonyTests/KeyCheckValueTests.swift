@testable import Ceremony
import HSM
import HSMTestSupport
import PKCS11
import Testing

@Suite("Key check values: software KCVs equal SoftHSM's CKA_CHECK_VALUE")
struct KeyCheckValueTests {
    @Test("Known answers: AES-256 KCV is AES-ECB(K, 0)[0..3]; generic-secret KCV is SHA-1(K)[0..3]")
    func knownAnswers() throws {
        let zero = secret([UInt8](repeating: 0, count: 32))
        let counting = secret((0..<32).map(UInt8.init))
        // openssl enc -aes-256-ecb -nopad over 16 zero bytes: dc95c078…, f29000b6…
        #expect(try KeyCheckValue.compute(zero, keyType: .aes) == [0xDC, 0x95, 0xC0])
        #expect(try KeyCheckValue.compute(counting, keyType: .aes) == [0xF2, 0x90, 0x00])
        // sha1(32 zero bytes) = de8a847b…; sha1(00 01 … 1f) = ae5bd8ef…
        #expect(try KeyCheckValue.compute(zero, keyType: .genericSecret) == [0xDE, 0x8A, 0x84])
        #expect(try KeyCheckValue.compute(counting, keyType: .genericSecret) == [0xAE, 0x5B, 0xD8])
        #expect(throws: CeremonyError.self) { try KeyCheckValue.compute(zero, keyType: .ecEdwards) }
    }

    @Test("SoftHSM reports the same CKA_CHECK_VALUE for imported AES and generic-secret keys")
    func matchesToken() async throws {
        let token = try TestToken.make("kcv")
        let session = try token.userSession()
        defer { try? session.close() }
        for seed in 0..<4 as Range<UInt64> {
            let value = try await SeededRandomSource(seed: seed).randomSecret(count: 32)
            let aes = try session.createObject(KeyTemplate.rootKEK(label: "kcv/aes/\(seed)", id: [UInt8(seed)], value: value, usage: .encryptOnly))
            let generic = try session.createObject(KeyTemplate.rootMAC(label: "kcv/mac/\(seed)", id: [UInt8(seed)], value: value))
            #expect(try session.attribute(.checkValue, of: aes) == KeyCheckValue.compute(value, keyType: .aes))
            #expect(try session.attribute(.checkValue, of: generic) == KeyCheckValue.compute(value, keyType: .genericSecret))
            // Imported root keys keep the root templates' protections.
            #expect(try !session.boolAttribute(.extractable, of: aes) && session.boolAttribute(.sensitive, of: aes))
            #expect(try !session.boolAttribute(.modifiable, of: generic) && !session.boolAttribute(.copyable, of: generic))
            #expect(try session.boolAttribute(.wrap, of: aes) && !session.boolAttribute(.encrypt, of: aes))
            #expect(try session.boolAttribute(.sign, of: generic) && !session.boolAttribute(.wrap, of: generic))
            // Root keys stay: not even their maker can destroy them (CKA_DESTROYABLE false).
            #expect(throws: PKCS11Error.self) { try session.destroyObject(aes) }
            #expect(throws: PKCS11Error.self) { try session.destroyObject(generic) }
        }
    }
}

import HSM
import HSMTestSupport
import PKCS11
import SecureMemory
import Testing

@Suite("Key protection and bad input")
struct KeyProtectionTests {
    let token: TestToken
    let session: PKCS11Session

    init() throws {
        token = try TestToken.make("protect")
        session = try token.userSession()
    }

    @Test("A sensitive key refuses to reveal CKA_VALUE")
    func sensitiveValueRefused() throws {
        let key = try session.generateKey(.aesKeyGen, template: KeyTemplate.tenantKeyUnwrapped(.encryptDecrypt) + [.valueLength(32)])
        #expect(throws: PKCS11Error(function: .getAttributeValue, returnValue: .attributeSensitive)) {
            _ = try session.attribute(.value, of: key)
        }
    }

    @Test("A non-extractable key refuses to be wrapped")
    func nonExtractableNotWrappable() throws {
        let kek = try session.generateKey(.aesKeyGen, template: [
            .class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .wrap(true), .unwrap(true),
        ])
        let key = try session.generateKey(.genericSecretKeyGen, template: KeyTemplate.tenantKeyUnwrapped(.hmac) + [.valueLength(32)])
        #expect(throws: PKCS11Error(function: .wrapKey, returnValue: .keyUnextractable)) {
            _ = try session.wrapKey(.aesKeyWrapPad, wrappingKey: kek, key: key)
        }
    }

    @Test("Templates lock permissions: an encrypt-only key cannot be widened to decrypt or copied")
    func permissionsLocked() throws {
        let key = try session.generateKey(.aesKeyGen, template: KeyTemplate.tenantKeyUnwrapped(.encryptOnly) + [.valueLength(32)])
        #expect(throws: PKCS11Error.self) { try session.setAttributes([.decrypt(true)], of: key) }
        #expect(throws: PKCS11Error.self) { _ = try session.copyObject(key, template: [.decrypt(true)]) }
        #expect(try session.boolAttribute(.decrypt, of: key) == false)
        // And the PRF key really cannot decrypt.
        let ciphertext = try session.encrypt(.aesECB, key: key, data: [UInt8](repeating: 0, count: 16))
        #expect(throws: PKCS11Error(function: .decryptInit, returnValue: .keyFunctionNotPermitted)) {
            _ = try session.decrypt(.aesECB, key: key, data: ciphertext)
        }
    }

    @Test("An unwrapped key can be locked like a generated one (CKA_MODIFIABLE false anywhere in the template)")
    func unwrapLockedTemplate() throws {
        let kek = try session.generateKey(.aesKeyGen, template: [
            .class(.secretKey), .keyType(.aes), .valueLength(32), .token(false), .wrap(true), .unwrap(true),
        ])
        let key = try session.generateKey(.genericSecretKeyGen, template: KeyTemplate.tenantKeyForWrapping(.hmac))
        let blob = try session.wrapKey(.aesKeyWrapPad, wrappingKey: kek, key: key)
        let template: [Attribute] = [.modifiable(false)] + KeyTemplate.tenantKeyUnwrapped(.hmac).filter { $0.type != .modifiable }
        let unwrapped = try session.unwrapKey(.aesKeyWrapPad, unwrappingKey: kek, wrapped: blob, template: template)
        #expect(try session.boolAttribute(.modifiable, of: unwrapped) == false)
        #expect(try session.boolAttribute(.copyable, of: unwrapped) == false)
        #expect(try session.boolAttribute(.extractable, of: unwrapped) == false)
        #expect(try session.sign(.sha256HMAC, key: unwrapped, data: [1]) == session.sign(.sha256HMAC, key: key, data: [1]))
    }

    @Test("Bad input gives the right PKCS11Error, not a crash")
    func badInput() throws {
        let aes = try session.generateKey(.aesKeyGen, template: KeyTemplate.tenantKeyUnwrapped(.encryptDecrypt) + [.valueLength(32)])
        // ECB needs whole blocks.
        #expect(throws: PKCS11Error(function: .encrypt, returnValue: .dataLenRange)) {
            _ = try token.userSession().encrypt(.aesECB, key: aes, data: [UInt8](repeating: 1, count: 15))
        }
        // HMAC with an AES key.
        #expect(throws: PKCS11Error.self) {
            _ = try token.userSession().sign(.sha256HMAC, key: aes, data: [1])
        }
        // A handle that names nothing.
        #expect(throws: PKCS11Error(function: .signInit, returnValue: .objectHandleInvalid)) {
            _ = try token.userSession().sign(.sha256HMAC, key: ObjectHandle(rawValue: 999_999), data: [1])
        }
        // HMAC keys under 32 bytes are refused by SoftHSM.
        let short = try session.createObject([
            .class(.secretKey), .keyType(.genericSecret), .token(false), .sign(true), .value(SecretBytes([UInt8](repeating: 1, count: 16))),
        ])
        #expect(throws: PKCS11Error(function: .signInit, returnValue: .keySizeRange)) {
            _ = try token.userSession().sign(.sha256HMAC, key: short, data: [1])
        }
        // GCM "ciphertext" shorter than its tag.
        #expect(throws: PKCS11Error.self) {
            _ = try token.userSession().decrypt(.aesGCM(iv: [UInt8](repeating: 0, count: 12), additionalData: []), key: aes, data: [1, 2])
        }
    }

    @Test("Errors name the function and return value, and nothing else")
    func errorDescription() {
        let error = PKCS11Error(function: .sign, returnValue: .operationActive)
        #expect(error.description == "C_Sign failed: CKR_OPERATION_ACTIVE")
        #expect(PKCS11ReturnValue(rawValue: 0x8000_0001).name == "CKR_VENDOR_DEFINED+0x1")
        #expect(PKCS11ReturnValue(rawValue: 0x7777).name == "0x7777")
    }

    @Test("Loading refuses relative paths and non-modules; selection refuses unknown tokens")
    func moduleErrors() throws {
        #expect(throws: PKCS11ModuleError.relativePath("libsofthsm2.so")) { _ = try PKCS11Module(path: "libsofthsm2.so") }
        #expect(throws: PKCS11ModuleError.self) { _ = try PKCS11Module(path: "/nonexistent/libnothing.so") }
        #expect(throws: PKCS11ModuleError.notAPKCS11Module(path: "/lib/x86_64-linux-gnu/libc.so.6")) {
            _ = try PKCS11Module(path: "/lib/x86_64-linux-gnu/libc.so.6")
        }
        #expect(throws: PKCS11ModuleError.tokenNotFound(.label("no-such-token"))) {
            _ = try TestToken.sharedModule.findToken(.label("no-such-token"))
        }
    }

    @Test("SecretBytes never prints its content and compares by value")
    func secretBytes() {
        let secret = SecretBytes(Array("1234-super-secret".utf8))
        #expect(!String(describing: secret).contains("super"))
        #expect(!String(reflecting: secret).contains("super"))
        #expect(secret == SecretBytes(Array("1234-super-secret".utf8)))
        #expect(secret != SecretBytes(Array("1234-super-secreT".utf8)))
        #expect(secret != SecretBytes(Array("1234".utf8)))
    }
}

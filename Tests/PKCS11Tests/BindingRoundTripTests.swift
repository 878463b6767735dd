import Crypto
import HSM
import HSMTestSupport
import PKCS11
import SecureMemory
import Testing

/// A logged-in session on a fresh token of one backend: SoftHSM (a token of its own on the
/// shared module) or NSS softokn (a database of its own on a private copy of the module).
struct BindingToken {
    let backend: TestBackend
    let session: PKCS11Session
    /// Another logged-in session on the same token.
    let userSession: () throws -> PKCS11Session

    init(_ backend: TestBackend) throws {
        self.backend = backend
        switch backend {
        case .softhsm:
            let token = try TestToken.make("binding")
            userSession = { try token.userSession() }
        case .nss:
            let (token, module) = try NSSToken.isolated("binding")
            userSession = {
                let session = try module.openSession(slot: try module.findToken(.label(NSSToken.label)).slot)
                do {
                    try session.login(.user, pin: token.userPIN)
                } catch let error as PKCS11Error where error.returnValue == .userAlreadyLoggedIn {
                    // NSS's login is per module instance: another session of it logged in already.
                }
                return session
            }
        }
        session = try userSession()
    }

    func importSecret(_ bytes: [UInt8], type: KeyType, sensitive: Bool = true, extra: [Attribute] = []) throws -> ObjectHandle {
        try session.createObject([
            .class(.secretKey), .keyType(type), .token(false), .private(true), .sensitive(sensitive),
            .value(SecretBytes(bytes)),
        ] + extra)
    }
}

/// Every binding operation against a real token of each backend (SoftHSM 2.6.1 and NSS
/// softokn), checked against swift-crypto or a published vector. What NSS lacks is skipped
/// there with the reason: EdDSA, RFC 5649 under 0x210A (NSS's is PKCS#7-padded key wrap),
/// CKA_CHECK_VALUE (SelfTest names these gaps) and private token data objects.
@Suite("PKCS#11 binding round trips")
struct BindingRoundTripTests {

    @Test("HSM HMAC-SHA256 equals swift-crypto's HMAC", arguments: TestBackend.allCases)
    func hmacMatchesSoftware(backend: TestBackend) throws {
        let binding = try BindingToken(backend)
        let session = binding.session
        let keyBytes = (0..<32).map { UInt8($0 &* 7 &+ 3) }
        let key = try binding.importSecret(keyBytes, type: .genericSecret, extra: [.sign(true), .verify(true)])
        for length in [0, 1, 64, 1000] {
            let message = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            let hsm = try session.sign(.sha256HMAC, key: key, data: message)
            let software = Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: keyBytes)))
            #expect(hsm == software, "length \(length)")
            #expect(try session.verify(.sha256HMAC, key: key, data: message, signature: hsm))
            var tampered = hsm
            tampered[0] ^= 1
            if backend == .nss {
                // NSS softokn answers a wrong HMAC with CKR_DEVICE_ERROR, not CKR_SIGNATURE_INVALID:
                // a pool would take that for a failing device (Custos never asks a module to
                // verify a MAC it could get wrong; it compares MACs itself).
                #expect(throws: PKCS11Error(function: .verify, returnValue: .deviceError)) {
                    try session.verify(.sha256HMAC, key: key, data: message, signature: tampered)
                }
            } else {
                #expect(try session.verify(.sha256HMAC, key: key, data: message, signature: tampered) == false)
            }
        }
    }

    @Test("AES-GCM: HSM ciphertext opens with swift-crypto and the other way round", arguments: TestBackend.allCases)
    func gcmInteroperates(backend: TestBackend) throws {
        let binding = try BindingToken(backend)
        let session = binding.session
        let keyBytes = (0..<32).map { UInt8(255 - $0) }
        let key = try binding.importSecret(keyBytes, type: .aes, extra: [.encrypt(true), .decrypt(true)])
        let nonce = try session.generateRandom(count: 12)
        let plaintext = Array("candidate name and email".utf8)
        let aad = Array("tenant-7/data/v1".utf8)
        let sealed = try session.encrypt(.aesGCM(iv: nonce, additionalData: aad), key: key, data: plaintext)
        #expect(sealed.count == plaintext.count + 16)
        let box = try AES.GCM.SealedBox(
            nonce: AES.GCM.Nonce(data: nonce), ciphertext: sealed.dropLast(16), tag: sealed.suffix(16)
        )
        #expect(Array(try AES.GCM.open(box, using: SymmetricKey(data: keyBytes), authenticating: aad)) == plaintext)

        let softwareBox = try AES.GCM.seal(plaintext, using: SymmetricKey(data: keyBytes), nonce: AES.GCM.Nonce(data: nonce), authenticating: aad)
        let opened = try session.decrypt(
            .aesGCM(iv: nonce, additionalData: aad), key: key, data: Array(softwareBox.ciphertext) + Array(softwareBox.tag)
        )
        #expect(opened == plaintext)
    }

    @Test("AES-GCM refuses a tampered ciphertext", arguments: TestBackend.allCases)
    func gcmDetectsTampering(backend: TestBackend) throws {
        let binding = try BindingToken(backend)
        let session = binding.session
        let key = try binding.importSecret([UInt8](repeating: 9, count: 32), type: .aes, extra: [.encrypt(true), .decrypt(true)])
        let nonce = [UInt8](repeating: 1, count: 12)
        var sealed = try session.encrypt(.aesGCM(iv: nonce, additionalData: []), key: key, data: [1, 2, 3, 4])
        sealed[1] ^= 0x80
        let fresh = try binding.userSession()
        #expect(throws: PKCS11Error.self) {
            _ = try fresh.decrypt(.aesGCM(iv: nonce, additionalData: []), key: key, data: sealed)
        }
    }

    @Test("AES-256-ECB matches the FIPS-197 known answer, many blocks in one call", arguments: TestBackend.allCases)
    func ecbKnownAnswer(backend: TestBackend) throws {
        let binding = try BindingToken(backend)
        let session = binding.session
        let keyBytes = (0..<32).map { UInt8($0) }
        let key = try binding.importSecret(keyBytes, type: .aes, extra: [.encrypt(true), .decrypt(false)])
        let block: [UInt8] = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]
        let expected: [UInt8] = [0x8e, 0xa2, 0xb7, 0xca, 0x51, 0x67, 0x45, 0xbf, 0xea, 0xfc, 0x49, 0x90, 0x4b, 0x49, 0x60, 0x89]
        let output = try session.encrypt(.aesECB, key: key, data: Array([[UInt8]](repeating: block, count: 1024).joined()))
        #expect(output.count == 1024 * 16)
        #expect(Array(output.prefix(16)) == expected)
        #expect(Array(output.suffix(16)) == expected)
    }

    @Test("AES-CMAC matches NIST SP 800-38B (AES-256, examples 9 and 10)", arguments: TestBackend.allCases)
    func cmacKnownAnswer(backend: TestBackend) throws {
        let binding = try BindingToken(backend)
        let session = binding.session
        let keyBytes = hex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
        let key = try binding.importSecret(keyBytes, type: .aes, extra: [.sign(true), .verify(true)])
        #expect(try session.sign(.aesCMAC, key: key, data: [UInt8]()) == hex("028962f61b7bf89efc6b551f4667d983"))
        #expect(try session.sign(.aesCMAC, key: key, data: hex("6bc1bee22e409f96e93d7e117393172a")) == hex("28a7023f452e8f82bd4bf28d8c37c35c"))
    }

    /// SoftHSM only — NSS softokn: 0x210A is AES key wrap with PKCS#7 padding, not RFC 5649, so the RFC 5649 vectors do not apply (wrapRoundTrip runs there).
    @Test("AES key wrap with padding: RFC 5649 §6 vectors unwrap, 32-byte keys wrap as RFC 5649")
    func keyWrapWithPadding() throws {
        let binding = try BindingToken(.softhsm)
        let session = binding.session
        let kek = try binding.importSecret(hex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"), type: .aes, extra: [.wrap(true), .unwrap(true)])
        let extractable: [Attribute] = [
            .class(.secretKey), .keyType(.genericSecret), .token(false), .sensitive(false), .extractable(true),
        ]
        for (wrapped, key) in [
            ("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a", "c37b7e6492584340bed12207808941155068f738"),
            ("afbeb0f07dfbf5419200f2ccb50bb24f", "466f7250617369"),
        ] {
            let handle = try session.unwrapKey(.aesKeyWrapPad, unwrappingKey: kek, wrapped: hex(wrapped), template: extractable)
            #expect(try session.attribute(.value, of: handle) == hex(key))
        }
        // SoftHSM 2.6.1 zero-pads a key whose length is not a multiple of 8 before wrapping and
        // counts the padding in the RFC 5649 length field. Custos only wraps 32-byte keys, for
        // which the output is standard; this canary says so if the module's behaviour changes.
        let twentyBytes = try binding.importSecret(hex("c37b7e6492584340bed12207808941155068f738"), type: .genericSecret, sensitive: false, extra: [.extractable(true)])
        #expect(try session.wrapKey(.aesKeyWrapPad, wrappingKey: kek, key: twentyBytes)
            == hex("cf1e485360e1a8126f524d01771677f9400edb4d074f14116988d71e1588e367"))

        // A 32-byte key under a 256-bit KEK, checked against pyca/cryptography's RFC 5649.
        let kek256 = try binding.importSecret((0x20..<0x40).map { UInt8($0) }, type: .aes, extra: [.wrap(true), .unwrap(true)])
        let key32 = try binding.importSecret((0x80..<0xA0).map { UInt8($0) }, type: .genericSecret, extra: [.extractable(true)])
        #expect(try session.wrapKey(.aesKeyWrapPad, wrappingKey: kek256, key: key32)
            == hex("9465dd648aa0ddae887f20dc7cb52f5c89f32ca08acb7f499f766285bb7926f0f00e67c8bce0f4f8"))
    }

    @Test("AES key wrap (0x210A): a sensitive HMAC key wrapped and unwrapped again computes the same MAC", arguments: TestBackend.allCases)
    func wrapRoundTrip(backend: TestBackend) throws {
        let binding = try BindingToken(backend)
        let session = binding.session
        let kek = try binding.importSecret(hex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8"), type: .aes, extra: [.wrap(true), .unwrap(true)])
        let macBytes = [UInt8](repeating: 0x5a, count: 32)
        let macKey = try binding.importSecret(macBytes, type: .genericSecret, extra: [.sign(true), .extractable(true)])
        let wrapped = try session.wrapKey(.aesKeyWrapPad, wrappingKey: kek, key: macKey)
        let unwrapped = try session.unwrapKey(.aesKeyWrapPad, unwrappingKey: kek, wrapped: wrapped, template: [
            .class(.secretKey), .keyType(.genericSecret), .token(false), .private(true), .sensitive(true),
            .extractable(false), .sign(true),
        ])
        let message = Array("audit entry 42".utf8)
        #expect(try session.sign(.sha256HMAC, key: unwrapped, data: message)
            == Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: macBytes))))
    }

    @Test("A tampered wrapped blob is refused by C_UnwrapKey", arguments: TestBackend.allCases)
    func tamperedUnwrapFails(backend: TestBackend) throws {
        let binding = try BindingToken(backend)
        let session = binding.session
        let kek = try binding.importSecret([UInt8](repeating: 3, count: 32), type: .aes, extra: [.wrap(true), .unwrap(true)])
        let key = try binding.importSecret([UInt8](repeating: 4, count: 32), type: .genericSecret, extra: [.sign(true), .extractable(true)])
        var wrapped = try session.wrapKey(.aesKeyWrapPad, wrappingKey: kek, key: key)
        wrapped[5] ^= 0x01
        #expect(throws: PKCS11Error.self) {
            _ = try session.unwrapKey(.aesKeyWrapPad, unwrappingKey: kek, wrapped: wrapped, template: [
                .class(.secretKey), .keyType(.genericSecret), .token(false), .sensitive(true), .sign(true),
            ])
        }
    }

    /// SoftHSM only — NSS softokn has no EdDSA (v1a webhooks are off there).
    @Test("HSM Ed25519 signatures verify with swift-crypto's Curve25519")
    func ed25519() throws {
        let binding = try BindingToken(.softhsm)
        let session = binding.session
        let templates = KeyTemplate.ed25519(label: "test-ed25519", id: [1, 2, 3], token: false)
        let pair = try session.generateKeyPair(.ecEdwardsKeyPairGen, publicTemplate: templates.public, privateTemplate: templates.private)
        let point = try session.attribute(.ecPoint, of: pair.publicKey)
        #expect(point.count == 34 && point[0] == 0x04 && point[1] == 0x20)
        let publicKey = try Curve25519.Signing.PublicKey(rawRepresentation: point.suffix(32))
        let message = Array(#"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}"#.utf8)
        let signature = try session.sign(.eddsa, key: pair.privateKey, data: message)
        #expect(signature.count == 64)
        #expect(publicKey.isValidSignature(signature, for: message))
        #expect(!publicKey.isValidSignature(signature, for: message + [0]))
        #expect(try session.boolAttribute(.sensitive, of: pair.privateKey))
        #expect(try session.boolAttribute(.extractable, of: pair.privateKey) == false)
    }

    @Test("SHA-256 digest and random bytes", arguments: TestBackend.allCases)
    func digestAndRandom(backend: TestBackend) throws {
        let binding = try BindingToken(backend)
        let session = binding.session
        let message = Array("abc".utf8)
        #expect(try session.digest(.sha256, data: message) == Array(SHA256.hash(data: message)))
        let first = try session.generateRandom(count: 32)
        let second = try session.generateRandom(count: 32)
        #expect(first.count == 32 && first != second)
        #expect(try session.generateSecret(count: 48).count == 48)
    }

    @Test("Generated keys honour their templates; KCV is readable from a sensitive key where the module keeps one", arguments: TestBackend.allCases)
    func generatedKeys(backend: TestBackend) throws {
        let binding = try BindingToken(backend)
        let session = binding.session
        let aes = try session.generateKey(.aesKeyGen, template: KeyTemplate.tenantKeyUnwrapped(.encryptOnly) + [.valueLength(32)])
        #expect(try session.ulongAttribute(.valueLength, of: aes) == 32)
        #expect(try session.boolAttribute(.decrypt, of: aes) == false)
        // NSS softokn keeps no CKA_CHECK_VALUE (SelfTest: "Key check values readable").
        if backend != .nss { #expect(try session.attribute(.checkValue, of: aes).count == 3) }
        let hmac = try session.generateKey(.genericSecretKeyGen, template: KeyTemplate.tenantKeyUnwrapped(.hmac) + [.valueLength(32)])
        #expect(try session.sign(.sha256HMAC, key: hmac, data: [1, 2, 3]).count == 32)
    }

    /// SoftHSM only — NSS softokn refuses this private token `CKO_DATA` object with
    /// `CKR_ATTRIBUTE_VALUE_INVALID`, so the audit, key-state and transcript anchors could not live
    /// there (custody is refused on NSS for the gaps SelfTest names already).
    @Test("Data objects (CKO_DATA): a private token object's CKA_VALUE is stored, found by label and application, read back; the value is fixed once created")
    func dataObjectRoundTrip() throws {
        let binding = try BindingToken(.softhsm)
        let session = binding.session
        let label = "custos/test/anchor"
        let first = Array("head 1".utf8)
        let handle = try session.createObject([
            .class(.data), .token(true), .private(true), .modifiable(true), .label(label),
            .application("custos:test"), .dataValue(first),
        ])
        #expect(try session.findObjects([.class(.data), .label(label), .application("custos:test")]) == [handle])
        #expect(try session.findObjects([.class(.data), .label(label), .application("custos:other")]).isEmpty)
        #expect(try binding.userSession().attribute(.value, of: handle) == first, "readable from every logged-in session")
        #expect(try session.boolAttribute(.private, of: handle))
        // C_SetAttributeValue works on the object, but SoftHSM 2.6.1 keeps a data object's
        // CKA_VALUE read-only after creation: whoever moves a value on creates a new object.
        try session.setAttributes([.label(label + "/renamed")], of: handle)
        #expect(try session.findObjects([.class(.data), .label(label + "/renamed")]) == [handle])
        #expect(throws: PKCS11Error(function: .setAttributeValue, returnValue: .attributeReadOnly)) {
            try session.setAttributes([.dataValue(Array("head 2".utf8))], of: handle)
        }
        try session.destroyObject(handle)
        #expect(try session.findObjects([.class(.data), .label(label + "/renamed")]).isEmpty)
    }
}

func hex(_ string: String) -> [UInt8] {
    var bytes = [UInt8]()
    var iterator = string.utf8.makeIterator()
    while let high = iterator.next(), let low = iterator.next() {
        bytes.append(UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)!)
    }
    return bytes
}

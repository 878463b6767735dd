public import PKCS11
public import SecureMemory

/// The typed operations the service needs, each one HSM round trip on a pooled session.
extension SessionPool {
    /// HMAC-SHA256 of `data` under `key` (a generic secret key of at least 32 bytes: SoftHSM
    /// refuses shorter HMAC keys).
    public func hmacSHA256(key: HSMKey, data: some PKCS11Bytes & Sendable) async throws -> [UInt8] {
        try await withSession(.hmac) { session in
            try session.pkcs11.sign(.sha256HMAC, key: session.handle(for: key), data: data)
        }
    }

    /// HMAC-SHA256 of `data` under `key`. A concrete overload of the generic one: generic code
    /// is not specialised across modules, and this is the hottest call of the service.
    public func hmacSHA256(key: HSMKey, data: [UInt8]) async throws -> [UInt8] {
        try await withSession(.hmac) { session in
            try session.pkcs11.sign(.sha256HMAC, key: session.handle(for: key), data: data)
        }
    }

    /// HMAC-SHA256 of each message under its key, in one round trip: one hop to a worker and
    /// back for all of them, where a call each costs a hop each (`bench pool`: about as much as
    /// the HMAC itself). For a request's several record MACs. Fails as a whole: a key the token
    /// does not hold (``HSMError/keyNotFound(_:)``) fails every message.
    public func hmacSHA256(_ messages: [(key: HSMKey, data: [UInt8])]) async throws -> [[UInt8]] {
        try await withSession(.hmac) { session in
            try messages.map { message in
                try session.pkcs11.sign(.sha256HMAC, key: session.handle(for: message.key), data: message.data)
            }
        }
    }

    /// AES-CMAC of `data` under `key`.
    public func cmac(key: HSMKey, data: some PKCS11Bytes & Sendable) async throws -> [UInt8] {
        try await withSession(.cmac) { session in
            try session.pkcs11.sign(.aesCMAC, key: session.handle(for: key), data: data)
        }
    }

    /// AES-ECB over many 16-byte blocks in one `C_Encrypt`: the pseudo-random function of
    /// biometric tokenization (one round trip per embedding, DESIGN §6).
    public func encryptBlocksECB(key: HSMKey, blocks: some PKCS11Bytes & Sendable) async throws -> [UInt8] {
        try await withSession(.prf) { session in
            try session.pkcs11.encrypt(.aesECB, key: session.handle(for: key), data: blocks)
        }
    }

    /// AES-256-GCM with a fresh 12-byte nonce from the HSM's RNG.
    public func sealAESGCM(
        key: HSMKey, plaintext: some PKCS11Bytes & Sendable, additionalData: [UInt8] = []
    ) async throws -> AESGCMSealedBox {
        try await withSession(.seal) { session in
            let nonce = try session.pkcs11.generateRandom(count: AESGCMSealedBox.nonceLength)
            let ciphertext = try session.pkcs11.encrypt(
                .aesGCM(iv: nonce, additionalData: additionalData), key: session.handle(for: key), data: plaintext
            )
            return AESGCMSealedBox(nonce: nonce, ciphertextAndTag: ciphertext)
        }
    }

    /// Opens an AES-256-GCM box; a wrong key, nonce, tag or additional data fails with
    /// ``HSMError/operationFailed(_:)`` (`CKR_ENCRYPTED_DATA_INVALID` on SoftHSM).
    public func openAESGCM(key: HSMKey, box: AESGCMSealedBox, additionalData: [UInt8] = []) async throws -> [UInt8] {
        try await withSession(.open) { session in
            try session.pkcs11.decrypt(
                .aesGCM(iv: box.nonce, additionalData: additionalData), key: session.handle(for: key),
                data: box.ciphertextAndTag
            )
        }
    }

    /// Ed25519 signature (64 bytes) of `message` by the private key `key`.
    public func signEd25519(key: HSMKey, message: some PKCS11Bytes & Sendable) async throws -> [UInt8] {
        try await withSession(.sign) { session in
            try session.pkcs11.sign(.eddsa, key: session.handle(for: key), data: message)
        }
    }

    /// `key` wrapped under `wrappingKey` with AES key wrap with padding (RFC 5649).
    public func wrapKey(_ key: HSMKey, with wrappingKey: HSMKey) async throws -> [UInt8] {
        try await withSession(.wrap) { session in
            try session.pkcs11.wrapKey(
                .aesKeyWrapPad, wrappingKey: session.handle(for: wrappingKey), key: session.handle(for: key)
            )
        }
    }

    /// Random bytes from the HSM's RNG.
    public func random(count: Int) async throws -> [UInt8] {
        try await withSession(.random) { session in try session.pkcs11.generateRandom(count: count) }
    }

    /// Random bytes from the HSM's RNG, straight into protected memory (key material, secrets).
    public func randomSecret(count: Int) async throws -> SecretBytes {
        try await withSession(.random) { session in try session.pkcs11.generateSecret(count: count) }
    }
}

/// AES-GCM output: the nonce and the ciphertext with its 16-byte tag appended.
public struct AESGCMSealedBox: Sendable, Hashable {
    public static let nonceLength = 12
    public let nonce: [UInt8]
    public let ciphertextAndTag: [UInt8]

    public init(nonce: [UInt8], ciphertextAndTag: [UInt8]) {
        self.nonce = nonce
        self.ciphertextAndTag = ciphertextAndTag
    }
}

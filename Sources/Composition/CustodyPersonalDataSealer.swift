public import Custody
public import CustosModel
public import HSM
import SecureMemory
public import Verification

/// Names and emails sealed with AES-256-GCM in the HSM under the tenant's `data` key (the key
/// never leaves the HSM unwrapped). Stored form: 12-byte nonce ‖ ciphertext ‖ 16-byte tag.
public struct CustodyPersonalDataSealer: PersonalDataSealing {
    let pool: SessionPool
    let keyring: TenantKeyring

    public init(pool: SessionPool, keyring: TenantKeyring) {
        self.pool = pool
        self.keyring = keyring
    }

    public func seal(_ text: PersonalText, tenant: TenantID, keyVersion: Int?, context: [UInt8]) async throws -> (sealed: [UInt8], keyVersion: Int) {
        try await keyring.keyUses.counting(tenant, .data, requested: keyVersion, .seal) { version in
            let (key, resolved) = try await keyring.key(tenant, .data, version: keyVersion)
            version = resolved
            let plaintext = SecretBytes(Array(text.value.utf8))
            let box = try await hsm { try await pool.sealAESGCM(key: key, plaintext: plaintext, additionalData: context) }
            return (box.nonce + box.ciphertextAndTag, resolved)
        }
    }

    public func open(_ sealed: [UInt8], keyVersion: Int, tenant: TenantID, context: [UInt8]) async throws -> PersonalText {
        try await keyring.keyUses.counting(tenant, .data, version: keyVersion, .open) {
            let box = try Self.box(sealed, tenant: tenant, keyVersion: keyVersion)
            let (key, _) = try await keyring.key(tenant, .data, version: keyVersion)
            return try await Self.open(box, key: key, keyVersion: keyVersion, tenant: tenant, context: context, pool: pool)
        }
    }

    public func prepared(tenant: TenantID, versions: Set<Int>) async throws -> any PreparedPersonalDataSealing {
        var keys = [Int: HSMKey]()
        for version in versions { keys[version] = try await keyring.key(tenant, .data, version: version).key }
        return Prepared(pool: pool, keyUses: keyring.keyUses, tenant: tenant, keys: keys)
    }

    /// One tenant's `data` keys, looked up by ``prepared(tenant:versions:)``.
    struct Prepared: PreparedPersonalDataSealing {
        let pool: SessionPool
        let keyUses: KeyUseCounter
        let tenant: TenantID
        let keys: [Int: HSMKey]

        var versions: Set<Int> { Set(keys.keys) }

        func seal(_ text: PersonalText, keyVersion: Int, context: [UInt8]) async throws -> [UInt8] {
            try await keyUses.counting(tenant, .data, version: keyVersion, .seal) {
                let plaintext = SecretBytes(Array(text.value.utf8))
                let box = try await hsm { try await pool.sealAESGCM(key: try key(keyVersion), plaintext: plaintext, additionalData: context) }
                return box.nonce + box.ciphertextAndTag
            }
        }

        func open(_ sealed: [UInt8], keyVersion: Int, context: [UInt8]) async throws -> PersonalText {
            try await keyUses.counting(tenant, .data, version: keyVersion, .open) {
                let box = try CustodyPersonalDataSealer.box(sealed, tenant: tenant, keyVersion: keyVersion)
                return try await CustodyPersonalDataSealer.open(box, key: try key(keyVersion), keyVersion: keyVersion, tenant: tenant, context: context, pool: pool)
            }
        }

        private func key(_ version: Int) throws -> HSMKey {
            guard let key = keys[version] else { throw CustodyError.unknownKeyVersion(tenant, .data, version) }
            return key
        }
    }

    /// The stored form split into nonce and ciphertext ‖ tag; too short to hold both is refused
    /// before any key is looked up.
    private static func box(_ sealed: [UInt8], tenant: TenantID, keyVersion: Int) throws -> AESGCMSealedBox {
        guard sealed.count >= AESGCMSealedBox.nonceLength + 16 else { throw CustodyError.sealedDataInvalid(tenant, .data, keyVersion) }
        return AESGCMSealedBox(nonce: Array(sealed.prefix(AESGCMSealedBox.nonceLength)), ciphertextAndTag: Array(sealed.dropFirst(AESGCMSealedBox.nonceLength)))
    }

    private static func open(_ box: AESGCMSealedBox, key: HSMKey, keyVersion: Int, tenant: TenantID, context: [UInt8], pool: SessionPool) async throws -> PersonalText {
        let plaintext: [UInt8]
        do {
            plaintext = try await pool.openAESGCM(key: key, box: box, additionalData: context)
        } catch HSMError.operationFailed(let error) where error.returnValue == .encryptedDataInvalid || error.returnValue.rawValue == 0x041 {
            // A wrong tag: the ciphertext, its nonce or its context (row, field) changed.
            throw CustodyError.sealedDataInvalid(tenant, .data, keyVersion)
        } catch let error as HSMError {
            throw CustodyError.hsm(error)
        }
        return PersonalText(String(decoding: plaintext, as: UTF8.self))
    }
}

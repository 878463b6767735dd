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
            try await openUncounted(sealed, keyVersion: keyVersion, tenant: tenant, context: context)
        }
    }

    private func openUncounted(_ sealed: [UInt8], keyVersion: Int, tenant: TenantID, context: [UInt8]) async throws -> PersonalText {
        guard sealed.count >= AESGCMSealedBox.nonceLength + 16 else { throw CustodyError.sealedDataInvalid(tenant, .data, keyVersion) }
        let (key, _) = try await keyring.key(tenant, .data, version: keyVersion)
        let box = AESGCMSealedBox(nonce: Array(sealed.prefix(AESGCMSealedBox.nonceLength)), ciphertextAndTag: Array(sealed.dropFirst(AESGCMSealedBox.nonceLength)))
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

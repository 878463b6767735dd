import CustosModel
import Foundation
import HSM
import PKCS11
import SecureMemory
import Storage

// Making versions: key material generated (or imported) in the HSM, wrapped under the root
// KEK, its KCV read, the row sealed.
extension TenantKeyring {
    /// New key material generated in the HSM, wrapped under the root KEK, its KCV read, the
    /// row sealed. The clear key never leaves the HSM and is destroyed once wrapped.
    /// - Parameter replacedUntil: for a pending version, when the version it replaces stops
    ///   being used (`nil`: at once): under the row MAC, what reconciliation completes it with.
    func makeVersion(_ tenant: TenantID, _ purpose: KeyPurpose, version: Int, state: KeyState, replacedUntil: Date? = nil) async throws -> KeyVersionRecord {
        guard let usage = purpose.usage else { throw CustodyError.invalidTransition(tenant, purpose, version, from: .pending, to: state) }
        let kekVersion = rootKeys.kekVersion
        let kek = rootKeys.kek(purpose, version: kekVersion)
        let (wrapped, checkValue) = try await pool.withSession(.generate) { session in
            let kekHandle = try session.handle(for: kek)
            let key = try session.pkcs11.generateKey(KeyTemplate.generationMechanism(usage), template: KeyTemplate.tenantKeyForWrapping(usage))
            defer { try? session.pkcs11.destroyObject(key) }
            let checkValue = try session.pkcs11.attribute(.checkValue, of: key)
            return (try session.pkcs11.wrapKey(.aesKeyWrapPad, wrappingKey: kekHandle, key: key), checkValue)
        }
        return try await seal(
            tenant, purpose, version: version, state: state, replacedUntil: replacedUntil, wrapped: wrapped, kekVersion: kekVersion, checkValue: checkValue
        )
    }

    /// A version from known secret bytes (a webhook secret shown to the tenant once): imported
    /// into the HSM, wrapped, destroyed.
    func makeVersion(
        _ tenant: TenantID, _ purpose: KeyPurpose, version: Int, state: KeyState, replacedUntil: Date? = nil, importing secret: SecretBytes
    ) async throws -> KeyVersionRecord {
        guard let usage = purpose.usage else { throw CustodyError.invalidTransition(tenant, purpose, version, from: .pending, to: state) }
        let kekVersion = rootKeys.kekVersion
        let kek = rootKeys.kek(purpose, version: kekVersion)
        let (wrapped, checkValue) = try await pool.withSession(.generate) { session in
            let kekHandle = try session.handle(for: kek)
            let key = try session.pkcs11.createObject(KeyTemplate.importedForWrapping(usage, value: secret))
            defer { try? session.pkcs11.destroyObject(key) }
            let checkValue = try session.pkcs11.attribute(.checkValue, of: key)
            return (try session.pkcs11.wrapKey(.aesKeyWrapPad, wrappingKey: kekHandle, key: key), checkValue)
        }
        return try await seal(
            tenant, purpose, version: version, state: state, replacedUntil: replacedUntil, wrapped: wrapped, kekVersion: kekVersion, checkValue: checkValue
        )
    }

    private func seal(
        _ tenant: TenantID, _ purpose: KeyPurpose, version: Int, state: KeyState, replacedUntil: Date?, wrapped: [UInt8], kekVersion: Int, checkValue: [UInt8]
    ) async throws -> KeyVersionRecord {
        let record = KeyVersionRecord(
            tenant: tenant, purpose: purpose, version: version, state: state, wrappedKey: wrapped,
            wrapMechanism: Self.wrapMechanism, rootKEKVersion: kekVersion, checkValue: checkValue, rowMAC: [],
            retiringUntil: state == .pending ? replacedUntil : nil, activatedAt: state == .active ? .wholeSecondsNow : nil,
            // A new `bio` version (a new tenant, a rotation) gets this keyring's format; its
            // existing templates keep theirs and move over during the rotation's overlap.
            tokenFormat: purpose == .bioSeed || purpose == .bioPRF ? biometricTokenFormat : nil
        )
        return try await authenticator.sealed(record, pool: pool)
    }
}

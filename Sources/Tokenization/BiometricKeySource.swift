public import Custody
public import CustosModel
import HSM

/// Where a ``BiometricTokenizer`` gets the two keys of a biometric version.
public protocol BiometricKeySource: Sendable {
    /// The `bio-seed` and `bio-prf` keys of `tenant`'s `version`, or of its active version when
    /// `version` is nil.
    func keys(for tenant: TenantID, version: Int?) async throws -> BiometricTokenizer.BiometricKeys
}

/// The service's key source: each tenant's own keys, unwrapped from the keyring.
public struct TenantBiometricKeys: BiometricKeySource {
    let keyring: TenantKeyring

    public init(keyring: TenantKeyring) { self.keyring = keyring }

    public func keys(for tenant: TenantID, version: Int?) async throws -> BiometricTokenizer.BiometricKeys {
        let (seed, seedVersion) = try await keyring.key(tenant, .bioSeed, version: version)
        // One biometric version covers both keys: the PRF of the same version.
        let (prf, _) = try await keyring.key(tenant, .bioPRF, version: seedVersion)
        let format = try await keyring.biometricTokenFormat(tenant, version: seedVersion)
        return BiometricTokenizer.BiometricKeys(version: seedVersion, seed: seed, prf: prf, format: format)
    }
}

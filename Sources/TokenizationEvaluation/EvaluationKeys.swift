import Crypto
public import CustosModel
import HSM
import SecureMemory
public import Tokenization

/// Fixed, imported biometric keys for `custos-bench eval` and the tests, so that accuracy
/// figures are deterministic (DESIGN §6). Derived from public labels: never use them for real
/// data — which is why they live in this target, which the `custos` executable does not link.
public struct EvaluationKeys: BiometricKeySource {
    /// Which fixed version a tokenizer asked for and this source does not hold.
    public struct VersionMissing: Error, CustomStringConvertible {
        public let version: Int
        public var description: String { "no evaluation keys of version \(version)" }
    }

    let versions: [Int: BiometricTokenizer.BiometricKeys]

    /// The fixed keys of `versions`, each making tokens of `format`; a tenant's "active"
    /// version is the newest of them.
    public init(versions: [Int] = [1], format: BiometricTokenFormat = .default) {
        self.versions = Dictionary(uniqueKeysWithValues: versions.map { ($0, Self.keys(version: $0, format: format)) })
    }

    public func keys(for tenant: TenantID, version: Int?) async throws -> BiometricTokenizer.BiometricKeys {
        let wanted = version ?? versions.keys.max() ?? 1
        guard let keys = versions[wanted] else { throw VersionMissing(version: wanted) }
        return keys
    }

    /// Keys of one evaluation "version": `seed` (HMAC) and `prf` (AES-256, encrypt only),
    /// imported as session objects of the pool's persistent session.
    public static func keys(version: Int, format: BiometricTokenFormat = .default) -> BiometricTokenizer.BiometricKeys {
        BiometricTokenizer.BiometricKeys(
            version: version,
            seed: imported("custos-eval/bio-seed/v\(version)", usage: .hmac),
            prf: imported("custos-eval/bio-prf/v\(version)", usage: .encryptOnly),
            format: format
        )
    }

    private static func imported(_ label: String, usage: KeyUsage) -> HSMKey {
        let value = Array(SHA256.hash(data: Array(label.utf8)))
        return HSMKey(id: "eval:\(label)") { session in
            try session.createObject(KeyTemplate.tenantKeyUnwrapped(usage) + [.value(SecretBytes(value))])
        }
    }
}

import Crypto
import HSM
import SecureMemory

/// Fixed, imported biometric keys for `custos eval` and the tests, so that accuracy figures are
/// deterministic (DESIGN §6). Derived from public labels: never use them for real data.
public enum EvaluationKeys {
    /// Keys of one evaluation "version": `seed` (HMAC) and `prf` (AES-256, encrypt only),
    /// imported as session objects of the pool's persistent session.
    public static func keys(version: Int) -> BiometricTokenizer.BiometricKeys {
        BiometricTokenizer.BiometricKeys(
            version: version,
            seed: imported("custos-eval/bio-seed/v\(version)", usage: .hmac),
            prf: imported("custos-eval/bio-prf/v\(version)", usage: .encryptOnly)
        )
    }

    private static func imported(_ label: String, usage: KeyUsage) -> HSMKey {
        let value = Array(SHA256.hash(data: Array(label.utf8)))
        return HSMKey(id: "eval:\(label)") { session in
            try session.createObject(KeyTemplate.tenantKeyUnwrapped(usage) + [.value(SecretBytes(value))])
        }
    }
}

import Crypto
import CryptoExtras
public import PKCS11
public import SecureMemory

/// Key check values computed in software exactly as SoftHSM 2.6.1 computes `CKA_CHECK_VALUE`
/// when a secret key is created, so that a value recorded in a share file before import can be
/// compared byte for byte with what the token reports after import:
///
/// - AES keys (`CKK_AES`): the first 3 bytes of AES-ECB(K, 16 zero bytes) — the KCV that
///   vendor tools and key-ceremony forms show.
/// - Generic secrets (`CKK_GENERIC_SECRET`, the HMAC keys): the first 3 bytes of SHA-1(K).
///
/// Both rules are checked against the token by the ceremony tests. Another HSM may compute
/// generic-secret check values differently (PKCS#11 leaves it to the vendor); the ceremony
/// then reports a mismatch before anything is trusted, never a silent pass.
public enum KeyCheckValue {
    /// Bytes kept of the computed value (PKCS#11 v2.40: "the first three bytes").
    public static let length = 3

    /// The check value of `key` as SoftHSM would compute it for `keyType`.
    /// - Throws: ``CeremonyError/unsupportedKeyType(_:)`` for key types without a rule here.
    public static func compute(_ key: SecretBytes, keyType: KeyType) throws(CeremonyError) -> [UInt8] {
        switch keyType {
        case .aes:
            guard [16, 24, 32].contains(key.count) else { throw .unsupportedKeyType("AES key of \(key.count) bytes") }
            let value: [UInt8]? = key.withUnsafeBytes { bytes in
                // SymmetricKey keeps its own zeroizing copy and wipes it on release.
                let symmetric = SymmetricKey(data: bytes)
                var block = [UInt8](repeating: 0, count: 16)
                guard (try? AES.permute(&block, key: symmetric)) != nil else { return nil }
                return Array(block.prefix(length))
            }
            guard let value else { throw .unsupportedKeyType("AES key the software AES refused") }
            return value
        case .genericSecret:
            return key.withUnsafeBytes { bytes in
                Array(Insecure.SHA1.hash(data: bytes).prefix(length))
            }
        default:
            throw .unsupportedKeyType("key type 0x\(String(keyType.rawValue, radix: 16))")
        }
    }
}

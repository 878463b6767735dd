import CustosModel
import Foundation
import SecureMemory

/// What an API key's stored hash is the HMAC of, under its tenant's `apikey-pepper` version.
///
/// Format 1 (keys issued before migration 32): the whole key alone. Its row's tenant, scopes and
/// expiry were bound to nothing, so whoever can write the table (the service role's password)
/// could delete a key's row and insert it again with wider scopes or no expiry, and it still
/// verified (helper-71, session 20). Format 2: a length-prefixed encoding of the tenant, the
/// scopes in their stored order and the expiry, then the whole key — a row changed in any of
/// them no longer verifies, and the writer cannot compute the format-1 hash of such a key to
/// fall back on.
enum APIKeyHashFormat {
    /// The format of keys issued now.
    static let current = 2

    /// The expiry as stored and hashed: whole milliseconds, so that PostgreSQL's microseconds
    /// and a `Date`'s floating point round-trip to the same value.
    static func normalized(_ expiresAt: Date?) -> Date? {
        expiresAt.map { Date(timeIntervalSince1970: ($0.timeIntervalSince1970 * 1000).rounded() / 1000) }
    }

    /// The HMAC's message for `whole` (the presented key) and its row's fields; `nil` for a
    /// format this build does not know (the key does not verify).
    static func message(_ whole: SecretBytes, tenant: TenantID, scopes: [String], expiresAt: Date?, format: Int) -> SecretBytes? {
        switch format {
        case 1:
            return whole
        case 2:
            var binding = CanonicalEncoding(domain: "custos/api-key-hash/v2")
            binding.append(tenant.rawValue)
            binding.append(scopes.count)
            for scope in scopes { binding.append(scope) }
            binding.append(optional: expiresAt.map { String(Int64(($0.timeIntervalSince1970 * 1000).rounded())) })
            let prefix = binding.bytes
            return SecretBytes(count: prefix.count + whole.count) { buffer in
                buffer.copyBytes(from: prefix)
                whole.withUnsafeBytes { key in
                    UnsafeMutableRawBufferPointer(rebasing: buffer[prefix.count...]).copyMemory(from: key)
                }
            }
        default:
            return nil
        }
    }
}

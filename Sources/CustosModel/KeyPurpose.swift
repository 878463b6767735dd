/// What a tenant key is for (DESIGN §5).
public enum KeyPurpose: String, Sendable, CaseIterable, Codable, Hashable {
    /// HMAC: derives the biometric projection seed.
    case bioSeed = "bio-seed"
    /// AES-256, ENCRYPT only (never DECRYPT): the biometric PRF.
    case bioPRF = "bio-prf"
    /// HMAC: deterministic subject references.
    case pii
    /// HMAC: API-key hashing.
    case apiKeyPepper = "apikey-pepper"
    /// HMAC: Standard Webhooks v1 secret (shown to the tenant once).
    case webhook
    /// Ed25519: Standard Webhooks v1a (a token object: SoftHSM cannot wrap Ed25519 private keys).
    case webhookEd25519 = "webhook-ed25519"
    /// AES-256-GCM: envelope encryption of names, emails, metadata.
    case data
}

/// The life of a key version (DESIGN §5). `retiring` may still sign or encrypt during an
/// overlap window; `retired` only verifies or decrypts; `destroyed` keeps the metadata, never
/// the material, and its version number is never reused.
public enum KeyState: String, Sendable, Codable, CaseIterable, Hashable {
    case pending, active, retiring, retired, destroyed
}

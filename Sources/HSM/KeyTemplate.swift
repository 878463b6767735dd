public import PKCS11

/// What a tenant key is for (DESIGN §5). Each purpose gets exactly the usages it needs.
public enum KeyPurpose: String, Sendable, CaseIterable, Codable {
    /// HMAC: derives the biometric projection seed.
    case bioSeed = "bio-seed"
    /// AES-256, ENCRYPT only (never DECRYPT): the biometric PRF.
    case bioPRF = "bio-prf"
    /// HMAC: deterministic subject references.
    case pii
    /// HMAC: API-key hashing.
    case apiKeyPepper = "apikey-pepper"
    /// HMAC: Standard Webhooks v1 secret.
    case webhook
    /// AES-256-GCM: envelope encryption of names, emails, metadata.
    case data

    var keyType: KeyType {
        switch self {
        case .bioPRF, .data: .aes
        case .bioSeed, .pii, .apiKeyPepper, .webhook: .genericSecret
        }
    }

    var generation: Mechanism {
        keyType == .aes ? .aesKeyGen : .genericSecretKeyGen
    }

    var usages: [Attribute] {
        switch self {
        case .bioPRF:
            [.encrypt(true), .decrypt(false), .sign(false), .verify(false), .wrap(false), .unwrap(false), .derive(false)]
        case .data:
            [.encrypt(true), .decrypt(true), .sign(false), .verify(false), .wrap(false), .unwrap(false), .derive(false)]
        case .bioSeed, .pii, .apiKeyPepper, .webhook:
            [.sign(true), .verify(true), .encrypt(false), .decrypt(false), .wrap(false), .unwrap(false), .derive(false)]
        }
    }
}

/// Named attribute sets for every key Custos creates. Every template locks permissions at
/// creation (`CKA_MODIFIABLE` and `CKA_COPYABLE` false): SoftHSM otherwise lets
/// `C_SetAttributeValue` or `C_CopyObject` widen an encrypt-only key to decrypt.
public enum KeyTemplate {
    /// The root key-encryption key: a private token object that only wraps and unwraps.
    public static func rootKEK(label: String, id: [UInt8]) -> [Attribute] {
        [
            .class(.secretKey), .keyType(.aes), .valueLength(32), .token(true), .private(true),
            .sensitive(true), .extractable(false), .modifiable(false), .copyable(false),
            .wrap(true), .unwrap(true), .encrypt(false), .decrypt(false), .sign(false), .verify(false),
            .derive(false), .label(label), .id(id),
        ]
    }

    /// The audit MAC key (and the root MAC that binds `key_versions` rows): HMAC only.
    public static func rootMAC(label: String, id: [UInt8]) -> [Attribute] {
        [
            .class(.secretKey), .keyType(.genericSecret), .valueLength(32), .token(true), .private(true),
            .sensitive(true), .extractable(false), .modifiable(false), .copyable(false),
            .sign(true), .verify(true), .encrypt(false), .decrypt(false), .wrap(false), .unwrap(false),
            .derive(false), .label(label), .id(id),
        ]
    }

    /// A new tenant key: a session object, sensitive, extractable only so that it can be
    /// wrapped under the root KEK once, then destroyed.
    public static func tenantKeyForWrapping(_ purpose: KeyPurpose) -> [Attribute] {
        [
            .class(.secretKey), .keyType(purpose.keyType), .valueLength(32), .token(false), .private(true),
            .sensitive(true), .extractable(true), .modifiable(false), .copyable(false),
        ] + purpose.usages
    }

    /// A tenant key as unwrapped for use: a session object that is sensitive and can never
    /// leave the HSM again.
    public static func tenantKeyUnwrapped(_ purpose: KeyPurpose) -> [Attribute] {
        [
            .class(.secretKey), .keyType(purpose.keyType), .token(false), .private(true),
            .sensitive(true), .extractable(false), .modifiable(false), .copyable(false),
        ] + purpose.usages
    }

    /// The mechanism that generates a key of `purpose`.
    public static func generationMechanism(_ purpose: KeyPurpose) -> Mechanism { purpose.generation }

    /// An Ed25519 key pair for Standard Webhooks v1a: the private half is a token object
    /// (SoftHSM 2.6.1 cannot wrap Ed25519 private keys), sensitive and non-extractable.
    public static func ed25519(label: String, id: [UInt8], token: Bool = true) -> (public: [Attribute], private: [Attribute]) {
        (
            [
                .class(.publicKey), .keyType(.ecEdwards), .ecParams(ed25519Parameters), .token(token),
                .private(false), .verify(true), .modifiable(false), .label(label), .id(id),
            ],
            [
                .class(.privateKey), .keyType(.ecEdwards), .token(token), .private(true), .sensitive(true),
                .extractable(false), .modifiable(false), .copyable(false), .sign(true), .derive(false),
                .label(label), .id(id),
            ]
        )
    }

    /// DER of the printable string "edwards25519", which SoftHSM accepts as CKA_EC_PARAMS.
    public static let ed25519Parameters: [UInt8] = [0x13, 0x0C] + Array("edwards25519".utf8)
}

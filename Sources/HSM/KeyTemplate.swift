public import PKCS11

/// What a secret key may do, fixed at creation. The custody layer maps each key purpose
/// (DESIGN §5) to one of these; the HSM layer knows nothing of purposes.
public struct KeyUsage: Sendable, Hashable {
    public let keyType: KeyType
    public let encrypt: Bool
    public let decrypt: Bool
    public let sign: Bool

    /// A 32-byte HMAC-SHA256 key (generic secret): SIGN and VERIFY only.
    public static let hmac = KeyUsage(keyType: .genericSecret, encrypt: false, decrypt: false, sign: true)
    /// AES-256 that can only encrypt: a PRF that can never be inverted through the HSM.
    public static let encryptOnly = KeyUsage(keyType: .aes, encrypt: true, decrypt: false, sign: false)
    /// AES-256 for authenticated encryption (GCM): ENCRYPT and DECRYPT.
    public static let encryptDecrypt = KeyUsage(keyType: .aes, encrypt: true, decrypt: true, sign: false)

    var generation: Mechanism { keyType == .aes ? .aesKeyGen : .genericSecretKeyGen }

    var attributes: [Attribute] {
        [
            .encrypt(encrypt), .decrypt(decrypt), .sign(sign), .verify(sign),
            .wrap(false), .unwrap(false), .derive(false),
        ]
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

    /// The root KEK imported from known bytes (the key ceremony: generated from the HSM RNG, split
    /// into custodian shares, then imported; or rebuilt from shares on restore). The same
    /// permissions as ``rootKEK(label:id:)``; no `CKA_VALUE_LEN` (`C_CreateObject` takes the
    /// length from the value).
    public static func importedRootKEK(label: String, id: [UInt8], value: SecretBytes) -> [Attribute] {
        rootKEK(label: label, id: id).filter { $0.type != .valueLength } + [.value(value)]
    }

    /// The root MAC key imported from known bytes (see ``importedRootKEK(label:id:value:)``).
    public static func importedRootMAC(label: String, id: [UInt8], value: SecretBytes) -> [Attribute] {
        rootMAC(label: label, id: id).filter { $0.type != .valueLength } + [.value(value)]
    }

    /// A tenant key unwrapped under an old root KEK only to be wrapped again under a new one
    /// (root-KEK rotation): a session object, sensitive, extractable for that one wrap, then
    /// destroyed.
    public static func tenantKeyForRewrapping(_ usage: KeyUsage) -> [Attribute] {
        [
            .class(.secretKey), .keyType(usage.keyType), .token(false), .private(true),
            .sensitive(true), .extractable(true), .modifiable(false), .copyable(false),
        ] + usage.attributes
    }

    /// A new tenant key: a session object, sensitive, extractable only so that it can be
    /// wrapped under the root KEK once, then destroyed.
    public static func tenantKeyForWrapping(_ usage: KeyUsage) -> [Attribute] {
        [
            .class(.secretKey), .keyType(usage.keyType), .valueLength(32), .token(false), .private(true),
            .sensitive(true), .extractable(true), .modifiable(false), .copyable(false),
        ] + usage.attributes
    }

    /// A tenant key as unwrapped for use: a session object that is sensitive and can never
    /// leave the HSM again.
    public static func tenantKeyUnwrapped(_ usage: KeyUsage) -> [Attribute] {
        [
            .class(.secretKey), .keyType(usage.keyType), .token(false), .private(true),
            .sensitive(true), .extractable(false), .modifiable(false), .copyable(false),
        ] + usage.attributes
    }

    /// A secret imported from known bytes (a webhook v1 secret the tenant is shown once): a
    /// session object, sensitive, extractable only so that it can be wrapped, then destroyed.
    public static func importedForWrapping(_ usage: KeyUsage, value: SecretBytes) -> [Attribute] {
        [
            .class(.secretKey), .keyType(usage.keyType), .token(false), .private(true),
            .sensitive(true), .extractable(true), .modifiable(false), .copyable(false), .value(value),
        ] + usage.attributes
    }

    /// The mechanism that generates a key of `usage`.
    public static func generationMechanism(_ usage: KeyUsage) -> Mechanism { usage.generation }

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

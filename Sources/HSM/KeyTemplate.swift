public import PKCS11
public import SecureMemory

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
    /// A root key-encryption key for one usage (one per key purpose), imported from known bytes
    /// (the key ceremony: drawn from the HSM RNG and split into custodian shares first, or rebuilt
    /// from shares on restore): a private token object that only wraps and unwraps.
    ///
    /// Its `CKA_UNWRAP_TEMPLATE` is ``tenantKeyUnwrapped(_:)``: whoever holds the user PIN can
    /// unwrap a stored blob only into a sensitive, non-extractable, non-modifiable,
    /// non-copyable session key with exactly the usage flags of its purpose — never a readable
    /// key, never an encrypt-only key that decrypts. Its `CKA_WRAP_TEMPLATE` lets it wrap only
    /// sensitive keys of that very shape. `CKA_DESTROYABLE` false: a user-PIN holder cannot
    /// destroy a root key and put one of their own making under its label (a 3-byte check value
    /// is quickly ground to match); only re-initialising the token (SO PIN) removes root keys.
    /// No `CKA_VALUE_LEN` (`C_CreateObject` takes the length from the value).
    public static func rootKEK(label: String, id: [UInt8], value: SecretBytes, usage: KeyUsage) -> [Attribute] {
        [
            .class(.secretKey), .keyType(.aes), .token(true), .private(true),
            .sensitive(true), .extractable(false), .modifiable(false), .copyable(false),
            .wrap(true), .unwrap(true), .encrypt(false), .decrypt(false), .sign(false), .verify(false),
            .derive(false), .destroyable(false), .label(label), .id(id),
            .unwrapTemplate(tenantKeyUnwrapped(usage)), .wrapTemplate(wrappable(usage)), .value(value),
        ]
    }

    /// The audit MAC key (and the root MAC that binds `key_versions` rows), imported from known
    /// bytes (see ``rootKEK(label:id:value:usage:)``): HMAC only.
    public static func rootMAC(label: String, id: [UInt8], value: SecretBytes) -> [Attribute] {
        [
            .class(.secretKey), .keyType(.genericSecret), .token(true), .private(true),
            .sensitive(true), .extractable(false), .modifiable(false), .copyable(false),
            .sign(true), .verify(true), .encrypt(false), .decrypt(false), .wrap(false), .unwrap(false),
            .derive(false), .destroyable(false), .label(label), .id(id), .value(value),
        ]
    }

    /// An old root KEK rebuilt from custodian shares for one root-KEK rotation (DESIGN §5): a
    /// session object of the ceremony's own process, which no other process can reach, that
    /// only unwraps, and only into ``tenantKeyForRewrapping(_:)`` keys. It dies with the
    /// ceremony's session. The token's own KEKs never unwrap extractable keys.
    public static func rewrapKEK(value: SecretBytes, usage: KeyUsage) -> [Attribute] {
        [
            .class(.secretKey), .keyType(.aes), .token(false), .private(true),
            .sensitive(true), .extractable(false), .modifiable(false), .copyable(false),
            .wrap(false), .unwrap(true), .encrypt(false), .decrypt(false), .sign(false), .verify(false),
            .derive(false), .unwrapTemplate(tenantKeyForRewrapping(usage)), .value(value),
        ]
    }

    /// A tenant key unwrapped under an old root KEK only to be wrapped again under a new one
    /// (root-KEK rotation): a session object, sensitive, extractable for that one wrap, then
    /// destroyed. Only a ``rewrapKEK(value:usage:)`` (rebuilt from shares, M-of-N) or a legacy
    /// KEK being migrated away accepts this template.
    public static func tenantKeyForRewrapping(_ usage: KeyUsage) -> [Attribute] {
        [
            .class(.secretKey), .keyType(usage.keyType), .token(false), .private(true),
            .sensitive(true), .extractable(true), .modifiable(false), .copyable(false),
        ] + usage.attributes
    }

    /// What a root KEK of `usage` may wrap: a sensitive, extractable key of exactly that usage.
    static func wrappable(_ usage: KeyUsage) -> [Attribute] {
        [.class(.secretKey), .keyType(usage.keyType), .sensitive(true), .extractable(true)] + usage.attributes
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

    /// An Ed25519 key pair imported from a 32-byte seed drawn from the HSM RNG, the same on
    /// every token (a v1a webhook key that survives the loss of a token): the private half is a
    /// private, sensitive, non-extractable, non-modifiable, non-copyable token object — the seed
    /// never leaves any token again; the public half carries the point (`04 20` + 32 bytes).
    public static func ed25519Imported(label: String, id: [UInt8], seed: SecretBytes, publicKey: [UInt8]) -> (public: [Attribute], private: [Attribute]) {
        (
            [
                .class(.publicKey), .keyType(.ecEdwards), .ecParams(ed25519Parameters), .ecPoint([0x04, 0x20] + publicKey),
                .token(true), .private(false), .verify(true), .modifiable(false), .label(label), .id(id),
            ],
            [
                .class(.privateKey), .keyType(.ecEdwards), .ecParams(ed25519Parameters), .token(true), .private(true),
                .sensitive(true), .extractable(false), .modifiable(false), .copyable(false), .sign(true), .derive(false),
                .label(label), .id(id), .value(seed),
            ]
        )
    }

    /// DER of the printable string "edwards25519", which SoftHSM accepts as CKA_EC_PARAMS.
    public static let ed25519Parameters: [UInt8] = [0x13, 0x0C] + Array("edwards25519".utf8)
}

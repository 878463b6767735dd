public import CustosModel
public import HSM

/// The few token-resident keys (DESIGN §5): one root KEK per wrapped key purpose, which only
/// wraps and unwraps that purpose's tenant keys and pins every unwrap to them (its
/// `CKA_UNWRAP_TEMPLATE`), and the root MAC key, which authenticates `key_versions` rows and
/// the audit chain (each use with its own domain-separation prefix).
///
/// All six KEKs of a version come from one ceremony and one share set, and rotate together:
/// `key_versions.root_kek_version` names the version, the row's purpose names the KEK.
public struct RootKeys: Sendable {
    /// The newest root KEK version: new tenant keys are wrapped under it.
    public let kekVersion: Int
    public let macVersion: Int

    public init(kekVersion: Int = 1, macVersion: Int = 1) {
        self.kekVersion = kekVersion
        self.macVersion = macVersion
    }

    /// The purposes whose tenant keys are stored wrapped, each with its own root KEK
    /// (`webhook-ed25519` keys are token objects: SoftHSM 2.6.1 cannot wrap them).
    public static let wrappedPurposes: [KeyPurpose] = KeyPurpose.allCases.filter { $0.usage != nil }

    public static func kekLabel(_ purpose: KeyPurpose, version: Int) -> String { "custos/root/kek/\(purpose.rawValue)/v\(version)" }
    public static func macLabel(version: Int) -> String { "custos/root/mac/v\(version)" }
    /// The single, permissive root KEK of installations made before per-purpose KEKs: it has no
    /// unwrap template, so the user PIN could unwrap any blob readable. Never created any more;
    /// `custos ceremony rotate-root` moves every blob off it and destroys it.
    public static func legacyKEKLabel(version: Int) -> String { "custos/root/kek/v\(version)" }

    /// The root KEK of `purpose`, version `version` (the newest by default).
    public func kek(_ purpose: KeyPurpose, version: Int? = nil) -> HSMKey {
        .tokenObject(label: Self.kekLabel(purpose, version: version ?? kekVersion))
    }

    public var mac: HSMKey { .tokenObject(label: Self.macLabel(version: macVersion)) }

    /// The root keys to use with `inventory`: its newest KEK and MAC versions.
    public init(inventory: RootKeyInventory) {
        self.init(kekVersion: max(1, inventory.newestKEKVersion), macVersion: max(1, inventory.newestMACVersion))
    }
}

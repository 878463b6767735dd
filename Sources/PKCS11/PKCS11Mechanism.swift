/// A `CKM_*` mechanism type, named where Custos uses it.
public struct MechanismType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }

    public static let sha256 = Self(rawValue: 0x250)
    public static let sha256HMAC = Self(rawValue: 0x251)
    public static let genericSecretKeyGen = Self(rawValue: 0x350)
    public static let ecEdwardsKeyPairGen = Self(rawValue: 0x1055)
    public static let eddsa = Self(rawValue: 0x1057)
    public static let aesKeyGen = Self(rawValue: 0x1080)
    public static let aesECB = Self(rawValue: 0x1081)
    public static let aesCBC = Self(rawValue: 0x1082)
    public static let aesGCM = Self(rawValue: 0x1087)
    public static let aesCMAC = Self(rawValue: 0x108A)
    public static let aesKeyWrap = Self(rawValue: 0x2109)
    public static let aesKeyWrapPad = Self(rawValue: 0x210A)

    static let names: [UInt: String] = [
        0x250: "CKM_SHA256", 0x251: "CKM_SHA256_HMAC", 0x350: "CKM_GENERIC_SECRET_KEY_GEN",
        0x1055: "CKM_EC_EDWARDS_KEY_PAIR_GEN", 0x1057: "CKM_EDDSA", 0x1080: "CKM_AES_KEY_GEN",
        0x1081: "CKM_AES_ECB", 0x1082: "CKM_AES_CBC", 0x1087: "CKM_AES_GCM", 0x108A: "CKM_AES_CMAC",
        0x2109: "CKM_AES_KEY_WRAP", 0x210A: "CKM_AES_KEY_WRAP_PAD",
    ]

    public var description: String { Self.names[rawValue] ?? "0x" + String(rawValue, radix: 16) }
}

/// A mechanism with its parameters. Parameters are owned values; the binding lends them
/// to the C call only for its duration, so no pointer outlives its buffer.
public enum Mechanism: Sendable, Hashable {
    case sha256
    case sha256HMAC
    case aesECB
    /// AES-GCM with a 12-byte IV (the only size Custos uses), additional data, a 128-bit tag.
    case aesGCM(iv: [UInt8], additionalData: [UInt8])
    case aesCMAC
    /// RFC 5649 AES key wrap with padding (0x210A).
    case aesKeyWrapPad
    /// RFC 3394 AES key wrap without padding (0x2109); Custos never wraps with it, attackers try it.
    case aesKeyWrap
    case eddsa
    case genericSecretKeyGen
    case aesKeyGen
    case ecEdwardsKeyPairGen

    public var type: MechanismType {
        switch self {
        case .sha256: .sha256
        case .sha256HMAC: .sha256HMAC
        case .aesECB: .aesECB
        case .aesGCM: .aesGCM
        case .aesCMAC: .aesCMAC
        case .aesKeyWrapPad: .aesKeyWrapPad
        case .aesKeyWrap: .aesKeyWrap
        case .eddsa: .eddsa
        case .genericSecretKeyGen: .genericSecretKeyGen
        case .aesKeyGen: .aesKeyGen
        case .ecEdwardsKeyPairGen: .ecEdwardsKeyPairGen
        }
    }

    /// The output size for `inputLength` bytes of input where it is fixed, so that the hot
    /// path needs no size query (one C call instead of two).
    func outputLength(forInput inputLength: Int, encrypting: Bool) -> Int? {
        switch self {
        case .sha256, .sha256HMAC: 32
        case .aesECB: inputLength
        case .aesGCM: encrypting ? inputLength + 16 : max(inputLength - 16, 0)
        case .aesCMAC: 16
        case .eddsa: 64
        case .aesKeyWrapPad: encrypting ? ((inputLength + 7) / 8) * 8 + 8 : inputLength
        case .aesKeyWrap: encrypting ? inputLength + 8 : max(inputLength - 8, 0)
        case .genericSecretKeyGen, .aesKeyGen, .ecEdwardsKeyPairGen: nil
        }
    }
}

/// How a token is chosen. Never by slot number: initialising a token changes its slot id.
public enum TokenSelector: Hashable, Sendable, CustomStringConvertible {
    case label(String)
    case serial(String)

    public var description: String {
        switch self {
        case .label(let label): "label \"\(label)\""
        case .serial(let serial): "serial \"\(serial)\""
        }
    }
}

/// A slot identifier as the module reports it at this moment.
public struct SlotID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    public var description: String { String(rawValue) }
}

/// A handle to an object on the token or in a session. Valid only in the module state
/// (login, sessions) in which it was obtained.
public struct ObjectHandle: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    public var description: String { "object#\(rawValue)" }
}

/// `CKU_SO`, `CKU_USER`.
public enum UserType: UInt, Sendable {
    case securityOfficer = 0
    case user = 1
}

/// `CKO_*` values used by Custos.
public struct ObjectClass: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    public static let data = Self(rawValue: 0)
    public static let publicKey = Self(rawValue: 2)
    public static let privateKey = Self(rawValue: 3)
    public static let secretKey = Self(rawValue: 4)
}

/// `CKK_*` values used by Custos.
public struct KeyType: RawRepresentable, Hashable, Sendable {
    public let rawValue: UInt
    public init(rawValue: UInt) { self.rawValue = rawValue }
    public static let ec = Self(rawValue: 0x03)
    public static let genericSecret = Self(rawValue: 0x10)
    public static let aes = Self(rawValue: 0x1F)
    public static let ecEdwards = Self(rawValue: 0x40)
}

/// A version as PKCS#11 reports them (`major.minor`).
public struct PKCS11Version: Hashable, Sendable, CustomStringConvertible {
    public let major: UInt8
    public let minor: UInt8
    public var description: String { "\(major).\(minor)" }
}

/// `C_GetInfo`: which library answers.
public struct ModuleInfo: Hashable, Sendable {
    public let cryptokiVersion: PKCS11Version
    public let manufacturer: String
    public let libraryDescription: String
    public let libraryVersion: PKCS11Version
}

/// `C_GetTokenInfo`, with the flags Custos acts on spelled out.
public struct TokenInfo: Hashable, Sendable {
    public let slot: SlotID
    public let label: String
    public let manufacturer: String
    public let model: String
    public let serialNumber: String
    public let flags: UInt
    /// `nil` where the module reports `CK_EFFECTIVELY_INFINITE` or `CK_UNAVAILABLE_INFORMATION`.
    public let maxSessionCount: Int?
    public let sessionCount: Int?
    public let maxPINLength: Int
    public let minPINLength: Int
    public let hardwareVersion: PKCS11Version
    public let firmwareVersion: PKCS11Version

    public var isInitialized: Bool { flags & 0x0000_0400 != 0 }
    public var isLoginRequired: Bool { flags & 0x0000_0004 != 0 }
    public var isUserPINInitialized: Bool { flags & 0x0000_0008 != 0 }
    public var hasRNG: Bool { flags & 0x0000_0001 != 0 }
    public var isWriteProtected: Bool { flags & 0x0000_0002 != 0 }
    public var userPINCountLow: Bool { flags & 0x0001_0000 != 0 }
    public var userPINFinalTry: Bool { flags & 0x0002_0000 != 0 }
    public var userPINLocked: Bool { flags & 0x0004_0000 != 0 }
    public var soPINLocked: Bool { flags & 0x0040_0000 != 0 }
}

/// `C_GetMechanismInfo`.
public struct MechanismInfo: Hashable, Sendable {
    public let minKeySize: UInt
    public let maxKeySize: UInt
    public let flags: UInt
}

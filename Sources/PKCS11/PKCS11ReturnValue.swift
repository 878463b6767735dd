/// A `CK_RV`. Known codes have names; vendor or unknown codes are kept as they are,
/// so nothing a module answers is lost in translation.
public struct PKCS11ReturnValue: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt

    public init(rawValue: UInt) { self.rawValue = rawValue }

    /// The standard name (`CKR_…`), or the hexadecimal value for codes the standard does not name.
    public var name: String {
        if let known = Self.names[rawValue] { return known }
        if rawValue & Self.vendorDefinedBit != 0 {
            return "CKR_VENDOR_DEFINED+0x" + String(rawValue & ~Self.vendorDefinedBit, radix: 16)
        }
        return "0x" + String(rawValue, radix: 16)
    }

    public var description: String { name }

    // `CKR_VENDOR_DEFINED` is a macro with a cast and does not import into Swift.
    static let vendorDefinedBit: UInt = 1 << 31
}

extension PKCS11ReturnValue {
    public static let ok = Self(rawValue: 0x000)
    public static let cancel = Self(rawValue: 0x001)
    public static let hostMemory = Self(rawValue: 0x002)
    public static let slotIDInvalid = Self(rawValue: 0x003)
    public static let generalError = Self(rawValue: 0x005)
    public static let functionFailed = Self(rawValue: 0x006)
    public static let argumentsBad = Self(rawValue: 0x007)
    public static let actionProhibited = Self(rawValue: 0x01B)
    public static let attributeReadOnly = Self(rawValue: 0x010)
    public static let attributeSensitive = Self(rawValue: 0x011)
    public static let attributeTypeInvalid = Self(rawValue: 0x012)
    public static let attributeValueInvalid = Self(rawValue: 0x013)
    public static let dataInvalid = Self(rawValue: 0x020)
    public static let dataLenRange = Self(rawValue: 0x021)
    public static let deviceError = Self(rawValue: 0x030)
    public static let deviceMemory = Self(rawValue: 0x031)
    public static let deviceRemoved = Self(rawValue: 0x032)
    public static let encryptedDataInvalid = Self(rawValue: 0x040)
    public static let encryptedDataLenRange = Self(rawValue: 0x041)
    public static let functionCanceled = Self(rawValue: 0x050)
    public static let functionNotSupported = Self(rawValue: 0x054)
    public static let keyHandleInvalid = Self(rawValue: 0x060)
    public static let keySizeRange = Self(rawValue: 0x062)
    public static let keyTypeInconsistent = Self(rawValue: 0x063)
    public static let keyFunctionNotPermitted = Self(rawValue: 0x068)
    public static let keyNotWrappable = Self(rawValue: 0x069)
    public static let keyUnextractable = Self(rawValue: 0x06A)
    public static let mechanismInvalid = Self(rawValue: 0x070)
    public static let mechanismParamInvalid = Self(rawValue: 0x071)
    public static let objectHandleInvalid = Self(rawValue: 0x082)
    public static let operationActive = Self(rawValue: 0x090)
    public static let operationNotInitialized = Self(rawValue: 0x091)
    public static let pinIncorrect = Self(rawValue: 0x0A0)
    public static let pinInvalid = Self(rawValue: 0x0A1)
    public static let pinLenRange = Self(rawValue: 0x0A2)
    public static let pinExpired = Self(rawValue: 0x0A3)
    public static let pinLocked = Self(rawValue: 0x0A4)
    public static let sessionClosed = Self(rawValue: 0x0B0)
    public static let sessionCount = Self(rawValue: 0x0B1)
    public static let sessionHandleInvalid = Self(rawValue: 0x0B3)
    public static let sessionParallelNotSupported = Self(rawValue: 0x0B4)
    public static let sessionReadOnly = Self(rawValue: 0x0B5)
    public static let sessionExists = Self(rawValue: 0x0B6)
    public static let sessionReadOnlyExists = Self(rawValue: 0x0B7)
    public static let sessionReadWriteSOExists = Self(rawValue: 0x0B8)
    public static let signatureInvalid = Self(rawValue: 0x0C0)
    public static let signatureLenRange = Self(rawValue: 0x0C1)
    public static let templateIncomplete = Self(rawValue: 0x0D0)
    public static let templateInconsistent = Self(rawValue: 0x0D1)
    public static let tokenNotPresent = Self(rawValue: 0x0E0)
    public static let tokenNotRecognized = Self(rawValue: 0x0E1)
    public static let tokenWriteProtected = Self(rawValue: 0x0E2)
    public static let unwrappingKeyHandleInvalid = Self(rawValue: 0x0F0)
    public static let unwrappingKeySizeRange = Self(rawValue: 0x0F1)
    public static let unwrappingKeyTypeInconsistent = Self(rawValue: 0x0F2)
    public static let userAlreadyLoggedIn = Self(rawValue: 0x100)
    public static let userNotLoggedIn = Self(rawValue: 0x101)
    public static let userPINNotInitialized = Self(rawValue: 0x102)
    public static let userTypeInvalid = Self(rawValue: 0x103)
    public static let userAnotherAlreadyLoggedIn = Self(rawValue: 0x104)
    public static let userTooManyTypes = Self(rawValue: 0x105)
    public static let wrappedKeyInvalid = Self(rawValue: 0x110)
    public static let wrappedKeyLenRange = Self(rawValue: 0x112)
    public static let wrappingKeyHandleInvalid = Self(rawValue: 0x113)
    public static let wrappingKeySizeRange = Self(rawValue: 0x114)
    public static let wrappingKeyTypeInconsistent = Self(rawValue: 0x115)
    public static let randomSeedNotSupported = Self(rawValue: 0x120)
    public static let randomNoRNG = Self(rawValue: 0x121)
    public static let domainParamsInvalid = Self(rawValue: 0x130)
    public static let curveNotSupported = Self(rawValue: 0x140)
    public static let bufferTooSmall = Self(rawValue: 0x150)
    public static let savedStateInvalid = Self(rawValue: 0x160)
    public static let informationSensitive = Self(rawValue: 0x170)
    public static let stateUnsaveable = Self(rawValue: 0x180)
    public static let cryptokiNotInitialized = Self(rawValue: 0x190)
    public static let cryptokiAlreadyInitialized = Self(rawValue: 0x191)
    public static let mutexBad = Self(rawValue: 0x1A0)
    public static let mutexNotLocked = Self(rawValue: 0x1A1)
    public static let functionRejected = Self(rawValue: 0x200)
}

extension PKCS11ReturnValue {
    static let names: [UInt: String] = [
        0x000: "CKR_OK", 0x001: "CKR_CANCEL", 0x002: "CKR_HOST_MEMORY", 0x003: "CKR_SLOT_ID_INVALID",
        0x005: "CKR_GENERAL_ERROR", 0x006: "CKR_FUNCTION_FAILED", 0x007: "CKR_ARGUMENTS_BAD",
        0x008: "CKR_NO_EVENT", 0x009: "CKR_NEED_TO_CREATE_THREADS", 0x00A: "CKR_CANT_LOCK",
        0x010: "CKR_ATTRIBUTE_READ_ONLY", 0x011: "CKR_ATTRIBUTE_SENSITIVE",
        0x012: "CKR_ATTRIBUTE_TYPE_INVALID", 0x013: "CKR_ATTRIBUTE_VALUE_INVALID",
        0x01B: "CKR_ACTION_PROHIBITED", 0x020: "CKR_DATA_INVALID", 0x021: "CKR_DATA_LEN_RANGE",
        0x030: "CKR_DEVICE_ERROR", 0x031: "CKR_DEVICE_MEMORY", 0x032: "CKR_DEVICE_REMOVED",
        0x040: "CKR_ENCRYPTED_DATA_INVALID", 0x041: "CKR_ENCRYPTED_DATA_LEN_RANGE",
        0x050: "CKR_FUNCTION_CANCELED", 0x051: "CKR_FUNCTION_NOT_PARALLEL",
        0x054: "CKR_FUNCTION_NOT_SUPPORTED", 0x060: "CKR_KEY_HANDLE_INVALID",
        0x062: "CKR_KEY_SIZE_RANGE", 0x063: "CKR_KEY_TYPE_INCONSISTENT",
        0x064: "CKR_KEY_NOT_NEEDED", 0x065: "CKR_KEY_CHANGED", 0x066: "CKR_KEY_NEEDED",
        0x067: "CKR_KEY_INDIGESTIBLE", 0x068: "CKR_KEY_FUNCTION_NOT_PERMITTED",
        0x069: "CKR_KEY_NOT_WRAPPABLE", 0x06A: "CKR_KEY_UNEXTRACTABLE",
        0x070: "CKR_MECHANISM_INVALID", 0x071: "CKR_MECHANISM_PARAM_INVALID",
        0x082: "CKR_OBJECT_HANDLE_INVALID", 0x090: "CKR_OPERATION_ACTIVE",
        0x091: "CKR_OPERATION_NOT_INITIALIZED", 0x0A0: "CKR_PIN_INCORRECT", 0x0A1: "CKR_PIN_INVALID",
        0x0A2: "CKR_PIN_LEN_RANGE", 0x0A3: "CKR_PIN_EXPIRED", 0x0A4: "CKR_PIN_LOCKED",
        0x0B0: "CKR_SESSION_CLOSED", 0x0B1: "CKR_SESSION_COUNT", 0x0B3: "CKR_SESSION_HANDLE_INVALID",
        0x0B4: "CKR_SESSION_PARALLEL_NOT_SUPPORTED", 0x0B5: "CKR_SESSION_READ_ONLY",
        0x0B6: "CKR_SESSION_EXISTS", 0x0B7: "CKR_SESSION_READ_ONLY_EXISTS",
        0x0B8: "CKR_SESSION_READ_WRITE_SO_EXISTS", 0x0C0: "CKR_SIGNATURE_INVALID",
        0x0C1: "CKR_SIGNATURE_LEN_RANGE", 0x0D0: "CKR_TEMPLATE_INCOMPLETE",
        0x0D1: "CKR_TEMPLATE_INCONSISTENT", 0x0E0: "CKR_TOKEN_NOT_PRESENT",
        0x0E1: "CKR_TOKEN_NOT_RECOGNIZED", 0x0E2: "CKR_TOKEN_WRITE_PROTECTED",
        0x0F0: "CKR_UNWRAPPING_KEY_HANDLE_INVALID", 0x0F1: "CKR_UNWRAPPING_KEY_SIZE_RANGE",
        0x0F2: "CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT", 0x100: "CKR_USER_ALREADY_LOGGED_IN",
        0x101: "CKR_USER_NOT_LOGGED_IN", 0x102: "CKR_USER_PIN_NOT_INITIALIZED",
        0x103: "CKR_USER_TYPE_INVALID", 0x104: "CKR_USER_ANOTHER_ALREADY_LOGGED_IN",
        0x105: "CKR_USER_TOO_MANY_TYPES", 0x110: "CKR_WRAPPED_KEY_INVALID",
        0x112: "CKR_WRAPPED_KEY_LEN_RANGE", 0x113: "CKR_WRAPPING_KEY_HANDLE_INVALID",
        0x114: "CKR_WRAPPING_KEY_SIZE_RANGE", 0x115: "CKR_WRAPPING_KEY_TYPE_INCONSISTENT",
        0x120: "CKR_RANDOM_SEED_NOT_SUPPORTED", 0x121: "CKR_RANDOM_NO_RNG",
        0x130: "CKR_DOMAIN_PARAMS_INVALID", 0x140: "CKR_CURVE_NOT_SUPPORTED",
        0x150: "CKR_BUFFER_TOO_SMALL", 0x160: "CKR_SAVED_STATE_INVALID",
        0x170: "CKR_INFORMATION_SENSITIVE", 0x180: "CKR_STATE_UNSAVEABLE",
        0x190: "CKR_CRYPTOKI_NOT_INITIALIZED", 0x191: "CKR_CRYPTOKI_ALREADY_INITIALIZED",
        0x1A0: "CKR_MUTEX_BAD", 0x1A1: "CKR_MUTEX_NOT_LOCKED", 0x1B0: "CKR_NEW_PIN_MODE",
        0x1B1: "CKR_NEXT_OTP", 0x1B5: "CKR_EXCEEDED_MAX_ITERATIONS", 0x1B6: "CKR_FIPS_SELF_TEST_FAILED",
        0x1B7: "CKR_LIBRARY_LOAD_FAILED", 0x1B8: "CKR_PIN_TOO_WEAK", 0x1B9: "CKR_PUBLIC_KEY_INVALID",
        0x200: "CKR_FUNCTION_REJECTED",
    ]
}

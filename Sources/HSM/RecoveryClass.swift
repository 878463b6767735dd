public import PKCS11

/// What the pool does about a failed PKCS#11 call, decided by its return value alone
/// (DESIGN §4).
public enum RecoveryClass: Hashable, Sendable {
    /// The session is gone: drop it, open another, retry once.
    case sessionFatal
    /// The login (and with it every session object) is gone: bump the generation, log in,
    /// re-resolve keys, retry once.
    case loginLost
    /// The device or library is gone: drain, finalize, re-initialise with backoff; the circuit
    /// breaker answers "unavailable" meanwhile.
    case device
    /// `CKR_OPERATION_ACTIVE`: a failed call left an operation active in a session that nothing
    /// replaced, so every later call there fails the same way (DESIGN §4). Only the persistent
    /// session can be left so (a worker replaces its own after any failure): replace it, as a
    /// lost login is recovered (drained, a fresh session, a new generation), and retry once.
    case operationLeftActive
    /// A PIN problem: never retried.
    case pin
    /// `CKR_GENERAL_ERROR` and friends: retried once only if the pool's generation changed
    /// while the call ran (a logout under load briefly answers this on SoftHSM).
    case transient
    /// The caller's mistake (mechanism, key size, template, data): surfaced as it is.
    case caller

    public init(_ returnValue: PKCS11ReturnValue) {
        switch returnValue {
        case .sessionHandleInvalid, .sessionClosed:
            self = .sessionFatal
        case .userNotLoggedIn, .objectHandleInvalid, .keyHandleInvalid:
            self = .loginLost
        case .deviceRemoved, .deviceError, .tokenNotPresent, .cryptokiNotInitialized, .deviceMemory:
            self = .device
        case .pinIncorrect, .pinInvalid, .pinLenRange, .pinExpired, .pinLocked, .userPINNotInitialized:
            self = .pin
        case .operationActive:
            self = .operationLeftActive
        case .generalError, .functionFailed:
            self = .transient
        default:
            self = .caller
        }
    }
}

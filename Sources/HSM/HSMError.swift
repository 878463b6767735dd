public import PKCS11

/// Why an HSM operation failed, in terms a caller can act on.
///
/// Descriptions name functions, return values and key identifiers, never data, PINs or key
/// material, so they are safe to log and to return to a remote caller.
public enum HSMError: Error, Sendable, CustomStringConvertible {
    /// No session became free within the pool's wait timeout (`RESOURCE_EXHAUSTED` over RPC).
    case exhausted(waitedNanoseconds: UInt64, maxSessions: Int)
    /// The HSM cannot be used right now (device gone, recovery failing, circuit open). Retryable.
    case unavailable(reason: String, retryAfterNanoseconds: UInt64?)
    /// The user PIN was refused; the pool will not try it again.
    case pinRejected(PKCS11ReturnValue)
    /// The token reports the user PIN locked, or one wrong attempt away from it; the pool does
    /// not risk a login. An officer must act.
    case pinLocked(finalTry: Bool)
    /// Another login of this process already holds the token, so the configured PIN cannot be
    /// verified (`CKR_USER_ALREADY_LOGGED_IN` hides a wrong PIN).
    case loginUnverifiable
    /// The PIN could not be read from its source.
    case pinUnreadable(PINSourceError)
    /// No object matches the key reference.
    case keyNotFound(String)
    /// Several objects carry a label that must name one key: the token holds a key it should
    /// not (planted, or left twice by an interrupted import), so which one answers is unknown.
    case duplicateKey(String)
    /// A call failed because of what was asked (mechanism, template, data): not retried.
    case operationFailed(PKCS11Error)
    /// `CKR_GENERAL_ERROR` or `CKR_FUNCTION_FAILED` with no recovery behind it: the token says
    /// neither that it is gone nor that the request was wrong. Retryable, and no reason to take
    /// the token out of service: one request's input may provoke it on every token.
    case transientFailure(PKCS11Error)
    /// The pool was used before ``SessionPool/start()`` or after ``SessionPool/shutdown()``.
    case notRunning
    /// Loading the module or selecting the token failed.
    case configuration(String)

    /// Whether the same request may succeed if tried again later.
    public var isRetryable: Bool {
        switch self {
        case .exhausted, .unavailable, .transientFailure: true
        default: false
        }
    }

    /// The kind of failure in a few words, with no detail (`custos hsm status`, the Admin RPC's
    /// HSM status, metrics labels): safe to show anywhere.
    public var failureClass: String {
        switch self {
        case .exhausted: "sessions exhausted"
        case .unavailable: "unavailable"
        case .pinRejected: "PIN rejected"
        case .pinLocked: "PIN locked"
        case .loginUnverifiable: "login unverifiable"
        case .pinUnreadable: "PIN unreadable"
        case .keyNotFound: "key not found"
        case .duplicateKey: "duplicate key"
        case .operationFailed: "operation failed"
        case .transientFailure: "transient failure"
        case .notRunning: "not running"
        case .configuration: "configuration"
        }
    }

    public var description: String {
        switch self {
        case .exhausted(let waited, let maxSessions):
            "all \(maxSessions) HSM sessions busy; gave up after \(waited / 1_000_000) ms"
        case .unavailable(let reason, let retryAfter):
            "HSM unavailable: \(reason)" + (retryAfter.map { "; retry in \($0 / 1_000_000) ms" } ?? "")
        case .pinRejected(let rv): "user PIN rejected (\(rv.name)); not retried"
        case .pinLocked(let finalTry):
            finalTry ? "user PIN has one try left; automatic login refused" : "user PIN is locked"
        case .loginUnverifiable: "token already logged in by another session of this process; PIN not verified"
        case .pinUnreadable(let error): "cannot read the user PIN: \(error)"
        case .keyNotFound(let key): "no key \(key) on the token"
        case .duplicateKey(let key): "several objects are labelled \(key) on the token"
        case .operationFailed(let error): error.description
        case .transientFailure(let error): "\(error.description); retry"
        case .notRunning: "HSM session pool is not running"
        case .configuration(let reason): reason
        }
    }
}

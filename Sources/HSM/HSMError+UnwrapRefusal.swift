import PKCS11

extension HSMError {
    /// Whether `error` is the token refusing an unwrap for its input — a blob that is not a
    /// wrapping under that key, or a template the key does not allow — rather than a fault of
    /// the session, login or device: a caller-class return value, or `CKR_GENERAL_ERROR`, which
    /// SoftHSM answers for a tampered blob or the wrong KEK (DESIGN §4). Callers above the HSM
    /// classify unwrap failures with this instead of reading PKCS#11 return values themselves.
    public static func isUnwrapRefusal(_ error: any Error) -> Bool {
        guard let error = error as? PKCS11Error else { return false }
        return RecoveryClass(error.returnValue) == .caller || error.returnValue == .generalError
    }
}

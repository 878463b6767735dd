/// A PKCS#11 call that did not answer `CKR_OK`: which function, and what it answered.
///
/// Its description names both (`C_Sign failed: CKR_OPERATION_ACTIVE`) and nothing else:
/// no argument of the call ever appears in it, so it is safe to log.
public struct PKCS11Error: Error, Hashable, Sendable, CustomStringConvertible {
    public let function: PKCS11Function
    public let returnValue: PKCS11ReturnValue

    public init(function: PKCS11Function, returnValue: PKCS11ReturnValue) {
        self.function = function
        self.returnValue = returnValue
    }

    public var description: String { "\(function.rawValue) failed: \(returnValue.name)" }
}

/// Problems before any PKCS#11 call can be made, or that PKCS#11 itself does not name.
public enum PKCS11ModuleError: Error, Hashable, Sendable, CustomStringConvertible {
    /// `dlopen` refused the path (`reason` is `dlerror()`'s text, which names the file, not a secret).
    case cannotLoad(path: String, reason: String)
    /// The library has no `C_GetFunctionList`: not a PKCS#11 module.
    case notAPKCS11Module(path: String)
    /// The module path must be absolute so that a changed working directory or `LD_LIBRARY_PATH`
    /// cannot substitute another library.
    case relativePath(String)
    /// No token with this label or serial is present.
    case tokenNotFound(TokenSelector)
    /// Several tokens match: selection must be unambiguous.
    case ambiguousToken(TokenSelector, count: Int)
    /// The module does not provide an optional function Custos needs.
    case functionMissing(PKCS11Function)

    public var description: String {
        switch self {
        case .cannotLoad(let path, let reason): "cannot load PKCS#11 module \(path): \(reason)"
        case .notAPKCS11Module(let path): "\(path) has no C_GetFunctionList: not a PKCS#11 module"
        case .relativePath(let path): "PKCS#11 module path must be absolute, got \(path)"
        case .tokenNotFound(let selector): "no token with \(selector)"
        case .ambiguousToken(let selector, let count): "\(count) tokens match \(selector); select by serial"
        case .functionMissing(let function): "the module does not provide \(function.rawValue)"
        }
    }
}

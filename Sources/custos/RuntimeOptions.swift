import Composition
import CustosModel
import PKCS11

extension CustosRuntime.Options {
    /// A local command's runtime: logs to standard error (``makeLogger()``), the service
    /// database role, root keys checked unless the command is the root-KEK ceremony.
    static func cli(verifyRootKeys: Bool = true, databaseRole: DatabaseRole = .service, module: PKCS11Module? = nil) -> Self {
        Self(logger: makeLogger(), verifyRootKeys: verifyRootKeys, databaseRole: databaseRole, module: module)
    }
}

/// Turns a tenant argument into a ``TenantID`` or a clear local error.
func tenantID(_ text: String) throws -> TenantID {
    guard let id = TenantID(text) else { throw LocalError.failed("not a tenant id (a UUID): \(text)") }
    return id
}

import CustosModel
import Storage

/// An audit entry prepared before its action's transaction and appended inside it, as that
/// transaction's last statement (the append lock is held until commit): the action and its
/// entry commit together or not at all.
struct AuditEntry: Sendable {
    let tenant: TenantID?
    let actor: String
    let action: AuditAction
    let target: String
    var details: [String: String] = [:]

    func append(to audit: AuditLog, on connection: DatabaseTransaction) async throws {
        _ = try await audit.append(tenant: tenant, actor: actor, action: action, target: target, details: details, on: connection)
    }
}

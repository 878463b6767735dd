public import Custody
public import CustosModel
public import Storage
public import Verification

/// The verification core's audit port, written to custody's hash-chained audit log.
public struct AuditLogRecorder: AuditRecording {
    let log: AuditLog

    public init(_ log: AuditLog) { self.log = log }

    public func record(tenant: TenantID?, actor: String, action: AuditAction, target: String, details: [String: String]) async throws {
        _ = try await log.append(tenant: tenant, actor: actor, action: action, target: target, details: details)
    }

    public func record(
        tenant: TenantID?, actor: String, action: AuditAction, target: String, details: [String: String], on connection: DatabaseTransaction
    ) async throws {
        _ = try await log.append(tenant: tenant, actor: actor, action: action, target: target, details: details, on: connection)
    }

    public func newestAuthenticEntry(action: AuditAction, tenant: TenantID, on connection: DatabaseTransaction) async throws -> NewestAuditEntry {
        try await log.newestAuthenticEntry(action: action, tenant: tenant, on: connection)
    }
}

public import CustosModel
public import Foundation
public import Storage

/// Deletes fingerprints with no activity (enrolment or 1:1 match) for longer than each
/// tenant's retention period (default 90 days), and verification-attempt counters whose window
/// has ended. Session metadata stays for the audit trail.
/// The clock is injected, so a test can run the job "100 days later".
public struct RetentionJob: Sendable {
    let database: Database
    let core: VerificationService
    let audit: any AuditRecording
    let now: @Sendable () -> Date

    public init(database: Database, core: VerificationService, audit: any AuditRecording, now: @escaping @Sendable () -> Date = { Date() }) {
        self.database = database
        self.core = core
        self.audit = audit
        self.now = now
    }

    /// Runs for one tenant, or every tenant when `tenant` is nil.
    /// - Returns: templates deleted per tenant (tenants with none deleted are left out).
    public func run(tenant: TenantID? = nil, actor: String = "retention") async throws -> [TenantID: Int] {
        let tenants = if let tenant { [tenant] } else { try await TenantStore(database).list().map(\.id) }
        var deleted = [TenantID: Int]()
        for tenant in tenants {
            let policy = try await core.policies.policy(tenant)
            let cutoff = now().addingTimeInterval(-Double(policy.retentionDays) * 86_400)
            let notice = core.galleryChange(tenant, .reset)
            let windowCutoff = now().addingTimeInterval(-Double(core.attemptLimit.window.components.seconds))
            let audit = audit
            let count = try await database.withTenant(tenant, context: "retention") { connection in
                try await VerificationAttemptStore.deleteEnded(windowStartedBy: windowCutoff, on: connection)
                let count = try await TemplateStore.deleteInactive(since: cutoff, on: connection)
                if count > 0 {
                    try await TemplateStore.notify(notice, on: connection)
                    try await audit.record(tenant: tenant, actor: actor, action: .retentionDelete, target: "templates", details: [
                        "templates": "\(count)", "retention_days": "\(policy.retentionDays)",
                    ], on: connection)
                }
                return count
            }
            guard count > 0 else { continue }
            core.galleryReset(tenant)
            deleted[tenant] = count
        }
        return deleted
    }
}

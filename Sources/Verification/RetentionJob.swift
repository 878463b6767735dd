public import CustosModel
public import Foundation
public import Storage

/// Deletes, per tenant, what has outlived its retention period (default 90 days): fingerprints
/// with no activity (enrolment or 1:1 match) for that long, verification sessions completed (or,
/// never completed, expired) that long ago — with their sealed name and email and their subject
/// reference, so that old `pii` and `data` key versions do reach zero references — and
/// verification-attempt counters whose window has ended. The audit log keeps the counts.
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

    /// What one run deleted in one tenant.
    public struct Deletions: Sendable, Equatable {
        public var templates: Int
        public var sessions: Int

        public init(templates: Int = 0, sessions: Int = 0) {
            self.templates = templates
            self.sessions = sessions
        }
    }

    /// Runs for one tenant, or every tenant when `tenant` is nil.
    /// - Returns: what was deleted per tenant (tenants with nothing deleted are left out).
    public func run(tenant: TenantID? = nil, actor: String = "retention") async throws -> [TenantID: Deletions] {
        let tenants = if let tenant { [tenant] } else { try await TenantStore(database).list().map(\.id) }
        var deleted = [TenantID: Deletions]()
        for tenant in tenants {
            let policy = try await core.policies.policy(tenant)
            let cutoff = now().addingTimeInterval(-Double(policy.retentionDays) * 86_400)
            let notice = core.galleryChange(tenant, .reset)
            let windowCutoff = now().addingTimeInterval(-Double(core.attemptLimit.window.components.seconds))
            let audit = audit
            let deletions = try await database.withTenant(tenant, context: "retention") { connection in
                try await VerificationAttemptStore.deleteEnded(windowStartedBy: windowCutoff, on: connection)
                let deletions = Deletions(
                    templates: try await TemplateStore.deleteInactive(since: cutoff, on: connection),
                    sessions: try await SessionStore.deleteEnded(before: cutoff, on: connection)
                )
                if deletions.templates > 0 { try await TemplateStore.notify(notice, on: connection) }
                if deletions != Deletions() {
                    try await audit.record(tenant: tenant, actor: actor, action: .retentionDelete, target: "templates,sessions", details: [
                        "templates": "\(deletions.templates)", "sessions": "\(deletions.sessions)", "retention_days": "\(policy.retentionDays)",
                    ], on: connection)
                }
                return deletions
            }
            guard deletions != Deletions() else { continue }
            if deletions.templates > 0 { core.galleryReset(tenant) }
            deleted[tenant] = deletions
        }
        return deleted
    }
}

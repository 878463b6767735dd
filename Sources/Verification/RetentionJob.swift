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

    /// Rows one retention transaction deletes at most per table: a tenant's whole backlog in one
    /// transaction (a million idle templates) outlived the statement and operation timeouts,
    /// rolled back, and failed the same way at every run.
    public static let defaultBatchSize = 5_000

    /// Runs for one tenant, or every tenant when `tenant` is nil, in batches of at most
    /// `batchSize` rows per table, each batch one transaction with its own audit entry (a run
    /// cut off keeps what its batches deleted; the next run goes on). One tenant's failure does
    /// not hold up the others: every tenant is tried, then the first failure is thrown.
    ///
    /// Tenants go in the order their last turn began, never-begun ones first: runs cut off by
    /// their caller's deadline still reach every tenant in turn, and a tenant too large for one
    /// run goes after the others next time.
    /// - Returns: what was deleted per tenant (tenants with nothing deleted are left out).
    public func run(tenant: TenantID? = nil, actor: String = "retention", batchSize: Int = Self.defaultBatchSize) async throws -> [TenantID: Deletions] {
        let tenants = if let tenant { [tenant] } else {
            try await database.withTransaction(context: "retention order") { try await RetentionTurnStore.order(on: $0) }
        }
        var deleted = [TenantID: Deletions]()
        var firstFailure: (any Error)?
        for tenant in tenants {
            do {
                try Task.checkCancellation()
                // Best effort: a turn not recorded only leaves this tenant early in the next
                // run's order; it must not keep its retention from running (helper-62).
                try? await database.withTransaction(context: "retention turn") { try await RetentionTurnStore.begin(tenant, on: $0) }
                let deletions = try await run(tenant, actor: actor, batchSize: max(1, batchSize))
                if deletions != Deletions() { deleted[tenant] = deletions }
            } catch {
                // Cut off (the caller's deadline): a cancellation met inside a transaction comes
                // back as the database's error, and must not go on to the next tenant, whose
                // turn would be recorded as begun without its deletions.
                if error is CancellationError || Task.isCancelled { throw CancellationError() }
                if firstFailure == nil { firstFailure = error }
            }
        }
        if let firstFailure { throw firstFailure }
        return deleted
    }

    private func run(_ tenant: TenantID, actor: String, batchSize: Int) async throws -> Deletions {
        let policy = try await core.policies.policy(tenant)
        let cutoff = now().addingTimeInterval(-Double(policy.retentionDays) * 86_400)
        let notice = core.galleryChange(tenant, .reset)
        let windowCutoff = now().addingTimeInterval(-Double(core.attemptLimit.window.components.seconds))
        let audit = audit
        var total = Deletions()
        // A table is done at its first empty batch: each further statement on it would look for
        // rows that are not there (helper-57: most of a large backlog's time went to such
        // statements on the tables that had finished). Not at a short one (helper-60): a row
        // erased, used or reset since the batch's snapshot is skipped by its ctid, so a short
        // batch does not mean the end. Rows that come due meanwhile wait for the next run.
        var (attemptsDone, templatesDone, sessionsDone) = (false, false, false)
        while !(attemptsDone && templatesDone && sessionsDone) {
            try Task.checkCancellation()
            let done = (attempts: attemptsDone, templates: templatesDone, sessions: sessionsDone)
            let (batch, attempts) = try await database.withTenant(tenant, context: "retention") { connection in
                let attempts = done.attempts ? 0 : try await VerificationAttemptStore.deleteEnded(windowStartedBy: windowCutoff, limit: batchSize, on: connection)
                let batch = Deletions(
                    templates: done.templates ? 0 : try await TemplateStore.deleteInactive(since: cutoff, limit: batchSize, on: connection),
                    sessions: done.sessions ? 0 : try await SessionStore.deleteEnded(before: cutoff, limit: batchSize, on: connection)
                )
                if batch != Deletions() {
                    try await audit.record(tenant: tenant, actor: actor, action: .retentionDelete, target: "templates,sessions", details: [
                        "templates": "\(batch.templates)", "sessions": "\(batch.sessions)", "retention_days": "\(policy.retentionDays)",
                    ], on: connection)
                }
                return (batch, attempts)
            }
            total.templates += batch.templates
            total.sessions += batch.sessions
            attemptsDone = attemptsDone || attempts == 0
            templatesDone = templatesDone || batch.templates == 0
            sessionsDone = sessionsDone || batch.sessions == 0
        }
        // One reset for the whole run: every reset makes each instance re-read the tenant's
        // gallery at its next identification. Until it arrives, a deleted template left in a
        // gallery is harmless (identification re-reads candidates' tokens from the database).
        if total.templates > 0 {
            try await database.withTenant(tenant, context: "retention gallery reset") { connection in
                try await TemplateStore.notify(notice, on: connection)
            }
            core.galleryReset(tenant)
        }
        return total
    }
}

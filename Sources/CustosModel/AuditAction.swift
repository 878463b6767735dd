/// What an audit log entry records was done. The raw value is the string stored in
/// `audit_log.action` and covered by the entry's hash and MAC: never change one, or chains
/// already written stop verifying (`AuditActionTests` pins each). Custody, the verification
/// core and the CLI record actions, so the type lives here.
public enum AuditAction: String, Sendable, Hashable, CaseIterable, Codable {
    case tenantCreate = "tenant.create"
    case tenantEnable = "tenant.enable"
    case tenantDisable = "tenant.disable"
    case tenantPolicy = "tenant.policy"

    case keyRotate = "key.rotate"
    case keyRetire = "key.retire"
    case keyDestroy = "key.destroy"
    case keyDestroyRequest = "key.destroy.request"
    case keyDestroyApprove = "key.destroy.approve"
    /// An interrupted rotation completed or rolled back at start-up.
    case keyReconcile = "key.reconcile"
    /// A tenant key re-wrapped under a new root KEK (ceremony).
    case keyRewrap = "key.rewrap"

    case apiKeyIssue = "apikey.issue"
    case apiKeyRevoke = "apikey.revoke"

    case webhookSecret = "webhook.secret"
    case webhookEd25519 = "webhook.ed25519"
    /// `custos webhook sign` used a tenant's webhook key on the host.
    case webhookSignLocal = "webhook.sign.local"

    case certificateRevoke = "certificate.revoke"
    case auditAnchorReset = "audit.anchor.reset"

    case subjectReenrol = "subject.reenrol"
    case subjectExport = "subject.export"
    case subjectErase = "subject.erase"
    case retentionDelete = "retention.delete"
    /// A tenant over its tokenization budget (at most once a minute per tenant).
    case tokenizationRateLimited = "tokenization.rate_limited"
    /// A biometric rotation's overlap ended: templates still under the old version dropped
    /// (counted), `bio-seed` and `bio-prf` of that version retired.
    case biometricOverlapClose = "key.bio_overlap.close"
    /// A run of `custos key reseal`: sealed records moved to the active `data` version (counts).
    case keyReseal = "key.reseal"
    /// An officer asked to end a biometric overlap early; the approval by a second officer is
    /// recorded by the `key.bio_overlap.close` entry it commits with (reason `approved_early`).
    case biometricOverlapEndRequest = "key.bio_overlap.end.request"

    /// Officers disabled a key version (every use refused) or enabled it again.
    case keyDisable = "key.disable"
    case keyEnable = "key.enable"
    /// An approved destruction was scheduled, or a scheduled one cancelled before it was due.
    case keyDestroySchedule = "key.destroy.schedule"
    case keyDestroyCancel = "key.destroy.cancel"
    /// Tenant offboarding: requested, approved (tenant and keys disabled), carried out
    /// (every key version destroyed, data rows deleted; details hold the counts).
    case tenantOffboardRequest = "tenant.offboard.request"
    case tenantOffboardApprove = "tenant.offboard.approve"
    case tenantOffboard = "tenant.offboard"
    /// One batch of an offboarded tenant's data rows deleted (details hold the counts and the
    /// request); the `tenant.offboard` entry that completes it counts only what was left.
    case tenantOffboardDelete = "tenant.offboard.delete"
    /// Data-plane key uses counted over a window (one entry per tenant per flush: counts per
    /// purpose, version, operation and outcome).
    case keyUse = "key.use"
    /// The HSM's list of key states was missing (a new or restored token, an upgrade) and was
    /// rebuilt from the database's MAC-valid rows and approvals (details hold the counts).
    case keyStateAnchorRebuild = "key.state_anchor.rebuild"
    /// The ceremony restored an escrowed Ed25519 webhook key onto a token (`ceremony
    /// restore-webhook-keys`): target the version, details the token and public-key prefix.
    case webhookEd25519Restore = "webhook.ed25519.restore"
    /// An officer sealed the templates written before template MACs existed (`custos db
    /// seal-records`): from then on a template without a MAC is refused. Details: the count.
    case recordsSeal = "records.seal"
}

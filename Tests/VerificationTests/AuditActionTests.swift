import CustosModel
import Testing

/// The stored spelling of every audit action. Each string is part of the entries' hashes and
/// MACs: a changed one would make every chain already written fail `custos audit verify`.
@Suite("AuditAction: the strings stored in audit_log.action")
struct AuditActionTests {
    static let stored: [AuditAction: String] = [
        .tenantCreate: "tenant.create",
        .tenantEnable: "tenant.enable",
        .tenantDisable: "tenant.disable",
        .tenantPolicy: "tenant.policy",
        .keyRotate: "key.rotate",
        .keyRetire: "key.retire",
        .keyDestroy: "key.destroy",
        .keyDestroyRequest: "key.destroy.request",
        .keyDestroyApprove: "key.destroy.approve",
        .keyReconcile: "key.reconcile",
        .keyRewrap: "key.rewrap",
        .apiKeyIssue: "apikey.issue",
        .apiKeyRevoke: "apikey.revoke",
        .webhookSecret: "webhook.secret",
        .webhookEd25519: "webhook.ed25519",
        .webhookSignLocal: "webhook.sign.local",
        .certificateRevoke: "certificate.revoke",
        .auditAnchorReset: "audit.anchor.reset",
        .subjectReenrol: "subject.reenrol",
        .subjectExport: "subject.export",
        .subjectErase: "subject.erase",
        .retentionDelete: "retention.delete",
        .tokenizationRateLimited: "tokenization.rate_limited",
        .biometricOverlapClose: "key.bio_overlap.close",
        .keyReseal: "key.reseal",
        .biometricOverlapEndRequest: "key.bio_overlap.end.request",
        .keyDisable: "key.disable",
        .keyEnable: "key.enable",
        .keyDestroySchedule: "key.destroy.schedule",
        .keyDestroyCancel: "key.destroy.cancel",
        .tenantOffboardRequest: "tenant.offboard.request",
        .tenantOffboardApprove: "tenant.offboard.approve",
        .tenantOffboard: "tenant.offboard",
        .tenantOffboardDelete: "tenant.offboard.delete",
        .keyUse: "key.use",
        .keyStateAnchorRebuild: "key.state_anchor.rebuild",
        .webhookEd25519Restore: "webhook.ed25519.restore",
        .recordsSeal: "records.seal",
    ]

    @Test("Each case stores the string entries were written with before the type existed", arguments: AuditAction.allCases)
    func pinned(_ action: AuditAction) {
        #expect(action.rawValue == Self.stored[action], "a new case needs its stored string pinned here")
        #expect(AuditAction(rawValue: action.rawValue) == action)
    }

    @Test("No two actions share a stored string")
    func distinct() {
        #expect(Set(AuditAction.allCases.map(\.rawValue)).count == AuditAction.allCases.count)
    }
}

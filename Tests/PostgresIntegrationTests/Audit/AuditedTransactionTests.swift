import Composition
import Custody
import CustosModel
import Foundation
import HSM
import PostgresNIO
@testable import Storage
import Testing
import Verification

/// Audited actions write their entry in the same transaction as the action: when the entry
/// cannot be written, the action does not happen. The append is made to fail for real, by a
/// CHECK constraint the schema owner adds for one action.
@Suite("Audited transactions")
struct AuditedTransactionTests {
    /// `NOT VALID`: earlier entries of the same action stay; only new ones are refused.
    private func refuseAuditEntries(_ harness: CustodyHarness, action: String) async throws {
        try await harness.ownerSQL(tenant: nil, "ALTER TABLE audit_log ADD CONSTRAINT refuse_for_test CHECK (action <> \(unescaped: "'\(action)'")) NOT VALID")
    }

    private func actions(_ harness: CustodyHarness) async throws -> [String] {
        try await harness.owner.withTransaction(context: "read audit") { connection in
            try await connection.query("SELECT action FROM audit_log ORDER BY seq", logger: Database.quiet).collect().map { try $0.decode(String.self) }
        }
    }

    private func apiKeyRows(_ harness: CustodyHarness, _ tenant: TenantID) async throws -> [(String, Bool)] {
        try await harness.owner.withTenant(tenant, context: "read API keys") { connection in
            try await connection.query("SELECT key_id, revoked_at IS NOT NULL FROM api_keys", logger: Database.quiet).collect()
                .map { try $0.decode((String, Bool).self) }
        }
    }

    @Test("No API key is issued without its audit entry, and none is revoked without one")
    func apiKeys() async throws {
        let harness = try await CustodyHarness.make("auditedkeys")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        let kept = try await harness.apiKeys.issue(tenant: tenant.id, scopes: [], actor: "officer")

        try await refuseAuditEntries(harness, action: "apikey.issue")
        await #expect(throws: (any Error).self) { _ = try await harness.apiKeys.issue(tenant: tenant.id, scopes: [], actor: "officer") }
        #expect(try await apiKeyRows(harness, tenant.id).map(\.0) == [kept.keyID], "the refused issue left no key behind")

        try await harness.ownerSQL(tenant: nil, "ALTER TABLE audit_log DROP CONSTRAINT refuse_for_test")
        try await refuseAuditEntries(harness, action: "apikey.revoke")
        await #expect(throws: (any Error).self) { _ = try await harness.apiKeys.revoke(tenant: tenant.id, keyID: kept.keyID, actor: "officer") }
        #expect(try await apiKeyRows(harness, tenant.id).map(\.1) == [false], "the refused revocation left the key as it was")
        #expect(try await harness.apiKeys.verify(kept.key).keyID == kept.keyID)

        #expect(try await actions(harness) == ["tenant.create", "apikey.issue"])
        #expect(try await harness.audit.verify().isIntact, "the rolled-back appends leave a log that verifies")
        await harness.shutdown()
    }

    @Test("A tenant policy change and a destruction request happen only with their audit entries")
    func policyAndDestruction() async throws {
        let harness = try await CustodyHarness.make("auditedpolicy")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        let policies = TenantPolicies(database: harness.service, audit: AuditLogRecorder(harness.audit), cacheLifetime: .zero)
        try await refuseAuditEntries(harness, action: "tenant.policy")
        let stricter = try TenantPolicy(green: 0.9, amber: 0.5, retentionDays: 30, tokenizationsPerMinute: 100)
        await #expect(throws: (any Error).self) { try await policies.set(stricter, for: tenant.id, actor: "officer") }
        #expect(try await policies.policy(tenant.id) == .default, "the refused change left the policy as it was")

        try await harness.ownerSQL(tenant: nil, "ALTER TABLE audit_log DROP CONSTRAINT refuse_for_test")
        try await harness.keyring.rotate(tenant.id, .pii, actor: "officer")
        try await refuseAuditEntries(harness, action: "key.destroy.request")
        let approvals = KeyDestructionApprovals(database: harness.service, keyring: harness.keyring, audit: harness.audit)
        await #expect(throws: (any Error).self) { _ = try await approvals.request(tenant.id, .pii, version: 1, officer: "officer-a") }
        let requests = try await harness.owner.withTransaction(context: "count requests") { connection in
            try await connection.query("SELECT count(*) FROM destruction_requests", logger: Database.quiet).collect().first!.decode(Int.self)
        }
        #expect(requests == 0, "no destruction request without its audit entry")
        await harness.shutdown()
    }
}

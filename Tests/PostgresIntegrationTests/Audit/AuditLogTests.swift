import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage
import Testing

@Suite("Audit log")
struct AuditLogTests {
    private func filledLog(_ name: String) async throws -> CustodyHarness {
        let harness = try await CustodyHarness.make(name)
        for index in 1...8 {
            _ = try await harness.audit.append(tenant: nil, actor: "officer", action: .certificateRevoke, target: "item-\(index)", details: ["n": "\(index)"])
        }
        let verification = try await harness.audit.verify()
        #expect(verification.isIntact && verification.entriesChecked == 8 && verification.anchoredSeq == 8, "\(verification)")
        return harness
    }

    @Test("Key operations are audited, and an untouched chain verifies")
    func operationsAudited() async throws {
        let harness = try await CustodyHarness.make("auditops")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        let issued = try await harness.apiKeys.issue(tenant: tenant.id, scopes: [], actor: "officer")
        _ = try await harness.apiKeys.revoke(tenant: tenant.id, keyID: issued.keyID, actor: "officer")
        try await harness.keyring.rotate(tenant.id, .pii, actor: "officer")
        _ = try await harness.webhooks.createSecret(tenant: tenant.id, actor: "officer")
        let actions = try await harness.owner.withTransaction(context: "read audit") { connection in
            try await connection.query("SELECT action FROM audit_log ORDER BY seq", logger: Database.quiet).collect().map { try $0.decode(String.self) }
        }
        #expect(actions == ["tenant.create", "apikey.issue", "apikey.revoke", "key.rotate", "webhook.secret"])
        #expect(try await harness.audit.verify().isIntact)
        let key = String(decoding: issued.key.withUnsafeBytes { Array($0) }, as: UTF8.self)
        let all = try await harness.owner.withTransaction(context: "read audit") { connection in
            try await connection.query("SELECT details || target FROM audit_log", logger: Database.quiet).collect().map { try $0.decode(String.self) }.joined()
        }
        #expect(!all.contains(key) && !all.contains(String(key.suffix(49))), "no API key in the audit log")
        await harness.shutdown()
    }

    @Test("Changing any row through SQL is found, at that row")
    func changedRow() async throws {
        let harness = try await filledLog("auditchange")
        try await harness.ownerSQL(tenant: nil, "UPDATE audit_log SET details = '{\"n\":\"99\"}' WHERE seq = 5")
        let verification = try await harness.audit.verify()
        #expect(verification.firstBroken == 5, "\(verification)")
        await harness.shutdown()
    }

    @Test("Deleting a row in the middle is found")
    func deletedMiddle() async throws {
        let harness = try await filledLog("auditdelete")
        try await harness.ownerSQL(tenant: nil, "DELETE FROM audit_log WHERE seq = 3")
        #expect(try await harness.audit.verify().firstBroken == 3)
        await harness.shutdown()
    }

    @Test("Deleting the newest rows leaves a valid-looking chain, but the anchor outside PostgreSQL catches it")
    func deletedNewest() async throws {
        let harness = try await filledLog("audittail")
        try await harness.ownerSQL(tenant: nil, "DELETE FROM audit_log WHERE seq >= 7")
        let verification = try await harness.audit.verify()
        #expect(verification.firstBroken == 7, "\(verification)")
        #expect(verification.anchoredSeq == 8)
        await harness.shutdown()
    }

    @Test("Reordering rows (swapping their sequence numbers) is found")
    func reordered() async throws {
        let harness = try await filledLog("auditorder")
        try await harness.ownerSQL(tenant: nil, "UPDATE audit_log SET seq = CASE seq WHEN 4 THEN 1005 ELSE 1004 END WHERE seq IN (4, 5)")
        try await harness.ownerSQL(tenant: nil, "UPDATE audit_log SET seq = seq - 1000 WHERE seq > 1000")
        let verification = try await harness.audit.verify()
        #expect(verification.firstBroken == 4, "\(verification)")
        await harness.shutdown()
    }

    @Test("Recomputing the chain without the HSM key does not help: a rewritten hash fails the MAC")
    func rewrittenHash() async throws {
        let harness = try await filledLog("auditrehash")
        // An attacker with SQL access edits entry 8 and recomputes its hash in SQL (they know the scheme, not the MAC key).
        try await harness.ownerSQL(tenant: nil, "UPDATE audit_log SET entry_hash = sha256(entry_hash) WHERE seq = 8")
        #expect(try await harness.audit.verify().firstBroken == 8)
        await harness.shutdown()
    }
}

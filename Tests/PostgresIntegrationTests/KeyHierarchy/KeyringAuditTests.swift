import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage
import Testing

/// Issue 9 §4: no tenant, rotation or key destruction without its audit entry — the entry is
/// written in the action's transaction, and when it cannot be (a CHECK constraint the schema
/// owner adds for one action) the action does not happen.
@Suite("Key actions commit with their audit entries")
struct KeyringAuditTests {
    private func refuse(_ harness: CustodyHarness, _ action: String) async throws {
        try await harness.ownerSQL(tenant: nil, "ALTER TABLE audit_log DROP CONSTRAINT IF EXISTS refuse_for_test")
        try await harness.ownerSQL(tenant: nil, "ALTER TABLE audit_log ADD CONSTRAINT refuse_for_test CHECK (action <> \(unescaped: "'\(action)'")) NOT VALID")
    }

    @Test("tenant creation, rotation, retirement and destruction roll back when their entry cannot be written")
    func keyActions() async throws {
        let harness = try await CustodyHarness.make("keyaudit")
        try await refuse(harness, "tenant.create")
        await #expect(throws: (any Error).self) { _ = try await harness.keyring.createTenant(label: "refused", actor: "officer") }
        #expect(try await TenantStore(harness.service).list().isEmpty, "no tenant without its entry")

        try await refuse(harness, "none")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        try await refuse(harness, "key.rotate")
        await #expect(throws: (any Error).self) { try await harness.keyring.rotate(tenant.id, .data, overlap: .seconds(60), actor: "officer") }
        let afterRefusedRotation = try await harness.keyring.versions(tenant.id).filter { $0.purpose == .data }
        #expect(afterRefusedRotation.first { $0.state == .active }?.version == 1, "v1 stays active: the activation rolled back")
        // The failed rotation gave its pending version back: nothing for reconciliation to
        // complete behind the officer's back, and the rotation can be asked for again at once
        // (its listing refused every later rotation of the purpose until a restart).
        #expect(!afterRefusedRotation.contains { $0.state == .pending }, "no pending version left by the failed rotation")
        try await refuse(harness, "none")
        #expect(try await harness.keyring.reconcile().isEmpty)
        let retried = try await harness.keyring.rotate(tenant.id, .data, overlap: .seconds(60), actor: "officer")
        #expect(try await harness.keyring.versions(tenant.id).first { $0.purpose == .data && $0.state == .active }?.version == retried.version)

        try await harness.keyring.rotate(tenant.id, .pii, overlap: .seconds(3600), actor: "officer")
        try await refuse(harness, "key.retire")
        await #expect(throws: (any Error).self) { try await harness.keyring.retire(tenant.id, .pii, version: 1, actor: "officer") }
        #expect(try await harness.keyring.versions(tenant.id).first { $0.purpose == .pii && $0.version == 1 }?.state == .retiring,
                "no retirement without its entry")
        try await refuse(harness, "none")
        try await harness.keyring.retire(tenant.id, .pii, version: 1, actor: "officer")
        try await refuse(harness, "key.destroy")
        await #expect(throws: (any Error).self) {
            try await harness.keyring.destroy(tenant.id, .pii, version: 1, waitingPeriod: .zero, actor: "officer")
        }
        let pii = try #require(try await harness.keyring.versions(tenant.id).first { $0.purpose == .pii && $0.version == 1 })
        #expect(pii.state == .retired && pii.wrappedKey != nil, "no destroyed key without its entry")
        // The same call with the entry allowed goes through: the refusal was the audit entry's.
        try await refuse(harness, "none")
        try await harness.keyring.destroy(tenant.id, .pii, version: 1, waitingPeriod: .zero, actor: "officer")
        #expect(try await harness.keyring.versions(tenant.id).first { $0.purpose == .pii && $0.version == 1 }?.state == .destroyed)

        let actions = try await harness.owner.withTransaction(context: "read audit") { connection in
            try await connection.query("SELECT action FROM audit_log ORDER BY seq", logger: Database.quiet).collect().map { try $0.decode(String.self) }
        }
        #expect(actions == ["tenant.create", "key.rotate", "key.rotate", "key.retire", "key.destroy"])
        #expect(try await harness.audit.verify().isIntact)
        await harness.shutdown()
    }
}

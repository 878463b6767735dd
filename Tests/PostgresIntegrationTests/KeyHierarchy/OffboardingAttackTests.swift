@testable import Custody
import CustosModel
import Foundation
import Storage
import Testing

/// Undoing an approved offboarding with the service role's own grants on `tenant_offboardings`
/// (it may update `approved_at` and `completed_at`, which the approval MAC does not protect
/// from being cleared or set).
@Suite("Offboarding attacks")
struct OffboardingAttackTests {
    static func approvedOffboarding(_ harness: CustodyHarness, clock: TestClock) async throws -> (TenantOffboarding, TenantID, UUID) {
        let tenant = try await harness.keyring.createTenant(label: "leaving", actor: "officer").id
        let offboarding = TenantOffboarding(database: harness.service, keyring: harness.keyring, audit: harness.audit, now: clock.now)
        let request = try await offboarding.request(tenant, officer: "alice", waitingDays: 7)
        _ = try await offboarding.approve(request.id, officer: "bob", certificateSerial: "b0b")
        await #expect(throws: CustodyError.self) { _ = try await harness.keyring.key(tenant, .data) }
        return (offboarding, tenant, request.id)
    }

    @Test("clearing the approval in the database does not let one officer enable the offboarded tenant's keys")
    func clearedApprovalThenEnable() async throws {
        let harness = try await CustodyHarness.make("offboardcleared")
        let (_, tenant, id) = try await Self.approvedOffboarding(harness, clock: TestClock())
        try await harness.ownerSQL(tenant: nil, "UPDATE tenant_offboardings SET approved_at = NULL, approved_by = NULL WHERE id = \(id)")
        await #expect {
            try await harness.keyring.enable(tenant, .data, version: 1, actor: "mallory")
        } throws: { error in
            if case CustodyError.tenantOffboarding(tenant) = error { true } else { false }
        }
        await harness.shutdown()
    }

    @Test("clearing the approval and putting the keys' rows back from before it does not make the tenant's keys usable")
    func clearedApprovalAndRowsReplayed() async throws {
        let harness = try await CustodyHarness.make("offboardreplayed")
        let tenant = try await harness.keyring.createTenant(label: "leaving", actor: "officer").id
        let backup = try await harness.keyring.versions(tenant)
        let offboarding = TenantOffboarding(database: harness.service, keyring: harness.keyring, audit: harness.audit, now: TestClock().now)
        let request = try await offboarding.request(tenant, officer: "alice", waitingDays: 7)
        _ = try await offboarding.approve(request.id, officer: "bob", certificateSerial: "b0b")
        try await harness.ownerSQL(tenant: nil, "UPDATE tenant_offboardings SET approved_at = NULL, approved_by = NULL WHERE id = \(request.id)")
        try await harness.ownerSQL(tenant: nil, "UPDATE tenants SET status = 'active' WHERE id = \(tenant.rawValue)::uuid")
        for row in backup {
            try await harness.ownerSQL(tenant: tenant, """
                UPDATE key_versions SET disabled_at = NULL, row_mac = \(Data(row.rowMAC))
                WHERE purpose = \(row.purpose.rawValue) AND version = \(row.version)
                """)
        }
        let keyring = TenantKeyring(pool: harness.pool, database: harness.service, audit: harness.audit, logger: harness.logs.logger)
        for purpose in [KeyPurpose.data, .pii, .apiKeyPepper] {
            await #expect {
                _ = try await keyring.key(tenant, purpose)
            } throws: { error in
                if case CustodyError.tenantOffboarding(tenant) = error { true } else { false }
            }
        }
        await harness.shutdown()
    }

    @Test("a completion written into the database does not stop the shredding when the offboarding is due")
    func forgedCompletionSkipsShredding() async throws {
        let harness = try await CustodyHarness.make("offboardforgeddone")
        let clock = TestClock()
        let (offboarding, tenant, id) = try await Self.approvedOffboarding(harness, clock: clock)
        try await harness.ownerSQL(tenant: nil, "UPDATE tenant_offboardings SET completed_at = now() WHERE id = \(id)")
        clock.advance(days: 7.1)
        // The sweep (like an officer's `custos tenant complete-offboard`) believes the mark only
        // when every key version is a MAC-valid destroyed row, and shreds otherwise.
        let (completed, refused) = try await offboarding.sweep(officer: "system")
        #expect(completed.map(\.id) == [id] && refused.isEmpty)
        let live = try await harness.keyring.versions(tenant).filter { $0.state != .destroyed }
        #expect(live.isEmpty, "the offboarding reads as completed while \(live.count) key versions were never destroyed")
        await harness.shutdown()
    }
}

@testable import Custody
import CustosModel
import Foundation
import Storage
import Testing

/// A database writer with any backup puts an older, MAC-valid copy of a `key_versions` row back.
/// The flags that stop a version's use are anchored in the HSM, like destructions.
@Suite("Row replay attacks")
struct RowReplayAttackTests {
    @Test("a disabled version's row replayed from before the disable is refused")
    func disabledRowReplayed() async throws {
        let harness = try await CustodyHarness.make("replaydisabled")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let before = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .data && $0.version == 1 })
        try await harness.keyring.disable(tenant, .data, version: 1, actor: "officer")
        // The backup's row: disabled_at NULL and the MAC that went with it.
        try await harness.ownerSQL(tenant: tenant, """
            UPDATE key_versions SET disabled_at = NULL, row_mac = \(Data(before.rowMAC)) WHERE purpose = 'data' AND version = 1
            """)
        let keyring = TenantKeyring(pool: harness.pool, database: harness.service, audit: harness.audit, logger: harness.logs.logger)
        await #expect {
            _ = try await keyring.key(tenant, .data, version: 1)
        } throws: { error in
            if case CustodyError.keyDisabled(tenant, .data, 1) = error { true } else { false }
        }
        // `key status` shows the row as it now reads and, beside it, the list's refusal.
        let replayed = try #require(try await keyring.status(tenant).versions.first { $0.record.purpose == .data && $0.record.version == 1 })
        #expect(replayed.record.state == .active && replayed.record.disabledAt == nil)
        #expect(replayed.listed == .disabled)
        // An officer's enable takes it off the HSM's list: the version works again.
        try await keyring.enable(tenant, .data, version: 1, actor: "officer")
        #expect(try await keyring.key(tenant, .data, version: 1).version == 1)
        let enabled = try #require(try await keyring.status(tenant).versions.first { $0.record.purpose == .data && $0.record.version == 1 })
        #expect(enabled.listed == nil)
        await harness.shutdown()
    }

    @Test("a version scheduled for destruction whose row is replayed from before the approval stays unusable, and the destruction is still carried out")
    func scheduledRowReplayed() async throws {
        let harness = try await CustodyHarness.make("replayscheduled")
        let clock = TestClock()
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        try await harness.keyring.rotate(tenant, .apiKeyPepper, actor: "officer")
        let before = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .apiKeyPepper && $0.version == 1 })
        let approvals = KeyDestructionApprovals(database: harness.service, keyring: harness.keyring, audit: harness.audit, now: clock.now)
        let request = try await approvals.request(tenant, .apiKeyPepper, version: 1, officer: "alice", waitingDays: 7)
        _ = try await approvals.approve(request.id, officer: "bob", certificateSerial: "b0b")
        try await harness.ownerSQL(tenant: tenant, """
            UPDATE key_versions SET destruction_due_at = NULL, row_mac = \(Data(before.rowMAC)) WHERE purpose = 'apikey-pepper' AND version = 1
            """)
        let keyring = TenantKeyring(pool: harness.pool, database: harness.service, audit: harness.audit, logger: harness.logs.logger)
        await #expect {
            _ = try await keyring.key(tenant, .apiKeyPepper, version: 1)
        } throws: { error in
            if case CustodyError.keyDestructionScheduled(tenant, .apiKeyPepper, 1, _) = error { true } else { false }
        }
        let replayed = try #require(try await keyring.status(tenant).versions.first { $0.record.purpose == .apiKeyPepper && $0.record.version == 1 })
        #expect(replayed.record.destructionDueAt == nil)
        if case .destructionScheduled(let due)? = replayed.listed {
            #expect(abs(due.timeIntervalSince(clock.now().addingTimeInterval(7 * 86_400))) < 120, "due \(due)")
        } else {
            Issue.record("key status does not show the listed destruction: \(String(describing: replayed.listed))")
        }
        clock.advance(days: 7.1)
        let (executed, refused) = try await approvals.sweep(officer: "system", waitingPeriod: .zero)
        #expect(executed.map(\.id) == [request.id] && refused.isEmpty, "refused: \(refused.map { "\($0.1)" })")
        let row = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .apiKeyPepper && $0.version == 1 })
        #expect(row.state == .destroyed)
        await harness.shutdown()
    }
}

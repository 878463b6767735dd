import Composition
@testable import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage
import Testing

/// Issue 11's key lifecycle attacked after its key states were anchored in the HSM (second
/// round): a database writer using only the service role's grants, with a backup to replay rows
/// from, against scheduled destructions, the offboarding sweep and version numbers.
@Suite("Key lifecycle attacks, second round: replays, sweeps, reused version numbers")
struct LifecycleAttackRound2Tests {
    static func row(_ harness: CustodyHarness, _ tenant: TenantID, _ purpose: KeyPurpose, _ version: Int) async throws -> KeyVersionRecord? {
        try await harness.keyring.versions(tenant).first { $0.purpose == purpose && $0.version == version }
    }

    /// SQL as the service role (what a compromised service host can run), scoped to `tenant`.
    static func serviceSQL(_ harness: CustodyHarness, tenant: TenantID?, _ query: PostgresQuery) async throws {
        if let tenant {
            try await harness.service.withTenant(tenant, context: "attacker SQL") { connection in
                _ = try await connection.query(query, logger: Database.quiet)
            }
        } else {
            try await harness.service.withTransaction(context: "attacker SQL") { connection in
                _ = try await connection.query(query, logger: Database.quiet)
            }
        }
    }

    @Test("a cancelled scheduled destruction stays cancelled when the request is un-cancelled and the key row put back from a backup taken while it was scheduled")
    func cancelledScheduleReplayedFromBackup() async throws {
        let harness = try await CustodyHarness.make("r2cancelreplay")
        let clock = TestClock()
        let scheduled = try await ScheduledDataKeyDestruction.make(harness, clock: clock)
        let (approvals, tenant, request) = (scheduled.approvals, scheduled.tenant, scheduled.request)
        // The backup: v1's row while it awaited its destruction (due time and the MAC with it).
        let backup = try #require(try await Self.row(harness, tenant, .data, 1))
        let due = try #require(backup.destructionDueAt)
        _ = try await approvals.cancel(request.id, officer: "carol")  // officers keep v1

        // The service role may update both columns: the request un-cancelled, the row put back.
        try await Self.serviceSQL(harness, tenant: nil, "UPDATE destruction_requests SET cancelled_at = NULL, cancelled_by = NULL WHERE id = \(request.id)")
        try await Self.serviceSQL(harness, tenant: tenant, """
            UPDATE key_versions SET destruction_due_at = \(due), row_mac = \(Data(backup.rowMAC)) WHERE purpose = 'data' AND version = 1
            """)
        clock.advance(days: 8)
        let swept = try await approvals.sweep(officer: "system", waitingPeriod: .zero)
        #expect(swept.executed.isEmpty, "the sweep carried out a destruction officers cancelled")
        #expect(try await Self.row(harness, tenant, .data, 1)?.state == .retired)
        await #expect(throws: DestructionApprovalError.notScheduled(request.id)) {
            _ = try await approvals.execute(request.id, officer: "alice", waitingPeriod: .zero)
        }
        await harness.shutdown()
    }

    @Test("one completed offboarding whose destroyed row fails its MAC does not stop the sweep from shredding another tenant that is due")
    func tamperedCompletedOffboardingDoesNotBlockSweep() async throws {
        let harness = try await CustodyHarness.make("r2offboardsweep")
        let clock = TestClock()
        let offboarding = TenantOffboarding(database: harness.service, keyring: harness.keyring, audit: harness.audit, now: clock.now)
        let gone = try await harness.keyring.createTenant(label: "gone", actor: "officer").id
        let leaving = try await harness.keyring.createTenant(label: "leaving", actor: "officer").id
        let first = try await offboarding.request(gone, officer: "alice", waitingDays: 7)
        _ = try await offboarding.approve(first.id, officer: "bob", certificateSerial: "b0b")
        clock.advance(days: 7.1)
        _ = try await offboarding.complete(first.id, officer: "system")
        let second = try await offboarding.request(leaving, officer: "alice", waitingDays: 7)
        _ = try await offboarding.approve(second.id, officer: "bob", certificateSerial: "b0b")

        // One write through the service role's grant on row_mac, on a tenant long gone.
        try await Self.serviceSQL(harness, tenant: gone, """
            UPDATE key_versions SET row_mac = \(Data(repeating: 0, count: 32)) WHERE purpose = 'data' AND version = 1
            """)
        clock.advance(days: 7.1)
        let (completed, refused) = try await offboarding.sweep(officer: "system")
        #expect(completed.map(\.id) == [second.id], "the due offboarding was not carried out")
        #expect(refused.map(\.0.id) == [first.id])
        let live = try await harness.keyring.versions(leaving).filter { $0.state != .destroyed }
        #expect(live.isEmpty, "\(live.count) key versions of the departed tenant were never destroyed")
        await harness.shutdown()
    }

    @Test("a version number the HSM lists as destroyed is never given to a new key, even after the database writer deleted its rows")
    func destroyedVersionNumberNotReused() async throws {
        let harness = try await CustodyHarness.make("r2reuse")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        _ = try await harness.webhooks.createSecret(tenant: tenant, actor: "alice")
        _ = try await harness.webhooks.createSecret(tenant: tenant, overlap: .zero, actor: "alice")
        try await harness.keyring.destroy(tenant, .webhook, version: 1, waitingPeriod: .zero, actor: "alice")

        // The service role may delete only pending rows, and may set a row's state (and blob, for
        // the table's check): every webhook row goes (v1 destroyed, v2 active; webhooks stop).
        try await Self.serviceSQL(harness, tenant: tenant, """
            UPDATE key_versions SET state = 'pending', wrapped_key = coalesce(wrapped_key, '\\x00'::bytea) WHERE purpose = 'webhook'
            """)
        try await Self.serviceSQL(harness, tenant: tenant, "DELETE FROM key_versions WHERE purpose = 'webhook'")

        // Officers issue a new secret: it must not be v1, which the HSM lists as destroyed
        // (refused at once, and destroyed by the next start-up's reconciliation).
        let (version, _) = try await harness.webhooks.createSecret(tenant: tenant, actor: "alice")
        #expect(version > 1, "the new secret reuses version \(version), which the HSM lists as destroyed")
        _ = try await harness.webhooks.signatureHeader(tenant: tenant, id: "msg_1", timestamp: 1_700_000_000, body: Array("{}".utf8))
        _ = try await harness.keyring.reconcile()
        #expect(try await Self.row(harness, tenant, .webhook, version)?.state == .active, "start-up reconciliation destroyed the new secret")
        await harness.shutdown()
    }
}

extension LifecycleAttackRound2Tests {
    @Test("an old pii version the HSM lists as destroyed, its row put back from a backup, stays refused without stopping every subject lookup of the tenant")
    func destroyedPIIRowReplayedDoesNotStopLookups() async throws {
        let harness = try await CustodyHarness.make("r2piireplay")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        try await harness.keyring.rotate(tenant, .pii, actor: "alice")
        let backup = try #require(try await Self.row(harness, tenant, .pii, 1))
        let wrapped = try #require(backup.wrappedKey)
        try await harness.keyring.destroy(tenant, .pii, version: 1, waitingPeriod: .zero, actor: "alice")
        try await Self.serviceSQL(harness, tenant: tenant, """
            UPDATE key_versions SET state = 'retired', wrapped_key = \(Data(wrapped)), destroyed_at = NULL, row_mac = \(Data(backup.rowMAC))
            WHERE purpose = 'pii' AND version = 1
            """)
        let referencer = CustodySubjectReferencer(pool: harness.pool, keyring: harness.keyring)
        let references = try await referencer.references(for: PersonalText("subject-1"), tenant: tenant)
        #expect(!references.isEmpty && references.allSatisfy { $0.piiVersion == 2 })
        await #expect {
            _ = try await harness.keyring.key(tenant, .pii, version: 1)
        } throws: { error in
            if case CustodyError.keyDestroyed(tenant, .pii, 1) = error { true } else { false }
        }
        await harness.shutdown()
    }
}

extension LifecycleAttackRound2Tests {
    @Test("a scheduled request whose approval a database writer cleared can still be cancelled: the version does not stay refused for good")
    func clearedApprovalThenCancel() async throws {
        let harness = try await CustodyHarness.make("r2clearedcancel")
        let clock = TestClock()
        let scheduled = try await ScheduledDataKeyDestruction.make(harness, clock: clock)
        let (approvals, tenant, request) = (scheduled.approvals, scheduled.tenant, scheduled.request)
        // The service role may update approved_at and approved_by (the approval MAC cannot stop
        // a clearing); officers then cancel, to keep v1.
        try await Self.serviceSQL(harness, tenant: nil, "UPDATE destruction_requests SET approved_at = NULL, approved_by = NULL WHERE id = \(request.id)")
        _ = try await approvals.cancel(request.id, officer: "carol")
        // Cancelling un-marks the version by the HSM's list, whatever approved_at says now.
        #expect(try await harness.keyring.key(tenant, .data, version: 1).version == 1)
        await harness.shutdown()
    }
}

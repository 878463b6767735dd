import Custody
import CustosModel
import Foundation
import Testing

@Suite("Scheduled key destruction: a chosen waiting period after approval, cancellable until carried out")
struct ScheduledDestructionTests {
    /// Whether `body` fails because `version` of `purpose` awaits its scheduled destruction.
    static func refusesAsScheduled(_ purpose: KeyPurpose, _ version: Int, _ body: () async throws -> Void) async -> Bool {
        do {
            try await body()
            return false
        } catch CustodyError.keyDestructionScheduled(_, let refused, let refusedVersion, _) {
            return refused == purpose && refusedVersion == version
        } catch {
            return false
        }
    }

    @Test("Approval makes the version unusable until it is due; cancel makes it usable again; the sweep destroys it once due")
    func scheduleCancelSweep() async throws {
        let harness = try await CustodyHarness.make("scheduled")
        let clock = TestClock()
        let approvals = KeyDestructionApprovals(database: harness.service, keyring: harness.keyring, audit: harness.audit, now: clock.now)
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        try await harness.keyring.rotate(tenant, .apiKeyPepper, actor: "alice")
        _ = try await harness.keyring.key(tenant, .apiKeyPepper, version: 1)

        await #expect(throws: DestructionApprovalError.waitingDaysOutOfRange(6)) {
            _ = try await approvals.request(tenant, .apiKeyPepper, version: 1, officer: "alice", waitingDays: 6)
        }
        await #expect(throws: DestructionApprovalError.waitingDaysOutOfRange(31)) {
            _ = try await approvals.request(tenant, .apiKeyPepper, version: 1, officer: "alice", waitingDays: 31)
        }
        let request = try await approvals.request(tenant, .apiKeyPepper, version: 1, officer: "alice", waitingDays: 7)
        #expect(await !Self.refusesAsScheduled(.apiKeyPepper, 1) { _ = try await harness.keyring.key(tenant, .apiKeyPepper, version: 1) },
                "a request alone changes nothing")
        let approved = try await approvals.approve(request.id, officer: "bob", certificateSerial: "b0b")
        let due = try #require(approved.dueAt)
        #expect(due == approved.approvedAt!.addingTimeInterval(7 * 86_400))
        #expect(await Self.refusesAsScheduled(.apiKeyPepper, 1) { _ = try await harness.keyring.key(tenant, .apiKeyPepper, version: 1) })
        #expect(try await harness.keyring.versions(tenant).first { $0.purpose == .apiKeyPepper && $0.version == 1 }?.destructionDueAt != nil)
        await #expect(throws: DestructionApprovalError.notDue(request.id, due: due)) {
            _ = try await approvals.execute(request.id, officer: "alice", waitingPeriod: .zero)
        }
        clock.advance(days: 3)
        #expect(try await approvals.sweep(officer: "system", waitingPeriod: .zero).executed.isEmpty, "not due yet")

        let cancelled = try await approvals.cancel(request.id, officer: "carol")
        #expect(cancelled.cancelledBy == "carol" && cancelled.cancelledAt != nil)
        _ = try await harness.keyring.key(tenant, .apiKeyPepper, version: 1)  // usable again (retired: verify only)
        let afterCancel = try await harness.keyring.versions(tenant).first { $0.purpose == .apiKeyPepper && $0.version == 1 }
        #expect(afterCancel?.state == .retired && afterCancel?.destructionDueAt == nil)
        clock.advance(days: 10)
        await #expect(throws: DestructionApprovalError.cancelled(request.id)) {
            _ = try await approvals.execute(request.id, officer: "alice", waitingPeriod: .zero)
        }
        await #expect(throws: DestructionApprovalError.cancelled(request.id)) { _ = try await approvals.cancel(request.id, officer: "carol") }

        // Scheduled again, and carried out by the sweep once due.
        let second = try await approvals.request(tenant, .apiKeyPepper, version: 1, officer: "alice", waitingDays: 7)
        _ = try await approvals.approve(second.id, officer: "bob", certificateSerial: "b0b")
        clock.advance(days: 6.9)
        #expect(try await approvals.sweep(officer: "system", waitingPeriod: .zero).executed.isEmpty)
        clock.advance(days: 0.2)
        let swept = try await approvals.sweep(officer: "system", waitingPeriod: .zero)
        #expect(swept.executed.map(\.id) == [second.id] && swept.refused.isEmpty)
        #expect(try await harness.keyring.versions(tenant).first { $0.purpose == .apiKeyPepper && $0.version == 1 }?.state == .destroyed)
        await #expect(throws: DestructionApprovalError.alreadyExecuted(second.id)) { _ = try await approvals.cancel(second.id, officer: "carol") }

        let actions = try await harness.audit.tail(limit: 60).compactMap { AuditAction(rawValue: $0.action) }
        #expect(actions.contains(.keyDestroySchedule) && actions.contains(.keyDestroyCancel) && actions.contains(.keyDestroy))
        await harness.shutdown()
    }

    @Test("A database write cannot shorten the waiting period or unschedule the version")
    func scheduleIsAuthenticated() async throws {
        let harness = try await CustodyHarness.make("scheduled_mac")
        let clock = TestClock()
        let approvals = KeyDestructionApprovals(database: harness.service, keyring: harness.keyring, audit: harness.audit, now: clock.now)
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        try await harness.keyring.rotate(tenant, .data, actor: "alice")
        let request = try await approvals.request(tenant, .data, version: 1, officer: "alice", waitingDays: 30)
        _ = try await approvals.approve(request.id, officer: "bob", certificateSerial: "b0b")
        try await harness.ownerSQL(tenant: nil, "UPDATE destruction_requests SET waiting_days = 7 WHERE id = \(request.id)")
        clock.advance(days: 8)
        await #expect(throws: DestructionApprovalError.approvalNotAuthentic(request.id)) {
            _ = try await approvals.execute(request.id, officer: "alice", waitingPeriod: .zero)
        }
        try await harness.ownerSQL(tenant: tenant, "UPDATE key_versions SET destruction_due_at = NULL WHERE purpose = 'data' AND version = 1")
        var refusedAsTampered = false
        do {
            _ = try await harness.keyring.key(tenant, .data, version: 1)
        } catch CustodyError.rowTampered {
            refusedAsTampered = true
        }
        #expect(refusedAsTampered)
        await harness.shutdown()
    }

    @Test("A run that destroyed the version but stopped before recording it is finished by the next sweep")
    func interruptedExecutionIsFinished() async throws {
        let harness = try await CustodyHarness.make("scheduled_crash")
        let clock = TestClock()
        let scheduled = try await ScheduledDataKeyDestruction.make(harness, clock: clock)
        let (approvals, tenant, request) = (scheduled.approvals, scheduled.tenant, scheduled.request)
        clock.advance(days: 8)
        // The key step of an execution committed; the crash came before the request was marked.
        try await harness.keyring.destroy(tenant, .data, version: 1, waitingPeriod: .zero, actor: "system")
        let swept = try await approvals.sweep(officer: "system", waitingPeriod: .zero)
        #expect(swept.executed.map(\.id) == [request.id] && swept.refused.isEmpty)
        #expect(try await approvals.get(request.id).executedAt != nil)
        await harness.shutdown()
    }
}

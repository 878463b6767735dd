import Custody
import CustosModel

/// A tenant whose `data` v1 is retired by a rotation and scheduled for destruction: requested by
/// alice, approved by bob, due 7 days after approval on `clock`. Where the scheduled-destruction
/// tests and attacks start.
struct ScheduledDataKeyDestruction {
    let approvals: KeyDestructionApprovals
    let tenant: TenantID
    let request: KeyDestructionApprovals.Request

    static func make(_ harness: CustodyHarness, clock: TestClock) async throws -> Self {
        let approvals = KeyDestructionApprovals(database: harness.service, keyring: harness.keyring, audit: harness.audit, now: clock.now)
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        try await harness.keyring.rotate(tenant, .data, actor: "alice")
        let request = try await approvals.request(tenant, .data, version: 1, officer: "alice", waitingDays: 7)
        _ = try await approvals.approve(request.id, officer: "bob", certificateSerial: "b0b")
        return Self(approvals: approvals, tenant: tenant, request: request)
    }
}

import Custody
import CustosModel
import Foundation
import Testing

/// The key lifecycle of issue 11 §3 attacked the way a security review would: a database
/// writer (with the user PIN, not the process's memory) and a single officer trying to undo what
/// two officers decided.
@Suite("Key lifecycle under attack: cancelled destructions stay cancelled, offboarding keys stay disabled")
struct LifecycleAttackTests {
    static func state(_ harness: CustodyHarness, _ tenant: TenantID, _ purpose: KeyPurpose, _ version: Int) async throws -> KeyState? {
        try await harness.keyring.versions(tenant).first { $0.purpose == purpose && $0.version == version }?.state
    }

    @Test("A database write clearing cancelled_at does not bring a cancelled destruction back: the sweep leaves the version alone")
    func uncancelInDatabaseIsRefused() async throws {
        let harness = try await CustodyHarness.make("attack_uncancel")
        let clock = TestClock()
        let scheduled = try await ScheduledDataKeyDestruction.make(harness, clock: clock)
        let (approvals, tenant, request) = (scheduled.approvals, scheduled.tenant, scheduled.request)
        _ = try await approvals.cancel(request.id, officer: "carol")  // officers keep v1 (old backups need it)

        // The approval's MAC does not cover the cancellation: clearing it leaves an approval that verifies.
        try await harness.ownerSQL(tenant: nil, "UPDATE destruction_requests SET cancelled_at = NULL, cancelled_by = NULL WHERE id = \(request.id)")
        clock.advance(days: 8)
        let swept = try await approvals.sweep(officer: "system", waitingPeriod: .zero)
        #expect(swept.executed.isEmpty, "the sweep carried out a cancelled destruction")
        #expect(try await Self.state(harness, tenant, .data, 1) == .retired)
        await #expect(throws: DestructionApprovalError.notScheduled(request.id)) {
            _ = try await approvals.execute(request.id, officer: "alice", waitingPeriod: .zero)
        }
        await harness.shutdown()
    }

    @Test("A second scheduled destruction of a version already scheduled is refused at approval, so cancelling one cannot leave the other running unmarked")
    func secondScheduleIsRefused() async throws {
        let harness = try await CustodyHarness.make("attack_twoschedules")
        let clock = TestClock()
        let approvals = KeyDestructionApprovals(database: harness.service, keyring: harness.keyring, audit: harness.audit, now: clock.now)
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        try await harness.keyring.rotate(tenant, .data, actor: "alice")
        let first = try await approvals.request(tenant, .data, version: 1, officer: "alice", waitingDays: 30)
        let second = try await approvals.request(tenant, .data, version: 1, officer: "alice", waitingDays: 7)
        _ = try await approvals.approve(first.id, officer: "bob", certificateSerial: "b0b")
        var refused = false
        do {
            _ = try await approvals.approve(second.id, officer: "bob", certificateSerial: "b0b")
        } catch CustodyError.keyDestructionScheduled(_, .data, 1, _) {
            refused = true
        }
        #expect(refused, "a second schedule overwrote the first one's due time")
        #expect(try await approvals.get(second.id).approvedAt == nil, "the refused approval was recorded")
        // Cancelling the first makes the version usable, and nothing is left to destroy it.
        _ = try await approvals.cancel(first.id, officer: "carol")
        _ = try await harness.keyring.key(tenant, .data, version: 1)
        clock.advance(days: 31)
        #expect(try await approvals.sweep(officer: "system", waitingPeriod: .zero).executed.isEmpty)
        #expect(try await Self.state(harness, tenant, .data, 1) == .retired)
        await harness.shutdown()
    }

    @Test("While an approved offboarding waits, one officer can neither enable the tenant's disabled keys nor rotate in a fresh one")
    func offboardingKeysStayDisabled() async throws {
        let harness = try await CustodyHarness.make("attack_offboard_enable")
        let clock = TestClock()
        let offboarding = TenantOffboarding(database: harness.service, keyring: harness.keyring, audit: harness.audit, now: clock.now)
        let tenant = try await harness.keyring.createTenant(label: "leaving", actor: "alice").id
        let request = try await offboarding.request(tenant, officer: "alice", waitingDays: 30)
        _ = try await offboarding.approve(request.id, officer: "bob", certificateSerial: "b0b")
        await #expect(throws: CustodyError.self) { _ = try await harness.keyring.key(tenant, .data) }

        var enableRefused = false, rotateRefused = false
        do {
            try await harness.keyring.enable(tenant, .data, version: 1, actor: "mallory")
        } catch CustodyError.tenantOffboarding(tenant) {
            enableRefused = true
        }
        #expect(enableRefused, "one officer re-enabled a key two officers disabled by offboarding")
        do {
            try await harness.keyring.rotate(tenant, .data, actor: "mallory")
        } catch CustodyError.tenantOffboarding(tenant) {
            rotateRefused = true
        }
        #expect(rotateRefused, "a rotation gave the offboarded tenant a usable key")
        var secretRefused = false, keyPairRefused = false
        do {
            _ = try await harness.webhooks.createSecret(tenant: tenant, actor: "mallory")
        } catch CustodyError.tenantOffboarding(tenant) {
            secretRefused = true
        }
        #expect(secretRefused, "a new webhook secret was made for a tenant being offboarded")
        do {
            _ = try await harness.webhooks.createEd25519Key(tenant: tenant, actor: "mallory")
        } catch CustodyError.tenantOffboarding(tenant) {
            keyPairRefused = true
        }
        #expect(keyPairRefused, "a new webhook key pair was made for a tenant being offboarded")
        await #expect(throws: CustodyError.self) { _ = try await harness.keyring.key(tenant, .data) }

        // When due, every version is shredded: nothing a rotation added survives.
        clock.advance(days: 31)
        _ = try await offboarding.complete(request.id, officer: "system")
        #expect(try await harness.keyring.versions(tenant).allSatisfy { $0.state == .destroyed })
        await harness.shutdown()
    }

    @Test("A database write between request and approval cannot turn a 30-day scheduled destruction into an immediate one")
    func waitingDaysRewrittenBeforeApproval() async throws {
        let harness = try await CustodyHarness.make("attack_prewait")
        let clock = TestClock()
        let approvals = KeyDestructionApprovals(database: harness.service, keyring: harness.keyring, audit: harness.audit, now: clock.now)
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        try await harness.keyring.rotate(tenant, .data, actor: "alice")
        let request = try await approvals.request(tenant, .data, version: 1, officer: "alice", waitingDays: 30)
        // The request carries an HSM MAC from the moment it is recorded: a change before the
        // approval (here the waiting period, made NULL: the unscheduled form) makes it unapprovable.
        try await harness.ownerSQL(tenant: nil, "UPDATE destruction_requests SET waiting_days = NULL WHERE id = \(request.id)")
        await #expect(throws: DestructionApprovalError.requestNotAuthentic(request.id)) {
            _ = try await approvals.approve(request.id, officer: "bob", certificateSerial: "b0b")
        }
        await #expect(throws: DestructionApprovalError.self, "nothing approved, nothing carried out") {
            _ = try await approvals.execute(request.id, officer: "alice", waitingPeriod: .zero)
        }
        // A request forged in the database, naming another officer, cannot be approved either.
        let forged = UUID()
        try await harness.ownerSQL(tenant: nil, """
            INSERT INTO destruction_requests (id, tenant_id, purpose, version, requested_by, requested_at, expires_at, waiting_days)
            VALUES (\(forged), \(tenant.rawValue)::uuid, 'data', 1, 'alice', now(), now() + interval '1 day', 7)
            """)
        await #expect(throws: DestructionApprovalError.requestNotAuthentic(forged)) {
            _ = try await approvals.approve(forged, officer: "bob", certificateSerial: "b0b")
        }
        await harness.shutdown()
    }

    @Test("An offboarding request changed in the database before its approval (a shorter wait) or forged there cannot be approved")
    func offboardingRequestRewrittenBeforeApproval() async throws {
        let harness = try await CustodyHarness.make("attack_preoffboard")
        let offboarding = TenantOffboarding(database: harness.service, keyring: harness.keyring, audit: harness.audit)
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        let request = try await offboarding.request(tenant, officer: "alice", waitingDays: 30)
        try await harness.ownerSQL(tenant: nil, "UPDATE tenant_offboardings SET waiting_days = 7 WHERE id = \(request.id)")
        await #expect(throws: OffboardingError.requestNotAuthentic(request.id)) {
            _ = try await offboarding.approve(request.id, officer: "bob", certificateSerial: "b0b")
        }
        let forged = UUID()
        try await harness.ownerSQL(tenant: nil, """
            INSERT INTO tenant_offboardings (id, tenant_id, requested_by, requested_at, expires_at, waiting_days)
            VALUES (\(forged), \(tenant.rawValue)::uuid, 'alice', now(), now() + interval '1 day', 7)
            """)
        await #expect(throws: OffboardingError.requestNotAuthentic(forged)) {
            _ = try await offboarding.approve(forged, officer: "bob", certificateSerial: "b0b")
        }
        #expect(try await harness.keyring.tenant(tenant)?.status != "disabled", "nothing was approved")
        await harness.shutdown()
    }
}

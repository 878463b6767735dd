import Composition
import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage
import Synchronization
import Testing

@Suite("Key destruction approvals: HSM-sealed, void with a revoked approver, carried out under a row lock")
struct KeyDestructionIntegrityTests {
    /// A tenant whose `data` v1 is retired: what a destruction request may name.
    static func retiredVersion(_ harness: CustodyHarness) async throws -> TenantID {
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        try await harness.keyring.rotate(tenant, .data, actor: "alice")
        return tenant
    }

    static func state(_ harness: CustodyHarness, _ tenant: TenantID) async throws -> KeyState? {
        try await harness.keyring.versions(tenant).first { $0.purpose == .data && $0.version == 1 }?.state
    }

    /// helper-55 H4: a destroyed version's unwrapped key stayed in the pool's persistent session
    /// (unusable through Custos, but alive in the HSM) until its eviction or a re-login.
    @Test("Carrying out a destruction also destroys the version's unwrapped session object in this process")
    func destroyedKeyLeavesTheHSM() async throws {
        let harness = try await CustodyHarness.make("destroyunwrapped")
        let approvals = KeyDestructionApprovals(database: harness.service, keyring: harness.keyring, audit: harness.audit)
        let sealer = CustodyPersonalDataSealer(pool: harness.pool, keyring: harness.keyring)
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        let (sealed, version) = try await sealer.seal(PersonalText("Ada"), tenant: tenant, keyVersion: nil, context: [1])
        try await harness.keyring.rotate(tenant, .data, actor: "alice")
        // Opened under the retired v1: its key is unwrapped into a session object.
        #expect(try await sealer.open(sealed, keyVersion: version, tenant: tenant, context: [1]).value == "Ada")
        let before = harness.pool.statistics.cachedSessionObjects
        let request = try await approvals.request(tenant, .data, version: version, officer: "alice")
        _ = try await approvals.approve(request.id, officer: "bob", certificateSerial: "b0b")
        _ = try await approvals.execute(request.id, officer: "alice", waitingPeriod: .zero)
        #expect(harness.pool.statistics.cachedSessionObjects == before - 1, "v1's session object is gone")
        await harness.shutdown()
    }

    @Test("An approval written into the database without the HSM MAC, or with another request's MAC, is refused")
    func forgedApproval() async throws {
        let harness = try await CustodyHarness.make("forged")
        let approvals = KeyDestructionApprovals(database: harness.service, keyring: harness.keyring, audit: harness.audit)
        let tenant = try await Self.retiredVersion(harness)
        let request = try await approvals.request(tenant, .data, version: 1, officer: "alice")
        // A database writer flips the approval.
        try await harness.ownerSQL(tenant: nil, """
            UPDATE destruction_requests SET approved_by = 'mallory', approved_at = now(), approver_certificate_serial = 'abc'
            WHERE id = \(request.id)
            """)
        await #expect(throws: DestructionApprovalError.approvalNotAuthentic(request.id)) {
            _ = try await approvals.execute(request.id, officer: "alice", waitingPeriod: .zero)
        }
        // ... or copies a genuine approval, MAC and all, from another request.
        try await harness.keyring.rotate(tenant, .data, actor: "alice")
        let other = try await approvals.request(tenant, .data, version: 2, officer: "alice")
        _ = try await approvals.approve(other.id, officer: "bob", certificateSerial: "b0b")
        try await harness.ownerSQL(tenant: nil, """
            UPDATE destruction_requests AS target SET approved_by = source.approved_by, approved_at = source.approved_at,
                approver_certificate_serial = source.approver_certificate_serial, approval_mac = source.approval_mac,
                approval_mac_version = source.approval_mac_version
            FROM destruction_requests AS source WHERE target.id = \(request.id) AND source.id = \(other.id)
            """)
        await #expect(throws: DestructionApprovalError.approvalNotAuthentic(request.id)) {
            _ = try await approvals.execute(request.id, officer: "alice", waitingPeriod: .zero)
        }
        // ... or extends the request's life past its expiry.
        try await harness.ownerSQL(tenant: nil, "UPDATE destruction_requests SET expires_at = expires_at + interval '1 day' WHERE id = \(other.id)")
        await #expect(throws: DestructionApprovalError.approvalNotAuthentic(other.id)) {
            _ = try await approvals.execute(other.id, officer: "alice", waitingPeriod: .zero)
        }
        #expect(try await Self.state(harness, tenant) == .retired)

        // A forged approval is void, so a real officer may still approve; then it runs.
        _ = try await approvals.approve(request.id, officer: "bob", certificateSerial: "b0b")
        #expect(try await approvals.execute(request.id, officer: "alice", waitingPeriod: .zero).executedAt != nil)
        #expect(try await Self.state(harness, tenant) == .destroyed)
        await harness.shutdown()
    }

    @Test("An approval dies with the approver's revoked certificate; another officer may approve again")
    func revokedApprover() async throws {
        let harness = try await CustodyHarness.make("revokedappr")
        let approvals = KeyDestructionApprovals(database: harness.service, keyring: harness.keyring, audit: harness.audit)
        let tenant = try await Self.retiredVersion(harness)
        let request = try await approvals.request(tenant, .data, version: 1, officer: "alice")
        _ = try await approvals.approve(request.id, officer: "bob", certificateSerial: "b0b")
        try await harness.service.withTransaction(context: "revoke bob") { connection in
            try await CertificateRevocationStore.revoke(serial: "b0b", subject: "custos://officer/bob", by: "alice", on: connection)
        }
        await #expect(throws: DestructionApprovalError.approverRevoked(request.id)) {
            _ = try await approvals.execute(request.id, officer: "alice", waitingPeriod: .zero)
        }
        #expect(try await Self.state(harness, tenant) == .retired)
        // Bob's revoked certificate cannot approve anew either.
        await #expect(throws: DestructionApprovalError.approverRevoked(request.id)) {
            _ = try await approvals.approve(request.id, officer: "bob", certificateSerial: "b0b")
        }
        _ = try await approvals.approve(request.id, officer: "carol", certificateSerial: "ca201")
        #expect(try await approvals.execute(request.id, officer: "alice", waitingPeriod: .zero).executedAt != nil)
        #expect(try await Self.state(harness, tenant) == .destroyed)
        await harness.shutdown()
    }

    @Test("Execution holds the request row locked: another transaction cannot take it, and a second execution finds it done")
    func executionLocksTheRow() async throws {
        let harness = try await CustodyHarness.make("execlock")
        let lockedDuringExecution = Mutex<Bool?>(nil)
        let owner = harness.owner
        let approvals = KeyDestructionApprovals(
            database: harness.service, keyring: harness.keyring, audit: harness.audit,
            executionHook: { id in
                // From another connection: NOWAIT fails at once (55P03) if the row is locked.
                let locked: Bool
                do {
                    try await owner.withTransaction(context: "probe request lock") { connection in
                        for try await _ in try await connection.query("SELECT id FROM destruction_requests WHERE id = \(id) FOR UPDATE NOWAIT", logger: Database.quiet) {}
                    }
                    locked = false
                } catch StorageError.locked {
                    locked = true
                }
                lockedDuringExecution.withLock { $0 = locked }
            }
        )
        let tenant = try await Self.retiredVersion(harness)
        let request = try await approvals.request(tenant, .data, version: 1, officer: "alice")
        _ = try await approvals.approve(request.id, officer: "bob", certificateSerial: "b0b")
        #expect(try await approvals.execute(request.id, officer: "alice", waitingPeriod: .zero).executedAt != nil)
        #expect(lockedDuringExecution.withLock { $0 } == true)

        // Two executions at once: one carries it out; the other finds it done, or (meeting the
        // row lock) is told it is being carried out.
        try await harness.keyring.rotate(tenant, .data, actor: "alice")
        let second = try await approvals.request(tenant, .data, version: 2, officer: "alice")
        _ = try await approvals.approve(second.id, officer: "bob", certificateSerial: "b0b")
        let outcomes = await withTaskGroup(of: (any Error)?.self) { group in
            for officer in ["alice", "carol"] {
                group.addTask {
                    do { _ = try await approvals.execute(second.id, officer: officer, waitingPeriod: .zero); return nil } catch { return error }
                }
            }
            var all = [(any Error)?]()
            for await outcome in group { all.append(outcome) }
            return all
        }
        #expect(outcomes.filter { $0 == nil }.count == 1)
        let refusals = outcomes.compactMap { $0 as? DestructionApprovalError }
        #expect(refusals == [.alreadyExecuted(second.id)] || refusals == [.inProgress(second.id)])
        await harness.shutdown()
    }

    /// helper-53: two executions of *different* requests at once (the sweep and an officer) on a
    /// pool of two connections each held one and waited for a second, until the operation
    /// timeout. Executions now wait for their turn (one at a time per instance) before taking a
    /// connection.
    @Test("Two destructions carried out at once on a pool of two connections both finish: the second waits for its turn holding no connection")
    func twoExecutionsOnTwoConnections() async throws {
        let harness = try await CustodyHarness.make("exectwo")
        // 30 s: the first execution's hook may wait up to 10 s for the second (one CI run at
        // suite start-up outlived a 10 s timeout); the code before this fix waited until it.
        let small = try harness.secondServiceDatabase(maximumConnections: 2, operationTimeout: .seconds(30))
        // Another instance on the same schema and token, with a pool of two.
        let audit = AuditLog(pool: harness.pool, database: small, rootKeys: harness.keyring.rootKeys, anchorPath: nil)
        let keyring = TenantKeyring(pool: harness.pool, database: small, rootKeys: harness.keyring.rootKeys, audit: audit, logger: harness.logs.logger)
        let startSecond = Mutex<(@Sendable () -> Void)?>(nil)
        let secondHoldsItsRow = Mutex(false)
        let approvals = KeyDestructionApprovals(
            database: small, keyring: keyring, audit: audit,
            executionHook: { _ in
                guard let start = startSecond.withLock({ body in defer { body = nil }; return body }) else {
                    secondHoldsItsRow.withLock { $0 = true }
                    return
                }
                start()
                // Go on once the second waits for its turn, or (the code before) holds its row and
                // a connection.
                for _ in 0..<400 where Database.nestingTurns.waiters(ObjectIdentifier(small)) == 0 && !secondHoldsItsRow.withLock({ $0 }) {
                    try await Task.sleep(for: .milliseconds(25))
                }
            }
        )
        var requests = [KeyDestructionApprovals.Request]()
        for label in ["acme", "globex"] {
            let tenant = try await harness.keyring.createTenant(label: label, actor: "alice").id
            try await harness.keyring.rotate(tenant, .data, actor: "alice")
            let request = try await approvals.request(tenant, .data, version: 1, officer: "alice")
            requests.append(try await approvals.approve(request.id, officer: "bob", certificateSerial: "b0b"))
        }
        let second = Mutex<Task<KeyDestructionApprovals.Request, any Error>?>(nil)
        let secondID = requests[1].id
        startSecond.withLock {
            // Detached: a call of its own (an officer's beside the sweep), not one the first
            // execution's body started and waits for.
            $0 = { second.withLock { $0 = Task.detached { try await approvals.execute(secondID, officer: "carol", waitingPeriod: .zero) } } }
        }
        #expect(try await approvals.execute(requests[0].id, officer: "alice", waitingPeriod: .zero).executedAt != nil)
        let secondTask = try #require(second.withLock { $0 })
        #expect(try await secondTask.value.executedAt != nil)
        for request in requests {
            #expect(try await harness.keyring.versions(request.tenant).first { $0.purpose == .data && $0.version == 1 }?.state == .destroyed)
        }
        await small.shutdown()
        await harness.shutdown()
    }

    /// helper-51 H3: an execution holds the request row while the keyring takes a second
    /// connection of the same pool. A second execution (the sweep and an officer at once) that
    /// waited for the row on a connection of its own left, with a pool of two, each waiting for
    /// the other until the operation timeout. Calls that need the row now get an answer at once.
    @Test("While one execution holds the request, a second execution or a cancellation is answered at once, not made to wait")
    func callsMeetingAnExecutionDoNotWait() async throws {
        let harness = try await CustodyHarness.make("execnowait")
        let others = Mutex<(@Sendable (UUID) async -> [DestructionApprovalError?])?>(nil)
        let seen = Mutex<[DestructionApprovalError?]?>(nil)
        let approvals = KeyDestructionApprovals(
            database: harness.service, keyring: harness.keyring, audit: harness.audit,
            executionHook: { id in
                // Only the first execution asks (the others are refused before this hook).
                guard let ask = others.withLock({ body in defer { body = nil }; return body }) else { return }
                let answers = await ask(id)
                seen.withLock { $0 = answers }
            }
        )
        // The second execution comes from another instance (its own pool): one instance carries
        // out one destruction at a time, and would make it wait its turn instead.
        let otherInstance = try harness.secondServiceDatabase()
        let otherApprovals = KeyDestructionApprovals(database: otherInstance, keyring: harness.keyring, audit: harness.audit)
        others.withLock {
            $0 = { id in
                var answers = [DestructionApprovalError?]()
                for call in [
                    { _ = try await otherApprovals.execute(id, officer: "carol", waitingPeriod: .zero) },
                    { _ = try await approvals.cancel(id, officer: "carol") },
                ] as [@Sendable () async throws -> Void] {
                    do { try await call(); answers.append(nil) } catch { answers.append(error as? DestructionApprovalError) }
                }
                return answers
            }
        }
        let tenant = try await Self.retiredVersion(harness)
        let request = try await approvals.request(tenant, .data, version: 1, officer: "alice")
        _ = try await approvals.approve(request.id, officer: "bob", certificateSerial: "b0b")
        #expect(try await approvals.execute(request.id, officer: "alice", waitingPeriod: .zero).executedAt != nil)
        #expect(seen.withLock { $0 } == [.inProgress(request.id), .inProgress(request.id)])
        #expect(try await Self.state(harness, tenant) == .destroyed)
        #expect(try await approvals.get(request.id).cancelledAt == nil)
        await otherInstance.shutdown()
        await harness.shutdown()
    }
}

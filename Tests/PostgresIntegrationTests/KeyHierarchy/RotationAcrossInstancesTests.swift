@testable import Custody
import CustosModel
import Foundation
import GRPCCore
import HSMTestSupport
import RPC
import SecureMemory
import Storage
import Testing

/// Rotations seen from two instances over one schema and token (attack review, session 19):
/// the other instance learns of a rotation by its notice, not when its cache expires; start-up
/// reconciliation on one instance completes another's rotation as that rotation asked (its
/// overlap), never activates a webhook secret nobody was shown, and two reconciliations side by
/// side both finish.
@Suite("Rotations across instances: notices, reconciliation beside a rotation, two reconciliations", .serialized)
struct RotationAcrossInstancesTests {
    /// A second keyring on the harness's schema and token with its own database client, as
    /// another instance has, keeping versions for a minute unless told.
    static func otherInstance(_ harness: CustodyHarness) throws -> (keyring: TenantKeyring, database: Database) {
        let database = try harness.secondServiceDatabase()
        let keyring = TenantKeyring(
            pool: harness.pool, database: database, rootKeys: harness.keyring.rootKeys, audit: harness.audit,
            logger: harness.logs.logger, activeCacheTTL: .seconds(60)
        )
        return (keyring, database)
    }

    /// The outcome of every `key.reconcile` entry: "completed" or "rolled back".
    static func reconcileOutcomes(_ harness: CustodyHarness) async throws -> [String] {
        try await harness.audit.tail(limit: 200).filter { $0.action == AuditAction.keyReconcile.rawValue }.map {
            $0.details.contains("rolled back") ? "rolled back" : "completed"
        }
    }

    @Test("a rotation on one instance reaches the other's cached versions by its notice, well inside the other's cache lifetime")
    func rotationNoticed() async throws {
        let harness = try await CustodyHarness.make("rotnotice")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        let (other, database) = try Self.otherInstance(harness)
        let listener = Task { await other.runKeyStateListener() }
        let listening = ContinuousClock.now + .seconds(20)
        while !other.isListeningForKeyStates, ContinuousClock.now < listening { try await Task.sleep(for: .milliseconds(20)) }
        #expect(other.isListeningForKeyStates)
        #expect(try await other.key(tenant, .data).version == 1)  // cached for a minute from here, unless told

        let rotated = try await harness.keyring.rotate(tenant, .data, actor: "alice")
        #expect(try await DisabledKeyTests.eventually(within: .seconds(10)) {
            try await other.key(tenant, .data).version == rotated.version
        }, "the other instance seals with the retired v1 until its cache expires")
        listener.cancel()
        await listener.value
        await database.shutdown()
        await harness.shutdown()
    }

    @Test("reconciliation on another instance completes a rotation in progress with the overlap it asked for; the rotation then succeeds")
    func reconciliationBesideRotation() async throws {
        let harness = try await CustodyHarness.make("rotbeside")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        let (other, database) = try Self.otherInstance(harness)
        // Instance A's first step (pending version stored and listed), asking for a day's overlap ...
        let until = Date.wholeSecondsNow.addingTimeInterval(86_400)
        let pending = try await harness.keyring.storeNextPending(tenant, .pii, retiringUntil: until)
        // ... while instance B starts and reconciles ...
        #expect(try await other.reconcile() == [.completed(tenant, .pii, version: pending.version)])
        let old = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .pii && $0.version == 1 })
        #expect(old.state == .retiring && old.retiringUntil == until, "v1 is \(old.state) until \(String(describing: old.retiringUntil)); a day's overlap was asked")
        // ... then A's second step: the rotation it asked for happened, so A reports it.
        let entry = harness.keyring.rotationEntry(pending, retiringUntil: until, overlapSeconds: 86_400, actor: "alice")
        let activated = try await harness.keyring.completeOrRollBack(pending, entry: entry) {
            try await harness.keyring.complete(pending, retiringUntil: until, entry: entry)
        }
        #expect(activated.version == pending.version && activated.state == .active && activated.retiringUntil == nil)
        #expect(try await harness.keyring.versions(tenant).filter { $0.purpose == .pii && $0.state == .active }.map(\.version) == [pending.version])
        #expect(try await Self.reconcileOutcomes(harness) == ["completed"])
        // The officer's rotation is on record under the officer's name, marked as completed
        // by reconciliation (the log named only `custos` before).
        let rotations = try await harness.audit.tail(limit: 50).filter { $0.action == AuditAction.keyRotate.rawValue && $0.target == "pii/v\(pending.version)" }
        #expect(rotations.count == 1 && rotations.first?.actor == "alice" && rotations.first?.details.contains("reconciliation") == true)
        await database.shutdown()
        await harness.shutdown()
    }

    @Test("a v1 webhook secret whose call failed before it was shown is rolled back, never activated: the tenant's secret keeps signing")
    func unshownWebhookSecretRolledBack() async throws {
        let harness = try await CustodyHarness.make("rotwebhook")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        _ = try await harness.webhooks.createSecret(tenant: tenant, actor: "alice")
        // What createSecret stores before completing, for a call that then failed or died.
        let secret = try await harness.pool.randomSecret(count: 32)
        let record = try await harness.keyring.makeVersion(
            tenant, .webhook, version: 2, state: .pending, replacedUntil: Date.wholeSecondsNow.addingTimeInterval(86_400), importing: secret
        )
        try await harness.keyring.storePending(record)

        #expect(try await harness.keyring.reconcile() == [.rolledBack(tenant, .webhook, version: 2)])
        let webhook = try await harness.keyring.versions(tenant).filter { $0.purpose == .webhook }
        #expect(webhook.map(\.version) == [1] && webhook.first?.state == .active, "the secret the tenant holds is \(webhook.map { "v\($0.version) \($0.state)" })")
        // And a new secret can be asked for at once.
        let (version, _) = try await harness.webhooks.createSecret(tenant: tenant, actor: "alice")
        #expect(version >= 2)
        await harness.shutdown()
    }

    @Test("two instances reconciling the same interrupted rotations side by side both finish; each rotation completed once, none recorded as rolled back")
    func twoReconciliations() async throws {
        let harness = try await CustodyHarness.make("rottwo")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        let (other, database) = try Self.otherInstance(harness)
        let purposes: [KeyPurpose] = [.data, .pii, .apiKeyPepper]
        for purpose in purposes { _ = try await harness.keyring.storeNextPending(tenant, purpose, retiringUntil: nil) }

        async let first = harness.keyring.reconcile()
        async let second = other.reconcile()
        let (a, b) = try await (first, second)
        let completed = (a + b).filter { if case .completed = $0 { true } else { false } }
        #expect(completed.count == purposes.count, "each interrupted rotation completed once: \(a) and \(b)")
        #expect(try await Self.reconcileOutcomes(harness) == Array(repeating: "completed", count: purposes.count))
        for purpose in purposes {
            #expect(try await harness.keyring.versions(tenant).filter { $0.purpose == purpose && $0.state == .active }.map(\.version) == [2])
        }
        await database.shutdown()
        await harness.shutdown()
    }

    @Test("a listing whose rotation completed elsewhere is cleared without a 'rolled back' entry")
    func listingOfCompletedRotation() async throws {
        let harness = try await CustodyHarness.make("rotlisted")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        let rotated = try await harness.keyring.rotate(tenant, .data, actor: "alice")
        // Read before the rotation's commit, by a reconciliation that acts after it: as the
        // listing the slower of two reconciliations finds.
        try await harness.ownerSQL(tenant: nil, """
            INSERT INTO pending_rotations (tenant_id, purpose, version) VALUES (\(tenant.rawValue)::uuid, 'data', \(rotated.version))
            """)
        #expect(try await harness.keyring.reconcile().isEmpty)
        #expect(try await Self.reconcileOutcomes(harness).isEmpty, "a rotation that happened is not recorded as rolled back")
        #expect(try await harness.keyring.versions(tenant).first { $0.purpose == .data && $0.version == rotated.version }?.state == .active)
        // The listing is gone: a new rotation is not refused by it.
        _ = try await harness.keyring.rotate(tenant, .data, actor: "alice")
        await harness.shutdown()
    }
}

/// helper-68's attack on the fixes above: version numbers are taken again once a pending row is
/// gone, and a row read by reconciliation can change before it acts.
extension RotationAcrossInstancesTests {
    @Test("a failed rotation whose version number another rotation took meanwhile neither reports that rotation's key as its own nor deletes it")
    func giveBackKeepsToItsOwnKey() async throws {
        let harness = try await CustodyHarness.make("rotreuse")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        // A's first step; then its row and listing vanish (a database writer, or another
        // instance's reconciliation rolling it back) and C rotates under the same number.
        let pendingA = try await harness.keyring.storeNextPending(tenant, .data, retiringUntil: nil)
        try await harness.ownerSQL(tenant: tenant, "DELETE FROM key_versions WHERE purpose = 'data' AND state = 'pending'")
        try await harness.ownerSQL(tenant: nil, "DELETE FROM pending_rotations WHERE purpose = 'data'")
        let rotatedC = try await harness.keyring.rotate(tenant, .data, actor: "bob")
        #expect(rotatedC.version == pendingA.version, "C took A's version number (the case under test)")
        // A's second step fails; its give-back must not take C's key for A's.
        await #expect(throws: (any Error).self) {
            let entry = harness.keyring.rotationEntry(pendingA, retiringUntil: nil, overlapSeconds: nil, actor: "alice")
            _ = try await harness.keyring.completeOrRollBack(pendingA, entry: entry) {
                try await harness.keyring.complete(pendingA, retiringUntil: nil, entry: entry)
            }
        }
        let active = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .data && $0.state == .active })
        #expect(active.version == rotatedC.version && active.checkValue == rotatedC.checkValue, "C's key stays active")
        await harness.shutdown()
    }

    @Test("a rollback decided on a pending row that its rotation completed meanwhile does nothing and records nothing")
    func rollBackOfChangedRow() async throws {
        let harness = try await CustodyHarness.make("rotstale")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        let pending = try await harness.keyring.storeNextPending(tenant, .pii, retiringUntil: nil)
        // Read by a reconciliation (as pending) ...
        let read = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .pii && $0.version == pending.version })
        #expect(read.state == .pending)
        // ... then completed by its own rotation before the reconciliation acts.
        _ = try await harness.keyring.complete(pending, retiringUntil: nil, overlapSeconds: nil, actor: "alice")
        #expect(try await !harness.keyring.rollBackRotation(tenant, .pii, version: pending.version, read: read))
        #expect(try await Self.reconcileOutcomes(harness).isEmpty, "no 'rolled back' entry for a rotation that completed")
        #expect(try await harness.keyring.versions(tenant).first { $0.purpose == .pii && $0.state == .active }?.version == pending.version)
        await harness.shutdown()
    }

    @Test("ListKeys shows a pending row without the overlap it carries for the version it replaces (it is not the row's own)")
    func pendingRowListedWithoutOverlap() async throws {
        try await RPCHarness.with("rotlist") { rpc in
            let tenant = try await rpc.withClient(.alice) { client in
                try await Custos_V1_Admin.Client(wrapping: client).createTenant(.with { $0.label = "acme" }).tenant.tenantID
            }
            let id = try #require(TenantID(tenant))
            let pending = try await rpc.custody.keyring.storeNextPending(id, .data, retiringUntil: Date.wholeSecondsNow.addingTimeInterval(86_400))
            try await rpc.withClient(.alice) { client in
                let keys = try await Custos_V1_Admin.Client(wrapping: client).listKeys(.with { $0.tenantID = tenant }).keys
                let listed = try #require(keys.first { $0.purpose == .data && $0.version == UInt32(pending.version) })
                #expect(listed.state == .pending && !listed.hasRetiringUntil, "a pending version listed as retiring until \(listed.retiringUntil)")
            }
        }
    }

    @Test("a rollback decided on no row leaves alone a version number given back and taken again since, and its listing (helper-69)")
    func rollBackOfReusedNumber() async throws {
        let harness = try await CustodyHarness.make("rotreused")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        let first = try await harness.keyring.storeNextPending(tenant, .pii, retiringUntil: nil)
        // A reconciliation lists v2 and reads no row: the rotation gave it back meanwhile ...
        #expect(try await harness.keyring.giveBack(first))
        // ... and a retry took the number again before the reconciliation acts.
        let second = try await harness.keyring.storeNextPending(tenant, .pii, retiringUntil: nil)
        #expect(second.version == first.version)
        #expect(try await !harness.keyring.rollBackRotation(tenant, .pii, version: second.version, read: nil))
        let listed = try await harness.service.withTransaction(context: "read listings") { try await KeyVersionStore.pendingRotations(on: $0) }
        #expect(listed.contains { $0.tenant == tenant && $0.purpose == .pii && $0.version == second.version }, "the retry's listing stays, so a crash of it is reconciled")
        #expect(try await Self.reconcileOutcomes(harness).isEmpty)
        await harness.shutdown()
    }

    @Test("a rotation whose own commit went through but whose answer was lost reports success with one entry, not a second one credited to reconciliation (helper-70)")
    func lostAnswerOneEntry() async throws {
        struct LostAnswer: Error {}
        let harness = try await CustodyHarness.make("rotlost")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        let pending = try await harness.keyring.storeNextPending(tenant, .data, retiringUntil: nil)
        let entry = harness.keyring.rotationEntry(pending, retiringUntil: nil, overlapSeconds: nil, actor: "alice")
        let activated = try await harness.keyring.completeOrRollBack(pending, entry: entry) {
            _ = try await harness.keyring.complete(pending, retiringUntil: nil, entry: entry)
            throw LostAnswer()
        }
        #expect(activated.version == pending.version && activated.state == .active)
        let rotations = try await harness.audit.tail(limit: 50).filter { $0.action == AuditAction.keyRotate.rawValue && $0.target == "data/v\(pending.version)" }
        #expect(rotations.count == 1 && rotations.first?.details.contains("reconciliation") == false, "\(rotations.map(\.details))")
        await harness.shutdown()
    }

    @Test("two rotations of one purpose that read the same newest version: the one that stores second is told to try again (ABORTED), not that the version exists")
    func rotationsReadingTheSameVersion() async throws {
        let harness = try await CustodyHarness.make("rotsame")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        // The other rotation's row, stored and not committed yet: this rotation reads version 1
        // as the newest, makes version 2 and waits on the other's row to insert its own.
        let rotation = try await harness.racingAnotherInstancesVersion(tenant, .pii, version: 2, copying: 1) {
            try await harness.keyring.rotate(tenant, .pii, actor: "alice")
        }
        await #expect {
            try await rotation.value
        } throws: { error in
            guard case CustodyError.changedConcurrently(tenant, .pii, 2) = error else { return false }
            return true
        }
        await harness.shutdown()
    }

    @Test("a rotation its caller cancels after storing its pending version gives it back: the next rotation succeeds (helper-92: every later one answered ABORTED)")
    func cancelledRotationGivenBack() async throws {
        let cancelling = CrashSwitch()
        let harness = try await CustodyHarness.make("rotcancel", keyringStepHook: { step in
            if cancelling.armed, step == .pendingStored { withUnsafeCurrentTask { $0?.cancel() } }
        })
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        cancelling.armed = true
        let cancelled = Task { try await harness.keyring.rotate(tenant, .pii, actor: "alice") }
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        cancelling.armed = false
        let next = try await harness.keyring.rotate(tenant, .pii, actor: "alice")
        #expect(next.version == 2 && next.state == .active, "the cancelled rotation's version was not given back")
        await harness.shutdown()
    }

    @Test("a rotation of a purpose whose earlier rotation a crash left pending is FAILED_PRECONDITION naming it, not ABORTED; reconciled, the next succeeds")
    func rotationLeftPending() async throws {
        struct Crash: Error {}
        let crashes = CrashSwitch()
        let harness = try await CustodyHarness.make("rotleft", keyringStepHook: { step in
            if crashes.armed, step == .pendingStored { throw Crash() }
        })
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        crashes.armed = true
        await #expect(throws: Crash.self) { try await harness.keyring.rotate(tenant, .pii, actor: "alice") }
        crashes.armed = false
        await #expect {
            try await harness.keyring.rotate(tenant, .pii, actor: "alice")
        } throws: { error in
            guard case CustodyError.rotationPending(tenant, .pii, 2) = error else { return false }
            return true
        }
        #expect(try await harness.keyring.reconcile() == [.completed(tenant, .pii, version: 2)])
        #expect(try await harness.keyring.rotate(tenant, .pii, actor: "alice").version == 3)
        await harness.shutdown()
    }
}

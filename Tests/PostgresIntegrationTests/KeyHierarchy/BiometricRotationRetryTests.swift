@testable import Custody
import CustosModel
import Foundation
import Storage
import Testing

/// A biometric rotation that fails without a crash (helper-68, session 19): its pending
/// versions must not make every later rotation fail until a restart reconciles them.
@Suite("Biometric rotation asked again after a failure")
struct BiometricRotationRetryTests {
    struct Failure: Error {}

    static func activeVersions(_ harness: CustodyHarness, _ tenant: TenantID) async throws -> [KeyPurpose: Int] {
        var active = [KeyPurpose: Int]()
        for record in try await harness.keyring.versions(tenant) where record.state == .active { active[record.purpose] = record.version }
        return active
    }

    @Test("failed after the seed's activation, before the PRF's: asked again, the PRF's pending version is completed and the pair is level")
    func failedBetweenActivations() async throws {
        let failures = CrashSwitch()
        let harness = try await CustodyHarness.make("bioretry", keyringStepHook: { step in
            if failures.armed, step == .completed(.bioSeed) { throw Failure() }
        })
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        failures.armed = true
        await #expect(throws: Failure.self) { _ = try await harness.keyring.rotateBiometric(tenant, overlap: .seconds(3600), actor: "alice") }
        failures.armed = false
        var active = try await Self.activeVersions(harness, tenant)
        #expect(active[.bioSeed] == 2 && active[.bioPRF] == 1, "the failure came between the two activations")

        #expect(try await harness.keyring.rotateBiometric(tenant, overlap: .seconds(3600), actor: "alice") == 2)
        active = try await Self.activeVersions(harness, tenant)
        #expect(active[.bioSeed] == 2 && active[.bioPRF] == 2)
        #expect(try await harness.keyring.reconcile().isEmpty, "nothing left for a restart")
        await harness.shutdown()
    }

    @Test("failed before either activation: asked again, both pending versions are completed")
    func failedBeforeActivations() async throws {
        let failures = CrashSwitch()
        let harness = try await CustodyHarness.make("bioretry2", keyringStepHook: { step in
            if failures.armed, step == .pendingStored { throw Failure() }
        })
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        failures.armed = true
        await #expect(throws: Failure.self) { _ = try await harness.keyring.rotateBiometric(tenant, overlap: .seconds(3600), actor: "alice") }
        failures.armed = false
        #expect(try await harness.keyring.rotateBiometric(tenant, overlap: .seconds(3600), actor: "alice") == 2)
        let active = try await Self.activeVersions(harness, tenant)
        #expect(active[.bioSeed] == 2 && active[.bioPRF] == 2)
        #expect(try await harness.keyring.versions(tenant).filter { $0.state == .pending }.isEmpty)
        await harness.shutdown()
    }

    @Test("failed between activations, then a retry that cannot make keys: the PRF's pending version keeps its listing, and reconciliation levels the pair (helper-70)")
    func retryThatCannotMakeKeys() async throws {
        let failures = CrashSwitch()
        let harness = try await CustodyHarness.make("bioretry3", keyringStepHook: { step in
            if failures.armed, step == .completed(.bioSeed) { throw Failure() }
        })
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        try await RootKeyCheck.verify(pool: harness.pool, database: harness.service, logger: harness.logs.logger)
        failures.armed = true
        await #expect(throws: Failure.self) { _ = try await harness.keyring.rotateBiometric(tenant, overlap: .seconds(3600), actor: "alice") }
        failures.armed = false
        // New keys cannot be made now: the owner recorded a root KEK set this token lacks.
        try await harness.owner.withTransaction(context: "owner") { connection in
            for purpose in RootKeys.wrappedPurposes {
                try await RootKeyStore.record(label: RootKeys.kekLabel(purpose, version: 9), checkValue: [1, 2, 3], on: connection)
            }
        }
        _ = try? await harness.keyring.rotateBiometric(tenant, overlap: .seconds(3600), actor: "alice")
        try await harness.ownerSQL(tenant: nil, "DELETE FROM root_keys WHERE label LIKE '%/v9'")
        _ = try await harness.keyring.reconcile()
        let active = try await Self.activeVersions(harness, tenant)
        #expect(active[.bioSeed] == active[.bioPRF], "an uneven pair, seed v\(active[.bioSeed] ?? 0) with prf v\(active[.bioPRF] ?? 0), that nothing levels")
        await harness.shutdown()
    }
}


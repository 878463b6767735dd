import Crypto
import Custody
import CustosModel
import Foundation
import HSM
import PKCS11
import PostgresNIO
import Storage
import Synchronization
import Testing

@Suite("Key hierarchy: tenant keys, rotation, reconciliation, row binding, destruction")
struct KeyHierarchyTests {
    @Test("A new tenant gets one active version of each key, with a KCV, usable through the pool")
    func tenantKeys() async throws {
        let harness = try await CustodyHarness.make("keys")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        let versions = try await harness.keyring.versions(tenant.id)
        #expect(Set(versions.map(\.purpose)) == Set(KeyPurpose.createdWithTenant))
        for version in versions {
            #expect(version.state == .active && version.version == 1)
            #expect(version.checkValue.count == 3)
            #expect((version.wrappedKey?.count ?? 0) == 40, "32-byte key wrapped with padding")
        }
        let (pii, _) = try await harness.keyring.key(tenant.id, .pii)
        let first = try await harness.pool.hmacSHA256(key: pii, data: Array("external-id-1".utf8))
        #expect(try await harness.pool.hmacSHA256(key: pii, data: Array("external-id-1".utf8)) == first)
        // bio-prf encrypts only.
        let (prf, _) = try await harness.keyring.key(tenant.id, .bioPRF)
        #expect(try await harness.pool.encryptBlocksECB(key: prf, blocks: [UInt8](repeating: 1, count: 32)).count == 32)
        // Two tenants never share key material.
        let other = try await harness.keyring.createTenant(label: "globex", actor: "officer")
        let (otherPII, _) = try await harness.keyring.key(other.id, .pii)
        #expect(try await harness.pool.hmacSHA256(key: otherPII, data: Array("external-id-1".utf8)) != first)
        await harness.shutdown()
    }

    @Test("Rotation: one active version, old values still verifiable under their recorded version")
    func rotation() async throws {
        let harness = try await CustodyHarness.make("rotate")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        let message = Array("subject-42".utf8)
        let (v1, v1Number) = try await harness.keyring.key(tenant.id, .pii)
        let old = try await harness.pool.hmacSHA256(key: v1, data: message)
        let rotated = try await harness.keyring.rotate(tenant.id, .pii, actor: "officer")
        #expect(rotated.version == 2 && rotated.state == .active)
        let versions = try await harness.keyring.versions(tenant.id).filter { $0.purpose == .pii }
        #expect(versions.filter { $0.state == .active }.map(\.version) == [2])
        #expect(versions.first { $0.version == 1 }?.state == .retired)
        let (v2, v2Number) = try await harness.keyring.key(tenant.id, .pii)
        #expect(v2Number == 2 && v1Number == 1)
        #expect(try await harness.pool.hmacSHA256(key: v2, data: message) != old)
        let (again, _) = try await harness.keyring.key(tenant.id, .pii, version: 1)
        #expect(try await harness.pool.hmacSHA256(key: again, data: message) == old)
        // A value sealed under the old data key still opens after the data key rotates.
        let (data1, dataVersion) = try await harness.keyring.key(tenant.id, .data)
        let sealed = try await harness.pool.sealAESGCM(key: data1, plaintext: Array("ada@example.org".utf8))
        try await harness.keyring.rotate(tenant.id, .data, actor: "officer")
        let (stillData1, _) = try await harness.keyring.key(tenant.id, .data, version: dataVersion)
        #expect(try await harness.pool.openAESGCM(key: stillData1, box: sealed) == Array("ada@example.org".utf8))
        await harness.shutdown()
    }

    @Test("bio-seed and bio-prf rotate together, and an interrupted pair is brought back in step")
    func biometricRotation() async throws {
        let harness = try await CustodyHarness.make("biorotate")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        #expect(try await harness.keyring.rotateBiometric(tenant.id, actor: "officer") == 2)
        // As if a previous call stopped after the seed: only bio-seed moves to v3.
        try await harness.keyring.rotate(tenant.id, .bioSeed, actor: "officer")
        #expect(try await harness.keyring.rotateBiometric(tenant.id, actor: "officer") == 3)
        let active = try await harness.keyring.versions(tenant.id).filter { $0.state == .active && ($0.purpose == .bioSeed || $0.purpose == .bioPRF) }
        #expect(active.map(\.version) == [3, 3])
        await harness.shutdown()
    }

    @Test("A crash between the two rotation steps is completed at the next start: exactly one active version, no lost key")
    func crashBetweenSteps() async throws {
        struct Crash: Error {}
        let crashes = CrashSwitch()
        let harness = try await CustodyHarness.make("crash", keyringStepHook: { step in
            if crashes.armed, step == .pendingStored { throw Crash() }
        })
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        crashes.armed = true
        await #expect(throws: Crash.self) { try await harness.keyring.rotate(tenant.id, .data, actor: "officer") }
        crashes.armed = false
        var versions = try await harness.keyring.versions(tenant.id).filter { $0.purpose == .data }
        #expect(versions.map(\.state).sorted { $0.rawValue < $1.rawValue } == [.active, .pending])

        // "Restart": a fresh keyring on the same database and token reconciles.
        let restarted = TenantKeyring(pool: harness.pool, database: harness.service, audit: harness.audit, logger: harness.logs.logger)
        let actions = try await restarted.reconcile()
        #expect(actions == [.completed(tenant.id, .data, version: 2)])
        versions = try await harness.keyring.versions(tenant.id).filter { $0.purpose == .data }
        #expect(versions.filter { $0.state == .active }.map(\.version) == [2])
        #expect(versions.first { $0.version == 1 }?.state == .retired)
        // Both versions' material is intact: v2 seals, v1 still opens what it sealed.
        let (v2, _) = try await harness.keyring.key(tenant.id, .data)
        let box = try await harness.pool.sealAESGCM(key: v2, plaintext: [1, 2, 3])
        #expect(try await harness.pool.openAESGCM(key: v2, box: box) == [1, 2, 3])
        #expect(try await harness.keyring.reconcile().isEmpty, "reconciliation is idempotent")
        await harness.shutdown()
    }

    @Test("A pending version whose row fails its MAC is rolled back at reconciliation")
    func rollBackTamperedPending() async throws {
        struct Crash: Error {}
        let harness = try await CustodyHarness.make("rollback", keyringStepHook: { step in
            if step == .pendingStored { throw Crash() }
        })
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        await #expect(throws: Crash.self) { try await harness.keyring.rotate(tenant.id, .pii, actor: "officer") }
        try await harness.ownerSQL(tenant: tenant.id, "UPDATE key_versions SET root_kek_version = 7 WHERE state = 'pending'")
        #expect(try await harness.keyring.reconcile() == [.rolledBack(tenant.id, .pii, version: 2)])
        let versions = try await harness.keyring.versions(tenant.id).filter { $0.purpose == .pii }
        #expect(versions.map(\.version) == [1])
        #expect(versions.first?.state == .active)
        await harness.shutdown()
    }

    @Test("A wrapped blob copied onto another row through SQL is refused at unwrap")
    func blobMovedIsRefused() async throws {
        let harness = try await CustodyHarness.make("swap")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        // Same key type (HMAC), so the HSM itself would unwrap it happily: only the row MAC objects.
        try await harness.ownerSQL(tenant: tenant.id, """
            UPDATE key_versions SET wrapped_key = (SELECT wrapped_key FROM key_versions WHERE purpose = 'pii' AND version = 1)
            WHERE purpose = 'apikey-pepper' AND version = 1
            """)
        do {
            let (pepper, _) = try await harness.keyring.key(tenant.id, .apiKeyPepper)
            _ = try await harness.pool.hmacSHA256(key: pepper, data: [1])
            Issue.record("a moved blob was accepted")
        } catch let error as CustodyError {
            guard case .rowTampered(tenant.id, .apiKeyPepper, 1) = error else { Issue.record("got \(error)"); return }
        }
        // A changed state is caught the same way.
        try await harness.ownerSQL(tenant: tenant.id, "UPDATE key_versions SET state = 'retired' WHERE purpose = 'bio-seed'")
        await #expect(throws: CustodyError.self) {
            let (seed, _) = try await harness.keyring.key(tenant.id, .bioSeed, version: 1)
            _ = try await harness.pool.hmacSHA256(key: seed, data: [1])
        }
        await harness.shutdown()
    }

    @Test("Destroy: refused while active, inside the waiting period, or while API keys need the version; then material gone")
    func destroy() async throws {
        let harness = try await CustodyHarness.make("destroy")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        await #expect(throws: CustodyError.self) {
            try await harness.keyring.destroy(tenant.id, .apiKeyPepper, version: 1, waitingPeriod: .zero, actor: "officer")
        }
        let issued = try await harness.apiKeys.issue(tenant: tenant.id, scopes: ["verify"], actor: "officer")
        try await harness.keyring.rotate(tenant.id, .apiKeyPepper, actor: "officer")
        await #expect(throws: CustodyError.self, "waiting period") {
            try await harness.keyring.destroy(tenant.id, .apiKeyPepper, version: 1, waitingPeriod: .seconds(3600), actor: "officer")
        }
        do {
            try await harness.keyring.destroy(tenant.id, .apiKeyPepper, version: 1, waitingPeriod: .zero, actor: "officer")
            Issue.record("destroyed a pepper version that a live API key still needs")
        } catch let error as CustodyError {
            guard case .stillNeeded = error else { Issue.record("got \(error)"); return }
        }
        // The key verifies once: re-hashed under v2. Now v1 is needed by nothing.
        _ = try await harness.apiKeys.verify(issued.key)
        try await harness.keyring.destroy(tenant.id, .apiKeyPepper, version: 1, waitingPeriod: .zero, actor: "officer")
        let v1 = try await harness.keyring.versions(tenant.id).first { $0.purpose == .apiKeyPepper && $0.version == 1 }
        #expect(v1?.state == .destroyed && v1?.wrappedKey == nil && v1?.checkValue.count == 3)
        await #expect(throws: CustodyError.self) { _ = try await harness.keyring.key(tenant.id, .apiKeyPepper, version: 1) }
        #expect(try await harness.apiKeys.verify(issued.key).tenant == tenant.id)
        await harness.shutdown()
    }
}

final class CrashSwitch: Sendable {
    private let flag = Atomic<Bool>(false)
    var armed: Bool {
        get { flag.load(ordering: .acquiring) }
        set { flag.store(newValue, ordering: .releasing) }
    }
}

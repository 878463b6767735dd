import Composition
@testable import Custody
import CustosModel
import Foundation
import HSM
import HSMTestSupport
import PKCS11
import Storage
import Testing

/// A real `kill -9` of `custos serve` while its sweep carries out a due scheduled destruction of
/// a webhook v1a version (an Ed25519 key pair on the token), at each step of it: after the row
/// and audit entry commit, and after the key pair is gone but before the request is marked
/// carried out. The restarted server destroys what is left and records the execution: the
/// version is destroyed once, its key pair is gone, the tenant's other keys work.
@Suite("Key destruction survives kill -9 of the server between its steps", .serialized)
struct DestructionKillTests {
    /// Sets `version`'s retirement `days` back, sealed with the row MAC as custody seals it (the
    /// test holds the token): the served 7-day rest since retirement is over without any knob.
    static func backdateRetirement(_ harness: CustodyHarness, _ tenant: TenantID, _ purpose: KeyPurpose, version: Int, days: Double) async throws {
        var row = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == purpose && $0.version == version })
        let expectedMAC = row.rowMAC
        row.retiredAt = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 - days * 86_400).rounded(.down))
        let sealed = try await harness.keyring.authenticator.sealed(row, pool: harness.pool)
        let updated = try await harness.service.withTenant(tenant, context: "backdate retirement") { connection in
            try await KeyVersionStore.update(sealed, expectedMAC: expectedMAC, on: connection)
        }
        try #require(updated)
    }

    static func pendingTokenDestructions(_ harness: CustodyHarness) async throws -> [PendingTokenDestructionStore.Entry] {
        try await harness.service.withTransaction(context: "list pending token destructions") { connection in
            try await PendingTokenDestructionStore.all(on: connection)
        }
    }

    @Test("the serve sweep killed after the HSM lists the destruction, after it commits, or after the key pair is gone: the restarted server finishes it once", arguments: [
        "destruction.anchored", "destruction.recorded", "destruction.tokenObjectsDestroyed",
    ])
    func scheduledDestructionKilled(step: String) async throws {
        let harness = try await CustodyHarness.make("destroykill")
        let keyring = harness.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await harness.webhooks.createEd25519Key(tenant: tenant, actor: "officer")
        _ = try await harness.webhooks.createEd25519Key(tenant: tenant, overlap: .zero, actor: "officer")  // v1 retired
        let label = try #require(try await keyring.versions(tenant).first { $0.purpose == .webhookEd25519 && $0.version == 1 }?.tokenLabel)
        func objects() async throws -> Int {
            try await harness.pool.withPersistentSession { session in try session.findObjects([.label(label)], limit: 4).count }
        }
        #expect(try await objects() == 2, "the key pair is on the token")
        try await Self.backdateRetirement(harness, tenant, .webhookEd25519, version: 1, days: 8)
        // Requested and approved eight days ago with a 7-day wait: due since yesterday.
        let past = KeyDestructionApprovals(
            database: harness.service, keyring: keyring, audit: harness.audit, now: { Date().addingTimeInterval(-8 * 86_400) }
        )
        let request = try await past.request(tenant, .webhookEd25519, version: 1, officer: "alice", waitingDays: 7)
        _ = try await past.approve(request.id, officer: "bob", certificateSerial: "b0b")

        let directory = try ChildCustos.directory(harness)
        let config = try ChildCustos.writeConfiguration(harness, in: directory)
        let (killed, _) = try await ChildCustos.serve(config: config, in: directory, environment: ["CUSTOS_CRASH_AT": step])
        try await ChildCustos.waitForExit(killed)
        #expect(ChildCustos.killedItself(killed), "the server's sweep stopped at \(step)")

        let interrupted = try #require(try await keyring.versions(tenant).first { $0.purpose == .webhookEd25519 && $0.version == 1 })
        #expect(try await past.get(request.id).executedAt == nil, "the request was not yet marked carried out")
        let pending = try await Self.pendingTokenDestructions(harness).map(\.label)
        let left = try await objects()
        keyring.invalidate(prefix: "")
        #expect(try await keyring.anchoredStates().destroyed.contains(.init(tenant: tenant, purpose: .webhookEd25519, version: 1)),
                "the HSM listed the version as destroyed before the kill")
        switch step {
        case "destruction.anchored":
            #expect(interrupted.state == .retired && interrupted.tokenLabel == label, "the kill came before the commit")
            #expect(pending.isEmpty && left == 2, "the key pair is still on the token, named by its row")
        case "destruction.recorded":
            #expect(interrupted.state == .destroyed && interrupted.tokenLabel == nil, "the destruction committed before the kill")
            #expect(pending == [label] && left == 2, "the key pair is listed and still on the token")
        default:
            #expect(interrupted.state == .destroyed && interrupted.tokenLabel == nil, "the destruction committed before the kill")
            #expect(pending.isEmpty && left == 0, "the key pair is gone and off the list")
        }

        // Restart: start-up reconciliation and the sweep finish what the kill left.
        let (restarted, address) = try await ChildCustos.serve(config: config, in: directory)
        #expect(address != nil, "the restarted server listens")
        // Bounded generously: on a loaded machine the restarted server takes a while to reach its sweep.
        for _ in 0..<1200 {
            let executed = try await past.get(request.id).executedAt != nil
            if executed, try await Self.pendingTokenDestructions(harness).isEmpty { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        restarted.terminate()
        try await ChildCustos.waitForExit(restarted)

        #expect(try await past.get(request.id).executedAt != nil, "the execution is recorded")
        #expect(try await Self.pendingTokenDestructions(harness).isEmpty)
        #expect(try await objects() == 0, "the key pair is gone from the token")
        keyring.invalidate(prefix: "")
        #expect(try await keyring.anchoredStates().destroyed.contains(.init(tenant: tenant, purpose: .webhookEd25519, version: 1)),
                "the HSM lists the version as destroyed (a replayed row cannot bring it back)")
        let versions = try await keyring.versions(tenant)
        let destroyed = try #require(versions.first { $0.purpose == .webhookEd25519 && $0.version == 1 })
        #expect(destroyed.state == .destroyed && destroyed.wrappedKey == nil && destroyed.tokenLabel == nil)
        let entries = try await harness.audit.tail(limit: 200).filter { $0.action == AuditAction.keyDestroy.rawValue }
        #expect(entries.map(\.target) == ["webhook-ed25519/v1"], "destroyed once, recorded once")
        for purpose in Set(versions.map(\.purpose)) {
            #expect(versions.filter { $0.purpose == purpose && $0.state == .active }.count == 1, "\(purpose.rawValue): one active version")
        }
        // The tenant's other keys still work: v2 signs, the other purposes compute.
        _ = try await harness.webhooks.signatureHeader(tenant: tenant, id: "msg_1", timestamp: 1, body: [1])
        _ = try await harness.pool.hmacSHA256(key: try await keyring.key(tenant, .pii).key, data: [1, 2, 3])
        await harness.shutdown()
    }
}

@testable import Custody
import CustosModel
import Foundation
import HSM
import Storage
import Testing

/// Attacks on the HSM's list of key states by a database writer (the service role's grants
/// suffice for each): a destruction on the list is for good, so nothing the database alone says
/// may put one there, and nothing the database alone says may take one off.
@Suite("Destruction anchor attacks")
struct DestructionAnchorAttackTests {
    typealias Entry = KeyStateAnchor.Entry

    func freshKeyring(_ harness: CustodyHarness) -> TenantKeyring {
        TenantKeyring(pool: harness.pool, database: harness.service, audit: harness.audit, logger: harness.logs.logger)
    }

    func anchored(_ harness: CustodyHarness) async throws -> Set<Entry> {
        guard case .contents(let contents) = try await harness.keyring.keyStateAnchor.read() else { return [] }
        return contents.states.destroyed
    }

    @Test("a rebuild of a missing list believes only MAC-valid destroyed rows")
    func rebuildIgnoresForgedDestroyedRows() async throws {
        let harness = try await CustodyHarness.make("anchorforgedrow")
        let victim = try await harness.keyring.createTenant(label: "victim", actor: "officer").id
        let anchor = harness.keyring.keyStateAnchor
        // A token without the list: restored from custodians' shares, or the first start of this version.
        _ = try await harness.pool.withSession { session in try anchor.object.destroyAll(in: session.pkcs11) }
        // The row says destroyed; its MAC says otherwise (state is under the MAC).
        try await harness.ownerSQL(tenant: victim, "UPDATE key_versions SET state = 'destroyed' WHERE purpose = 'data' AND version = 1")
        _ = try? await freshKeyring(harness).reconcile()

        #expect(try await !anchored(harness).contains(Entry(tenant: victim, purpose: .data, version: 1)), "a forged row is not a destruction")
        await harness.shutdown()
    }

    @Test("a crash after the destruction's commit, then the old row replayed before the restart: the key stays dead and reconciliation destroys the row again")
    func crashThenRowReplayed() async throws {
        let harness = try await CustodyHarness.make("anchorcrashreplay", keyringStepHook: { step in
            if step == .destructionRecorded { throw DestructionAnchorTests.InjectedCrash() }
        })
        let (tenant, before) = try await DestructionAnchorTests.destroyedPepper(harness)
        // Before the restart: the database writer puts the backup row back.
        try await DestructionAnchorTests.replay(before, harness)
        #expect(await !DestructionAnchorTests.computes(freshKeyring(harness), tenant, harness), "refused before any reconciliation")
        #expect(try await freshKeyring(harness).reconcile() == [.destructionCompleted(tenant, .apiKeyPepper, version: 1)])
        let row = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .apiKeyPepper && $0.version == 1 })
        #expect(row.state == .destroyed && row.wrappedKey == nil, "the replayed material is gone again")
        #expect(await !DestructionAnchorTests.computes(freshKeyring(harness), tenant, harness))
        await harness.shutdown()
    }
}

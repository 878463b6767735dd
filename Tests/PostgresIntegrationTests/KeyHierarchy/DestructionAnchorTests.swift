@testable import Custody
import CustosModel
import Foundation
import HSM
import PKCS11
import Storage
import Testing

/// A row MAC proves custody wrote a `key_versions` row once, not that it is the newest: a
/// database writer with any backup could put a destroyed version's row back (blob and MAC
/// included) and the key computed again. The HSM's list of destroyed versions
/// (``KeyStateAnchor``) now decides.
@Suite("Destructions anchored in the HSM")
struct DestructionAnchorTests {
    struct InjectedCrash: Error {}

    /// Destroys apikey-pepper v1 of a new tenant with `harness.keyring` and returns the row
    /// as it was before (what a backup holds).
    static func destroyedPepper(_ harness: CustodyHarness) async throws -> (TenantID, KeyVersionRecord) {
        let tenant = try await harness.keyring.createTenant(label: "victim", actor: "officer").id
        try await harness.keyring.rotate(tenant, .apiKeyPepper, actor: "officer")
        let before = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .apiKeyPepper && $0.version == 1 })
        #expect(before.state == .retired && before.wrappedKey != nil)
        do {
            try await harness.keyring.destroy(tenant, .apiKeyPepper, version: 1, waitingPeriod: .zero, actor: "officer")
        } catch is InjectedCrash {}
        return (tenant, before)
    }

    /// Puts `row` back as a database writer with a backup would: the service role may update
    /// these columns.
    static func replay(_ row: KeyVersionRecord, _ harness: CustodyHarness) async throws {
        let blob = Data(try #require(row.wrappedKey)), mac = Data(row.rowMAC)
        try await harness.ownerSQL(tenant: row.tenant, """
            UPDATE key_versions SET state = 'retired', wrapped_key = \(blob), destroyed_at = NULL, row_mac = \(mac)
            WHERE purpose = \(row.purpose.rawValue) AND version = \(row.version)
            """)
    }

    static func computes(_ keyring: TenantKeyring, _ tenant: TenantID, _ harness: CustodyHarness) async -> Bool {
        do {
            let (key, _) = try await keyring.key(tenant, .apiKeyPepper, version: 1)
            _ = try await harness.pool.hmacSHA256(key: key, data: Array("msg".utf8))
            return true
        } catch CustodyError.keyDestroyed {
            return false
        } catch {
            Issue.record("unexpected error: \(error)")
            return true
        }
    }

    func freshKeyring(_ harness: CustodyHarness) -> TenantKeyring {
        TenantKeyring(pool: harness.pool, database: harness.service, audit: harness.audit, logger: harness.logs.logger)
    }

    @Test("a destroyed version's row replayed from a backup is refused, by a new keyring and by the one that destroyed it")
    func replayedRowRefused() async throws {
        let harness = try await CustodyHarness.make("anchorreplay")
        let (tenant, before) = try await Self.destroyedPepper(harness)
        try await Self.replay(before, harness)
        let replayed = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .apiKeyPepper && $0.version == 1 })
        #expect(replayed.state == .retired && replayed.wrappedKey != nil, "the row is back, MAC and all")
        #expect(await !Self.computes(freshKeyring(harness), tenant, harness), "a new process refuses the destroyed key")
        harness.keyring.invalidate(prefix: "")
        #expect(await !Self.computes(harness.keyring, tenant, harness), "so does the destroying one once it re-reads")
        await harness.shutdown()
    }

    @Test("a crash between the HSM list and the destruction's commit: the version is refused at once, and start-up reconciliation completes the destruction")
    func crashBeforeCommit() async throws {
        let harness = try await CustodyHarness.make("anchorcrash", keyringStepHook: { step in
            if step == .destructionAnchored { throw InjectedCrash() }
        })
        let (tenant, before) = try await Self.destroyedPepper(harness)
        let row = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .apiKeyPepper && $0.version == 1 })
        #expect(row.state == .retired && row.wrappedKey != nil, "the transaction rolled back: the row still holds the key")
        #expect(try await harness.keyring.anchoredStates().destroyed.contains(.init(tenant: tenant, purpose: .apiKeyPepper, version: 1)))
        #expect(await !Self.computes(freshKeyring(harness), tenant, harness), "the list alone refuses the key")

        let restarted = freshKeyring(harness)
        #expect(try await restarted.reconcile() == [.destructionCompleted(tenant, .apiKeyPepper, version: 1)])
        let after = try #require(try await harness.keyring.versions(tenant).first { $0.purpose == .apiKeyPepper && $0.version == 1 })
        #expect(after.state == .destroyed && after.wrappedKey == nil, "the material is gone from the row")
        #expect(try await restarted.reconcile().isEmpty, "nothing left to do")
        try await Self.replay(before, harness)
        #expect(await !Self.computes(freshKeyring(harness), tenant, harness))
        await harness.shutdown()
    }

    @Test("a token without the list (restored from shares) gets it rebuilt from the database at start-up, audited")
    func missingListRebuilt() async throws {
        let harness = try await CustodyHarness.make("anchorrebuild")
        let (tenant, before) = try await Self.destroyedPepper(harness)
        let anchor = harness.keyring.keyStateAnchor
        let removed = try await harness.pool.withSession { session in try anchor.object.destroyAll(in: session.pkcs11) }
        #expect(removed == 1)
        #expect(try await anchor.read() == .missing)

        #expect(try await freshKeyring(harness).reconcile().isEmpty)
        guard case .contents(let contents) = try await anchor.read() else {
            Issue.record("no list written")
            return
        }
        #expect(contents.states.destroyed == [KeyStateAnchor.Entry(tenant: tenant, purpose: .apiKeyPepper, version: 1)])
        let rebuilds = try await harness.owner.withTransaction(context: "read audit") { connection in
            try await AuditLogStore.entries(after: 0, limit: 10_000, on: connection)
        }.filter { $0.action == AuditAction.keyStateAnchorRebuild.rawValue }
        #expect(rebuilds.count == 1)
        try await Self.replay(before, harness)
        #expect(await !Self.computes(freshKeyring(harness), tenant, harness))
        await harness.shutdown()
    }

    @Test("a list that fails its MAC stops every tenant key (fail closed), with a precise error")
    func forgedListRefused() async throws {
        let harness = try await CustodyHarness.make("anchorforged")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let anchor = harness.keyring.keyStateAnchor
        // An empty list, as someone with the PIN but without the root MAC key would write it.
        let forged = KeyStateAnchor.Stored(seq: 9, macVersion: 1, body: [], mac: [UInt8](repeating: 0, count: 32)).bytes
        try await harness.pool.withSession { session in try anchor.object.replace(with: forged, in: session.pkcs11) }
        #expect(try await anchor.read() == .invalid)
        let keyring = freshKeyring(harness)
        await #expect { _ = try await keyring.key(tenant, .data) } throws: { error in
            if case CustodyError.keyStateAnchorInvalid = error { true } else { false }
        }
        await harness.shutdown()
    }

    @Test("destructions on two instances at once are both listed (the list is written under a lock)")
    func concurrentDestructionsBothListed() async throws {
        let harness = try await CustodyHarness.make("anchorrace")
        var tenants = [TenantID]()
        for index in 0 ..< 4 {
            let tenant = try await harness.keyring.createTenant(label: "t\(index)", actor: "officer").id
            try await harness.keyring.rotate(tenant, .apiKeyPepper, actor: "officer")
            tenants.append(tenant)
        }
        let instances = [harness.keyring, freshKeyring(harness)]
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, tenant) in tenants.enumerated() {
                let keyring = instances[index % 2]
                group.addTask { try await keyring.destroy(tenant, .apiKeyPepper, version: 1, waitingPeriod: .zero, actor: "officer") }
            }
            try await group.waitForAll()
        }
        guard case .contents(let contents) = try await harness.keyring.keyStateAnchor.read() else {
            Issue.record("no list written")
            return
        }
        #expect(contents.states.destroyed == Set(tenants.map { KeyStateAnchor.Entry(tenant: $0, purpose: .apiKeyPepper, version: 1) }))
        await harness.shutdown()
    }
}

import Composition
import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage
import Testing

@Suite("A disabled key version refuses every use at once, on every instance, until enabled")
struct DisabledKeyTests {
    /// Whether `body` fails with ``CustodyError/keyDisabled(_:_:_:)`` for `purpose` v`version`.
    static func refusesAsDisabled(_ purpose: KeyPurpose, _ version: Int, _ body: () async throws -> Void) async -> Bool {
        do {
            try await body()
            return false
        } catch CustodyError.keyDisabled(_, let refused, let refusedVersion) {
            return refused == purpose && refusedVersion == version
        } catch {
            return false
        }
    }

    @Test("Disable refuses seal, open, HMAC and signing; enable restores exactly the state it had; listings show it")
    func disableAndEnable() async throws {
        let harness = try await CustodyHarness.make("disable")
        let keyring = harness.keyring
        let sealer = CustodyPersonalDataSealer(pool: harness.pool, keyring: keyring)
        let tenant = try await keyring.createTenant(label: "acme", actor: "alice").id
        _ = try await harness.webhooks.createSecret(tenant: tenant, actor: "alice")
        let (sealed, _) = try await sealer.seal(PersonalText("Ada"), tenant: tenant, keyVersion: nil, context: [1])
        _ = try await harness.webhooks.signatureHeader(tenant: tenant, id: "msg_1", timestamp: 1, body: [1])

        let disabled = try await keyring.disable(tenant, .data, version: 1, actor: "alice")
        #expect(disabled.state == .active && disabled.disabledAt != nil, "disabling keeps the lifecycle state")
        #expect(await Self.refusesAsDisabled(.data, 1) { _ = try await sealer.seal(PersonalText("Ada"), tenant: tenant, keyVersion: nil, context: [1]) })
        #expect(await Self.refusesAsDisabled(.data, 1) { _ = try await sealer.open(sealed, keyVersion: 1, tenant: tenant, context: [1]) })
        let listed = try await keyring.versions(tenant).first { $0.purpose == .data && $0.version == 1 }
        #expect(listed?.disabledAt != nil && listed?.state == .active)

        try await keyring.disable(tenant, .pii, version: 1, actor: "alice")
        #expect(await Self.refusesAsDisabled(.pii, 1) { _ = try await keyring.key(tenant, .pii) })
        try await keyring.disable(tenant, .webhook, version: 1, actor: "alice")
        #expect(await Self.refusesAsDisabled(.webhook, 1) {
            _ = try await harness.webhooks.signatureHeader(tenant: tenant, id: "msg_2", timestamp: 2, body: [1])
        })

        let enabled = try await keyring.enable(tenant, .data, version: 1, actor: "bob")
        #expect(enabled.state == .active && enabled.disabledAt == nil)
        #expect(try await sealer.open(sealed, keyVersion: 1, tenant: tenant, context: [1]).value == "Ada")
        try await keyring.enable(tenant, .webhook, version: 1, actor: "bob")
        _ = try await harness.webhooks.signatureHeader(tenant: tenant, id: "msg_3", timestamp: 3, body: [1])

        // A retired version comes back retired (verify/decrypt only), not active.
        try await keyring.rotate(tenant, .data, actor: "alice")
        try await keyring.disable(tenant, .data, version: 1, actor: "alice")
        #expect(await Self.refusesAsDisabled(.data, 1) { _ = try await sealer.open(sealed, keyVersion: 1, tenant: tenant, context: [1]) })
        #expect(try await keyring.enable(tenant, .data, version: 1, actor: "bob").state == .retired)
        #expect(try await sealer.open(sealed, keyVersion: 1, tenant: tenant, context: [1]).value == "Ada")

        let actions = try await harness.audit.tail(limit: 50).compactMap { AuditAction(rawValue: $0.action) }
        #expect(actions.filter { $0 == .keyDisable }.count == 4 && actions.filter { $0 == .keyEnable }.count == 3)
        await harness.shutdown()
    }

    @Test("A database write cannot un-disable a version: the row MAC covers the flag")
    func undisableByDatabaseWriteIsRefused() async throws {
        let harness = try await CustodyHarness.make("undisable")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        _ = try await harness.keyring.key(tenant, .apiKeyPepper)  // unwrapped and cached in the pool
        try await harness.keyring.disable(tenant, .apiKeyPepper, version: 1, actor: "alice")
        try await harness.ownerSQL(tenant: tenant, "UPDATE key_versions SET disabled_at = NULL WHERE purpose = 'apikey-pepper'")
        var refusedAsTampered = false
        do {
            _ = try await harness.keyring.key(tenant, .apiKeyPepper)
        } catch CustodyError.rowTampered(_, let purpose, let version) {
            refusedAsTampered = purpose == .apiKeyPepper && version == 1
        }
        #expect(refusedAsTampered)
        await harness.shutdown()
    }

    @Test("Disabled through one instance, refused by another within its listener's notice (well inside its cache lifetime)")
    func acrossInstances() async throws {
        let harness = try await CustodyHarness.make("disable_two")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        let secondDatabase = try harness.secondServiceDatabase()
        // The other instance: its own database client and keyring, the same token (so even the
        // pool's cached handle of the unwrapped key is shared: only the keyring can refuse).
        let other = TenantKeyring(
            pool: harness.pool, database: secondDatabase, rootKeys: harness.keyring.rootKeys, audit: harness.audit,
            logger: harness.logs.logger, activeCacheTTL: .seconds(60)
        )
        let listener = Task { await other.runKeyStateListener() }
        let listening = ContinuousClock.now + .seconds(20)
        while !other.isListeningForKeyStates, ContinuousClock.now < listening { try await Task.sleep(for: .milliseconds(20)) }
        #expect(other.isListeningForKeyStates)
        _ = try await other.key(tenant, .pii)  // cached for a minute from here, unless told

        try await harness.keyring.disable(tenant, .pii, version: 1, actor: "alice")
        #expect(try await Self.eventually(within: .seconds(10)) {
            await Self.refusesAsDisabled(.pii, 1) { _ = try await other.key(tenant, .pii) }
        }, "the other instance refuses the disabled version long before its cached copy would expire")

        try await harness.keyring.enable(tenant, .pii, version: 1, actor: "bob")
        #expect(try await Self.eventually(within: .seconds(10)) { (try? await other.key(tenant, .pii)) != nil })
        listener.cancel()
        await listener.value
        await secondDatabase.shutdown()
        await harness.shutdown()
    }

    @Test("Without the listener, another instance still refuses a disabled version within the short fallback lifetime")
    func fallbackWithoutListener() async throws {
        let harness = try await CustodyHarness.make("disable_fallback")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "alice").id
        let secondDatabase = try harness.secondServiceDatabase()
        let other = TenantKeyring(
            pool: harness.pool, database: secondDatabase, rootKeys: harness.keyring.rootKeys, audit: harness.audit,
            logger: harness.logs.logger, activeCacheTTL: .seconds(60)
        )
        _ = try await other.key(tenant, .data)
        try await harness.keyring.disable(tenant, .data, version: 1, actor: "alice")
        #expect(try await Self.eventually(within: .seconds(10)) {
            await Self.refusesAsDisabled(.data, 1) { _ = try await other.key(tenant, .data) }
        })
        await secondDatabase.shutdown()
        await harness.shutdown()
    }

    /// Polls `condition` until it holds or `deadline` passes.
    static func eventually(within deadline: Duration, _ condition: () async throws -> Bool) async throws -> Bool {
        let end = ContinuousClock.now + deadline
        while ContinuousClock.now < end {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(25))
        }
        return try await condition()
    }
}

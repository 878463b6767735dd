import Ceremony
@testable import Custody
import CustosModel
import Foundation
import HSM
import HSMTestSupport
import Storage
import Synchronization
import Testing

/// `ceremony rotate-root` while other instances serve: a row another instance changes between
/// the re-wrap's read and its compare-and-swap (a disable or a state change re-seals the row's MAC
/// over the same blob) is read again and moved as it is now. Until session 20 the re-wrap stopped
/// there with "changed concurrently", and the custodians had to come back for `--resume`.
@Suite("Root-KEK re-wrap: a row changed by another instance is read again", .serialized)
struct RewrapRowRetryTests {
    /// A tenant whose `data` v1 row has two authentic versions, as another instance would have
    /// written them: `enabled` (stored now) and `disabled` (a disable's MAC and timestamp).
    private struct Scene {
        let harness: CustodyHarness
        let tenant: TenantID
        let enabled: RowState
        let disabled: RowState
        let ceremony: KeyCeremony
        let transcript: CeremonyTranscript
        let directory: String
        /// Sealed under `data` v1 before anything changed.
        let box: AESGCMSealedBox
    }

    private struct RowState {
        let macHex: String
        let disabledAt: String?
    }

    /// What the other instance does when the re-wrap has sealed the `data` row and not written it yet.
    private final class OnSealed: Sendable {
        let action = Mutex<(@Sendable () throws -> Void)?>(nil)

        func set(_ body: (@Sendable () throws -> Void)?) { action.withLock { $0 = body } }
    }

    private static func scene(_ name: String, onSealed: OnSealed) async throws -> Scene {
        let harness = try await CustodyHarness.make(name, keyringStepHook: { step in
            if step == .rewrapRowSealed(.data), let action = onSealed.action.withLock({ $0 }) { try action() }
        })
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let (data, _) = try await harness.keyring.key(tenant, .data)
        let box = try await harness.pool.sealAESGCM(key: data, plaintext: Array("ada@example.org".utf8))
        let enabled = try Self.state(harness, tenant)
        try await harness.keyring.disable(tenant, .data, version: 1, actor: "officer")
        let disabled = try Self.state(harness, tenant)
        #expect(disabled.disabledAt != nil && disabled.macHex != enabled.macHex)
        // The row back as it was before the disable (the HSM's list of disabled versions still
        // names it): the re-wrap reads this one.
        try Self.write(enabled, harness, tenant)
        let directory = TestEnvironment.directory + "/\(harness.schema).rotation"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let ceremony = KeyCeremony(
            pool: harness.pool, participants: try CeremonyParticipants(operatorName: "Ada Officer", witnesses: ["Grace Witness"]),
            configHash: "test", logger: harness.logs.logger
        )
        return Scene(
            harness: harness, tenant: tenant, enabled: enabled, disabled: disabled, ceremony: ceremony,
            transcript: CeremonyTranscript(path: directory + "/transcript.jsonl"), directory: directory, box: box
        )
    }

    /// The `data` v1 row's MAC and disable mark, read as the superuser (no RLS, no await: the
    /// step hook that uses ``write(_:_:_:)`` is synchronous).
    private static func state(_ harness: CustodyHarness, _ tenant: TenantID) throws -> RowState {
        let out = try psql(harness, """
            SELECT encode(row_mac, 'hex') || '|' || coalesce(disabled_at::text, '') FROM \(harness.schema).key_versions
            WHERE tenant_id = '\(tenant.rawValue)' AND purpose = 'data' AND version = 1
            """).trimmingCharacters(in: .whitespacesAndNewlines)
        let parts = out.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty else { throw RowReadFailed(output: out) }
        return RowState(macHex: parts[0], disabledAt: parts[1].isEmpty ? nil : parts[1])
    }

    private static func write(_ state: RowState, _ harness: CustodyHarness, _ tenant: TenantID) throws {
        let disabledAt = state.disabledAt.map { "'\($0)'::timestamptz" } ?? "NULL"
        _ = try psql(harness, """
            UPDATE \(harness.schema).key_versions SET row_mac = decode('\(state.macHex)', 'hex'), disabled_at = \(disabledAt)
            WHERE tenant_id = '\(tenant.rawValue)' AND purpose = 'data' AND version = 1
            """)
    }

    private static func psql(_ harness: CustodyHarness, _ sql: String) throws -> String {
        let settings = harness.settings
        return try run([
            "/usr/sbin/runuser", "-u", "postgres", "--", settings.binary("psql"), "-h", settings.socketDirectory, "-p", String(settings.port),
            "-d", settings.database, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql,
        ])
    }

    private struct RowReadFailed: Error {
        let output: String
    }

    @Test("another instance disables a version while rotate-root re-wraps: the row is read again, moved disabled, and nothing is lost")
    func rowChangedOnceIsReadAgain() async throws {
        let onSealed = OnSealed()
        let scene = try await Self.scene("rewrapretry", onSealed: onSealed)
        let harness = scene.harness
        // The row the re-wrap is about to store: the other instance's disable lands first (once:
        // the re-read row is moved as it is then).
        let disabled = scene.disabled
        onSealed.set { [tenant = scene.tenant] in
            onSealed.set(nil)
            try Self.write(disabled, harness, tenant)
        }
        let rotation = try await scene.ceremony.rotateRoot(
            threshold: 2, shares: 3, outputDirectory: scene.directory, transcript: scene.transcript, keyring: harness.keyring,
            recordingIn: harness.owner, currentShares: [Array(harness.sharePaths.prefix(2))]
        )
        let rows = try await harness.keyring.versions(scene.tenant).filter { $0.wrappedKey != nil }
        #expect(rotation.newKEKVersion == 2)
        #expect(rows.allSatisfy { $0.rootKEKVersion == 2 }, "every row moved: \(rows.map { "\($0.purpose.rawValue)/v\($0.version) KEK v\($0.rootKEKVersion)" })")
        #expect(rotation.rewrap.rewrapped == rows.count)
        let data = try #require(rows.first { $0.purpose == .data && $0.version == 1 })
        #expect(data.disabledAt != nil, "the other instance's disable stands")
        // Its MAC is the re-wrap's over the disabled row: enabled again, the key opens what it sealed.
        try await harness.keyring.enable(scene.tenant, .data, version: 1, actor: "officer")
        let (dataAfter, _) = try await harness.keyring.key(scene.tenant, .data)
        #expect(try await harness.pool.openAESGCM(key: dataAfter, box: scene.box) == Array("ada@example.org".utf8))
        await harness.shutdown()
    }

    @Test("a row that changes under every attempt stops the run with changedConcurrently after a bounded number of reads; a resume finishes it")
    func rowThatKeepsChangingStops() async throws {
        let onSealed = OnSealed()
        let scene = try await Self.scene("rewrapflap", onSealed: onSealed)
        let harness = scene.harness
        // Every time: the other instance flips data/v1 to the other of its two authentic states,
        // so what the re-wrap read of it is stale by its compare-and-swap.
        let flips = Mutex(0)
        onSealed.set { [tenant = scene.tenant, enabled = scene.enabled, disabled = scene.disabled] in
            flips.withLock { $0 += 1 }
            let stored = try Self.state(harness, tenant)
            try Self.write(stored.macHex == enabled.macHex ? disabled : enabled, harness, tenant)
        }
        let shares = [Array(harness.sharePaths.prefix(2))]
        let refused = await #expect(throws: CeremonyError.self) {
            _ = try await scene.ceremony.rotateRoot(
                threshold: 2, shares: 3, outputDirectory: scene.directory, transcript: scene.transcript, keyring: harness.keyring,
                recordingIn: harness.owner, currentShares: shares
            )
        }
        guard case .custody(.changedConcurrently(let tenant, .data, 1)) = refused, tenant == scene.tenant else {
            Issue.record("got \(String(describing: refused))")
            return
        }
        #expect(flips.withLock { $0 } == TenantKeyring.rewrapAttemptsPerRow, "read again a bounded number of times")
        let stuck = try #require(try await harness.keyring.versions(scene.tenant).first { $0.purpose == .data && $0.version == 1 })
        #expect(stuck.rootKEKVersion == 1, "nothing of the row was written")
        onSealed.set(nil)
        let resumed = try await scene.ceremony.resumeRewrap(
            transcript: scene.transcript, keyring: harness.keyring, recordingIn: harness.owner, currentShares: shares
        )
        #expect(resumed.kekVersion == 2)
        #expect(try await harness.keyring.versions(scene.tenant).filter { $0.wrappedKey != nil }.allSatisfy { $0.rootKEKVersion == 2 })
        await harness.shutdown()
    }
}

import Ceremony
@testable import Custody
import CustosModel
import Foundation
import HSM
import HSMTestSupport
import PKCS11
import PostgresNIO
import Storage
import Testing

/// Issue 9, findings 1 and 3: a token that does not belong to the database is refused at
/// start-up; an installation on the legacy permissive KEK migrates without shares and loses
/// it; lifecycle times cannot be moved by a database writer; `key_versions` updates are
/// compare-and-swap; Ed25519 rows are MAC-checked like the others.
@Suite("Root keys: start-up check, legacy migration, row MAC over lifecycle times", .serialized)
struct RootKeyHardeningTests {
    @Test("start-up refuses a token whose root keys the database recorded differently, and a token holding the legacy KEK")
    func startUpCheck() async throws {
        let harness = try await CustodyHarness.make("rootcheck")
        let recorded = try await RootKeyCheck.verify(pool: harness.pool, database: harness.service)
        #expect(recorded.entries.count == RootKeys.wrappedPurposes.count + 1)
        // Same token again: passes.
        try await RootKeyCheck.verify(pool: harness.pool, database: harness.service)

        // A second token with its own ceremony over the same database (a token recreated by
        // set-up over a database that outlived it).
        let other = try await CustodyHarness.make("rootother")
        let mismatch = await #expect(throws: CustodyError.self) {
            try await RootKeyCheck.verify(pool: other.pool, database: harness.service)
        }
        guard case .rootKeysDoNotMatch(let differences) = mismatch else { Issue.record("got \(String(describing: mismatch))"); return }
        #expect(differences.count == RootKeys.wrappedPurposes.count + 1)
        #expect(mismatch?.description.contains("restore") == true)

        // The legacy permissive KEK on a token: refused with the migration command.
        try await other.pool.withPersistentSession { session in
            _ = try session.generateKey(.aesKeyGen, template: Self.legacyKEKTemplate(version: 9))
        }
        let legacy = await #expect(throws: CustodyError.self) {
            try await RootKeyCheck.verify(pool: other.pool, database: other.service)
        }
        guard case .legacyRootKEKPresent(versions: [9]) = legacy else { Issue.record("got \(String(describing: legacy))"); return }
        await other.shutdown()
        await harness.shutdown()
    }

    /// The root KEK template before issue 9: no unwrap template.
    static func legacyKEKTemplate(version: Int) -> [Attribute] {
        [
            .class(.secretKey), .keyType(.aes), .valueLength(32), .token(true), .private(true), .sensitive(true),
            .extractable(false), .modifiable(false), .copyable(false), .wrap(true), .unwrap(true), .encrypt(false),
            .decrypt(false), .sign(false), .verify(false), .derive(false), .label(RootKeys.legacyKEKLabel(version: version)), .id([9]),
        ]
    }

    @Test("a legacy installation migrates by rotate-root without shares: same keys, the permissive KEK destroyed, rows resealed")
    func legacyMigration() async throws {
        let harness = try await CustodyHarness.make("legacy", createRootKeys: false)
        let pool = harness.pool
        // The legacy token: the MAC key and the permissive KEK v1, as `hsm init-root-keys` made them.
        try await pool.withPersistentSession { session in
            _ = try session.generateKey(.genericSecretKeyGen, template: [
                .class(.secretKey), .keyType(.genericSecret), .valueLength(32), .token(true), .private(true), .sensitive(true),
                .extractable(false), .modifiable(false), .copyable(false), .sign(true), .verify(true), .label(RootKeys.macLabel(version: 1)), .id([1]),
            ])
            _ = try session.generateKey(.aesKeyGen, template: Self.legacyKEKTemplate(version: 1))
        }
        // A tenant whose rows were written by the old code: blobs under the legacy KEK, MACs in the first format.
        let tenant = TenantID.random()
        var records = [KeyVersionRecord]()
        for purpose in KeyPurpose.createdWithTenant {
            let usage = try #require(purpose.usage)
            let (blob, checkValue) = try await pool.withPersistentSession { session in
                let kek = try #require(try session.findObjects([.class(.secretKey), .label(RootKeys.legacyKEKLabel(version: 1))]).first)
                let key = try session.generateKey(KeyTemplate.generationMechanism(usage), template: KeyTemplate.tenantKeyForWrapping(usage))
                defer { try? session.destroyObject(key) }
                return (try session.wrapKey(.aesKeyWrapPad, wrappingKey: kek, key: key), try session.attribute(.checkValue, of: key))
            }
            var record = KeyVersionRecord(
                tenant: tenant, purpose: purpose, version: 1, state: .active, wrappedKey: blob, wrapMechanism: TenantKeyring.wrapMechanism,
                rootKEKVersion: 1, checkValue: checkValue, rowMAC: []
            )
            record.rowMAC = try await pool.hmacSHA256(key: RootKeys().mac, data: KeyVersionAuthenticator.firstFormatMessage(for: record))
            records.append(record)
        }
        let rows = records
        try await harness.service.withTenant(tenant, context: "legacy rows") { connection in
            _ = try await TenantStore.insert(id: tenant, label: "legacy", on: connection)
            for row in rows { try await KeyVersionStore.insert(row, on: connection) }
        }
        // What the PII key computes before the migration (through the permissive KEK).
        let message = Array("subject-7".utf8)
        let piiRow = try #require(rows.first { $0.purpose == .pii })
        let before = try await pool.withPersistentSession { session in
            let kek = try #require(try session.findObjects([.class(.secretKey), .label(RootKeys.legacyKEKLabel(version: 1))]).first)
            let key = try session.unwrapKey(.aesKeyWrapPad, unwrappingKey: kek, wrapped: try #require(piiRow.wrappedKey), template: KeyTemplate.tenantKeyUnwrapped(.hmac))
            defer { try? session.destroyObject(key) }
            return try session.sign(.sha256HMAC, key: key, data: message)
        }
        // The service refuses this token until the migration ran.
        await #expect(throws: CustodyError.self) { try await RootKeyCheck.verify(pool: pool, database: harness.service) }

        let directory = TestEnvironment.directory + "/legacy-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let ceremony = KeyCeremony(
            pool: pool, participants: try CeremonyParticipants(operatorName: "Ada Officer", witnesses: ["Grace Witness"]),
            configHash: "test", logger: harness.logs.logger
        )
        let rotation = try await ceremony.rotateRoot(
            threshold: 2, shares: 3, outputDirectory: directory, transcript: CeremonyTranscript(path: directory + "/transcript.jsonl"),
            keyring: harness.keyring, recordingIn: harness.owner
        )
        #expect(rotation.newKEKVersion == 2)
        #expect(rotation.rewrap.rewrapped == rows.count && rotation.rewrap.resealed == rows.count)
        #expect(rotation.destroyedLegacyKEKs == [RootKeys.legacyKEKLabel(version: 1)])
        let inventory = try await RootKeyCheck.verify(pool: pool, database: harness.service)
        #expect(inventory.legacyKEKVersions.isEmpty && inventory.completeKEKVersions == [2])

        // The same keys, now under pinned per-purpose KEKs, with rows in the current MAC format.
        let keyring = TenantKeyring(pool: pool, database: harness.service, rootKeys: RootKeys(inventory: inventory), audit: harness.audit, logger: harness.logs.logger)
        let (pii, version) = try await keyring.key(tenant, .pii)
        #expect(version == 1)
        #expect(try await pool.hmacSHA256(key: pii, data: message) == before)
        let migrated = try await keyring.versions(tenant)
        #expect(migrated.allSatisfy { $0.rootKEKVersion == 2 })
        // Old first-format MACs are no longer accepted by the service.
        var forged = try #require(migrated.first { $0.purpose == .data })
        forged.rowMAC = try await pool.hmacSHA256(key: RootKeys().mac, data: KeyVersionAuthenticator.firstFormatMessage(for: forged))
        #expect(try await !KeyVersionAuthenticator(rootKeys: RootKeys(kekVersion: 2)).isAuthentic(forged, pool: pool))
        await harness.shutdown()
    }

    @Test("a database writer who moves retired_at back cannot shorten the waiting period")
    func waitingPeriodIsMACed() async throws {
        let harness = try await CustodyHarness.make("waiting")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        try await harness.keyring.rotate(tenant.id, .apiKeyPepper, actor: "officer")
        // v1 is retired now; destroying it must wait 7 days.
        await #expect(throws: CustodyError.self) {
            try await harness.keyring.destroy(tenant.id, .apiKeyPepper, version: 1, waitingPeriod: .seconds(7 * 86_400), actor: "officer")
        }
        try await harness.ownerSQL(tenant: tenant.id, """
            UPDATE key_versions SET retired_at = now() - interval '30 days' WHERE purpose = 'apikey-pepper' AND version = 1
            """)
        let refused = await #expect(throws: CustodyError.self) {
            try await harness.keyring.destroy(tenant.id, .apiKeyPepper, version: 1, waitingPeriod: .seconds(7 * 86_400), actor: "officer")
        }
        guard case .rowTampered = refused else { Issue.record("got \(String(describing: refused))"); return }
        let row = try #require(try await harness.keyring.versions(tenant.id).first { $0.purpose == .apiKeyPepper && $0.version == 1 })
        #expect(row.state == .retired && row.wrappedKey != nil, "nothing destroyed")
        await harness.shutdown()
    }

    @Test("key_versions updates are compare-and-swap on the row MAC: a stale writer changes nothing")
    func compareAndSwap() async throws {
        let harness = try await CustodyHarness.make("cas")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer")
        try await harness.keyring.rotate(tenant.id, .data, overlap: .seconds(3600), actor: "officer")
        let stale = try #require(try await harness.keyring.versions(tenant.id).first { $0.purpose == .data && $0.version == 1 })
        #expect(stale.state == .retiring)
        // Another instance retires it first.
        try await harness.keyring.retire(tenant.id, .data, version: 1, actor: "officer")
        // A writer still holding the old row (e.g. a re-wrap that read it before) changes nothing.
        var late = stale
        late.state = .retiring
        late = try await KeyVersionAuthenticator(rootKeys: RootKeys()).sealed(late, pool: harness.pool)
        let lateRecord = late
        let changed = try await harness.service.withTenant(tenant.id, context: "stale update") { connection in
            try await KeyVersionStore.update(lateRecord, expectedMAC: stale.rowMAC, on: connection)
        }
        #expect(!changed)
        let row = try #require(try await harness.keyring.versions(tenant.id).first { $0.purpose == .data && $0.version == 1 })
        #expect(row.state == .retired, "the retirement stands")
        #expect(try await KeyVersionAuthenticator(rootKeys: RootKeys()).isAuthentic(row, pool: harness.pool), "and its MAC holds")
        await harness.shutdown()
    }

    @Test("an Ed25519 row pointed at another token object fails its MAC before any signature")
    func ed25519RowIsMACed() async throws {
        let harness = try await CustodyHarness.make("edmac")
        let a = try await harness.keyring.createTenant(label: "tenant-a", actor: "officer")
        let b = try await harness.keyring.createTenant(label: "tenant-b", actor: "officer")
        _ = try await harness.webhooks.createEd25519Key(tenant: a.id, actor: "officer")
        _ = try await harness.webhooks.createEd25519Key(tenant: b.id, actor: "officer")
        let labelB = try #require(try await harness.keyring.versions(b.id).first { $0.purpose == .webhookEd25519 }?.tokenLabel)
        // A database writer makes tenant A's row name tenant B's private key.
        try await harness.ownerSQL(tenant: a.id, "UPDATE key_versions SET token_label = \(labelB) WHERE purpose = 'webhook-ed25519'")
        let fresh = TenantKeyring(pool: harness.pool, database: harness.service, audit: harness.audit, logger: harness.logs.logger)
        let signer = WebhookSigner(pool: harness.pool, keyring: fresh, audit: harness.audit, trustedEscrowKeys: harness.trustedEscrowKeys)
        await #expect(throws: (any Error).self) {
            _ = try await signer.signatureHeader(tenant: a.id, id: "msg_1", timestamp: 1_700_000_000, body: Array("{}".utf8))
        }
        await harness.shutdown()
    }
}

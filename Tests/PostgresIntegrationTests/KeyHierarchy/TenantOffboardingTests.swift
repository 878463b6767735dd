import Composition
@testable import Custody
import CustosModel
import Foundation
import HSM
import PKCS11
import PostgresNIO
import SecureMemory
@testable import Storage
import Synchronization
import Testing
import Verification

@Suite("Tenant offboarding by crypto-shredding: two officers, disabled at once, shredded when due, crash-safe")
struct TenantOffboardingTests {
    /// What a tenant stores: the test keeps the bytes to look for them in a dump later.
    struct Stored {
        let tenant: TenantID
        let apiKey: SecretBytes
        let sealedName: [UInt8]
        let template: [UInt8]
        let wrappedKeys: [[UInt8]]
    }

    static func populate(_ harness: CustodyHarness, label: String, sealer: CustodyPersonalDataSealer) async throws -> Stored {
        let tenant = try await harness.keyring.createTenant(label: label, actor: "officer").id
        _ = try await harness.webhooks.createEd25519Key(tenant: tenant, actor: "officer")
        let apiKey = try await harness.apiKeys.issue(tenant: tenant, scopes: ["verify"], actor: "officer").key
        let (sealedName, dataVersion) = try await sealer.seal(PersonalText("Ada Lovelace"), tenant: tenant, keyVersion: nil, context: [7])
        let template = (0..<4096).map { _ in UInt8.random(in: 0 ... .max) }
        try await harness.ownerSQL(tenant: tenant, """
            INSERT INTO templates (tenant_id, subject_ref, key_version, token, pii_version)
            VALUES (\(tenant.rawValue)::uuid, 'subject-1', 1, \(Data(template)), 1)
            """)
        try await harness.ownerSQL(tenant: tenant, """
            INSERT INTO verification_sessions (id, tenant_id, subject_ref, pii_version, sealed_name, data_key_version, expires_at)
            VALUES (\(UUID()), \(tenant.rawValue)::uuid, 'subject-1', 1, \(Data(sealedName)), \(dataVersion), now() + interval '1 day')
            """)
        let wrapped = try await harness.keyring.versions(tenant).compactMap(\.wrappedKey)
        return Stored(tenant: tenant, apiKey: apiKey, sealedName: sealedName, template: template, wrappedKeys: wrapped)
    }

    static func hex(_ bytes: [UInt8]) -> String { Hex.encode(bytes).lowercased() }

    struct InjectedCrash: Error {}

    @Test("An approved offboarding marked completed by the database's writer, its key rows deleted, is still carried out (helper-86)")
    func completionPlantedOnApproved() async throws {
        let harness = try await CustodyHarness.make("offboard_marked")
        let clock = TestClock()
        let sealer = CustodyPersonalDataSealer(pool: harness.pool, keyring: harness.keyring)
        let leaving = try await Self.populate(harness, label: "leaving", sealer: sealer)
        let offboarding = TenantOffboarding(database: harness.service, keyring: harness.keyring, audit: harness.audit, now: clock.now)
        let request = try await offboarding.request(leaving.tenant, officer: "alice", waitingDays: 7)
        _ = try await offboarding.approve(request.id, officer: "bob", certificateSerial: "b0b")
        _ = try await harness.service.withTenant(leaving.tenant, context: "test: database writer") { connection in
            try await connection.query("UPDATE tenant_offboardings SET completed_at = now() WHERE id = \(request.id)", logger: Database.quiet)
            try await connection.query("UPDATE key_versions SET state = 'pending'", logger: Database.quiet)
            try await connection.query("DELETE FROM key_versions", logger: Database.quiet)
        }
        clock.advance(days: 7.1)
        let swept = try await offboarding.sweep(officer: "system")
        #expect(swept.completed.map(\.id) == [request.id], "the sweep took the planted mark for a shredding done")
        let templates = try await harness.owner.withTenant(leaving.tenant, context: "test: count templates") { connection in
            try await connection.query("SELECT count(*) FROM templates", logger: Database.quiet).collect().first!.decode(Int.self)
        }
        #expect(templates == 0)
        await harness.shutdown()
    }

    @Test("A completed offboarding the database's writer planted for a live tenant, its key rows deleted, does not vouch for a missing policy row (helper-86)")
    func plantedCompletion() async throws {
        let harness = try await CustodyHarness.make("offboard_planted")
        let sealer = CustodyPersonalDataSealer(pool: harness.pool, keyring: harness.keyring)
        let live = try await Self.populate(harness, label: "live", sealer: sealer)
        let policies = TenantPolicies(database: harness.service, audit: AuditLogRecorder(harness.audit), cacheLifetime: .zero)
        _ = try await policies.update(.init(retentionDays: 40), for: live.tenant, actor: "officer")
        let offboarding = TenantOffboarding(database: harness.service, keyring: harness.keyring, audit: harness.audit)
        // As the service role: every key row gone (pending rows may be deleted), a completed
        // offboarding planted, the policy row deleted.
        _ = try await harness.service.withTenant(live.tenant, context: "test: database writer") { connection in
            try await connection.query("UPDATE key_versions SET state = 'pending'", logger: Database.quiet)
            try await connection.query("DELETE FROM key_versions", logger: Database.quiet)
            try await connection.query("""
                INSERT INTO tenant_offboardings (id, tenant_id, requested_by, requested_at, expires_at, waiting_days, approved_by, approved_at, completed_at)
                VALUES (\(UUID()), \(live.tenant.rawValue)::uuid, 'mallory', now(), now() + interval '1 day', 7, 'eve', now(), now())
                """, logger: Database.quiet)
            try await connection.query("DELETE FROM tenant_policies", logger: Database.quiet)
        }
        _ = try await offboarding.sweep(officer: "system")
        let newest = try await harness.service.withTenant(live.tenant, context: "test: read newest") { connection in
            try await harness.audit.newestAuthenticEntry(action: .tenantPolicy, tenant: live.tenant, on: connection)
        }
        #expect(!TenantPolicyStore.isAttested(nil, by: newest), "the sweep recorded a removal of a live tenant's policy")
        await #expect(throws: RecordIntegrityError.tenantPolicy(live.tenant)) { try await policies.policy(live.tenant) }
        await harness.shutdown()
    }

    @Test("An approved offboarding keeps the tenant's callers out though the database's writer sets its row back to active (helper-77)")
    func offboardingOutlastsRowFlip() async throws {
        let harness = try await CustodyHarness.make("offboardflip")
        let tenant = try await harness.keyring.createTenant(label: "leaving", actor: "officer").id
        let offboarding = TenantOffboarding(database: harness.service, keyring: harness.keyring, audit: harness.audit)
        let request = try await offboarding.request(tenant, officer: "alice", waitingDays: 7)
        _ = try await offboarding.approve(request.id, officer: "bob", certificateSerial: "b0b")
        _ = try await harness.service.withTransaction(context: "database writer") { connection in
            try await connection.query("UPDATE tenants SET status = 'active' WHERE id = \(tenant.rawValue)::uuid", logger: Database.quiet)
        }
        #expect(try await harness.keyring.tenant(tenant)?.status == "active", "the row says active")
        #expect(try await harness.keyring.isTenantDisabled(tenant), "the HSM's list holds the offboarding")
        await harness.shutdown()
    }

    @Test("Approval disables the tenant at once; when due its keys and data are gone from a pg_dump, another tenant is untouched")
    func offboard() async throws {
        let harness = try await CustodyHarness.make("offboard")
        let clock = TestClock()
        let sealer = CustodyPersonalDataSealer(pool: harness.pool, keyring: harness.keyring)
        let leaving = try await Self.populate(harness, label: "leaving", sealer: sealer)
        let staying = try await Self.populate(harness, label: "staying", sealer: sealer)
        let leavingLabel = try #require(try await harness.keyring.versions(leaving.tenant).first { $0.purpose == .webhookEd25519 }?.tokenLabel)
        // A policy row, checked against its newest audited change when read.
        let policies = TenantPolicies(database: harness.service, audit: AuditLogRecorder(harness.audit), cacheLifetime: .zero)
        _ = try await policies.update(.init(retentionDays: 30), for: leaving.tenant, actor: "officer")

        // A crash after the first key version is destroyed stands for kill -9 between steps.
        let crashing = TenantOffboarding(
            database: harness.service, keyring: harness.keyring, audit: harness.audit, now: clock.now,
            stepHook: { step in if step == .keyVersionDestroyed { throw InjectedCrash() } }
        )
        let offboarding = TenantOffboarding(database: harness.service, keyring: harness.keyring, audit: harness.audit, now: clock.now)

        let request = try await offboarding.request(leaving.tenant, officer: "alice", waitingDays: 7)
        await #expect(throws: OffboardingError.approverIsRequester(request.id)) {
            _ = try await offboarding.approve(request.id, officer: "alice", certificateSerial: "a11ce")
        }
        _ = try await harness.keyring.key(leaving.tenant, .data)  // still usable before approval
        let approved = try await offboarding.approve(request.id, officer: "bob", certificateSerial: "b0b")
        let due = try #require(approved.dueAt)

        // Disabled at once: no API key, no key use.
        await #expect(throws: APIKeyError.self) { _ = try await harness.apiKeys.verify(leaving.apiKey) }
        await #expect(throws: CustodyError.self) { _ = try await sealer.open(leaving.sealedName, keyVersion: 1, tenant: leaving.tenant, context: [7]) }
        #expect(try await harness.keyring.tenant(leaving.tenant)?.status == "disabled")
        await #expect(throws: OffboardingError.notDue(request.id, due: due)) { _ = try await offboarding.complete(request.id, officer: "alice") }

        clock.advance(days: 7.1)
        await #expect(throws: InjectedCrash.self) { _ = try await crashing.complete(request.id, officer: "alice") }
        let partial = try await harness.keyring.versions(leaving.tenant)
        #expect(partial.contains { $0.state == .destroyed } && partial.contains { $0.state != .destroyed }, "the crash left the job half done")

        let completed = try await offboarding.sweep(officer: "system")
        #expect(completed.completed.map(\.id) == [request.id] && completed.refused.isEmpty, "the next run finishes it")
        #expect(try await offboarding.complete(request.id, officer: "alice").completedAt != nil, "running again is harmless")

        // Metadata kept, material gone, the token's Ed25519 key pair destroyed.
        let versions = try await harness.keyring.versions(leaving.tenant)
        let shredded = versions.filter { version in
            version.state == .destroyed && version.wrappedKey == nil && version.tokenLabel == nil && !version.checkValue.isEmpty
        }
        #expect(!versions.isEmpty && shredded.count == versions.count)
        let objects = try await harness.pool.withPersistentSession { session in try session.findObjects([.label(leavingLabel)], limit: 4).count }
        #expect(objects == 0)
        // Every version is on the HSM's list of destroyed versions, the one destroyed before the
        // crash included: no backup row brings one back.
        let anchored = try await harness.keyring.anchoredStates().destroyed.filter { $0.tenant == leaving.tenant }
        #expect(Set(anchored.map { "\($0.purpose.rawValue)/\($0.version)" }) == Set(versions.map { "\($0.purpose.rawValue)/\($0.version)" }))

        let dump = try harness.dump()
        for blob in leaving.wrappedKeys { #expect(!dump.contains(Self.hex(blob)), "a wrapped key of the offboarded tenant is in the dump") }
        #expect(!dump.contains(Self.hex(leaving.sealedName)), "a sealed field of the offboarded tenant is in the dump")
        #expect(!dump.contains(Self.hex(leaving.template)), "a template of the offboarded tenant is in the dump")
        // The same search finds the other tenant's: it would have found these.
        #expect(staying.wrappedKeys.allSatisfy { dump.contains(Self.hex($0)) })
        #expect(dump.contains(Self.hex(staying.sealedName)) && dump.contains(Self.hex(staying.template)))

        // The other tenant still works.
        _ = try await harness.apiKeys.verify(staying.apiKey)
        #expect(try await sealer.open(staying.sealedName, keyVersion: 1, tenant: staying.tenant, context: [7]).value == "Ada Lovelace")
        _ = try await harness.webhooks.signatureHeader(tenant: staying.tenant, id: "msg_1", timestamp: 1, body: [1])

        // Its policy row's removal was audited too: its reads (retention's) do not take the
        // missing row for a forged deletion.
        #expect(try await policies.policy(leaving.tenant) == .default)
        // A tenant offboarded by a build that recorded no removal (helper-85): its newest entry
        // records a row that is gone. The sweep records the removal, its keys being destroyed.
        _ = try await harness.audit.append(
            tenant: leaving.tenant, actor: "officer", action: .tenantPolicy, target: leaving.tenant.rawValue,
            details: TenantPolicyStore.Row(green: 0.6, amber: 0.5, retentionDays: 30, tokenizationsPerMinute: 10).auditDetails
        )
        await #expect(throws: RecordIntegrityError.tenantPolicy(leaving.tenant)) { try await policies.policy(leaving.tenant) }
        _ = try await offboarding.sweep(officer: "system")
        #expect(try await policies.policy(leaving.tenant) == .default)

        // The audit log keeps the offboarded tenant's history.
        let actions = try await harness.audit.tail(limit: 100).filter { $0.tenant == leaving.tenant }.compactMap { AuditAction(rawValue: $0.action) }
        #expect(actions.contains(.tenantCreate) && actions.contains(.tenantOffboardApprove) && actions.contains(.tenantOffboard))
        await harness.shutdown()
    }

    /// helper-55 H1, H3: a large tenant's rows in one transaction outlived the timeouts, and every
    /// sweep failed the same way with the keys already gone; and no instance dropped the
    /// offboarded tenant's galleries (fingerprints in memory).
    @Test("Data rows go in batches, each committed: a run killed between two batches leaves the rest to the next; the completion tells every instance to drop the tenant's galleries")
    func dataDeletedInBatches() async throws {
        let harness = try await CustodyHarness.make("offboard_batches")
        let clock = TestClock()
        let tenant = try await harness.keyring.createTenant(label: "leaving", actor: "officer").id
        for index in 0..<5 {
            try await harness.ownerSQL(tenant: tenant, """
                INSERT INTO templates (tenant_id, subject_ref, key_version, token, pii_version)
                VALUES (\(tenant.rawValue)::uuid, \("subject-\(index)"), 1, \(Data(repeating: UInt8(index), count: 4096)), 1)
                """)
        }
        let resets = Mutex(0)
        let listening = Task {
            try await harness.service.listen(channel: TemplateStore.galleryChannel, ready: {}) { payload in
                if let change = GalleryChange(payload: payload), change.tenant == tenant, change.kind == .reset { resets.withLock { $0 += 1 } }
            }
        }
        let batches = Mutex(0)
        let crashing = TenantOffboarding(
            database: harness.service, keyring: harness.keyring, audit: harness.audit, now: clock.now, deletionBatchSize: 2,
            stepHook: { step in
                guard step == .dataBatchDeleted else { return }
                if batches.withLock({ $0 += 1; return $0 }) == 2 { throw InjectedCrash() }
            }
        )
        let offboarding = TenantOffboarding(database: harness.service, keyring: harness.keyring, audit: harness.audit, now: clock.now, deletionBatchSize: 2)
        let request = try await offboarding.request(tenant, officer: "alice", waitingDays: 7)
        _ = try await offboarding.approve(request.id, officer: "bob", certificateSerial: "b0b")
        clock.advance(days: 7.1)

        await #expect(throws: InjectedCrash.self) { _ = try await crashing.complete(request.id, officer: "alice") }
        @Sendable func templates() async throws -> Int {
            try await harness.owner.withTransaction(context: "count") { connection in
                // The owner is subject to the forced row-level security too.
                try await connection.query("SELECT set_config('app.tenant_id', \(tenant.rawValue), true)", logger: Database.quiet)
                return try await connection.query("SELECT count(*)::int FROM templates", logger: Database.quiet).collect().first!.decode(Int.self)
            }
        }
        #expect(try await templates() == 1, "two batches of two committed before the crash")
        #expect(try await offboarding.get(request.id).completedAt == nil, "not completed")

        #expect(try await offboarding.complete(request.id, officer: "alice").completedAt != nil, "the next run finishes it")
        #expect(try await templates() == 0)
        #expect(try await offboarding.complete(request.id, officer: "alice").completedAt != nil, "running again is harmless")
        let entries = try await harness.audit.tail(limit: 100).filter { $0.tenant == tenant }
        #expect(entries.filter { $0.action == AuditAction.tenantOffboardDelete.rawValue }.count == 3, "one entry per batch: two before the crash, one after")
        #expect(entries.filter { $0.action == AuditAction.tenantOffboard.rawValue }.count == 1, "one completion entry")
        for _ in 0..<200 where resets.withLock({ $0 }) == 0 { try await Task.sleep(for: .milliseconds(25)) }
        #expect(resets.withLock { $0 } == 1, "one reset of the tenant's galleries, with the completion")
        listening.cancel()
        await harness.shutdown()
    }
}

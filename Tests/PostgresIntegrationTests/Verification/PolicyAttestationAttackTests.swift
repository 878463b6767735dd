import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage
import Synchronization  // DatabaseTransaction.query: the database writer's statements
import Testing
import Tokenization
import Verification

/// Session 21's "Left 3": `tenant_policies` carried no integrity protection, and with the service
/// role's password alone a GREEN threshold of 0.02 made every impostor GREEN (the same harm as
/// helper-71 F3's copied token). A policy row must now be what the tenant's newest authentic
/// `tenant.policy` audit entry records: entries carry the audit chain's HSM MAC, and the service
/// role can add entries but never change or remove one.
@Suite("Tenant policies: a row the database's writer wrote is refused")
struct PolicyAttestationAttackTests {
    static func writer(_ verification: VerificationHarness, _ tenant: TenantID, _ sql: PostgresQuery) async throws {
        try await TemplateMACAttackTests.asDatabaseWriter(verification, tenant, sql)
    }

    /// A tenant with an enrolled subject and an audited policy (retention changed by an officer).
    static func audited(_ name: String) async throws -> (VerificationHarness, TenantID) {
        let verification = try await VerificationHarness.make(name)
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        _ = try await verification.flow.enrol(
            tenant: tenant, session: try await verification.consentedSession(tenant, "p-1"), features: try FeatureVector(TemplateMACAttackTests.face)
        )
        _ = try await verification.policies.update(.init(retentionDays: 40), for: tenant, actor: "officer")
        return (verification, tenant)
    }

    static func impostorVerifies(_ verification: VerificationHarness, _ tenant: TenantID) async throws -> Decision {
        let session = try await verification.consentedSession(tenant, "p-1")
        return try await verification.flow.verify(tenant: tenant, session: session, features: try FeatureVector(TemplateMACAttackTests.impostorFace))
    }

    @Test("Thresholds lowered in the database are refused, not applied: the impostor is never GREEN; a row planted for a tenant without one likewise")
    func loweredThresholds() async throws {
        let (verification, tenant) = try await Self.audited("pol_lowered")
        #expect(try await Self.impostorVerifies(verification, tenant).color != .green, "precondition: the impostor is not GREEN")
        // Set for the tenant's format, so that they would decide its comparisons (before, GREEN).
        try await Self.writer(verification, tenant, """
            UPDATE tenant_policies SET green_threshold = 0.02, amber_threshold = 0.01, thresholds_format = \(BiometricTokenFormat.default.rawValue)::smallint
            """)
        await #expect(throws: RecordIntegrityError.tenantPolicy(tenant)) { try await Self.impostorVerifies(verification, tenant) }
        await #expect(throws: RecordIntegrityError.tenantPolicy(tenant)) { try await verification.policies.policy(tenant) }

        let other = try await verification.custody.keyring.createTenant(label: "beta", actor: "officer").id
        try await Self.writer(verification, other, """
            INSERT INTO tenant_policies (tenant_id, green_threshold, amber_threshold, retention_days, tokenizations_per_minute, thresholds_format)
            VALUES (\(other.rawValue)::uuid, 0.02, 0.01, 90, 1000000, 3)
            """)
        await #expect(throws: RecordIntegrityError.tenantPolicy(other), "a row with no audited change behind it") { try await verification.policies.policy(other) }
        await verification.custody.shutdown()
    }

    @Test("An older audited policy put back, or the audited row deleted (to fall back on the defaults), is refused")
    func replayedAndDeleted() async throws {
        let (verification, tenant) = try await Self.audited("pol_replay")
        _ = try await verification.policies.update(.init(retentionDays: 50, tokenizationsPerMinute: 60), for: tenant, actor: "officer")
        #expect(try await verification.policies.policy(tenant).tokenizationsPerMinute == 60)
        // The row as the first change wrote it: a genuine entry records it, but not the newest.
        try await Self.writer(verification, tenant, "UPDATE tenant_policies SET retention_days = 40, tokenizations_per_minute = \(TenantPolicy.default.tokenizationsPerMinute)")
        await #expect(throws: RecordIntegrityError.tenantPolicy(tenant)) { try await verification.policies.policy(tenant) }
        try await Self.writer(verification, tenant, "DELETE FROM tenant_policies")
        await #expect(throws: RecordIntegrityError.tenantPolicy(tenant)) { try await verification.policies.policy(tenant) }
        await verification.custody.shutdown()
    }

    @Test("An audit entry the writer inserts above the genuine one, recording its row, does not attest it")
    func forgedEntry() async throws {
        let (verification, tenant) = try await Self.audited("pol_entry")
        try await Self.writer(verification, tenant, "UPDATE tenant_policies SET green_threshold = 0.02, amber_threshold = 0.01")
        // The genuine newest entry, copied above the head with the forged row's thresholds: its
        // hash and MAC no longer match what it records.
        try await Self.writer(verification, tenant, """
            INSERT INTO audit_log (seq, at, tenant_id, actor, action, target, details, previous_hash, entry_hash, mac, mac_key_version)
            SELECT (SELECT max(seq) + 1 FROM audit_log), at, tenant_id, actor, action, target,
                   replace(replace(details, '"green":"', '"green":"0.02","x":"'), '"amber":"', '"amber":"0.01","y":"'),
                   previous_hash, entry_hash, mac, mac_key_version
            FROM audit_log WHERE action = 'tenant.policy' AND tenant_id = \(tenant.rawValue)::uuid ORDER BY seq DESC LIMIT 1
            """)
        await #expect(throws: RecordIntegrityError.tenantPolicy(tenant)) { try await verification.policies.policy(tenant) }
        await verification.custody.shutdown()
    }

    @Test("After a forgery a partial change is refused (it would carry forged fields into a genuine entry); setting the whole policy repairs it")
    func officerRepairs() async throws {
        let (verification, tenant) = try await Self.audited("pol_repair")
        try await Self.writer(verification, tenant, "UPDATE tenant_policies SET tokenizations_per_minute = 1000000")
        await #expect(throws: RecordIntegrityError.tenantPolicy(tenant)) {
            try await verification.policies.update(.init(retentionDays: 60), for: tenant, actor: "officer")
        }
        let thresholds = DecisionThresholds.default(for: .default)
        let whole = try TenantPolicy(green: thresholds.green, amber: thresholds.amber, retentionDays: 60, tokenizationsPerMinute: 120)
        _ = try await verification.policies.set(whole, for: tenant, actor: "officer")
        let read = try await verification.policies.policy(tenant)
        #expect(read.tokenizationsPerMinute == 120 && read.retentionDays == 60, "the officer's policy, not the forged budget")
        // The CLI's way (`custos tenant policy` with every option): a mask naming every field.
        try await Self.writer(verification, tenant, "UPDATE tenant_policies SET tokenizations_per_minute = 1000000")
        _ = try await verification.policies.update(.init(
            green: thresholds.green, amber: thresholds.amber, retentionDays: 61, tokenizationsPerMinute: 121, bioOverlapDays: 30
        ), for: tenant, actor: "officer")
        #expect(try await verification.policies.policy(tenant).tokenizationsPerMinute == 121)
        #expect(try await Self.impostorVerifies(verification, tenant).color != .green)
        await verification.custody.shutdown()
    }

    @Test("Entries written before bio_overlap_days and thresholds_format were recorded attest the values those migrations gave the rows")
    func legacyEntries() async throws {
        let verification = try await VerificationHarness.make("pol_legacy")
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        // As the first release wrote it (custody's own append: a genuine entry).
        _ = try await verification.custody.audit.append(tenant: tenant, actor: "officer", action: .tenantPolicy, target: tenant.rawValue, details: [
            "green": "0.4", "amber": "0.2", "retention_days": "45", "tokenizations_per_minute": "300",
        ])
        try await Self.writer(verification, tenant, """
            INSERT INTO tenant_policies (tenant_id, green_threshold, amber_threshold, retention_days, tokenizations_per_minute, bio_overlap_days, thresholds_format)
            VALUES (\(tenant.rawValue)::uuid, 0.4, 0.2, 45, 300, 30, 2)
            """)
        let read = try await verification.policies.policy(tenant)
        #expect(read.retentionDays == 45 && read.tokenizationsPerMinute == 300 && read.bioOverlapDays == 30)
        // The same pair moved onto the quaternary scale (impostors near 0.44): not what was set.
        try await Self.writer(verification, tenant, "UPDATE tenant_policies SET thresholds_format = 3")
        await #expect(throws: RecordIntegrityError.tenantPolicy(tenant)) { try await verification.policies.policy(tenant) }
        await verification.custody.shutdown()
    }

    /// An audit port that lets an officer's change commit between a reader's row read and its
    /// entry read, once.
    final class ChangeBetweenReads: AuditRecording {
        let inner: any AuditRecording
        let change: @Sendable () async throws -> Void
        let pending = Atomic(true)

        init(inner: any AuditRecording, change: @escaping @Sendable () async throws -> Void) {
            self.inner = inner
            self.change = change
        }

        func record(tenant: TenantID?, actor: String, action: AuditAction, target: String, details: [String: String]) async throws {
            try await inner.record(tenant: tenant, actor: actor, action: action, target: target, details: details)
        }

        func record(
            tenant: TenantID?, actor: String, action: AuditAction, target: String, details: [String: String], on connection: DatabaseTransaction
        ) async throws {
            try await inner.record(tenant: tenant, actor: actor, action: action, target: target, details: details, on: connection)
        }

        func newestAuthenticEntry(action: AuditAction, tenant: TenantID, on connection: DatabaseTransaction) async throws -> NewestAuditEntry {
            if pending.exchange(false, ordering: .relaxed) { try await change() }
            return try await inner.newestAuthenticEntry(action: action, tenant: tenant, on: connection)
        }
    }

    @Test("A genuine change committing between a reader's two reads (the old row, the new entry) is not taken for a forgery")
    func changeBetweenReads() async throws {
        let (verification, tenant) = try await Self.audited("pol_race")
        let reader = TenantPolicies(database: verification.custody.service, audit: ChangeBetweenReads(inner: verification.recorder) {
            // Another instance's change (its own task: not a lease nested in the reader's).
            _ = try await Task.detached { try await verification.policies.update(.init(retentionDays: 77), for: tenant, actor: "officer") }.value
        }, cacheLifetime: .zero)
        #expect(try await reader.policy(tenant).retentionDays == 77)
        await verification.custody.shutdown()
    }

    @Test("A biometric rotation does not take its overlap from a policy the writer lengthened")
    func rotationOverlap() async throws {
        let (verification, tenant) = try await Self.audited("pol_overlap")
        try await Self.writer(verification, tenant, "UPDATE tenant_policies SET bio_overlap_days = 365")
        let error = await #expect(throws: CustodyError.self) { try await verification.custody.keyring.rotateBiometric(tenant, actor: "officer") }
        guard case .tenantPolicyTampered(tenant) = error else { Issue.record("refused for another reason: \(String(describing: error))"); return }
        await verification.custody.shutdown()
    }
}

import Composition
import Custody
import CustosModel
import Foundation
import PostgresNIO
@testable import Storage
import Synchronization
import Testing
import Tokenization
import Verification

@Suite("Export, erasure and retention of one subject's data")
struct SubjectRightsTests {
    static func face(_ seed: Double) -> [Float] { (0..<128).map { Float(sin(Double($0) * seed + seed)) } }

    @Test("Export returns what is held, decrypted for the tenant, and no token; erasure deletes every row and audits counts only")
    func exportAndErase() async throws {
        let verification = try await VerificationHarness.make("rights")
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        let session = try await verification.consentedSession(tenant, "emp-42", name: "Alan Turing", email: "alan@example.net")
        let subject = try await verification.flow.enrol(tenant: tenant, session: session, features: try FeatureVector(Self.face(0.3))).subject
        let pending = try await verification.sessions.create(tenant: tenant, externalID: PersonalText("emp-42"), name: nil, email: nil)

        let export = try await verification.rights.export(tenant: tenant, externalID: PersonalText("emp-42"), actor: "dpo")
        #expect(export.subjectReferences == [subject.value])
        #expect(export.biometricTemplates.map(\.keyVersion) == [1])
        #expect(export.sessions.count == 2)
        let completed = try #require(export.sessions.first { $0.id == session.uuidString.lowercased() })
        #expect(completed.candidateName == "Alan Turing" && completed.candidateEmail == "alan@example.net")
        #expect(completed.outcome == "enrolled" && completed.consent?.noticeVersion == "notice-2026-01")
        #expect(export.sessions.first { $0.id == pending.id.uuidString.lowercased() }?.state == "created")
        let json = String(decoding: try export.json(), as: UTF8.self)
        #expect(json.contains("\"templates_note\"") && json.contains("\"biometric_templates\""))
        let object = try JSONSerialization.jsonObject(with: try export.json()) as? [String: Any]
        #expect(object?["subject_references"] as? [String] == [subject.value], "machine-readable JSON")
        // The token is 4 KiB of bytes; nothing of that size (nor its base64) is in the export.
        #expect(json.utf8.count < 4_000, "no token in the export")

        let counts = try await verification.rights.erase(tenant: tenant, externalID: PersonalText("emp-42"), actor: "dpo")
        #expect(counts == ErasureCounts(templates: 1, sessions: 2))
        #expect(try await verification.count("templates", tenant: tenant) == 0)
        #expect(try await verification.count("verification_sessions", tenant: tenant) == 0)
        let links = try await verification.custody.owner.withTransaction(context: "links") { connection in
            try await connection.query("SELECT count(*)::int FROM gateway_links", logger: Database.quiet).collect().first!.decode(Int.self)
        }
        #expect(links == 0, "the gateway links went with their sessions")
        let again = try await verification.rights.export(tenant: tenant, externalID: PersonalText("emp-42"), actor: "dpo")
        #expect(again.sessions.isEmpty && again.biometricTemplates.isEmpty && again.subjectReferences.isEmpty)

        let entries = try await verification.auditEntries("subject.erase")
        #expect(entries.count == 1)
        let entry = try #require(entries.first)
        #expect(entry.details.contains("\"templates\":\"1\"") || entry.details.contains("\"templates\": \"1\""))
        for erased in [subject.value, String(subject.value.dropFirst(3)), "emp-42", "Alan", "alan@example.net"] {
            #expect(!entry.details.contains(erased) && !entry.target.contains(erased), "the audit entry holds erased data: \(erased)")
        }
        #expect(try await verification.custody.audit.verify().isIntact)
        await verification.custody.shutdown()
    }

    @Test("Retention deletes fingerprints idle past the tenant's period and sessions ended longer ago (clock moved forward); active ones stay")
    func retention() async throws {
        let verification = try await VerificationHarness.make("retention")
        let keyring = verification.custody.keyring
        let a = try await keyring.createTenant(label: "tenant-a", actor: "officer").id
        let b = try await keyring.createTenant(label: "tenant-b", actor: "officer").id
        try await verification.policies.set(try TenantPolicy(green: 0.6, amber: 0.5, retentionDays: 30, tokenizationsPerMinute: 1000), for: b, actor: "officer")
        for (tenant, id) in [(a, "old"), (a, "busy"), (b, "b-old")] {
            let session = try await verification.consentedSession(tenant, id)
            _ = try await verification.flow.enrol(tenant: tenant, session: session, features: try FeatureVector(Self.face(Double(id.count) + 0.1)))
        }
        // The database stamps activity with its own clock: age the rows as 100 days of idling would.
        try await verification.custody.ownerSQL(tenant: a, "UPDATE templates SET last_used_at = now() - interval '100 days'")
        try await verification.custody.ownerSQL(tenant: b, "UPDATE templates SET last_used_at = now() - interval '45 days'")
        try await verification.custody.ownerSQL(tenant: a, """
            UPDATE templates SET last_used_at = now() - interval '10 days'
            WHERE subject_ref = (SELECT subject_ref FROM verification_sessions WHERE outcome = 'enrolled' ORDER BY created_at DESC LIMIT 1)
            """)

        #expect(
            try await verification.retention.run() == [a: .init(templates: 1), b: .init(templates: 1)],
            "A: 100 days > 90; B: 45 days > its 30; every session ended today"
        )
        #expect(try await verification.count("templates", tenant: a) == 1, "the subject active 10 days ago stays")
        #expect(try await verification.count("templates", tenant: b) == 0)
        #expect(try await verification.retention.run().isEmpty, "nothing more to delete")
        verification.clock.advance(days: 81)
        #expect(try await verification.retention.run(tenant: a) == [a: .init(templates: 1)], "81 days later the last one is 91 days idle")
        #expect(try await verification.count("verification_sessions", tenant: a) == 2, "sessions completed 81 days ago stay (A keeps 90)")
        let abandoned = try await verification.sessions.create(tenant: a, externalID: PersonalText("never-opened"), name: PersonalText("Ada"), email: nil)
        verification.clock.advance(days: 10)
        #expect(
            try await verification.retention.run() == [a: .init(sessions: 2), b: .init(sessions: 1)],
            "91 days after completion A's two sessions go, and B's (30-day period) too"
        )
        #expect(try await verification.count("verification_sessions", tenant: a) == 1, "the session expired 10 days ago stays")
        #expect(try await verification.count("gateway_links", tenant: a) == 1, "its gateway link with it")
        verification.clock.advance(days: 82)
        #expect(try await verification.retention.run(tenant: a) == [a: .init(sessions: 1)], "an expired, never-completed session goes 90 days after it expired")
        #expect(try await verification.count("verification_sessions", tenant: a) == 0)
        #expect(try await verification.count("gateway_links", tenant: a) == 0, "gateway links go with their sessions")
        #expect(try await verification.auditEntries("retention.delete").count == 6)
        _ = abandoned
        await verification.custody.shutdown()
    }

    /// helper-55 H1: a tenant's whole backlog in one transaction outlived the timeouts (a million
    /// idle templates), rolled back and failed at every run; and the first tenant that failed
    /// stopped retention for every tenant after it.
    @Test("Retention deletes a backlog larger than a batch in batches, each with its audit entry, and leaves a table at its first empty batch; a tenant whose deletion fails does not keep the others from theirs")
    func retentionInBatches() async throws {
        let verification = try await VerificationHarness.make("retention_batches")
        let keyring = verification.custody.keyring
        // Listed first (oldest): its deletions fail.
        let failing = try await keyring.createTenant(label: "failing", actor: "officer").id
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        for (index, owner) in ([failing] + Array(repeating: tenant, count: 7)).enumerated() {
            let session = try await verification.consentedSession(owner, "subject-\(index)")
            _ = try await verification.flow.enrol(tenant: owner, session: session, features: try FeatureVector(Self.face(Double(index) + 0.3)))
        }
        for owner in [failing, tenant] {
            try await verification.custody.ownerSQL(tenant: owner, "UPDATE templates SET last_used_at = now() - interval '100 days'")
        }
        try await verification.custody.ownerSQL(tenant: nil, PostgresQuery(unsafeSQL: """
            CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'test: deletion refused'; END $$;
            """))
        try await verification.custody.ownerSQL(tenant: nil, PostgresQuery(unsafeSQL: """
            CREATE TRIGGER refuse_delete BEFORE DELETE ON templates FOR EACH ROW
            WHEN (OLD.tenant_id = '\(failing.rawValue)'::uuid) EXECUTE FUNCTION refuse_delete()
            """))
        // Every DELETE statement on the two tables, also one that deletes nothing.
        for statement in [
            "CREATE TABLE delete_statements (table_name text NOT NULL)",
            """
            CREATE FUNCTION count_delete() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
                BEGIN INSERT INTO delete_statements VALUES (TG_TABLE_NAME); RETURN NULL; END $$
            """,
            "CREATE TRIGGER count_delete AFTER DELETE ON templates FOR EACH STATEMENT EXECUTE FUNCTION count_delete()",
            "CREATE TRIGGER count_delete AFTER DELETE ON verification_sessions FOR EACH STATEMENT EXECUTE FUNCTION count_delete()",
        ] {
            try await verification.custody.ownerSQL(tenant: nil, PostgresQuery(unsafeSQL: statement))
        }

        await #expect(throws: StorageError.self) { _ = try await verification.retention.run(batchSize: 3) }
        let statements = try await verification.custody.owner.withTransaction(context: "count statements") { connection in
            try await connection.query("SELECT table_name, count(*)::int FROM delete_statements GROUP BY table_name", logger: Database.quiet)
                .collect().reduce(into: [String: Int]()) { counts, row in
                    let (table, count) = try row.decode((String, Int).self)
                    counts[table] = count
                }
        }
        // The failing tenant's statements rolled back with its batch. The sessions (none due)
        // were done at the first batch; the templates took three and an empty fourth.
        #expect(statements == ["templates": 4, "verification_sessions": 1], "a table is not scanned again once a batch came back empty")
        #expect(try await verification.count("templates", tenant: tenant) == 0, "the tenant after the failing one had its retention")
        #expect(try await verification.count("templates", tenant: failing) == 1, "the failing tenant's batch rolled back")
        let entries = try await verification.auditEntries("retention.delete")
        let templatesPerEntry = entries.map { entry in
            (try? JSONSerialization.jsonObject(with: Data(entry.details.utf8)) as? [String: String])?["templates"]
        }
        #expect(templatesPerEntry == ["3", "3", "1"], "one entry per batch")
        await verification.custody.shutdown()
    }

    /// Retention's audit, cut off at `tenant`'s first batch as by the caller's deadline: the
    /// run's task is cancelled, and the transaction fails.
    struct CutOffAudit: AuditRecording {
        let inner: any AuditRecording
        let tenant: TenantID
        /// Cancels the run's task (transactions run in tasks of their own).
        let cut: @Sendable () -> Void

        func record(tenant: TenantID?, actor: String, action: AuditAction, target: String, details: [String: String]) async throws {
            try await inner.record(tenant: tenant, actor: actor, action: action, target: target, details: details)
        }

        func record(
            tenant: TenantID?, actor: String, action: AuditAction, target: String, details: [String: String], on connection: DatabaseTransaction
        ) async throws {
            if tenant == self.tenant, action == .retentionDelete {
                cut()
                throw CancellationError()
            }
            try await inner.record(tenant: tenant, actor: actor, action: action, target: target, details: details, on: connection)
        }

        func newestAuthenticEntry(action: AuditAction, tenant: TenantID, on connection: DatabaseTransaction) async throws -> NewestAuditEntry {
            try await inner.newestAuthenticEntry(action: action, tenant: tenant, on: connection)
        }
    }

    @Test("A run cut off in one tenant: the next begins with the tenants it did not reach, then that one; never the oldest again")
    func retentionResumesWhereItStopped() async throws {
        let verification = try await VerificationHarness.make("retention_turns")
        let keyring = verification.custody.keyring
        let (large, small, newest) = (
            try await keyring.createTenant(label: "large", actor: "officer").id,
            try await keyring.createTenant(label: "small", actor: "officer").id,
            try await keyring.createTenant(label: "newest", actor: "officer").id
        )
        for (index, tenant) in [large, large, small, newest].enumerated() {
            let session = try await verification.consentedSession(tenant, "subject-\(index)")
            _ = try await verification.flow.enrol(tenant: tenant, session: session, features: try FeatureVector(Self.face(Double(index) + 0.3)))
        }
        for tenant in [large, small, newest] {
            try await verification.custody.ownerSQL(tenant: tenant, "UPDATE templates SET last_used_at = now() - interval '100 days'")
        }
        // Three runs, each cut off in the oldest tenant's first batch (a backlog too large for
        // one run's deadline). Ordered by creation, every run stopped there; ordered by the last
        // finished turn, too (that tenant never finishes).
        let running = Mutex<Task<[TenantID: RetentionJob.Deletions], any Error>?>(nil)
        let cutOff = RetentionJob(
            database: verification.custody.service, core: verification.core,
            audit: CutOffAudit(inner: verification.recorder, tenant: large) { running.withLock { $0?.cancel() } }, now: verification.clock.now
        )
        for _ in 0..<3 {
            // A task of its own: the cut-off cancels it, not the test.
            let run = running.withLock { running in
                let run = Task { try await cutOff.run(batchSize: 1) }
                running = run
                return run
            }
            await #expect(throws: CancellationError.self) { _ = try await run.value }
        }
        #expect(try await verification.count("templates", tenant: large) == 2, "each cut-off batch rolled back")
        #expect(try await verification.count("templates", tenant: small) == 0, "the second run began with the tenants the first did not reach")
        #expect(try await verification.count("templates", tenant: newest) == 0)
        let cutOffRuns = try await verification.auditEntries("retention.delete").map(\.tenant)
        #expect(cutOffRuns == [small, newest], "one batch each, in creation order: neither had begun a turn")

        // Uncut, the next run goes by the turns' starts: the tenant cut off last.
        let late = try await verification.consentedSession(small, "subject-late")
        _ = try await verification.flow.enrol(tenant: small, session: late, features: try FeatureVector(Self.face(7.3)))
        try await verification.custody.ownerSQL(tenant: small, "UPDATE templates SET last_used_at = now() - interval '100 days'")
        let deleted = try await verification.retention.run(batchSize: 1)
        #expect(deleted.mapValues(\.templates) == [large: 2, small: 1])
        let lastRun = try await verification.auditEntries("retention.delete").dropFirst(cutOffRuns.count).map(\.tenant)
        #expect(lastRun == [small, large, large], "in the order the last turns began: small, newest (nothing due), large")
        await verification.custody.shutdown()
    }

    @Test("Per-tenant thresholds decide the colour; out-of-range policies are refused")
    func thresholds() async throws {
        let verification = try await VerificationHarness.make("thresholds")
        let tenant = try await verification.custody.keyring.createTenant(label: "acme", actor: "officer").id
        let enrol = try await verification.consentedSession(tenant, "p1")
        _ = try await verification.flow.enrol(tenant: tenant, session: enrol, features: try FeatureVector(Self.face(0.7)))
        let noisy = Self.face(0.7).enumerated().map { $0.element + Float(sin(Double($0.offset) * 5.1)) * 0.35 }
        let first = try await verification.consentedSession(tenant, "p1")
        let relaxed = try await verification.flow.verify(tenant: tenant, session: first, features: try FeatureVector(noisy))
        #expect(relaxed.color == .green)
        try await verification.policies.set(try TenantPolicy(green: 0.99, amber: 0.98, retentionDays: 90, tokenizationsPerMinute: 600), for: tenant, actor: "officer")
        let second = try await verification.consentedSession(tenant, "p1")
        let strict = try await verification.flow.verify(tenant: tenant, session: second, features: try FeatureVector(noisy))
        #expect(strict.color == .red, "same comparison, the tenant's stricter thresholds flag it")
        #expect(throws: VerificationError.self) { _ = try TenantPolicy(green: 0.2, amber: 0.5, retentionDays: 90, tokenizationsPerMinute: 10) }
        #expect(throws: VerificationError.self) { _ = try TenantPolicy(green: 0.5, amber: 0.2, retentionDays: 0, tokenizationsPerMinute: 10) }
        #expect(throws: VerificationError.self) { _ = try TenantPolicy(green: .nan, amber: 0.2, retentionDays: 9, tokenizationsPerMinute: 10) }
        #expect(try await verification.auditEntries("tenant.policy").count == 1)
        await verification.custody.shutdown()
    }
}

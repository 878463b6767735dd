import Composition
import Custody
import CustosModel
import Foundation
import HSM
import SecureMemory
@testable import Storage
import Testing
import Tokenization
import Verification

/// Every data-plane key use on record (issue 11 §4): counted in memory, written to the audit
/// chain as one `key.use` entry per tenant per flush, with exact counts; kept when a flush
/// fails; written when the runtime shuts down gracefully.
@Suite("Audit: key uses counted and written to the chain", .serialized)
struct KeyUseRecordingTests {
    /// The counts of `tenant`'s `key.use` entries, summed, without the window.
    static func counts(_ entries: [AuditEntryRecord], tenant: TenantID) throws -> [String: Int] {
        var counts = [String: Int]()
        for entry in entries where entry.tenant == tenant {
            let details = try #require(try JSONSerialization.jsonObject(with: Data(entry.details.utf8)) as? [String: String])
            for (key, value) in details where !key.hasPrefix("window_") { counts[key, default: 0] += try #require(Int(value)) }
        }
        return counts
    }

    static func keyUseEntries(_ harness: CustodyHarness) async throws -> [AuditEntryRecord] {
        try await harness.owner.withTransaction(context: "read audit") { connection in
            try await AuditLogStore.entries(after: 0, limit: 10_000, on: connection)
        }.filter { $0.action == AuditAction.keyUse.rawValue }
    }

    @Test("A known sequence of uses, failures included, becomes one entry per tenant with exact counts; the chain verifies")
    func exactCounts() async throws {
        let verification = try await VerificationHarness.make("keyuse")
        let harness = verification.custody
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let other = try await harness.keyring.createTenant(label: "globex", actor: "officer").id

        // Sessions: a `pii` reference each, a `data` seal for the name.
        let first = try await verification.consentedSession(tenant, "candidate-1", name: "Ada Lovelace")
        let second = try await verification.consentedSession(tenant, "candidate-1")
        // Enrol and verify: one tokenization each under `bio-prf` v1.
        let face: [Float] = (0..<512).map { Float(sin(Double($0) * 0.37)) }
        _ = try await verification.flow.enrol(tenant: tenant, session: first, features: try FeatureVector(face))
        _ = try await verification.flow.verify(tenant: tenant, session: second, features: try FeatureVector(face))

        // API keys: one right, one with the right id and a wrong secret (a failure), one unknown
        // (no key was used: not counted); and one for the other tenant.
        let issued = try await harness.apiKeys.issue(tenant: tenant, scopes: ["verify"], actor: "officer")
        _ = try await harness.apiKeys.verify(issued.key)
        let forged = try APIKeyFormat.make(environment: "test", keyID: Base62.decode(issued.keyID, byteCount: 8)!, secret: SecretBytes([UInt8](repeating: 7, count: 32)))
        await #expect(throws: APIKeyError.invalid) { _ = try await harness.apiKeys.verify(forged) }
        let stranger = try APIKeyFormat.make(environment: "test", keyID: [1, 2, 3, 4, 5, 6, 7, 8], secret: SecretBytes([UInt8](repeating: 9, count: 32)))
        await #expect(throws: APIKeyError.invalid) { _ = try await harness.apiKeys.verify(stranger) }
        let otherKey = try await harness.apiKeys.issue(tenant: other, scopes: ["verify"], actor: "officer")
        _ = try await harness.apiKeys.verify(otherKey.key)

        // Seal, then open in the wrong context (a failure) and in the right one.
        let sealed = try await verification.sealer.seal(PersonalText("note"), tenant: tenant, keyVersion: nil, context: [1])
        await #expect(throws: CustodyError.self) {
            _ = try await verification.sealer.open(sealed.sealed, keyVersion: sealed.keyVersion, tenant: tenant, context: [2])
        }
        _ = try await verification.sealer.open(sealed.sealed, keyVersion: sealed.keyVersion, tenant: tenant, context: [1])

        // A webhook delivery signed twice.
        _ = try await harness.webhooks.createSecret(tenant: tenant, actor: "officer")
        for _ in 0..<2 { _ = try await harness.webhooks.signatureHeader(tenant: tenant, id: "msg_1", timestamp: 1_700_000_000, body: [1]) }

        let written = try await harness.graph.keyUseRecorder.flush()
        #expect(written == 2)
        let entries = try await Self.keyUseEntries(harness)
        #expect(entries.count == 2)
        #expect(entries.allSatisfy { $0.actor == KeyUseRecorder.actor && $0.target == KeyUseRecorder.target })
        let expected: [String: Int] = [
            "pii/v1/reference/success": 2,
            "data/v1/seal/success": 2,
            "data/v1/open/failure": 1,
            "data/v1/open/success": 1,
            "bio-prf/v1/enrol/success": 1,
            "bio-prf/v1/verify/success": 1,
            "apikey-pepper/v1/apikey.verify/success": 1,
            "apikey-pepper/v1/apikey.verify/failure": 1,
            "webhook/v1/webhook.sign/success": 2,
        ]
        #expect(try Self.counts(entries, tenant: tenant) == expected)
        #expect(try Self.counts(entries, tenant: other) == ["apikey-pepper/v1/apikey.verify/success": 1])
        let window = try #require(try JSONSerialization.jsonObject(with: Data(entries[0].details.utf8)) as? [String: String])
        #expect(window["window_start"] != nil && window["window_end"] != nil)

        // Nothing left to write: a second flush appends nothing.
        #expect(try await harness.graph.keyUseRecorder.flush() == 0)
        let verified = try await harness.audit.verify()
        #expect(verified.isIntact, "\(verified.problem ?? "")")
        await harness.shutdown()
    }

    @Test("A flush the database refuses keeps its counts; the next one writes them with what came meanwhile")
    func failedFlushKeepsCounts() async throws {
        let harness = try await CustodyHarness.make("keyusefail")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let issued = try await harness.apiKeys.issue(tenant: tenant, scopes: ["verify"], actor: "officer")
        for _ in 0..<3 { _ = try await harness.apiKeys.verify(issued.key) }

        // The database refuses `key.use` entries (as it would any write while it is down).
        try await harness.ownerSQL(tenant: nil, "ALTER TABLE audit_log ADD CONSTRAINT refuse_key_use CHECK (action <> 'key.use') NOT VALID")
        await #expect(throws: (any Error).self) { try await harness.graph.keyUseRecorder.flush() }
        #expect(try await Self.keyUseEntries(harness).isEmpty)
        #expect(harness.keyring.keyUses.pending.values.reduce(0, +) == 3, "the counts are kept")

        for _ in 0..<2 { _ = try await harness.apiKeys.verify(issued.key) }
        try await harness.ownerSQL(tenant: nil, "ALTER TABLE audit_log DROP CONSTRAINT refuse_key_use")
        #expect(try await harness.graph.keyUseRecorder.flush() == 1)
        #expect(try Self.counts(try await Self.keyUseEntries(harness), tenant: tenant) == ["apikey-pepper/v1/apikey.verify/success": 5])
        #expect(try await harness.audit.verify().isIntact)
        await harness.shutdown()
    }

    @Test("A runtime with a recorder writes what was counted when it shuts down gracefully")
    func flushOnShutdown() async throws {
        let harness = try await CustodyHarness.make("keyusestop")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let issued = try await harness.apiKeys.issue(tenant: tenant, scopes: ["verify"], actor: "officer")
        // The harness's runtime stops (one login per token and process); a runtime as `serve`
        // builds it takes over the token and schema, with a periodic flush that never comes
        // within the test: only the shutdown writes.
        await harness.started.shutdown()
        let settings = CustodyGraph.Settings(
            auditAnchorPath: harness.anchorPath, keyEnvironment: "test", keyUseFlushInterval: .seconds(3_600)
        )
        let options = CustosRuntime.Options(logger: harness.logs.logger, verifyRootKeys: false)
        let database = harness.settings.configuration(role: .service, schema: harness.schema)
        try await CustosRuntime.run(pool: harness.token.configuration(), database: database, custody: settings, options: options) { runtime in
            for _ in 0..<4 { _ = try await runtime.apiKeys.verify(issued.key) }
            #expect(try await Self.keyUseEntries(harness).isEmpty, "nothing written before the shutdown")
        }
        let entries = try await Self.keyUseEntries(harness)
        #expect(entries.count == 1)
        #expect(try Self.counts(entries, tenant: tenant) == ["apikey-pepper/v1/apikey.verify/success": 4])
        let verified = try await CustosRuntime.run(pool: harness.token.configuration(), database: database, custody: settings, options: options) {
            try await $0.audit.verify()
        }
        #expect(verified.isIntact, "\(verified.problem ?? "")")
        await harness.shutdown()
    }

    @Test("The runtime's recorder writes on its own while the runtime runs, and uses after a write go into the next entry")
    func periodicFlush() async throws {
        let harness = try await CustodyHarness.make("keyusetick")
        let tenant = try await harness.keyring.createTenant(label: "acme", actor: "officer").id
        let issued = try await harness.apiKeys.issue(tenant: tenant, scopes: ["verify"], actor: "officer")
        await harness.started.shutdown()
        let settings = CustodyGraph.Settings(auditAnchorPath: harness.anchorPath, keyEnvironment: "test", keyUseFlushInterval: .seconds(1))
        let options = CustosRuntime.Options(logger: harness.logs.logger, verifyRootKeys: false)
        let database = harness.settings.configuration(role: .service, schema: harness.schema)
        try await CustosRuntime.run(pool: harness.token.configuration(), database: database, custody: settings, options: options) { runtime in
            for _ in 0..<2 { _ = try await runtime.apiKeys.verify(issued.key) }
            // Waits until ticks wrote both (bounded, so a recorder that never writes fails the
            // test; a tick may fall between the two uses, hence "both", not "one entry").
            var written = [String: Int]()
            for _ in 0..<300 where written.isEmpty || written.values.reduce(0, +) < 2 {
                written = try Self.counts(try await Self.keyUseEntries(harness), tenant: tenant)
                if written.values.reduce(0, +) < 2 { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(written == ["apikey-pepper/v1/apikey.verify/success": 2], "written while the runtime runs")
            _ = try await runtime.apiKeys.verify(issued.key)
        }
        // The third use, written by a later tick or by the shutdown: the totals are exact.
        let entries = try await Self.keyUseEntries(harness)
        #expect(entries.count >= 2)
        #expect(try Self.counts(entries, tenant: tenant) == ["apikey-pepper/v1/apikey.verify/success": 3])
        await harness.shutdown()
    }
}

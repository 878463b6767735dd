import Composition
import Custody
import CustosModel
import Foundation
@testable import Storage
import Testing
import Synchronization
import Verification

/// `custos key reseal --purpose data` (issue 11 §2): every sealed name and email moves to the
/// active `data` version in batches, and a run stopped anywhere — between batches or inside one —
/// loses nothing and seals nothing twice when run again.
@Suite("Re-sealing data under the active version")
struct DataResealTests {
    struct Injected: Error {}

    /// A test's sessions: who they were created for, to check every field opens to it.
    struct Made {
        let id: UUID
        let name: String?
        let email: String?
    }

    static func makeSessions(_ verification: VerificationHarness, _ tenant: TenantID, count: Int, prefix: String) async throws -> [Made] {
        var made = [Made]()
        for index in 0..<count {
            // Every third has no email, every fifth nothing sealed at all.
            let name: String? = index % 5 == 4 ? nil : "Name \(prefix)\(index)"
            let email: String? = index % 5 == 4 || index % 3 == 2 ? nil : "\(prefix)\(index)@example.test"
            let created = try await verification.sessions.create(
                tenant: tenant, externalID: PersonalText("\(prefix)-\(index)"), name: name.map(PersonalText.init), email: email.map(PersonalText.init)
            )
            made.append(Made(id: created.id, name: name, email: email))
        }
        return made
    }

    static func rows(_ verification: VerificationHarness, _ tenant: TenantID, _ made: [Made]) async throws -> [UUID: SessionStore.Row] {
        let ids = made.map(\.id)
        return try await verification.custody.service.withTenant(tenant, context: "test read sessions") { connection in
            var rows = [UUID: SessionStore.Row]()
            for id in ids { rows[id] = try await SessionStore.get(id, on: connection) }
            return rows
        }
    }

    /// Every sealed field opens to what was sealed under the version its row records, and under
    /// no other usable version (so it was sealed exactly once, by that version).
    static func expectAllOpen(_ verification: VerificationHarness, _ tenant: TenantID, _ made: [Made], under expected: Int?, others: [Int]) async throws {
        let rows = try await rows(verification, tenant, made)
        for session in made {
            let row = try #require(rows[session.id])
            guard session.name != nil || session.email != nil else {
                #expect(row.dataKeyVersion == nil)
                continue
            }
            let version = try #require(row.dataKeyVersion)
            if let expected { #expect(version == expected) }
            for (field, sealed, plain) in [("name", row.sealedName, session.name), ("email", row.sealedEmail, session.email)] {
                #expect((sealed == nil) == (plain == nil), "a field appeared or vanished")
                guard let sealed, let plain else { continue }
                let context = Array("custos/session/v1\0\(tenant.rawValue)\0\(session.id.uuidString.lowercased())\0\(field)".utf8)
                #expect(try await verification.sealer.open(sealed, keyVersion: version, tenant: tenant, context: context).value == plain)
                for other in others where other != version {
                    await #expect(throws: CustodyError.self, "a field opened under v\(other) too") {
                        _ = try await verification.sealer.open(sealed, keyVersion: other, tenant: tenant, context: context)
                    }
                }
            }
        }
    }

    static func auditDetails(_ verification: VerificationHarness) async throws -> [[String: String]] {
        try await verification.auditEntries("key.reseal").map { entry in
            (try JSONSerialization.jsonObject(with: Data(entry.details.utf8)) as? [String: String]) ?? [:]
        }
    }

    @Test("A run re-seals every field under older versions in batches, leaves the active version's rows alone, and is audited once")
    func resealsEverything() async throws {
        let verification = try await VerificationHarness.make("reseal")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let other = try await keyring.createTenant(label: "other", actor: "officer").id
        let old = try await Self.makeSessions(verification, tenant, count: 11, prefix: "a")
        let untouched = try await Self.makeSessions(verification, other, count: 3, prefix: "o")
        try await keyring.rotate(tenant, .data, actor: "officer")
        let v2 = try await Self.makeSessions(verification, tenant, count: 2, prefix: "b")
        try await keyring.rotate(tenant, .data, actor: "officer")
        let current = try await Self.makeSessions(verification, tenant, count: 3, prefix: "c")
        let currentBefore = try await Self.rows(verification, tenant, current)

        let before = try await keyring.status(tenant)
        let sealedV1 = old.filter { $0.name != nil || $0.email != nil }.count
        #expect(before.versions.first { $0.record.purpose == .data && $0.record.version == 1 }?.sealedRecords == sealedV1)
        #expect(before.purposes.first { $0.purpose == .data }?.percentMigrated ?? 100 < 100)

        let seen = ProgressLog()
        let last = try await verification.graph.reseal.run(tenant: tenant, actor: "officer:alice", batchSize: 4) { seen.append($0) }
        let moved = sealedV1 + v2.count
        #expect(last.done && last.resealed == moved && last.remaining == 0 && last.targetVersion == 3)
        #expect(last.batches == (moved + 3) / 4)
        let steps = seen.all
        #expect(steps.last == last)
        #expect(steps.dropLast().map(\.remaining) == steps.dropLast().map { moved - $0.resealed }, "progress counts down")

        try await Self.expectAllOpen(verification, tenant, old + v2 + current, under: 3, others: [1, 2])
        // Rows already under the active version were not re-sealed: same bytes.
        let currentAfter = try await Self.rows(verification, tenant, current)
        for session in current {
            #expect(currentAfter[session.id]?.sealedName == currentBefore[session.id]?.sealedName)
            #expect(currentAfter[session.id]?.sealedEmail == currentBefore[session.id]?.sealedEmail)
        }
        // Another tenant's rows are out of reach (row-level security) and stay under its v1.
        try await Self.expectAllOpen(verification, other, untouched, under: 1, others: [])

        let after = try await keyring.status(tenant)
        for version in 1...2 {
            #expect(after.versions.first { $0.record.purpose == .data && $0.record.version == version }?.references == 0)
        }
        #expect(after.purposes.first { $0.purpose == .data }?.percentMigrated == 100)
        let audits = try await Self.auditDetails(verification)
        #expect(audits.count == 1)
        #expect(audits.first?["resealed"] == "\(moved)" && audits.first?["from_versions"] == "1 2")

        // Again: nothing left, nothing sealed anew.
        let again = try await verification.graph.reseal.run(tenant: tenant, actor: "officer:alice")
        #expect(again.resealed == 0 && again.batches == 0 && again.done)
        #expect(try await Self.rows(verification, tenant, current) == currentAfter)
        await verification.custody.shutdown()
    }

    @Test("A run that fails inside a batch or between batches loses nothing; the next run finishes and seals nothing twice", arguments: [
        SessionResealJob.Step.batchWritten(2), .batchCommitted(2), .batchWritten(1),
    ])
    func crashAndResume(_ crashAt: SessionResealJob.Step) async throws {
        let verification = try await VerificationHarness.make("resealcrash")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let made = try await Self.makeSessions(verification, tenant, count: 10, prefix: "k")
        let sealed = made.filter { $0.name != nil || $0.email != nil }.count
        try await keyring.rotate(tenant, .data, actor: "officer")
        let graph = verification.graph
        let crashing = SessionResealJob(
            database: verification.custody.service, sealer: graph.sealer, activeVersion: graph.sealer, audit: graph.recorder,
            hook: { step in if step == crashAt { throw Injected() } }
        )
        await #expect(throws: Injected.self) {
            try await crashing.run(tenant: tenant, actor: "officer:alice", batchSize: 3)
        }
        // Each row entirely under v1 or entirely under v2, and exactly the committed batches moved.
        let committed: Int = switch crashAt {
        case .batchWritten(let n): (n - 1) * 3
        case .batchCommitted(let n): n * 3
        }
        let rows = try await Self.rows(verification, tenant, made)
        #expect(rows.values.filter { $0.dataKeyVersion == 2 }.count == committed)
        #expect(rows.values.filter { $0.dataKeyVersion == 1 }.count == sealed - committed)
        try await Self.expectAllOpen(verification, tenant, made, under: nil, others: [1, 2])
        let interrupted = try await Self.auditDetails(verification)
        #expect(interrupted.count == (committed > 0 ? 1 : 0))
        if committed > 0 { #expect(interrupted.first?["interrupted"] == "true" && interrupted.first?["resealed"] == "\(committed)") }

        // Run again: it continues with what is left, and only that.
        let resumed = try await graph.reseal.run(tenant: tenant, actor: "officer:alice", batchSize: 3)
        #expect(resumed.done && resumed.total == sealed - committed && resumed.resealed == sealed - committed)
        try await Self.expectAllOpen(verification, tenant, made, under: 2, others: [1])
        let audits = try await Self.auditDetails(verification)
        #expect(audits.compactMap { Int($0["resealed"] ?? "") }.reduce(0, +) == sealed, "each record re-sealed once across the runs")
        #expect(try await keyring.status(tenant).versions.first { $0.record.purpose == .data && $0.record.version == 1 }?.references == 0)
        await verification.custody.shutdown()
    }

    @Test("A batch holds one database connection: with a pool of one and no key cached yet, a run finishes (each key lookup inside the batch waited for a second connection until the timeout)")
    func batchHoldsOneConnection() async throws {
        let verification = try await VerificationHarness.make("resealone")
        let custody = verification.custody
        let tenant = try await custody.keyring.createTenant(label: "acme", actor: "officer").id
        let made = try await Self.makeSessions(verification, tenant, count: 6, prefix: "p")
        try await custody.keyring.rotate(tenant, .data, actor: "officer")
        var configuration = custody.settings.configuration(role: .service, schema: custody.schema)
        configuration.maximumConnections = 1
        configuration.operationTimeout = .seconds(5)
        let database = try Database(configuration: configuration, logger: Database.quiet)
        database.start()
        // A keyring with nothing cached, reading through that one connection.
        let keyring = TenantKeyring(pool: custody.pool, database: database, rootKeys: custody.graph.rootKeys, audit: custody.audit, logger: custody.logs.logger)
        let sealer = CustodyPersonalDataSealer(pool: custody.pool, keyring: keyring)
        let job = SessionResealJob(database: database, sealer: sealer, activeVersion: sealer, audit: verification.graph.recorder)
        let result = try await job.run(tenant: tenant, actor: "officer:alice", batchSize: 3)
        #expect(result.done && result.remaining == 0 && result.resealed == made.filter { $0.name != nil || $0.email != nil }.count)
        try await Self.expectAllOpen(verification, tenant, made, under: 2, others: [1])
        await database.shutdown()
        await custody.shutdown()
    }

    @Test("Two runs at once share the work: each record is re-sealed by exactly one of them")
    func concurrentRuns() async throws {
        let verification = try await VerificationHarness.make("resealtwice")
        let keyring = verification.custody.keyring
        let tenant = try await keyring.createTenant(label: "acme", actor: "officer").id
        let made = try await Self.makeSessions(verification, tenant, count: 40, prefix: "t")
        let sealed = made.filter { $0.name != nil || $0.email != nil }.count
        try await keyring.rotate(tenant, .data, actor: "officer")
        let job = verification.graph.reseal
        async let first = job.run(tenant: tenant, actor: "officer:alice", batchSize: 3)
        async let second = job.run(tenant: tenant, actor: "officer:bob", batchSize: 5)
        let (a, b) = try await (first, second)
        #expect(a.resealed + b.resealed == sealed, "a record re-sealed by both runs, or by neither")
        #expect(a.done && b.done && a.remaining == 0 && b.remaining == 0)
        try await Self.expectAllOpen(verification, tenant, made, under: 2, others: [1])
        await verification.custody.shutdown()
    }
}

/// Progress messages a run reported, in order.
final class ProgressLog: Sendable {
    private let steps = Mutex([SessionResealJob.Progress]())
    func append(_ progress: SessionResealJob.Progress) { steps.withLock { $0.append(progress) } }
    var all: [SessionResealJob.Progress] { steps.withLock { $0 } }
}
